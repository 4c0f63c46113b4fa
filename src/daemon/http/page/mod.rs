//! The status page, for people: `GET /` shows per workflow the funnel (enrolled → emailed →
//! engaged → replied → contact) as an SVG chart with its numbers, the exits by reason, the
//! other figures of `nurture status` and the latest promotions with the reply that earned
//! them; `GET /leads/{email}` shows a lead, its enrollments and its timeline (a form on the
//! page, `GET /leads?email=`, leads there).
//!
//! - `POST /login` (the form's password) and `POST /logout`: [`login`] owns who gets in;
//!   scripts send an API key as `Authorization: Bearer` instead.
//! - [`view`] reads the store and renders the templates beside this file.
//!
//! The page only reads: it reads the daemon's own store handle on a blocking thread beside the
//! work loop, as the commands that read do ([`crate::control`]), so sending never waits for
//! it. Every answer is `Cache-Control: no-store` (it shows personal data) and carries a
//! Content-Security-Policy that allows the inline style sheet (by its hash) and nothing else:
//! no script, no frame, no other site.

pub mod login;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;
use tokio::sync::watch;
use tracing::{error, info, warn};

use self::login::Login;
use self::view::{LoginView, Views};
use super::api::Keys;
use super::error::ApiError;
use super::{Doors, see_other};
use crate::config::HttpConfig;
use crate::lead::normalize_email;
use crate::project::Project;
use crate::store::Store;
use crate::token::Signer;

/// The largest login form taken, in bytes.
const MAX_LOGIN_BYTES: usize = 4096;

/// The page's login, templates, and what it reads.
pub struct Page {
    store: Store,
    /// The workflows the daemon runs now, reloads included.
    project: watch::Receiver<Arc<Project>>,
    login: Login,
    views: Views,
    policy: HeaderValue,
}

impl Page {
    /// The page, when an API key or the page password is configured; `None`: no page.
    pub fn new(
        config: &HttpConfig,
        keys: Option<&Keys>,
        signer: &Signer,
        store: Store,
        project: watch::Receiver<Arc<Project>>,
    ) -> Result<Option<Page>, String> {
        let Some(login) = Login::load(config, keys, signer)? else {
            return Ok(None);
        };
        let views = Views::new()?;
        let policy = HeaderValue::try_from(format!(
            "default-src 'none'; style-src {}; form-action 'self'; frame-ancestors 'none'; \
             base-uri 'none'",
            views.style_hash
        ))
        .map_err(|e| format!("the status page's Content-Security-Policy: {e}"))?;
        Ok(Some(Page {
            store,
            project,
            login,
            views,
            policy,
        }))
    }

    /// `template` rendered with `data`, as an HTML answer with the page's headers.
    fn html(&self, status: StatusCode, template: &str, data: &impl serde::Serialize) -> Response {
        match self.views.render(template, data) {
            Ok(html) => self.headers((status, Html(html)).into_response()),
            Err(problem) => self.failed(&problem),
        }
    }

    /// The login form, with what went wrong.
    fn login_form(&self, status: StatusCode, problem: Option<&str>) -> Response {
        let view = LoginView {
            title: "Sign in",
            problem: problem.map(str::to_owned),
        };
        self.html(status, "login", &view)
    }

    /// 500, the cause in the log (not on the page).
    fn failed(&self, problem: &str) -> Response {
        error!(%problem, "the status page failed");
        self.headers(super::document(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Status page error",
            "<p>The status page could not be made; the daemon's log says why.</p>",
        ))
    }

    fn headers(&self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::CONTENT_SECURITY_POLICY, self.policy.clone());
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        // The login and logout posts' `Referer`, should a browser leave out `Origin`.
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        response
    }
}

/// `/`, `/leads/{email}`, `/leads?email=` (the page's lookup form), `/login`, `/logout`.
pub fn router() -> Router<Arc<Doors>> {
    Router::new()
        .route("/", get(status))
        .route("/leads", get(find))
        .route("/leads/{email}", get(lead))
        .route("/login", post(log_in))
        .route("/logout", post(log_out))
        .layer(DefaultBodyLimit::max(MAX_LOGIN_BYTES))
}

/// `None` when the request may see the page: a valid API key in `Authorization`, or a session
/// cookie; else the answer instead (the login form, or the API's 401 or 429 for a bad key).
fn refusal(doors: &Doors, page: &Page, headers: &HeaderMap) -> Option<Response> {
    if headers.contains_key(header::AUTHORIZATION) {
        return doors
            .api
            .as_ref()
            .ok_or(ApiError::Unauthorized)
            .and_then(|keys| keys.authorize(headers))
            .err()
            .map(|error| page.headers(error.into_response()));
    }
    match page
        .login
        .session(headers, doors.unsubscribe.signer(), Utc::now())
    {
        Some(_) => None,
        None => Some(page.login_form(StatusCode::UNAUTHORIZED, None)),
    }
}

async fn status(State(doors): State<Arc<Doors>>, headers: HeaderMap) -> Response {
    let Some(page) = &doors.page else {
        return super::unsubscribe::not_found().await;
    };
    if let Some(answer) = refusal(&doors, page, &headers) {
        return answer;
    }
    let store = page.store.clone();
    let project = page.project.borrow().clone();
    let read =
        tokio::task::spawn_blocking(move || view::status(&store, &project, Utc::now())).await;
    match read {
        Ok(Ok(data)) => page.html(StatusCode::OK, "status", &data),
        Ok(Err(problem)) => page.failed(&problem),
        Err(panic) => page.failed(&panic.to_string()),
    }
}

async fn lead(
    State(doors): State<Arc<Doors>>,
    headers: HeaderMap,
    Path(email): Path<String>,
) -> Response {
    let Some(page) = &doors.page else {
        return super::unsubscribe::not_found().await;
    };
    if let Some(answer) = refusal(&doors, page, &headers) {
        return answer;
    }
    let no_lead = || {
        page.headers(super::document(
            StatusCode::NOT_FOUND,
            "No such lead",
            "<p>There is no lead with this address in the store. <a href=\"/\">All workflows</a></p>",
        ))
    };
    let Ok(email) = normalize_email(&email) else {
        return no_lead();
    };
    let store = page.store.clone();
    match tokio::task::spawn_blocking(move || view::lead(&store, &email)).await {
        Ok(Ok(Some(data))) => page.html(StatusCode::OK, "lead", &data),
        Ok(Ok(None)) => no_lead(),
        Ok(Err(problem)) => page.failed(&problem),
        Err(panic) => page.failed(&panic.to_string()),
    }
}

#[derive(Deserialize)]
struct Lookup {
    #[serde(default)]
    email: String,
}

/// The lookup form's `GET /leads?email=…`: on to the lead's page (303). It changes nothing;
/// the lead page asks for the login itself.
async fn find(State(doors): State<Arc<Doors>>, RawQuery(query): RawQuery) -> Response {
    if doors.page.is_none() {
        return super::unsubscribe::not_found().await;
    }
    let lookup = serde_urlencoded::from_str::<Lookup>(query.as_deref().unwrap_or_default())
        .unwrap_or(Lookup {
            email: String::new(),
        });
    match lookup.email.trim() {
        "" => see_other("/"),
        email => see_other(&view::lead_href(email)),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    password: String,
}

async fn log_in(
    State(doors): State<Arc<Doors>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(page) = &doors.page else {
        return super::unsubscribe::not_found().await;
    };
    if !page.login.same_origin(&headers) {
        warn!("a login post from another site was refused");
        return page.login_form(
            StatusCode::FORBIDDEN,
            Some("This form only works from the status page itself: open it and sign in there."),
        );
    }
    let client = doors.client_ip(&headers, peer);
    if let Err(wait) = page.login.limit(client) {
        warn!(%client, "too many logins to the status page from one address");
        let mut answer = page.login_form(
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many tries from this address: wait a minute, then try again."),
        );
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        return answer;
    }
    let Ok(body) = body else {
        return page.login_form(
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("That was too long for a password."),
        );
    };
    let password = serde_urlencoded::from_bytes::<LoginForm>(&body)
        .map(|form| form.password)
        .unwrap_or_default();
    match page
        .login
        .log_in(&password, doors.unsubscribe.signer(), Utc::now())
    {
        Some(cookie) => {
            info!(%client, "logged in to the status page");
            with_cookie(see_other("/"), &cookie)
        }
        None => {
            warn!(%client, "a wrong password for the status page");
            page.login_form(
                StatusCode::UNAUTHORIZED,
                Some("That is not the password (nor an API key)."),
            )
        }
    }
}

async fn log_out(State(doors): State<Arc<Doors>>, headers: HeaderMap) -> Response {
    let Some(page) = &doors.page else {
        return super::unsubscribe::not_found().await;
    };
    if !page.login.same_origin(&headers) {
        warn!("a logout post from another site was refused");
        return page.login_form(
            StatusCode::FORBIDDEN,
            Some("This form only works from the status page itself."),
        );
    }
    let now = Utc::now();
    let session = page
        .login
        .session(&headers, doors.unsubscribe.signer(), now);
    let cookie = page.login.log_out(session, now);
    with_cookie(see_other("/"), &cookie)
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::try_from(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
