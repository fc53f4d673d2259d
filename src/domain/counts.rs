//! The three numbers of an audit, defined once. Data tools say "duplicate count" and
//! mean three different things; slotguard names each:
//!
//! - `duplicateGroups`: double bookings. A slot given twice is one group; its token
//!   given to the same appointments is the same double booking, not a second group
//!   (as the detector folds it into one incident). A token shared by appointments
//!   that do not also share a slot is a group of its own.
//! - `extraRows`: appointments beyond the first in each group, summed over groups:
//!   how many bookings would have to move for the day to be clean.
//! - `affectedRows`: distinct appointments in at least one group: how many patients
//!   the clinic has to call.
//!
//! And what they are out of, `appointmentsChecked` ([`is_checked`]): the same number in
//! `audit --file`, the audit runs, `/api/v1/stats` and the weekly report.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::incident::same_double_booking_once;
use super::{Duplicate, MemberRef};

/// Whether an appointment counts in `appointmentsChecked`, defined once: every
/// appointment of the day, native or watched, whatever its status (a cancelled one was
/// checked too), once per id (the newest copy of a document, as the mirror keeps it),
/// except a watched document its app deleted (the mirror keeps a tombstone, `deleted`)
/// and a Kloqo break placeholder (`is_break`: a slot kept free, no patient). Native
/// appointments are never either. The stores count by `store::audit::WATCHED_CHECKED`,
/// this rule as SQL.
pub const fn is_checked(is_break: bool, deleted: bool) -> bool {
    !is_break && !deleted
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Appointments of the day, per [`is_checked`], whatever their outcome.
    pub appointments_checked: u64,
    pub duplicate_groups: u64,
    pub extra_rows: u64,
    pub affected_rows: u64,
}

impl Counts {
    /// Counts the duplicates found, one slice per doctor-day (members are named per
    /// doctor-day: the same id on another day is another row); `checked`
    /// appointments were read.
    pub fn tally<'a>(checked: u64, days: impl IntoIterator<Item = &'a [Duplicate]>) -> Counts {
        let mut counts = Counts {
            appointments_checked: checked,
            ..Counts::default()
        };
        for found in days {
            let mut affected: BTreeSet<&MemberRef> = BTreeSet::new();
            let once = same_double_booking_once(found);
            for duplicate in &once {
                counts.duplicate_groups += 1;
                counts.extra_rows += duplicate.members.len().saturating_sub(1) as u64;
            }
            for duplicate in found {
                affected.extend(duplicate.members.iter());
            }
            counts.affected_rows += affected.len() as u64;
        }
        counts
    }

    pub fn is_clean(&self) -> bool {
        self.duplicate_groups == 0
    }
}

/// Counts of several days or clinics add up field by field.
impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, more: Counts) {
        self.appointments_checked += more.appointments_checked;
        self.duplicate_groups += more.duplicate_groups;
        self.extra_rows += more.extra_rows;
        self.affected_rows += more.affected_rows;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DuplicateKind;

    fn dup(kind: DuplicateKind, key: &str, ids: &[&str]) -> Duplicate {
        Duplicate {
            kind,
            key: key.into(),
            members: ids
                .iter()
                .map(|id| MemberRef {
                    source: "kloqo".into(),
                    id: (*id).into(),
                })
                .collect(),
            last_change: None,
            last_commit: None,
        }
    }

    #[test]
    fn a_slot_and_its_token_given_to_the_same_two_is_one_group_one_extra_two_affected() {
        let found = [
            dup(DuplicateKind::Slot, "5", &["a", "b"]),
            dup(DuplicateKind::Token, "A1-006", &["a", "b"]),
        ];
        let counts = Counts::tally(34, [&found[..]]);
        assert_eq!(
            counts,
            Counts {
                appointments_checked: 34,
                duplicate_groups: 1,
                extra_rows: 1,
                affected_rows: 2
            }
        );
    }

    #[test]
    fn three_in_one_slot_and_a_separate_token_pair_count_each_row_once() {
        let found = [
            dup(DuplicateKind::Slot, "5", &["a", "b", "c"]),
            dup(DuplicateKind::Token, "W1-101", &["c", "d"]),
        ];
        let counts = Counts::tally(10, [&found[..]]);
        assert_eq!(counts.duplicate_groups, 2);
        assert_eq!(counts.extra_rows, 3);
        assert_eq!(counts.affected_rows, 4);
    }

    #[test]
    fn the_same_ids_on_two_days_are_different_rows() {
        let found = [dup(DuplicateKind::Slot, "5", &["a", "b"])];
        let counts = Counts::tally(4, [&found[..], &found[..]]);
        assert_eq!(counts.affected_rows, 4);
        assert!(!counts.is_clean());
    }
}
