//! DKIM through the real mail system: keys made with `openssl` (RSA and Ed25519), `nurture
//! check` prints the DNS record, the daemon (and `send-test`) sign through Postfix into
//! Dovecot, and what Dovecot stored verifies with `mail-auth` against that record: an altered
//! copy does not.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};

use crate::mail_system::{MailStack, nurture, trial_lead};
use crate::support::{scratch, seed};

/// A DNS cache holding the one record the test publishes: no lookup leaves the machine.
struct Published(Mutex<HashMap<String, Txt>>);

impl ResolverCache<String, Txt> for Published {
    fn get<Q>(&self, key: &Q) -> Option<Txt>
    where
        String: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(key).cloned()
    }

    fn remove<Q>(&self, key: &Q) -> Option<Txt>
    where
        String: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(key)
    }

    fn insert(&self, key: String, value: Txt, _: std::time::Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

/// The record `nurture check` prints for the key: (name, TXT value).
fn published_record(dir: &Path, stack: &MailStack, env: &[(&str, &str)]) -> (String, String) {
    let output = nurture(dir, stack, &["check"], env);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let line = stdout
        .lines()
        .find(|line| line.contains(" TXT \""))
        .unwrap_or_else(|| panic!("no TXT record printed:\n{stdout}"));
    let (name, value) = line.split_once(" TXT ").unwrap();
    (name.to_string(), value.trim_matches('"').to_string())
}

/// Whether every DKIM signature on `raw` verifies against the record.
fn verifies(raw: &[u8], record: &(String, String)) -> bool {
    let dns = Published(Mutex::new(HashMap::new()));
    let key = DomainKey::parse(record.1.as_bytes()).expect("the printed record parses");
    let txt = Txt::from(key);
    dns.insert(
        format!("{}.", record.0),
        txt.clone(),
        std::time::Instant::now(),
    );
    dns.insert(record.0.clone(), txt, std::time::Instant::now());
    let message = AuthenticatedMessage::parse(raw).expect("a message");
    let resolver = MessageAuthenticator::new_cloudflare().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results =
        runtime.block_on(resolver.verify_dkim(Parameters::new(&message).with_txt_cache(&dns)));
    !results.is_empty() && results.iter().all(|r| r.result() == &DkimResult::Pass)
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

#[test]
fn signed_emails_received_by_dovecot_verify_against_the_published_key() {
    let stack = MailStack::up("dkim", 2840, 2184, &["anna", "ana", "sales"]);
    let dir = scratch("dkim");
    openssl(&dir, &["genrsa", "-out", "rsa.pem", "2048"]);
    openssl(
        &dir,
        &["genpkey", "-algorithm", "ed25519", "-out", "ed25519.pem"],
    );
    let rsa_key = dir.join("rsa.pem").display().to_string();
    let ed_key = dir.join("ed25519.pem").display().to_string();
    let rsa_env = [
        ("NURTURE_DKIM_SELECTOR", "nurture1"),
        ("NURTURE_DKIM_DOMAIN", "example.test"),
        ("NURTURE_DKIM_KEY_FILE", rsa_key.as_str()),
    ];
    let rsa_record = published_record(&dir, &stack, &rsa_env);
    assert_eq!(rsa_record.0, "nurture1._domainkey.example.test");
    assert!(
        rsa_record.1.starts_with("v=DKIM1; k=rsa; p=MII"),
        "{}",
        rsa_record.1
    );

    // The daemon: the welcome to Anna, signed as it leaves, through Postfix into Dovecot.
    seed(&dir, vec![trial_lead("anna@example.test", "Anna")]);
    let mut env = rsa_env.to_vec();
    env.push(("NURTURE_DAEMON_REHEARSAL_START", "2026-11-23T09:00:00Z"));
    nurture(&dir, &stack, &["run", "--until-idle"], &env);
    stack.wait_for("anna", 1);
    let received = stack.fetch_over_imap("anna");
    assert_eq!(received.len(), 1);
    let raw = &received[0];
    let text = String::from_utf8_lossy(raw);
    assert!(text.contains("DKIM-Signature: "), "{text}");
    assert!(
        text.contains("d=example.test") && text.contains("s=nurture1"),
        "{text}"
    );
    assert!(verifies(raw, &rsa_record), "the RSA signature verifies");
    let altered = text.replacen("Welcome to Acme Analytics", "Welcome to Acme Analytixx", 1);
    assert_ne!(altered, text);
    assert!(
        !verifies(altered.as_bytes(), &rsa_record),
        "an altered subject fails"
    );
    // Another key with the same name (a rotated or a forged one) does not verify it either.
    let ed_env = [
        ("NURTURE_DKIM_SELECTOR", "nurture1"),
        ("NURTURE_DKIM_DOMAIN", "example.test"),
        ("NURTURE_DKIM_KEY_FILE", ed_key.as_str()),
    ];
    let ed_record = published_record(&dir, &stack, &ed_env);
    assert!(
        ed_record.1.starts_with("v=DKIM1; k=ed25519; p="),
        "{}",
        ed_record.1
    );
    assert!(!verifies(raw, &ed_record), "a different key fails");

    // send-test signs too, here with Ed25519.
    nurture(
        &dir,
        &stack,
        &[
            "send-test",
            "trial-welcome",
            "--to",
            "ana@example.test",
            "--lead",
            "anna@example.test",
        ],
        &ed_env,
    );
    let tests = stack.wait_for("ana", 5);
    assert_eq!(tests.len(), 5);
    for raw in &tests {
        assert!(
            verifies(raw, &ed_record),
            "{}",
            String::from_utf8_lossy(raw)
        );
    }

    // A key file that is not a key: `check` says so, `run` refuses to start.
    std::fs::write(dir.join("bad.pem"), "not a key\n").unwrap();
    let bad = dir.join("bad.pem").display().to_string();
    let output = crate::mail_system::nurture_command(
        &dir,
        &stack,
        &["check"],
        &[
            ("NURTURE_DKIM_SELECTOR", "nurture1"),
            ("NURTURE_DKIM_DOMAIN", "example.test"),
            ("NURTURE_DKIM_KEY_FILE", bad.as_str()),
        ],
    )
    .output()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.pem holds no usable private key"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
