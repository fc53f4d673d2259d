//! The core records: clinics, doctors, appointments, idempotency keys and API keys.
//! The `Store` trait's SQL and its one implementation for every [`SqlBackend`], and
//! how a unique index's refusal is named.

use super::rows;
use super::sql::{query, SqlBackend, Statement, Tx};
use super::{AppointmentFilter, Backend, Booking, Store};
use crate::domain::schedule::days_off_to_json;
use chrono::{DateTime, NaiveDate, Utc};

use super::{ApiKeyRecord, StoreError, StoredResponse};
use crate::domain::{
    Appointment, AppointmentId, Clinic, ClinicId, Doctor, DoctorId, Entity, Group, Refusal, Status,
};

pub const APPOINTMENT_COLUMNS: &str = "id, clinic_id, doctor_id, date, session_index, \
    slot_index, time, kind, numeric_token, token_number, status, patient_name, patient_phone, \
    booked_via, created_at, updated_at, previous_appointment_id";

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

/// A failed write as the store reports it: what a unique index refused, or the
/// database's error.
pub fn refused(err: sqlx::Error) -> StoreError {
    unique_violation(&err).unwrap_or(StoreError::Database(err))
}

/// A clinic's fields as the insert and the update bind them: `$1` id, `$2` name,
/// `$3` zone, `$4` walk-in reserve, `$5` lead minutes, `$6` now, `$7` audit time.
fn with_clinic<'q>(s: Statement<'q>, clinic: &'q Clinic, now: DateTime<Utc>) -> Statement<'q> {
    s.bind(clinic.id.as_str())
        .bind(&clinic.name)
        .bind(clinic.timezone.name())
        .bind(i64::from(clinic.policy.walk_in_reserve.basis_points()))
        .bind(i64::from(clinic.policy.min_lead_minutes))
        .bind(now)
        .bind(clinic.audit_at.format("%H:%M").to_string())
}

/// A doctor's fields as the insert and the update bind them: `$1` clinic, `$2` id,
/// `$3` name, `$4` slot minutes, `$5` availability, `$6` days off, `$7` now.
fn with_doctor<'q>(s: Statement<'q>, doctor: &'q Doctor, now: DateTime<Utc>) -> Statement<'q> {
    s.bind(doctor.clinic_id.as_str())
        .bind(doctor.id.as_str())
        .bind(&doctor.name)
        .bind(i64::from(doctor.slot_minutes))
        .bind(doctor.availability.to_json().to_string())
        .bind(days_off_to_json(&doctor.days_off).to_string())
        .bind(now)
}

/// The refusal a unique index's name (or SQLite's message, which names its
/// columns) stands for.
pub fn unique_violation_named(what: &str) -> StoreError {
    if what.contains("slot") {
        StoreError::Refused(Refusal::SlotTaken)
    } else if what.contains("token") {
        StoreError::Refused(Refusal::TokenTaken)
    } else if what.contains("idempotency") {
        StoreError::IdempotencyKeyUsed
    } else if what.contains("doctors") {
        StoreError::AlreadyExists(Entity::Doctor)
    } else if what.contains("clinics") {
        StoreError::AlreadyExists(Entity::Clinic)
    } else {
        StoreError::AlreadyExists(Entity::Record)
    }
}

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

#[async_trait::async_trait]
impl<B: SqlBackend> Store for B {
    fn backend(&self) -> Backend {
        B::BACKEND
    }

    async fn announce(&self, group: &Group) -> Result<(), StoreError> {
        self.announce_group(group).await
    }

    async fn listen(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Group>> {
        self.listen_groups().await
    }

    async fn book(&self, booking: Booking) -> crate::store::BookingOutcome {
        self.book_committed(booking).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        query("SELECT 1").execute(self.reader()).await?;
        Ok(())
    }

    async fn insert_clinic(&self, clinic: &Clinic, now: DateTime<Utc>) -> Result<(), StoreError> {
        let insert = query(
            "INSERT INTO clinics (id, name, timezone, walk_in_reserve_bp, min_lead_minutes, created_at, updated_at, audit_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
        );
        with_clinic(insert, clinic, now)
            .execute(self.writer())
            .await
            .map_err(refused)?;
        Ok(())
    }

    async fn update_clinic(&self, clinic: &Clinic, now: DateTime<Utc>) -> Result<(), StoreError> {
        let update = query(
            "UPDATE clinics SET name = $2, timezone = $3, walk_in_reserve_bp = $4, min_lead_minutes = $5, updated_at = $6, \
             audit_at = $7 WHERE id = $1",
        );
        let done = with_clinic(update, clinic, now)
            .execute(self.writer())
            .await?;
        found(done, Entity::Clinic)
    }

    async fn clinic(&self, id: &ClinicId) -> Result<Option<Clinic>, StoreError> {
        query("SELECT * FROM clinics WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(self.reader())
            .await?
            .map(|r| rows::clinic(&r))
            .transpose()
    }

    async fn insert_doctor(&self, doctor: &Doctor, now: DateTime<Utc>) -> Result<(), StoreError> {
        let insert = query(
            "INSERT INTO doctors (clinic_id, id, name, slot_minutes, availability, date_overrides, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        );
        with_doctor(insert, doctor, now)
            .execute(self.writer())
            .await
            .map_err(refused)?;
        Ok(())
    }

    async fn update_doctor(&self, doctor: &Doctor, now: DateTime<Utc>) -> Result<(), StoreError> {
        let update = query(
            "UPDATE doctors SET name = $3, slot_minutes = $4, availability = $5, date_overrides = $6, updated_at = $7 \
             WHERE clinic_id = $1 AND id = $2",
        );
        let done = with_doctor(update, doctor, now)
            .execute(self.writer())
            .await?;
        found(done, Entity::Doctor)
    }

    async fn doctor(&self, clinic: &ClinicId, id: &DoctorId) -> Result<Option<Doctor>, StoreError> {
        query("SELECT * FROM doctors WHERE clinic_id = $1 AND id = $2")
            .bind(clinic.as_str())
            .bind(id.as_str())
            .fetch_optional(self.reader())
            .await?
            .map(|r| rows::doctor(&r))
            .transpose()
    }

    async fn change_status(
        &self,
        id: &AppointmentId,
        to: Status,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = query(format!(
            "SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE id = $1{}",
            B::LOCK_ROW
        ))
        .bind(id.as_str())
        .fetch_optional(&mut tx)
        .await?
        .ok_or(StoreError::NotFound(Entity::Appointment))?;
        let mut appointment = rows::appointment(&row)?;
        if !appointment.status.can_become(to) {
            return Err(StoreError::InvalidTransition {
                from: appointment.status,
                to,
            });
        }
        query("UPDATE appointments SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(to.as_str())
            .bind(now)
            .bind(id.as_str())
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        appointment.status = to;
        appointment.updated_at = now;
        Ok(appointment)
    }

    async fn appointment(&self, id: &AppointmentId) -> Result<Option<Appointment>, StoreError> {
        query(format!(
            "SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(self.reader())
        .await?
        .map(|r| rows::appointment(&r))
        .transpose()
    }

    async fn appointments(
        &self,
        filter: &AppointmentFilter,
    ) -> Result<Vec<Appointment>, StoreError> {
        query(list_appointments_sql())
            .bind(filter.clinic_id.as_ref().map(ClinicId::as_str))
            .bind(filter.doctor_id.as_ref().map(DoctorId::as_str))
            .bind(filter.date)
            .bind(filter.status.map(Status::as_str))
            .bind(i64::from(filter.limit))
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(rows::appointment)
            .collect()
    }

    async fn occupying(
        &self,
        clinic: &ClinicId,
        doctor: &DoctorId,
        date: NaiveDate,
    ) -> Result<Vec<Appointment>, StoreError> {
        query(occupying_sql())
            .bind(clinic.as_str())
            .bind(doctor.as_str())
            .bind(date)
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(rows::appointment)
            .collect()
    }

    async fn idempotent_response(
        &self,
        clinic: &ClinicId,
        key_hash: &str,
    ) -> Result<Option<StoredResponse>, StoreError> {
        query("SELECT * FROM idempotency_keys WHERE clinic_id = $1 AND key_hash = $2")
            .bind(clinic.as_str())
            .bind(key_hash)
            .fetch_optional(self.reader())
            .await?
            .map(|r| rows::stored_response(&r))
            .transpose()
    }

    async fn forget_idempotency_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before)
            .execute(self.writer())
            .await?;
        Ok(done)
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        query(
            "INSERT INTO api_keys (id, role, clinics, secret_hash, created_at, watch_clinics) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.id)
        .bind(key.role.as_str())
        .bind(clinics_json(&key.clinics))
        .bind(&key.secret_hash)
        .bind(key.created_at)
        .bind(clinics_json(&key.watch_clinics))
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        query("SELECT * FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(self.reader())
            .await?
            .map(|r| rows::api_key(&r))
            .transpose()
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(rows::api_key)
            .collect()
    }

    async fn revoke_api_key(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let done =
            query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(self.writer())
                .await?;
        Ok(done == 1)
    }
}

pub fn found(rows: u64, what: Entity) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::NotFound(what))
    } else {
        Ok(())
    }
}
