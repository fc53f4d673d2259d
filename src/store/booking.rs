//! The steps of one booking inside its transaction, written once: cancel the
//! appointment being replaced, read the day's occupied slots, let the planner
//! choose, number the token, insert, record the idempotency key. PostgreSQL runs
//! them in a transaction of their own (after locking the doctor-day, `store::
//! postgres`); SQLite in a savepoint of the group committer's transaction
//! (`store::sqlite::group_commit`). The caller begins and commits.

use std::collections::BTreeSet;

use super::rows;
use super::sql::{query, Statement, Tx};
use super::{Booking, StoreError};
use crate::domain::{Appointment, Kind, PlannedSlot, Status, Token};

/// What the booking steps need of an open transaction. Not `Send`: SQLite's
/// committer runs them on its own thread over a connection that stays there.
#[allow(async_fn_in_trait)]
pub trait BookingTx {
    /// Rows changed; a unique index's refusal comes back as what it refuses
    /// (`SlotTaken`, `TokenTaken`, `IdempotencyKeyUsed`).
    async fn execute(&mut self, s: Statement<'_>) -> Result<u64, StoreError>;
    /// The integer in `column` of each row the statement returns.
    async fn integers(&mut self, s: Statement<'_>, column: &str) -> Result<Vec<i64>, StoreError>;
}

/// A sqlx transaction of either backend.
impl<T: Tx> BookingTx for T {
    async fn execute(&mut self, s: Statement<'_>) -> Result<u64, StoreError> {
        Tx::execute(self, s).await.map_err(super::records::refused)
    }

    async fn integers(&mut self, s: Statement<'_>, column: &str) -> Result<Vec<i64>, StoreError> {
        use super::sql::DecodeRow;
        Tx::fetch_all(self, s)
            .await?
            .iter()
            .map(|row| row.int(column))
            .collect()
    }
}

pub const INSERT_APPOINTMENT: &str = "INSERT INTO appointments (id, clinic_id, doctor_id, date, \
    session_index, slot_index, time, kind, numeric_token, token_number, status, patient_name, \
    patient_phone, booked_via, created_at, updated_at, previous_appointment_id) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";

/// What "occupying" means for a native appointment: every status but `Cancelled`
/// and `No-show` (the partial unique indexes say the same).
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

/// Books `b` in the open transaction `tx`; on an error the caller rolls back.
pub async fn book_in<T: BookingTx>(tx: &mut T, b: &Booking) -> Result<Appointment, StoreError> {
    if let Some(old) = &b.replaces {
        let cancelled = tx
            .execute(
                query(CANCEL_REPLACED)
                    .bind(b.now)
                    .bind(old.as_str())
                    .bind(b.clinic_id.as_str()),
            )
            .await?;
        if cancelled == 0 {
            return Err(StoreError::Changed(
                "the appointment being rescheduled is no longer active",
            ));
        }
    }
    let taken: BTreeSet<u32> = tx
        .integers(
            query(OCCUPIED_SLOTS)
                .bind(b.clinic_id.as_str())
                .bind(b.doctor_id.as_str())
                .bind(b.date),
            "slot_index",
        )
        .await?
        .into_iter()
        .filter_map(|s| u32::try_from(s).ok())
        .collect();
    let planned = (b.plan)(&taken)?;
    let token = match b.kind {
        Kind::Advance => Token::advance(planned.slot),
        Kind::WalkIn => {
            let numbered = tx
                .integers(
                    query(NEXT_WALK_IN_NUMBER)
                        .bind(b.clinic_id.as_str())
                        .bind(b.doctor_id.as_str())
                        .bind(b.date)
                        .bind(i64::from(planned.slot.session())),
                    "last_number",
                )
                .await?;
            let n = *numbered
                .first()
                .ok_or_else(|| rows::corrupt("walk-in number", "missing"))?;
            let n = u32::try_from(n).map_err(|_| rows::corrupt("walk-in number", n))?;
            Token::walk_in(planned.slot.session(), n)
        }
    };
    let appointment = new_appointment(b, planned, token);
    tx.execute(bind_appointment(query(INSERT_APPOINTMENT), &appointment))
        .await?;
    if let Some(key) = &b.idempotency {
        let body =
            serde_json::to_string(&appointment).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        tx.execute(
            query(INSERT_IDEMPOTENCY_KEY)
                .bind(b.clinic_id.as_str())
                .bind(key.key_hash.as_str())
                .bind(key.request_hash.as_str())
                .bind(201_i64)
                .bind(body)
                .bind(b.now),
        )
        .await?;
    }
    Ok(appointment)
}

/// The appointment a planned slot becomes, with its token already decided.
fn new_appointment(booking: &Booking, planned: PlannedSlot, token: Token) -> Appointment {
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

/// Binds an appointment's fields in `INSERT_APPOINTMENT` order.
fn bind_appointment<'q>(s: Statement<'q>, a: &'q Appointment) -> Statement<'q> {
    s.bind(a.id.as_str())
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
}
