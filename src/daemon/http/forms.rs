//! Web forms: `POST /forms/<name>` from a plain HTML form on the marketer's site
//! (`application/x-www-form-urlencoded`), as declared in `[[forms]]`.
//!
//! In order: the form must exist (404), the page must be one of its allowed origins (`Origin`,
//! else `Referer`; 403), the client address within its rate limit (429 with `Retry-After`),
//! the body form-encoded (415) and within its size limit (413). Then a filled honeypot field
//! drops the post quietly (the bot still sees the thank-you page), the mapped fields become a
//! lead by the import's rules, with the form's source and tags, and the browser is sent on
//! (303) to the thank-you page, or to the error page with `?error=<code>&field=<field>` when
//! the input is refused. With `double_opt_in`, the lead waits for its confirmation
//! ([`super::optin`]).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use chrono::Utc;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use serde_json::{Map, Value};
use tracing::{info, warn};

use super::{ANSWER_WITHIN, Doors, busy, document, see_other};
use crate::config::FormConfig;
use crate::daemon::intake::{Door, DoorRequest};
use crate::leads_file::lead_fields;

/// One configured form, with its rate limit.
pub struct Form {
    pub config: Arc<FormConfig>,
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// The allowed origins, lower case, without a trailing slash.
    origins: Vec<String>,
}

impl Form {
    pub fn new(config: &FormConfig) -> Form {
        Form {
            config: Arc::new(config.clone()),
            limiter: NonZeroU32::new(config.per_address_per_minute)
                .map(|rate| RateLimiter::keyed(Quota::per_minute(rate))),
            origins: config
                .allowed_origins
                .iter()
                .map(|origin| origin.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether the posting page is one of the allowed origins (any, when none is listed).
    fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        if self.origins.is_empty() {
            return true;
        }
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let origin = match text(header::ORIGIN).filter(|origin| *origin != "null") {
            Some(origin) => origin.to_ascii_lowercase(),
            None => match text(header::REFERER).and_then(origin_of) {
                Some(origin) => origin,
                None => return false,
            },
        };
        self.origins.contains(&origin)
    }

    /// The error page, saying what and where.
    fn error(&self, code: &str, field: &str) -> Response {
        let query =
            serde_urlencoded::to_string([("error", code), ("field", field)]).unwrap_or_default();
        let url = &self.config.error_url;
        let separator = if url.contains('?') { '&' } else { '?' };
        see_other(&format!("{url}{separator}{query}"))
    }
}

/// `scheme://host[:port]` of a URL, lower case.
pub(super) fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    (!authority.is_empty()).then(|| format!("{scheme}://{authority}").to_ascii_lowercase())
}

pub fn router() -> Router<Arc<Doors>> {
    Router::new().route("/forms/{name}", post(submit))
}

async fn submit(
    State(doors): State<Arc<Doors>>,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(form) = doors.forms.get(&name) else {
        return document(
            StatusCode::NOT_FOUND,
            "Not found",
            "<p>There is no such form.</p>",
        );
    };
    let config = &form.config;
    if !form.origin_allowed(&headers) {
        warn!(form = %name, origin = ?headers.get(header::ORIGIN), referer = ?headers.get(header::REFERER), "a form post from a page not in allowed_origins");
        return document(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "<p>This form cannot be sent from this page.</p>",
        );
    }
    let client = doors.client_ip(&headers, peer);
    if let Some(limiter) = &form.limiter
        && let Err(not_until) = limiter.check_key(&client)
    {
        let wait = not_until.wait_time_from(limiter.clock().now());
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = document(
            StatusCode::TOO_MANY_REQUESTS,
            "Please wait",
            "<p>Too many sign-ups from your address. Please try again in a minute.</p>",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        return response;
    }
    let form_encoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_encoded {
        return document(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported form",
            "<p>Send the form as application/x-www-form-urlencoded (a plain HTML form).</p>",
        );
    }
    let Ok(bytes) = axum::body::to_bytes(body, config.max_body_bytes).await else {
        return document(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too large",
            &format!(
                "<p>The form is larger than {} bytes.</p>",
                config.max_body_bytes
            ),
        );
    };
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes) else {
        return form.error("invalid_form", "");
    };
    if !config.honeypot.is_empty()
        && pairs
            .iter()
            .any(|(key, value)| *key == config.honeypot && !value.trim().is_empty())
    {
        info!(form = %name, %client, "honeypot filled: post dropped");
        return see_other(&config.thank_you_url);
    }
    let mut object = Map::new();
    // Which form field gave each lead field, to name it in an error.
    let mut given_by = Vec::new();
    for (key, value) in pairs {
        if let Some(field) = config.fields.get(&key)
            && !value.trim().is_empty()
        {
            given_by.push((field.clone(), key));
            object.insert(field.clone(), Value::String(value));
        }
    }
    let form_field = |field: &str| {
        given_by
            .iter()
            .find(|(lead_field, _)| lead_field == field)
            .map_or(field.to_owned(), |(_, key)| key.clone())
    };
    let mut row = match lead_fields(&object, Utc::now()) {
        Ok(row) => row,
        Err((field, reason)) => {
            info!(form = %name, field = %form_field(&field), %reason, "a form post refused");
            return form.error("invalid_field", &form_field(&field));
        }
    };
    if row.lead.email.is_empty() {
        let field = config
            .fields
            .iter()
            .find(|(_, lead_field)| *lead_field == "email")
            .map_or("email", |(key, _)| key.as_str());
        return form.error("missing_field", field);
    }
    if row.lead.source.is_none() && !config.source.is_empty() {
        row.lead.source = Some(config.source.clone());
    }
    row.lead.tags.extend(config.tags.iter().cloned());
    let door = if config.double_opt_in {
        Door::SignUp {
            row,
            form: config.clone(),
        }
    } else {
        Door::Upsert {
            row,
            by: format!("form `{name}`"),
        }
    };
    let request = DoorRequest {
        door,
        idempotency: None,
    };
    match tokio::time::timeout(ANSWER_WITHIN, doors.inbound.door(request)).await {
        Ok(Ok(reply)) if reply.status < 300 => see_other(&config.thank_you_url),
        Ok(Ok(reply)) => {
            warn!(form = %name, status = reply.status, body = %reply.body, "a form post was refused by the daemon");
            form.error("not_accepted", "")
        }
        Ok(Err(error)) => {
            warn!(form = %name, %error, "a form post could not be recorded");
            busy()
        }
        Err(_) => {
            warn!(form = %name, "a form post waited too long for the daemon");
            busy()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(origins: &[&str]) -> Form {
        Form::new(&FormConfig {
            name: "signup".into(),
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
            error_url: "https://www.example.test/oops?lang=en".into(),
            ..FormConfig::default()
        })
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn only_the_allowed_pages_may_post() {
        let form = form(&["https://www.Example.test/"]);
        assert!(form.origin_allowed(&headers(&[(header::ORIGIN, "https://www.example.test")])));
        assert!(!form.origin_allowed(&headers(&[(header::ORIGIN, "https://evil.example")])));
        // No Origin: the Referer's origin counts; neither: refused.
        assert!(form.origin_allowed(&headers(&[(
            header::REFERER,
            "https://www.example.test/pricing?x=1"
        )])));
        assert!(!form.origin_allowed(&headers(&[(header::ORIGIN, "null")])));
        assert!(!form.origin_allowed(&HeaderMap::new()));
        // No list: any page.
        assert!(super::tests::form(&[]).origin_allowed(&HeaderMap::new()));
    }

    #[test]
    fn the_error_page_is_told_what_and_where() {
        let response = form(&[]).error("invalid_field", "your-email");
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            response.headers()[header::LOCATION],
            "https://www.example.test/oops?lang=en&error=invalid_field&field=your-email"
        );
    }
}
