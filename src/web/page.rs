//! What every page shares: the frame around it ([`Chrome`]), the error page
//! ([`PageError`], the one place failures become HTML answers), forms and query
//! strings read as text and parsed field by field, and times in the clinic's zone.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use chrono_tz::Tz;

use super::WebState;
use crate::audit::runner::Auditor;
use crate::booking::BookingError;
use crate::domain::{Clinic, ClinicId, FieldError, KnownClinic, KnownClinics};
use crate::store::StoreError;

/// The frame of every page: title, navigation, who is logged in, the logout form.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub title: String,
    /// The navigation entry to mark as current: `overview`, `incidents`, …
    pub nav: &'static str,
    pub email: String,
    pub role: &'static str,
    pub is_admin: bool,
    pub csrf: String,
}

pub fn render<T: Template>(template: &T) -> Result<Html<String>, PageError> {
    template.render().map(Html).map_err(|e| {
        tracing::error!(error = %e, "a page could not be rendered");
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "This page could not be shown. It has been logged.",
        )
    })
}

/// A page that cannot be shown, and why, in words a person can act on.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
}

#[derive(Template)]
#[template(path = "pages/error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("There is no such {what}."))
    }

    /// Someone logged in asks for what their role or clinics do not cover.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Your account may not do that. Ask an admin if you need it.",
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("Error"),
            message: &self.message,
        };
        match page.render() {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(_) => (self.status, self.message).into_response(),
        }
    }
}

impl From<FieldError> for PageError {
    fn from(e: FieldError) -> Self {
        Self::bad_request(format!("{} {}.", e.field, e.message))
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::not_found(what.name()),
            StoreError::AlreadyExists(what) => {
                Self::new(StatusCode::CONFLICT, format!("That {what} already exists."))
            }
            StoreError::InvalidIncidentMove { from, to } => Self::new(
                StatusCode::CONFLICT,
                format!("An incident that is {from} cannot become {to}."),
            ),
            StoreError::Changed(what) => {
                Self::new(StatusCode::CONFLICT, format!("{what}; reload and retry."))
            }
            other => {
                tracing::error!(cause = %other, "a page failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on our side. It has been logged; please retry.",
                )
            }
        }
    }
}

impl From<BookingError> for PageError {
    fn from(e: BookingError) -> Self {
        match e {
            BookingError::Store(s) => s.into(),
            other => Self::new(StatusCode::CONFLICT, other.to_string()),
        }
    }
}

/// Name–value pairs, as text: a form's body or a query string.
#[derive(Debug, Clone, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(encoded: &[u8]) -> Result<Self, PageError> {
        serde_urlencoded::from_bytes(encoded)
            .map(Form)
            .map_err(|_| PageError::bad_request("The form or query string is malformed."))
    }

    /// Reads a urlencoded body (the router's body limit applies).
    pub async fn read(req: Request, state: &WebState) -> Result<Self, Response> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            PageError::new(rejection.status(), "The form could not be read.").into_response()
        })?;
        Self::parse(&bytes).map_err(IntoResponse::into_response)
    }

    /// The value of `name`; an empty value counts as absent (an unset form field).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every non-empty value of a repeated field.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// An optional field parsed into its type; a value that does not parse is a 400
    /// naming it.
    pub fn parse_opt<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str, &str) -> Result<T, FieldError>,
    ) -> Result<Option<T>, PageError> {
        Ok(self.get(name).map(|raw| parse(name, raw)).transpose()?)
    }

    pub fn require(&self, name: &str) -> Result<&str, PageError> {
        self.get(name)
            .ok_or_else(|| PageError::bad_request(format!("{name} is required.")))
    }
}

/// A page's query string.
pub struct Query(pub Form);

impl std::ops::Deref for Query {
    type Target = Form;
    fn deref(&self) -> &Form {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, PageError> {
        Form::parse(parts.uri.query().unwrap_or("").as_bytes()).map(Query)
    }
}

/// An instant as a clinic sees it: `10:30 IST`, with the exact UTC instant kept for
/// `<time datetime>` and the hover title.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct When {
    utc: DateTime<Utc>,
    tz: Tz,
}

impl When {
    pub fn new(utc: DateTime<Utc>, tz: Tz) -> Self {
        Self { utc, tz }
    }

    pub fn iso(&self) -> String {
        self.utc.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    pub fn exact(&self) -> String {
        self.utc.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    }

    /// `1 Dec 10:30 IST`
    pub fn short(&self) -> String {
        self.utc
            .with_timezone(&self.tz)
            .format("%-d %b %H:%M %Z")
            .to_string()
    }

    /// `10:30 IST`
    pub fn clock(&self) -> String {
        self.utc
            .with_timezone(&self.tz)
            .format("%H:%M %Z")
            .to_string()
    }
}

/// The clinics a page talks about: the audit's known clinics
/// ([`crate::audit::runner::Auditor::known_clinics`]), registered or only seen in
/// watched data (those in their watch source's zone until registered), so a page
/// shows a clinic in the zone it is audited in.
#[derive(Debug, Clone, Default)]
pub struct Clinics {
    known: KnownClinics,
}

impl Clinics {
    pub async fn load(auditor: &Auditor) -> Result<Self, PageError> {
        Ok(Self {
            known: auditor.known_clinics().await?,
        })
    }

    pub fn get(&self, id: &ClinicId) -> Option<&Clinic> {
        self.known.get(id).map(|k| &k.clinic)
    }

    /// The clinic's zone; one known only from an incident keeps the default.
    pub fn tz(&self, id: &ClinicId) -> Tz {
        self.get(id)
            .map(|c| c.timezone)
            .unwrap_or(Clinic::DEFAULT_TIMEZONE)
    }

    pub fn name(&self, id: &ClinicId) -> String {
        self.get(id)
            .map(|c| c.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    pub fn when(&self, id: &ClinicId, utc: DateTime<Utc>) -> When {
        When::new(utc, self.tz(id))
    }

    /// The clinic's local date at `now`.
    pub fn today(&self, id: &ClinicId, now: DateTime<Utc>) -> NaiveDate {
        now.with_timezone(&self.tz(id)).date_naive()
    }

    /// Every clinic the audit knows of, by id.
    pub fn known(&self) -> impl Iterator<Item = &KnownClinic> {
        self.known.iter()
    }

    pub fn get_known(&self, id: &ClinicId) -> Option<&KnownClinic> {
        self.known.get(id)
    }

    pub fn all_known(&self) -> &KnownClinics {
        &self.known
    }
}

/// The id in a page's path (`/incidents/{id}`): bounded, printable text, or a 404
/// page; never axum's plain-text rejection.
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        let axum::extract::Path(id) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| PageError::not_found("page"))?;
        if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
            return Err(PageError::not_found("page"));
        }
        Ok(PathId(id))
    }
}
