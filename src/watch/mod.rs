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

impl WatchedAppointment {
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
