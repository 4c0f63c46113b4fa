//! Who may see the status page, and the session cookie of people who logged in.
//!
//! - Scripts send an API key as `Authorization: Bearer <key>` (checked, and rate-limited per
//!   key, by [`super::super::api::Keys`]).
//! - People post the login form with a password: an API key, or the page password
//!   (`http.page_password_file`), which opens the page and nothing else. A good one gets a
//!   session cookie: `base64url(expiry, credential tag, nonce).MAC` under the daemon's key of
//!   signed links ([`crate::token`]), so nobody can make or change one, and the server keeps no
//!   table of sessions. The credential tag is a MAC of the credential's digest: when that key
//!   or password is removed from the configuration, its sessions end at the next start.
//!   The cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page
//!   sends it), `Secure` when `http.base_url` is `https://`, and lasts [`SESSION_HOURS`].
//! - Logging out revokes the session's nonce (until its expiry, in memory: a restart forgets
//!   revocations, not the expiry) and clears the cookie.
//! - The login and logout posts must come from the page itself (`Origin`, else `Referer`, is
//!   `http.base_url`'s origin or the host the request was sent to): another site cannot log a
//!   browser in or out. Login posts are limited to [`LOGINS_PER_MINUTE`] per client address,
//!   good or bad, so a password cannot be guessed by trying.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use super::super::api::{Keys, hex, sha256};
use super::super::forms::origin_of;
use crate::config::HttpConfig;
use crate::token::Signer;

/// The cookie's name.
const COOKIE: &str = "nurture_session";
/// What kind of token the cookie is (see [`Signer::seal`]): no other token passes for one.
const SESSION_KIND: &str = "page-session";
/// How long a login lasts.
pub const SESSION_HOURS: i64 = 12;
/// Login posts one client address may make per minute.
pub const LOGINS_PER_MINUTE: u32 = 5;
/// Client addresses whose login tries are remembered before the replenished ones are dropped.
const ADDRESSES_KEPT: usize = 4096;
/// The shortest page password taken: a short one can be guessed.
const MIN_PASSWORD_CHARS: usize = 12;

/// The credentials, the rate limit of login posts and the revoked sessions.
pub struct Login {
    /// SHA-256 of every password the form takes (the API keys and the page password), with
    /// the tag its sessions carry.
    credentials: Vec<([u8; 32], String)>,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// Revoked nonces, with their session's expiry (Unix seconds): forgotten once expired.
    revoked: Mutex<HashMap<String, i64>>,
    /// `Secure` cookies: the page is served over https.
    secure: bool,
    /// `http.base_url`'s origin, if set: where the login form is posted from behind a proxy.
    origin: Option<String>,
}

/// A valid session, as its cookie says.
pub struct Session {
    nonce: String,
    expires: i64,
}

impl Login {
    /// The login of `config`'s page: `keys` (the API's) and the page password, if any; `None`
    /// when neither is configured (no page).
    pub fn load(
        config: &HttpConfig,
        keys: Option<&Keys>,
        signer: &Signer,
    ) -> Result<Option<Login>, String> {
        let mut digests: Vec<[u8; 32]> = keys.map(|k| k.digests().to_vec()).unwrap_or_default();
        if !config.page_password_file.is_empty() {
            let path = &config.page_password_file;
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("http.page_password_file {path}: {e}"))?;
            let password = text.trim();
            if password.chars().count() < MIN_PASSWORD_CHARS {
                return Err(format!(
                    "http.page_password_file {path}: the password is shorter than \
                     {MIN_PASSWORD_CHARS} characters: make a longer one (`openssl rand -base64 18`)"
                ));
            }
            digests.push(sha256(password.as_bytes()));
        }
        if digests.is_empty() {
            return Ok(None);
        }
        let credentials = digests
            .into_iter()
            .map(|digest| {
                let tag = hex(&signer.mac("page-credential", &[&hex(&digest)])[..8]);
                (digest, tag)
            })
            .collect();
        let rate = NonZeroU32::new(LOGINS_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        Ok(Some(Login {
            credentials,
            limiter: RateLimiter::keyed(Quota::per_minute(rate)),
            revoked: Mutex::new(HashMap::new()),
            secure: config.base_url.trim().starts_with("https://"),
            origin: origin_of(config.base_url.trim()),
        }))
    }

    /// `Err(wait)` when `client` made too many login posts.
    pub fn limit(&self, client: IpAddr) -> Result<(), Duration> {
        // Addresses are cheap to change (IPv6): forget those whose tries are all replenished
        // before their count grows without bound.
        if self.limiter.len() > ADDRESSES_KEPT {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// The `Set-Cookie` of a new session when `password` is one of the credentials, compared
    /// in constant time with every one of them.
    pub fn log_in(&self, password: &str, signer: &Signer, now: DateTime<Utc>) -> Option<String> {
        let presented = sha256(password.trim().as_bytes());
        let mut tag = None;
        for (digest, its_tag) in &self.credentials {
            if bool::from(digest.ct_eq(&presented)) {
                tag = Some(its_tag);
            }
        }
        let tag = tag?;
        let mut nonce = [0u8; 16];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let expires = (now + chrono::Duration::hours(SESSION_HOURS)).timestamp();
        let token = signer.seal(SESSION_KIND, &[&expires.to_string(), tag, &hex(&nonce)]);
        Some(self.cookie(&token, SESSION_HOURS * 3600))
    }

    /// The session the request's cookie holds, if it is genuine, unexpired, not logged out,
    /// and its credential is still configured.
    pub fn session(
        &self,
        headers: &HeaderMap,
        signer: &Signer,
        now: DateTime<Utc>,
    ) -> Option<Session> {
        let token = cookie_value(headers)?;
        let fields = signer.open(SESSION_KIND, token)?;
        let [expires, tag, nonce] = fields.as_slice() else {
            return None;
        };
        let expires: i64 = expires.parse().ok()?;
        let known = self.credentials.iter().any(|(_, its_tag)| its_tag == tag);
        let revoked = self
            .revoked
            .lock()
            .map_or(true, |revoked| revoked.contains_key(nonce));
        (expires > now.timestamp() && known && !revoked).then(|| Session {
            nonce: nonce.clone(),
            expires,
        })
    }

    /// Ends `session` for good (until it would have expired anyway); the `Set-Cookie` that
    /// clears the browser's cookie.
    pub fn log_out(&self, session: Option<Session>, now: DateTime<Utc>) -> String {
        if let (Some(session), Ok(mut revoked)) = (session, self.revoked.lock()) {
            let now = now.timestamp();
            revoked.retain(|_, expires| *expires > now);
            revoked.insert(session.nonce, session.expires);
        }
        self.cookie("", 0)
    }

    fn cookie(&self, value: &str, max_age: i64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
    }

    /// Whether a post comes from the page itself: its `Origin` (else the origin of its
    /// `Referer`) is `http.base_url`'s, or the host it was sent to. A post that says neither is
    /// refused: every browser sends `Origin` with a form post.
    pub fn same_origin(&self, headers: &HeaderMap) -> bool {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let origin = match text(header::ORIGIN).filter(|origin| *origin != "null") {
            Some(origin) => origin.trim().trim_end_matches('/').to_ascii_lowercase(),
            None => match text(header::REFERER).and_then(origin_of) {
                Some(origin) => origin,
                None => return false,
            },
        };
        if self.origin.as_deref() == Some(origin.as_str()) {
            return true;
        }
        text(header::HOST).is_some_and(|host| {
            let host = host.trim().to_ascii_lowercase();
            origin == format!("http://{host}") || origin == format!("https://{host}")
        })
    }
}

/// The session cookie's value among the request's cookies.
fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then(|| value.trim_matches('"'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "correct horse battery";

    fn login(base_url: &str) -> (Login, Signer) {
        let dir = std::env::temp_dir().join(format!("nurture-login-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("password-{}", base_url.len()));
        std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
        let config = HttpConfig {
            base_url: base_url.into(),
            page_password_file: file.display().to_string(),
            ..HttpConfig::default()
        };
        let signer = Signer::new(b"0123456789abcdef0123").unwrap();
        let login = Login::load(&config, None, &signer).unwrap().unwrap();
        (login, signer)
    }

    fn with_cookie(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            format!("theme=dark; {pair}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn a_session_is_signed_expires_and_ends_at_logout() {
        let (login, signer) = login("https://nurture.example.com");
        let now = Utc::now();
        assert!(login.log_in("wrong password", &signer, now).is_none());
        let cookie = login.log_in(PASSWORD, &signer, now).unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(cookie.contains("; Secure"), "https base_url: {cookie}");
        let headers = with_cookie(&cookie);
        assert!(login.session(&headers, &signer, now).is_some());
        // Expired.
        let later = now + chrono::Duration::hours(SESSION_HOURS) + chrono::Duration::seconds(1);
        assert!(login.session(&headers, &signer, later).is_none());
        // Another key did not make it.
        let other = Signer::new(b"another key, also long").unwrap();
        assert!(login.session(&headers, &other, now).is_none());
        // A changed expiry breaks the MAC.
        let token = cookie_value(&headers).unwrap();
        let (_, mac) = token.split_once('.').unwrap();
        let fields = signer.open(SESSION_KIND, token).unwrap();
        let forged = crate::token::join(
            &format!(
                "{}\0{}\0{}",
                fields[0].parse::<i64>().unwrap() + 3600,
                fields[1],
                fields[2]
            ),
            &base64_decode(mac),
        );
        let mut forged_headers = HeaderMap::new();
        forged_headers.insert(
            header::COOKIE,
            format!("{COOKIE}={forged}").parse().unwrap(),
        );
        assert!(login.session(&forged_headers, &signer, now).is_none());
        // Logged out: the same cookie no longer opens the page.
        let cleared = login.log_out(login.session(&headers, &signer, now), now);
        assert!(cleared.starts_with(&format!("{COOKIE}=;")) && cleared.contains("Max-Age=0"));
        assert!(login.session(&headers, &signer, now).is_none());
    }

    fn base64_decode(text: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .unwrap()
    }

    #[test]
    fn plain_http_cookies_are_not_secure() {
        let (login, signer) = login("http://127.0.0.1:8025");
        let cookie = login.log_in(PASSWORD, &signer, Utc::now()).unwrap();
        assert!(!cookie.contains("Secure"), "{cookie}");
    }

    #[test]
    fn only_the_page_itself_may_post() {
        let (login, _) = login("https://nurture.example.com/");
        let headers = |pairs: &[(header::HeaderName, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(name.clone(), value.parse().unwrap());
            }
            map
        };
        let host = (header::HOST, "127.0.0.1:8025");
        assert!(login.same_origin(&headers(&[(header::ORIGIN, "https://nurture.example.com")])));
        assert!(login.same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:8025")
        ])));
        assert!(login.same_origin(&headers(&[
            host.clone(),
            (header::REFERER, "http://127.0.0.1:8025/leads/a@b.test")
        ])));
        assert!(!login.same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "https://evil.example")
        ])));
        assert!(!login.same_origin(&headers(&[host.clone(), (header::ORIGIN, "null")])));
        assert!(!login.same_origin(&headers(&[host])));
    }

    #[test]
    fn a_short_page_password_is_refused_with_its_file() {
        let dir = std::env::temp_dir().join(format!("nurture-login-short-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "short\n").unwrap();
        let config = HttpConfig {
            page_password_file: file.display().to_string(),
            ..HttpConfig::default()
        };
        let signer = Signer::new(b"0123456789abcdef0123").unwrap();
        let error = Login::load(&config, None, &signer).err().unwrap();
        assert!(
            error.contains("http.page_password_file") && error.contains("12"),
            "{error}"
        );
        let none = Login::load(&HttpConfig::default(), None, &signer).unwrap();
        assert!(none.is_none(), "no key, no password: no page");
    }
}
