//! The pest binding: runs the grammar (`grammar/workflow.pest`) and turns its failure into one
//! diagnostic in human terms.
//!
//! Every grammar rule has a human name in [`describe`], one match over `Rule` with no catch-all
//! arm: adding a rule to the grammar does not compile until someone says how a marketer should
//! read it ("a step name", never `step_name`). Before pest runs, [`check_depth`] refuses absurd
//! bracket nesting, because the grammar (and everything that walks its tree) is recursive there.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Once;

use pest::Parser;
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest_derive::Parser;

use crate::diagnostic::{Diagnostic, did_you_mean};

use super::MAX_NESTING;

#[derive(Parser)]
#[grammar = "grammar/workflow.pest"]
pub struct WorkflowParser;

/// pest gives up after this many rule calls; hostile input fails fast instead of slowly.
const CALL_LIMIT: usize = 10_000_000;

/// Brackets (`{`, `(`, `[`) deeper than this are refused before parsing. Legitimate files stay
/// far below it (a workflow and a step brace, plus `MAX_NESTING` blocks and some parentheses);
/// the finer `MAX_NESTING` check on blocks happens in validation, with a better message.
pub const MAX_BRACKET_DEPTH: usize = 4 * MAX_NESTING;

/// Parses a whole file into its `file` pair.
/// The error is boxed: a diagnostic is large and the happy path should not pay for it.
pub fn parse<'i>(path: &Path, source: &'i str) -> Result<Pair<'i, Rule>, Box<Diagnostic>> {
    static LIMIT: Once = Once::new();
    LIMIT.call_once(|| pest::set_call_limit(NonZeroUsize::new(CALL_LIMIT)));

    check_depth(path, source)?;
    match WorkflowParser::parse(Rule::file, source) {
        Ok(mut pairs) => Ok(pairs
            .next()
            .expect("the `file` rule always yields one pair")),
        Err(error) => Err(Box::new(syntax_error(path, source, &error))),
    }
}

/// Refuses brackets nested deeper than [`MAX_BRACKET_DEPTH`], skipping text and comments.
fn check_depth(path: &Path, source: &str) -> Result<(), Box<Diagnostic>> {
    let mut depth = 0usize;
    let mut in_text = false;
    let mut in_comment = false;
    let mut escaped = false;
    for (offset, c) in source.char_indices() {
        if in_comment {
            in_comment = c != '\n';
        } else if in_text {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' || c == '\n' {
                in_text = false;
            }
        } else {
            match c {
                '#' => in_comment = true,
                '"' => in_text = true,
                '{' | '(' | '[' => {
                    depth += 1;
                    if depth > MAX_BRACKET_DEPTH {
                        return Err(Box::new(
                            Diagnostic::error("this file is nested too deeply")
                                .at(path, source, offset..offset + 1)
                                .with_label(format!("more than {MAX_BRACKET_DEPTH} open brackets"))
                                .with_hint(format!("blocks nest at most {MAX_NESTING} deep")),
                        ));
                    }
                }
                '}' | ')' | ']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    Ok(())
}

/// "expected a statement or `}`, but found `sned`", pointing at the found token.
fn syntax_error(path: &Path, source: &str, error: &pest::error::Error<Rule>) -> Diagnostic {
    let position = match error.location {
        InputLocation::Pos(position) => position,
        InputLocation::Span((start, _)) => start,
    };
    let found = found_token(source, position);
    let found_text = &source[found.clone()];
    let found_name = if found_text.is_empty() {
        "the end of the file".to_string()
    } else {
        format!("`{found_text}`")
    };
    let ErrorVariant::ParsingError { positives, .. } = &error.variant else {
        // The only custom error pest raises is its call limit.
        return Diagnostic::error("this file is too complex to read")
            .at(path, source, found)
            .with_label("the parser gave up here")
            .with_hint("split the workflow into simpler steps");
    };

    let mut expected: Vec<&str> = Vec::new();
    for rule in positives {
        let name = describe(*rule);
        if !expected.contains(&name) {
            expected.push(name);
        }
    }
    // Read best as: what kind of thing, then keywords, then punctuation, then the end.
    expected.sort_by_key(|name| {
        let mut chars = name.chars();
        match (chars.next(), chars.next()) {
            (Some('`'), Some(c)) if c.is_ascii_alphabetic() => 1,
            (Some('`'), _) => 2,
            _ if *name == describe(Rule::EOI) => 3,
            _ => 0,
        }
    });
    let message = if expected.is_empty() {
        format!("unexpected {found_name}")
    } else {
        format!("expected {}, but found {found_name}", join_or(&expected))
    };
    let label = if found_text.is_empty() {
        "the file ends here".to_string()
    } else {
        "not expected here".to_string()
    };
    let mut diagnostic = Diagnostic::error(message)
        .at(path, source, found)
        .with_label(label);

    let words: Vec<&str> = positives.iter().flat_map(|rule| keywords(*rule)).collect();
    if !found_text.is_empty()
        && found_text.chars().all(|c| c.is_alphanumeric() || c == '-')
        && let Some(word) = closest_keyword(found_text, &words)
    {
        diagnostic = diagnostic.with_hint(format!("did you mean `{word}`?"));
    } else if positives.contains(&Rule::EOI) {
        diagnostic = diagnostic.with_hint("a file holds one workflow; this is after its last `}`");
    } else if found_text.starts_with('"') && !found_text.ends_with('"') || found_text == "\"" {
        diagnostic = diagnostic.with_hint("text ends with `\"` on the same line");
    }
    diagnostic
}

/// The token at `position`: a word, a quoted text (to the end of the line at most), or one
/// character; empty at the end of the file.
fn found_token(source: &str, position: usize) -> std::ops::Range<usize> {
    let position = position.min(source.len());
    let rest = &source[position..];
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '-' || c == '.';
    let length = match rest.chars().next() {
        None => 0,
        Some('"') => {
            let line = rest.find(['\n', '\r']).unwrap_or(rest.len());
            rest[1..line].find('"').map_or(line, |end| end + 2)
        }
        Some(c) if is_word(c) => rest.find(|c: char| !is_word(c)).unwrap_or(rest.len()),
        Some(c) => c.len_utf8(),
    };
    position..position + length
}

/// Like `did_you_mean`, but a swapped pair of letters counts as one edit: keywords are short,
/// and `stpe` for `step` is the typical slip.
fn closest_keyword<'a>(word: &str, keywords: &[&'a str]) -> Option<&'a str> {
    did_you_mean(word, keywords.iter().copied()).or_else(|| {
        keywords
            .iter()
            .copied()
            .filter(|keyword| strsim::osa_distance(word, keyword) == 1)
            .min_by_key(|keyword| keyword.len())
    })
}

/// "a, b or c".
fn join_or(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The words a rule may start with, for "did you mean" after a syntax error.
fn keywords(rule: Rule) -> Vec<&'static str> {
    match rule {
        Rule::setting => vec![
            "enroll", "exit", "allow", "every", "from", "reply", "owner", "timezone", "send",
            "track", "scoring",
        ],
        Rule::statement => vec![
            "send", "wait", "if", "set", "tag", "untag", "score", "promote", "notify", "goto",
            "exit", "continue", "pause",
        ],
        Rule::not_expr | Rule::engagement => {
            vec![
                "not",
                "lead",
                "replied",
                "auto-replied",
                "clicked",
                "opened",
                "did",
                "sent",
            ]
        }
        // A single keyword: the text between the backticks of its human name.
        _ => {
            let name = describe(rule);
            let word = name.trim_matches('`');
            if name.starts_with('`') && word.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                vec![word]
            } else {
                Vec::new()
            }
        }
    }
}

/// How a rule is named in messages. No catch-all arm: a new rule needs a human name.
pub fn describe(rule: Rule) -> &'static str {
    match rule {
        Rule::EOI => "the end of the file",
        Rule::WHITESPACE => "a space or a new line",
        Rule::COMMENT => "a comment",
        Rule::name_char => "a letter, digit, `_` or `-`",
        Rule::separator => "`;`",
        Rule::primary => "a condition",
        Rule::string => "text in quotes",
        Rule::number => "a number",
        Rule::time => "a time of day such as `09:00`",
        Rule::step_name => "a step name",
        Rule::open_brace => "`{`",
        Rule::close_brace => "`}`",
        Rule::open_paren => "`(`",
        Rule::close_paren => "`)`",
        Rule::open_bracket => "`[`",
        Rule::close_bracket => "`]`",
        Rule::kw_workflow => "`workflow`",
        Rule::kw_enroll => "`enroll`",
        Rule::kw_when => "`when`",
        Rule::kw_allow => "`allow`",
        Rule::kw_mark => "`mark`",
        Rule::kw_as => "`as`",
        Rule::kw_bulk => "`bulk`",
        Rule::kw_re_entry => "`re-entry`",
        Rule::kw_every => "`every`",
        Rule::kw_day => "`day`",
        Rule::kw_from => "`from`",
        Rule::kw_reply => "`reply`",
        Rule::kw_to => "`to`",
        Rule::kw_owner => "`owner`",
        Rule::kw_timezone => "`timezone`",
        Rule::kw_send => "`send`",
        Rule::kw_on => "`on`",
        Rule::kw_between => "`between`",
        Rule::kw_and => "`and`",
        Rule::kw_or => "`or`",
        Rule::kw_not => "`not`",
        Rule::kw_in => "`in`",
        Rule::kw_lead => "`lead`",
        Rule::kw_step => "`step`",
        Rule::kw_subject => "`subject`",
        Rule::kw_wait => "`wait`",
        Rule::kw_until => "`until`",
        Rule::kw_cron => "`cron`",
        Rule::kw_if => "`if`",
        Rule::kw_else => "`else`",
        Rule::kw_set => "`set`",
        Rule::kw_tag => "`tag`",
        Rule::kw_untag => "`untag`",
        Rule::kw_score => "`score`",
        Rule::kw_promote => "`promote`",
        Rule::kw_notify => "`notify`",
        Rule::kw_goto => "`goto`",
        Rule::kw_exit => "`exit`",
        Rule::kw_continue => "`continue`",
        Rule::kw_pause => "`pause`",
        Rule::kw_return => "`return`",
        Rule::kw_is => "`is`",
        Rule::kw_has => "`has`",
        Rule::kw_contains => "`contains`",
        Rule::kw_replied => "`replied`",
        Rule::kw_auto_replied => "`auto-replied`",
        Rule::kw_clicked => "`clicked`",
        Rule::kw_sent => "`sent`",
        Rule::kw_track => "`track`",
        Rule::kw_opened => "`opened`",
        Rule::kw_link => "`link`",
        Rule::kw_did => "`did`",
        Rule::kw_within => "`within`",
        Rule::track => "`track`",
        Rule::track_word => "`clicks` or `opens`",
        Rule::action => "`clicked`, `opened \"STEP\"` or `did \"EVENT\"`",
        Rule::step_ref => "a step name in quotes",
        Rule::link_name => "a link name in quotes",
        Rule::event_ref => "an event name in quotes",
        Rule::within => "`within`",
        Rule::wait_until_action => "`until lead …`",
        Rule::kw_now => "`now`",
        Rule::kw_expires => "`expires`",
        Rule::kw_scoring => "`scoring`",
        Rule::kw_halve => "`halve`",
        Rule::kw_inactive => "`inactive`",
        Rule::kw_after => "`after`",
        Rule::kw_at => "`at`",
        Rule::kw_becomes => "`becomes`",
        Rule::scoring => "`scoring`",
        Rule::scoring_item => {
            "a score rule (`+10 on reply`), `halve every N days`, `hot at N`, `warm at N` or `inactive after N days`"
        }
        Rule::score_rule => "a score rule such as `+10 on reply`",
        Rule::signal_name => "`open`, `click`, `reply` or `event \"NAME\"`",
        Rule::decay => "`halve every N days`",
        Rule::inactivity => "`inactive after N days`",
        Rule::threshold => "`hot at N` or `warm at N`",
        Rule::trigger => "`when lead becomes …`",
        Rule::bare_word => "a word such as `hot`",
        Rule::date_expr => "a date such as `now + 7 days` or `lead.trial_ends`",
        Rule::date_shift => "`+ N days` or `- N days`",
        Rule::shift_sign => "`+` or `-`",
        Rule::wait_until_date => "`until` and a date",
        Rule::send_expires => "`expires` and a date",
        Rule::file | Rule::workflow => "`workflow \"NAME\" { … }`",
        Rule::workflow_name => "the workflow's name in quotes",
        Rule::setting => "a setting",
        Rule::enroll => "`enroll when`",
        Rule::goal => "`exit when`",
        Rule::reentry => "`allow re-entry`",
        Rule::bulk => "`mark as bulk`",
        Rule::every => "`every`",
        Rule::from => "`from`",
        Rule::reply_to => "`reply to`",
        Rule::owner => "`owner`",
        Rule::timezone => "`timezone`",
        Rule::send_window => "`send on`",
        Rule::window_zone => "`in lead timezone` or `in workflow timezone`",
        Rule::mailbox => "an email address in quotes",
        Rule::zone_name => "a time zone name in quotes",
        Rule::cron_text => "a cron expression in quotes",
        Rule::days => "weekdays such as `Mon-Fri`",
        Rule::every_day => "`every day`",
        Rule::day_range => "a weekday or a range such as `Mon-Fri`",
        Rule::day_word => "a weekday",
        Rule::handler => "`on`",
        Rule::event_name => "an event (`reply`, `auto-reply`, `bounce`, `unsubscribe` or `click`)",
        Rule::step => "`step`",
        Rule::block => "a block in braces",
        Rule::statement => "a statement (`send`, `wait`, `if`, `goto`, an action…)",
        Rule::send => "`send`",
        Rule::template_name => "a template name in quotes",
        Rule::subject => "a subject in quotes",
        Rule::wait => "`wait`",
        Rule::wait_for => "a length of time such as `2 days`",
        Rule::count => "a whole number",
        Rule::unit => "a unit such as `days`",
        Rule::wait_until => "`until`",
        Rule::wait_until_cron => "`until cron`",
        Rule::if_chain => "`if`",
        Rule::else_if => "`else if`",
        Rule::else_block => "`else`",
        Rule::set_field => "`set`",
        Rule::tag => "`tag`",
        Rule::untag => "`untag`",
        Rule::tag_name => "a tag in quotes",
        Rule::score => "`score`",
        Rule::score_change => "a score change such as `+10` or `-5`",
        Rule::promote => "`promote`",
        Rule::stage_name => "a stage (`contact` or `customer`)",
        Rule::notify => "`notify`",
        Rule::goto => "`goto`",
        Rule::exit => "`exit`",
        Rule::continue_stmt => "`continue`",
        Rule::pause => "`pause until return`",
        Rule::condition | Rule::or_expr | Rule::and_expr | Rule::not_expr => "a condition",
        Rule::test => "a test such as `lead.score >= 20`",
        Rule::field => "a lead field such as `lead.source`",
        Rule::is_set => "`is set`",
        Rule::compare => "a comparison",
        Rule::operator => "an operator (`is`, `is not`, `=`, `>=`, `contains`…)",
        Rule::in_list => "`in [ … ]`",
        Rule::has_tag => "`has`",
        Rule::value => "a value (text in quotes, a number, or a date such as `now`)",
        Rule::engagement => {
            "`replied`, `auto-replied`, `clicked`, `opened`, `did` or `sent \"TEMPLATE\"`"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(source: &str) -> Diagnostic {
        *parse(Path::new("t.flow"), source).expect_err("should not parse")
    }

    #[test]
    fn misspelled_keyword_gets_a_hint() {
        let diagnostic = error("workflow \"x\" {\n  from \"a@b.example\"\n  stpe a { exit }\n}\n");
        assert_eq!(
            diagnostic.message,
            "expected a setting, `when`, `on`, `step` or `}`, but found `stpe`"
        );
        assert_eq!(diagnostic.hint.as_deref(), Some("did you mean `step`?"));
    }

    #[test]
    fn end_of_file_is_named() {
        let diagnostic = error("workflow \"x\" {");
        assert!(
            diagnostic
                .message
                .ends_with("but found the end of the file")
        );
    }

    #[test]
    fn deep_brackets_are_refused_before_parsing() {
        let source = format!("workflow \"x\" {{ enroll when {} }}", "(".repeat(100_000));
        assert_eq!(error(&source).message, "this file is nested too deeply");
    }

    #[test]
    fn keywords_need_a_word_boundary() {
        let diagnostic = error("workflow \"x\" { from \"a@b.example\" stepper a { exit } }");
        assert!(diagnostic.message.contains("found `stepper`"));
    }
}
