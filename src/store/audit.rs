//! What the audit keeps and reads: a clinic's whole local day checked at once, the
//! record of every audit run, notices (daily summary, missed audit, weekly report) and
//! stored weekly reports: the trait, its SQL, and its one implementation for every
//! [`SqlBackend`].

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::detection::NotificationRow;
use super::rows::{self, corrupt};
use super::sql::{query, DecodeRow, SqlBackend, Tx};
use super::StoreError;
use crate::domain::{Clinic, ClinicId, Counts, DoctorId, Duplicate, Group, WatchedClinic};

/// Why an audit ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// At the clinic's `auditAt`.
    Nightly,
    /// A night missed while no server ran, caught up at the next start.
    CatchUp,
    /// `slotguard audit` or the API, any time; may repeat.
    OnDemand,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Nightly => "nightly",
            Trigger::CatchUp => "catch_up",
            Trigger::OnDemand => "on_demand",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Trigger::Nightly, Trigger::CatchUp, Trigger::OnDemand]
            .into_iter()
            .find(|t| t.as_str() == raw)
    }

    /// The nightly run and its catch-up are the one scheduled audit of a clinic's day.
    pub fn is_scheduled(self) -> bool {
        self != Trigger::OnDemand
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [RunStatus::Running, RunStatus::Succeeded, RunStatus::Failed]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// One audit of one clinic's local day, as `audit_runs` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRun {
    pub id: String,
    pub clinic_id: ClinicId,
    pub local_date: NaiveDate,
    pub trigger: Trigger,
    /// The process that ran it.
    pub runner: String,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub counts: Counts,
    /// Incidents this audit opened: duplicates the real-time detector had not seen.
    pub incidents_opened: u64,
    /// Incidents whose duplicates were gone.
    pub incidents_resolved: u64,
    pub error: Option<String>,
}

/// A clinic's local day as the audit reads it: how many appointments (native and
/// watched, any status) and the duplicates of each doctor-day that has any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayFindings {
    pub appointments_checked: u64,
    pub duplicates: BTreeMap<Group, Vec<Duplicate>>,
}

/// What `/metrics` shows of the audit, read at each scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditGauges {
    /// Runs by (clinic, status).
    pub runs: Vec<(String, String, u64)>,
    /// Incidents audits opened (duplicates real-time detection missed), by clinic.
    pub incidents_opened: Vec<(String, u64)>,
    /// Each clinic's newest successful run: (clinic, started, finished).
    pub last_success: Vec<(String, DateTime<Utc>, DateTime<Utc>)>,
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn audit_gauges(&self) -> Result<AuditGauges, StoreError>;
    async fn clinics(&self) -> Result<Vec<Clinic>, StoreError>;
    /// Each (clinic, source) of the mirror, registered or not, with its earliest
    /// document's arrival: the clinics `KnownClinics` adds to the registered ones.
    async fn watched_clinics(&self) -> Result<Vec<WatchedClinic>, StoreError>;
    /// Every registered clinic with when it was created (catch-up never audits days
    /// before that), in one read.
    async fn clinics_since(&self) -> Result<Vec<(Clinic, DateTime<Utc>)>, StoreError>;
    /// A clinic's local day, native and watched rows together, one set-based query per
    /// duplicate kind, with the same "occupying" as the unique indexes.
    async fn day_findings(
        &self,
        clinic: &ClinicId,
        date: NaiveDate,
    ) -> Result<DayFindings, StoreError>;
    /// Doctor-days of the date with an incident not yet resolved: the audit checks them
    /// again so that one whose duplicate is gone gets resolved.
    async fn unresolved_groups(
        &self,
        clinic: &ClinicId,
        date: NaiveDate,
    ) -> Result<Vec<Group>, StoreError>;
    /// Inserts a `running` run. A scheduled run is a claim on its clinic's date: false
    /// when another runner holds it (running since `stale_before` or later) or it
    /// already succeeded. A run still `running` from before `stale_before` was
    /// abandoned by a stopped runner: it is marked failed and the date claimed anew.
    async fn claim_audit_run(
        &self,
        run: &AuditRun,
        stale_before: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Records the outcome of a claimed run. A failed scheduled run releases its date.
    async fn finish_audit_run(&self, run: &AuditRun) -> Result<(), StoreError>;
    /// Runs of the dates `from..=to`, of one clinic or all, oldest first.
    async fn audit_runs(
        &self,
        clinic: Option<&ClinicId>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<AuditRun>, StoreError>;
    /// Dates from `from` on whose scheduled audit succeeded or is running (since
    /// `stale_before`: an older run was abandoned).
    async fn audited_dates(
        &self,
        clinic: &ClinicId,
        from: NaiveDate,
        stale_before: DateTime<Utc>,
    ) -> Result<Vec<NaiveDate>, StoreError>;
    /// Queues notices that are not about one incident (summaries, missed audits,
    /// reports). Their ids are derived from what they are about, so a notice queued
    /// twice (two runners, a retry) is delivered once.
    async fn queue_notices(&self, rows: &[NotificationRow]) -> Result<(), StoreError>;
    /// Stores a week's report unless one is stored already; true when this one was.
    /// The stored report is what later reads return, and storing it is the claim to
    /// send it.
    async fn keep_weekly_report(
        &self,
        clinic: &str,
        week: &str,
        generated_at: DateTime<Utc>,
        body: &str,
    ) -> Result<bool, StoreError>;
    async fn weekly_report(&self, clinic: &str, week: &str) -> Result<Option<String>, StoreError>;
}

pub const AUDIT_RUN_COLUMNS: &str = "id, clinic_id, local_date, trigger, runner, status, started_at, \
    finished_at, appointments_checked, duplicate_groups, extra_rows, affected_rows, incidents_opened, \
    incidents_resolved, error";

/// Each (clinic, source) pair of the mirror and its earliest `received_at`, found by
/// skipping from one pair to the next along `watched_by_clinic_source` (a few index
/// seeks per pair) rather than by grouping every document: the audit runner reads it
/// at every pass. A step goes to the clinic's next source, else to the next clinic's
/// first source; `(NULL, NULL)` ends the walk.
pub const WATCHED_CLINICS: &str = "WITH RECURSIVE pairs(clinic_id, source) AS ( \
      SELECT c.id, (SELECT MIN(source) FROM watched_appointments WHERE clinic_id = c.id) \
      FROM (SELECT MIN(clinic_id) AS id FROM watched_appointments) c \
    UNION ALL \
      SELECT CASE WHEN (SELECT MIN(w.source) FROM watched_appointments w \
          WHERE w.clinic_id = p.clinic_id AND w.source > p.source) IS NULL \
        THEN (SELECT MIN(w.clinic_id) FROM watched_appointments w WHERE w.clinic_id > p.clinic_id) \
        ELSE p.clinic_id END, \
      COALESCE((SELECT MIN(w.source) FROM watched_appointments w \
          WHERE w.clinic_id = p.clinic_id AND w.source > p.source), \
        (SELECT MIN(w.source) FROM watched_appointments w WHERE w.clinic_id = \
          (SELECT MIN(n.clinic_id) FROM watched_appointments n WHERE n.clinic_id > p.clinic_id))) \
      FROM pairs p WHERE p.clinic_id IS NOT NULL ) \
    SELECT clinic_id, source, (SELECT MIN(w.received_at) FROM watched_appointments w \
      WHERE w.clinic_id = pairs.clinic_id AND w.source = pairs.source) AS first_seen \
    FROM pairs WHERE clinic_id IS NOT NULL ORDER BY clinic_id, source";

/// The clinic's occupying rows of one local day, native and watched; `$1` clinic,
/// `$2` date. Break placeholders hold their slot but no token.
const OCCUPYING_DAY: &str = "WITH occ AS ( \
      SELECT 'native' AS source, doctor_id, id, slot_index, token_number, updated_at AS changed, \
      updated_at AS committed FROM appointments WHERE clinic_id = $1 AND date = $2 \
      AND status NOT IN ('Cancelled', 'No-show') \
    UNION ALL \
      SELECT source, doctor_id, id, slot_index, token_number, COALESCE(updated_at, created_at, received_at) \
      AS changed, received_at AS committed FROM watched_appointments WHERE clinic_id = $1 AND date = $2 \
      AND occupying = 1 AND deleted = 0 )";

/// Members of every slot given twice in the clinic's day.
pub fn slot_duplicates_of_day() -> String {
    format!(
        "{OCCUPYING_DAY} SELECT 'slot' AS kind, occ.doctor_id, CAST(occ.slot_index AS TEXT) AS key, \
         occ.source, occ.id, occ.changed, occ.committed FROM occ JOIN ( \
         SELECT doctor_id, slot_index FROM occ GROUP BY doctor_id, slot_index HAVING COUNT(*) > 1 \
         ) twice ON twice.doctor_id = occ.doctor_id AND twice.slot_index = occ.slot_index"
    )
}

/// Members of every token given twice in the clinic's day.
pub fn token_duplicates_of_day() -> String {
    format!(
        "{OCCUPYING_DAY} SELECT 'token' AS kind, occ.doctor_id, occ.token_number AS key, \
         occ.source, occ.id, occ.changed, occ.committed FROM occ JOIN ( \
         SELECT doctor_id, token_number FROM occ WHERE token_number IS NOT NULL \
         GROUP BY doctor_id, token_number HAVING COUNT(*) > 1 \
         ) twice ON twice.doctor_id = occ.doctor_id AND twice.token_number = occ.token_number"
    )
}

/// Which watched rows `appointmentsChecked` counts (`domain::counts::is_checked`):
/// neither deleted documents nor break placeholders.
pub const WATCHED_CHECKED: &str = "deleted = 0 AND is_break = 0";

/// The clinic's `appointmentsChecked` of one local day (`domain::counts::is_checked`).
pub fn appointments_of_day() -> String {
    format!(
        "SELECT (SELECT COUNT(*) FROM appointments WHERE clinic_id = $1 AND date = $2) + \
         (SELECT COUNT(*) FROM watched_appointments WHERE clinic_id = $1 AND date = $2 AND \
         {WATCHED_CHECKED}) AS n"
    )
}

/// Splits the member rows of the day's duplicate queries by doctor and folds each
/// doctor-day's rows into its duplicates.
pub fn fold_day<R: DecodeRow>(
    clinic: &ClinicId,
    date: NaiveDate,
    rows: Vec<R>,
) -> Result<BTreeMap<Group, Vec<Duplicate>>, StoreError> {
    let mut by_doctor: BTreeMap<String, Vec<R>> = BTreeMap::new();
    for row in rows {
        by_doctor
            .entry(row.text("doctor_id")?)
            .or_default()
            .push(row);
    }
    by_doctor
        .into_iter()
        .map(|(doctor, rows)| {
            let group = Group {
                clinic_id: clinic.clone(),
                doctor_id: DoctorId::parse_stored("doctor_id", &doctor)
                    .map_err(|e| rows::corrupt("doctor id", e))?,
                date,
            };
            Ok((group, super::detection::fold_duplicates(&rows)?))
        })
        .collect()
}

pub fn audit_run<R: DecodeRow>(row: &R) -> Result<AuditRun, StoreError> {
    let trigger = row.text("trigger")?;
    let status = row.text("status")?;
    Ok(AuditRun {
        id: row.text("id")?,
        clinic_id: ClinicId::parse("clinic_id", &row.text("clinic_id")?)
            .map_err(|e| corrupt("clinic id", e))?,
        local_date: row.date("local_date")?,
        trigger: Trigger::parse(&trigger).ok_or_else(|| corrupt("trigger", &trigger))?,
        runner: row.text("runner")?,
        status: RunStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        started_at: row.instant("started_at")?,
        finished_at: row.opt_instant("finished_at")?,
        counts: Counts {
            appointments_checked: count_of(
                row.int("appointments_checked")?,
                "appointments_checked",
            )?,
            duplicate_groups: count_of(row.int("duplicate_groups")?, "duplicate_groups")?,
            extra_rows: count_of(row.int("extra_rows")?, "extra_rows")?,
            affected_rows: count_of(row.int("affected_rows")?, "affected_rows")?,
        },
        incidents_opened: count_of(row.int("incidents_opened")?, "incidents_opened")?,
        incidents_resolved: count_of(row.int("incidents_resolved")?, "incidents_resolved")?,
        error: row.opt_text("error")?,
    })
}

fn count_of(row_value: i64, field: &str) -> Result<u64, StoreError> {
    u64::try_from(row_value).map_err(|_| corrupt(field, row_value))
}

#[async_trait::async_trait]
impl<B: SqlBackend> AuditStore for B {
    async fn audit_gauges(&self) -> Result<AuditGauges, StoreError> {
        let runs = query(
            "SELECT clinic_id AS a, status AS b, COUNT(*) AS count FROM audit_runs \
             GROUP BY clinic_id, status ORDER BY clinic_id, status",
        )
        .fetch_all(self.reader())
        .await?;
        let opened = query(
            "SELECT clinic_id, CAST(SUM(incidents_opened) AS BIGINT) AS opened FROM audit_runs \
             GROUP BY clinic_id ORDER BY clinic_id",
        )
        .fetch_all(self.reader())
        .await?;
        let last = query(
            "SELECT r.clinic_id, r.started_at, r.finished_at FROM audit_runs r \
             WHERE r.status = 'succeeded' AND r.finished_at = (SELECT MAX(x.finished_at) FROM audit_runs x \
             WHERE x.clinic_id = r.clinic_id AND x.status = 'succeeded') ORDER BY r.clinic_id",
        )
        .fetch_all(self.reader())
        .await?;
        let count = |n: i64| u64::try_from(n).map_err(|_| rows::corrupt("count", n));
        Ok(AuditGauges {
            runs: rows::labelled_counts(&runs)?,
            incidents_opened: opened
                .iter()
                .map(|r| Ok((r.text("clinic_id")?, count(r.int("opened")?)?)))
                .collect::<Result<_, StoreError>>()?,
            last_success: last
                .iter()
                .map(|r| {
                    Ok((
                        r.text("clinic_id")?,
                        r.instant("started_at")?,
                        r.instant("finished_at")?,
                    ))
                })
                .collect::<Result<_, StoreError>>()?,
        })
    }

    async fn clinics(&self) -> Result<Vec<Clinic>, StoreError> {
        query("SELECT * FROM clinics ORDER BY id")
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(rows::clinic)
            .collect()
    }

    async fn watched_clinics(&self) -> Result<Vec<WatchedClinic>, StoreError> {
        query(WATCHED_CLINICS)
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(rows::watched_clinic)
            .collect()
    }

    async fn clinics_since(&self) -> Result<Vec<(Clinic, DateTime<Utc>)>, StoreError> {
        query("SELECT * FROM clinics ORDER BY id")
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(|r| Ok((rows::clinic(r)?, r.instant("created_at")?)))
            .collect()
    }

    async fn day_findings(
        &self,
        clinic: &ClinicId,
        date: NaiveDate,
    ) -> Result<DayFindings, StoreError> {
        let checked = query(appointments_of_day())
            .bind(clinic.as_str())
            .bind(date)
            .fetch_one(self.reader())
            .await?
            .int("n")?;
        let mut rows = query(slot_duplicates_of_day())
            .bind(clinic.as_str())
            .bind(date)
            .fetch_all(self.reader())
            .await?;
        rows.extend(
            query(token_duplicates_of_day())
                .bind(clinic.as_str())
                .bind(date)
                .fetch_all(self.reader())
                .await?,
        );
        Ok(DayFindings {
            appointments_checked: u64::try_from(checked).unwrap_or(0),
            duplicates: fold_day(clinic, date, rows)?,
        })
    }

    async fn unresolved_groups(
        &self,
        clinic: &ClinicId,
        date: NaiveDate,
    ) -> Result<Vec<Group>, StoreError> {
        query("SELECT DISTINCT clinic_id, doctor_id, date FROM incidents WHERE clinic_id = $1 AND date = $2 AND state <> 'resolved'")
            .bind(clinic.as_str())
            .bind(date)
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(rows::group)
            .collect()
    }

    async fn claim_audit_run(
        &self,
        run: &AuditRun,
        stale_before: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let scheduled = run.trigger.is_scheduled();
        let mut tx = self.begin_write().await?;
        if scheduled {
            query(
                "UPDATE audit_runs SET status = 'failed', scheduled = 0, finished_at = $3, \
                 error = 'abandoned: its runner stopped before finishing' \
                 WHERE clinic_id = $1 AND local_date = $2 AND scheduled = 1 AND status = 'running' AND started_at < $4",
            )
            .bind(run.clinic_id.as_str())
            .bind(run.local_date)
            .bind(run.started_at)
            .bind(stale_before)
            .execute(&mut tx)
            .await?;
        }
        let done = query(
            "INSERT INTO audit_runs (id, clinic_id, local_date, scheduled, trigger, runner, status, started_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'running', $7) \
             ON CONFLICT (clinic_id, local_date) WHERE scheduled = 1 DO NOTHING",
        )
        .bind(&run.id)
        .bind(run.clinic_id.as_str())
        .bind(run.local_date)
        .bind(i64::from(scheduled))
        .bind(run.trigger.as_str())
        .bind(&run.runner)
        .bind(run.started_at)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(done > 0)
    }

    async fn finish_audit_run(&self, run: &AuditRun) -> Result<(), StoreError> {
        let c = &run.counts;
        query(
            "UPDATE audit_runs SET status = $2, finished_at = $3, appointments_checked = $4, duplicate_groups = $5, \
             extra_rows = $6, affected_rows = $7, incidents_opened = $8, incidents_resolved = $9, error = $10, \
             scheduled = CASE WHEN $2 = 'failed' THEN 0 ELSE scheduled END WHERE id = $1",
        )
        .bind(&run.id)
        .bind(run.status.as_str())
        .bind(run.finished_at)
        .bind(c.appointments_checked as i64)
        .bind(c.duplicate_groups as i64)
        .bind(c.extra_rows as i64)
        .bind(c.affected_rows as i64)
        .bind(run.incidents_opened as i64)
        .bind(run.incidents_resolved as i64)
        .bind(run.error.as_deref())
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn audit_runs(
        &self,
        clinic: Option<&ClinicId>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<AuditRun>, StoreError> {
        query(format!(
            "SELECT {} FROM audit_runs WHERE ($1 IS NULL OR clinic_id = $1) AND local_date >= $2 AND local_date <= $3 \
             ORDER BY local_date, started_at, id",
            AUDIT_RUN_COLUMNS
        ))
        .bind(clinic.map(ClinicId::as_str))
        .bind(from)
        .bind(to)
        .fetch_all(self.reader())
        .await?
        .iter()
        .map(audit_run)
        .collect()
    }

    async fn audited_dates(
        &self,
        clinic: &ClinicId,
        from: NaiveDate,
        stale_before: DateTime<Utc>,
    ) -> Result<Vec<NaiveDate>, StoreError> {
        query(
            "SELECT local_date FROM audit_runs WHERE clinic_id = $1 AND scheduled = 1 AND local_date >= $2 \
             AND (status = 'succeeded' OR started_at >= $3)",
        )
            .bind(clinic.as_str())
            .bind(from)
            .bind(stale_before)
            .fetch_all(self.writer())
            .await?
            .iter()
            .map(|r| r.date("local_date"))
            .collect()
    }

    async fn queue_notices(
        &self,
        rows: &[crate::store::detection::NotificationRow],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        crate::store::detection::insert_notifications(&mut tx, rows).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn keep_weekly_report(
        &self,
        clinic: &str,
        week: &str,
        generated_at: DateTime<Utc>,
        body: &str,
    ) -> Result<bool, StoreError> {
        let done = query(
            "INSERT INTO weekly_reports (clinic_id, week, generated_at, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (clinic_id, week) DO NOTHING",
        )
        .bind(clinic)
        .bind(week)
        .bind(generated_at)
        .bind(body)
        .execute(self.writer())
        .await?;
        Ok(done > 0)
    }

    async fn weekly_report(&self, clinic: &str, week: &str) -> Result<Option<String>, StoreError> {
        query("SELECT body FROM weekly_reports WHERE clinic_id = $1 AND week = $2")
            .bind(clinic)
            .bind(week)
            .fetch_optional(self.reader())
            .await?
            .map(|r| r.text("body"))
            .transpose()
    }
}
