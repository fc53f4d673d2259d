//! Watch: slotguard beside an existing booking app. The app forwards its appointment
//! documents; slotguard mirrors them verbatim (no uniqueness: the mirror holds the
//! external truth, duplicates included) so the detector and the audit can find the
//! double bookings the app let through.

use chrono::{DateTime, NaiveDate, Utc};

use crate::domain::{ClinicId, DoctorId};

pub mod import;
pub mod importer;
pub mod kloqo;

/// One external appointment document, parsed into what detection needs, with the
/// document itself kept verbatim (unknown fields included).
#[derive(Debug, Clone, PartialEq)]
pub struct WatchedAppointment {
    /// The document id in the external app (Firestore id for Kloqo).
    pub id: String,
    pub clinic_id: ClinicId,
    pub doctor_id: DoctorId,
    /// The clinic's local date.
    pub date: NaiveDate,
    pub session_index: Option<u32>,
    pub slot_index: u32,
    /// `None` for Kloqo's break placeholders (`tokenNumber: "Break"`): they occupy
    /// their slot but are no patient's token.
    pub token_number: Option<String>,
    /// The status as the app wrote it.
    pub status: String,
    /// Per [`crate::domain::Status::occupies`].
    pub occupying: bool,
    pub is_break: bool,
    pub booked_via: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub document: serde_json::Value,
}

/// How far ahead of the server's clock a document's own timestamps may be (clocks
/// drift; a document dated next year would outrank every later real update of it).
pub const MAX_FUTURE: chrono::Duration = chrono::Duration::days(1);

/// A document's version: µs since the epoch of its own newest timestamp, `updatedAt`,
/// else `createdAt`; `None` without either. The mirror keeps the newest version of each
/// document ([`supersedes`]), and so does an audit of a file that lists one id twice.
pub fn version(
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
) -> Option<i64> {
    updated_at.or(created_at).map(|t| t.timestamp_micros())
}

/// Whether a copy of a document at version `incoming` takes the place of the copy kept
/// at version `kept`: unless both have a version and the incoming one is older. Of equal
/// versions the later copy wins, and a copy without timestamps always does (so events
/// that arrive twice or out of order leave the newest). `store::detection::UPSERT_WATCHED`
/// is this rule in SQL; `audit --file` applies it to the copies of an id in file order.
pub fn supersedes(kept: Option<i64>, incoming: Option<i64>) -> bool {
    match (kept, incoming) {
        (Some(kept), Some(incoming)) => incoming >= kept,
        _ => true,
    }
}

impl WatchedAppointment {
    /// This document's [`version`].
    pub fn version(&self) -> Option<i64> {
        version(self.created_at, self.updated_at)
    }

    /// Refuses a document whose `createdAt` or `updatedAt` is more than [`MAX_FUTURE`]
    /// after `now`.
    pub fn check_not_future(&self, now: DateTime<Utc>) -> Result<(), crate::domain::FieldError> {
        for (field, at) in [
            ("createdAt", self.created_at),
            ("updatedAt", self.updated_at),
        ] {
            if at.is_some_and(|t| t > now + MAX_FUTURE) {
                return Err(crate::domain::FieldError::new(
                    field,
                    "is more than a day after the server's clock; check the sending app's clock",
                ));
            }
        }
        Ok(())
    }
}
