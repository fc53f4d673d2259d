//! Who is at the keyboard: the login form, the session cookie (HttpOnly,
//! SameSite=Strict; only a SHA-256 of its secret is stored), idle and absolute expiry,
//! logout, the CSRF defence of every form, and the login throttle.
//!
//! CSRF: every state-changing request is a POST that must carry the session's token
//! (a hidden `csrf` field, or the `X-CSRF-Token` header for htmx), and, when the
//! browser says where it comes from (`Sec-Fetch-Site`, `Origin`), come from this site.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;

use askama::Template;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Duration, Utc};

use super::page::{render, Chrome, Form, PageError};
use super::{passwords, WebState};
use crate::auth::{same_secret, sha256_hex};
use crate::domain::{Email, Staff, StaffUser};
use crate::store::dashboard::StaffSession;

pub const COOKIE: &str = "sg_session";
/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::hours(8);
/// And this long after login, whatever the activity.
pub const ABSOLUTE: Duration = Duration::hours(24);
/// `last_seen_at` is written at most this often.
const TOUCH_EVERY: Duration = Duration::seconds(60);

/// Failed logins counted over this window.
const THROTTLE_WINDOW: Duration = Duration::minutes(15);
/// Failures within the window after which one account is refused (429).
pub const FAILURES_PER_ACCOUNT: usize = 5;
/// Failures within the window after which one client address is refused (429).
pub const FAILURES_PER_ADDRESS: usize = 20;
/// Keys kept before old ones are dropped, so a flood cannot grow memory unbounded.
const THROTTLE_KEYS: usize = 100_000;

/// Failed logins per account and per client address, in this process.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, VecDeque<DateTime<Utc>>>>,
}

impl Throttle {
    /// When the first of `keys` that is over its limit may try again.
    fn refused_until(&self, keys: &[(String, usize)], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter().find_map(|(key, limit)| {
            let recent = failures.get_mut(key)?;
            while recent.front().is_some_and(|t| *t <= now - THROTTLE_WINDOW) {
                recent.pop_front();
            }
            (recent.len() >= *limit).then(|| recent[recent.len() - limit] + THROTTLE_WINDOW)
        })
    }

    fn fail(&self, keys: &[(String, usize)], now: DateTime<Utc>) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > THROTTLE_KEYS {
            failures.retain(|_, times| times.back().is_some_and(|t| *t > now - THROTTLE_WINDOW));
        }
        for (key, limit) in keys {
            let times = failures.entry(key.clone()).or_default();
            times.push_back(now);
            while times.len() > *limit {
                times.pop_front();
            }
        }
    }

    fn forget(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// A logged-in person and their session.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub staff: Staff,
    pub csrf: String,
    id_hash: String,
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Whether a request's own headers say it comes from this site. A browser sends
/// `Sec-Fetch-Site` (and `Origin` on POST); a program may send neither, and then the
/// CSRF token alone decides.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site == "same-origin";
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    origin_host.is_some() && origin_host == host
}

fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Why a request has no session: pages send the browser to the login form, htmx
/// fragments and the event stream get 401 (and htmx is told to go there).
fn login_required(parts: &Parts) -> Response {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if parts.headers.contains_key("hx-request")
        || path.starts_with("/events")
        || path.starts_with("/fragments/")
    {
        let mut response = PageError::new(
            StatusCode::UNAUTHORIZED,
            "Your session has ended. Log in again.",
        )
        .into_response();
        response
            .headers_mut()
            .insert("hx-redirect", HeaderValue::from_static("/login"));
        return response;
    }
    let next: String = url_encode(path);
    Redirect::to(&format!("/login?next={next}")).into_response()
}

fn url_encode(raw: &str) -> String {
    serde_urlencoded::to_string([("", raw)])
        .map(|s| s.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// A session lasts until logout, `IDLE` without a request, or `ABSOLUTE` after login,
/// and only while its account is enabled.
fn alive(session: &StaffSession, user: &StaffUser, now: DateTime<Utc>) -> bool {
    session.ended_at.is_none()
        && user.disabled_at.is_none()
        && now < session.expires_at
        && now < session.last_seen_at + IDLE
}

impl Visitor {
    /// The frame of a page this visitor is shown, with `nav` marked as current.
    pub fn chrome(&self, nav: &'static str, title: impl Into<String>) -> Chrome {
        Chrome {
            title: title.into(),
            nav,
            email: self.staff.email.to_string(),
            role: self.staff.role.as_str(),
            is_admin: self.staff.is_admin(),
            csrf: self.csrf.clone(),
        }
    }

    /// Whether the session still holds (for a long-lived stream).
    pub async fn is_alive(&self, state: &WebState) -> bool {
        match state.store().session(&self.id_hash).await {
            Ok(Some((session, user))) => alive(&session, &user, state.bookings.now()),
            Ok(None) => false,
            // A database hiccup does not end anyone's session.
            Err(_) => true,
        }
    }
}

impl FromRequestParts<WebState> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Response> {
        let Some(secret) = cookie_value(&parts.headers, COOKIE) else {
            return Err(login_required(parts));
        };
        let id_hash = sha256_hex(secret.as_bytes());
        let store = state.store();
        let found = store
            .session(&id_hash)
            .await
            .map_err(|e| PageError::from(e).into_response())?;
        let now = state.bookings.now();
        let Some((session, user)) = found else {
            return Err(login_required(parts));
        };
        if !alive(&session, &user, now) {
            let _ = store.end_session(&id_hash, now).await;
            return Err(login_required(parts));
        }
        if now >= session.last_seen_at + TOUCH_EVERY {
            if let Err(e) = store.touch_session(&id_hash, now).await {
                tracing::warn!(error = %e, "could not record a session's activity");
            }
        }
        Ok(Visitor {
            staff: Staff::of(&user),
            csrf: session.csrf_token,
            id_hash,
        })
    }
}

/// A POSTed form from a logged-in person, its CSRF token checked.
pub struct StaffForm {
    pub visitor: Visitor,
    pub form: Form,
}

impl FromRequest<WebState> for StaffForm {
    type Rejection = Response;

    async fn from_request(req: Request, state: &WebState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let visitor = Visitor::from_request_parts(&mut parts, state).await?;
        let forged = || {
            PageError::new(
                StatusCode::FORBIDDEN,
                "This form came from another site or has expired. Reload the page and try again.",
            )
            .into_response()
        };
        if !same_origin(&parts.headers) {
            return Err(forged());
        }
        let header_token = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let form = Form::read(Request::from_parts(parts, body), state).await?;
        let token = header_token.or_else(|| form.get("csrf").map(str::to_owned));
        if !token.is_some_and(|t| same_secret(&t, &visitor.csrf)) {
            return Err(forged());
        }
        Ok(StaffForm { visitor, form })
    }
}

#[derive(Template)]
#[template(path = "pages/login.html")]
struct LoginPage {
    next: String,
    email: String,
    problem: Option<String>,
}

/// Where to go after logging in: a path on this site, never another site.
fn safe_next(raw: Option<&str>) -> String {
    match raw {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && p.len() <= 2048
                && p.chars().all(|c| c.is_ascii_graphic()) =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

pub async fn login_page(query: super::page::Query) -> Result<Response, PageError> {
    let page = LoginPage {
        next: safe_next(query.get("next")),
        email: String::new(),
        problem: None,
    };
    Ok(render(&page)?.into_response())
}

/// The peer's address (a proxy in front of slotguard makes this the proxy's; see
/// docs/DASHBOARD.md).
fn client_address(connect: Option<SocketAddr>) -> String {
    connect
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// `POST /login`: the same answer, after the same work, for an unknown email, a
/// disabled account and a wrong password; 429 past the throttle's limits.
pub async fn login(State(state): State<WebState>, req: Request) -> Result<Response, PageError> {
    let connect = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let headers = req.headers().clone();
    if !same_origin(&headers) {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "This login form came from another site.",
        ));
    }
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p == "https");
    let form = Form::read(req, &state)
        .await
        .map_err(|_| PageError::bad_request("The form could not be read."))?;
    let next = safe_next(form.get("next"));
    let raw_email = form.get("email").unwrap_or("").to_owned();
    let password = form.get("password").unwrap_or("");
    let again = |status: StatusCode, problem: &str| -> Result<Response, PageError> {
        let page = LoginPage {
            next: next.clone(),
            email: raw_email.clone(),
            problem: Some(problem.to_owned()),
        };
        Ok((status, render(&page)?).into_response())
    };
    let Ok(email) = Email::parse("email", &raw_email) else {
        return again(
            StatusCode::BAD_REQUEST,
            "Enter your email address, like asha@clinic.example.",
        );
    };
    if password.is_empty() || password.chars().count() > passwords::MAX_CHARS {
        return again(StatusCode::BAD_REQUEST, "Enter your password.");
    }
    let now = state.bookings.now();
    let account = format!("account:{email}");
    let keys = [
        (account.clone(), FAILURES_PER_ACCOUNT),
        (
            format!("address:{}", client_address(connect)),
            FAILURES_PER_ADDRESS,
        ),
    ];
    if let Some(until) = state.throttle.refused_until(&keys, now) {
        let wait = (until - now).num_seconds().max(1);
        let mut response = again(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Too many failed logins. Wait {} minutes and try again.",
                (wait + 59) / 60
            ),
        )?;
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(response);
    }
    let user = state.store().staff_user_by_email(&email).await?;
    let usable = user.as_ref().filter(|u| u.disabled_at.is_none());
    // argon2 is slow on purpose: off the async threads.
    let (stored, typed) = (usable.map(|u| u.password_hash.clone()), password.to_owned());
    let ok = tokio::task::spawn_blocking(move || passwords::verify(stored.as_deref(), &typed))
        .await
        .unwrap_or(false);
    let Some(user) = usable.filter(|_| ok) else {
        state.throttle.fail(&keys, now);
        tracing::info!(target: "slotguard::login", "failed login");
        return again(StatusCode::UNAUTHORIZED, "Wrong email or password.");
    };
    state.throttle.forget(&account);
    let secret = random_secret();
    let session = StaffSession {
        id_hash: sha256_hex(secret.as_bytes()),
        user_id: user.id.clone(),
        csrf_token: random_secret(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + ABSOLUTE,
        ended_at: None,
    };
    state.store().insert_session(&session).await?;
    tracing::info!(target: "slotguard::login", user = %user.id, "logged in");
    let cookie = format!(
        "{COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        ABSOLUTE.num_seconds(),
        if secure { "; Secure" } else { "" }
    );
    let mut response = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// `POST /logout`: ends the session in the database and clears the cookie.
pub async fn logout(State(state): State<WebState>, form: StaffForm) -> Result<Response, PageError> {
    let now = state.bookings.now();
    state
        .store()
        .end_session(&form.visitor.id_hash, now)
        .await?;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sg_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_refuses_an_account_after_five_failures_for_fifteen_minutes() {
        let throttle = Throttle::default();
        let t0 = DateTime::parse_from_rfc3339("2026-12-01T04:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let keys = [("account:a@b.example".to_owned(), FAILURES_PER_ACCOUNT)];
        for i in 0..FAILURES_PER_ACCOUNT {
            assert!(throttle.refused_until(&keys, t0).is_none(), "failure {i}");
            throttle.fail(&keys, t0);
        }
        assert_eq!(
            throttle.refused_until(&keys, t0),
            Some(t0 + THROTTLE_WINDOW)
        );
        assert!(throttle
            .refused_until(&keys, t0 + THROTTLE_WINDOW)
            .is_none());
    }

    #[test]
    fn only_same_site_requests_pass_the_origin_check() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&headers), "a program that says nothing");
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&headers));
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&headers));
    }

    #[test]
    fn after_login_only_paths_on_this_site_are_followed() {
        assert_eq!(
            safe_next(Some("/incidents?state=open")),
            "/incidents?state=open"
        );
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "",
            "/incidents\r\nSet-Cookie: x=1",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
    }
}
