//! When each clinic's day is audited, in the clinic's own time zone whatever the
//! server's. Pure: the runner asks with the clock's `now` and what `audit_runs` holds.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc, Weekday};

use crate::domain::Clinic;

/// An `auditAt` before noon audits the day that just ended (a 02:00 audit covers
/// yesterday); from noon on it audits the day it runs on (the default 23:00 covers
/// the day after its evening session).
const NOON: NaiveTime = match NaiveTime::from_hms_opt(12, 0, 0) {
    Some(t) => t,
    None => panic!("12:00 is a time"),
};

/// The local date on which the audit of `date` runs.
fn runs_on(date: NaiveDate, audit_at: NaiveTime) -> NaiveDate {
    if audit_at < NOON {
        date.succ_opt().unwrap_or(date)
    } else {
        date
    }
}

/// The instant the audit of the clinic's local `date` is due.
pub fn due_at(clinic: &Clinic, date: NaiveDate) -> DateTime<Utc> {
    clinic.instant(runs_on(date, clinic.audit_at).and_time(clinic.audit_at))
}

/// The newest local date whose audit is due at `now`.
pub fn latest_due(clinic: &Clinic, now: DateTime<Utc>) -> NaiveDate {
    let local = clinic.local(now);
    let today = local.date();
    let covered_today = if clinic.audit_at < NOON {
        today.pred_opt().unwrap_or(today)
    } else {
        today
    };
    if now >= due_at(clinic, covered_today) {
        covered_today
    } else {
        covered_today.pred_opt().unwrap_or(covered_today)
    }
}

/// The dates to audit now, oldest first: every due date of the last `catch_up_days`
/// (never before the clinic existed) whose scheduled audit has not run.
pub fn dates_to_audit(
    latest_due: NaiveDate,
    first_day: NaiveDate,
    catch_up_days: u32,
    audited: &[NaiveDate],
) -> Vec<NaiveDate> {
    let window_start = latest_due - Duration::days(i64::from(catch_up_days.max(1)) - 1);
    let start = window_start.max(first_day);
    start
        .iter_days()
        .take_while(|d| *d <= latest_due)
        .filter(|d| !audited.contains(d))
        .collect()
}

/// The ISO week holding `date`, written as `2026-W47`.
pub fn iso_week(date: NaiveDate) -> String {
    let week = date.iso_week();
    format!("{}-W{:02}", week.year(), week.week())
}

/// The Monday of ISO week `raw` (`2026-W47`); `None` when it is no such week.
pub fn parse_iso_week(raw: &str) -> Option<NaiveDate> {
    let (year, week) = raw.split_once("-W")?;
    if year.len() != 4 || week.len() != 2 || !week.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDate::from_isoywd_opt(year.parse().ok()?, week.parse().ok()?, Weekday::Mon)
}

/// The weekly report is due in the clinic at Monday `at`, local: the week it covers
/// (its Monday) once that moment has passed, the previous one otherwise.
pub fn last_reported_week(clinic: &Clinic, at: NaiveTime, now: DateTime<Utc>) -> NaiveDate {
    let today = clinic.local(now).date();
    let this_monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
    let due = clinic.instant(this_monday.and_time(at));
    let last_week = this_monday - Duration::days(7);
    if now >= due {
        last_week
    } else {
        last_week - Duration::days(7)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BookingPolicy, ClinicId};

    fn clinic(tz: chrono_tz::Tz, audit_at: &str) -> Clinic {
        Clinic {
            id: ClinicId::parse("id", "c").unwrap(),
            name: "C".into(),
            timezone: tz,
            policy: BookingPolicy::default(),
            audit_at: NaiveTime::parse_from_str(audit_at, "%H:%M").unwrap(),
        }
    }

    fn utc(raw: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(raw).unwrap().to_utc()
    }

    fn day(raw: &str) -> NaiveDate {
        raw.parse().unwrap()
    }

    #[test]
    fn at_22_59_india_time_the_day_is_not_due_and_at_23_00_it_is() {
        let kochi = clinic(chrono_tz::Asia::Kolkata, "23:00");
        // 23:00 IST is 17:30 UTC.
        assert_eq!(
            latest_due(&kochi, utc("2026-11-23T17:29:00Z")),
            day("2026-11-22")
        );
        assert_eq!(
            latest_due(&kochi, utc("2026-11-23T17:30:00Z")),
            day("2026-11-23")
        );
        assert_eq!(
            due_at(&kochi, day("2026-11-23")),
            utc("2026-11-23T17:30:00Z")
        );
    }

    #[test]
    fn an_audit_before_noon_covers_the_day_that_ended_even_when_utc_is_a_day_behind() {
        // 02:00 IST on the 24th is 20:30 UTC on the 23rd.
        let kochi = clinic(chrono_tz::Asia::Kolkata, "02:00");
        assert_eq!(
            due_at(&kochi, day("2026-11-23")),
            utc("2026-11-23T20:30:00Z")
        );
        assert_eq!(
            latest_due(&kochi, utc("2026-11-23T20:30:00Z")),
            day("2026-11-23")
        );
        assert_eq!(
            latest_due(&kochi, utc("2026-11-23T20:29:00Z")),
            day("2026-11-22")
        );
    }

    #[test]
    fn a_clinic_west_of_utc_is_audited_on_its_own_date() {
        // 23:00 in New York on 2026-11-23 (EST, UTC−5) is 04:00 UTC on the 24th.
        let ny = clinic(chrono_tz::America::New_York, "23:00");
        assert_eq!(
            latest_due(&ny, utc("2026-11-24T03:59:00Z")),
            day("2026-11-22")
        );
        assert_eq!(
            latest_due(&ny, utc("2026-11-24T04:00:00Z")),
            day("2026-11-23")
        );
    }

    #[test]
    fn missed_nights_are_caught_up_within_the_window_and_not_before_the_clinic_existed() {
        let latest = day("2026-11-23");
        let audited = [day("2026-11-20")];
        assert_eq!(
            dates_to_audit(latest, day("2026-01-01"), 7, &audited),
            vec![
                day("2026-11-17"),
                day("2026-11-18"),
                day("2026-11-19"),
                day("2026-11-21"),
                day("2026-11-22"),
                day("2026-11-23")
            ]
        );
        assert_eq!(
            dates_to_audit(latest, day("2026-11-22"), 7, &[]),
            vec![day("2026-11-22"), day("2026-11-23")]
        );
        assert!(dates_to_audit(latest, day("2026-11-24"), 7, &[]).is_empty());
    }

    #[test]
    fn iso_weeks_read_and_write_the_same() {
        assert_eq!(iso_week(day("2026-11-23")), "2026-W48");
        assert_eq!(parse_iso_week("2026-W48"), Some(day("2026-11-23")));
        assert_eq!(iso_week(day("2027-01-01")), "2026-W53");
        for bad in ["2026-W54", "2026W48", "2026-W4", "26-W48", "2026-W+1", ""] {
            assert_eq!(parse_iso_week(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_weekly_report_covers_last_week_once_monday_09_00_has_passed() {
        let kochi = clinic(chrono_tz::Asia::Kolkata, "23:00");
        let nine = NaiveTime::from_hms_opt(9, 0, 0).unwrap();
        // Monday 2026-11-23 09:00 IST is 03:30 UTC.
        assert_eq!(
            last_reported_week(&kochi, nine, utc("2026-11-23T03:30:00Z")),
            day("2026-11-16")
        );
        assert_eq!(
            last_reported_week(&kochi, nine, utc("2026-11-23T03:29:00Z")),
            day("2026-11-09")
        );
    }
}
