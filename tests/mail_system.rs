//! The test mail system (`tests/mailstack.sh`: Postfix and Dovecot on loopback) and running
//! `nurture` against it; shared by the SMTP and inbox tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use chrono::Utc;
use nurture::lead::Lead;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Postfix and Dovecot for one test, in their own folder and ports; killed when dropped.
pub struct MailStack {
    pub dir: PathBuf,
    pub smtp_port: u16,
    pub imap_port: u16,
    /// Whether Dovecot offers IDLE.
    idle: bool,
}

impl MailStack {
    pub fn up(name: &str, smtp_port: u16, imap_port: u16, users: &[&str]) -> MailStack {
        MailStack::start(name, smtp_port, imap_port, users, true)
    }

    /// A mail system whose Dovecot does not offer IDLE: clients have to poll.
    pub fn up_without_idle(
        name: &str,
        smtp_port: u16,
        imap_port: u16,
        users: &[&str],
    ) -> MailStack {
        MailStack::start(name, smtp_port, imap_port, users, false)
    }

    fn start(name: &str, smtp_port: u16, imap_port: u16, users: &[&str], idle: bool) -> MailStack {
        // Unix socket paths must stay short: not under target/.
        let dir = PathBuf::from(format!("/tmp/nms-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let stack = MailStack {
            dir,
            smtp_port,
            imap_port,
            idle,
        };
        stack.run(
            &["up", &smtp_port.to_string(), &imap_port.to_string()],
            users,
        );
        stack
    }

    pub fn run(&self, command: &[&str], users: &[&str]) {
        let status = Command::new(format!("{REPO}/tests/mailstack.sh"))
            .arg(command[0])
            .arg(&self.dir)
            .args(&command[1..])
            .args(users)
            .env("NO_IDLE", if self.idle { "0" } else { "1" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("tests/mailstack.sh runs");
        let logs = ["pf/postfix.log", "pf/start.log", "dv/dovecot.log"]
            .iter()
            .map(|log| fs::read_to_string(self.dir.join(log)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            status.success(),
            "the test mail system did not {} (Postfix and Dovecot are installed by .ci/run):\n{logs}",
            command[0]
        );
    }

    /// The messages delivered to `user@example.test`, raw.
    pub fn mailbox(&self, user: &str) -> Vec<Vec<u8>> {
        let mut found: Vec<Vec<u8>> = self
            .maildir_files(user)
            .iter()
            .filter_map(|path| fs::read(path).ok())
            .collect();
        found.sort();
        found
    }

    /// The files of `user`'s Maildir (`new/` and `cur/`); their names carry the flags.
    pub fn maildir_files(&self, user: &str) -> Vec<PathBuf> {
        let maildir = self.dir.join(format!("mail/example.test/{user}/Maildir"));
        ["new", "cur"]
            .iter()
            .filter_map(|sub| fs::read_dir(maildir.join(sub)).ok())
            .flat_map(|entries| entries.map(|entry| entry.unwrap().path()))
            .collect()
    }

    /// Hands `raw` to Postfix as `from` for `to`, as another mail system would.
    pub fn inject(&self, from: &str, to: &str, raw: &str) {
        use std::io::{BufRead, BufReader, Write};
        let stream = std::net::TcpStream::connect(("127.0.0.1", self.smtp_port)).unwrap();
        // Each line leaves at once (no Nagle wait for the server's delayed ACK).
        stream.set_nodelay(true).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut expect = |code: &str| loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.starts_with(code), "expected {code}, got {line:?}");
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        };
        expect("220");
        let body = raw.replace("\r\n", "\n").replace('\n', "\r\n");
        let body = body.replace("\r\n.", "\r\n..");
        for (command, code) in [
            ("EHLO other.example".to_owned(), "250"),
            (format!("MAIL FROM:<{from}>"), "250"),
            (format!("RCPT TO:<{to}>"), "250"),
            ("DATA".to_owned(), "354"),
            (format!("{body}\r\n."), "250"),
            ("QUIT".to_owned(), "221"),
        ] {
            writer
                .write_all(format!("{command}\r\n").as_bytes())
                .unwrap();
            expect(code);
        }
    }

    /// `user@example.test`'s inbox as a mail client sees it: logged in over IMAP, every
    /// message fetched whole (without marking it read), in UID order.
    pub fn fetch_over_imap(&self, user: &str) -> Vec<Vec<u8>> {
        use futures_util::TryStreamExt;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let socket = tokio::net::TcpStream::connect(("127.0.0.1", self.imap_port))
                .await
                .expect("Dovecot answers");
            let mut client = async_imap::Client::new(socket);
            client.read_response().await.unwrap().expect("a greeting");
            let mut session = client
                .login(format!("{user}@example.test"), "secret")
                .await
                .map_err(|(error, _)| error)
                .expect("the lead logs in");
            session.examine("INBOX").await.unwrap();
            let fetched: Vec<_> = session
                .uid_fetch("1:*", "(UID BODY.PEEK[])")
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            let mut messages: Vec<(u32, Vec<u8>)> = fetched
                .iter()
                .filter_map(|m| Some((m.uid?, m.body()?.to_vec())))
                .collect();
            messages.sort_by_key(|(uid, _)| *uid);
            session.logout().await.unwrap();
            messages.into_iter().map(|(_, body)| body).collect()
        })
    }

    /// Waits (up to 10 s) until `user` has `count` messages.
    pub fn wait_for(&self, user: &str, count: usize) -> Vec<Vec<u8>> {
        let started = std::time::Instant::now();
        loop {
            let found = self.mailbox(user);
            if found.len() >= count || started.elapsed().as_secs() > 10 {
                return found;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for MailStack {
    fn drop(&mut self) {
        let _ = Command::new(format!("{REPO}/tests/mailstack.sh"))
            .args(["kill"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn trial_lead(email: &str, first_name: &str) -> Lead {
    let mut lead = Lead::new(email.into(), Utc::now());
    lead.first_name = Some(first_name.into());
    lead.source = Some("website-form".into());
    lead.tags.insert("trial".into());
    lead.timezone = Some("Europe/Berlin".into());
    lead
}

/// `nurture ARGS` in `dir`, set to send through the stack.
pub fn nurture_command(
    dir: &Path,
    stack: &MailStack,
    args: &[&str],
    env: &[(&str, &str)],
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nurture"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("NURTURE_WORKFLOWS", format!("{REPO}/workflows"))
        .env("NURTURE_TEMPLATES", format!("{REPO}/templates"))
        .env("NURTURE_TRANSPORT_KIND", "smtp")
        .env(
            "NURTURE_SMTP_URL",
            format!("smtp://127.0.0.1:{}", stack.smtp_port),
        )
        .env("NURTURE_SMTP_TIMEOUT_SECONDS", "5")
        .envs(env.iter().copied());
    command
}

/// `nurture ARGS` run to its end; fails the test unless it succeeds.
pub fn nurture(dir: &Path, stack: &MailStack, args: &[&str], env: &[(&str, &str)]) -> Output {
    let output = nurture_command(dir, stack, args, env).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `nurture run --until-idle` against the stack, with the clock at `now`.
pub fn run_daemon(dir: &Path, stack: &MailStack, now: &str) -> Output {
    nurture(
        dir,
        stack,
        &["run", "--until-idle"],
        &[("NURTURE_DAEMON_REHEARSAL_START", now)],
    )
}
