//! The monitoring dashboard, served by `serve` at `/` beside the API: server-rendered
//! pages (askama templates in `templates/`, checked at compile time), htmx 2 and a
//! few lines of our own script embedded in the binary (`assets/`), live updates by
//! Server-Sent Events. Staff log in with an email and a password ([`session`]);
//! every page keeps to the clinics the person may see (`Staff::may`).
//!
//! - [`session`]: login, logout, the session cookie, CSRF, the login throttle.
//! - [`accounts`], [`passwords`]: staff accounts and their argon2id passwords.
//! - [`page`]: the frame every page shares, the error page, forms, clinic-local times.
//! - [`live`]: the SSE stream of incident changes.
//! - `pages/*`: one module per page.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::audit::runner::Auditor;
use crate::booking::Bookings;
use crate::detect::Detector;

pub mod accounts;
pub mod counts;
pub mod live;
pub mod page;
mod pages;
pub mod passwords;
pub mod session;

pub use page::PageError;

/// What every page handler needs.
#[derive(Clone)]
pub struct WebState {
    pub bookings: Arc<Bookings>,
    pub detector: Arc<Detector>,
    pub auditor: Arc<Auditor>,
    pub throttle: Arc<session::Throttle>,
    /// Turns true when the server shuts down: live streams end so it can.
    pub closing: Arc<tokio::sync::watch::Sender<bool>>,
    /// The overview's day counts and incidents, kept until a write to them is seen.
    pub day_counts: Arc<counts::DayCounts>,
    /// The overview's live part, rendered once per view until an incident changes.
    pub rendered_overviews: Arc<pages::overview::Rendered>,
}

impl WebState {
    pub fn new(bookings: Arc<Bookings>, detector: Arc<Detector>, auditor: Arc<Auditor>) -> Self {
        Self {
            rendered_overviews: Arc::new(pages::overview::Rendered::new(&detector)),
            day_counts: Arc::new(counts::DayCounts::new(detector.subscribe())),
            bookings,
            detector,
            auditor,
            throttle: Arc::new(session::Throttle::default()),
            closing: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    pub fn store(&self) -> &dyn crate::store::Store {
        self.bookings.store()
    }
}

/// The dashboard's routes; the API's live under `/api` in `http::router`.
pub fn router(state: WebState) -> Router {
    use pages::{admin, audits, board, incidents, investigate, overview, reports, silences};
    Router::new()
        .route("/", get(overview::page))
        .route("/fragments/overview", get(overview::fragment))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/incidents", get(incidents::page))
        .route("/incidents.csv", get(incidents::csv))
        .route("/fragments/incidents", get(incidents::fragment))
        .route("/incidents/{id}", get(investigate::page))
        .route(
            "/incidents/{id}/acknowledge",
            post(investigate::acknowledge),
        )
        .route("/incidents/{id}/resolve", post(investigate::resolve))
        .route("/incidents/{id}/recheck", post(investigate::recheck))
        .route("/incidents/{id}/silence", post(investigate::silence))
        .route(
            "/incidents/{id}/notifications/{notification}/{channel}/retry",
            post(investigate::retry),
        )
        .route("/board", get(board::page))
        .route("/audits", get(audits::page).post(audits::audit_now))
        .route("/reports", get(reports::page))
        .route("/reports/view", get(reports::view))
        .route("/silences", get(silences::page).post(silences::create))
        .route("/silences/{id}/end", post(silences::end))
        .route("/admin", get(admin::page))
        .route("/admin/users", post(admin::create_user))
        .route("/admin/users/{id}/disable", post(admin::disable_user))
        .route(
            "/admin/users/{id}/reset-password",
            post(admin::reset_password),
        )
        .route("/admin/keys", post(admin::create_key))
        .route("/admin/keys/{id}/revoke", post(admin::revoke_key))
        .route("/events", get(live::events))
        .route("/assets/{name}", get(asset))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Pages may run only our own scripts and styles, are never framed, and are not
/// cached by shared caches (they carry patients' names).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                 frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
        );
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The embedded assets: htmx (pinned, vendored), our script and stylesheet.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "htmx-2.0.11.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/htmx-2.0.11.min.js"),
    ),
    (
        "slotguard.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/slotguard.js"),
    ),
    (
        "slotguard.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/slotguard.css"),
    ),
];

async fn asset(page::PathId(name): page::PathId) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *bytes,
        )
            .into_response(),
        None => PageError::new(StatusCode::NOT_FOUND, "There is no such file.").into_response(),
    }
}
