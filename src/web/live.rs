//! `GET /events`: Server-Sent Events telling an open page that an incident it may
//! see changed (`event: incident`, the incident's id as data). The page then reloads
//! its live regions through htmx, rendered for that person: a stream never carries
//! another clinic's data, only the ids of changes the person may see.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use tokio::sync::broadcast::error::RecvError;

use super::session::Visitor;
use super::WebState;

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
