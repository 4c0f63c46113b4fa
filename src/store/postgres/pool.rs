//! Connections to the database: the settings a `postgres://` URL gives (with the password from
//! outside it), TLS on rustls with the `ring` provider when the URL asks for it, and the pool
//! the store's operations borrow from, each connection keeping its prepared statements.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::time::Duration;

use postgres::config::SslMode;
use postgres::{Client, Config, GenericClient, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PgError;
use crate::secret::Secret;

/// Where the database is and how to reach it. The password, if any, is never printed.
#[derive(Clone)]
pub struct Settings {
    config: Config,
    tls: Option<MakeRustlsConnect>,
}

impl Settings {
    /// The settings of `url` (`postgres://user@host:port/database?sslmode=require`, or the
    /// key=value form), with `password` (from a file or a variable: never in the URL of a
    /// shared config) and, for `sslmode=require`, the server's certificate checked against the
    /// Mozilla roots plus the CAs in `ca_file` (may be empty). A password in the URL itself is
    /// refused, so it cannot leak with the config file.
    pub fn new(url: &str, password: Option<&Secret>, ca_file: &str) -> Result<Settings, PgError> {
        let mut config = Config::from_str(url).map_err(|error| PgError::Url {
            // The URL may hold a password: say what is wrong without echoing it.
            detail: error.to_string(),
        })?;
        if config.get_password().is_some() {
            return Err(PgError::Url {
                detail: "it holds a password: give it through a file or an environment variable"
                    .into(),
            });
        }
        if let Some(password) = password {
            config.password(password.expose());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("nurture");
        // `prefer` (the default) would try TLS and quietly fall back to plain text: without a
        // `sslmode=require` in the URL nurture speaks plain text, as asked, and with it TLS or
        // nothing.
        let tls = match config.get_ssl_mode() {
            SslMode::Require => {
                let client =
                    crate::tls::client_config(ca_file).map_err(|detail| PgError::Url { detail })?;
                Some(MakeRustlsConnect::new((*client).clone()))
            }
            _ => {
                config.ssl_mode(SslMode::Disable);
                None
            }
        };
        Ok(Settings { config, tls })
    }

    /// A new connection of its own (not from the pool): for LISTEN and session locks.
    pub fn connect(&self) -> Result<Session, PgError> {
        let connected = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(postgres::NoTls),
        };
        connected
            .map(|client| Session(Some(client)))
            .map_err(PgError::Connect)
    }

    /// The database's name (for error messages).
    pub fn database(&self) -> String {
        self.config.get_dbname().unwrap_or("").to_owned()
    }
}

/// A connection that may be dropped anywhere. The synchronous client closes its connection by
/// blocking on a small runtime of its own, which tokio forbids on a runtime's thread (the last
/// clone of a store dropped in async code would panic): there it is closed on a thread of its
/// own.
pub struct Session(Option<Client>);

impl Deref for Session {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.0
            .as_ref()
            .expect("a session is emptied only when dropped")
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Client {
        self.0
            .as_mut()
            .expect("a session is emptied only when dropped")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(client) = self.0.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            std::thread::spawn(move || drop(client));
        }
    }
}

/// A pooled connection with the statements prepared on it so far.
pub struct Conn {
    pub client: Session,
    pub statements: Statements,
}

/// The statements prepared on one connection, so a statement is parsed and planned once per
/// connection, not once per use (a round trip saved each time). Named prepared statements
/// belong to the session: a transaction rolled back keeps them.
#[derive(Default)]
pub struct Statements(HashMap<&'static str, Statement>);

impl Statements {
    /// `sql`, prepared (once) on the connection `client` is or runs in.
    pub fn get(
        &mut self,
        client: &mut impl GenericClient,
        sql: &'static str,
    ) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql)?;
        self.0.insert(sql, statement.clone());
        Ok(statement)
    }
}

/// Makes and checks the pool's connections.
pub struct Manager(pub Settings);

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = PgError;

    fn connect(&self) -> Result<Conn, PgError> {
        Ok(Conn {
            client: self.0.connect()?,
            statements: Statements::default(),
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), PgError> {
        Ok(conn.client.simple_query("").map(|_| ())?)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.client.is_closed()
    }
}
