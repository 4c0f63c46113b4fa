//! The daemon's HTTP server on `http.listen`: one axum `Router` assembled from one router per
//! capability, each mounted only when configured:
//!
//! - [`unsubscribe`]: one-click unsubscribe links (always, once the server runs);
//! - [`track`]: tracked links and the open image (always: tokens exist only for workflows
//!   that `track clicks` or `track opens`);
//! - [`api`]: `/v1`, JSON, behind API keys (`http.api_key_file` / `http.api_key_env`);
//! - [`forms`]: `POST /forms/<name>` for the `[[forms]]` of the configuration;
//! - [`optin`]: `/confirm/<token>`, when a form asks for double opt-in;
//! - [`page`]: the status page (`/`, `/leads/<email>`), behind the API keys or its password;
//! - [`health`]: `/healthz`, `/readyz` and `/metrics` (always), and the layer timing requests.
//!
//! Limits are layers: a request timeout and request tracing around everything, a body limit on
//! the API (each form checks its own); rate limits are per API key and per client address
//! (`governor`). Nothing here touches the store: every change goes to the work loop
//! ([`super::inbound`]) and is answered once it is durable. Errors of the API are one JSON
//! shape ([`error`]).

pub mod api;
pub mod error;
pub mod forms;
pub mod health;
pub mod optin;
pub mod page;
pub mod track;
pub mod unsubscribe;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use super::inbound::Inbound;
use crate::config::Config;
use crate::project::Project;
use crate::store::Store;
use crate::unsubscribe::Unsubscribe;

/// How long a request waits for the work loop.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// What every handler shares.
pub struct Doors {
    pub inbound: Inbound,
    pub unsubscribe: Arc<Unsubscribe>,
    /// `None`: no API key configured, no `/v1`.
    pub api: Option<api::Keys>,
    /// By name.
    pub forms: HashMap<String, forms::Form>,
    /// Where a proxy in front puts the client's address; `None`: the connection's.
    pub client_ip_header: Option<HeaderName>,
    /// The tracked links followed lately (a scanner's burst: [`track`]).
    pub recent: crate::daemon::judge::Recent,
    /// `None`: no key or password configured, no status page.
    pub page: Option<page::Page>,
}

impl Doors {
    /// The doors `config` asks for; a setting that cannot work is an error naming it.
    pub fn new(
        config: &Config,
        project: &Project,
        unsubscribe: Arc<Unsubscribe>,
        inbound: Inbound,
    ) -> Result<Doors, String> {
        let http = &config.http;
        let api = api::Keys::load(http)?;
        let mut forms = HashMap::new();
        for form in &config.forms {
            let mut problems = form.problems();
            if form.double_opt_in {
                if unsubscribe.base_url().is_none() {
                    problems.push(format!(
                        "[[forms]] `{}`: double_opt_in needs http.base_url, the address of the confirmation links",
                        form.name
                    ));
                }
                if !project.templates.names().contains(&form.confirm_template) {
                    problems.push(format!(
                        "[[forms]] `{}`: confirm_template: no template `{}` in the templates folder",
                        form.name, form.confirm_template
                    ));
                }
            }
            if !problems.is_empty() {
                return Err(problems.join("; "));
            }
            if forms
                .insert(form.name.clone(), forms::Form::new(form))
                .is_some()
            {
                return Err(format!("[[forms]] `{}` is declared twice", form.name));
            }
        }
        let client_ip_header = match http.client_ip_header.trim() {
            "" => None,
            name => Some(
                HeaderName::try_from(name)
                    .map_err(|_| format!("http.client_ip_header `{name}` is not a header name"))?,
            ),
        };
        Ok(Doors {
            inbound,
            unsubscribe,
            api,
            forms,
            client_ip_header,
            recent: Default::default(),
            page: None,
        })
    }

    /// With the status page, which reads `store` (the daemon's) for the workflows `project`
    /// holds, when an API key or the page password is configured.
    pub fn with_page(
        mut self,
        config: &Config,
        store: Store,
        project: watch::Receiver<Arc<Project>>,
    ) -> Result<Doors, String> {
        self.page = page::Page::new(
            &config.http,
            self.api.as_ref(),
            self.unsubscribe.signer(),
            store,
            project,
        )?;
        Ok(self)
    }

    /// The client's address: the last entry of the proxy's header when one is configured (the
    /// one the proxy itself added), else the connection's.
    pub fn client_ip(&self, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
        self.client_ip_header
            .as_ref()
            .and_then(|name| headers.get(name))
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .and_then(|last| last.trim().parse().ok())
            .unwrap_or(peer.ip())
    }
}

/// Serves on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    doors: Arc<Doors>,
    health: Arc<health::Health>,
    config: &Config,
) -> std::io::Result<()> {
    let mut app = Router::new()
        .merge(unsubscribe::router())
        .merge(track::router())
        .merge(health::router(health));
    if doors.api.is_some() {
        app = app.merge(api::router(config.http.api_max_body_bytes));
    }
    if !doors.forms.is_empty() {
        app = app.merge(forms::router());
    }
    if doors.forms.values().any(|form| form.config.double_opt_in) {
        app = app.merge(optin::router());
    }
    if doors.page.is_some() {
        app = app.merge(page::router());
    }
    let app = app
        .fallback(unsubscribe::not_found)
        .with_state(doors)
        .layer(axum::middleware::from_fn(health::timed))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(config.http.timeout_seconds.max(1)),
        ))
        .layer(TraceLayer::new_for_http());
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

/// A small HTML page (the answers people see in a browser).
pub fn document(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:32em;margin:3em auto\">{body}</body></html>"
    );
    (status, Html(html)).into_response()
}

/// 503 with `Retry-After`: one-click senders retry; a person can press the button again.
pub fn busy() -> Response {
    let mut response = document(
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again",
        "<p>We could not record this just now. Please try again in a minute.</p>",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    response
}

/// `303 See Other` to `location` (after a form post: the browser GETs the page).
pub fn see_other(location: &str) -> Response {
    match HeaderValue::try_from(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => document(StatusCode::OK, "Thank you", "<p>Thank you.</p>"),
    }
}
