//! The audit runner: each clinic's day at its `auditAt`, nights missed while no server
//! ran caught up at start, a dead-man's switch when a day goes unaudited, a daily
//! summary through the alert channels. One instance (the `auditor` lease holder)
//! does the work, and `audit_runs` lets only one runner claim a clinic's date.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde_json::json;
use tokio::sync::watch;

use super::{report, schedule};
use crate::alert::dispatch::Dispatcher;
use crate::alert::Notification;
use crate::clock::Clock;
use crate::detect::Detector;
use crate::domain::{
    Clinic, ClinicId, Counts, Duplicate, Event, FoundBy, Group, KnownClinic, KnownClinics,
    SourceZones,
};
use crate::store::audit::{AuditRun, DayFindings, RunStatus, Trigger};
use crate::store::{Store, StoreError};

/// `[audit]` in slotguard.toml, resolved, with the zones of `[watch.sources]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Nights missed while no server ran are audited at start, this many days back.
    pub catch_up_days: u32,
    /// The dead-man's switch fires when a day has no successful audit this long after
    /// its `auditAt`.
    pub grace: Duration,
    /// How often the runner looks at the clock.
    pub tick: Duration,
    /// A run still `running` after this long was abandoned by a stopped runner.
    pub stale_after: Duration,
    /// The weekly report goes out Mondays at this local time.
    pub weekly_report_at: NaiveTime,
    /// The zone of each watch source's unregistered clinics.
    pub zones: SourceZones,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            catch_up_days: 7,
            grace: Duration::from_secs(30 * 60),
            tick: Duration::from_secs(30),
            stale_after: Duration::from_secs(15 * 60),
            weekly_report_at: NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default(),
            zones: SourceZones::default(),
        }
    }
}

const LEASE: chrono::Duration = chrono::Duration::seconds(60);

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// A finished audit: its recorded run and the duplicates it found, per doctor-day.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub run: AuditRun,
    pub duplicates: BTreeMap<Group, Vec<Duplicate>>,
}

pub struct Auditor {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    detector: Arc<Detector>,
    dispatcher: Arc<Dispatcher>,
    settings: Settings,
    holder: String,
    /// Clinics whose sources' zones disagree, already logged: once per process.
    zone_conflicts_logged: std::sync::Mutex<std::collections::BTreeSet<ClinicId>>,
}

impl Auditor {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        detector: Arc<Detector>,
        dispatcher: Arc<Dispatcher>,
        settings: Settings,
    ) -> Self {
        Self {
            store,
            clock,
            detector,
            dispatcher,
            settings,
            holder: uuid::Uuid::new_v4().to_string(),
            zone_conflicts_logged: Default::default(),
        }
    }

    /// Every clinic to audit, count and report: the registered ones in their own
    /// zones, and those only seen in watched documents in their source's zone
    /// (`[watch.sources.NAME] timezone`, else [`Clinic::DEFAULT_TIMEZONE`]).
    /// Zones that disagree are logged once per clinic.
    pub async fn known_clinics(&self) -> Result<KnownClinics, StoreError> {
        let known = known_clinics(self.store.as_ref(), &self.settings.zones).await?;
        for conflict in &known.conflicts {
            let first_time = self
                .zone_conflicts_logged
                .lock()
                .map(|mut logged| logged.insert(conflict.clinic_id.clone()))
                .unwrap_or(false);
            if first_time {
                let overruled: Vec<String> = conflict
                    .overruled
                    .iter()
                    .map(|(source, tz)| format!("{source} ({tz})"))
                    .collect();
                tracing::warn!(
                    clinic = %conflict.clinic_id,
                    source = %conflict.chosen.0,
                    timezone = %conflict.chosen.1,
                    overruled = %overruled.join(", "),
                    "an unregistered clinic's watch sources are configured with different time \
                     zones: the first source by name decides; register the clinic to choose"
                );
            }
        }
        Ok(known)
    }

    /// One known clinic; `None` when it is neither registered nor in watched data.
    pub async fn known_clinic(&self, id: &ClinicId) -> Result<Option<KnownClinic>, StoreError> {
        Ok(self.known_clinics().await?.get(id).cloned())
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Audits one clinic's local day and records the run. Duplicates the real-time
    /// detector had not seen become incidents found by `audit`; incidents whose
    /// duplicates are gone are resolved. `None` when the date's scheduled audit is
    /// another runner's (or done).
    pub async fn audit(
        &self,
        clinic: &Clinic,
        date: NaiveDate,
        trigger: Trigger,
    ) -> Result<Option<Outcome>, StoreError> {
        let now = self.clock.now();
        let mut run = AuditRun {
            id: uuid::Uuid::new_v4().to_string(),
            clinic_id: clinic.id.clone(),
            local_date: date,
            trigger,
            runner: self.holder.clone(),
            status: RunStatus::Running,
            started_at: now,
            finished_at: None,
            counts: Counts::default(),
            incidents_opened: 0,
            incidents_resolved: 0,
            error: None,
        };
        let stale_before = now - chrono_of(self.settings.stale_after);
        if !self.store.claim_audit_run(&run, stale_before).await? {
            return Ok(None);
        }
        let duplicates = match self.check_day(clinic, date, &mut run).await {
            Ok(duplicates) => {
                run.status = RunStatus::Succeeded;
                duplicates
            }
            Err(e) => {
                tracing::warn!(error = %e, clinic = %clinic.id, %date, "audit failed");
                run.status = RunStatus::Failed;
                run.error = Some(e.to_string());
                BTreeMap::new()
            }
        };
        run.finished_at = Some(self.clock.now());
        self.store.finish_audit_run(&run).await?;
        tracing::info!(
            clinic = %clinic.id,
            %date,
            trigger = trigger.as_str(),
            status = run.status.as_str(),
            appointments_checked = run.counts.appointments_checked,
            duplicate_groups = run.counts.duplicate_groups,
            extra_rows = run.counts.extra_rows,
            incidents_opened = run.incidents_opened,
            incidents_resolved = run.incidents_resolved,
            "audit run finished"
        );
        if run.status == RunStatus::Succeeded && trigger.is_scheduled() {
            self.notify(daily_summary(clinic, &run)).await?;
        }
        Ok(Some(Outcome { run, duplicates }))
    }

    async fn check_day(
        &self,
        clinic: &Clinic,
        date: NaiveDate,
        run: &mut AuditRun,
    ) -> Result<BTreeMap<Group, Vec<Duplicate>>, StoreError> {
        let DayFindings {
            appointments_checked,
            duplicates,
        } = self.store.day_findings(&clinic.id, date).await?;
        run.counts = Counts::tally(appointments_checked, duplicates.values().map(Vec::as_slice));
        let mut groups: Vec<Group> = duplicates.keys().cloned().collect();
        for group in self.store.unresolved_groups(&clinic.id, date).await? {
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        for group in &groups {
            let changes = self.detector.check(group, FoundBy::Audit).await?;
            for entry in &changes.outbox {
                match entry.event {
                    Event::Opened | Event::Regressed => run.incidents_opened += 1,
                    Event::Resolved => run.incidents_resolved += 1,
                    _ => {}
                }
            }
        }
        Ok(duplicates)
    }

    async fn notify(&self, notification: Notification) -> Result<(), StoreError> {
        let rows = self.dispatcher.deliveries(&notification)?;
        self.store.queue_notices(&rows).await
    }

    /// One pass over every known clinic, registered or only watched: audits due
    /// (tonight's and missed ones), the dead-man's switch, the weekly report. Nothing
    /// is due before slotguard knew of the clinic. Tests call it with the clock where
    /// they want it.
    pub async fn run_once(&self) -> Result<(), StoreError> {
        for KnownClinic { clinic, since, .. } in self.known_clinics().await?.into_vec() {
            self.audit_due(&clinic, since).await?;
            self.check_dead_man(&clinic, since).await?;
            self.send_weekly_report(&clinic, since).await?;
        }
        Ok(())
    }

    async fn audit_due(&self, clinic: &Clinic, since: DateTime<Utc>) -> Result<(), StoreError> {
        let now = self.clock.now();
        let latest = schedule::latest_due(clinic, now);
        let first_day = clinic.today(since);
        let window = latest - chrono::Duration::days(i64::from(self.settings.catch_up_days));
        let stale_before = now - chrono_of(self.settings.stale_after);
        let audited = self
            .store
            .audited_dates(&clinic.id, window, stale_before)
            .await?;
        for date in
            schedule::dates_to_audit(latest, first_day, self.settings.catch_up_days, &audited)
        {
            let on_time = date == latest
                && now < schedule::due_at(clinic, date) + chrono_of(self.settings.grace);
            let trigger = if on_time {
                Trigger::Nightly
            } else {
                Trigger::CatchUp
            };
            self.audit(clinic, date, trigger).await?;
        }
        Ok(())
    }

    /// Alerts (once per clinic and date) when the newest due day has no successful
    /// audit by `auditAt` + grace: the runner failed, or no server was up to run it.
    /// The dead-man's switch: the newest due date of a clinic that has no successful
    /// audit although its `auditAt` + grace has passed (never a date before slotguard
    /// knew of the clinic), with the last error of its failed runs.
    pub async fn missing_audit(
        &self,
        clinic: &Clinic,
        since: DateTime<Utc>,
    ) -> Result<Option<(NaiveDate, Option<String>)>, StoreError> {
        let date = schedule::latest_due(clinic, self.clock.now());
        let runs = self.store.audit_runs(Some(&clinic.id), date, date).await?;
        Ok(self.missing_audit_among(clinic, since, &runs))
    }

    /// [`Self::missing_audit`] over runs already read (of any clinics and dates; they
    /// must include the clinic's latest due date): for a page showing many clinics.
    pub fn missing_audit_among(
        &self,
        clinic: &Clinic,
        since: DateTime<Utc>,
        runs: &[AuditRun],
    ) -> Option<(NaiveDate, Option<String>)> {
        let now = self.clock.now();
        let date = schedule::latest_due(clinic, now);
        let due = schedule::due_at(clinic, date);
        if now < due + chrono_of(self.settings.grace) || since > due {
            return None;
        }
        let runs: Vec<&AuditRun> = runs
            .iter()
            .filter(|r| r.clinic_id == clinic.id && r.local_date == date)
            .collect();
        if runs.iter().any(|r| r.status == RunStatus::Succeeded) {
            return None;
        }
        Some((date, runs.iter().rev().find_map(|r| r.error.clone())))
    }

    async fn check_dead_man(
        &self,
        clinic: &Clinic,
        since: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match self.missing_audit(clinic, since).await? {
            Some((date, last_error)) => {
                self.notify(audit_missing(clinic, date, last_error.as_deref()))
                    .await
            }
            None => Ok(()),
        }
    }

    /// Monday at `weekly_report_at` local: last week's report of `clinic`, built, stored
    /// and sent once (the stored row is the claim: a second server finds it and sends
    /// nothing). A week that ended before `since` (when slotguard knew of the clinic) is
    /// not reported.
    async fn send_weekly_report(
        &self,
        clinic: &Clinic,
        since: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let store = self.store.as_ref();
        let now = self.clock.now();
        let monday = schedule::last_reported_week(clinic, self.settings.weekly_report_at, now);
        if monday + chrono::Duration::days(6) < clinic.today(since) {
            return Ok(());
        }
        let week = schedule::iso_week(monday);
        if store
            .weekly_report(clinic.id.as_str(), &week)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let report = report::build(store, Some(&clinic.id), monday, now).await?;
        if store
            .keep_weekly_report(
                clinic.id.as_str(),
                &week,
                now,
                &report::report_json(&report)?,
            )
            .await?
        {
            self.notify(report.notification()).await?;
        }
        Ok(())
    }

    async fn lead(&self) -> bool {
        let now = self.clock.now();
        match self
            .store
            .try_lease("auditor", &self.holder, now, now + LEASE)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "auditor lease");
                false
            }
        }
    }

    /// Runs until `stopped` turns true. The first pass, at start, catches up.
    pub async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.settings.tick);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if self.lead().await {
                        if let Err(e) = self.run_once().await {
                            tracing::warn!(error = %e, "audit pass failed; retrying next tick");
                        }
                    }
                }
                _ = stopped.changed() => {
                    // A clean stop hands the work over at once.
                    if let Err(e) = self.store.release_lease("auditor", &self.holder).await {
                        tracing::debug!(error = %e, "could not release the auditor lease");
                    }
                    return;
                }
            }
        }
    }
}

/// The clinics the store holds, registered or only watched, each in its zone
/// ([`KnownClinics::resolve`]); [`Auditor::known_clinics`] also logs zones that
/// disagree.
pub async fn known_clinics(
    store: &dyn Store,
    zones: &SourceZones,
) -> Result<KnownClinics, StoreError> {
    let registered = store.clinics_since().await?;
    let watched = store.watched_clinics().await?;
    Ok(KnownClinics::resolve(registered, &watched, zones))
}

/// The day's audit in a few lines; a clean day says so.
pub fn daily_summary(clinic: &Clinic, run: &AuditRun) -> Notification {
    let c = &run.counts;
    let verdict = if c.is_clean() {
        "clean".to_owned()
    } else {
        format!(
            "{} double booking{}",
            c.duplicate_groups,
            if c.duplicate_groups == 1 { "" } else { "s" }
        )
    };
    let subject = format!(
        "slotguard: audit of {} at clinic {}: {verdict}",
        run.local_date, clinic.id
    );
    let mut text = format!(
        "{} appointments checked.\n{} duplicate groups, {} extra rows, {} affected rows.\n",
        c.appointments_checked, c.duplicate_groups, c.extra_rows, c.affected_rows
    );
    if run.incidents_opened > 0 {
        text.push_str(&format!(
            "{} of them the real-time detector had not reported: now incidents found by audit.\n",
            run.incidents_opened
        ));
    }
    if run.incidents_resolved > 0 {
        text.push_str(&format!(
            "{} incidents resolved: their duplicates are gone.\n",
            run.incidents_resolved
        ));
    }
    if run.trigger == Trigger::CatchUp {
        text.push_str("Caught up: no server ran this audit on time.\n");
    }
    let short_text = format!(
        "slotguard audit {} {}: {verdict}",
        clinic.id, run.local_date
    );
    Notification {
        id: format!("summary-{}-{}", clinic.id, run.local_date),
        clinic_id: clinic.id.to_string(),
        event: Event::DailySummary,
        subject,
        text,
        short_text,
        incidents: json!([]),
        details: Some(json!(run)),
        html: None,
    }
}

fn audit_missing(clinic: &Clinic, date: NaiveDate, last_error: Option<&str>) -> Notification {
    let subject = format!("slotguard: no audit of {date} at clinic {}", clinic.id);
    let mut text = format!(
        "The audit of {date} was due at {} ({}) and has not succeeded.\n",
        clinic.audit_at.format("%H:%M"),
        clinic.timezone.name()
    );
    match last_error {
        Some(e) => text.push_str(&format!("Last attempt failed: {e}\n")),
        None => text.push_str("No attempt was recorded: is a slotguard server running?\n"),
    }
    Notification {
        id: format!("audit-missing-{}-{date}", clinic.id),
        clinic_id: clinic.id.to_string(),
        event: Event::AuditMissing,
        short_text: format!("slotguard: NO AUDIT of {date} at {}", clinic.id),
        subject,
        text,
        incidents: json!([]),
        details: Some(json!({"clinicId": clinic.id, "date": date, "lastError": last_error})),
        html: None,
    }
}
