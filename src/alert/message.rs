//! The words of a notification: one clinic's incidents grouped over `groupWait`,
//! each named with what is true of it now. An incident that opened and was resolved
//! before the message left is "NEW, NOW RESOLVED", never just "NEW"; a message about
//! one new and one resolved incident says so of each. No patient is named: ids,
//! slots and tokens are enough to investigate, and the text may travel by SMS.

use std::collections::BTreeSet;

use serde_json::json;

use super::{IncidentAlert, Notification};
use crate::domain::{DuplicateKind, Event, Incident, IncidentState};
use crate::store::detection::MemberRow;

/// The most an SMS body holds (one GSM-7 segment).
pub const SMS_MAX_CHARS: usize = 160;

/// What the SMS channel adds after the short text: " ref " and the six characters of
/// [`Notification::reference`].
pub const SMS_REFERENCE_CHARS: usize = 11;

/// An incident as a message names it: its most urgent event since the last message,
/// its state now, and the slots and tokens its members hold (read from their rows,
/// of which nothing else is kept: the rows carry patients' names).
pub fn incident_alert(event: Event, incident: &Incident, members: &[MemberRow]) -> IncidentAlert {
    let slots: BTreeSet<u32> = members.iter().map(|m| m.slot_index).collect();
    let tokens: BTreeSet<String> = members
        .iter()
        .filter_map(|m| m.token_number.clone())
        .collect();
    let (slots, tokens) = match incident.kind {
        // The key is the truth of the duplicate; the rows add what else they hold.
        DuplicateKind::Slot => (
            incident.key.parse().map(|s| vec![s]).unwrap_or_default(),
            tokens.into_iter().collect(),
        ),
        DuplicateKind::Token => (slots.into_iter().collect(), vec![incident.key.clone()]),
    };
    IncidentAlert {
        id: incident.id.clone(),
        event,
        kind: incident.kind,
        key: incident.key.clone(),
        clinic_id: incident.group.clinic_id.to_string(),
        doctor_id: incident.group.doctor_id.to_string(),
        date: incident.group.date,
        state: incident.state,
        found_by: incident.found_by,
        members: incident.members.clone(),
        slots,
        tokens,
        changed_at: Some(incident.changed_at),
    }
}

/// The message for one clinic's grouped incidents, most urgent first. The
/// notification's `event` is the most urgent of what is true now (see
/// [`IncidentAlert::current`]), so channels that wake people (SMS) are told only
/// about something still open.
pub fn compose(id: &str, clinic: &str, alerts: &[IncidentAlert]) -> Notification {
    let mut alerts = alerts.to_vec();
    alerts.sort_by(|a, b| {
        b.current()
            .urgency()
            .cmp(&a.current().urgency())
            .then_with(|| a.id.cmp(&b.id))
    });
    let event = alerts
        .iter()
        .map(IncidentAlert::current)
        .max_by_key(|e| e.urgency())
        .unwrap_or(Event::Opened);
    let open = alerts
        .iter()
        .filter(|i| i.state != IncidentState::Resolved)
        .count();
    let subject = if open == 0 {
        format!("slotguard: duplicate bookings resolved at clinic {clinic}")
    } else {
        format!(
            "slotguard: {open} duplicate booking{} at clinic {clinic}",
            if open == 1 { "" } else { "s" }
        )
    };
    let text: String = alerts.iter().map(line).collect();
    Notification {
        id: id.to_owned(),
        clinic_id: clinic.to_owned(),
        event,
        subject,
        text,
        short_text: short_text(clinic, &alerts),
        incidents: json!(alerts),
        details: None,
        html: None,
    }
}

/// One incident's line of the text.
fn line(i: &IncidentAlert) -> String {
    let members = i
        .members
        .iter()
        .map(|m| format!("{}:{}", m.source, m.id))
        .collect::<Vec<_>>()
        .join(", ");
    let held = match (i.kind, i.tokens.as_slice(), i.slots.as_slice()) {
        (DuplicateKind::Slot, [], _) | (DuplicateKind::Token, _, []) => String::new(),
        (DuplicateKind::Slot, tokens, _) => format!(", tokens {}", tokens.join(", ")),
        (DuplicateKind::Token, _, slots) => format!(
            ", slots {}",
            slots
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let what = if i.state == IncidentState::Resolved {
        format!("no longer double-booked (was {members})")
    } else {
        format!("{} appointments ({members}){held}", i.members.len())
    };
    format!(
        "[{}] {} {} of doctor {} on {}: {what}; incident {}\n",
        i.word(),
        i.kind.as_str(),
        i.key,
        i.doctor_id,
        i.date,
        i.id
    )
}

/// The SMS text: every incident that fits, each with its own word, most urgent
/// first, and how many more there are; room is left for the reference the SMS
/// channel adds.
fn short_text(clinic: &str, alerts: &[IncidentAlert]) -> String {
    let budget = SMS_MAX_CHARS - SMS_REFERENCE_CHARS;
    let mut text = format!("slotguard {clinic}:");
    for (n, i) in alerts.iter().enumerate() {
        let entry = format!(
            "{} {} {} dr {} {}",
            i.word(),
            i.kind.as_str(),
            i.key,
            i.doctor_id,
            i.date
        );
        let separator = if n == 0 { " " } else { "; " };
        let left = alerts.len() - n - 1;
        let more = if left == 0 {
            String::new()
        } else {
            format!(" (+{left} more)")
        };
        if chars(&text) + chars(separator) + chars(&entry) + chars(&more) > budget {
            let more = format!(" (+{} more)", alerts.len() - n);
            if n == 0 || chars(&text) + chars(&more) > budget {
                // Not even one entry fits (a very long id): the start of it, cut.
                text.push_str(separator);
                text.push_str(&entry);
                return text.chars().take(budget).collect();
            }
            text.push_str(&more);
            return text;
        }
        text.push_str(separator);
        text.push_str(&entry);
    }
    text
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::domain::{FoundBy, MemberRef};

    fn alert(event: Event, id: &str, slot: u32, state: IncidentState) -> IncidentAlert {
        IncidentAlert {
            id: id.to_owned(),
            event,
            kind: DuplicateKind::Slot,
            key: slot.to_string(),
            clinic_id: "kochi".to_owned(),
            doctor_id: "dr-asha".to_owned(),
            date: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
            state,
            found_by: FoundBy::Realtime,
            members: ["a", "b"]
                .map(|m| MemberRef {
                    source: "kloqo".into(),
                    id: format!("{id}-{m}"),
                })
                .to_vec(),
            slots: vec![slot],
            tokens: vec![format!("A1-{:03}", slot + 1), format!("A1-{:03}", slot + 2)],
            changed_at: None,
        }
    }

    #[test]
    fn one_new_and_one_resolved_incident_are_each_named_for_what_they_are() {
        let n = compose(
            "n-1",
            "kochi",
            &[
                alert(Event::Resolved, "inc-a", 5, IncidentState::Resolved),
                alert(Event::Opened, "inc-b", 8, IncidentState::Open),
            ],
        );
        assert_eq!(n.event, Event::Opened);
        assert_eq!(n.subject, "slotguard: 1 duplicate booking at clinic kochi");
        let lines: Vec<&str> = n.text.lines().collect();
        assert!(
            lines[0].starts_with("[NEW] slot 8 of doctor dr-asha"),
            "{}",
            n.text
        );
        assert!(lines[0].ends_with("incident inc-b"), "{}", n.text);
        assert!(
            lines[1].starts_with("[RESOLVED] slot 5 of doctor dr-asha"),
            "{}",
            n.text
        );
        assert!(lines[1].contains("no longer double-booked"), "{}", n.text);
        assert_eq!(
            n.short_text,
            "slotguard kochi: NEW slot 8 dr dr-asha 2026-12-01; RESOLVED slot 5 dr dr-asha 2026-12-01"
        );
    }

    #[test]
    fn an_incident_opened_and_resolved_before_the_message_left_is_not_called_new() {
        let n = compose(
            "n-1",
            "kochi",
            &[alert(Event::Opened, "inc-a", 5, IncidentState::Resolved)],
        );
        assert_eq!(n.event, Event::Resolved, "nobody is woken for it");
        assert!(
            n.text.starts_with("[NEW, NOW RESOLVED] slot 5"),
            "{}",
            n.text
        );
        assert!(
            n.short_text.contains("NEW, NOW RESOLVED slot 5"),
            "{}",
            n.short_text
        );
        assert_eq!(
            n.subject,
            "slotguard: duplicate bookings resolved at clinic kochi"
        );
    }

    #[test]
    fn the_sms_text_names_what_fits_and_counts_the_rest() {
        let many: Vec<IncidentAlert> = (0..12)
            .map(|i| {
                alert(
                    Event::Opened,
                    &format!("inc-{i:02}"),
                    i,
                    IncidentState::Open,
                )
            })
            .collect();
        let n = compose("n-1", "kochi", &many);
        assert!(
            chars(&n.short_text) <= SMS_MAX_CHARS - SMS_REFERENCE_CHARS,
            "{}",
            n.short_text
        );
        let named = n.short_text.matches("NEW slot").count();
        assert!(named >= 2, "{}", n.short_text);
        assert!(
            n.short_text.ends_with(&format!(" (+{} more)", 12 - named)),
            "{}",
            n.short_text
        );
    }

    #[test]
    fn a_reference_is_six_readable_characters_and_the_same_for_the_same_notification() {
        let n = compose(
            "2f1c-notification",
            "kochi",
            &[alert(Event::Opened, "inc-a", 5, IncidentState::Open)],
        );
        let reference = n.reference();
        assert_eq!(reference.len(), 6);
        assert!(reference
            .chars()
            .all(|c| c.is_ascii_digit() || (c.is_ascii_uppercase() && !"ILOU".contains(c))));
        assert_eq!(
            compose("2f1c-notification", "x", &[]).reference(),
            reference
        );
        assert_ne!(compose("another", "kochi", &[]).reference(), reference);
    }

    #[test]
    fn the_words_follow_the_event_and_the_state_now() {
        let word = |event, state| alert(event, "i", 5, state).word();
        assert_eq!(word(Event::Opened, IncidentState::Open), "NEW");
        assert_eq!(word(Event::Grew, IncidentState::Acknowledged), "GREW");
        assert_eq!(word(Event::Regressed, IncidentState::Open), "BACK");
        assert_eq!(word(Event::Reminder, IncidentState::Open), "STILL OPEN");
        assert_eq!(word(Event::Resolved, IncidentState::Resolved), "RESOLVED");
        assert_eq!(
            word(Event::Grew, IncidentState::Resolved),
            "GREW, NOW RESOLVED"
        );
        assert_eq!(word(Event::Resolved, IncidentState::Open), "BACK");
    }
}
