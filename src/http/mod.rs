//! The JSON API on axum: routes, shared state, and `serve`, which runs on an
//! already-bound listener (port 0 in tests) until the shutdown signal, letting
//! in-flight requests finish; `serve_metrics` serves `/metrics` alone, without keys,
//! for `--metrics-listen`.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::audit::runner::Auditor;
use crate::booking::Bookings;
use crate::detect::Detector;

pub mod api;
pub mod error;
pub mod extract;
pub mod limits;
pub mod server;

use error::ApiError;

/// Largest request body accepted; a booking is a few hundred bytes.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;
/// Requests handled at once before new ones are turned away with 503.
pub const MAX_IN_FLIGHT: usize = 1024;

#[derive(Clone)]
pub struct AppState {
    pub bookings: Arc<Bookings>,
    pub detector: Arc<Detector>,
    pub auditor: Arc<Auditor>,
    pub web: crate::web::WebState,
    pub limits: Arc<limits::RateLimits>,
    in_flight: Arc<Semaphore>,
}

impl AppState {
    pub fn new(bookings: Arc<Bookings>, detector: Arc<Detector>, auditor: Arc<Auditor>) -> Self {
        Self {
            web: crate::web::WebState::new(bookings.clone(), detector.clone(), auditor.clone()),
            bookings,
            detector,
            auditor,
            limits: Arc::new(limits::RateLimits::default()),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// The same server with other rate limits (`[limits]` in slotguard.toml).
    pub fn with_limits(mut self, limits: limits::Limits) -> Self {
        self.limits = Arc::new(limits::RateLimits::new(limits));
        self
    }
}

pub fn router(state: AppState) -> Router {
    use api::{appointments, audit, clinics, detection, metrics, reports};
    let v1 = Router::new()
        .route(
            "/clinics",
            post(clinics::create_clinic).get(clinics::list_clinics),
        )
        .route(
            "/clinics/{clinic_id}",
            get(clinics::get_clinic).put(clinics::update_clinic),
        )
        .route(
            "/clinics/{clinic_id}/doctors",
            post(clinics::create_doctor).get(clinics::list_doctors),
        )
        .route(
            "/clinics/{clinic_id}/doctors/{doctor_id}",
            get(clinics::get_doctor).put(clinics::update_doctor),
        )
        .route(
            "/clinics/{clinic_id}/doctors/{doctor_id}/availability",
            get(appointments::availability),
        )
        .route(
            "/appointments",
            post(appointments::book).get(appointments::list),
        )
        .route("/appointments/validate", post(appointments::validate))
        .route("/appointments/walk-in", post(appointments::walk_in))
        .route("/appointments/{id}", get(appointments::get))
        .route("/appointments/{id}/status", post(appointments::set_status))
        .route("/appointments/{id}/cancel", post(appointments::cancel))
        .route(
            "/appointments/{id}/reschedule",
            post(appointments::reschedule),
        )
        .route(
            "/watch/{source}/appointments/{id}",
            put(detection::watch_put).delete(detection::watch_delete),
        )
        .route(
            "/watch/{source}/appointments:batch",
            post(detection::watch_batch),
        )
        .route("/incidents", get(detection::incidents))
        .route("/incidents/{id}", get(detection::incident))
        .route("/incidents/{id}/acknowledge", post(detection::acknowledge))
        .route("/incidents/{id}/resolve", post(detection::resolve))
        .route("/notifications", get(detection::notifications))
        .route(
            "/notifications/{id}/retry",
            post(detection::retry_notification),
        )
        .route(
            "/silences",
            post(detection::create_silence).get(detection::silences),
        )
        .route("/silences/{id}", delete(detection::end_silence))
        .route("/audits", get(audit::runs).post(audit::audit_now))
        .route("/stats", get(metrics::stats))
        .route("/reports/weekly", get(reports::weekly));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/book-appointment", post(appointments::book))
        .nest("/api/v1", v1)
        .with_state(state.clone())
        .merge(crate::web::router(state.web.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), shed_load))
        .layer(middleware::from_fn_with_state(state, read_body))
        .layer(middleware::from_fn(printable_paths))
        .layer(middleware::from_fn(log_request))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Something went wrong on our side. It has been logged; please retry.",
            )
            .into_response()
        }))
}

/// An unknown path: the API's JSON 404 under `/api`, the dashboard's page elsewhere.
/// Paths answered in the API's JSON; every other path belongs to the dashboard.
fn is_api(path: &str) -> bool {
    path.starts_with("/api/") || path == "/healthz" || path == "/metrics"
}

async fn not_found(uri: axum::http::Uri) -> Response {
    if is_api(uri.path()) {
        ApiError::not_found_route().into_response()
    } else {
        crate::web::PageError::not_found("page").into_response()
    }
}

async fn method_not_allowed(uri: axum::http::Uri) -> Response {
    if is_api(uri.path()) {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "This endpoint does not take that method.",
        )
        .into_response()
    } else {
        crate::web::PageError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "This page does not take that method; use the links and buttons on the page.",
        )
        .into_response()
    }
}

/// `/metrics` and nothing else, without keys: what `--metrics-listen` serves, for a
/// Prometheus on an address the API's clients cannot reach.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(api::metrics::metrics_unkeyed))
        .fallback(|| async { ApiError::not_found_route() })
        .with_state(state)
}

/// A path whose decoded text is not UTF-8 (400) or holds a control character such as
/// NUL (404: no id can hold one) is answered here, before any route parses it, the
/// same way on both stores and in the error envelope (the dashboard's: its page).
async fn printable_paths(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let decoded: Vec<u8> = percent_decode(path.as_bytes());
    let refusal = match std::str::from_utf8(&decoded) {
        Err(_) => Some((
            StatusCode::BAD_REQUEST,
            "malformed_path",
            "The path is not valid UTF-8 text once percent-decoded.",
        )),
        Ok(text) if text.chars().any(char::is_control) => Some((
            StatusCode::NOT_FOUND,
            "not_found",
            "Nothing here: the path holds a control character, which no id can.",
        )),
        Ok(_) => None,
    };
    match refusal {
        None => next.run(request).await,
        Some((status, code, message)) if is_api(path) => {
            ApiError::new(status, code, message).into_response()
        }
        Some((StatusCode::NOT_FOUND, _, _)) => {
            crate::web::PageError::not_found("page").into_response()
        }
        Some((status, _, message)) => crate::web::PageError::new(status, message).into_response(),
    }
}

/// `%XX` sequences decoded to their bytes; anything else as it is.
fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match (
            raw[i],
            raw.get(i + 1).and_then(|b| hex(*b)),
            raw.get(i + 2).and_then(|b| hex(*b)),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push(high * 16 + low);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// One log line per request: method, route (the pattern, never the ids or query in
/// it), status, milliseconds and a request id, which the answer carries as
/// `X-Request-Id` (a caller's own is kept when it is a plain token of at most 64
/// characters). Nothing of a body is logged, so no patient data.
async fn log_request(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "(no route)".to_owned());
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..16].to_owned());
    let mut response = next.run(request).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(target: "slotguard::request", %method, %route, status, ms = format_args!("{ms:.1}"), request_id = %id, "request");
    if let Ok(value) = axum::http::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Reads a request's whole body (at most `BODY_LIMIT_BYTES`) within the body timeout
/// before the request takes a handling permit in `shed_load`: a client sending its
/// body slowly holds a connection, never a permit, and is answered 408 when its time
/// is up.
async fn read_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let timeout = state.limits.limits().body_timeout;
    let (parts, body) = request.into_parts();
    let refusal =
        match tokio::time::timeout(timeout, axum::body::to_bytes(body, BODY_LIMIT_BYTES)).await {
            Ok(Ok(bytes)) => {
                let request = Request::from_parts(parts, axum::body::Body::from(bytes));
                return next.run(request).await;
            }
            Ok(Err(e)) if too_large(&e) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("The body is larger than {BODY_LIMIT_BYTES} bytes."),
            ),
            Ok(Err(e)) => (
                StatusCode::BAD_REQUEST,
                "malformed_body",
                format!("The body could not be read: {e}."),
            ),
            Err(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                "The body did not arrive within {} seconds of the headers; send it again, whole.",
                timeout.as_secs_f64()
            ),
            ),
        };
    let (status, code, message) = refusal;
    let mut response = if is_api(parts.uri.path()) {
        ApiError::new(status, code, message).into_response()
    } else {
        crate::web::PageError::new(status, message).into_response()
    };
    // The rest of the body is not read: the connection cannot carry another request.
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// Whether reading a body failed for passing the size limit.
fn too_large(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Past `MAX_IN_FLIGHT` concurrent requests, answer 503 at once rather than queue
/// without bound.
async fn shed_load(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.in_flight.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "The server is at capacity; retry shortly.",
        )
        .into_response(),
    }
}

async fn healthz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let store = state.bookings.store();
    store.ping().await?;
    let latency = state.detector.latency();
    Ok(Json(json!({
        "status": "ok",
        "store": store.backend(),
        "detectionLatencyMs": {
            "incidents": latency.count,
            "p50": latency.p50_ms,
            "p99": latency.p99_ms,
            "max": latency.max_ms,
        },
    })))
}

/// Serves the API on `listener` until `shutdown` completes; requests under way then
/// are finished before this returns. Headers must arrive within the header timeout
/// and connections are capped (`server`), bodies within the body timeout
/// (`read_body`): `[limits]` in slotguard.toml.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Live dashboard streams never end by themselves: they are told to at shutdown.
    let closing = state.web.closing.clone();
    let connections = server::ConnectionLimits::of(state.limits.limits());
    server::serve(listener, router(state), connections, async move {
        shutdown.await;
        closing.send_replace(true);
    })
    .await
}

/// Serves [`metrics_router`] on `listener` until `shutdown` completes.
pub async fn serve_metrics(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let connections = server::ConnectionLimits::of(state.limits.limits());
    server::serve(listener, metrics_router(state), connections, shutdown).await
}
