//! What both stores share: the SQL text that is the same on SQLite and PostgreSQL
//! (both accept `$n` placeholders), and turning rows into domain values.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{ApiKeyRecord, Role, StoreError, StoredResponse};
use crate::domain::clinic::parse_timezone;
use crate::domain::schedule::{parse_clock_time, parse_days_off, WeeklyAvailability};
use crate::domain::{
    Appointment, AppointmentId, BookingPolicy, Clinic, ClinicId, Doctor, DoctorId, Kind,
    ReserveRatio, Status,
};

pub const APPOINTMENT_COLUMNS: &str = "id, clinic_id, doctor_id, date, session_index, \
    slot_index, time, kind, numeric_token, token_number, status, patient_name, patient_phone, \
    booked_via, created_at, updated_at, previous_appointment_id";

pub const INSERT_APPOINTMENT: &str = "INSERT INTO appointments (id, clinic_id, doctor_id, date, \
    session_index, slot_index, time, kind, numeric_token, token_number, status, patient_name, \
    patient_phone, booked_via, created_at, updated_at, previous_appointment_id) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";

/// Binds an appointment's fields in `INSERT_APPOINTMENT` order.
macro_rules! bind_appointment {
    ($query:expr, $a:expr) => {{
        let a = $a;
        $query
            .bind(a.id.as_str())
            .bind(a.clinic_id.as_str())
            .bind(a.doctor_id.as_str())
            .bind(a.date)
            .bind(i64::from(a.session_index))
            .bind(i64::from(a.slot_index))
            .bind(a.time.as_str())
            .bind(a.kind.as_str())
            .bind(i64::from(a.numeric_token))
            .bind(a.token_number.as_str())
            .bind(a.status.as_str())
            .bind(a.patient_name.as_str())
            .bind(a.patient_phone.as_deref())
            .bind(a.booked_via.as_str())
            .bind(a.created_at)
            .bind(a.updated_at)
            .bind(a.previous_appointment_id.as_ref().map(|p| p.as_str()))
    }};
}
pub(crate) use bind_appointment;

/// Where a unique index refused a write, from the constraint name (PostgreSQL) or
/// the message (SQLite names the columns).
pub fn unique_violation(err: &sqlx::Error) -> Option<StoreError> {
    let db = err.as_database_error()?;
    if db.kind() != sqlx::error::ErrorKind::UniqueViolation {
        return None;
    }
    Some(unique_violation_named(
        db.constraint().unwrap_or_else(|| db.message()),
    ))
}

/// The refusal a unique index's name (or SQLite's message, which names its
/// columns) stands for.
pub fn unique_violation_named(what: &str) -> StoreError {
    if what.contains("slot") {
        StoreError::Refused(crate::booking::rules::Refusal::SlotTaken)
    } else if what.contains("token") {
        StoreError::Refused(crate::booking::rules::Refusal::TokenTaken)
    } else if what.contains("idempotency") {
        StoreError::IdempotencyKeyUsed
    } else if what.contains("doctors") {
        StoreError::AlreadyExists("doctor")
    } else if what.contains("clinics") {
        StoreError::AlreadyExists("clinic")
    } else {
        StoreError::AlreadyExists("record")
    }
}

pub fn corrupt(what: &str, value: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what} {value}"))
}

pub fn u32_of(what: &str, v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(what, v))
}

/// Rows of either backend decode the same way: both map these Rust types to their
/// columns (TEXT dates on SQLite, DATE and TIMESTAMPTZ on PostgreSQL).
pub trait DecodeRow: Row
where
    for<'a> &'a str: ColumnIndex<Self>,
{
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    fn date(&self, col: &str) -> Result<NaiveDate, StoreError>;
    fn instant(&self, col: &str) -> Result<DateTime<Utc>, StoreError>;
    fn opt_instant(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
}

impl<R> DecodeRow for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> NaiveDate: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> DateTime<Utc>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, col: &str) -> Result<String, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn date(&self, col: &str) -> Result<NaiveDate, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn instant(&self, col: &str) -> Result<DateTime<Utc>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_instant(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.try_get(col)?)
    }
}

pub fn appointment<R: DecodeRow>(row: &R) -> Result<Appointment, StoreError>
where
    for<'a> &'a str: ColumnIndex<R>,
{
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

pub fn clinic<R: DecodeRow>(row: &R) -> Result<Clinic, StoreError>
where
    for<'a> &'a str: ColumnIndex<R>,
{
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

pub fn doctor<R: DecodeRow>(row: &R) -> Result<Doctor, StoreError>
where
    for<'a> &'a str: ColumnIndex<R>,
{
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

pub fn stored_response<R: DecodeRow>(row: &R) -> Result<StoredResponse, StoreError>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    Ok(StoredResponse {
        request_hash: row.text("request_hash")?,
        status: u16::try_from(row.int("response_status")?)
            .map_err(|e| corrupt("response_status", e))?,
        body: row.text("response_body")?,
    })
}

pub fn api_key<R: DecodeRow>(row: &R) -> Result<ApiKeyRecord, StoreError>
where
    for<'a> &'a str: ColumnIndex<R>,
{
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

/// The appointment a planned slot becomes, with its token already decided.
pub fn new_appointment(
    booking: &super::Booking,
    planned: crate::booking::rules::PlannedSlot,
    token: crate::domain::Token,
) -> Appointment {
    Appointment {
        id: booking.id.clone(),
        clinic_id: booking.clinic_id.clone(),
        doctor_id: booking.doctor_id.clone(),
        date: booking.date,
        session_index: planned.slot.session(),
        slot_index: planned.slot.value(),
        time: planned.time.format("%H:%M").to_string(),
        kind: booking.kind,
        numeric_token: token.numeric,
        token_number: token.number,
        status: Status::Pending,
        patient_name: booking.patient.name.clone(),
        patient_phone: booking.patient.phone.clone(),
        booked_via: booking.patient.booked_via.clone(),
        created_at: booking.now,
        updated_at: booking.now,
        previous_appointment_id: booking.replaces.clone(),
    }
}

pub const OCCUPIED_SLOTS: &str = "SELECT slot_index FROM appointments \
    WHERE clinic_id = $1 AND doctor_id = $2 AND date = $3 \
    AND status NOT IN ('Cancelled', 'No-show')";

pub const NEXT_WALK_IN_NUMBER: &str = "INSERT INTO walk_in_counters \
    (clinic_id, doctor_id, date, session_index, last_number) VALUES ($1, $2, $3, $4, 1) \
    ON CONFLICT (clinic_id, doctor_id, date, session_index) \
    DO UPDATE SET last_number = walk_in_counters.last_number + 1 RETURNING last_number";

pub const CANCEL_REPLACED: &str = "UPDATE appointments SET status = 'Cancelled', updated_at = $1 \
    WHERE id = $2 AND clinic_id = $3 AND status NOT IN ('Cancelled', 'No-show')";

pub const INSERT_IDEMPOTENCY_KEY: &str = "INSERT INTO idempotency_keys \
    (clinic_id, key_hash, request_hash, response_status, response_body, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6)";

/// A reschedule whose old appointment was cancelled or closed meanwhile.
pub fn replaced_gone() -> StoreError {
    StoreError::Changed("the appointment being rescheduled is no longer active")
}

/// The response body an idempotency key replays: the appointment booked.
pub fn idempotent_body(appointment: &Appointment) -> Result<String, StoreError> {
    serde_json::to_string(appointment).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The steps of a booking inside an open transaction `$tx` on PostgreSQL: cancel the
/// appointment being replaced, read the day's occupied slots, let the planner choose,
/// number the token, insert, record the idempotency key. The caller begins, locks the
/// doctor-day and commits. SQLite's group committer (`store::group_commit`) runs the
/// same steps with the same SQL through its own connection.
macro_rules! book_in_transaction {
    ($tx:ident, $b:expr) => {{
        let b = $b;
        if let Some(old) = &b.replaces {
            let cancelled = sqlx::query($crate::store::codec::CANCEL_REPLACED)
                .bind(b.now)
                .bind(old.as_str())
                .bind(b.clinic_id.as_str())
                .execute(&mut *$tx)
                .await?;
            if cancelled.rows_affected() == 0 {
                return Err($crate::store::codec::replaced_gone());
            }
        }
        let taken: std::collections::BTreeSet<u32> =
            sqlx::query_scalar::<_, i64>($crate::store::codec::OCCUPIED_SLOTS)
                .bind(b.clinic_id.as_str())
                .bind(b.doctor_id.as_str())
                .bind(b.date)
                .fetch_all(&mut *$tx)
                .await?
                .into_iter()
                .filter_map(|s| u32::try_from(s).ok())
                .collect();
        let planned = (b.plan)(&taken)?;
        let token = match b.kind {
            $crate::domain::Kind::Advance => $crate::domain::Token::advance(planned.slot),
            $crate::domain::Kind::WalkIn => {
                let n: i64 = sqlx::query_scalar($crate::store::codec::NEXT_WALK_IN_NUMBER)
                    .bind(b.clinic_id.as_str())
                    .bind(b.doctor_id.as_str())
                    .bind(b.date)
                    .bind(i64::from(planned.slot.session()))
                    .fetch_one(&mut *$tx)
                    .await?;
                let n = u32::try_from(n)
                    .map_err(|_| StoreError::Corrupt(format!("walk-in number {n}")))?;
                $crate::domain::Token::walk_in(planned.slot.session(), n)
            }
        };
        let appointment = $crate::store::codec::new_appointment(b, planned, token);
        $crate::store::codec::bind_appointment!(
            sqlx::query($crate::store::codec::INSERT_APPOINTMENT),
            &appointment
        )
        .execute(&mut *$tx)
        .await
        .map_err(|e| {
            $crate::store::codec::unique_violation(&e).unwrap_or(StoreError::Database(e))
        })?;
        if let Some(key) = &b.idempotency {
            let body = $crate::store::codec::idempotent_body(&appointment)?;
            sqlx::query($crate::store::codec::INSERT_IDEMPOTENCY_KEY)
                .bind(b.clinic_id.as_str())
                .bind(key.key_hash.as_str())
                .bind(key.request_hash.as_str())
                .bind(201_i64)
                .bind(body)
                .bind(b.now)
                .execute(&mut *$tx)
                .await
                .map_err(|e| {
                    $crate::store::codec::unique_violation(&e).unwrap_or(StoreError::Database(e))
                })?;
        }
        appointment
    }};
}
pub(crate) use book_in_transaction;

/// Filters of `AppointmentFilter`, each `NULL` when unset: `$1` clinic, `$2` doctor,
/// `$3` date, `$4` status, `$5` limit.
pub fn list_appointments_sql() -> String {
    format!(
        "SELECT {APPOINTMENT_COLUMNS} FROM appointments \
         WHERE ($1 IS NULL OR clinic_id = $1) AND ($2 IS NULL OR doctor_id = $2) \
         AND ($3 IS NULL OR date = $3) AND ($4 IS NULL OR status = $4) \
         ORDER BY date, clinic_id, doctor_id, slot_index, created_at LIMIT $5"
    )
}

pub fn occupying_sql() -> String {
    format!(
        "SELECT {APPOINTMENT_COLUMNS} FROM appointments \
         WHERE clinic_id = $1 AND doctor_id = $2 AND date = $3 \
         AND status NOT IN ('Cancelled', 'No-show') ORDER BY slot_index"
    )
}

pub fn clinics_json(clinics: &[ClinicId]) -> String {
    serde_json::to_string(&clinics.iter().map(ClinicId::as_str).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".to_owned())
}

/// `impl Store` for a backend. The SQL and steps are the same on both; the backend
/// provides `self.reader`, `self.writer`, `self.begin_write()`, `Self::LOCK_ROW` and
/// `self.book_committed(booking)`, its own booking transaction.
macro_rules! impl_store {
    ($store:ty, $backend:expr) => {
#[async_trait::async_trait]
impl $crate::store::Store for $store {
    fn backend(&self) -> Backend {
        $backend
    }

    async fn announce(&self, group: &$crate::detect::Group) -> Result<(), StoreError> {
        self.announce_group(group).await
    }

    async fn listen(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<$crate::detect::Group>> {
        self.listen_groups().await
    }

    async fn book(&self, booking: Booking) -> $crate::store::BookingOutcome {
        self.book_committed(booking).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn insert_clinic(&self, clinic: &Clinic, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO clinics (id, name, timezone, walk_in_reserve_bp, min_lead_minutes, created_at, updated_at, audit_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
        )
        .bind(clinic.id.as_str())
        .bind(&clinic.name)
        .bind(clinic.timezone.name())
        .bind(i64::from(clinic.policy.walk_in_reserve.basis_points()))
        .bind(i64::from(clinic.policy.min_lead_minutes))
        .bind(now)
        .bind(clinic.audit_at.format("%H:%M").to_string())
        .execute(&self.writer)
        .await
        .map_err(|e| $crate::store::codec::unique_violation(&e).unwrap_or(StoreError::Database(e)))?;
        Ok(())
    }

    async fn update_clinic(&self, clinic: &Clinic, now: DateTime<Utc>) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE clinics SET name = $2, timezone = $3, walk_in_reserve_bp = $4, min_lead_minutes = $5, updated_at = $6, \
             audit_at = $7 WHERE id = $1",
        )
        .bind(clinic.id.as_str())
        .bind(&clinic.name)
        .bind(clinic.timezone.name())
        .bind(i64::from(clinic.policy.walk_in_reserve.basis_points()))
        .bind(i64::from(clinic.policy.min_lead_minutes))
        .bind(now)
        .bind(clinic.audit_at.format("%H:%M").to_string())
        .execute(&self.writer)
        .await?;
        $crate::store::codec::found(done.rows_affected(), "clinic")
    }

    async fn clinic(&self, id: &ClinicId) -> Result<Option<Clinic>, StoreError> {
        sqlx::query("SELECT * FROM clinics WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?
            .map(|r| $crate::store::codec::clinic(&r))
            .transpose()
    }

    async fn insert_doctor(&self, doctor: &Doctor, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO doctors (clinic_id, id, name, slot_minutes, availability, date_overrides, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(doctor.clinic_id.as_str())
        .bind(doctor.id.as_str())
        .bind(&doctor.name)
        .bind(i64::from(doctor.slot_minutes))
        .bind(doctor.availability.to_json().to_string())
        .bind(days_off_to_json(&doctor.days_off).to_string())
        .bind(now)
        .execute(&self.writer)
        .await
        .map_err(|e| $crate::store::codec::unique_violation(&e).unwrap_or(StoreError::Database(e)))?;
        Ok(())
    }

    async fn update_doctor(&self, doctor: &Doctor, now: DateTime<Utc>) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE doctors SET name = $3, slot_minutes = $4, availability = $5, date_overrides = $6, updated_at = $7 \
             WHERE clinic_id = $1 AND id = $2",
        )
        .bind(doctor.clinic_id.as_str())
        .bind(doctor.id.as_str())
        .bind(&doctor.name)
        .bind(i64::from(doctor.slot_minutes))
        .bind(doctor.availability.to_json().to_string())
        .bind(days_off_to_json(&doctor.days_off).to_string())
        .bind(now)
        .execute(&self.writer)
        .await?;
        $crate::store::codec::found(done.rows_affected(), "doctor")
    }

    async fn doctor(&self, clinic: &ClinicId, id: &DoctorId) -> Result<Option<Doctor>, StoreError> {
        sqlx::query("SELECT * FROM doctors WHERE clinic_id = $1 AND id = $2")
            .bind(clinic.as_str())
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?
            .map(|r| $crate::store::codec::doctor(&r))
            .transpose()
    }

    async fn change_status(
        &self,
        id: &AppointmentId,
        to: Status,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!("SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE id = $1{}", Self::LOCK_ROW))
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("appointment"))?;
        let mut appointment = $crate::store::codec::appointment(&row)?;
        if !appointment.status.can_become(to) {
            return Err(StoreError::InvalidTransition { from: appointment.status, to });
        }
        sqlx::query("UPDATE appointments SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(to.as_str())
            .bind(now)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        appointment.status = to;
        appointment.updated_at = now;
        Ok(appointment)
    }

    async fn appointment(&self, id: &AppointmentId) -> Result<Option<Appointment>, StoreError> {
        sqlx::query(&format!("SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?
            .map(|r| $crate::store::codec::appointment(&r))
            .transpose()
    }

    async fn appointments(&self, filter: &AppointmentFilter) -> Result<Vec<Appointment>, StoreError> {
        sqlx::query(&$crate::store::codec::list_appointments_sql())
            .bind(filter.clinic_id.as_ref().map(ClinicId::as_str))
            .bind(filter.doctor_id.as_ref().map(DoctorId::as_str))
            .bind(filter.date)
            .bind(filter.status.map(Status::as_str))
            .bind(i64::from(filter.limit))
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map($crate::store::codec::appointment)
            .collect()
    }

    async fn occupying(
        &self,
        clinic: &ClinicId,
        doctor: &DoctorId,
        date: NaiveDate,
    ) -> Result<Vec<Appointment>, StoreError> {
        sqlx::query(&$crate::store::codec::occupying_sql())
            .bind(clinic.as_str())
            .bind(doctor.as_str())
            .bind(date)
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map($crate::store::codec::appointment)
            .collect()
    }

    async fn idempotent_response(
        &self,
        clinic: &ClinicId,
        key_hash: &str,
    ) -> Result<Option<StoredResponse>, StoreError> {
        sqlx::query("SELECT * FROM idempotency_keys WHERE clinic_id = $1 AND key_hash = $2")
            .bind(clinic.as_str())
            .bind(key_hash)
            .fetch_optional(&self.reader)
            .await?
            .map(|r| $crate::store::codec::stored_response(&r))
            .transpose()
    }

    async fn forget_idempotency_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, role, clinics, secret_hash, created_at, watch_clinics) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.id)
        .bind(key.role.as_str())
        .bind($crate::store::codec::clinics_json(&key.clinics))
        .bind(&key.secret_hash)
        .bind(key.created_at)
        .bind($crate::store::codec::clinics_json(&key.watch_clinics))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        sqlx::query("SELECT * FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
            .map(|r| $crate::store::codec::api_key(&r))
            .transpose()
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map($crate::store::codec::api_key)
            .collect()
    }

    async fn revoke_api_key(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
    };
}
pub(crate) use impl_store;

pub fn found(rows: u64, what: &'static str) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::NotFound(what))
    } else {
        Ok(())
    }
}
