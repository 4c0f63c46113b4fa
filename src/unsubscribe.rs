//! Unsubscribe links: what goes into `List-Unsubscribe` and `{{unsubscribe_url}}`, and the
//! check of a token that comes back.
//!
//! A token is a signed token of kind `unsubscribe` ([`crate::token`]) naming the lead:
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
//!   (RFC 8058) of [`crate::daemon::http`]. Then `List-Unsubscribe-Post` is sent as well.
//!
//! The key is the store's key of signed links ([`crate::token::Signer::load`]).

use crate::config::HttpConfig;
use crate::lead::email_key;
use crate::store::Store;
pub use crate::token::KeyError;
use crate::token::{self, Signer};
use crate::workflow::Workflow;

/// The kind of token (see [`crate::token`]): what the MAC is made over besides the address.
const KIND: &str = "unsubscribe";

/// Makes and checks unsubscribe tokens; builds the links of one email.
pub struct Unsubscribe {
    signer: Signer,
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

impl Unsubscribe {
    /// A maker of links with `secret` as key and one-click links under `base_url` (empty: none).
    pub fn new(secret: &[u8], base_url: &str) -> Result<Unsubscribe, KeyError> {
        let base_url = base_url_of(base_url)?;
        Ok(Unsubscribe {
            signer: Signer::new(secret)?,
            base_url,
        })
    }

    /// The daemon's links: under the store's key of signed links (`signer`).
    pub fn load(config: &HttpConfig, store: &Store) -> Result<Unsubscribe, KeyError> {
        Unsubscribe::with_signer(Signer::load(config, store)?, &config.base_url)
    }

    /// Links under `signer`'s key.
    pub fn with_signer(signer: Signer, base_url: &str) -> Result<Unsubscribe, KeyError> {
        Ok(Unsubscribe {
            signer,
            base_url: base_url_of(base_url)?,
        })
    }

    /// Checks the settings as [`Unsubscribe::load`] would (the key's source, the base URL),
    /// without a store.
    pub fn check(config: &HttpConfig) -> Result<(), KeyError> {
        Signer::check(config)?;
        base_url_of(&config.base_url).map(|_| ())
    }

    /// The key's signer, for the other signed links (opt-in confirmation).
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The public base URL (no trailing slash), when there is one.
    pub fn base_url(&self) -> Option<&str> {
        self.base_url.as_deref()
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
        token::join(address, &self.signer.mac(KIND, &[&email_key(address)]))
    }

    /// The address a token names, if the token is genuine. Look the lead up by it (the store
    /// ignores case): its spelling may differ from the lead's.
    pub fn verify(&self, token: &str) -> Option<String> {
        let (address, mac) = token::split(token)?;
        // Today's tokens sign the folded address; links sent by an older nurture signed it as
        // spelled. Both are checked whole, so the time taken does not depend on the match.
        let folded = self.signer.matches(KIND, &[&email_key(&address)], &mac);
        let as_spelled = self.signer.matches(KIND, &[&address], &mac);
        (folded | as_spelled).then_some(address)
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

/// The base URL without its trailing slash; `None` when empty.
fn base_url_of(base_url: &str) -> Result<Option<String>, KeyError> {
    let base_url = base_url.trim().trim_end_matches('/');
    if base_url.is_empty() {
        Ok(None)
    } else if is_https_or_local(base_url) {
        Ok(Some(base_url.to_owned()))
    } else {
        Err(KeyError::BaseUrl(base_url.to_owned()))
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
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::hmac;

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
        // (Made here the way the old code made it: HMAC over the purpose and the address.)
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef0123");
        let old_mac = hmac::sign(&key, b"nurture-unsubscribe\0Dana.Scully@fbi.example");
        let old = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode("Dana.Scully@fbi.example"),
            URL_SAFE_NO_PAD.encode(&old_mac.as_ref()[..16])
        );
        assert_eq!(
            maker.verify(&old).as_deref(),
            Some("Dana.Scully@fbi.example")
        );
        // Another person's address with this MAC is still refused.
        let forged = format!("{}.{mac}", URL_SAFE_NO_PAD.encode("fox.mulder@fbi.example"));
        assert_eq!(maker.verify(&forged), None);
    }

    // Issue 12: the key and the MAC moved into `crate::token`; links already sent stay valid.
    #[test]
    fn tokens_are_byte_for_byte_those_sent_before_the_move() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef0123");
        let mac = hmac::sign(&key, b"nurture-unsubscribe\0dana.scully@fbi.example");
        let before = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode("Dana.Scully@fbi.example"),
            URL_SAFE_NO_PAD.encode(&mac.as_ref()[..16])
        );
        assert_eq!(links().token("Dana.Scully@fbi.example"), before);
        // And a confirmation token for the same address is no unsubscribe token.
        let confirm = links()
            .signer()
            .seal("confirm", &["dana.scully@fbi.example"]);
        assert_eq!(links().verify(&confirm), None);
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
