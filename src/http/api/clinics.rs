//! Clinics and their doctors.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::super::error::ApiError;
use super::super::extract::{required, JsonBody};
use super::super::AppState;
use crate::auth::{Action, Principal};
use crate::domain::clinic::{parse_timezone, MAX_LEAD_MINUTES};
use crate::domain::schedule::parse_clock_time;
use crate::domain::schedule::{days_off_to_json, parse_days_off, parse_slot_minutes};
use crate::domain::text::parse_line;
use crate::domain::{
    BookingPolicy, Clinic, ClinicId, Doctor, DoctorId, FieldError, ReserveRatio, WeeklyAvailability,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct ClinicBody {
    id: Option<String>,
    name: Option<String>,
    timezone: Option<String>,
    walk_in_reserve_ratio: Option<f64>,
    min_lead_minutes: Option<i64>,
    audit_at: Option<String>,
}

/// The id in a PUT body may be left out, but must match the path when given.
fn id_matches(body_id: Option<&str>, path_id: &str) -> Result<(), FieldError> {
    match body_id {
        Some(id) if id != path_id => Err(FieldError::new("id", "must match the id in the path")),
        _ => Ok(()),
    }
}

impl ClinicBody {
    fn parse(self, id: &str) -> Result<Clinic, FieldError> {
        let min_lead = self.min_lead_minutes.unwrap_or(30);
        Ok(Clinic {
            id: ClinicId::parse("id", id)?,
            name: parse_line("name", &required("name", self.name)?, 200)?,
            timezone: match self.timezone {
                Some(tz) => parse_timezone("timezone", &tz)?,
                None => Clinic::DEFAULT_TIMEZONE,
            },
            policy: BookingPolicy {
                walk_in_reserve: match self.walk_in_reserve_ratio {
                    Some(r) => ReserveRatio::parse("walkInReserveRatio", r)?,
                    None => ReserveRatio::DEFAULT,
                },
                min_lead_minutes: u32::try_from(min_lead)
                    .ok()
                    .filter(|m| *m <= MAX_LEAD_MINUTES)
                    .ok_or_else(|| {
                        FieldError::new(
                            "minLeadMinutes",
                            format!("must be from 0 to {MAX_LEAD_MINUTES}"),
                        )
                    })?,
            },
            audit_at: match self.audit_at {
                Some(t) => parse_clock_time("auditAt", &t)?,
                None => Clinic::DEFAULT_AUDIT_AT,
            },
        })
    }
}

pub fn clinic_json(c: &Clinic) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "timezone": c.timezone.name(),
        "walkInReserveRatio": c.policy.walk_in_reserve.as_f64(),
        "minLeadMinutes": c.policy.min_lead_minutes,
        "auditAt": c.audit_at.format("%H:%M").to_string(),
    })
}

pub async fn create_clinic(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody<ClinicBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.may(Action::CreateClinic, None)?;
    let body = body.value;
    let id = required("id", body.id.clone())?;
    let clinic = body.parse(&id)?;
    let bookings = &state.bookings;
    bookings
        .store()
        .insert_clinic(&clinic, bookings.now())
        .await?;
    Ok((StatusCode::CREATED, Json(clinic_json(&clinic))))
}

pub async fn get_clinic(
    State(state): State<AppState>,
    principal: Principal,
    Path(clinic_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = ClinicId::parse("clinicId", &clinic_id)?;
    principal.may(Action::ReadClinic, Some(&id))?;
    Ok(Json(clinic_json(&state.bookings.clinic(&id).await?)))
}

/// `GET /clinics`: the clinics this key may read (an admin's or an unscoped booking
/// key's: every clinic), by id.
pub async fn list_clinics(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    let mut clinics: Vec<Clinic> = state
        .bookings
        .store()
        .clinics()
        .await?
        .into_iter()
        .filter(|c| principal.may(Action::ReadClinic, Some(&c.id)).is_ok())
        .collect();
    if principal.role == crate::domain::Role::Watch {
        // A forwarder's key reads no clinic; it is told so rather than shown none.
        principal.may(Action::ReadClinic, None)?;
    }
    clinics.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(
        json!({"clinics": clinics.iter().map(clinic_json).collect::<Vec<_>>()}),
    ))
}

/// `GET /clinics/{clinicId}/doctors`: the clinic's doctors, by name.
pub async fn list_doctors(
    State(state): State<AppState>,
    principal: Principal,
    Path(clinic_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = ClinicId::parse("clinicId", &clinic_id)?;
    principal.may(Action::ReadClinic, Some(&id))?;
    state.bookings.clinic(&id).await?;
    let doctors = state.bookings.store().doctors_of(&id).await?;
    Ok(Json(
        json!({"doctors": doctors.iter().map(doctor_json).collect::<Vec<_>>()}),
    ))
}

pub async fn update_clinic(
    State(state): State<AppState>,
    principal: Principal,
    Path(clinic_id): Path<String>,
    body: JsonBody<ClinicBody>,
) -> Result<Json<Value>, ApiError> {
    let id = ClinicId::parse("clinicId", &clinic_id)?;
    principal.may(Action::EditClinic, Some(&id))?;
    id_matches(body.value.id.as_deref(), &clinic_id)?;
    let clinic = body.value.parse(&clinic_id)?;
    state.bookings.update_clinic(&clinic).await?;
    Ok(Json(clinic_json(&clinic)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct DoctorBody {
    id: Option<String>,
    name: Option<String>,
    slot_minutes: Option<i64>,
    availability: Option<Value>,
    date_overrides: Option<Value>,
}

impl DoctorBody {
    fn parse(self, clinic_id: ClinicId, id: &str) -> Result<Doctor, FieldError> {
        let slot_minutes =
            parse_slot_minutes("slotMinutes", required("slotMinutes", self.slot_minutes)?)?;
        Ok(Doctor {
            id: DoctorId::parse("id", id)?,
            clinic_id,
            name: parse_line("name", &required("name", self.name)?, 200)?,
            slot_minutes,
            availability: WeeklyAvailability::parse(
                "availability",
                &required("availability", self.availability)?,
                slot_minutes,
            )?,
            days_off: match self.date_overrides {
                Some(v) => parse_days_off("dateOverrides", &v)?,
                None => Vec::new(),
            },
        })
    }
}

pub fn doctor_json(d: &Doctor) -> Value {
    json!({
        "id": d.id,
        "clinicId": d.clinic_id,
        "name": d.name,
        "slotMinutes": d.slot_minutes,
        "availability": d.availability.to_json(),
        "dateOverrides": days_off_to_json(&d.days_off),
    })
}

pub async fn create_doctor(
    State(state): State<AppState>,
    principal: Principal,
    Path(clinic_id): Path<String>,
    body: JsonBody<DoctorBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let clinic_id = ClinicId::parse("clinicId", &clinic_id)?;
    principal.may(Action::EditDoctors, Some(&clinic_id))?;
    let bookings = &state.bookings;
    let clinic = bookings.clinic(&clinic_id).await?;
    let id = required("id", body.value.id.clone())?;
    let doctor = body.value.parse(clinic.id, &id)?;
    bookings
        .store()
        .insert_doctor(&doctor, bookings.now())
        .await?;
    Ok((StatusCode::CREATED, Json(doctor_json(&doctor))))
}

pub async fn get_doctor(
    State(state): State<AppState>,
    principal: Principal,
    Path((clinic_id, doctor_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let clinic_id = ClinicId::parse("clinicId", &clinic_id)?;
    let doctor_id = DoctorId::parse("doctorId", &doctor_id)?;
    principal.may(Action::ReadClinic, Some(&clinic_id))?;
    let (_, doctor) = state
        .bookings
        .clinic_and_doctor(&clinic_id, &doctor_id)
        .await?;
    Ok(Json(doctor_json(&doctor)))
}

pub async fn update_doctor(
    State(state): State<AppState>,
    principal: Principal,
    Path((clinic_id, doctor_id)): Path<(String, String)>,
    body: JsonBody<DoctorBody>,
) -> Result<Json<Value>, ApiError> {
    let clinic_id = ClinicId::parse("clinicId", &clinic_id)?;
    principal.may(Action::EditDoctors, Some(&clinic_id))?;
    id_matches(body.value.id.as_deref(), &doctor_id)?;
    let doctor = body.value.parse(clinic_id, &doctor_id)?;
    state.bookings.update_doctor(&doctor).await?;
    Ok(Json(doctor_json(&doctor)))
}
