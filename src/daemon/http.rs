//! The daemon's HTTP endpoint: one-click unsubscribe (RFC 8058).
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
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use handlebars::html_escape;
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::inbound::Inbound;
use super::scheduler::Happening;
use crate::engine::Input;
use crate::lead::SuppressionReason;
use crate::unsubscribe::Unsubscribe;

/// How long a click waits for the work loop (it answers between two batches).
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

struct Endpoint {
    unsubscribe: Arc<Unsubscribe>,
    inbound: Inbound,
}

/// Serves on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    unsubscribe: Arc<Unsubscribe>,
    inbound: Inbound,
) -> std::io::Result<()> {
    let endpoint = Arc::new(Endpoint {
        unsubscribe,
        inbound,
    });
    let app = Router::new()
        .route("/unsubscribe/{token}", get(page).post(unsubscribe_now))
        .fallback(not_found)
        .with_state(endpoint);
    axum::serve(listener, app).await
}

async fn page(State(endpoint): State<Arc<Endpoint>>, Path(token): Path<String>) -> Response {
    let Some(address) = endpoint.unsubscribe.verify(&token) else {
        return not_found().await;
    };
    let body = format!(
        "<p>Stop all emails to <b>{}</b>?</p>\
         <form method=\"post\"><button type=\"submit\">Unsubscribe</button></form>",
        html_escape(&address)
    );
    document(StatusCode::OK, "Unsubscribe", &body)
}

async fn unsubscribe_now(
    State(endpoint): State<Arc<Endpoint>>,
    Path(token): Path<String>,
) -> Response {
    let Some(address) = endpoint.unsubscribe.verify(&token) else {
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
    match tokio::time::timeout(ANSWER_WITHIN, endpoint.inbound.submit(happening)).await {
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

async fn not_found() -> Response {
    document(
        StatusCode::NOT_FOUND,
        "Not found",
        "<p>This link is not valid. If you wanted to unsubscribe, reply to the email with \
         the word “unsubscribe”.</p>",
    )
}

/// 503 with `Retry-After`: one-click senders retry; a person can press the button again.
fn busy() -> Response {
    let mut response = document(
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again",
        "<p>We could not record this just now. Please try again in a minute.</p>",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
    response
}

fn document(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:32em;margin:3em auto\">{body}</body></html>"
    );
    (status, Html(html)).into_response()
}
