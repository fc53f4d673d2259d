//! Another app's appointment documents as slotguard mirrors them, and which of two
//! copies of one document is kept. The watch API, `watch import` and `audit --file`
//! read documents into these; the store keeps them and the audit and the dashboard
//! count them.

use chrono::{DateTime, NaiveDate, Utc};

use super::{ClinicId, DoctorId, FieldError, Status};

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
    /// Per [`Status::occupies`].
    pub occupying: bool,
    pub is_break: bool,
    pub booked_via: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// When the source itself last wrote the document (Firestore's `updateTime`,
    /// sent by the forwarder as the `X-Update-Time` header or an `updateTime` field):
    /// the surest order of two events.
    pub update_time: Option<DateTime<Utc>>,
    pub document: serde_json::Value,
}

/// Where two events of one document are put in order: the newest version first (the
/// source's `updateTime`, else the document's `updatedAt`, else its `createdAt`);
/// for the same version the later stage of the day ([`Status::stage`]);
/// then the document's text (its SHA-256), so that whichever order two events arrive
/// in, the same one is kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventOrder {
    /// µs since the epoch; `None` (no time at all) comes first.
    pub version: Option<i64>,
    pub stage: u8,
    pub fingerprint: String,
}

impl EventOrder {
    /// The order of a document at `version` whose status is `status`.
    pub fn of(version: Option<i64>, status: &str, document: &serde_json::Value) -> Self {
        use sha2::Digest;
        EventOrder {
            version,
            stage: Status::stage(status),
            fingerprint: hex::encode(sha2::Sha256::digest(document.to_string().as_bytes())),
        }
    }

    /// What decided between `self` (kept) and `other`, for the trace.
    pub fn decided_by(&self, other: &EventOrder) -> &'static str {
        if self.version != other.version {
            "version"
        } else if self.stage != other.stage {
            "same version: the later stage of the day"
        } else if self.fingerprint != other.fingerprint {
            "same version and stage: the document text (SHA-256)"
        } else {
            "the same event again"
        }
    }
}

/// How far ahead of the server's clock a document's own timestamps may be (clocks
/// drift; a document dated next year would outrank every later real update of it).
pub const MAX_FUTURE: chrono::Duration = chrono::Duration::days(1);

/// Whether a copy of a document ordered `incoming` takes the place of the copy kept,
/// ordered `kept`: when it orders at or after it ([`EventOrder`]), so whichever order
/// copies arrive in, the same one is kept. `store::detection::UPSERT_WATCHED` is this
/// rule in SQL; `audit --file` applies it to the copies of an id a file lists.
pub fn supersedes(kept: &EventOrder, incoming: &EventOrder) -> bool {
    incoming >= kept
}

impl WatchedAppointment {
    /// The version that orders this document's events: µs since the epoch of the
    /// source's `updateTime`, else `updatedAt`, else `createdAt`.
    pub fn version(&self) -> Option<i64> {
        self.update_time
            .or(self.updated_at)
            .or(self.created_at)
            .map(|t| t.timestamp_micros())
    }

    pub fn order(&self) -> EventOrder {
        EventOrder::of(self.version(), &self.status, &self.document)
    }

    /// Refuses a document whose `createdAt` or `updatedAt` is more than [`MAX_FUTURE`]
    /// after `now`.
    pub fn check_not_future(&self, now: DateTime<Utc>) -> Result<(), FieldError> {
        for (field, at) in [
            ("createdAt", self.created_at),
            ("updatedAt", self.updated_at),
            ("updateTime", self.update_time),
        ] {
            if at.is_some_and(|t| t > now + MAX_FUTURE) {
                return Err(FieldError::new(
                    field,
                    "is more than a day after the server's clock; check the sending app's clock",
                ));
            }
        }
        Ok(())
    }
}
