//! Booking attempts counted where they happen, and added to the database's rollups
//! every few seconds and at shutdown. The booking path only inserts into a map under
//! a std `Mutex` (held for the insert, never across an await), so counting costs it
//! no database work; the price is that a crash loses the counts of at most one flush
//! interval (never an appointment: those are committed before the answer).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use tokio::sync::watch;

use super::latency::{LatencyHistogram, LatencySnapshot};
use super::outcome_of;
use crate::domain::{Appointment, Clinic, ClinicId, DoctorId, Kind, RollupKey, Tally};
use crate::store::{Store, StoreError};

/// A booking attempt about to be committed: where and when it counts, before its
/// outcome is known.
#[derive(Debug, Clone)]
pub struct Attempt {
    clinic_id: ClinicId,
    doctor_id: DoctorId,
    kind: Kind,
    day: NaiveDate,
    hour: u8,
}

impl Attempt {
    /// An attempt at `now`, bucketed by the clinic's local day and hour.
    pub fn new(clinic: &Clinic, doctor_id: &DoctorId, kind: Kind, now: DateTime<Utc>) -> Self {
        let local = clinic.local(now);
        Self {
            clinic_id: clinic.id.clone(),
            doctor_id: doctor_id.clone(),
            kind,
            day: local.date(),
            hour: u8::try_from(local.hour()).unwrap_or(0),
        }
    }

    fn came_to(self, outcome: &'static str) -> RollupKey {
        RollupKey {
            clinic_id: self.clinic_id,
            day: self.day,
            hour: self.hour,
            doctor_id: self.doctor_id,
            kind: self.kind,
            outcome,
        }
    }
}

/// This process's booking counts not yet in the database, and its latency histogram.
#[derive(Default)]
pub struct BookingMetrics {
    pending: Mutex<BTreeMap<RollupKey, Tally>>,
    latency: LatencyHistogram,
}

impl BookingMetrics {
    fn pending(&self) -> MutexGuard<'_, BTreeMap<RollupKey, Tally>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one attempt that came to `result` after `retries` re-runs and `took`
    /// in the store.
    pub fn record(
        &self,
        attempt: Attempt,
        result: &Result<Appointment, StoreError>,
        retries: u32,
        took: Duration,
    ) {
        self.latency.observe(took);
        let tally = Tally {
            count: 1,
            retries: u64::from(retries),
            latency_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        };
        self.pending()
            .entry(attempt.came_to(outcome_of(result)))
            .or_default()
            .add(tally);
    }

    pub fn latency(&self) -> LatencySnapshot {
        self.latency.snapshot()
    }

    /// Adds the counts gathered since the last flush to the database, in one
    /// transaction. When that fails they are kept, and go with the next flush.
    pub async fn flush(&self, store: &dyn Store) -> Result<(), StoreError> {
        let deltas = std::mem::take(&mut *self.pending());
        if deltas.is_empty() {
            return Ok(());
        }
        store.add_rollups(&deltas).await.inspect_err(|_| {
            let mut pending = self.pending();
            for (key, tally) in deltas {
                pending.entry(key).or_default().add(tally);
            }
        })
    }

    /// Flushes every `every` until shutdown, then once more.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        every: Duration,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    if let Err(e) = self.flush(store.as_ref()).await {
                        tracing::warn!(error = %e, "could not flush booking counts; keeping them for the next try");
                    }
                }
                _ = stopped.changed() => break,
            }
        }
        if let Err(e) = self.flush(store.as_ref()).await {
            let lost: u64 = self.pending().values().map(|t| t.count).sum();
            tracing::error!(error = %e, attempts = lost, "could not flush booking counts at shutdown; they are lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BookingPolicy, Refusal};
    use crate::store::SqliteSync;

    fn clinic() -> Clinic {
        Clinic {
            id: ClinicId::parse("id", "kochi").unwrap(),
            name: "Kochi".into(),
            timezone: Clinic::DEFAULT_TIMEZONE,
            policy: BookingPolicy::default(),
            audit_at: Clinic::DEFAULT_AUDIT_AT,
        }
    }

    fn attempt_at(utc: &str) -> Attempt {
        let doctor = DoctorId::parse("id", "dr-asha").unwrap();
        let now = DateTime::parse_from_rfc3339(utc).unwrap().to_utc();
        Attempt::new(&clinic(), &doctor, Kind::Advance, now)
    }

    #[test]
    fn an_attempt_counts_in_the_clinics_local_day_and_hour() {
        // 18:45 UTC on 30 November is 00:15 on 1 December in Kolkata.
        let key = attempt_at("2026-11-30T18:45:00Z").came_to("booked");
        assert_eq!(key.day, NaiveDate::from_ymd_opt(2026, 12, 1).unwrap());
        assert_eq!(key.hour, 0);
        // 03:45 UTC is 09:15 in Kolkata: the morning rush, not hour 3.
        assert_eq!(attempt_at("2026-12-01T03:45:00Z").came_to("booked").hour, 9);
    }

    #[tokio::test]
    async fn a_failed_flush_keeps_its_counts_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("slotguard.db").display().to_string();
        let store = crate::store::open(&url, SqliteSync::Normal).await.unwrap();
        let metrics = BookingMetrics::default();
        let taken = Err(StoreError::Refused(Refusal::SlotTaken));
        for _ in 0..3 {
            metrics.record(
                attempt_at("2026-12-01T03:45:00Z"),
                &taken,
                1,
                Duration::from_millis(2),
            );
        }
        let mut conn =
            <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite:{url}"))
                .await
                .unwrap();
        sqlx::query("ALTER TABLE booking_totals RENAME TO hidden")
            .execute(&mut conn)
            .await
            .unwrap();
        assert!(metrics.flush(store.as_ref()).await.is_err());
        metrics.record(
            attempt_at("2026-12-01T03:50:00Z"),
            &taken,
            0,
            Duration::from_millis(2),
        );
        sqlx::query("ALTER TABLE hidden RENAME TO booking_totals")
            .execute(&mut conn)
            .await
            .unwrap();
        metrics.flush(store.as_ref()).await.unwrap();

        let day = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let outcomes = store.stats_rows(None, day, day).await.unwrap().day_outcomes;
        assert_eq!(outcomes.len(), 1);
        assert_eq!((outcomes[0].count, outcomes[0].retries), (4, 3));
        let totals = store.booking_totals().await.unwrap();
        assert_eq!(totals[0].count, 4, "the totals moved with the rollups");
    }
}
