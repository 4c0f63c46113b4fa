//! What the daemon benchmarks share: the drip workflow and a store of leads enrolled in it.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use nurture::engine;
use nurture::lead::Lead;
use nurture::project::Project;
use nurture::store::{Batch, DEFAULT_CACHE_BYTES, Store};

/// The benchmark workflow (`benches/fixtures/workflows/drip.flow`) and its template.
pub fn drip_project() -> (Project, PathBuf, PathBuf) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures");
    let workflows = fixtures.join("workflows");
    let templates = fixtures.join("templates");
    let project = Project::load(std::slice::from_ref(&workflows), &templates);
    assert!(
        project.diagnostics.is_empty(),
        "{}",
        project.render_diagnostics()
    );
    (project, workflows, templates)
}

/// Writes `leads` leads (`lead0000000@example.test`…) into the store at `data`, each enrolled
/// in the drip workflow and due within the hour before `now`, at scattered instants, so that
/// the due order is not the address order: each step reads and writes leads, enrollments and
/// journals at random places, as in real life.
pub fn enrolled_store(data: &Path, project: &Project, leads: usize, now: DateTime<Utc>) {
    let drip = project.workflow("drip").expect("the drip workflow");
    let store = Store::open(data, DEFAULT_CACHE_BYTES).expect("store");
    for first in (0..leads).step_by(10_000) {
        let mut batch = Batch::default();
        for i in first..(first + 10_000).min(leads) {
            let mut lead = Lead::new(format!("lead{i:07}@example.test"), now);
            lead.first_name = Some(format!("Name{i}"));
            lead.company = (i % 3 == 0).then(|| format!("Company {i}"));
            lead.source = Some("bench".into());
            let mut enrollment = engine::enroll(drip, &lead, now);
            let scatter = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) % 3_600_000;
            enrollment.due = Some(now - Duration::milliseconds(scatter as i64));
            batch.enrollments.push(enrollment);
            batch.leads.push(lead);
        }
        store.apply(&batch).expect("apply");
    }
    store.flush().expect("flush");
}
