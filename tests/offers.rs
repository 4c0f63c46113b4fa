//! Time-limited offers and scoring end to end, over real HTTP against `nurture run` (file
//! transport): an offer that has ended is never sent while a current one is, and a lead that
//! API events make hot runs `when lead becomes hot` (tagged, the owner told), which the API
//! and `nurture leads show` then show.

use std::fs;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::api::{Daemon, KEY, answer, client, outbox, post};
use crate::support::scratch;

const WORKFLOW: &str = r#"workflow "hand-off" {
  enroll when lead.tags has "offer"
  from "Ana Ortiz <ana@example.test>"
  owner "Sales team <sales@example.test>"

  scoring {
    +20 on event "visited-pricing"
    +30 on reply
    halve every 30 days
    hot at 50
  }

  when lead becomes hot { notify owner; tag "sales-ready" }

  step offer {
    send "trial-offer" subject "20% off until {{date offer_ends \"long\"}}" expires lead.offer_ends
  }
}
"#;

/// Polls `check` every 20 ms for up to 10 s.
fn eventually(what: &str, daemon: &Daemon, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}, still not after 10 s:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_ended_offer_is_not_sent_and_api_events_hand_a_hot_lead_to_sales() {
    let dir = scratch("offers-e2e");
    let workflows = dir.join("workflows");
    fs::create_dir_all(&workflows).unwrap();
    fs::write(workflows.join("hand-off.flow"), WORKFLOW).unwrap();
    let workflows = workflows.display().to_string();
    let daemon = Daemon::start(&dir, &[("NURTURE_WORKFLOWS", workflows.as_str())]);
    let http = client();
    let leads = daemon.url("/v1/leads");

    // The daemon's clock starts at 2026-11-23 09:00 UTC: one offer runs to December, the
    // other ended the week before.
    for (email, ends) in [
        ("current@example.test", "2026-12-01T18:00:00Z"),
        ("ended@example.test", "2026-11-20"),
    ] {
        let lead = json!({"email": email, "tags": ["offer"], "timezone": "Europe/Berlin",
            "language": "de", "offer_ends": ends});
        let (status, body) = answer(post(&http, &leads, Some(KEY), &lead));
        assert_eq!(status, 201, "{body}");
    }
    // A date that is not one is refused, naming the field.
    let bad = json!({"email": "bad@example.test", "offer_ends": "2026-02-30"});
    let (status, body) = answer(post(&http, &leads, Some(KEY), &bad));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "offer_ends", "{body}");
    eventually("the current offer is sent", &daemon, || {
        outbox(&dir)
            .iter()
            .any(|eml| eml.contains("To: current@example.test"))
    });
    let show = |email: &str| {
        let output = Daemon::nurture(&dir, &["leads", "show", email]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    eventually("the ended offer is journaled as not sent", &daemon, || {
        show("ended@example.test")
            .contains("email \"trial-offer\" of step offer not sent: it expired")
    });
    let sent = outbox(&dir);
    assert!(
        !sent.iter().any(|eml| eml.contains("ended@example.test")),
        "an ended offer left:\n{sent:?}"
    );
    let offer = sent
        .iter()
        .find(|eml| eml.contains("To: current@example.test"))
        .unwrap();
    // The date on the lead's clock, in the lead's language (the subject is MIME-encoded).
    assert!(offer.contains("Dezember 2026"), "{offer}");

    // Three visits to the pricing page: 20, 40, then 60 points: hot at the third.
    let events = daemon.url("/v1/leads/current@example.test/events");
    let get = || -> Value {
        let response = http
            .get(daemon.url("/v1/leads/current@example.test"))
            .bearer_auth(KEY)
            .send()
            .unwrap();
        answer(response).1
    };
    for visit in 1..=3 {
        let (status, body) = answer(post(
            &http,
            &events,
            Some(KEY),
            &json!({"event": "visited-pricing"}),
        ));
        assert_eq!(status, 201, "{body}");
        if visit < 3 {
            let lead = get();
            assert_eq!(lead["score"], 20 * visit, "{lead}");
            assert_eq!(lead["tags"], json!(["offer"]), "not hot yet: {lead}");
        }
    }
    eventually("the hot lead is tagged sales-ready", &daemon, || {
        get()["tags"] == json!(["offer", "sales-ready"])
    });
    assert_eq!(get()["score"], 60);
    eventually("the owner is told", &daemon, || {
        outbox(&dir).iter().any(|eml| {
            eml.contains("To: \"Sales team\" <sales@example.test>")
                && eml.contains(
                    "Subject: [nurture] current@example.test: hand-off, when lead becomes hot",
                )
        })
    });
    // An event nobody scores moves nothing and runs nothing.
    let (status, _) = answer(post(
        &http,
        &events,
        Some(KEY),
        &json!({"event": "webinar"}),
    ));
    assert_eq!(status, 201);

    let shown = show("current@example.test");
    for line in [
        "  temperature hot\n",
        "  score      60\n",
        "score +20 on event \"visited-pricing\" (0 → 20, warm)",
        "score +20 on event \"visited-pricing\" (40 → 60, hot)",
        "lead became hot received",
        "tag \"sales-ready\"",
    ] {
        assert!(shown.contains(line), "{line}\n{shown}");
    }
    let listed = Daemon::nurture(&dir, &["leads", "list", "--temperature", "hot"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("current@example.test"), "{listed}");
    assert!(!listed.contains("ended@example.test"), "{listed}");
    daemon.stop();
}

/// `score +N` in a step is a scored signal like a reply: the temperature it changes runs `when
/// lead becomes …` in the same batch. A handler that moves the score again does not start
/// another round (here it would go back and forth for ever).
#[test]
fn a_score_in_a_step_that_makes_the_lead_hot_runs_when_lead_becomes_hot_once() {
    let dir = scratch("score-becomes");
    let workflows = dir.join("workflows");
    let templates = dir.join("templates");
    fs::create_dir_all(&workflows).unwrap();
    fs::create_dir_all(&templates).unwrap();
    fs::write(
        workflows.join("warm-up.flow"),
        r#"workflow "warm-up" {
  enroll when lead.source is "webinar"
  from "Ana Ortiz <ana@example.test>"

  scoring {
    hot at 50
    warm at 20
  }

  when lead becomes hot { tag "sales-ready"; score -40 }
  when lead becomes warm { score +40 }

  step attended {
    score +60
  }
}
"#,
    )
    .unwrap();
    let mut kim = nurture::lead::Lead::new("kim@example.test".into(), chrono::Utc::now());
    kim.source = Some("webinar".into());
    crate::support::seed(&dir, vec![kim]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(["run", "--until-idle"])
        .current_dir(&dir)
        .env_remove("RUST_LOG")
        .env("NURTURE_WORKFLOWS", &workflows)
        .env("NURTURE_TEMPLATES", &templates)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let store = nurture::store::Store::open(&dir.join("data"), nurture::store::DEFAULT_CACHE_BYTES)
        .unwrap();
    let kim = store.lead("kim@example.test").unwrap().unwrap();
    assert!(kim.tags.contains("sales-ready"), "{kim:?}");
    assert_eq!(
        kim.score, 20,
        "the hot handler ran once, the warm one not at all"
    );
}
