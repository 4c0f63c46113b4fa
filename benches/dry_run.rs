//! `cargo bench --bench dry_run`: a dry-run of a 10-step workflow for 10,000 leads.
//!
//! Measures what `nurture dry-run WORKFLOW --leads FILE` does: load the leads file, simulate each
//! lead on the virtual clock and render every email (subject, HTML and text). Prints the median
//! total over several runs, the per-lead cost, and beside it the cost of one template render
//! measured in the same run. Target (issue 2): under 2 s for 10,000 leads.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use nurture::cli::Project;
use nurture::cli::dry_run::{Options, preview_lead};
use nurture::engine::simulate::Scenario;
use nurture::leads_file;
use nurture::mail;

const LEADS: usize = 10_000;
const STEPS: usize = 10;
const RUNS: usize = 5;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let dir = std::env::temp_dir().join(format!("nurture-bench-dry-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    // A 10-step workflow with a branch in every step, over the shipped templates.
    let mut flow = String::from(
        "workflow \"bench\" {\n  from \"Ana <ana@example.test>\"\n  timezone \"Europe/Berlin\"\n  send on Mon-Fri between 09:00 and 17:30\n",
    );
    for step in 0..STEPS {
        let _ = writeln!(
            flow,
            "  step s{step} {{\n    if lead.score >= 20 {{ send \"demo-offer\" subject \"Demo, {{{{default first_name \\\"there\\\"}}}}?\" }} else {{ send \"welcome\" subject \"Step {step}\" }}\n    wait 1 day\n  }}"
        );
    }
    flow.push_str("}\n");
    let flow_path = dir.join("bench.flow");
    std::fs::write(&flow_path, flow).expect("write workflow");

    let zones = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", ""];
    let mut csv = String::from("email,first_name,company,timezone,score\n");
    for i in 0..LEADS {
        let _ = writeln!(
            csv,
            "lead{i}@example.test,Name{i},Company {i},{},{}",
            zones[i % zones.len()],
            i % 40
        );
    }
    let csv_path = dir.join("leads.csv");
    std::fs::write(&csv_path, csv).expect("write leads");

    let project = Project::load(std::slice::from_ref(&flow_path), Path::new("templates"));
    assert!(
        project.diagnostics.is_empty(),
        "{}",
        project.render_diagnostics()
    );
    let workflow = &project.workflows[0];
    let start = Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap();
    let options = Options {
        start,
        until: start + chrono::Duration::days(30),
        scenario: Scenario::default(),
        unsubscribe: nurture::unsubscribe::Unsubscribe::preview(""),
    };

    let mut emails = 0;
    let totals: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let begin = Instant::now();
            let report = leads_file::load(&csv_path, start).expect("leads load");
            emails = report
                .leads
                .iter()
                .map(|lead| {
                    preview_lead(&project, workflow, lead, &options)
                        .emails
                        .len()
                })
                .sum::<usize>();
            begin.elapsed()
        })
        .collect();
    assert_eq!(emails, LEADS * STEPS, "every step sends one email per lead");

    // One render (subject + HTML + text) of the same template, in the same run.
    let report = leads_file::load(&csv_path, start).expect("leads load");
    let lead = &report.leads[1];
    let context = mail::context(lead, workflow, "s0", "mailto:u@example.test");
    let renders: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let begin = Instant::now();
            for _ in 0..LEADS {
                let body = project
                    .templates
                    .render("welcome", &context)
                    .expect("render");
                std::hint::black_box(body);
            }
            begin.elapsed() / LEADS as u32
        })
        .collect();
    std::fs::remove_dir_all(&dir).expect("clean up");

    let total = median(totals);
    let per_lead = total / LEADS as u32;
    let render = median(renders);
    println!(
        "dry-run of a {STEPS}-step workflow for {LEADS} leads ({emails} emails): median {:.0} ms over {RUNS} runs",
        total.as_secs_f64() * 1e3
    );
    println!(
        "per lead: {:.1} µs; one template render: {:.1} µs; per lead = {:.1} renders",
        per_lead.as_secs_f64() * 1e6,
        render.as_secs_f64() * 1e6,
        per_lead.as_secs_f64() / render.as_secs_f64()
    );
}
