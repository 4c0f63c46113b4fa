//! Signed tokens: the one mechanism behind every link nurture hands out that changes something
//! when followed (unsubscribe, opt-in confirmation).
//!
//! A token is `base64url(payload).base64url(mac[..16])`: the payload is the token's fields
//! joined by NUL, the MAC is HMAC-SHA256 under the store's key over `nurture-<kind>\0` and the
//! signed fields. The kind keeps one kind of token from passing for another (a confirmation
//! link is no unsubscribe link); without the key nobody can make one, and the server needs no
//! table of tokens. The fields are visible to whoever holds the link: the person it was sent to.
//!
//! The key is `http.secret_file` or the variable named by `http.secret_env`; without either, a
//! random key is made on first start and kept in the store, so links stay valid across
//! restarts.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::config::HttpConfig;
use crate::store::{Store, StoreError};

/// Bytes of the MAC kept in a token: 128 bits, beyond guessing.
pub const MAC_BYTES: usize = 16;
/// Where a generated key is kept in the store's meta tree (named for its first use).
const META_KEY: &str = "unsubscribe_key";

/// Makes and checks tokens under one key.
pub struct Signer {
    key: hmac::Key,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("http.secret_file {path}: {error}")]
    File { path: String, error: std::io::Error },
    #[error("http.secret_env: the environment variable {0} is not set")]
    Variable(String),
    #[error(
        "the key of signed links (http.secret_file, http.secret_env) must be at least 16 bytes long"
    )]
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

impl Signer {
    /// A signer with `secret` as key (at least 16 bytes).
    pub fn new(secret: &[u8]) -> Result<Signer, KeyError> {
        if secret.len() < 16 {
            return Err(KeyError::TooShort);
        }
        Ok(Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    /// The MAC of `fields` for tokens of `kind`.
    pub fn mac(&self, kind: &str, fields: &[&str]) -> [u8; MAC_BYTES] {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(b"nurture-");
        context.update(kind.as_bytes());
        for field in fields {
            context.update(b"\0");
            context.update(field.as_bytes());
        }
        let mut mac = [0; MAC_BYTES];
        mac.copy_from_slice(&context.sign().as_ref()[..MAC_BYTES]);
        mac
    }

    /// Whether `mac` is the MAC of `fields`, compared in constant time, so timing does not tell
    /// how much of a guess was right.
    pub fn matches(&self, kind: &str, fields: &[&str], mac: &[u8]) -> bool {
        mac.len() == MAC_BYTES && bool::from(self.mac(kind, fields).ct_eq(mac))
    }

    /// A token of `kind` carrying and signing `fields` (which must not contain NUL).
    pub fn seal(&self, kind: &str, fields: &[&str]) -> String {
        join(&fields.join("\0"), &self.mac(kind, fields))
    }

    /// The fields of a genuine token of `kind`; `None` for anything else.
    pub fn open(&self, kind: &str, token: &str) -> Option<Vec<String>> {
        let (payload, mac) = split(token)?;
        let fields: Vec<&str> = payload.split('\0').collect();
        self.matches(kind, &fields, &mac)
            .then(|| fields.into_iter().map(str::to_owned).collect())
    }

    /// The daemon's signer: the key from the configuration, or the one kept in `store` (made
    /// on first use).
    pub fn load(config: &HttpConfig, store: &Store) -> Result<Signer, KeyError> {
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
        Signer::new(&secret)
    }

    /// Checks the key's source as [`Signer::load`] would, without a store.
    pub fn check(config: &HttpConfig) -> Result<(), KeyError> {
        match configured_secret(config)? {
            Some(secret) => Signer::new(&secret).map(|_| ()),
            None => Ok(()),
        }
    }
}

/// `base64url(payload).base64url(mac)`.
pub fn join(payload: &str, mac: &[u8]) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(mac)
    )
}

/// A token's payload (UTF-8) and MAC, if it has the shape of one.
pub fn split(token: &str) -> Option<(String, Vec<u8>)> {
    let (payload, mac) = token.trim().split_once('.')?;
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
    Some((payload, mac))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(b"0123456789abcdef0123").unwrap()
    }

    // The forgery suite for every kind of token: each one below must be refused.
    #[test]
    fn only_the_key_makes_a_token_and_only_for_its_kind_and_fields() {
        let signer = signer();
        let token = signer.seal("confirm", &["ana@example.test", "signup", "1700000000"]);
        assert_eq!(
            signer.open("confirm", &token).unwrap(),
            ["ana@example.test", "signup", "1700000000"]
        );
        // Another key.
        let other = Signer::new(b"another key, also long").unwrap();
        assert_eq!(other.open("confirm", &token), None);
        // Another kind: a confirmation token is no unsubscribe token.
        assert_eq!(signer.open("unsubscribe", &token), None);
        // A field changed, the MAC kept (another address, a later expiry).
        let (_, mac) = token.split_once('.').unwrap();
        for forged in [
            "eve@example.test\0signup\x001700000000",
            "ana@example.test\0signup\x001800000000",
            "ana@example.test\0signup",
            "ana@example.test\0signup\x001700000000\0x",
        ] {
            let forged = format!("{}.{mac}", URL_SAFE_NO_PAD.encode(forged));
            assert_eq!(signer.open("confirm", &forged), None, "{forged}");
        }
        // Fields shifted across the separator sign differently.
        assert_ne!(signer.mac("k", &["ab", "c"]), signer.mac("k", &["a", "bc"]));
        // A MAC cut short, garbage, not base64.
        for garbage in ["", ".", "x.y", "%%%.%%%", "YQ.", &token[..token.len() - 2]] {
            assert_eq!(signer.open("confirm", garbage), None, "{garbage}");
        }
    }

    #[test]
    fn keys_shorter_than_16_bytes_are_refused() {
        assert!(matches!(Signer::new(b"short"), Err(KeyError::TooShort)));
        assert!(Signer::new(b"0123456789abcdef").is_ok());
    }
}
