//! Audit: a whole day (or an export file) checked at once for duplicate slots and
//! tokens, as the nightly audit, `slotguard audit` and the weekly report see it.
//! [`crate::domain::counts`] says what the three numbers every audit reports mean.

pub mod command;
pub mod file;
pub mod report;
pub mod runner;
pub mod scan;
pub mod schedule;
pub mod skim;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::domain::incident::same_double_booking_once;
use crate::domain::schedule::parse_date;
use crate::domain::{Duplicate, DuplicateKind, FieldError, Group, MemberRef};
use crate::metrics::stats::DateRange;

/// How `slotguard audit` prints its report on stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people: the counts, then one line per duplicate group.
    #[default]
    Table,
    /// One JSON object: the counts and the groups with their member ids (and, for a
    /// file, the records it could not read).
    Json,
    /// One row per duplicate group (per member and unreadable record for a file).
    Csv,
}

/// One double booking as an audit lists it: a slot or token of a doctor-day and the
/// appointments sharing it (ids only: the report may travel by email).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    #[serde(flatten)]
    pub group: Group,
    pub kind: DuplicateKind,
    pub key: String,
    pub members: Vec<MemberRef>,
}

/// The double bookings of each doctor-day, a slot and its token given to the same
/// appointments listed once (as [`crate::domain::counts`] counts them).
pub fn findings(duplicates: &BTreeMap<Group, Vec<Duplicate>>) -> Vec<Finding> {
    duplicates
        .iter()
        .flat_map(|(group, found)| {
            same_double_booking_once(found)
                .into_iter()
                .map(move |d| Finding {
                    group: group.clone(),
                    kind: d.kind,
                    key: d.key,
                    members: d.members.into_iter().collect(),
                })
        })
        .collect()
}

/// Dates as `--date D` or `--from D --to D` (and `date`, `from`, `to` in a query)
/// give them: one or the other, in order, within [`crate::metrics::stats::MAX_DAYS`].
pub fn date_range(
    date: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Option<DateRange>, FieldError> {
    match (date, from, to) {
        (None, None, None) => Ok(None),
        (Some(d), None, None) => {
            let d = parse_date("date", d)?;
            DateRange::new(d, d).map(Some)
        }
        (Some(_), _, _) => Err(FieldError::new("date", "give either date, or from and to")),
        (None, Some(_), None) => Err(FieldError::new("to", "is required with from")),
        (None, None, Some(_)) => Err(FieldError::new("from", "is required with to")),
        (None, Some(f), Some(t)) => {
            DateRange::new(parse_date("from", f)?, parse_date("to", t)?).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn a_date_range_is_one_day_or_an_ordered_bounded_span() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let span = |r: Option<DateRange>| r.map(|r| (r.from(), r.to()));
        assert_eq!(
            span(date_range(Some("2026-11-23"), None, None).unwrap()),
            Some((d("2026-11-23"), d("2026-11-23")))
        );
        assert_eq!(
            span(date_range(None, Some("2026-11-01"), Some("2026-11-30")).unwrap()),
            Some((d("2026-11-01"), d("2026-11-30")))
        );
        assert!(date_range(None, None, None).unwrap().is_none());
        let field = |r: Result<_, FieldError>| r.unwrap_err().field;
        assert_eq!(field(date_range(Some("2026-02-30"), None, None)), "date");
        assert_eq!(
            field(date_range(Some("2026-11-01"), Some("2026-11-01"), None)),
            "date"
        );
        assert_eq!(
            field(date_range(None, Some("2026-11-02"), Some("2026-11-01"))),
            "to"
        );
        assert_eq!(
            field(date_range(None, Some("2025-01-01"), Some("2026-11-01"))),
            "to"
        );
        assert_eq!(field(date_range(None, Some("2026-11-01"), None)), "to");
    }
}
