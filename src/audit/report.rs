//! The weekly report: a clinic's (or every clinic's) ISO week — bookings, conflicts
//! and retries per day, the duplicate rate per day against the 0.1 % target,
//! conflicts by local hour × weekday, per-clinic and per-doctor tables, incidents and
//! audit runs. Built from the same reads as `/api/v1/stats` (`metrics::stats`),
//! rendered as HTML, JSON or CSV, stored once a week is over so it reads the same
//! later, and sent Mondays at `weekly_report_at` local time.

use std::collections::BTreeMap;

use askama::Template;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::schedule;
use crate::alert::Notification;
use crate::domain::{
    Clinic, ClinicId, Counts, DoctorId, Duplicate, Event, IncidentState, KnownClinic, KnownClinics,
};
use crate::metrics::stats::{self, DateRange, Stats, DUPLICATE_RATE_TARGET};
use crate::metrics::{is_conflict, BOOKED};
use crate::store::audit::AuditRun;
use crate::store::metrics::DoctorOutcome;
use crate::store::{Store, StoreError};

/// How a report is written out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Html,
    Json,
    Csv,
}

impl Format {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "html" => Some(Format::Html),
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// Booking attempts and what they came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempts {
    /// Booking attempts, whatever they came to.
    pub attempts: u64,
    pub bookings: u64,
    /// Attempts refused because another patient got there first (409s).
    pub conflicts: u64,
    /// Transactions run again.
    pub retries: u64,
}

impl Attempts {
    fn add(&mut self, outcome: &str, count: u64, retries: u64) {
        self.attempts += count;
        self.retries += retries;
        if outcome == BOOKED {
            self.bookings += count;
        } else if is_conflict(outcome) {
            self.conflicts += count;
        }
    }
}

/// One day of the week.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DayRow {
    pub date: NaiveDate,
    pub weekday: String,
    /// Made that local day.
    #[serde(flatten)]
    pub attempts: Attempts,
    /// The appointments dated that day and their duplicates.
    #[serde(flatten)]
    pub counts: Counts,
    pub duplicate_rate: Option<f64>,
    pub target_met: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoctorRow {
    pub clinic_id: ClinicId,
    pub doctor_id: DoctorId,
    #[serde(flatten)]
    pub attempts: Attempts,
    pub duplicate_groups: u64,
    pub extra_rows: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentTally {
    /// Incidents about appointments of the week.
    pub total: u64,
    /// Of them, found by the audit: real-time detection had missed them.
    pub found_by_audit: u64,
    pub resolved: u64,
    /// Still open or acknowledged when the report was made.
    pub unresolved: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeeklyReport {
    /// ISO week, e.g. `2026-W47`.
    pub week: String,
    /// `None`: every clinic.
    pub clinic_id: Option<ClinicId>,
    pub generated_at: DateTime<Utc>,
    pub duplicate_rate_target: f64,
    pub days: Vec<DayRow>,
    /// The four metrics of the plan over the week, as `/api/v1/stats` gives them.
    pub stats: Stats,
    pub doctors: Vec<DoctorRow>,
    pub incidents: IncidentTally,
    pub audit_runs: Vec<AuditRun>,
}

/// The name stored reports and notices use for a clinic, `*` for every clinic.
pub fn scope_name(clinic: Option<&ClinicId>) -> &str {
    clinic.map_or("*", ClinicId::as_str)
}

/// Builds the report of the ISO week starting `monday` from what the store holds now.
pub async fn build(
    store: &dyn Store,
    clinic: Option<&ClinicId>,
    monday: NaiveDate,
    now: DateTime<Utc>,
) -> Result<WeeklyReport, StoreError> {
    let sunday = monday + Duration::days(6);
    let range = DateRange::new(monday, sunday).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let rows = store.stats_rows(clinic, monday, sunday).await?;
    let doctor_outcomes = store.doctor_outcomes(clinic, monday, sunday).await?;
    let audit_runs = store.audit_runs(clinic, monday, sunday).await?;
    let stats = stats::stats(clinic.cloned(), range, &rows);
    let (outcomes, incidents) = (&rows.day_outcomes, &rows.incidents);

    let days = stats
        .duplicate_rate
        .days
        .iter()
        .map(|d| {
            let mut attempts = Attempts::default();
            for o in outcomes.iter().filter(|o| o.day == d.date) {
                attempts.add(&o.outcome, o.count, o.retries);
            }
            DayRow {
                date: d.date,
                weekday: d.date.weekday().to_string(),
                attempts,
                counts: d.counts,
                duplicate_rate: d.verdict.rate,
                target_met: d.verdict.met,
            }
        })
        .collect();

    let mut duplicates: BTreeMap<(ClinicId, DoctorId), BTreeMap<NaiveDate, Vec<Duplicate>>> =
        BTreeMap::new();
    let mut tally = IncidentTally::default();
    for incident in incidents {
        tally.total += 1;
        tally.found_by_audit += u64::from(incident.found_by == crate::domain::FoundBy::Audit);
        match incident.state {
            IncidentState::Resolved => tally.resolved += 1,
            _ => tally.unresolved += 1,
        }
        let g = &incident.group;
        duplicates
            .entry((g.clinic_id.clone(), g.doctor_id.clone()))
            .or_default()
            .entry(g.date)
            .or_default()
            .push(incident.duplicate());
    }
    Ok(WeeklyReport {
        week: schedule::iso_week(monday),
        clinic_id: clinic.cloned(),
        generated_at: now,
        duplicate_rate_target: DUPLICATE_RATE_TARGET,
        days,
        stats,
        doctors: doctor_rows(&doctor_outcomes, &duplicates),
        incidents: tally,
        audit_runs,
    })
}

/// One row per doctor who had booking attempts or duplicates in the week, the worst
/// first.
fn doctor_rows(
    outcomes: &[DoctorOutcome],
    duplicates: &BTreeMap<(ClinicId, DoctorId), BTreeMap<NaiveDate, Vec<Duplicate>>>,
) -> Vec<DoctorRow> {
    let mut rows: BTreeMap<(ClinicId, DoctorId), DoctorRow> = BTreeMap::new();
    fn row<'a>(
        rows: &'a mut BTreeMap<(ClinicId, DoctorId), DoctorRow>,
        clinic: &ClinicId,
        doctor: &DoctorId,
    ) -> &'a mut DoctorRow {
        rows.entry((clinic.clone(), doctor.clone()))
            .or_insert_with(|| DoctorRow {
                clinic_id: clinic.clone(),
                doctor_id: doctor.clone(),
                attempts: Attempts::default(),
                duplicate_groups: 0,
                extra_rows: 0,
            })
    }
    for o in outcomes {
        row(&mut rows, &o.clinic_id, &o.doctor_id)
            .attempts
            .add(&o.outcome, o.count, o.retries);
    }
    for ((clinic, doctor), days) in duplicates {
        let counts = Counts::tally(0, days.values().map(Vec::as_slice));
        let r = row(&mut rows, clinic, doctor);
        r.duplicate_groups += counts.duplicate_groups;
        r.extra_rows += counts.extra_rows;
    }
    let mut rows: Vec<DoctorRow> = rows.into_values().collect();
    rows.sort_by(|a, b| {
        (b.extra_rows, b.attempts.conflicts)
            .cmp(&(a.extra_rows, a.attempts.conflicts))
            .then_with(|| (&a.clinic_id, &a.doctor_id).cmp(&(&b.clinic_id, &b.doctor_id)))
    });
    rows
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".to_owned(), |r| format!("{:.3} %", r * 100.0))
}

/// The report's text (`templates/weekly_report.txt`).
#[derive(Template)]
#[template(path = "weekly_report.txt")]
struct Summary<'a> {
    r: &'a WeeklyReport,
}

/// The report as one self-contained page (`templates/weekly_report.html`): inline
/// styles, since mail clients drop style sheets; every value from data is escaped.
#[derive(Template)]
#[template(path = "weekly_report.html", escape = "mail")]
struct Page {
    title: String,
    summary: String,
    per_day: Table,
    heat_map: Vec<HeatRow>,
    per_clinic: Table,
    per_doctor: Table,
    audit_runs: Table,
    generated_at: String,
}

/// A table of the page, its headers beside the values that fill its columns.
struct Table {
    caption: &'static str,
    headers: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

/// One weekday of the conflicts heat map, an hour a cell.
struct HeatRow {
    weekday: &'static str,
    cells: Vec<HeatCell>,
}

struct HeatCell {
    conflicts: u64,
    /// How red the cell is, 0 to 0.85.
    shade: f64,
}

impl WeeklyReport {
    fn scope(&self) -> String {
        match &self.clinic_id {
            Some(c) => format!("clinic {c}"),
            None => "every clinic".to_owned(),
        }
    }

    fn bookings(&self) -> u64 {
        self.days.iter().map(|d| d.attempts.bookings).sum()
    }

    fn conflicts(&self) -> u64 {
        self.days.iter().map(|d| d.attempts.conflicts).sum()
    }

    /// One line for a subject.
    pub fn headline(&self) -> String {
        let rate = &self.stats.duplicate_rate;
        format!(
            "slotguard weekly report {} for {}: {} bookings, {} conflicts, duplicate rate {} ({})",
            self.week,
            self.scope(),
            self.bookings(),
            self.conflicts(),
            percent(rate.verdict.rate),
            if rate.verdict.met {
                "target met"
            } else {
                "TARGET MISSED"
            }
        )
    }

    fn failed_audit_runs(&self) -> usize {
        self.audit_runs
            .iter()
            .filter(|r| r.status != crate::store::audit::RunStatus::Succeeded)
            .count()
    }

    /// A few plain lines: the text part of the email, the webhook's `text`.
    pub fn summary(&self) -> String {
        Summary { r: self }.render().unwrap_or_default()
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => serde_json::to_string_pretty(self).unwrap_or_default() + "\n",
            Format::Csv => self.csv(),
            Format::Html => self.html().unwrap_or_default(),
        }
    }

    /// Long ("tidy") CSV: one value per line, `section,clinicId,doctorId,date,hour,
    /// metric,value`, so any spreadsheet or dataframe can pivot it.
    fn csv(&self) -> String {
        let mut out = csv::Writer::from_writer(Vec::new());
        let _ = out.write_record([
            "section", "clinicId", "doctorId", "date", "hour", "metric", "value",
        ]);
        let scope = scope_name(self.clinic_id.as_ref()).to_owned();
        let mut put = |section: &str,
                       clinic: &str,
                       doctor: &str,
                       date: &str,
                       hour: &str,
                       metric: &str,
                       value: String| {
            let _ = out.write_record([section, clinic, doctor, date, hour, metric, &value]);
        };
        let rate = |r: Option<f64>| r.map(|r| r.to_string()).unwrap_or_default();
        for d in &self.days {
            let date = d.date.to_string();
            for (metric, value) in [
                ("attempts", d.attempts.attempts.to_string()),
                ("bookings", d.attempts.bookings.to_string()),
                ("conflicts", d.attempts.conflicts.to_string()),
                ("retries", d.attempts.retries.to_string()),
                (
                    "appointmentsChecked",
                    d.counts.appointments_checked.to_string(),
                ),
                ("duplicateGroups", d.counts.duplicate_groups.to_string()),
                ("extraRows", d.counts.extra_rows.to_string()),
                ("affectedRows", d.counts.affected_rows.to_string()),
                ("duplicateRate", rate(d.duplicate_rate)),
                ("targetMet", d.target_met.to_string()),
            ] {
                put("day", &scope, "", &date, "", metric, value);
            }
        }
        for (weekday, hours) in self.conflicts_by_weekday() {
            for (hour, n) in hours.iter().enumerate().filter(|(_, n)| **n > 0) {
                put(
                    "conflictsByHour",
                    &scope,
                    "",
                    weekday,
                    &hour.to_string(),
                    "conflicts",
                    n.to_string(),
                );
            }
        }
        for c in &self.stats.clinics {
            for (metric, value) in [
                ("attempts", c.attempts.to_string()),
                ("bookings", c.bookings.to_string()),
                ("conflicts", c.conflicts.to_string()),
                ("retries", c.retries.to_string()),
                ("duplicateGroups", c.counts.duplicate_groups.to_string()),
                ("extraRows", c.counts.extra_rows.to_string()),
                ("duplicateRate", rate(c.verdict.rate)),
            ] {
                put("clinic", c.clinic_id.as_str(), "", "", "", metric, value);
            }
        }
        for d in &self.doctors {
            for (metric, value) in [
                ("attempts", d.attempts.attempts),
                ("bookings", d.attempts.bookings),
                ("conflicts", d.attempts.conflicts),
                ("retries", d.attempts.retries),
                ("duplicateGroups", d.duplicate_groups),
                ("extraRows", d.extra_rows),
            ] {
                put(
                    "doctor",
                    d.clinic_id.as_str(),
                    d.doctor_id.as_str(),
                    "",
                    "",
                    metric,
                    value.to_string(),
                );
            }
        }
        for r in &self.audit_runs {
            put(
                "auditRun",
                r.clinic_id.as_str(),
                "",
                &r.local_date.to_string(),
                "",
                r.trigger.as_str(),
                r.status.as_str().to_owned(),
            );
        }
        String::from_utf8(out.into_inner().unwrap_or_default()).unwrap_or_default()
    }

    fn conflicts_by_weekday(&self) -> [(&'static str, &[u64; 24]); 7] {
        let c = &self.stats.conflicts_by_hour;
        [
            ("Mon", &c.mon),
            ("Tue", &c.tue),
            ("Wed", &c.wed),
            ("Thu", &c.thu),
            ("Fri", &c.fri),
            ("Sat", &c.sat),
            ("Sun", &c.sun),
        ]
    }

    fn html(&self) -> askama::Result<String> {
        let table = |caption, headers, rows| Table {
            caption,
            headers,
            rows,
        };
        let per_day = table(
            "Per day",
            &[
                "date",
                "day",
                "bookings",
                "conflicts",
                "retries",
                "appointments",
                "duplicate groups",
                "extra rows",
                "duplicate rate",
                "target",
            ],
            self.days
                .iter()
                .map(|d| {
                    vec![
                        d.date.to_string(),
                        d.weekday.clone(),
                        d.attempts.bookings.to_string(),
                        d.attempts.conflicts.to_string(),
                        d.attempts.retries.to_string(),
                        d.counts.appointments_checked.to_string(),
                        d.counts.duplicate_groups.to_string(),
                        d.counts.extra_rows.to_string(),
                        percent(d.duplicate_rate),
                        if d.target_met { "met" } else { "MISSED" }.to_owned(),
                    ]
                })
                .collect(),
        );
        let busiest = self
            .conflicts_by_weekday()
            .iter()
            .flat_map(|(_, hours)| hours.iter().copied())
            .max()
            .unwrap_or(0)
            .max(1);
        // Shade by share of the busiest hour: the 9–10 rush stands out.
        let shade = |n: u64| (n as f64 / busiest as f64 * 0.85).max(if n > 0 { 0.1 } else { 0.0 });
        let heat_map = self
            .conflicts_by_weekday()
            .into_iter()
            .map(|(weekday, hours)| HeatRow {
                weekday,
                cells: hours
                    .iter()
                    .map(|&conflicts| HeatCell {
                        conflicts,
                        shade: shade(conflicts),
                    })
                    .collect(),
            })
            .collect();
        let per_clinic = table(
            "Per clinic (the worst first)",
            &[
                "clinic",
                "bookings",
                "conflicts",
                "retries",
                "retry rate",
                "duplicate groups",
                "extra rows",
                "duplicate rate",
            ],
            self.stats
                .clinics
                .iter()
                .map(|c| {
                    vec![
                        c.clinic_id.to_string(),
                        c.bookings.to_string(),
                        c.conflicts.to_string(),
                        c.retries.to_string(),
                        percent(c.retry_rate),
                        c.counts.duplicate_groups.to_string(),
                        c.counts.extra_rows.to_string(),
                        percent(c.verdict.rate),
                    ]
                })
                .collect(),
        );
        let per_doctor = table(
            "Per doctor (the worst first)",
            &[
                "clinic",
                "doctor",
                "bookings",
                "conflicts",
                "retries",
                "duplicate groups",
                "extra rows",
            ],
            self.doctors
                .iter()
                .map(|d| {
                    vec![
                        d.clinic_id.to_string(),
                        d.doctor_id.to_string(),
                        d.attempts.bookings.to_string(),
                        d.attempts.conflicts.to_string(),
                        d.attempts.retries.to_string(),
                        d.duplicate_groups.to_string(),
                        d.extra_rows.to_string(),
                    ]
                })
                .collect(),
        );
        let audit_runs = table(
            "Audit runs",
            &[
                "clinic", "date", "trigger", "status", "checked", "groups", "extra", "affected",
                "opened",
            ],
            self.audit_runs
                .iter()
                .map(|r| {
                    vec![
                        r.clinic_id.to_string(),
                        r.local_date.to_string(),
                        r.trigger.as_str().to_owned(),
                        r.status.as_str().to_owned(),
                        r.counts.appointments_checked.to_string(),
                        r.counts.duplicate_groups.to_string(),
                        r.counts.extra_rows.to_string(),
                        r.counts.affected_rows.to_string(),
                        r.incidents_opened.to_string(),
                    ]
                })
                .collect(),
        );
        Page {
            title: self.headline(),
            summary: self.summary(),
            per_day,
            heat_map,
            per_clinic,
            per_doctor,
            audit_runs,
            generated_at: self.generated_at.to_rfc3339(),
        }
        .render()
    }

    /// The report as a notice for the alert channels: HTML for email, the report as
    /// JSON for webhooks.
    pub fn notification(&self) -> Notification {
        let scope = scope_name(self.clinic_id.as_ref());
        Notification {
            id: format!("weekly-{scope}-{}", self.week),
            clinic_id: scope.to_owned(),
            event: Event::WeeklyReport,
            subject: self.headline(),
            text: self.summary(),
            short_text: format!("slotguard weekly {} {scope}", self.week),
            incidents: json!([]),
            details: serde_json::to_value(self).ok(),
            // Without the page (it could not be rendered), email shows `text`.
            html: self.html().ok(),
        }
    }
}

/// The Monday of the week a report is asked for: `2026-W47`, or by default the last
/// full week before `now` (in the clinic's time, or UTC for every clinic).
pub fn week_asked(
    raw: Option<&str>,
    clinic: Option<&Clinic>,
    now: DateTime<Utc>,
) -> Result<NaiveDate, crate::domain::FieldError> {
    match raw {
        Some(raw) => schedule::parse_iso_week(raw).ok_or_else(|| {
            crate::domain::FieldError::new("week", "must be an ISO week written like 2026-W47")
        }),
        None => {
            let today = clinic.map_or_else(|| now.date_naive(), |c| c.today(now));
            let this_monday =
                today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
            Ok(this_monday - Duration::days(7))
        }
    }
}

/// The report of a week as it was sent (stored on Monday by the auditor that sends it,
/// so it reads the same later), or, for a week not sent, built afresh. Reading never stores a
/// report: storing is the Monday send's claim, and a read must not take it.
pub async fn weekly(
    store: &dyn Store,
    clinic: Option<&Clinic>,
    monday: NaiveDate,
    now: DateTime<Utc>,
) -> Result<WeeklyReport, StoreError> {
    let id = clinic.map(|c| &c.id);
    let week = schedule::iso_week(monday);
    if let Some(body) = store.weekly_report(scope_name(id), &week).await? {
        return serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(e.to_string()));
    }
    build(store, id, monday, now).await
}

/// Whether a week may be asked for: from the week slotguard first knew of the clinic
/// (registered, or its first watched document; for every clinic, the first one's)
/// to the week under way. `None` when it may; else the refusal, naming the weeks
/// that may be asked for.
pub fn week_in_range(
    known: &KnownClinics,
    clinic: Option<&KnownClinic>,
    monday: NaiveDate,
    now: DateTime<Utc>,
) -> Option<crate::domain::FieldError> {
    let (today, first) = match clinic {
        Some(k) => (k.clinic.today(now), Some(k.clinic.today(k.since))),
        None => (
            now.date_naive(),
            known.first_since().map(|at| at.date_naive()),
        ),
    };
    let first = first.unwrap_or(today);
    let monday_of =
        |d: NaiveDate| d - Duration::days(i64::from(d.weekday().num_days_from_monday()));
    let (from, to) = (monday_of(first), monday_of(today));
    (monday < from || monday > to).then(|| {
        crate::domain::FieldError::new(
            "week",
            format!(
                "must be a week from {} (when the clinic was created or first seen) to {} (this week)",
                schedule::iso_week(from),
                schedule::iso_week(to)
            ),
        )
    })
}

/// A report as it is stored once sent, and as [`weekly`] reads it back.
pub fn report_json(report: &WeeklyReport) -> Result<String, StoreError> {
    serde_json::to_string(report).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::store::audit::{RunStatus, Trigger};
    use crate::store::metrics::{DayAppointments, DayOutcome, HourOutcome, StatsRows};

    /// Week 49 of 2026 at Kochi, where a watched app keyed a doctor by a name written
    /// to break any page that shows it.
    fn week_with_a_hostile_doctor_name() -> WeeklyReport {
        let kochi = ClinicId::parse("clinic", "kochi").unwrap();
        let monday = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let tuesday = monday + Duration::days(1);
        let rows = StatsRows {
            day_outcomes: vec![DayOutcome {
                clinic_id: kochi.clone(),
                day: tuesday,
                outcome: BOOKED.to_owned(),
                count: 4,
                retries: 1,
            }],
            hour_outcomes: [(9, 3), (10, 1)]
                .map(|(hour, count)| HourOutcome {
                    day: tuesday,
                    hour,
                    outcome: "slot_taken".to_owned(),
                    count,
                })
                .to_vec(),
            appointments: vec![DayAppointments {
                clinic_id: kochi.clone(),
                date: tuesday,
                count: 4,
            }],
            incidents: Vec::new(),
        };
        let range = DateRange::new(monday, monday + Duration::days(6)).unwrap();
        let stats = stats::stats(Some(kochi.clone()), range, &rows);
        let days = stats
            .duplicate_rate
            .days
            .iter()
            .map(|d| DayRow {
                date: d.date,
                weekday: d.date.weekday().to_string(),
                attempts: if d.date == tuesday {
                    Attempts {
                        attempts: 8,
                        bookings: 4,
                        conflicts: 4,
                        retries: 1,
                    }
                } else {
                    Attempts::default()
                },
                counts: d.counts,
                duplicate_rate: d.verdict.rate,
                target_met: d.verdict.met,
            })
            .collect();
        let hostile = "<script>alert(\"x\")</script> & co";
        WeeklyReport {
            week: schedule::iso_week(monday),
            clinic_id: Some(kochi.clone()),
            generated_at: Utc.with_ymd_and_hms(2026, 12, 7, 3, 30, 0).unwrap(),
            duplicate_rate_target: DUPLICATE_RATE_TARGET,
            days,
            stats,
            doctors: vec![DoctorRow {
                clinic_id: kochi.clone(),
                doctor_id: DoctorId::by_name("doctor", hostile).unwrap(),
                attempts: Attempts {
                    attempts: 8,
                    bookings: 4,
                    conflicts: 4,
                    retries: 1,
                },
                duplicate_groups: 1,
                extra_rows: 1,
            }],
            incidents: IncidentTally::default(),
            audit_runs: vec![AuditRun {
                id: "run-1".to_owned(),
                clinic_id: kochi,
                local_date: tuesday,
                trigger: Trigger::Nightly,
                runner: "test".to_owned(),
                status: RunStatus::Succeeded,
                started_at: Utc.with_ymd_and_hms(2026, 12, 1, 17, 30, 0).unwrap(),
                finished_at: None,
                counts: Counts::default(),
                incidents_opened: 0,
                incidents_resolved: 0,
                error: None,
            }],
        }
    }

    #[test]
    fn a_doctor_named_to_break_the_page_is_plain_text_in_the_html_report() {
        let html = week_with_a_hostile_doctor_name().render(Format::Html);
        assert!(
            html.contains("name:&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co"),
            "{html}"
        );
        assert!(!html.contains("<script>"), "{html}");
    }
}
