//! Booking, walk-ins, validation, availability, status changes, cancel, reschedule.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::super::error::ApiError;
use super::super::extract::{required, JsonBody, QueryParams};
use super::super::AppState;
use crate::auth::{Action, Principal};
use crate::booking::{idempotency, AdvanceRequest, Booked, WalkInRequest};
use crate::domain::schedule::parse_date;
use crate::domain::text::{parse_line, parse_phone};
use crate::domain::{
    Appointment, AppointmentId, ClinicId, DoctorId, FieldError, Patient, SlotIndex, Status,
};
use crate::store::{AppointmentFilter, IdempotencyRecord};

/// Most appointments one list request returns.
const MAX_LIST: u32 = 5000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BookingBody {
    clinic_id: Option<String>,
    doctor_id: Option<String>,
    date: Option<String>,
    slot_index: Option<i64>,
    patient_name: Option<String>,
    patient_phone: Option<String>,
    booked_via: Option<String>,
}

fn patient(
    name: Option<String>,
    phone: Option<String>,
    booked_via: Option<String>,
    default_via: &str,
) -> Result<Patient, FieldError> {
    Ok(Patient {
        name: parse_line("patientName", &required("patientName", name)?, 200)?,
        phone: phone.map(|p| parse_phone("patientPhone", &p)).transpose()?,
        booked_via: match booked_via {
            Some(via) => parse_line("bookedVia", &via, 50)?,
            None => default_via.to_owned(),
        },
    })
}

impl BookingBody {
    fn parse(self) -> Result<AdvanceRequest, FieldError> {
        Ok(AdvanceRequest {
            clinic_id: ClinicId::parse("clinicId", &required("clinicId", self.clinic_id)?)?,
            doctor_id: DoctorId::parse("doctorId", &required("doctorId", self.doctor_id)?)?,
            date: parse_date("date", &required("date", self.date)?)?,
            slot: self
                .slot_index
                .map(|s| SlotIndex::parse("slotIndex", s))
                .transpose()?,
            patient: patient(
                self.patient_name,
                self.patient_phone,
                self.booked_via,
                "Online",
            )?,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalkInBody {
    clinic_id: Option<String>,
    doctor_id: Option<String>,
    patient_name: Option<String>,
    patient_phone: Option<String>,
    booked_via: Option<String>,
    force: Option<bool>,
}

impl WalkInBody {
    fn parse(self) -> Result<WalkInRequest, FieldError> {
        Ok(WalkInRequest {
            clinic_id: ClinicId::parse("clinicId", &required("clinicId", self.clinic_id)?)?,
            doctor_id: DoctorId::parse("doctorId", &required("doctorId", self.doctor_id)?)?,
            patient: patient(
                self.patient_name,
                self.patient_phone,
                self.booked_via,
                "Walk-in",
            )?,
            force: self.force.unwrap_or(false),
        })
    }
}

fn idempotency_key(
    headers: &HeaderMap,
    principal: &Principal,
    route: &str,
    body: &Value,
) -> Result<Option<IdempotencyRecord>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let raw = raw
        .to_str()
        .map_err(|_| FieldError::new("Idempotency-Key", "must be visible ASCII"))?;
    Ok(Some(idempotency::record(
        &principal.key_id,
        raw,
        route,
        body,
    )?))
}

fn booked_response(booked: Booked) -> Response {
    match booked {
        Booked::Fresh(appointment) => (StatusCode::CREATED, Json(appointment)).into_response(),
        Booked::Replayed(stored) => {
            let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
            let mut response = (
                status,
                [(
                    axum::http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                stored.body,
            )
                .into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            response
        }
    }
}

/// `POST /api/v1/appointments` and its alias `POST /api/book-appointment`.
pub async fn book(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: JsonBody<BookingBody>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers, &principal, "book", &body.document)?;
    let req = body.value.parse()?;
    principal.may(Action::Book, Some(&req.clinic_id))?;
    let booked = state.bookings.book(&req, key.as_ref()).await?;
    Ok(booked_response(booked))
}

pub async fn walk_in(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: JsonBody<WalkInBody>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers, &principal, "walk-in", &body.document)?;
    let req = body.value.parse()?;
    principal.may(Action::Book, Some(&req.clinic_id))?;
    if req.force {
        principal.may(Action::RunClinicDay, Some(&req.clinic_id))?;
    }
    let booked = state.bookings.walk_in(&req, key.as_ref()).await?;
    Ok(booked_response(booked))
}

/// Advisory: answers what a booking with this body would meet now. Only a body
/// that is not JSON, or a key that may not book, is an HTTP error.
pub async fn validate(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody<BookingBody>,
) -> Result<Json<Value>, ApiError> {
    let outcome: Result<Value, ApiError> = async {
        let req = body.value.parse()?;
        principal.may(Action::Book, Some(&req.clinic_id))?;
        let planned = state.bookings.validate(&req).await?;
        Ok(json!({
            "valid": true,
            "slotIndex": planned.slot.value(),
            "time": planned.time.format("%H:%M").to_string(),
        }))
    }
    .await;
    match outcome {
        Ok(answer) => Ok(Json(answer)),
        Err(e)
            if matches!(
                e.status,
                StatusCode::FORBIDDEN
                    | StatusCode::INTERNAL_SERVER_ERROR
                    | StatusCode::SERVICE_UNAVAILABLE
            ) =>
        {
            Err(e)
        }
        Err(e) => {
            let mut error = e.body();
            error["status"] = json!(e.status.as_u16());
            Ok(Json(json!({"valid": false, "error": error})))
        }
    }
}

pub async fn availability(
    State(state): State<AppState>,
    principal: Principal,
    Path((clinic_id, doctor_id)): Path<(String, String)>,
    query: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let clinic_id = ClinicId::parse("clinicId", &clinic_id)?;
    let doctor_id = DoctorId::parse("doctorId", &doctor_id)?;
    let date = parse_date("date", query.require("date")?)?;
    principal.may(Action::Book, Some(&clinic_id))?;
    let sessions = state
        .bookings
        .availability(&clinic_id, &doctor_id, date)
        .await?;
    Ok(Json(json!({
        "clinicId": clinic_id,
        "doctorId": doctor_id,
        "date": date,
        "sessions": sessions,
    })))
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let filter = AppointmentFilter {
        clinic_id: query
            .get("clinicId")
            .map(|c| ClinicId::parse("clinicId", c))
            .transpose()?,
        doctor_id: query
            .get("doctorId")
            .map(|d| DoctorId::parse("doctorId", d))
            .transpose()?,
        date: query
            .get("date")
            .map(|d| parse_date("date", d))
            .transpose()?,
        status: query
            .get("status")
            .map(|s| Status::parse("status", s))
            .transpose()?,
        limit: match query.get("limit") {
            Some(l) => l
                .parse()
                .ok()
                .filter(|l| (1..=MAX_LIST).contains(l))
                .ok_or_else(|| {
                    FieldError::new("limit", format!("must be a number from 1 to {MAX_LIST}"))
                })?,
            None => MAX_LIST,
        },
    };
    principal.may(Action::RunClinicDay, filter.clinic_id.as_ref())?;
    let appointments = state.bookings.appointments(&filter).await?;
    Ok(Json(json!({ "appointments": appointments })))
}

/// Loads an appointment the principal may `action` on; 404 before 403 would tell a
/// stranger which ids exist, so an unknown id and a foreign one both need a key first.
async fn load(
    state: &AppState,
    principal: &Principal,
    id: &str,
    action: Action,
) -> Result<Appointment, ApiError> {
    let id = AppointmentId::parse("id", id)?;
    let appointment = state.bookings.appointment(&id).await?;
    principal.may(action, Some(&appointment.clinic_id))?;
    Ok(appointment)
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Appointment>, ApiError> {
    Ok(Json(load(&state, &principal, &id, Action::Book).await?))
}

#[derive(Deserialize)]
pub struct StatusBody {
    status: Option<String>,
}

pub async fn set_status(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: JsonBody<StatusBody>,
) -> Result<Json<Appointment>, ApiError> {
    let to = Status::parse("status", &required("status", body.value.status)?)?;
    let appointment = load(&state, &principal, &id, Action::RunClinicDay).await?;
    Ok(Json(state.bookings.set_status(&appointment, to).await?))
}

pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Appointment>, ApiError> {
    let appointment = load(&state, &principal, &id, Action::Book).await?;
    Ok(Json(state.bookings.cancel(&appointment).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RescheduleBody {
    date: Option<String>,
    slot_index: Option<i64>,
}

pub async fn reschedule(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: JsonBody<RescheduleBody>,
) -> Result<(StatusCode, Json<Appointment>), ApiError> {
    let date = parse_date("date", &required("date", body.value.date)?)?;
    let slot = body
        .value
        .slot_index
        .map(|s| SlotIndex::parse("slotIndex", s))
        .transpose()?;
    let old = load(&state, &principal, &id, Action::Book).await?;
    let new = state.bookings.reschedule(&old, date, slot).await?;
    Ok((StatusCode::CREATED, Json(new)))
}
