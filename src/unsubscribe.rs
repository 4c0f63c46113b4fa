//! Unsubscribe links: what goes into `List-Unsubscribe` and `{{unsubscribe_url}}`, and the
//! check of a token that comes back.
//!
//! A token names the lead and carries an HMAC-SHA256 of it under a secret key:
//! `base64url(address).base64url(mac[..16])`. Without the key nobody can make one for an
//! address (so nobody can unsubscribe someone else), and the server needs no table of tokens.
//! The address inside is visible to whoever holds the link: the person it was sent to.
//!
//! The MAC covers the address folded to lower case ([`email_key`]), the form leads are told
//! apart by, so a token names a person whatever the case of the address in it. Links sent
//! before that (MAC over the address as spelled) still verify.
//!
//! Two links are made for each email:
//! - `mailto:<reply address>?subject=unsubscribe%20<token>`: always; the inbox watcher reads
//!   the token from the subject (so the sender's mailbox needs no plus-addressing);
//! - `<base_url>/unsubscribe/<token>`: when `http.base_url` is set; the one-click endpoint
//!   (RFC 8058) of [`crate::http`]. Then `List-Unsubscribe-Post` is sent as well.
//!
//! The key is `http.secret_file` or the variable named by `http.secret_env`; without either,
//! a random key is made on first start and kept in the store, so links stay valid across
//! restarts.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::HttpConfig;
use crate::lead::email_key;
use crate::store::{Store, StoreError};
use crate::workflow::Workflow;

/// Bytes of the MAC kept in a token: 128 bits, beyond guessing.
const MAC_BYTES: usize = 16;
/// Where a generated key is kept in the store's meta tree.
const META_KEY: &str = "unsubscribe_key";
/// Separates the purpose from the address in what is signed.
const PURPOSE: &[u8] = b"nurture-unsubscribe\0";

/// Makes and checks unsubscribe tokens; builds the links of one email.
pub struct Unsubscribe {
    key: hmac::Key,
    /// `https://…` without a trailing slash; `None`: no one-click link.
    base_url: Option<String>,
}

/// The unsubscribe links of one email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    pub mailto: String,
    pub one_click: Option<String>,
}

impl Links {
    /// What `{{unsubscribe_url}}` shows: the web page when there is one (a click works in
    /// every client), otherwise the mail.
    pub fn for_templates(&self) -> &str {
        self.one_click.as_deref().unwrap_or(&self.mailto)
    }

    /// The `List-Unsubscribe` entries, one-click first (RFC 8058 clients take the https one).
    pub fn header_entries(&self) -> Vec<String> {
        self.one_click
            .iter()
            .chain(std::iter::once(&self.mailto))
            .map(|link| format!("<{link}>"))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("http.secret_file {path}: {error}")]
    File { path: String, error: std::io::Error },
    #[error("http.secret_env: the environment variable {0} is not set")]
    Variable(String),
    #[error("the unsubscribe secret must be at least 16 bytes long")]
    TooShort,
    #[error("http.secret_file and http.secret_env are both set: keep one")]
    Both,
    #[error("http.base_url `{0}`: expected https://host[/path] (http:// only for this host)")]
    BaseUrl(String),
    #[error("no random numbers for a new key: {0}")]
    Random(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl Unsubscribe {
    /// A maker of links with `secret` as key and one-click links under `base_url` (empty: none).
    pub fn new(secret: &[u8], base_url: &str) -> Result<Unsubscribe, KeyError> {
        let base_url = base_url.trim().trim_end_matches('/');
        let base_url = if base_url.is_empty() {
            None
        } else if is_https_or_local(base_url) {
            Some(base_url.to_owned())
        } else {
            return Err(KeyError::BaseUrl(base_url.to_owned()));
        };
        if secret.len() < 16 {
            return Err(KeyError::TooShort);
        }
        Ok(Unsubscribe {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            base_url,
        })
    }

    /// The daemon's links: the key from the configuration, or the one kept in `store` (made
    /// on first use).
    pub fn load(config: &HttpConfig, store: &Store) -> Result<Unsubscribe, KeyError> {
        let secret = match configured_secret(config)? {
            Some(secret) => secret,
            None => match store.meta_get(META_KEY)? {
                Some(secret) => secret,
                None => {
                    let mut secret = vec![0u8; 32];
                    SystemRandom::new()
                        .fill(&mut secret)
                        .map_err(|e| KeyError::Random(e.to_string()))?;
                    store.meta_set(META_KEY, &secret)?;
                    store.flush()?;
                    secret
                }
            },
        };
        Unsubscribe::new(&secret, &config.base_url)
    }

    /// Checks the settings as [`Unsubscribe::load`] would (the key's source, the base URL),
    /// without a store.
    pub fn check(config: &HttpConfig) -> Result<(), KeyError> {
        let secret = configured_secret(config)?.unwrap_or_else(|| vec![0; 32]);
        Unsubscribe::new(&secret, &config.base_url).map(|_| ())
    }

    /// For previews (`dry-run`): links of the right shape under a fixed, public key. They do
    /// not work, and do not need to.
    pub fn preview(base_url: &str) -> Unsubscribe {
        Unsubscribe::new(b"nurture dry-run preview key, not a secret", base_url)
            .or_else(|_| Unsubscribe::new(b"nurture dry-run preview key, not a secret", ""))
            .expect("the preview key is long enough")
    }

    pub fn one_click_enabled(&self) -> bool {
        self.base_url.is_some()
    }

    /// The token of `address` (normalized; its spelling is kept in the token).
    pub fn token(&self, address: &str) -> String {
        let mac = hmac::sign(&self.key, &signed(&email_key(address)));
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(address),
            URL_SAFE_NO_PAD.encode(&mac.as_ref()[..MAC_BYTES])
        )
    }

    /// The address a token names, if the token is genuine. Look the lead up by it (the store
    /// ignores case): its spelling may differ from the lead's.
    pub fn verify(&self, token: &str) -> Option<String> {
        let (address, mac) = token.trim().split_once('.')?;
        let address = String::from_utf8(URL_SAFE_NO_PAD.decode(address).ok()?).ok()?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        if mac.len() != MAC_BYTES {
            return None;
        }
        // Today's tokens sign the folded address; links sent by an older nurture signed it as
        // spelled. Both are checked whole, so the time taken does not depend on the match.
        let folded = self.mac_matches(&email_key(&address), &mac);
        let as_spelled = self.mac_matches(&address, &mac);
        (folded | as_spelled).then_some(address)
    }

    /// Whether `mac` is the MAC of `address`, compared without an early exit, so timing does
    /// not tell how much of a guess was right.
    fn mac_matches(&self, address: &str, mac: &[u8]) -> bool {
        let expected = hmac::sign(&self.key, &signed(address));
        let difference = expected.as_ref()[..MAC_BYTES]
            .iter()
            .zip(mac)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        difference == 0
    }

    /// The links of an email of `workflow` to `address`.
    pub fn links(&self, workflow: &Workflow, address: &str) -> Links {
        let inbox = workflow.reply_to.as_ref().unwrap_or(&workflow.from);
        let token = self.token(address);
        Links {
            mailto: format!("mailto:{}?subject=unsubscribe%20{token}", inbox.address),
            one_click: self
                .base_url
                .as_ref()
                .map(|base| format!("{base}/unsubscribe/{token}")),
        }
    }
}

/// The token in the subject of a mail sent through the `mailto:` link: `unsubscribe <token>`.
pub fn token_in_subject(subject: &str) -> Option<&str> {
    let rest = subject.trim();
    let rest = rest
        .get(..11)
        .filter(|word| word.eq_ignore_ascii_case("unsubscribe"))
        .map(|_| &rest[11..])?;
    let token = rest.trim();
    (!token.is_empty() && !token.contains(char::is_whitespace)).then_some(token)
}

fn signed(address: &str) -> Vec<u8> {
    [PURPOSE, address.as_bytes()].concat()
}

fn configured_secret(config: &HttpConfig) -> Result<Option<Vec<u8>>, KeyError> {
    match (config.secret_file.is_empty(), config.secret_env.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Err(KeyError::Both),
        (false, true) => {
            let text =
                std::fs::read_to_string(&config.secret_file).map_err(|error| KeyError::File {
                    path: config.secret_file.clone(),
                    error,
                })?;
            Ok(Some(text.trim().as_bytes().to_vec()))
        }
        (true, false) => std::env::var(&config.secret_env)
            .map(|value| Some(value.trim().as_bytes().to_vec()))
            .map_err(|_| KeyError::Variable(config.secret_env.clone())),
    }
}

/// RFC 8058 wants https; plain http is allowed for this host only (tests, a local preview).
pub fn is_https_or_local(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return lower.len() > "https://".len();
    }
    ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|local| {
            lower
                .strip_prefix(local)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Unsubscribe {
        Unsubscribe::new(b"0123456789abcdef0123", "https://n.acme.example/").unwrap()
    }

    #[test]
    fn a_token_names_its_address_and_only_with_the_key() {
        let maker = links();
        let token = maker.token("ana@example.test");
        assert_eq!(maker.verify(&token).as_deref(), Some("ana@example.test"));
        // Another key: refused.
        let other = Unsubscribe::new(b"another key, also long", "").unwrap();
        assert_eq!(other.verify(&token), None);
        // The address swapped for another, MAC kept: refused.
        let (_, mac) = token.split_once('.').unwrap();
        let forged = format!("{}.{mac}", URL_SAFE_NO_PAD.encode("eve@example.test"));
        assert_eq!(maker.verify(&forged), None);
        for garbage in ["", ".", "x.y", "%%%.%%%", "YQ.", &token[..token.len() - 2]] {
            assert_eq!(maker.verify(garbage), None, "{garbage}");
        }
    }

    // Issue 10: one person, one lead: a token names the person whatever the case.
    #[test]
    fn a_token_verifies_whatever_the_case_of_its_address() {
        let maker = links();
        let token = maker.token("Dana.Scully@fbi.example");
        assert_eq!(
            maker.verify(&token).as_deref(),
            Some("Dana.Scully@fbi.example"),
            "the spelling comes back for the lookup"
        );
        let (_, mac) = token.split_once('.').unwrap();
        assert_eq!(
            mac,
            maker
                .token("dana.scully@fbi.example")
                .split_once('.')
                .unwrap()
                .1,
            "one MAC for every spelling of one address"
        );
        // The same MAC under another spelling of the same address: the same person.
        let respelled = format!(
            "{}.{mac}",
            URL_SAFE_NO_PAD.encode("DANA.SCULLY@fbi.example")
        );
        assert_eq!(
            maker.verify(&respelled).as_deref(),
            Some("DANA.SCULLY@fbi.example")
        );
        // A link sent by an older nurture (MAC over the address as spelled) still works.
        let old_mac = hmac::sign(&maker.key, &signed("Dana.Scully@fbi.example"));
        let old = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode("Dana.Scully@fbi.example"),
            URL_SAFE_NO_PAD.encode(&old_mac.as_ref()[..MAC_BYTES])
        );
        assert_eq!(
            maker.verify(&old).as_deref(),
            Some("Dana.Scully@fbi.example")
        );
        // Another person's address with this MAC is still refused.
        let forged = format!("{}.{mac}", URL_SAFE_NO_PAD.encode("fox.mulder@fbi.example"));
        assert_eq!(maker.verify(&forged), None);
    }

    #[test]
    fn base_urls_must_be_https_or_this_host() {
        assert!(Unsubscribe::new(b"0123456789abcdef", "https://x.example").is_ok());
        assert!(Unsubscribe::new(b"0123456789abcdef", "http://127.0.0.1:8025").is_ok());
        assert!(matches!(
            Unsubscribe::new(b"0123456789abcdef", "http://x.example"),
            Err(KeyError::BaseUrl(_))
        ));
        assert!(matches!(
            Unsubscribe::new(b"0123456789abcdef", "http://localhost.evil.example"),
            Err(KeyError::BaseUrl(_))
        ));
        assert!(matches!(
            Unsubscribe::new(b"short", ""),
            Err(KeyError::TooShort)
        ));
    }

    #[test]
    fn the_subject_of_the_mailto_link_gives_the_token_back() {
        let maker = links();
        let token = maker.token("ana@example.test");
        let subject = format!("unsubscribe {token}");
        assert_eq!(token_in_subject(&subject), Some(token.as_str()));
        assert_eq!(
            token_in_subject(&format!("  UNSUBSCRIBE   {token} ")),
            Some(token.as_str())
        );
        assert_eq!(token_in_subject("unsubscribe"), None);
        assert_eq!(token_in_subject("unsubscribe me please"), None);
        assert_eq!(token_in_subject("Re: hello"), None);
        assert_eq!(token_in_subject("é"), None);
    }
}
