//! The detector: checks a doctor-day after each committed write that touched it
//! (in-process wake-ups, plus PostgreSQL NOTIFY from other instances) and re-scans
//! recently changed days periodically, so a lost wake-up only delays detection.
//! When several servers share a database, the one holding the `detector` lease
//! does the work.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use hdrhistogram::Histogram;
use tokio::sync::{broadcast, mpsc, watch};

use super::reconcile::reconcile;
use crate::clock::Clock;
use crate::domain::lifecycle::{staff_move, InvalidMove, Moved};
use crate::domain::{
    Changes, ClinicId, FoundBy, Group, Incident, IncidentState, Keys, OutboxEntry, Reach, Touched,
};
use crate::store::{Store, StoreError};

/// How the detector runs; `[detect]` in slotguard.toml.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// React to wake-ups; off, only the re-scan finds duplicates.
    pub wakeups: bool,
    pub rescan_every: Duration,
    /// How far back the re-scan looks for changed days.
    pub rescan_window: Duration,
    /// Wake-ups are gathered this long, so a burst checks each day once.
    pub debounce: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            wakeups: true,
            rescan_every: Duration::from_secs(5),
            rescan_window: Duration::from_secs(120),
            debounce: Duration::from_millis(20),
        }
    }
}

/// The watermark of the re-scan: every doctor-day written before it has been checked.
pub const WATERMARK: &str = "detector";

/// Lease length; renewed at least every `rescan_every`.
pub const LEASE: chrono::Duration = chrono::Duration::seconds(5);

/// How often the process holding the lease renews it.
const RENEW_EVERY: Duration = Duration::from_secs(1);

/// A lease with more than this left is held without asking the store: no other
/// process can take it before it runs out.
const LEASE_MARGIN: chrono::Duration = chrono::Duration::seconds(2);

/// Sends "this day changed" to the detector: in-process, and to other instances
/// through the store (PostgreSQL NOTIFY).
#[derive(Clone)]
pub struct Wakeups {
    local: mpsc::UnboundedSender<Touched>,
    store: Arc<dyn Store>,
}

impl Wakeups {
    pub fn new(store: Arc<dyn Store>) -> (Self, mpsc::UnboundedReceiver<Touched>) {
        let (local, received) = mpsc::unbounded_channel();
        (Self { local, store }, received)
    }

    /// Called after a commit that changed `group` (all of it to check). Never fails
    /// the write it follows: a lost wake-up is caught by the re-scan.
    pub async fn wake(&self, group: Group) {
        self.touch(std::iter::once(group).collect()).await;
    }

    /// Called after a commit: the days it changed, and what of each. Other servers
    /// hear of the days only, and check them whole.
    pub async fn touch(&self, touched: Touched) {
        for day in touched.days() {
            if let Err(e) = self.store.announce(day).await {
                tracing::debug!(error = %e, "could not announce a changed day");
            }
        }
        let _ = self.local.send(touched);
    }
}

/// Detection latency in ms, from the histogram (three significant digits).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
    pub sum_ms: f64,
}

/// An incident saved by this process (opened, changed, acknowledged, resolved): what
/// live dashboards hear. Only the clinic travels, so a listener can keep to its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentChanged {
    pub incident_id: String,
    pub clinic_id: ClinicId,
}

/// Saves of one incident change tried before giving up on a busy incident.
const MAX_ATTEMPTS: u32 = 8;

/// Doctor-days checked (read, decided and saved) together. A burst touches many days
/// at once; one statement over many days costs little more than over one.
const BATCH: usize = crate::store::detection::DAYS_PER_STATEMENT;

/// Listeners that fall this far behind miss changes and reload instead.
const FEED_CAPACITY: usize = 1024;

pub struct Detector {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    holder: String,
    settings: Settings,
    latency_ms: Mutex<Histogram<u64>>,
    changed: broadcast::Sender<IncidentChanged>,
    /// When this process last took or renewed the lease, while it holds it.
    renewed_at: Mutex<Option<DateTime<Utc>>>,
}

impl Detector {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: Settings) -> Self {
        Self {
            store,
            clock,
            holder: uuid::Uuid::new_v4().to_string(),
            settings,
            latency_ms: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000, 3).expect("valid histogram bounds"),
            ),
            changed: broadcast::channel(FEED_CAPACITY).0,
            renewed_at: Mutex::new(None),
        }
    }

    /// Incidents this process saves from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<IncidentChanged> {
        self.changed.subscribe()
    }

    /// Tells this process's listeners of a change another process saved.
    pub fn announce(&self, change: IncidentChanged) {
        let _ = self.changed.send(change);
    }

    async fn save(&self, changes: &Changes) -> Result<(), StoreError> {
        self.store.save_incidents(changes).await?;
        for incident in &changes.incidents {
            // Ids, slot and token only: never a patient's name.
            tracing::info!(
                incident = %incident.id,
                clinic = %incident.group.clinic_id,
                doctor = %incident.group.doctor_id,
                date = %incident.group.date,
                kind = incident.kind.as_str(),
                key = %incident.key,
                state = incident.state.as_str(),
                members = incident.members.len(),
                found_by = incident.found_by.as_str(),
                "incident saved"
            );
            let _ = self.changed.send(IncidentChanged {
                incident_id: incident.id.clone(),
                clinic_id: incident.group.clinic_id.clone(),
            });
        }
        Ok(())
    }

    /// A person acknowledges (`to` = acknowledged: reminders stop) or resolves an
    /// incident (with a note; notifies). A resolved incident stays resolved until a
    /// member changes; resolving it again changes nothing. `by` names who did it.
    pub async fn move_incident(
        &self,
        incident: Incident,
        to: IncidentState,
        by: &str,
        note: Option<String>,
    ) -> Result<Incident, StoreError> {
        let mut current = incident;
        let mut attempt = 1;
        loop {
            match self.move_once(current.clone(), to, by, note.clone()).await {
                Err(StoreError::Changed(_)) if attempt < MAX_ATTEMPTS => {
                    attempt += 1;
                    // The detector (or another person) got there first: decide again
                    // from what is stored now.
                    current = self
                        .store
                        .incident(&current.id)
                        .await?
                        .ok_or(StoreError::NotFound(crate::domain::Entity::Incident))?;
                }
                done => return done,
            }
        }
    }

    async fn move_once(
        &self,
        incident: Incident,
        to: IncidentState,
        by: &str,
        note: Option<String>,
    ) -> Result<Incident, StoreError> {
        let now = self.clock.now();
        let (incident, tells) = match staff_move(&incident, to, by, note, now) {
            Ok(Some(Moved { incident, tells })) => (incident, tells),
            Ok(None) => return Ok(incident),
            Err(InvalidMove { from, to }) => {
                return Err(StoreError::InvalidIncidentMove {
                    from: from.as_str(),
                    to: to.as_str(),
                })
            }
        };
        let mut changes = Changes::default();
        if let Some(event) = tells {
            changes.outbox.push(OutboxEntry {
                id: uuid::Uuid::new_v4().to_string(),
                clinic_id: incident.group.clinic_id.clone(),
                incident_id: incident.id.clone(),
                event,
                created_at: now,
            });
        }
        changes.incidents.push(incident.clone());
        self.save(&changes).await?;
        Ok(incident)
    }

    /// Checks one doctor-day now and saves what changed. When a person (or another
    /// process) changed one of the day's incidents between the read and the save, the
    /// save is refused and the day is read and decided again.
    pub async fn check(&self, group: &Group, found_by: FoundBy) -> Result<Changes, StoreError> {
        self.check_days(&[(group.clone(), Reach::Day)], found_by)
            .await
    }

    /// Checks doctor-days together, each whole or only the slots and tokens written:
    /// their duplicates read in a statement or two, their incidents in another, every
    /// change saved in one transaction. A refused save (an incident changed
    /// meanwhile) reads and decides them all again.
    async fn check_days(
        &self,
        days: &[(Group, Reach)],
        found_by: FoundBy,
    ) -> Result<Changes, StoreError> {
        let mut attempt = 1;
        loop {
            match self.check_once(days, found_by).await {
                Err(StoreError::Changed(_)) if attempt < MAX_ATTEMPTS => attempt += 1,
                done => return done,
            }
        }
    }

    async fn check_once(
        &self,
        days: &[(Group, Reach)],
        found_by: FoundBy,
    ) -> Result<Changes, StoreError> {
        let whole: Vec<Group> = days
            .iter()
            .filter(|(_, reach)| *reach == Reach::Day)
            .map(|(day, _)| day.clone())
            .collect();
        let keyed: Vec<(Group, Keys)> = days
            .iter()
            .filter_map(|(day, reach)| match reach {
                Reach::Keys(keys) => Some((day.clone(), keys.clone())),
                Reach::Day => None,
            })
            .collect();
        let all: Vec<Group> = days.iter().map(|(day, _)| day.clone()).collect();
        // Three reads at once, on connections of their own.
        let (mut found, keyed_found, mut existing) = tokio::try_join!(
            async {
                if whole.is_empty() {
                    return Ok(BTreeMap::new());
                }
                self.store.duplicates_of(&whole).await
            },
            async {
                if keyed.is_empty() {
                    return Ok(BTreeMap::new());
                }
                self.store.duplicates_at(&keyed).await
            },
            self.store.incidents_of(&all),
        )?;
        found.extend(keyed_found);
        let now = self.clock.now();
        let mut changes = Changes::default();
        for (day, reach) in days {
            let found = found.remove(day).unwrap_or_default();
            let mut existing = existing.remove(day).unwrap_or_default();
            if let Reach::Keys(keys) = reach {
                // Only what these keys hold was read; incidents elsewhere in the day
                // are as they were.
                existing.retain(|i| keys.holds(i.kind, &i.key));
            }
            if found.is_empty() && existing.is_empty() {
                continue;
            }
            let day_changes = reconcile(day, &found, &existing, now, found_by);
            changes.incidents.extend(day_changes.incidents);
            changes.outbox.extend(day_changes.outbox);
        }
        if !changes.is_empty() {
            self.save(&changes).await?;
            let mut latency = self.latency_ms.lock().unwrap_or_else(|e| e.into_inner());
            for ms in changes.incidents.iter().filter_map(|i| i.detection_ms) {
                latency.saturating_record(ms.max(1) as u64);
            }
        }
        Ok(changes)
    }

    /// Detection latency (commit of the newest member → incident saved) of the
    /// incidents this process recorded.
    pub fn latency(&self) -> Latency {
        let h = self.latency_ms.lock().unwrap_or_else(|e| e.into_inner());
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50_ms: h.value_at_quantile(0.5),
            p99_ms: h.value_at_quantile(0.99),
            max_ms: h.max(),
            sum_ms: h.mean() * h.len() as f64,
        }
    }

    /// Whether this process holds the detector lease: without asking the store while
    /// the lease it took or renewed last has `LEASE_MARGIN` left (the keeper renews it
    /// every `RENEW_EVERY`; on SQLite a renewal waits for the one writer, behind a
    /// burst's own writes, and a window of wake-ups should not wait with it).
    async fn leads(&self) -> bool {
        let now = self.clock.now();
        let held = *self.renewed_at.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_some_and(|at| now >= at && now - at < LEASE - LEASE_MARGIN) {
            return true;
        }
        self.lead().await
    }

    /// Takes or renews the detector lease; whether this process holds it.
    async fn lead(&self) -> bool {
        let now = self.clock.now();
        let held = match self
            .store
            .try_lease("detector", &self.holder, now, now + LEASE)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "detector lease");
                false
            }
        };
        *self.renewed_at.lock().unwrap_or_else(|e| e.into_inner()) = held.then_some(now);
        held
    }

    /// Checks every day touched, `BATCH` days at a time; whether all were checked.
    async fn check_all(&self, touched: Touched) -> bool {
        let days: Vec<(Group, Reach)> = touched.into_inner().into_iter().collect();
        let mut all = true;
        for batch in days.chunks(BATCH) {
            match self.check_days(batch, FoundBy::Realtime).await {
                Ok(_) => {}
                Err(e) if batch.len() > 1 => {
                    // One day that cannot be read or saved must not hide the others.
                    tracing::warn!(error = %e, days = batch.len(), "checking days together failed; checking each alone");
                    for day in batch {
                        if let Err(e) = self
                            .check_days(std::slice::from_ref(day), FoundBy::Realtime)
                            .await
                        {
                            tracing::warn!(error = %e, clinic = %day.0.clinic_id, "detection failed; the re-scan will retry");
                            all = false;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, clinic = %batch[0].0.clinic_id, "detection failed; the re-scan will retry");
                    all = false;
                }
            }
        }
        all
    }

    /// One re-scan: every doctor-day written since the watermark (or within the
    /// re-scan window, if that reaches further back, for writes committed late), then
    /// the watermark moved to this pass's start once all were checked. After an
    /// outage of any length the first pass checks everything written meanwhile.
    async fn rescan(&self) -> Result<(), StoreError> {
        let started = self.clock.now();
        let window = chrono::Duration::from_std(self.settings.rescan_window)
            .unwrap_or(chrono::Duration::minutes(2));
        let since = match self.store.watermark(WATERMARK).await? {
            Some(checked) => checked.min(started - window),
            None => started - window,
        };
        let groups = self.store.changed_groups(since).await?;
        if self.check_all(groups.into_iter().collect()).await {
            self.store.set_watermark(WATERMARK, started).await?;
        }
        Ok(())
    }

    /// Takes or renews the lease every `RENEW_EVERY`, until `stopped` changes.
    async fn keep_lease(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(RENEW_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => { self.lead().await; }
                _ = stopped.changed() => return,
            }
        }
    }

    /// Re-scans every `rescan_every` while this process leads, until `stopped`
    /// changes.
    async fn rescan_every(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(self.settings.rescan_every);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    if self.leads().await {
                        if let Err(e) = self.rescan().await {
                            tracing::warn!(error = %e, "re-scan failed");
                        }
                    }
                }
                _ = stopped.changed() => return,
            }
        }
    }

    /// Runs until `stopped` turns true.
    pub async fn run(
        self: Arc<Self>,
        mut wakeups: mpsc::UnboundedReceiver<Touched>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut remote = self.store.listen().await;
        // The re-scan runs beside the wake-ups, so its pass over every day written
        // lately (a second or more in a burst) does not hold the wake-ups back.
        let rescans = tokio::spawn(Arc::clone(&self).rescan_every(stopped.clone()));
        let keeper = tokio::spawn(Arc::clone(&self).keep_lease(stopped.clone()));
        let mut pending = Touched::default();
        // The debounce runs from the first wake-up gathered, not the last: a steady
        // stream of writes must not put the check off for as long as it lasts.
        let mut due = tokio::time::Instant::now();
        loop {
            tokio::select! {
                Some(touched) = wakeups.recv() => {
                    if pending.is_empty() { due = tokio::time::Instant::now() + self.settings.debounce; }
                    pending.merge(touched);
                }
                Some(group) = async { match remote.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    if pending.is_empty() { due = tokio::time::Instant::now() + self.settings.debounce; }
                    pending.day(group);
                }
                _ = tokio::time::sleep_until(due), if !pending.is_empty() => {
                    let touched = std::mem::take(&mut pending);
                    if self.settings.wakeups && self.leads().await {
                        let (started, days) = (std::time::Instant::now(), touched.len());
                        self.check_all(touched).await;
                        tracing::debug!(days, ms = started.elapsed().as_millis() as u64, "checked the days woken");
                    }
                }
                _ = stopped.changed() => {
                    // A clean stop hands the work over at once (once the re-scan,
                    // which could renew the lease, has stopped).
                    for task in [rescans, keeper] {
                        task.abort();
                        let _ = task.await;
                    }
                    *self.renewed_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    if let Err(e) = self.store.release_lease("detector", &self.holder).await {
                        tracing::debug!(error = %e, "could not release the detector lease");
                    }
                    return;
                }
            }
        }
    }
}
