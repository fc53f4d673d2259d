//! What the duplicates found in a group mean for its incidents. Pure: the detector
//! and the audit pass what they found and what exists, and save what comes back.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use crate::domain::incident::same_double_booking_once;
use crate::domain::{
    Changes, Duplicate, DuplicateKind, Event, FoundBy, Group, Incident, IncidentState, MemberRef,
    OutboxEntry,
};

/// - a new fingerprint opens an incident;
/// - new members joining an open incident notify again; members leaving (while a
///   duplicate remains) are recorded quietly;
/// - an open incident whose duplicate is gone is resolved automatically;
/// - a resolved incident whose duplicate is present again is a regression only if a
///   member changed after the resolve (by its own timestamps): an event that arrives
///   late, or a duplicate a person resolved knowingly, does not reopen it.
pub fn reconcile(
    group: &Group,
    found: &[Duplicate],
    existing: &[Incident],
    now: DateTime<Utc>,
    found_by: FoundBy,
) -> Changes {
    let found = &same_double_booking_once(found);
    let mut changes = Changes::default();
    let by_fingerprint: HashMap<(DuplicateKind, &str), &Incident> = existing
        .iter()
        .map(|i| ((i.kind, i.key.as_str()), i))
        .collect();
    let latency = |d: &Duplicate| d.last_commit.map(|t| (now - t).num_milliseconds().max(0));
    for duplicate in found {
        let members: Vec<MemberRef> = duplicate.members.iter().cloned().collect();
        match by_fingerprint.get(&(duplicate.kind, duplicate.key.as_str())) {
            None => {
                let incident = Incident {
                    id: uuid::Uuid::new_v4().to_string(),
                    group: group.clone(),
                    kind: duplicate.kind,
                    key: duplicate.key.clone(),
                    state: IncidentState::Open,
                    found_by,
                    members,
                    regressions: 0,
                    first_seen: now,
                    last_seen: now,
                    changed_at: now,
                    detection_ms: latency(duplicate),
                    acknowledged_at: None,
                    acknowledged_by: None,
                    resolved_at: None,
                    resolved_by: None,
                    note: None,
                    last_notified_at: None,
                    revision: 0,
                };
                notify(&mut changes, &incident, Event::Opened, now);
                changes.incidents.push(incident);
            }
            Some(existing) if existing.state != IncidentState::Resolved => {
                let before: BTreeSet<MemberRef> = existing.members.iter().cloned().collect();
                if before == duplicate.members {
                    continue;
                }
                let mut incident = (*existing).clone();
                let grew = !duplicate.members.is_subset(&before);
                incident.members = members;
                incident.last_seen = now;
                incident.changed_at = now;
                if grew {
                    notify(&mut changes, &incident, Event::Grew, now);
                }
                changes.incidents.push(incident);
            }
            Some(existing) => {
                let came_back = match (duplicate.last_change, existing.resolved_at) {
                    (Some(change), Some(resolved)) => change > resolved,
                    _ => false,
                };
                if !came_back {
                    continue;
                }
                let mut incident = (*existing).clone();
                incident.state = IncidentState::Open;
                incident.members = members;
                incident.regressions += 1;
                incident.last_seen = now;
                incident.changed_at = now;
                incident.detection_ms = latency(duplicate);
                incident.acknowledged_at = None;
                incident.acknowledged_by = None;
                incident.resolved_at = None;
                incident.resolved_by = None;
                notify(&mut changes, &incident, Event::Regressed, now);
                changes.incidents.push(incident);
            }
        }
    }
    let still_there: BTreeSet<(DuplicateKind, &str)> =
        found.iter().map(|d| (d.kind, d.key.as_str())).collect();
    for existing in existing
        .iter()
        .filter(|i| i.state != IncidentState::Resolved)
    {
        if still_there.contains(&(existing.kind, existing.key.as_str())) {
            continue;
        }
        let mut incident = existing.clone();
        incident.state = IncidentState::Resolved;
        incident.resolved_at = Some(now);
        incident.resolved_by = Some("auto".into());
        incident.changed_at = now;
        notify(&mut changes, &incident, Event::Resolved, now);
        changes.incidents.push(incident);
    }
    changes
}

/// Queues the alert about `incident`'s change in `changes`' outbox, under an id of its
/// own.
fn notify(changes: &mut Changes, incident: &Incident, event: Event, now: DateTime<Utc>) {
    changes.outbox.push(OutboxEntry {
        id: uuid::Uuid::new_v4().to_string(),
        clinic_id: incident.group.clinic_id.clone(),
        incident_id: incident.id.clone(),
        event,
        created_at: now,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClinicId, DoctorId};
    use chrono::Duration;

    fn group() -> Group {
        Group {
            clinic_id: ClinicId::parse("c", "kochi").unwrap(),
            doctor_id: DoctorId::parse("d", "dr-asha").unwrap(),
            date: chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
        }
    }

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::minutes(minutes)
    }

    fn slot5(ids: &[&str], changed: i64) -> Duplicate {
        Duplicate {
            kind: DuplicateKind::Slot,
            key: "5".into(),
            members: ids
                .iter()
                .map(|id| MemberRef {
                    source: "kloqo".into(),
                    id: (*id).into(),
                })
                .collect(),
            last_change: Some(t(changed)),
            last_commit: Some(t(changed)),
        }
    }

    fn events(changes: &Changes) -> Vec<Event> {
        changes.outbox.iter().map(|o| o.event).collect()
    }

    #[test]
    fn a_new_duplicate_opens_one_incident_and_one_alert() {
        let changes = reconcile(
            &group(),
            &[slot5(&["a", "b"], 0)],
            &[],
            t(0),
            FoundBy::Realtime,
        );
        assert_eq!(changes.incidents.len(), 1);
        assert_eq!(changes.incidents[0].state, IncidentState::Open);
        assert_eq!(changes.incidents[0].detection_ms, Some(0));
        assert_eq!(events(&changes), [Event::Opened]);
    }

    #[test]
    fn one_slot_and_its_token_given_twice_is_one_incident_but_a_token_alone_is_its_own() {
        let token = |ids: &[&str]| Duplicate {
            kind: DuplicateKind::Token,
            key: "A1-006".into(),
            ..slot5(ids, 0)
        };
        let both = reconcile(
            &group(),
            &[slot5(&["a", "b"], 0), token(&["a", "b"])],
            &[],
            t(0),
            FoundBy::Realtime,
        );
        assert_eq!(both.incidents.len(), 1);
        assert_eq!(both.incidents[0].kind, DuplicateKind::Slot);
        let apart = reconcile(
            &group(),
            &[slot5(&["a", "b"], 0), token(&["a", "c"])],
            &[],
            t(0),
            FoundBy::Realtime,
        );
        assert_eq!(apart.incidents.len(), 2);
    }

    #[test]
    fn seeing_the_same_duplicate_again_changes_nothing() {
        let first = reconcile(
            &group(),
            &[slot5(&["a", "b"], 0)],
            &[],
            t(0),
            FoundBy::Realtime,
        );
        let again = reconcile(
            &group(),
            &[slot5(&["a", "b"], 0)],
            &first.incidents,
            t(1),
            FoundBy::Realtime,
        );
        assert!(again.is_empty());
        assert!(again.outbox.is_empty());
    }

    #[test]
    fn a_third_member_notifies_once_more_and_a_cancelled_one_resolves() {
        let opened = reconcile(
            &group(),
            &[slot5(&["a", "b"], 0)],
            &[],
            t(0),
            FoundBy::Realtime,
        )
        .incidents;
        let grown = reconcile(
            &group(),
            &[slot5(&["a", "b", "c"], 1)],
            &opened,
            t(1),
            FoundBy::Realtime,
        );
        assert_eq!(events(&grown), [Event::Grew]);
        assert_eq!(grown.incidents[0].members.len(), 3);
        let resolved = reconcile(&group(), &[], &grown.incidents, t(2), FoundBy::Realtime);
        assert_eq!(events(&resolved), [Event::Resolved]);
        assert_eq!(resolved.incidents[0].resolved_by.as_deref(), Some("auto"));
    }

    #[test]
    fn a_duplicate_back_after_a_resolve_is_a_regression_but_a_late_event_is_not() {
        let opened = reconcile(
            &group(),
            &[slot5(&["a", "b"], 0)],
            &[],
            t(0),
            FoundBy::Realtime,
        )
        .incidents;
        let resolved = reconcile(&group(), &[], &opened, t(5), FoundBy::Realtime).incidents;
        let late = reconcile(
            &group(),
            &[slot5(&["a", "b"], 3)],
            &resolved,
            t(6),
            FoundBy::Realtime,
        );
        assert!(
            late.is_empty(),
            "members unchanged since the resolve: not a regression"
        );
        let back = reconcile(
            &group(),
            &[slot5(&["a", "c"], 7)],
            &resolved,
            t(8),
            FoundBy::Realtime,
        );
        assert_eq!(events(&back), [Event::Regressed]);
        assert_eq!(
            (back.incidents[0].regressions, back.incidents[0].state),
            (1, IncidentState::Open)
        );
    }
}
