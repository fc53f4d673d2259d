//! `GET /reports/weekly`: a week's report as HTML, JSON or CSV; weeks already sent
//! read the same every time, and reading never stores a report nor claims its send.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::super::error::ApiError;
use super::super::extract::QueryParams;
use super::super::AppState;
use crate::audit::report::{self, Format};
use crate::auth::{Action, Principal};
use crate::domain::{ClinicId, FieldError};

/// `?week=2026-W47&clinicId=kochi&format=html|json|csv`; every parameter optional:
/// the last full week, every clinic (admin keys), HTML.
pub async fn weekly(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams,
) -> Result<Response, ApiError> {
    let clinic_id = query.parse("clinicId", ClinicId::parse)?;
    let format = match query.get("format") {
        None => Format::Html,
        Some(raw) => Format::parse(raw)
            .ok_or_else(|| FieldError::new("format", "must be html, json or csv"))?,
    };
    principal.may(Action::RunClinicDay, clinic_id.as_ref())?;
    let known = state.auditor.known_clinics().await?;
    let clinic = match &clinic_id {
        Some(id) => Some(known.get(id).ok_or_else(|| ApiError::unknown_clinic(id))?),
        None => None,
    };
    let store = state.bookings.store();
    let now = state.bookings.now();
    let monday = report::week_asked(query.get("week"), clinic.map(|k| &k.clinic), now)?;
    if let Some(refusal) = report::week_in_range(&known, clinic, monday, now) {
        return Err(refusal.into());
    }
    let report = report::weekly(store, clinic.map(|k| &k.clinic), monday, now).await?;
    Ok((
        [(header::CONTENT_TYPE, format.content_type())],
        report.render(format),
    )
        .into_response())
}
