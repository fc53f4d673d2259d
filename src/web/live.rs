//! `GET /events`: Server-Sent Events telling an open page that an incident it may
//! see changed (`event: incident`, the incident's id as data). The page then reloads
//! its live regions through htmx, rendered for that person: a stream never carries
//! another clinic's data, only the ids of changes the person may see.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use crate::detect::IncidentChanged;

use super::session::Visitor;
use super::WebState;

/// When some server's detector last made a pass: the detector lease is renewed at
/// every pass, so its expiry minus its length.
pub async fn last_detector_pass(
    store: &dyn crate::store::Store,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, crate::store::StoreError> {
    Ok(store
        .detector_lease_expiry()
        .await?
        .map(|expiry| (expiry - crate::detect::detector::LEASE).min(now)))
}

/// How often [`follow_other_processes`] looks for incidents saved elsewhere.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// How far back each look reaches, so a change committed late (or by a server whose
/// clock is a little behind) is still seen.
const FOLLOW_OVERLAP: chrono::Duration = chrono::Duration::seconds(10);

/// Incidents saved by another process (a second `serve` on the same PostgreSQL, a
/// `slotguard audit` or `watch import`) reach this process's live pages too: once a
/// second, the incidents touched lately are compared with what was last seen of each,
/// and what changed is announced as if the detector here had saved it. The same look
/// tells the overview's kept day counts which days were written (`web::counts`).
pub async fn follow_other_processes(state: super::WebState, mut stopped: watch::Receiver<bool>) {
    let mut seen: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
    let mut every = tokio::time::interval(FOLLOW_EVERY);
    let mut local = state.detector.subscribe();
    let mut first = true;
    let mut refresh = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopped.changed() => return,
        }
        let now = state.bookings.now();
        // Saved here (or announced already): pages have heard of it.
        while let Ok(change) = local.try_recv() {
            seen.insert(change.incident_id, now);
        }
        let since = now - FOLLOW_OVERLAP;
        match state.store().changed_groups(since).await {
            Ok(groups) => state
                .day_counts
                .forget(groups.into_iter().map(|g| (g.clinic_id, g.date))),
            Err(e) => tracing::debug!(error = %e, "could not look for days written elsewhere"),
        }
        if refresh.elapsed() >= super::counts::REFRESH_EVERY {
            refresh = std::time::Instant::now();
            if let Err(e) = state.day_counts.refresh(state.store()).await {
                tracing::debug!(error = %e, "could not read the kept day counts again");
            }
        }
        let touched = match state.store().incidents_touched_since(since).await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "could not look for incidents saved elsewhere");
                continue;
            }
        };
        for (id, clinic_id, stamp) in touched {
            if seen.get(&id).is_some_and(|s| *s >= stamp) {
                continue;
            }
            seen.insert(id.clone(), stamp);
            if !first {
                state.detector.announce(IncidentChanged {
                    incident_id: id,
                    clinic_id,
                });
            }
        }
        seen.retain(|_, stamp| *stamp >= since - FOLLOW_OVERLAP);
        first = false;
    }
}

/// How often a stream checks that its session is still alive (logout, expiry).
const SESSION_CHECK: Duration = Duration::from_secs(30);

pub async fn events(
    State(state): State<WebState>,
    visitor: Visitor,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = state.detector.subscribe();
    let closing = state.closing.subscribe();
    let mut check = tokio::time::interval(SESSION_CHECK);
    check.reset();
    let stream = stream::unfold(
        (state, visitor, changes, closing, check),
        |(state, visitor, mut changes, mut closing, mut check)| async move {
            loop {
                let event = tokio::select! {
                    received = changes.recv() => match received {
                        Ok(change) if visitor.staff.sees(&change.clinic_id) => {
                            Event::default().event("incident").data(change.incident_id)
                        }
                        Ok(_) => continue,
                        // Fell behind: the page reloads everything it shows.
                        Err(RecvError::Lagged(_)) => Event::default().event("incident").data("*"),
                        Err(RecvError::Closed) => return None,
                    },
                    _ = check.tick() => {
                        if visitor.is_alive(&state).await {
                            continue;
                        }
                        return None;
                    }
                    // The only change ever sent is "closing".
                    _ = closing.changed() => return None,
                };
                return Some((Ok(event), (state, visitor, changes, closing, check)));
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}
