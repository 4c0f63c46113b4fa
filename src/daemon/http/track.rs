//! Tracked links and the open image: `GET /c/<token>` and `GET /o/<token>`.
//!
//! - `/c/<token>`: the click is journaled (which email, which link, when; judged person or
//!   machine, [`crate::daemon::judge`]) and answered `302 Found` to the link's target, read
//!   from what nurture kept with the email ([`crate::daemon::engage`]): never from the request,
//!   so this is no open redirect.
//! - `/o/<token>`: the open is journaled and answered with a 1×1 transparent GIF.
//!
//! A forged, altered or unknown token gets the same 404 as an unknown path and records
//! nothing.
//!
//! GET never changes state, and these do not break that rule: recording that a link was
//! followed is logging what happened, not a change the request asks for (nothing is
//! unsubscribed, confirmed or edited at the request's word), and what it may set in motion (a
//! sequence waiting for that click goes on) is the workflow's own reaction to a fact, as with
//! a reply. Only the holder of the email can produce the token (HMAC-signed, naming one
//! message and one link), so no one can record engagement for someone else; and machines that
//! fetch every link (scanners, image proxies) are told apart and move nothing.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracing::warn;

use super::unsubscribe::not_found;
use super::{ANSWER_WITHIN, Doors, busy};
use crate::daemon::engage::{Engagement, Hit};
use crate::daemon::judge::{self, Seen};
use crate::mail::links::{read_click, read_open};

/// A 1×1 transparent GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// `GET` (and `HEAD`, judged a machine's) on `/c/<token>` and `/o/<token>`.
pub fn router() -> Router<Arc<Doors>> {
    Router::new()
        .route("/c/{token}", get(click))
        .route("/o/{token}", get(open))
}

async fn click(
    State(doors): State<Arc<Doors>>,
    Path(token): Path<String>,
    method: Method,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
) -> Response {
    let Some((message, index)) = read_click(doors.unsubscribe.signer(), &token) else {
        return not_found().await;
    };
    let machine = judged(&doors, &method, &headers, peer)
        .or_else(|| doors.recent.burst(message, index, Instant::now()));
    let engagement = Engagement {
        message,
        hit: Hit::Click(index),
        machine,
    };
    match submit(&doors, engagement).await {
        Ok(Some(target)) => match HeaderValue::from_bytes(target.as_bytes()) {
            Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
            Err(_) => not_found().await,
        },
        Ok(None) => not_found().await,
        Err(response) => response,
    }
}

async fn open(
    State(doors): State<Arc<Doors>>,
    Path(token): Path<String>,
    method: Method,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
) -> Response {
    let Some(message) = read_open(doors.unsubscribe.signer(), &token) else {
        return not_found().await;
    };
    let engagement = Engagement {
        message,
        hit: Hit::Open,
        machine: judged(&doors, &method, &headers, peer),
    };
    match submit(&doors, engagement).await {
        Ok(Some(_)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("image/gif")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            PIXEL,
        )
            .into_response(),
        Ok(None) => not_found().await,
        Err(response) => response,
    }
}

/// The judgement of what the request shows; the address and the agent go no further.
fn judged(
    doors: &Doors,
    method: &Method,
    headers: &HeaderMap,
    peer: std::net::SocketAddr,
) -> Option<String> {
    judge::machine(&Seen {
        head: method == Method::HEAD,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok()),
        ip: doors.client_ip(headers, peer),
    })
}

/// Hands the engagement to the work loop; the target once it is durable.
async fn submit(doors: &Doors, engagement: Engagement) -> Result<Option<String>, Response> {
    match tokio::time::timeout(ANSWER_WITHIN, doors.inbound.engage(engagement)).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(error)) => {
            warn!(%error, "a click or an open could not be recorded");
            Err(busy())
        }
        Err(_) => {
            warn!("a click or an open waited too long for the daemon");
            Err(busy())
        }
    }
}
