//! What the operator's tools ask the daemon: `GET /healthz` (the process answers),
//! `GET /readyz` (it can do its job: 200, or 503 with the reasons, as JSON) and `GET /metrics`
//! (its figures, in the Prometheus text format: [`crate::metrics`]); and [`timed`], the layer
//! that times every HTTP request for those figures.
//!
//! None of them needs a key: they change nothing and show no lead's data (workflow names,
//! folder names and counts only), the usual arrangement for Prometheus and uptime checks. An
//! operator who would rather not show the figures to the world keeps `/metrics` from the
//! outside at the proxy in front (see docs/operations.md).
//!
//! Ready means: the store answers a read; every inbox watcher configured has its session; the
//! last SMTP hand-over got an answer from the server (a refusal counts: the server is up).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;

use crate::metrics;
use crate::store::Store;

/// What the checks look at.
pub struct Health {
    pub store: Store,
}

/// `/healthz`, `/readyz` and `/metrics`, with their own state.
pub fn router<S: Clone + Send + Sync + 'static>(health: Arc<Health>) -> Router<S> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .with_state(health)
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(health): State<Arc<Health>>) -> Response {
    let mut reasons = Vec::new();
    let store = match health.store.next_due() {
        Ok(_) => "ok".to_owned(),
        Err(error) => {
            reasons.push(format!("the store cannot be read: {error}"));
            "failing".to_owned()
        }
    };
    let folders = metrics::get().imap_folders();
    let imap = if folders.is_empty() {
        "not configured".to_owned()
    } else {
        let down: Vec<&str> = folders
            .iter()
            .filter(|(_, connected)| !connected)
            .map(|(name, _)| name.as_str())
            .collect();
        for folder in &down {
            reasons.push(format!("the inbox watcher of {folder} is not connected"));
        }
        if down.is_empty() { "ok" } else { "failing" }.to_owned()
    };
    let smtp = match metrics::get().smtp_failing_for() {
        None => "ok".to_owned(),
        Some(since) => {
            reasons.push(format!(
                "SMTP hand-overs have failed for {} s (the server does not answer; see the log)",
                since.as_secs()
            ));
            "failing".to_owned()
        }
    };
    let ready = reasons.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "reasons": reasons,
        "checks": { "store": store, "imap": imap, "smtp": smtp },
    });
    (status, Json(body)).into_response()
}

async fn scrape() -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::get().encode(),
    )
        .into_response()
}

/// Times a request for `nurture_http_request_duration_seconds`, labelled by the route's
/// template (`/unsubscribe/{token}`, never the path itself), or `unmatched`.
pub async fn timed(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    // Known methods only: a label per made-up method would grow without end.
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let response = next.run(request).await;
    metrics::get().http_request(
        method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
