//! Audit runs: the record of each clinic's audited days, and an audit on demand.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::super::error::ApiError;
use super::super::extract::{required, JsonBody, QueryParams};
use super::super::AppState;
use crate::audit::{date_range, findings};
use crate::auth::{Action, Principal};
use crate::domain::schedule::parse_date;
use crate::domain::{ClinicId, FieldError};
use crate::store::audit::Trigger;
use crate::store::StoreError;

/// `GET /audits?clinicId&date` or `?clinicId&from&to`: the runs of those local dates,
/// oldest first. Without `clinicId` (admin keys), every clinic's.
pub async fn runs(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let clinic = query
        .get("clinicId")
        .map(|c| ClinicId::parse("clinicId", c))
        .transpose()?;
    principal.may(Action::RunClinicDay, clinic.as_ref())?;
    let range = date_range(query.get("date"), query.get("from"), query.get("to"))?
        .ok_or_else(|| FieldError::new("date", "is required (or from and to)"))?;
    let runs = state
        .auditor
        .store()
        .audit_runs(clinic.as_ref(), range.from(), range.to())
        .await?;
    Ok(Json(json!({"runs": runs})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct AuditBody {
    clinic_id: Option<String>,
    date: Option<String>,
}

/// `POST /audits {clinicId, date}`: audits that local day of a known clinic
/// (registered, or only seen in watched documents) now and answers with the
/// recorded run and the double bookings found. May repeat; does not stand in for
/// the nightly run.
pub async fn audit_now(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody<AuditBody>,
) -> Result<Json<Value>, ApiError> {
    let body = body.value;
    let clinic_id = ClinicId::parse("clinicId", &required("clinicId", body.clinic_id)?)?;
    let date = parse_date("date", &required("date", body.date)?)?;
    principal.may(Action::RunClinicDay, Some(&clinic_id))?;
    let clinic = super::known_clinic(&state, &clinic_id).await?.clinic;
    let outcome = state
        .auditor
        .audit(&clinic, date, Trigger::OnDemand)
        .await?
        .ok_or(StoreError::Changed("the audit could not be recorded"))?;
    Ok(Json(json!({
        "run": outcome.run,
        "findings": findings(&outcome.duplicates),
    })))
}
