//! Arbitrary input never panics the workflow compiler: random text, "token soup" made of the
//! language's own words (which gets much deeper into the grammar than random bytes), and small
//! mutations of a valid workflow (which get past the parser into validation and compilation).
//! Case counts are bounded so the whole module runs in a few seconds.

use std::collections::BTreeSet;
use std::path::Path;

use nurture::dsl;
use proptest::prelude::*;

const VALID: &str = r#"workflow "fuzz" {
  enroll when lead.source is "web" and (lead.tags has "trial" or not replied)
  allow re-entry
  every "0 9 * * MON-FRI"
  from "Ana <ana@acme.example>"
  reply to "sales@acme.example"
  owner "sales@acme.example"
  timezone "Europe/Berlin"
  send on Mon-Fri, Sun between 09:00 and 17:30 in lead timezone
  track clicks
  on reply { promote to contact; notify owner; exit }
  on auto-reply { pause until return }
  on bounce { tag "bounced"; continue }
  step welcome {
    send "welcome" subject "Hi {{first_name}}"
    wait 2 days
  }
  step nudge {
    if lead.score >= 20 { send "nudge" subject "Demo?" } else if clicked { score +5 } else { untag "x" }
    wait until Tue 10:00
    wait until cron "0 9 * * 1-5"
    set lead.plan to 3.5
    if lead.country in ["DE", "AT"] { goto welcome }
    wait 3 business days
  }
}
"#;

/// The words and symbols of the language, and a few near misses.
const TOKENS: &[&str] = &[
    "workflow",
    "\"w\"",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ";",
    "-",
    ".",
    "\n",
    " ",
    "#c\n",
    "enroll",
    "when",
    "allow",
    "re-entry",
    "every",
    "day",
    "from",
    "\"a@b.example\"",
    "reply",
    "to",
    "owner",
    "timezone",
    "\"UTC\"",
    "send",
    "on",
    "between",
    "09:00",
    "17:00",
    "99:99",
    "and",
    "or",
    "not",
    "in",
    "lead",
    "workflow",
    "step",
    "s",
    "t",
    "subject",
    "\"welcome\"",
    "\"{{x}\"",
    "wait",
    "until",
    "cron",
    "\"* * * * *\"",
    "\"61 * * * *\"",
    "business",
    "days",
    "2",
    "0",
    "99999999999999999999",
    "if",
    "else",
    "set",
    "tag",
    "untag",
    "score",
    "+5",
    "-5",
    "promote",
    "contact",
    "notify",
    "goto",
    "exit",
    "continue",
    "pause",
    "return",
    "is",
    "has",
    "contains",
    "replied",
    "auto-replied",
    "clicked",
    "sent",
    "lead.score",
    "lead.sorce",
    ">=",
    "=",
    "!=",
    "<",
    "Mon",
    "Fri",
    "weekdays",
    "auto-reply",
    "bounce",
    "unsubscribe",
    "\"",
    "\\",
    "é",
    "\u{0}",
];

fn templates() -> BTreeSet<String> {
    ["welcome", "nudge"].into_iter().map(String::from).collect()
}

fn compile(source: &str) {
    let compiled = dsl::compile(Path::new("fuzz.flow"), source, &templates());
    // Rendering walks every location: it must not panic either.
    for diagnostic in &compiled.diagnostics {
        let _ = diagnostic.to_string();
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Insert(usize, char),
    Swap(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let position = 0..VALID.len();
    let character = prop_oneof![
        proptest::char::range(' ', '~'),
        Just('\n'),
        Just('é'),
        Just('\u{10FFFF}'),
    ];
    prop_oneof![
        position.clone().prop_map(Mutation::Delete),
        (position.clone(), character).prop_map(|(at, c)| Mutation::Insert(at, c)),
        position.prop_map(Mutation::Swap),
    ]
}

/// Applies mutations to the characters of the valid workflow.
fn mutate(mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = VALID.chars().collect();
    for mutation in mutations {
        match *mutation {
            Mutation::Delete(at) if !chars.is_empty() => {
                chars.remove(at % chars.len());
            }
            Mutation::Insert(at, c) => chars.insert(at % (chars.len() + 1), c),
            Mutation::Swap(at) if chars.len() > 1 => {
                let at = at % (chars.len() - 1);
                chars.swap(at, at + 1);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(source in "\\PC{0,300}") {
        compile(&source);
    }

    #[test]
    fn token_soup_never_panics(tokens in proptest::collection::vec(proptest::sample::select(TOKENS), 0..80)) {
        compile(&tokens.join(" "));
        compile(&tokens.concat());
    }

    #[test]
    fn mutated_workflow_never_panics(mutations in proptest::collection::vec(mutation(), 1..6)) {
        compile(&mutate(&mutations));
    }
}

#[test]
fn the_mutated_workflow_is_valid_to_start_with() {
    let compiled = dsl::compile(Path::new("fuzz.flow"), VALID, &templates());
    assert!(compiled.workflow.is_some(), "{:?}", compiled.diagnostics);
}

#[test]
fn hostile_shapes_stay_cheap() {
    let long_chain = format!(
        "workflow \"w\" {{ from \"a@b.example\" enroll when replied{} }}",
        " and not not replied".repeat(20_000)
    );
    let many_steps = format!(
        "workflow \"w\" {{ from \"a@b.example\" {} }}",
        (0..5_000)
            .map(|i| format!("step s{i} {{ goto s{} }}", (i + 1) % 5_000))
            .collect::<String>()
    );
    let open_blocks = format!(
        "workflow \"w\" {{ step s {}",
        "if replied { ".repeat(50_000)
    );
    for source in [long_chain, many_steps, open_blocks] {
        compile(&source);
    }
}
