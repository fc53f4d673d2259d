//! The record of a load run, Jepsen style: one JSON line per operation, written when
//! it completes, saying what was asked, when, and what came of it. `loadtest` writes
//! it; `check` reads it back against the database.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What an operation tried to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// `POST /appointments` (advance booking).
    Book,
    /// `POST /appointments/walk-in`.
    WalkIn,
    /// `POST /appointments/{id}/cancel`.
    Cancel,
}

/// How an operation ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A 2xx: the server says it happened.
    Ok,
    /// A 4xx or 5xx: the server says it did not happen.
    Fail,
    /// No answer (timeout, connection reset): it may or may not have happened.
    Info,
}

/// One completed operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Unique within the run.
    pub op: u64,
    pub kind: OpKind,
    /// Booking ops: the patient name, unique per operation (`lt-<run>-<op>`), so the
    /// row an operation made can be found whatever the answer was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_name: Option<String>,
    /// Sent as `Idempotency-Key`; retries of one operation reuse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub clinic_id: String,
    pub doctor_id: String,
    /// Local date the booking is for (for walk-ins: as answered, when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_index: Option<u32>,
    /// Cancel ops: the appointment cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment_id: Option<String>,
    pub invoked_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub outcome: Outcome,
    /// HTTP status, when there was an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `error.code` of a refusal, or the transport error of an `info` op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The appointment a 2xx answered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<AnsweredAppointment>,
}

/// The fields of an answered appointment the checker compares with the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnsweredAppointment {
    pub id: String,
    pub clinic_id: String,
    pub doctor_id: String,
    pub date: String,
    pub slot_index: u32,
    pub token_number: String,
    pub status: String,
}
