//! Stored rows back into values: every decoder of the store, the same for both
//! backends (a row of either is a [`DecodeRow`]). A value that does not decode is
//! `StoreError::Corrupt`, naming the column.

use super::sql::DecodeRow;
use super::{ApiKeyRecord, StoreError, StoredResponse};
use crate::domain::clinic::parse_timezone;
use crate::domain::schedule::{parse_clock_time, parse_days_off, WeeklyAvailability};
use crate::domain::{
    Appointment, AppointmentId, BookingPolicy, Clinic, ClinicId, Doctor, DoctorId, DuplicateKind,
    Email, FoundBy, Group, Incident, IncidentState, Kind, MemberRef, ReserveRatio, Role, StaffRole,
    StaffUser, Status, Touched, WatchedClinic,
};

pub fn corrupt(what: &str, value: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what} {value}"))
}

pub fn u32_of(what: &str, v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(what, v))
}

pub fn appointment<R: DecodeRow>(row: &R) -> Result<Appointment, StoreError> {
    let status = row.text("status")?;
    let kind = row.text("kind")?;
    Ok(Appointment {
        id: AppointmentId::from_stored(row.text("id")?),
        clinic_id: ClinicId::parse("clinic_id", &row.text("clinic_id")?)
            .map_err(|e| corrupt("clinic id", e))?,
        doctor_id: DoctorId::parse("doctor_id", &row.text("doctor_id")?)
            .map_err(|e| corrupt("doctor id", e))?,
        date: row.date("date")?,
        session_index: u32_of("session_index", row.int("session_index")?)?,
        slot_index: u32_of("slot_index", row.int("slot_index")?)?,
        time: row.text("time")?,
        kind: Kind::from_stored(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        numeric_token: u32_of("numeric_token", row.int("numeric_token")?)?,
        token_number: row.text("token_number")?,
        status: Status::parse("status", &status).map_err(|_| corrupt("status", &status))?,
        patient_name: row.text("patient_name")?,
        patient_phone: row.opt_text("patient_phone")?,
        booked_via: row.text("booked_via")?,
        created_at: row.instant("created_at")?,
        updated_at: row.instant("updated_at")?,
        previous_appointment_id: row
            .opt_text("previous_appointment_id")?
            .map(AppointmentId::from_stored),
    })
}

pub fn clinic<R: DecodeRow>(row: &R) -> Result<Clinic, StoreError> {
    let bp = row.int("walk_in_reserve_bp")?;
    Ok(Clinic {
        id: ClinicId::parse("id", &row.text("id")?).map_err(|e| corrupt("clinic id", e))?,
        name: row.text("name")?,
        timezone: parse_timezone("timezone", &row.text("timezone")?)
            .map_err(|e| corrupt("timezone", e))?,
        policy: BookingPolicy {
            walk_in_reserve: u32::try_from(bp)
                .ok()
                .and_then(ReserveRatio::from_basis_points)
                .ok_or_else(|| corrupt("walk_in_reserve_bp", bp))?,
            min_lead_minutes: u32_of("min_lead_minutes", row.int("min_lead_minutes")?)?,
        },
        audit_at: parse_clock_time("audit_at", &row.text("audit_at")?)
            .map_err(|e| corrupt("audit_at", e))?,
    })
}

pub fn doctor<R: DecodeRow>(row: &R) -> Result<Doctor, StoreError> {
    let slot_minutes = u32_of("slot_minutes", row.int("slot_minutes")?)?;
    let json = |col: &str| -> Result<serde_json::Value, StoreError> {
        serde_json::from_str(&row.text(col)?).map_err(|e| corrupt(col, e))
    };
    Ok(Doctor {
        id: DoctorId::parse("id", &row.text("id")?).map_err(|e| corrupt("doctor id", e))?,
        clinic_id: ClinicId::parse("clinic_id", &row.text("clinic_id")?)
            .map_err(|e| corrupt("clinic id", e))?,
        name: row.text("name")?,
        slot_minutes,
        availability: WeeklyAvailability::parse(
            "availability",
            &json("availability")?,
            slot_minutes,
        )
        .map_err(|e| corrupt("availability", e))?,
        days_off: parse_days_off("date_overrides", &json("date_overrides")?)
            .map_err(|e| corrupt("date_overrides", e))?,
    })
}

pub fn stored_response<R: DecodeRow>(row: &R) -> Result<StoredResponse, StoreError> {
    Ok(StoredResponse {
        request_hash: row.text("request_hash")?,
        status: u16::try_from(row.int("response_status")?)
            .map_err(|e| corrupt("response_status", e))?,
        body: row.text("response_body")?,
    })
}

pub fn api_key<R: DecodeRow>(row: &R) -> Result<ApiKeyRecord, StoreError> {
    let role = row.text("role")?;
    let clinics: Vec<String> =
        serde_json::from_str(&row.text("clinics")?).map_err(|e| corrupt("clinics", e))?;
    let watch_clinics: Vec<String> = serde_json::from_str(&row.text("watch_clinics")?)
        .map_err(|e| corrupt("watch_clinics", e))?;
    Ok(ApiKeyRecord {
        watch_clinics: watch_clinics
            .iter()
            .map(|c| ClinicId::parse("watch_clinics", c).map_err(|e| corrupt("clinic id", e)))
            .collect::<Result<_, _>>()?,
        id: row.text("id")?,
        role: Role::parse(&role).ok_or_else(|| corrupt("role", &role))?,
        clinics: clinics
            .iter()
            .map(|c| ClinicId::parse("clinics", c).map_err(|e| corrupt("clinic id", e)))
            .collect::<Result<_, _>>()?,
        secret_hash: row.text("secret_hash")?,
        created_at: row.instant("created_at")?,
        revoked_at: row.opt_instant("revoked_at")?,
    })
}

pub fn group<R: DecodeRow>(row: &R) -> Result<Group, StoreError> {
    Ok(Group {
        clinic_id: ClinicId::parse("clinic_id", &row.text("clinic_id")?)
            .map_err(|e| corrupt("clinic id", e))?,
        doctor_id: DoctorId::parse_stored("doctor_id", &row.text("doctor_id")?)
            .map_err(|e| corrupt("doctor id", e))?,
        date: row.date("date")?,
    })
}

pub fn incident<R: DecodeRow>(row: &R) -> Result<Incident, StoreError> {
    let kind = row.text("kind")?;
    let state = row.text("state")?;
    let members: Vec<MemberRef> =
        serde_json::from_str(&row.text("members")?).map_err(|e| corrupt("members", e))?;
    Ok(Incident {
        id: row.text("id")?,
        group: group(row)?,
        kind: DuplicateKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        key: row.text("key")?,
        state: IncidentState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        found_by: if row.text("found_by")? == "audit" {
            FoundBy::Audit
        } else {
            FoundBy::Realtime
        },
        members,
        regressions: u32_of("regressions", row.int("regressions")?)?,
        first_seen: row.instant("first_seen")?,
        last_seen: row.instant("last_seen")?,
        changed_at: row.instant("changed_at")?,
        detection_ms: row.opt_int("detection_ms")?,
        acknowledged_at: row.opt_instant("acknowledged_at")?,
        acknowledged_by: row.opt_text("acknowledged_by")?,
        resolved_at: row.opt_instant("resolved_at")?,
        resolved_by: row.opt_text("resolved_by")?,
        note: row.opt_text("note")?,
        last_notified_at: row.opt_instant("last_notified_at")?,
        revision: row.int("revision")?,
    })
}

/// Adds the slot and token a stored watched row holds (`clinic_id`, `doctor_id`,
/// `date`, `slot_index`, `token_number`) to `touched`.
pub fn touch<R: DecodeRow>(touched: &mut Touched, row: &R) -> Result<(), StoreError> {
    let slot = u32_of("slot_index", row.int("slot_index")?)?;
    touched.key(group(row)?, slot, row.opt_text("token_number")?);
    Ok(())
}

/// The [`crate::domain::EventOrder`] of a stored document (`version`, `stage`,
/// `fingerprint` columns).
pub fn stored_order<R: DecodeRow>(row: &R) -> Result<crate::domain::EventOrder, StoreError> {
    let stage = row.int("stage")?;
    Ok(crate::domain::EventOrder {
        version: row.opt_int("version")?,
        stage: u8::try_from(stage).map_err(|_| corrupt("stage", stage))?,
        fingerprint: row.text("fingerprint")?,
    })
}

pub fn watched_clinic<R: DecodeRow>(row: &R) -> Result<WatchedClinic, StoreError> {
    Ok(WatchedClinic {
        clinic_id: ClinicId::parse("clinic_id", &row.text("clinic_id")?)
            .map_err(|e| corrupt("clinic id", e))?,
        source: row.text("source")?,
        first_seen: row.instant("first_seen")?,
    })
}

pub fn count<R: DecodeRow>(row: &R, col: &str) -> Result<u64, StoreError> {
    let n = row.int(col)?;
    u64::try_from(n).map_err(|_| corrupt(col, n))
}

pub fn clinic_id<R: DecodeRow>(row: &R) -> Result<ClinicId, StoreError> {
    ClinicId::parse("clinic_id", &row.text("clinic_id")?).map_err(|e| corrupt("clinic id", e))
}

/// Rows of `(label, label, count)`: the shape of every grouped count in
/// [`AlertingGauges`].
pub fn labelled_counts<R: DecodeRow>(rows: &[R]) -> Result<Vec<(String, String, u64)>, StoreError> {
    rows.iter()
        .map(|r| Ok((r.text("a")?, r.text("b")?, count(r, "count")?)))
        .collect()
}

pub fn staff_user<R: DecodeRow>(row: &R) -> Result<StaffUser, StoreError> {
    let role = row.text("role")?;
    let email = row.text("email")?;
    let clinics: Vec<String> =
        serde_json::from_str(&row.text("clinics")?).map_err(|e| corrupt("clinics", e))?;
    Ok(StaffUser {
        id: row.text("id")?,
        email: Email::parse("email", &email).map_err(|e| corrupt("email", e))?,
        role: StaffRole::parse("role", &role).map_err(|e| corrupt("role", e))?,
        clinics: clinics
            .iter()
            .map(|c| ClinicId::parse("clinics", c).map_err(|e| corrupt("clinic id", e)))
            .collect::<Result<_, _>>()?,
        password_hash: row.text("password_hash")?,
        created_at: row.instant("created_at")?,
        disabled_at: row.opt_instant("disabled_at")?,
    })
}
