//! An incident's life as a person moves it: acknowledge ("we are on it") and resolve
//! ("handled", with a note), from the dashboard and the API alike. Detection moves it
//! too (opened, grew, resolved when the duplicate is gone, regressed): that is
//! `detect::reconcile`. Pure: the caller reads the incident, applies the move, and
//! saves it over the revision it read.

use chrono::{DateTime, Utc};

use super::{Event, Incident, IncidentState};

/// A move the incident's state does not allow: nothing reopens a resolved incident
/// but its duplicate coming back, and nobody "opens" one by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an incident that is {} cannot become {}", from.as_str(), to.as_str())]
pub struct InvalidMove {
    pub from: IncidentState,
    pub to: IncidentState,
}

/// What a person's move makes of an incident: the incident as it becomes, and what
/// the channels are told of, if anything.
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    pub incident: Incident,
    pub tells: Option<Event>,
}

/// Moves `incident` to `to` on behalf of `by` at `now`; a `note` replaces the one kept.
/// `None` when it is so already (resolving a resolved incident): nothing to save,
/// nobody to tell.
pub fn staff_move(
    incident: &Incident,
    to: IncidentState,
    by: &str,
    note: Option<String>,
    now: DateTime<Utc>,
) -> Result<Option<Moved>, InvalidMove> {
    let mut incident = incident.clone();
    let tells = match (incident.state, to) {
        (IncidentState::Resolved, IncidentState::Resolved) => return Ok(None),
        (IncidentState::Resolved, _) | (_, IncidentState::Open) => {
            return Err(InvalidMove {
                from: incident.state,
                to,
            })
        }
        (_, IncidentState::Acknowledged) => {
            incident.acknowledged_at = Some(now);
            incident.acknowledged_by = Some(by.to_owned());
            None
        }
        (_, IncidentState::Resolved) => {
            incident.resolved_at = Some(now);
            incident.resolved_by = Some(by.to_owned());
            incident.changed_at = now;
            Some(Event::Resolved)
        }
    };
    incident.state = to;
    if note.is_some() {
        incident.note = note;
    }
    Ok(Some(Moved { incident, tells }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::incident::tests::day;
    use crate::domain::{DuplicateKind, FoundBy};

    fn at(hour: u32) -> DateTime<Utc> {
        chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 1, hour, 0, 0).unwrap()
    }

    fn incident_in(state: IncidentState) -> Incident {
        Incident {
            id: "i-1".into(),
            group: day("dr-asha"),
            kind: DuplicateKind::Slot,
            key: "5".into(),
            state,
            found_by: FoundBy::Realtime,
            members: Vec::new(),
            regressions: 0,
            first_seen: at(8),
            last_seen: at(8),
            changed_at: at(8),
            detection_ms: None,
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
            resolved_by: None,
            note: None,
            last_notified_at: None,
            revision: 0,
        }
    }

    #[test]
    fn acknowledging_keeps_it_with_whoever_did_it_and_tells_nobody() {
        let open = incident_in(IncidentState::Open);
        let Some(Moved { incident, tells }) = staff_move(
            &open,
            IncidentState::Acknowledged,
            "user:anu@x",
            None,
            at(9),
        )
        .unwrap() else {
            panic!("acknowledged");
        };
        assert_eq!(incident.state, IncidentState::Acknowledged);
        assert_eq!(incident.acknowledged_by.as_deref(), Some("user:anu@x"));
        assert_eq!(incident.acknowledged_at, Some(at(9)));
        assert_eq!(tells, None);
    }

    #[test]
    fn resolving_records_the_note_and_tells_the_channels() {
        let acknowledged = incident_in(IncidentState::Acknowledged);
        let Some(Moved { incident, tells }) = staff_move(
            &acknowledged,
            IncidentState::Resolved,
            "key-1",
            Some("called the second patient".into()),
            at(10),
        )
        .unwrap() else {
            panic!("resolved");
        };
        assert_eq!(incident.state, IncidentState::Resolved);
        assert_eq!(incident.resolved_at, Some(at(10)));
        assert_eq!(incident.changed_at, at(10));
        assert_eq!(incident.note.as_deref(), Some("called the second patient"));
        assert_eq!(tells, Some(Event::Resolved));
    }

    #[test]
    fn a_resolved_incident_is_neither_resolved_twice_nor_acknowledged_nor_reopened() {
        let resolved = || incident_in(IncidentState::Resolved);
        assert_eq!(
            staff_move(&resolved(), IncidentState::Resolved, "k", None, at(9)),
            Ok(None)
        );
        for to in [IncidentState::Acknowledged, IncidentState::Open] {
            assert_eq!(
                staff_move(&resolved(), to, "k", None, at(9)),
                Err(InvalidMove {
                    from: IncidentState::Resolved,
                    to
                })
            );
        }
        assert!(staff_move(
            &incident_in(IncidentState::Open),
            IncidentState::Open,
            "k",
            None,
            at(9)
        )
        .is_err());
    }
}
