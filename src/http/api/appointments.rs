//! Booking, walk-ins, validation, availability, status changes, cancel, reschedule.

use axum::extract::{MatchedPath, Path, State};
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

/// The clinic app's own booking path. Kloqo, and the clinic's load-test script, name
/// the doctor (`doctor`: the name) where this API takes `doctorId`; here, and only
/// here, the name is accepted and resolved within the clinic.
const CLINIC_APP_ALIAS: &str = "/api/book-appointment";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct BookingBody {
    clinic_id: Option<String>,
    doctor_id: Option<String>,
    /// The doctor's name, accepted at [`CLINIC_APP_ALIAS`] only.
    doctor: Option<String>,
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
        if self.doctor.is_some() {
            return Err(FieldError::new(
                "doctor",
                format!("(the doctor's name) is accepted only at {CLINIC_APP_ALIAS}; send doctorId here"),
            ));
        }
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
#[serde(deny_unknown_fields)]
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

/// `POST /api/v1/appointments` and its alias `POST /api/book-appointment`, where the
/// body may name the doctor instead (see [`CLINIC_APP_ALIAS`]).
pub async fn book(
    State(state): State<AppState>,
    principal: Principal,
    route: MatchedPath,
    headers: HeaderMap,
    body: JsonBody<BookingBody>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers, &principal, "book", &body.document)?;
    let mut value = body.value;
    if route.as_str() == CLINIC_APP_ALIAS {
        if let Some(name) = value.doctor.take() {
            value.doctor_id = Some(doctor_named(&state, &principal, &value, &name).await?);
        }
    }
    let req = value.parse()?;
    principal.may(Action::Book, Some(&req.clinic_id))?;
    let booked = state.bookings.book(&req, key.as_ref()).await?;
    Ok(booked_response(booked))
}

/// The id of the doctor of the body's clinic called `name`: compared without case,
/// extra spaces or a leading "Dr". None or several → 422 naming `doctor` and listing
/// what matched (or, when nothing did, the clinic's doctors). With a `doctorId` too,
/// the two must be the same doctor.
async fn doctor_named(
    state: &AppState,
    principal: &Principal,
    body: &BookingBody,
    name: &str,
) -> Result<String, ApiError> {
    let clinic_id = ClinicId::parse("clinicId", &required("clinicId", body.clinic_id.clone())?)?;
    let name = parse_line("doctor", name, 200)?;
    // Only a key that may book at the clinic learns who works there.
    principal.may(Action::Book, Some(&clinic_id))?;
    state.bookings.clinic(&clinic_id).await?;
    let doctors = state.bookings.store().doctors_of(&clinic_id).await?;
    let wanted = comparable_name(&name);
    let named: Vec<_> = doctors
        .iter()
        .filter(|d| comparable_name(&d.name) == wanted)
        .collect();
    let listed = |doctors: &[&crate::domain::Doctor]| {
        let text: Vec<String> = doctors
            .iter()
            .take(20)
            .map(|d| format!("{} ({})", d.name, d.id))
            .collect();
        let json: Vec<Value> = doctors
            .iter()
            .map(|d| json!({"id": d.id, "name": d.name}))
            .collect();
        (text.join(", "), json)
    };
    let refuse = |message: String, matches: Vec<Value>| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_field",
        message,
        details: json!({"field": "doctor", "matches": matches}),
    };
    match named.as_slice() {
        [one] => match &body.doctor_id {
            Some(id) if id != one.id.as_str() => Err(refuse(
                format!("doctor {name:?} is {} but doctorId is {id}.", one.id),
                vec![json!({"id": one.id, "name": one.name})],
            )),
            _ => Ok(one.id.to_string()),
        },
        [] => {
            let near: Vec<_> = doctors
                .iter()
                .filter(|d| {
                    let theirs = comparable_name(&d.name);
                    theirs.contains(&wanted) || wanted.contains(&theirs)
                })
                .collect();
            let (text, json) = if near.is_empty() {
                listed(&doctors.iter().collect::<Vec<_>>())
            } else {
                listed(&near)
            };
            let which = if near.is_empty() {
                "its doctors"
            } else {
                "names close to it"
            };
            let text = if text.is_empty() {
                "none".to_owned()
            } else {
                text
            };
            Err(refuse(
                format!("doctor: no doctor of {clinic_id} is named {name:?}; {which}: {text}."),
                if near.is_empty() { Vec::new() } else { json },
            ))
        }
        several => {
            let (text, json) = listed(several);
            Err(refuse(
                format!(
                    "doctor: {} doctors of {clinic_id} are named {name:?}: {text}; send doctorId.",
                    several.len()
                ),
                json,
            ))
        }
    }
}

/// A doctor's name as the clinic app's bodies are matched against it: lower case,
/// single spaces, without a leading "Dr", "Dr." or "Doctor".
fn comparable_name(name: &str) -> String {
    let lower = name.to_lowercase();
    let mut words = lower.split_whitespace().peekable();
    if words
        .peek()
        .is_some_and(|w| matches!(*w, "dr" | "dr." | "doctor"))
    {
        words.next();
    }
    words.collect::<Vec<_>>().join(" ")
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
