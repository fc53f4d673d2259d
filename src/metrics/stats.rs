//! The clinic's four numbers over a range of local dates, computed from the rows
//! the store read ([`StatsRows`]: rollups, appointment counts, incidents). Pure arithmetic, tested
//! apart from the database.
//!
//! - **Duplicate rate per day**: `extraRows ÷ appointmentsChecked`, in the words of
//!   [`crate::domain::counts`]: for the appointments dated that day (native ones
//!   whatever their status, and watched documents), the appointments beyond the
//!   first in each double booking the incidents recorded (open, acknowledged or
//!   resolved; found in real time or by the audit). Target: below 0.1 %.
//! - **Retry rate**: transactions run again ÷ booking attempts, for the attempts made
//!   on those days.
//! - **Conflicts by hour × weekday**: attempts refused because another patient got
//!   there first ([`super::is_conflict`]), by the clinic's local hour and weekday.
//! - **Per clinic**: the same, one row per clinic, the worst first.
//!
//! Duplicates count by the date of the appointments; bookings, conflicts and retries
//! by the local date of the attempt (an advance booking made on Monday for Friday
//! is Monday's attempt and, if duplicated, Friday's duplicate).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

use super::{is_conflict, BOOKED};
use crate::domain::{ClinicId, Counts, DoctorId, Duplicate, FieldError};
use crate::store::metrics::{DayOutcome, StatsRows};

/// The plan's target: fewer than one duplicate in a thousand appointments.
pub const DUPLICATE_RATE_TARGET: f64 = 0.001;
/// The longest range one request may ask for, in days (both ends included).
pub const MAX_DAYS: i64 = 366;

/// Local dates `from..=to`, at most [`MAX_DAYS`] of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    from: NaiveDate,
    to: NaiveDate,
}

impl DateRange {
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<Self, FieldError> {
        if to < from {
            return Err(FieldError::new("to", "must not be before from"));
        }
        if (to - from).num_days() + 1 > MAX_DAYS {
            return Err(FieldError::new(
                "to",
                format!("must be at most {MAX_DAYS} days from from, both included"),
            ));
        }
        Ok(Self { from, to })
    }

    pub fn from(&self) -> NaiveDate {
        self.from
    }

    pub fn to(&self) -> NaiveDate {
        self.to
    }

    fn contains(&self, date: NaiveDate) -> bool {
        (self.from..=self.to).contains(&date)
    }

    fn days(self) -> impl Iterator<Item = NaiveDate> {
        let to = self.to;
        self.from.iter_days().take_while(move |d| *d <= to)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// The clinic asked for, or `None` for every clinic.
    pub clinic_id: Option<ClinicId>,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub duplicate_rate: DuplicateRate,
    pub retry_rate: RetryRate,
    pub conflicts_by_hour: ConflictsByHour,
    pub clinics: Vec<ClinicStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DuplicateRate {
    pub target: f64,
    /// Over the whole range.
    #[serde(flatten)]
    pub counts: Counts,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Every date of the range, days without appointments included.
    pub days: Vec<DayDuplicates>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DayDuplicates {
    pub date: NaiveDate,
    #[serde(flatten)]
    pub counts: Counts,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// A duplicate rate against the target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// `extraRows ÷ appointmentsChecked`; `None` (null) without appointments.
    pub rate: Option<f64>,
    /// The rate is below the target (or there were no appointments and no duplicates).
    pub met: bool,
}

impl Verdict {
    fn of(counts: &Counts) -> Self {
        let rate = ratio(counts.extra_rows, counts.appointments_checked);
        Self {
            rate,
            met: rate.map_or(counts.extra_rows == 0, |r| r < DUPLICATE_RATE_TARGET),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryRate {
    pub attempts: u64,
    pub retries: u64,
    /// `retries ÷ attempts`; `None` (null) without attempts.
    pub rate: Option<f64>,
}

/// Conflicts per local hour (index 0–23) of each weekday.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConflictsByHour {
    pub total: u64,
    pub mon: [u64; 24],
    pub tue: [u64; 24],
    pub wed: [u64; 24],
    pub thu: [u64; 24],
    pub fri: [u64; 24],
    pub sat: [u64; 24],
    pub sun: [u64; 24],
}

impl ConflictsByHour {
    fn add(&mut self, weekday: Weekday, hour: usize, n: u64) {
        let hours = match weekday {
            Weekday::Mon => &mut self.mon,
            Weekday::Tue => &mut self.tue,
            Weekday::Wed => &mut self.wed,
            Weekday::Thu => &mut self.thu,
            Weekday::Fri => &mut self.fri,
            Weekday::Sat => &mut self.sat,
            Weekday::Sun => &mut self.sun,
        };
        if let Some(cell) = hours.get_mut(hour) {
            *cell += n;
            self.total += n;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClinicStats {
    pub clinic_id: ClinicId,
    /// Booking attempts, whatever they came to.
    pub attempts: u64,
    /// Attempts that made an appointment.
    pub bookings: u64,
    pub conflicts: u64,
    pub retries: u64,
    pub retry_rate: Option<f64>,
    #[serde(flatten)]
    pub counts: Counts,
    #[serde(flatten)]
    pub verdict: Verdict,
}

fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// The audit's counts per clinic and date: duplicates from the incidents (tallied
/// per doctor-day, as [`Counts::tally`] wants), appointments from the store.
fn counts_by_clinic_day(
    range: DateRange,
    rows: &StatsRows,
) -> BTreeMap<(ClinicId, NaiveDate), Counts> {
    let mut duplicates: BTreeMap<(ClinicId, NaiveDate), BTreeMap<DoctorId, Vec<Duplicate>>> =
        BTreeMap::new();
    for incident in rows
        .incidents
        .iter()
        .filter(|i| range.contains(i.group.date))
    {
        let group = &incident.group;
        duplicates
            .entry((group.clinic_id.clone(), group.date))
            .or_default()
            .entry(group.doctor_id.clone())
            .or_default()
            .push(incident.duplicate());
    }
    let mut counts: BTreeMap<(ClinicId, NaiveDate), Counts> = duplicates
        .into_iter()
        .map(|(day, doctors)| (day, Counts::tally(0, doctors.values().map(Vec::as_slice))))
        .collect();
    for dated in rows.appointments.iter().filter(|a| range.contains(a.date)) {
        counts
            .entry((dated.clinic_id.clone(), dated.date))
            .or_default()
            .appointments_checked += dated.count;
    }
    counts
}

pub fn stats(clinic_id: Option<ClinicId>, range: DateRange, rows: &StatsRows) -> Stats {
    let outcomes: Vec<&DayOutcome> = rows
        .day_outcomes
        .iter()
        .filter(|o| range.contains(o.day))
        .collect();
    let counts = counts_by_clinic_day(range, rows);

    let days: Vec<DayDuplicates> = range
        .days()
        .map(|date| {
            let mut day = Counts::default();
            for (_, c) in counts.iter().filter(|((_, d), _)| *d == date) {
                day += *c;
            }
            DayDuplicates {
                date,
                counts: day,
                verdict: Verdict::of(&day),
            }
        })
        .collect();
    let mut over_range = Counts::default();
    for day in &days {
        over_range += day.counts;
    }

    let attempts = outcomes.iter().map(|o| o.count).sum();
    let retries = outcomes.iter().map(|o| o.retries).sum();

    let mut conflicts_by_hour = ConflictsByHour::default();
    for h in rows
        .hour_outcomes
        .iter()
        .filter(|h| range.contains(h.day) && is_conflict(&h.outcome))
    {
        conflicts_by_hour.add(h.day.weekday(), h.hour as usize, h.count);
    }

    let clinic_ids: BTreeSet<&ClinicId> = outcomes
        .iter()
        .map(|o| &o.clinic_id)
        .chain(counts.keys().map(|(c, _)| c))
        .collect();
    let mut clinics: Vec<ClinicStats> = clinic_ids
        .into_iter()
        .map(|id| {
            let own: Vec<&DayOutcome> = outcomes
                .iter()
                .copied()
                .filter(|o| &o.clinic_id == id)
                .collect();
            let sum = |pick: fn(&DayOutcome) -> u64, keep: fn(&str) -> bool| -> u64 {
                own.iter()
                    .copied()
                    .filter(|o| keep(&o.outcome))
                    .map(pick)
                    .sum()
            };
            let mut duplicates = Counts::default();
            for (_, c) in counts.iter().filter(|((c, _), _)| c == id) {
                duplicates += *c;
            }
            let attempts = sum(|o| o.count, |_| true);
            let retries = sum(|o| o.retries, |_| true);
            ClinicStats {
                clinic_id: id.clone(),
                attempts,
                bookings: sum(|o| o.count, |o| o == BOOKED),
                conflicts: sum(|o| o.count, is_conflict),
                retries,
                retry_rate: ratio(retries, attempts),
                counts: duplicates,
                verdict: Verdict::of(&duplicates),
            }
        })
        .collect();
    // Which clinics suffer most: the most extra rows, then the most conflicts.
    clinics.sort_by(|a, b| {
        (b.counts.extra_rows, b.conflicts)
            .cmp(&(a.counts.extra_rows, a.conflicts))
            .then_with(|| a.clinic_id.cmp(&b.clinic_id))
    });

    Stats {
        clinic_id,
        from: range.from,
        to: range.to,
        duplicate_rate: DuplicateRate {
            target: DUPLICATE_RATE_TARGET,
            counts: over_range,
            verdict: Verdict::of(&over_range),
            days,
        },
        retry_rate: RetryRate {
            attempts,
            retries,
            rate: ratio(retries, attempts),
        },
        conflicts_by_hour,
        clinics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::reconcile::reconcile;
    use crate::domain::{DuplicateKind, FoundBy, Group, Incident, MemberRef};
    use crate::store::metrics::{DayAppointments, HourOutcome};
    use chrono::{DateTime, Utc};

    fn date(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, d).unwrap()
    }

    fn clinic(id: &str) -> ClinicId {
        ClinicId::parse("c", id).unwrap()
    }

    fn outcome(c: &str, d: u32, outcome: &str, count: u64, retries: u64) -> DayOutcome {
        DayOutcome {
            clinic_id: clinic(c),
            day: date(d),
            outcome: outcome.into(),
            count,
            retries,
        }
    }

    fn dated(c: &str, d: u32, count: u64) -> DayAppointments {
        DayAppointments {
            clinic_id: clinic(c),
            date: date(d),
            count,
        }
    }

    fn hour(d: u32, hour: u32, outcome: &str, count: u64) -> HourOutcome {
        HourOutcome {
            day: date(d),
            hour,
            outcome: outcome.into(),
            count,
        }
    }

    /// The incident the detector opens for appointments `ids` sharing a slot or token.
    fn incident(c: &str, d: u32, kind: DuplicateKind, key: &str, ids: &[&str]) -> Incident {
        let group = Group {
            clinic_id: clinic(c),
            doctor_id: DoctorId::parse("d", "dr-asha").unwrap(),
            date: date(d),
        };
        let found = Duplicate {
            kind,
            key: key.into(),
            members: ids
                .iter()
                .map(|id| MemberRef {
                    source: crate::domain::incident::NATIVE.into(),
                    id: (*id).into(),
                })
                .collect(),
            last_change: None,
            last_commit: None,
        };
        let at = DateTime::<Utc>::UNIX_EPOCH;
        reconcile(&group, &[found], &[], at, FoundBy::Realtime)
            .incidents
            .remove(0)
    }

    fn range(from: u32, to: u32) -> DateRange {
        DateRange::new(date(from), date(to)).unwrap()
    }

    #[test]
    fn one_extra_row_in_a_thousand_misses_the_target_and_one_in_two_thousand_meets_it() {
        let rows = StatsRows {
            incidents: vec![
                incident("kochi", 1, DuplicateKind::Slot, "5", &["a", "b"]),
                incident("kochi", 2, DuplicateKind::Slot, "7", &["c", "d"]),
            ],
            appointments: vec![dated("kochi", 1, 1000), dated("kochi", 2, 2000)],
            ..StatsRows::default()
        };
        let stats = stats(None, range(1, 3), &rows);
        let days = &stats.duplicate_rate.days;
        assert_eq!(days.len(), 3, "every date of the range is listed");
        assert_eq!(days[0].verdict.rate, Some(0.001));
        assert!(!days[0].verdict.met, "the target is below 0.1 %, not at it");
        assert_eq!(days[1].verdict.rate, Some(0.0005));
        assert!(days[1].verdict.met);
        assert_eq!(
            days[2].verdict,
            Verdict {
                rate: None,
                met: true
            }
        );
        assert_eq!(stats.duplicate_rate.counts.extra_rows, 2);
        assert_eq!(stats.duplicate_rate.counts.appointments_checked, 3000);
    }

    #[test]
    fn a_slot_and_its_token_doubled_together_are_one_group_and_three_in_a_slot_two_extra() {
        let rows = StatsRows {
            incidents: vec![
                incident("kochi", 1, DuplicateKind::Slot, "5", &["a", "b"]),
                incident("kochi", 1, DuplicateKind::Token, "A1-006", &["a", "b"]),
                incident("kochi", 1, DuplicateKind::Slot, "9", &["c", "d", "e"]),
            ],
            appointments: vec![dated("kochi", 1, 40)],
            ..StatsRows::default()
        };
        let stats = stats(None, range(1, 1), &rows);
        let day = &stats.duplicate_rate.days[0].counts;
        assert_eq!(
            (day.duplicate_groups, day.extra_rows, day.affected_rows),
            (2, 3, 5)
        );
        assert_eq!(stats.duplicate_rate.days[0].verdict.rate, Some(3.0 / 40.0));
    }

    #[test]
    fn retry_rate_is_retries_over_every_attempt_whatever_it_came_to() {
        let rows = StatsRows {
            day_outcomes: vec![
                outcome("kochi", 1, BOOKED, 90, 3),
                outcome("kochi", 1, "slot_taken", 8, 1),
                outcome("kochi", 2, "failed", 2, 0),
            ],
            ..StatsRows::default()
        };
        let stats = stats(None, range(1, 2), &rows);
        assert_eq!(
            stats.retry_rate,
            RetryRate {
                attempts: 100,
                retries: 4,
                rate: Some(0.04)
            }
        );
        let none = super::stats(None, range(1, 2), &StatsRows::default());
        assert_eq!(none.retry_rate.rate, None);
    }

    #[test]
    fn conflicts_land_on_their_local_weekday_and_hour() {
        // 1 December 2026 is a Tuesday, the 7th a Monday.
        let rows = StatsRows {
            hour_outcomes: vec![
                hour(1, 9, "slot_taken", 3),
                hour(1, 9, "no_walk_in_slot", 1),
                hour(1, 9, BOOKED, 40),
                hour(1, 9, "slot_too_soon", 2),
                hour(7, 17, "token_taken", 2),
                hour(8, 9, "no_slot_available", 1),
            ],
            ..StatsRows::default()
        };
        let stats = stats(None, range(1, 8), &rows);
        let by_hour = &stats.conflicts_by_hour;
        assert_eq!(
            by_hour.tue[9], 5,
            "two Tuesdays add up, bookings and policy do not"
        );
        assert_eq!(by_hour.mon[17], 2);
        assert_eq!(by_hour.total, 7);
        assert_eq!(by_hour.wed, [0; 24]);
    }

    #[test]
    fn clinics_are_listed_worst_first_with_their_own_numbers() {
        let rows = StatsRows {
            day_outcomes: vec![
                outcome("aluva", 1, BOOKED, 50, 0),
                outcome("aluva", 1, "no_walk_in_slot", 6, 0),
                outcome("kochi", 1, BOOKED, 30, 2),
                outcome("kochi", 1, "slot_taken", 3, 0),
                outcome("kochi", 1, "slot_too_soon", 4, 0),
                outcome("thrissur", 1, BOOKED, 10, 0),
            ],
            incidents: vec![incident("kochi", 1, DuplicateKind::Slot, "5", &["a", "b"])],
            appointments: vec![dated("kochi", 1, 31), dated("aluva", 1, 50)],
            ..StatsRows::default()
        };
        let stats = stats(None, range(1, 1), &rows);
        let order: Vec<&str> = stats.clinics.iter().map(|c| c.clinic_id.as_str()).collect();
        assert_eq!(order, ["kochi", "aluva", "thrissur"]);
        let kochi = &stats.clinics[0];
        assert_eq!(
            (
                kochi.attempts,
                kochi.bookings,
                kochi.conflicts,
                kochi.retries
            ),
            (37, 30, 3, 2),
            "a refusal of policy is an attempt, not a conflict"
        );
        assert_eq!(kochi.counts.extra_rows, 1);
        assert_eq!(kochi.verdict.rate, Some(1.0 / 31.0));
        assert_eq!(stats.clinics[1].conflicts, 6);
    }

    #[test]
    fn ranges_run_forwards_and_hold_at_most_366_days() {
        assert!(DateRange::new(date(2), date(1)).is_err_and(|e| e.field == "to"));
        let start = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
        assert!(DateRange::new(start, start + chrono::Duration::days(365)).is_ok());
        assert!(DateRange::new(start, start + chrono::Duration::days(366)).is_err());
        assert_eq!(range(1, 1).days().count(), 1);
    }

    #[test]
    fn the_answer_speaks_the_audits_words() {
        let stats = stats(Some(clinic("kochi")), range(1, 1), &StatsRows::default());
        let json = serde_json::to_value(&stats).unwrap();
        let day = &json["duplicateRate"]["days"][0];
        for field in [
            "date",
            "appointmentsChecked",
            "duplicateGroups",
            "extraRows",
            "affectedRows",
            "rate",
            "met",
        ] {
            assert!(day.get(field).is_some(), "{field} in {day}");
        }
        assert_eq!(json["duplicateRate"]["target"], 0.001);
        assert_eq!(json["conflictsByHour"]["mon"].as_array().unwrap().len(), 24);
    }
}
