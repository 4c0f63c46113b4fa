//! What several test modules need: a scratch folder per test, and leads written straight into
//! a store the way an import leaves them (marked for the daemon's enrollment).

use std::fs;
use std::path::{Path, PathBuf};

use nurture::lead::Lead;
use nurture::store::{Batch, DEFAULT_CACHE_BYTES, Store};

/// An empty folder for one test (`nurture-<name>-<pid>` in the temp dir).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nurture-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `leads` into the store in `dir/data`, marked for enrollment, as an import does.
pub fn seed(dir: &Path, leads: Vec<Lead>) {
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let mut batch = Batch::default();
    for lead in leads {
        batch.changed.push(lead.email.clone());
        batch.leads.push(lead);
    }
    store.apply(&batch).unwrap();
    store.flush().unwrap();
}
