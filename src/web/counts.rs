//! The overview's day counts, kept between renders so a render reads only what changed.
//!
//! - Appointments per clinic and local day (what "appointments checked" counts): kept
//!   per (clinic, day) until a write to that day is seen. [`super::live`]'s follower
//!   reads the doctor-days written by any process once a second (the detector's own
//!   `changed_groups`, on indexed change times) and forgets those days, so the next
//!   render re-reads just them. A document moved from one day to another is seen on
//!   its new day only, so every kept day is also re-read in the background every
//!   [`REFRESH_EVERY`], off the request path.
//! - Incidents per clinic over the view's dates: kept until an incident of that
//!   clinic changes (the detector's change feed, which `live`'s follower extends to
//!   incidents saved by other processes). Such a change also forgets the clinic's
//!   appointment counts: the write behind it may not have been reported yet.
//! - Booking outcomes of closed days (before yesterday in the view's zone) per view:
//!   a day's rollups are written while the day is today, and a flush is at most
//!   seconds late, so a closed day's never change; they are kept until the view's
//!   dates move on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{Duration, NaiveDate};
use tokio::sync::broadcast;

use crate::detect::IncidentChanged;
use crate::domain::{ClinicId, Incident};
use crate::store::metrics::{DayAppointments, StatsRows};
use crate::store::{Store, StoreError};

/// How often every kept appointment count is read again in the background.
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
/// Kept days older than this (before the newest day asked for) are dropped.
const KEEP_DAYS: i64 = 62;
/// Views whose closed days' outcomes are kept at once (each person's view is one).
const VIEWS_KEPT: usize = 256;

/// A view's closed days: its clinics (`None`: every clinic) and first and last date.
type ClosedKey = (Option<Vec<ClinicId>>, NaiveDate, NaiveDate);

/// One clinic's incidents dated `from..=to`, as last read.
#[derive(Debug)]
struct KeptIncidents {
    from: NaiveDate,
    to: NaiveDate,
    incidents: Vec<Incident>,
}

#[derive(Debug)]
pub struct DayCounts {
    appointments: Mutex<HashMap<(ClinicId, NaiveDate), u64>>,
    closed: Mutex<HashMap<ClosedKey, StatsRows>>,
    incidents: Mutex<HashMap<ClinicId, KeptIncidents>>,
    /// Incident changes saved here or seen from other processes (`live`'s follower):
    /// each makes its clinic's incidents be read again.
    changes: Mutex<broadcast::Receiver<IncidentChanged>>,
}

impl DayCounts {
    pub fn new(changes: broadcast::Receiver<IncidentChanged>) -> Self {
        Self {
            appointments: Mutex::default(),
            closed: Mutex::default(),
            incidents: Mutex::default(),
            changes: Mutex::new(changes),
        }
    }

    /// Forgets what the incident changes announced since the last look make stale: the
    /// clinic's incidents, and its appointment counts too, since an incident comes
    /// from a write the follower may not have reported yet (a page reloading on the
    /// incident must not show the duplicate beside "0 appointments checked").
    fn take_changes(&self) {
        let mut changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let mut clinics = std::collections::BTreeSet::new();
        let mut all = false;
        loop {
            match changes.try_recv() {
                Ok(change) => {
                    clinics.insert(change.clinic_id);
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => all = true,
                Err(_) => break,
            }
        }
        drop(changes);
        if all {
            self.lock_incidents().clear();
            self.lock_appointments().clear();
        } else if !clinics.is_empty() {
            self.lock_incidents().retain(|c, _| !clinics.contains(c));
            self.lock_appointments()
                .retain(|(c, _), _| !clinics.contains(c));
        }
    }

    /// Incidents of `clinics` dated `from..=to`, reading again only the clinics whose
    /// incidents changed since they were last read (or that were read for other dates).
    pub async fn incidents(
        &self,
        store: &dyn Store,
        clinics: &[ClinicId],
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<Incident>, StoreError> {
        self.take_changes();
        let mut all = Vec::new();
        for clinic in clinics {
            let hit = self
                .lock_incidents()
                .get(clinic)
                .filter(|k| (k.from, k.to) == (from, to))
                .map(|k| k.incidents.clone());
            match hit {
                Some(incidents) => all.extend(incidents),
                None => {
                    let incidents = store.incidents_dated(Some(clinic), from, to).await?;
                    all.extend(incidents.iter().cloned());
                    self.lock_incidents().insert(
                        clinic.clone(),
                        KeptIncidents {
                            from,
                            to,
                            incidents,
                        },
                    );
                }
            }
        }
        Ok(all)
    }

    /// Appointments of `clinics` on each day of `from..=to` (days with none left out),
    /// reading only the days not kept, one statement per clinic.
    pub async fn appointments(
        &self,
        store: &dyn Store,
        clinics: &[ClinicId],
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DayAppointments>, StoreError> {
        self.take_changes();
        let missing: BTreeMap<&ClinicId, (NaiveDate, NaiveDate)> = {
            let kept = self.lock_appointments();
            clinics
                .iter()
                .filter_map(|c| {
                    let absent: Vec<NaiveDate> = days(from, to)
                        .filter(|d| !kept.contains_key(&(c.clone(), *d)))
                        .collect();
                    Some((c, (*absent.first()?, *absent.last()?)))
                })
                .collect()
        };
        for (clinic, (first, last)) in missing {
            self.read(store, clinic, first, last).await?;
        }
        let kept = self.lock_appointments();
        Ok(clinics
            .iter()
            .flat_map(|c| {
                days(from, to).filter_map(|d| {
                    let count = *kept.get(&(c.clone(), d))?;
                    (count > 0).then(|| DayAppointments {
                        clinic_id: c.clone(),
                        date: d,
                        count,
                    })
                })
            })
            .collect())
    }

    /// Reads one clinic's days `first..=last` and keeps them (a day with none as 0).
    async fn read(
        &self,
        store: &dyn Store,
        clinic: &ClinicId,
        first: NaiveDate,
        last: NaiveDate,
    ) -> Result<(), StoreError> {
        let rows = store.day_appointments(clinic, first, last).await?;
        let mut kept = self.lock_appointments();
        for d in days(first, last) {
            kept.insert((clinic.clone(), d), 0);
        }
        for row in rows {
            kept.insert((row.clinic_id, row.date), row.count);
        }
        let oldest = last - Duration::days(KEEP_DAYS);
        if kept.len() > 4096 {
            kept.retain(|(_, d), _| *d >= oldest);
        }
        Ok(())
    }

    /// Forgets the days written lately, so the next render reads them again.
    pub fn forget(&self, written: impl IntoIterator<Item = (ClinicId, NaiveDate)>) {
        let mut kept = self.lock_appointments();
        for day in written {
            kept.remove(&day);
        }
    }

    /// Reads every kept day again (per clinic, its first to last kept day) and keeps
    /// the new counts; for what [`Self::forget`] cannot see (a document moved off a
    /// day). Run in the background.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), StoreError> {
        let spans: BTreeMap<ClinicId, (NaiveDate, NaiveDate)> = {
            let kept = self.lock_appointments();
            let mut spans: BTreeMap<ClinicId, (NaiveDate, NaiveDate)> = BTreeMap::new();
            for (clinic, d) in kept.keys() {
                let span = spans.entry(clinic.clone()).or_insert((*d, *d));
                span.0 = span.0.min(*d);
                span.1 = span.1.max(*d);
            }
            spans
        };
        for (clinic, (first, last)) in spans {
            self.read(store, &clinic, first, last).await?;
        }
        Ok(())
    }

    /// Booking outcomes of the closed days `from..=to` for a view of `clinics`
    /// (`None`: every clinic), read once per view and dates.
    pub async fn closed_outcomes(
        &self,
        store: &dyn Store,
        clinics: Option<&[ClinicId]>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<StatsRows, StoreError> {
        let key = (clinics.map(<[ClinicId]>::to_vec), from, to);
        if let Some(rows) = self.lock_closed().get(&key) {
            return Ok(rows.clone());
        }
        let rows = outcomes(store, clinics, from, to).await?;
        let mut kept = self.lock_closed();
        // Views of earlier dates are done with once the dates move on.
        kept.retain(|(_, _, last), _| *last >= to);
        if kept.len() < VIEWS_KEPT {
            kept.insert(key, rows.clone());
        }
        Ok(rows)
    }

    fn lock_appointments(&self) -> std::sync::MutexGuard<'_, HashMap<(ClinicId, NaiveDate), u64>> {
        self.appointments.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_incidents(&self) -> std::sync::MutexGuard<'_, HashMap<ClinicId, KeptIncidents>> {
        self.incidents.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_closed(&self) -> std::sync::MutexGuard<'_, HashMap<ClosedKey, StatsRows>> {
        self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Booking outcomes of `from..=to` for `clinics` (`None`: every clinic, one read),
/// read now.
pub async fn outcomes(
    store: &dyn Store,
    clinics: Option<&[ClinicId]>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<StatsRows, StoreError> {
    let Some(clinics) = clinics else {
        return store.booking_outcomes(None, from, to).await;
    };
    let mut rows = StatsRows::default();
    for c in clinics {
        let r = store.booking_outcomes(Some(c), from, to).await?;
        rows.day_outcomes.extend(r.day_outcomes);
        rows.hour_outcomes.extend(r.hour_outcomes);
    }
    Ok(rows)
}

fn days(from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    from.iter_days().take_while(move |d| *d <= to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteSync;

    fn document(id: &str, date: &str, slot: u32) -> crate::domain::WatchedAppointment {
        crate::watch::kloqo::parse_document(&serde_json::json!({
            "id": id, "clinicId": "kochi", "doctorId": "dr-rao", "date": date,
            "slotIndex": slot, "status": "Confirmed", "createdAt": "2026-11-01T04:00:00Z",
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_kept_day_is_read_again_once_a_write_to_it_is_seen_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("slotguard.db").display().to_string();
        let store = crate::store::open(&url, SqliteSync::Normal).await.unwrap();
        let kochi = ClinicId::parse("clinic", "kochi").unwrap();
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        store
            .upsert_watched(
                "kloqo",
                &[document("a", "2 November 2026", 1)],
                at("2026-11-29T10:00:00Z"),
            )
            .await
            .unwrap();
        let (announce, changes) = tokio::sync::broadcast::channel(16);
        let counts = DayCounts::new(changes);
        async fn kept(
            counts: &DayCounts,
            store: &dyn Store,
            clinic: &ClinicId,
        ) -> Vec<(NaiveDate, u64)> {
            let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
            let rows = counts
                .appointments(store, std::slice::from_ref(clinic), day(1), day(3))
                .await;
            rows.unwrap().iter().map(|a| (a.date, a.count)).collect()
        }
        let read = |counts| kept(counts, store.as_ref(), &kochi);
        assert_eq!(read(&counts).await, vec![(day(2), 1)]);

        // A late document for that closed day: kept as it was until the write is seen.
        let late = at("2026-11-29T10:05:00Z");
        store
            .upsert_watched("kloqo", &[document("b", "2 November 2026", 2)], late)
            .await
            .unwrap();
        assert_eq!(
            read(&counts).await,
            vec![(day(2), 1)],
            "served from what was kept"
        );
        let written = store.changed_groups(late).await.unwrap();
        counts.forget(written.into_iter().map(|g| (g.clinic_id, g.date)));
        assert_eq!(read(&counts).await, vec![(day(2), 2)]);

        // A document moved to another day is caught by the background refresh.
        store
            .upsert_watched(
                "kloqo",
                &[document("b", "3 November 2026", 2)],
                at("2026-11-29T10:06:00Z"),
            )
            .await
            .unwrap();
        counts.forget([(kochi.clone(), day(3))]);
        assert_eq!(read(&counts).await, vec![(day(2), 2), (day(3), 1)]);
        counts.refresh(store.as_ref()).await.unwrap();
        assert_eq!(read(&counts).await, vec![(day(2), 1), (day(3), 1)]);

        // An incident of the clinic, announced before the follower reports the write
        // behind it, makes its counts be read again too.
        store
            .upsert_watched(
                "kloqo",
                &[document("c", "3 November 2026", 1)],
                at("2026-11-29T10:07:00Z"),
            )
            .await
            .unwrap();
        assert_eq!(
            read(&counts).await,
            vec![(day(2), 1), (day(3), 1)],
            "still kept"
        );
        announce
            .send(IncidentChanged {
                incident_id: "i-1".into(),
                clinic_id: kochi.clone(),
            })
            .unwrap();
        assert_eq!(read(&counts).await, vec![(day(2), 1), (day(3), 2)]);
    }
}
