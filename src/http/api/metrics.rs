//! `GET /api/v1/stats`: the clinic's four numbers over a range of local dates; and
//! `GET /metrics`: the Prometheus page, with an admin key or, on the metrics
//! listener, without one.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::super::error::ApiError;
use super::super::extract::QueryParams;
use super::super::AppState;
use crate::auth::{Action, Principal};
use crate::domain::schedule::parse_date;
use crate::domain::ClinicId;
use crate::metrics::exposition::CONTENT_TYPE;
use crate::metrics::scrape;
use crate::metrics::stats::{self, DateRange, Stats};

/// `?clinicId&from&to`: dates `YYYY-MM-DD`, local to each clinic, both included.
/// Without `clinicId` (admin keys only) every clinic is counted; a clinic only seen
/// in watched documents is counted like a registered one.
pub async fn stats(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams,
) -> Result<Json<Stats>, ApiError> {
    let clinic = query.parse("clinicId", ClinicId::parse)?;
    let range = DateRange::new(
        parse_date("from", query.require("from")?)?,
        parse_date("to", query.require("to")?)?,
    )?;
    principal.may(Action::RunClinicDay, clinic.as_ref())?;
    if let Some(clinic) = &clinic {
        super::known_clinic(&state, clinic).await?;
    }
    let rows = state
        .bookings
        .store()
        .stats_rows(clinic.as_ref(), range.from(), range.to())
        .await?;
    Ok(Json(stats::stats(clinic, range, &rows)))
}

/// `GET /metrics` on the API's address: admin keys only.
pub async fn metrics(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.may(Action::ReadMetrics, None)?;
    exposition(&state).await
}

/// `GET /metrics` on the metrics listener, which is served without keys.
pub async fn metrics_unkeyed(State(state): State<AppState>) -> Result<Response, ApiError> {
    exposition(&state).await
}

async fn exposition(state: &AppState) -> Result<Response, ApiError> {
    let bookings = &state.bookings;
    let text = scrape::gather(bookings.store(), bookings.metrics(), &state.detector).await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}
