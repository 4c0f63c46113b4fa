//! Double opt-in confirmation links, `/confirm/<token>`.
//!
//! The token is signed (kind `confirm`: the address, the form, the expiry; [`crate::token`]),
//! so it cannot be made for someone else or kept alive past its time. `GET` only shows a page
//! with a button: mail scanners and link previews fetch every link and must confirm nobody.
//! `POST` (the button) confirms: the sign-up becomes a lead, its consent is journaled, and it
//! is enrolled ([`crate::daemon::intake`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use chrono::{DateTime, Utc};
use handlebars::html_escape;
use tracing::warn;

use super::{ANSWER_WITHIN, Doors, busy, document, see_other};
use crate::daemon::intake::{CONFIRM_KIND, Door, DoorRequest};

pub fn router() -> Router<Arc<Doors>> {
    Router::new().route("/confirm/{token}", get(page).post(confirm))
}

/// What a genuine token says: the address, the form, until when.
fn open(doors: &Doors, token: &str) -> Option<(String, String, DateTime<Utc>)> {
    let fields = doors.unsubscribe.signer().open(CONFIRM_KIND, token)?;
    let [email, form, expires] = <[String; 3]>::try_from(fields).ok()?;
    let expires = DateTime::from_timestamp(expires.parse().ok()?, 0)?;
    Some((email, form, expires))
}

async fn page(State(doors): State<Arc<Doors>>, Path(token): Path<String>) -> Response {
    let Some((email, _, _)) = open(&doors, &token) else {
        return not_found();
    };
    let body = format!(
        "<p>Confirm that <b>{}</b> wants our emails?</p>\
         <form method=\"post\"><button type=\"submit\" id=\"confirm\">Yes, confirm</button></form>",
        html_escape(&email)
    );
    document(StatusCode::OK, "Confirm your subscription", &body)
}

async fn confirm(State(doors): State<Arc<Doors>>, Path(token): Path<String>) -> Response {
    let Some((email, form, expires)) = open(&doors, &token) else {
        return not_found();
    };
    let request = DoorRequest {
        door: Door::Confirm {
            email: email.clone(),
            form: form.clone(),
            expires,
        },
        idempotency: None,
    };
    match tokio::time::timeout(ANSWER_WITHIN, doors.inbound.door(request)).await {
        Ok(Ok(reply)) if reply.status == 200 => {
            let confirmed_url = doors
                .forms
                .get(&form)
                .map(|form| form.config.confirmed_url.as_str())
                .unwrap_or_default();
            if confirmed_url.is_empty() {
                let body = format!(
                    "<p>Thank you: <b>{}</b> is confirmed. Our first email is on its way.</p>",
                    html_escape(&email)
                );
                document(StatusCode::OK, "Confirmed", &body)
            } else {
                see_other(confirmed_url)
            }
        }
        Ok(Ok(reply)) if reply.status == 410 => document(
            StatusCode::GONE,
            "Link expired",
            "<p>This confirmation link has expired. Please sign up again.</p>",
        ),
        Ok(Ok(_)) => not_found(),
        Ok(Err(error)) => {
            warn!(lead = %email, %error, "a confirmation could not be recorded");
            busy()
        }
        Err(_) => {
            warn!(lead = %email, "a confirmation waited too long for the daemon");
            busy()
        }
    }
}

fn not_found() -> Response {
    document(
        StatusCode::NOT_FOUND,
        "Not found",
        "<p>This confirmation link is not valid, or the sign-up has expired. Please sign up again.</p>",
    )
}
