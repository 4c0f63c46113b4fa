//! One-click unsubscribe (RFC 8058), `/unsubscribe/<token>`.
//!
//! - `POST /unsubscribe/<token>` (what Gmail and Yahoo send for `List-Unsubscribe-Post`, and
//!   what the page's button sends): suppresses the lead and ends its sequences, durably, then
//!   answers 200.
//! - `GET /unsubscribe/<token>`: a page with a button, and nothing changes: mail scanners and
//!   link previews fetch every link of an email, and must not unsubscribe anyone.
//!
//! The token is the only credential and cannot be forged ([`crate::unsubscribe`]); a bad one
//! gets the same 404 as an unknown path, saying nothing about any address.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use handlebars::html_escape;
use tracing::{info, warn};

use super::{ANSWER_WITHIN, Doors, busy, document};
use crate::daemon::scheduler::Happening;
use crate::engine::Input;
use crate::lead::SuppressionReason;

/// `GET` (a page with a button) and `POST` (unsubscribe now) on `/unsubscribe/<token>`.
pub fn router() -> Router<Arc<Doors>> {
    Router::new().route("/unsubscribe/{token}", get(page).post(unsubscribe_now))
}

async fn page(State(doors): State<Arc<Doors>>, Path(token): Path<String>) -> Response {
    let Some(address) = doors.unsubscribe.verify(&token) else {
        return not_found().await;
    };
    let body = format!(
        "<p>Stop all emails to <b>{}</b>?</p>\
         <form method=\"post\"><button type=\"submit\">Unsubscribe</button></form>",
        html_escape(&address)
    );
    document(StatusCode::OK, "Unsubscribe", &body)
}

async fn unsubscribe_now(State(doors): State<Arc<Doors>>, Path(token): Path<String>) -> Response {
    let Some(address) = doors.unsubscribe.verify(&token) else {
        return not_found().await;
    };
    let happening = Happening {
        lead: address.clone(),
        workflow: None,
        input: Some(Input::Unsubscribe),
        suppress: Some((
            SuppressionReason::Unsubscribed,
            "unsubscribed with the one-click link".into(),
        )),
        note: Some("unsubscribed with the one-click link".into()),
        receipt: None,
    };
    match tokio::time::timeout(ANSWER_WITHIN, doors.inbound.submit(happening)).await {
        Ok(Ok(known)) => {
            info!(lead = %address, known, "unsubscribed with the one-click link");
            let body = format!(
                "<p><b>{}</b> will get no more emails from us.</p>",
                html_escape(&address)
            );
            document(StatusCode::OK, "Unsubscribed", &body)
        }
        Ok(Err(error)) => {
            warn!(lead = %address, %error, "an unsubscribe could not be recorded");
            busy()
        }
        Err(_) => {
            warn!(lead = %address, "an unsubscribe waited too long for the daemon");
            busy()
        }
    }
}

/// The answer to a bad token and to any unknown path.
pub async fn not_found() -> Response {
    document(
        StatusCode::NOT_FOUND,
        "Not found",
        "<p>This link is not valid. If you wanted to unsubscribe, reply to the email with \
         the word “unsubscribe”.</p>",
    )
}
