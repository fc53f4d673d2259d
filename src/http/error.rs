//! The one place failures become HTTP answers: every error is
//! `{"error": {"code", "message", "details"}}` with the status docs/PRODUCT.md gives it.
//! Internal causes are logged here once and shown to nobody.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::auth::Denied;
use crate::booking::BookingError;
use crate::domain::{Entity, FieldError, Refusal};
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: json!({}),
        }
    }

    fn with_field(mut self, field: &str) -> Self {
        self.details = json!({ "field": field });
        self
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_body", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Send a valid API key as 'Authorization: Bearer <key>'.",
        )
    }

    /// A clinic neither registered nor named by any watched document.
    pub fn unknown_clinic(id: &crate::domain::ClinicId) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "clinic_not_found",
            format!("No clinic {id}: it is not registered and no watched document names it."),
        )
    }

    pub fn not_found_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "There is no such endpoint.",
        )
    }

    /// The error object without the envelope, for `validate`'s advisory answer.
    pub fn body(&self) -> Value {
        json!({"code": self.code, "message": self.message, "details": self.details})
    }

    /// 429 with `Retry-After`: over a rate limit, for `wait`.
    pub fn rate_limited(message: &str, wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut error = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        error.details = json!({ "retryAfterSeconds": seconds });
        error
    }

    fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Something went wrong on our side. It has been logged; please retry.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut response =
            (self.status, axum::Json(json!({ "error": self.body() }))).into_response();
        if unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(wait) = self.details["retryAfterSeconds"].as_u64() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        }
        response
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{} {}.", e.field, e.message),
        )
        .with_field(&e.field)
    }
}

impl From<Denied> for ApiError {
    fn from(e: Denied) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        use StatusCode as S;
        let (status, field) = match r {
            Refusal::SlotTaken
            | Refusal::TokenTaken
            | Refusal::NoSlotAvailable
            | Refusal::NoWalkInSlot => (S::CONFLICT, None),
            Refusal::ReservedForWalkIns(_) => (S::CONFLICT, Some("slotIndex")),
            Refusal::DoctorUnavailable(_) | Refusal::DateInPast(_) | Refusal::DateTooFar => {
                (S::UNPROCESSABLE_ENTITY, Some("date"))
            }
            Refusal::SlotOutOfRange(_) | Refusal::SlotStarted(_) | Refusal::SlotTooSoon { .. } => {
                (S::UNPROCESSABLE_ENTITY, Some("slotIndex"))
            }
        };
        let error = Self::new(status, r.code(), r.to_string());
        match field {
            Some(f) => error.with_field(f),
            None => error,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        use StatusCode as S;
        match e {
            StoreError::Refused(r) => r.into(),
            StoreError::NotFound(what) => Self::new(
                S::NOT_FOUND,
                match what {
                    Entity::Clinic => "clinic_not_found",
                    Entity::Doctor => "doctor_not_found",
                    Entity::Appointment => "appointment_not_found",
                    Entity::Incident => "incident_not_found",
                    Entity::Document => "document_not_found",
                    Entity::Silence => "silence_not_found",
                    Entity::Notification | Entity::User | Entity::Record => "not_found",
                },
                format!("No such {what}."),
            ),
            StoreError::AlreadyExists(what) => Self::new(
                S::CONFLICT,
                "already_exists",
                format!("A {what} with this id already exists."),
            )
            .with_field("id"),
            StoreError::InvalidTransition { from, to } => {
                let mut error = Self::new(
                    S::UNPROCESSABLE_ENTITY,
                    "invalid_transition",
                    format!("An appointment that is {from} cannot become {to}."),
                );
                error.details = json!({"field": "status", "from": from, "to": to});
                error
            }
            StoreError::InvalidIncidentMove { from, to } => {
                let mut error = Self::new(
                    S::UNPROCESSABLE_ENTITY,
                    "invalid_transition",
                    format!("An incident that is {from} cannot become {to}."),
                );
                error.details = json!({"from": from, "to": to});
                error
            }
            StoreError::Changed(what) => Self::new(
                S::CONFLICT,
                "appointment_changed",
                format!("{what}; reload it and retry."),
            ),
            StoreError::IdempotencyKeyUsed => BookingError::IdempotencyInFlight.into(),
            StoreError::Database(ref db) if is_unavailable(db) => {
                tracing::warn!(cause = %db, "database unavailable");
                Self::new(
                    S::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "The database is busy or unreachable; please retry.",
                )
            }
            other => Self::internal(&other),
        }
    }
}

fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
    )
}

impl From<BookingError> for ApiError {
    fn from(e: BookingError) -> Self {
        match e {
            BookingError::Store(s) => s.into(),
            BookingError::IdempotencyKeyReused => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                e.to_string(),
            )
            .with_field("Idempotency-Key"),
            BookingError::IdempotencyInFlight => {
                Self::new(StatusCode::CONFLICT, "idempotency_in_flight", e.to_string())
            }
        }
    }
}
