//! Detection: after every committed write to a doctor-day, native or watched, check
//! that day for two occupying appointments in one slot or with one token, and keep
//! one incident per such duplicate. [`reconcile`] decides (pure); [`detector`] runs
//! it on wake-ups and periodic re-scans.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{ClinicId, DoctorId};

pub mod detector;
pub mod reconcile;

pub use detector::{Detector, IncidentChanged, Wakeups};

/// Source name of slotguard's own appointments among the members of an incident.
pub const NATIVE: &str = "native";

/// A doctor's day at a clinic: the unit detection checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub clinic_id: ClinicId,
    pub doctor_id: DoctorId,
    pub date: NaiveDate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateKind {
    Slot,
    Token,
}

impl DuplicateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DuplicateKind::Slot => "slot",
            DuplicateKind::Token => "token",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "slot" => Some(DuplicateKind::Slot),
            "token" => Some(DuplicateKind::Token),
            _ => None,
        }
    }
}

/// An appointment as a member of a duplicate: where it lives and its id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemberRef {
    pub source: String,
    pub id: String,
}

/// Occupying appointments sharing one slot or one token of a group, as found now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub kind: DuplicateKind,
    /// The slot index (as text) or the token number.
    pub key: String,
    pub members: BTreeSet<MemberRef>,
    /// The newest change among the members as their own timestamps tell it
    /// (`updatedAt`/`createdAt` of a document): judges regressions.
    pub last_change: Option<DateTime<Utc>>,
    /// The newest commit among the members' rows: detection latency runs from here.
    pub last_commit: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Open,
    Acknowledged,
    Resolved,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Resolved => "resolved",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            IncidentState::Open,
            IncidentState::Acknowledged,
            IncidentState::Resolved,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FoundBy {
    Realtime,
    Audit,
}

impl FoundBy {
    pub fn as_str(self) -> &'static str {
        match self {
            FoundBy::Realtime => "realtime",
            FoundBy::Audit => "audit",
        }
    }
}

/// One incident per fingerprint (kind, clinic, doctor, date, key).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    pub id: String,
    #[serde(flatten)]
    pub group: Group,
    pub kind: DuplicateKind,
    pub key: String,
    pub state: IncidentState,
    pub found_by: FoundBy,
    pub members: Vec<MemberRef>,
    pub regressions: u32,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// When the members last changed (opened, grew, shrank, resolved, reopened).
    pub changed_at: DateTime<Utc>,
    /// Commit of the newest member → incident recorded, when this detector saw it.
    pub detection_ms: Option<i64>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub note: Option<String>,
    pub last_notified_at: Option<DateTime<Utc>>,
    /// Bumped by every saved change; a change is saved only over the revision it was
    /// made from (`StoreError::Changed` otherwise), so concurrent writers never
    /// overwrite each other.
    #[serde(skip)]
    pub revision: i64,
}

impl Incident {
    /// The duplicate as this incident last recorded it, for counting after the fact.
    pub fn duplicate(&self) -> Duplicate {
        Duplicate {
            kind: self.kind,
            key: self.key.clone(),
            members: self.members.iter().cloned().collect(),
            last_change: None,
            last_commit: None,
        }
    }
}

/// An alert to send about an incident, written with the incident change.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub id: String,
    pub clinic_id: ClinicId,
    pub incident_id: String,
    pub event: crate::alert::Event,
    pub created_at: DateTime<Utc>,
}
