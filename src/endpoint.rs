//! Where a mail server is and how its session is encrypted: `smtp://`, `smtps://`, `imap://`,
//! `imaps://` URLs with a `tls` setting, and the TCP connection to it (TCP_NODELAY, bounded by
//! a timeout).
//!
//! A URL never carries a user or password (they would travel into logs); `<scheme>s://` is TLS
//! from the first byte, `<scheme>://` is plain or upgraded with STARTTLS.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::config::TlsMode;

/// A protocol's schemes and default ports, and the config section its settings live in.
pub struct Protocol {
    pub section: &'static str,
    pub plain: &'static str,
    pub secure: &'static str,
    pub plain_port: u16,
    pub secure_port: u16,
}

pub const SMTP: Protocol = Protocol {
    section: "smtp",
    plain: "smtp",
    secure: "smtps",
    plain_port: 25,
    secure_port: 465,
};

pub const IMAP: Protocol = Protocol {
    section: "imap",
    plain: "imap",
    secure: "imaps",
    plain_port: 143,
    secure_port: 993,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// The scheme as written in `Display`.
    scheme: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Plain,
    Starttls,
    /// TLS from the first byte (`smtps://`, `imaps://`).
    Implicit,
}

impl Endpoint {
    /// Reads `<plain>://host[:port]` or `<secure>://host[:port]`; IPv6 hosts in brackets.
    pub fn parse(protocol: &Protocol, url: &str, tls: TlsMode) -> Result<Endpoint, String> {
        let section = protocol.section;
        let (plain, secure) = (protocol.plain, protocol.secure);
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!(
                "{section}.url `{url}`: expected {plain}://host[:port] or {secure}://host[:port]"
            )
        })?;
        let scheme = scheme.to_ascii_lowercase();
        let (security, default_port, scheme) = match (scheme.as_str(), tls) {
            (s, TlsMode::None) if s == plain => (Security::Plain, protocol.plain_port, plain),
            (s, TlsMode::Starttls) if s == plain => {
                (Security::Starttls, protocol.plain_port, plain)
            }
            (s, TlsMode::None) if s == secure => (Security::Implicit, protocol.secure_port, secure),
            (s, TlsMode::Starttls) if s == secure => {
                return Err(format!(
                    "{section}.url `{url}` is already TLS ({secure}://): leave {section}.tls at \"none\" or use {plain}://"
                ));
            }
            (other, _) => {
                return Err(format!(
                    "{section}.url `{url}`: unknown scheme `{other}` (expected {plain} or {secure})"
                ));
            }
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains('@') {
            return Err(format!(
                "{section}.url must not carry a user or password: set {section}.user, and the password in {section}.password_file or {section}.password_env"
            ));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("{section}.url `{url}`: unclosed `[`"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
            return Err(format!(
                "{section}.url `{url}`: expected {plain}://host[:port]"
            ));
        }
        let port = match port {
            None => default_port,
            Some(port) => port
                .parse::<u16>()
                .map_err(|_| format!("{section}.url `{url}`: `{port}` is not a port"))?,
        };
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            security,
            scheme,
        })
    }

    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// A TCP connection with TCP_NODELAY (no Nagle stall between a command and the next).
    pub async fn connect(&self, timeout: Duration) -> Result<TcpStream, String> {
        let address = (self.host.as_str(), self.port);
        let socket = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| format!("connecting to {self} timed out"))?
            .map_err(|e| format!("cannot connect to {self}: {e}"))?;
        socket
            .set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
        Ok(socket)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Endpoint, String> {
        Endpoint::parse(&SMTP, url, TlsMode::None)
    }

    #[test]
    fn urls_give_host_port_and_encryption() {
        let relay = parse("smtp://127.0.0.1:2525").unwrap();
        assert_eq!((relay.host.as_str(), relay.port), ("127.0.0.1", 2525));
        assert_eq!(relay.security, Security::Plain);
        let provider = parse("smtps://mail.example.com").unwrap();
        assert_eq!(
            (provider.port, provider.security),
            (465, Security::Implicit)
        );
        let upgraded =
            Endpoint::parse(&SMTP, "smtp://mail.example.com", TlsMode::Starttls).unwrap();
        assert_eq!((upgraded.port, upgraded.security), (25, Security::Starttls));
        let v6 = parse("smtp://[::1]:587").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 587));
        assert_eq!(v6.to_string(), "smtp://[::1]:587");
        assert!(v6.is_loopback());
        let inbox = Endpoint::parse(&IMAP, "imaps://imap.example.com", TlsMode::None).unwrap();
        assert_eq!((inbox.port, inbox.security), (993, Security::Implicit));
        assert_eq!(inbox.to_string(), "imaps://imap.example.com:993");
    }

    #[test]
    fn a_password_in_the_url_is_refused_without_repeating_it() {
        let error = parse("smtp://ana:hunter2@mail.example.com").unwrap_err();
        assert!(error.contains("password_file"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn odd_urls_are_named() {
        assert!(
            parse("mail.example.com")
                .unwrap_err()
                .contains("smtp://host")
        );
        assert!(
            parse("http://x")
                .unwrap_err()
                .contains("unknown scheme `http`")
        );
        assert!(
            parse("imap://x")
                .unwrap_err()
                .contains("unknown scheme `imap`")
        );
        assert!(parse("smtp://x:port").unwrap_err().contains("not a port"));
        assert!(
            Endpoint::parse(&SMTP, "smtps://x", TlsMode::Starttls)
                .unwrap_err()
                .contains("already TLS")
        );
    }
}
