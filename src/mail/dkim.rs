//! DKIM signatures (RFC 6376) on outgoing emails, for senders whose relay does not sign.
//!
//! `[dkim]` names a selector, a domain and a private key file (PEM: RSA as PKCS#1 or PKCS#8,
//! or Ed25519 as PKCS#8, as `openssl genrsa` / `openssl genpkey -algorithm ed25519` write
//! them). The key is read once when the daemon starts (never logged; errors name the file,
//! not its contents). Signing is `mail-auth`'s, on its `ring` back end.
//!
//! An email is signed as it is handed to the transport (`crate::daemon::transport`), after
//! its `Date` is set to the moment it leaves, so the folder transport writes exactly what an
//! SMTP server would get, and an email that waited in the outbox is not signed with a date it
//! no longer carries. Relaxed/relaxed canonicalization; the signed headers are those that say
//! who sent what to whom ([`SIGNED_HEADERS`]).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use tokio_rustls::rustls::pki_types::PrivateKeyDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

use crate::config::DkimConfig;

/// The headers a signature covers (those an email has; lettre writes each at most once).
pub const SIGNED_HEADERS: [&str; 10] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// A loaded key, ready to sign.
pub struct Signer {
    key: Key,
    selector: String,
    domain: String,
    /// The public key as published in DNS (`p=`).
    public: Vec<u8>,
}

enum Key {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

impl Signer {
    /// The signer `[dkim]` configures; `None` when it is not configured (no key file).
    pub fn load(config: &DkimConfig) -> Result<Option<Signer>, String> {
        if config.key_file.is_empty() && config.selector.is_empty() && config.domain.is_empty() {
            return Ok(None);
        }
        for (name, value) in [
            ("selector", &config.selector),
            ("domain", &config.domain),
            ("key_file", &config.key_file),
        ] {
            if value.trim().is_empty() {
                return Err(format!(
                    "[dkim] needs `selector`, `domain` and `key_file`: `{name}` is missing"
                ));
            }
        }
        let path = Path::new(&config.key_file);
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the DKIM key file {}: {e}", path.display()))?;
        let unusable = |why: String| {
            format!(
                "the DKIM key file {} holds no usable private key: {why} (expected PEM: RSA from `openssl genrsa 2048`, or Ed25519 from `openssl genpkey -algorithm ed25519`)",
                path.display()
            )
        };
        let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| unusable(e.to_string()))?;
        let (selector, domain) = (config.selector.trim(), config.domain.trim());
        let (key, public) = match &der {
            PrivateKeyDer::Pkcs1(_) => rsa(der.clone_key(), selector, domain).map_err(unusable)?,
            PrivateKeyDer::Pkcs8(pkcs8) => match rsa(der.clone_key(), selector, domain) {
                Ok(found) => found,
                Err(_) => {
                    let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der())
                        .map_err(|e| unusable(format!("neither RSA nor Ed25519 ({e})")))?;
                    let public = key.public_key();
                    let signer = DkimSigner::from_key(key)
                        .domain(domain)
                        .selector(selector)
                        .headers(SIGNED_HEADERS)
                        .header_canonicalization(Canonicalization::Relaxed)
                        .body_canonicalization(Canonicalization::Relaxed);
                    (Key::Ed25519(signer), public)
                }
            },
            _ => return Err(unusable("an elliptic-curve (SEC1) key".into())),
        };
        Ok(Some(Signer {
            key,
            selector: selector.to_string(),
            domain: domain.to_string(),
            public,
        }))
    }

    /// `eml` with a `DKIM-Signature` header in front.
    pub fn sign(&self, eml: &[u8]) -> Result<Vec<u8>, String> {
        let signature = match &self.key {
            Key::Rsa(signer) => signer.sign(eml),
            Key::Ed25519(signer) => signer.sign(eml),
        }
        .map_err(|e| format!("cannot DKIM-sign the email: {e}"))?;
        let mut signed = signature.to_header().into_bytes();
        signed.extend_from_slice(eml);
        Ok(signed)
    }

    /// The DNS name and TXT value to publish: `selector._domainkey.domain` and
    /// `v=DKIM1; k=rsa; p=…`.
    pub fn dns_record(&self) -> (String, String) {
        let kind = match self.key {
            Key::Rsa(_) => "rsa",
            Key::Ed25519(_) => "ed25519",
        };
        (
            format!("{}._domainkey.{}", self.selector, self.domain),
            format!("v=DKIM1; k={kind}; p={}", BASE64.encode(&self.public)),
        )
    }
}

/// An RSA signer and its public key as DNS publishes it (SubjectPublicKeyInfo, as
/// `openssl rsa -pubout` and `opendkim-genkey` write it).
fn rsa(
    der: PrivateKeyDer<'static>,
    selector: &str,
    domain: &str,
) -> Result<(Key, Vec<u8>), String> {
    let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| e.to_string())?;
    let public = rsa_spki(&key.public_key());
    let signer = DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed);
    Ok((Key::Rsa(signer), public))
}

/// Wraps a PKCS#1 `RSAPublicKey` in a SubjectPublicKeyInfo (algorithm rsaEncryption, no
/// parameters).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    const ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0x00];
    bit_string.extend_from_slice(pkcs1);
    let mut body = ALGORITHM.to_vec();
    body.push(0x03);
    body.extend(der_length(bit_string.len()));
    body.extend(bit_string);
    let mut spki = vec![0x30];
    spki.extend(der_length(body.len()));
    spki.extend(body);
    spki
}

fn der_length(length: usize) -> Vec<u8> {
    if length < 0x80 {
        return vec![length as u8];
    }
    let bytes: Vec<u8> = length
        .to_be_bytes()
        .into_iter()
        .skip_while(|&b| b == 0)
        .collect();
    let mut encoded = vec![0x80 | bytes.len() as u8];
    encoded.extend(bytes);
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incomplete_section_or_a_bad_key_file_is_refused_with_its_name() {
        assert!(Signer::load(&DkimConfig::default()).unwrap().is_none());
        let half = DkimConfig {
            selector: "s1".into(),
            ..DkimConfig::default()
        };
        let error = Signer::load(&half).err().unwrap();
        assert!(error.contains("`domain` is missing"), "{error}");
        let dir = std::env::temp_dir().join(format!("nurture-dkim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key.pem");
        std::fs::write(
            &file,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let bad = DkimConfig {
            selector: "s1".into(),
            domain: "example.test".into(),
            key_file: file.display().to_string(),
        };
        let error = Signer::load(&bad).err().unwrap();
        assert!(error.contains("holds no usable private key"), "{error}");
        assert!(
            !error.contains("AAAA"),
            "the key's contents are never shown"
        );
        let missing = DkimConfig {
            key_file: dir.join("nope.pem").display().to_string(),
            ..bad
        };
        assert!(
            Signer::load(&missing)
                .err()
                .unwrap()
                .contains("cannot read the DKIM key file")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn der_lengths_use_the_long_form_past_127() {
        assert_eq!(der_length(5), [5]);
        assert_eq!(der_length(270), [0x82, 0x01, 0x0e]);
    }
}
