//! A real PostgreSQL for tests: one private cluster per test binary run (started on first use
//! by `tests/pgcluster.sh`, on 127.0.0.1 at a free port, stopped by the script's watcher when
//! the test process ends), and a database of its own for each test. A missing or broken
//! PostgreSQL fails the test that needed it, with the server's log; it never skips.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use super::PgStore;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The running cluster: where it listens.
pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
}

/// The cluster of this test binary run, started by the first test that asks.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(start)
}

fn start() -> Cluster {
    let mut failures = Vec::new();
    // The port is free when picked, but another process may take it before the server binds
    // it: try a few.
    for attempt in 0..3 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port on 127.0.0.1")
            .port();
        // Short: the Unix socket goes in it (at most 107 bytes).
        let dir = PathBuf::from(format!("/tmp/npg-{}-{attempt}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let output = Command::new(format!("{REPO}/tests/pgcluster.sh"))
            .arg("start")
            .arg(&dir)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .output()
            .expect("tests/pgcluster.sh runs");
        if output.status.success() {
            return Cluster { port, dir };
        }
        failures.push(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    panic!(
        "the test PostgreSQL did not start (tests/run installs the package postgresql):\n{}",
        failures.join("\n")
    );
}

impl Cluster {
    /// The URL of `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://nurture@127.0.0.1:{}/{database}", self.port)
    }

    /// A new, empty database for one test; its URL.
    pub fn database(&self, name: &str) -> String {
        static CREATED: AtomicU32 = AtomicU32::new(0);
        let database = format!(
            "t_{}_{}",
            name.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .take(40)
                .collect::<String>(),
            CREATED.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .expect("the test PostgreSQL answers");
        admin
            .batch_execute(&format!("CREATE DATABASE \"{database}\""))
            .expect("a test database");
        self.url(&database)
    }
}

/// A store in a new database of the test cluster.
pub fn store(name: &str) -> PgStore {
    PgStore::open(&cluster().database(name), None).expect("the store opens")
}

/// Puts the enrollment (workflow, email) under another daemon's lease for an hour, creating a
/// placeholder for it if it does not exist: any batch of `store` that writes it is refused.
pub fn lease_elsewhere(store: &PgStore, workflow: &str, email: &str) {
    store
        .rows(
            "INSERT INTO enrollments (workflow, lead_key, body, lease_owner, lease_until) \
             VALUES ($1, $2, '{}', 'another daemon', clock_timestamp() + interval '1 hour') \
             ON CONFLICT (workflow, lead_key) DO UPDATE \
             SET lease_owner = excluded.lease_owner, lease_until = excluded.lease_until",
            &[&workflow, &crate::lead::email_key(email).as_ref()],
        )
        .expect("the lease is set");
}
