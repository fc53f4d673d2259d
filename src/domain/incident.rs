//! Duplicates and the incidents kept about them: the doctor-days detection checks,
//! what writes touched of them, what a duplicate is, an incident's states and the
//! alerts written with its changes. Detection and the audit find them, the store
//! keeps them, alerting, the metrics and the dashboard read them.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::{ClinicId, DoctorId, Event};

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

/// The slots and tokens of a doctor-day that writes took or left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    pub slots: BTreeSet<u32>,
    pub tokens: BTreeSet<String>,
}

impl Keys {
    /// Whether an incident of this kind and key is about one of these keys.
    pub fn holds(&self, kind: DuplicateKind, key: &str) -> bool {
        match kind {
            DuplicateKind::Slot => key.parse().is_ok_and(|slot| self.slots.contains(&slot)),
            DuplicateKind::Token => self.tokens.contains(key),
        }
    }
}

/// What writes touched of one doctor-day: all of it (a booking, a re-scan, another
/// server's wake-up), or only some of its slots and tokens (a watched document:
/// where it is now and where it was), which is all a duplicate they made can be in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    Day,
    Keys(Keys),
}

/// Doctor-days that writes touched, each with its [`Reach`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched(BTreeMap<Group, Reach>);

impl Touched {
    /// The whole of `day`.
    pub fn day(&mut self, day: Group) {
        self.0.insert(day, Reach::Day);
    }

    /// One slot and token of `day` (no token: a break placeholder's).
    pub fn key(&mut self, day: Group, slot: u32, token: Option<String>) {
        let reach = self
            .0
            .entry(day)
            .or_insert_with(|| Reach::Keys(Keys::default()));
        if let Reach::Keys(keys) = reach {
            keys.slots.insert(slot);
            keys.tokens.extend(token);
        }
    }

    /// Everything `other` touched too.
    pub fn merge(&mut self, other: Touched) {
        for (day, reach) in other.0 {
            match reach {
                Reach::Day => self.day(day),
                Reach::Keys(keys) => {
                    let mine = self
                        .0
                        .entry(day)
                        .or_insert_with(|| Reach::Keys(Keys::default()));
                    if let Reach::Keys(mine) = mine {
                        mine.slots.extend(keys.slots);
                        mine.tokens.extend(keys.tokens);
                    }
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn days(&self) -> impl Iterator<Item = &Group> {
        self.0.keys()
    }

    pub fn into_inner(self) -> BTreeMap<Group, Reach> {
        self.0
    }
}

impl FromIterator<Group> for Touched {
    fn from_iter<I: IntoIterator<Item = Group>>(days: I) -> Self {
        Self(days.into_iter().map(|day| (day, Reach::Day)).collect())
    }
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
    pub event: Event,
    pub created_at: DateTime<Utc>,
}

/// Incidents to save (new or changed) and the alerts to send about them.
#[derive(Debug, Default)]
pub struct Changes {
    pub incidents: Vec<Incident>,
    pub outbox: Vec<OutboxEntry>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty()
    }
}

/// Two appointments in one slot usually share its token too (advance tokens derive
/// from the slot): that is one double booking, reported once, as the slot. A token
/// duplicate stands on its own only when its members differ from every slot
/// duplicate's.
pub fn same_double_booking_once(found: &[Duplicate]) -> Vec<Duplicate> {
    let slot_members: Vec<&BTreeSet<MemberRef>> = found
        .iter()
        .filter(|d| d.kind == DuplicateKind::Slot)
        .map(|d| &d.members)
        .collect();
    found
        .iter()
        .filter(|d| d.kind == DuplicateKind::Slot || !slot_members.contains(&&d.members))
        .cloned()
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `doctor`'s 1 December 2026 at kochi.
    pub(crate) fn day(doctor: &str) -> Group {
        Group {
            clinic_id: ClinicId::parse("c", "kochi").unwrap(),
            doctor_id: DoctorId::parse("d", doctor).unwrap(),
            date: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
        }
    }

    fn reach(touched: &Touched, doctor: &str) -> Option<Reach> {
        touched.clone().into_inner().get(&day(doctor)).cloned()
    }

    #[test]
    fn keys_gather_per_day_and_a_whole_day_absorbs_them() {
        let mut touched = Touched::default();
        touched.key(day("dr-asha"), 5, Some("A1-006".into()));
        touched.key(day("dr-asha"), 7, None);
        let mut other = Touched::default();
        other.key(day("dr-asha"), 9, Some("A1-010".into()));
        other.key(day("dr-ravi"), 1, Some("B-1".into()));
        touched.merge(other);
        let Some(Reach::Keys(keys)) = reach(&touched, "dr-asha") else {
            panic!("dr-asha's keys: {touched:?}");
        };
        assert_eq!(keys.slots, BTreeSet::from([5, 7, 9]));
        assert_eq!(
            keys.tokens,
            BTreeSet::from(["A1-006".to_owned(), "A1-010".to_owned()])
        );
        assert!(keys.holds(DuplicateKind::Slot, "7"));
        assert!(keys.holds(DuplicateKind::Token, "A1-010"));
        assert!(!keys.holds(DuplicateKind::Slot, "A1-010"));
        assert!(!keys.holds(DuplicateKind::Token, "5"));

        // A booking (the whole day) overrides keys, and keys never narrow it again.
        touched.merge(std::iter::once(day("dr-ravi")).collect());
        touched.key(day("dr-ravi"), 2, None);
        let mut again = Touched::default();
        again.key(day("dr-ravi"), 3, None);
        touched.merge(again);
        assert_eq!(reach(&touched, "dr-ravi"), Some(Reach::Day));
        assert_eq!(touched.len(), 2);
    }
}
