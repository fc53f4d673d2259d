//! `/incidents/{id}`: one incident, investigated. Its members side by side, its
//! timeline, every notification sent about it, and the actions: acknowledge, resolve
//! with a note, re-check now, silence similar incidents, retry a dead letter. Every
//! action is a plain form (POST, then a redirect back here), so it works without
//! JavaScript.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Duration, Utc};

use super::{badge, found_by_label, Badge, DoctorNames};
use crate::domain::text::parse_line;
use crate::domain::{FieldError, FoundBy, Incident, IncidentState, Staff, StaffAction};
use crate::store::detection::{MemberRow, Silence};
use crate::web::page::{render, Chrome, Clinics, PageError, PathId, Query, When};
use crate::web::session::{StaffForm, Visitor};
use crate::web::WebState;

#[derive(Template)]
#[template(path = "pages/investigate.html")]
struct InvestigatePage {
    chrome: Chrome,
    id: String,
    title: String,
    clinic: String,
    clinic_id: String,
    doctor: String,
    doctor_id: String,
    date: String,
    badge: Badge,
    state: &'static str,
    found_by: &'static str,
    first_seen: When,
    last_seen: When,
    regressions: u32,
    note: Option<String>,
    members: Vec<Member>,
    timeline: Vec<Moment>,
    notifications: Vec<Sent>,
    may_act: bool,
    shows_patients: bool,
    recheck: Option<String>,
    retried: Option<String>,
}

/// One appointment of the duplicate, as a column.
struct Member {
    source: String,
    id: String,
    patient: String,
    phone: String,
    slot: u32,
    time: String,
    token: String,
    status: String,
    booked_via: String,
    created_at: Option<When>,
}

struct Moment {
    at: When,
    /// For ordering: `When` shows minutes, events may share a second; at one instant
    /// the finding comes first, then a person's action, then the alert it caused.
    utc: DateTime<Utc>,
    rank: u8,
    what: String,
}

struct Sent {
    /// Where its Retry form posts (a dead letter's).
    retry_path: String,
    dead: bool,
    channel: String,
    event: String,
    state: &'static str,
    icon: &'static str,
    attempts: u32,
    last_error: String,
    created_at: When,
    delivered_at: Option<When>,
}

/// `text` as one segment of a URL path: a channel's configured name may hold a
/// space or a slash.
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `+91 ••••••0000`: enough to tell two patients apart on the phone, no more.
fn masked(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    let keep = chars.len().saturating_sub(4);
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < keep && c.is_ascii_digit() {
                '•'
            } else {
                *c
            }
        })
        .collect()
}

fn member(row: &MemberRow, clinics: &Clinics, incident: &Incident, names: bool) -> Member {
    let clinic = &incident.group.clinic_id;
    Member {
        source: row.source.clone(),
        id: row.id.clone(),
        patient: match (&row.patient_name, names) {
            (_, false) => "(hidden for your role)".into(),
            (Some(n), true) => n.clone(),
            (None, true) => "—".into(),
        },
        phone: row
            .patient_phone
            .as_deref()
            .map(masked)
            .unwrap_or_else(|| "—".into()),
        slot: row.slot_index,
        time: row.time.clone().unwrap_or_else(|| "—".into()),
        token: row.token_number.clone().unwrap_or_else(|| "—".into()),
        status: row.status.clone(),
        booked_via: row.booked_via.clone().unwrap_or_else(|| "—".into()),
        created_at: row.created_at.map(|t| clinics.when(clinic, t)),
    }
}

fn event_words(event: &str) -> &'static str {
    match event {
        "opened" => "Alert queued: duplicate detected",
        "grew" => "Another appointment joined; alert queued",
        "regressed" => "The duplicate came back after it was resolved (regression); alert queued",
        "resolved" => "Alert queued: resolved",
        "reminder" => "Still open: reminder queued",
        _ => "Alert queued",
    }
}

/// Loads an incident the person may see; another clinic's is "no such incident".
async fn visible(state: &WebState, staff: &Staff, id: &str) -> Result<Incident, PageError> {
    if id.is_empty() || id.len() > 64 || id.chars().any(char::is_control) {
        return Err(PageError::not_found("incident"));
    }
    let incident = state
        .store()
        .incident(id)
        .await?
        .ok_or_else(|| PageError::not_found("incident"))?;
    if !staff.sees(&incident.group.clinic_id) {
        return Err(PageError::not_found("incident"));
    }
    Ok(incident)
}

pub async fn page(
    State(state): State<WebState>,
    visitor: Visitor,
    PathId(id): PathId,
    query: Query,
) -> Result<Response, PageError> {
    let staff = &visitor.staff;
    let incident = visible(&state, staff, &id).await?;
    let store = state.store();
    let clinics = Clinics::load(&state.auditor).await?;
    let g = &incident.group;
    let doctors = DoctorNames::load(store, vec![g.clinic_id.clone()]).await?;
    let names = staff.may(StaffAction::SeePatients, Some(&g.clinic_id));
    let members = store
        .member_rows(g, &incident.members)
        .await?
        .iter()
        .map(|r| member(r, &clinics, &incident, names))
        .collect();
    let when = |t: DateTime<Utc>| clinics.when(&g.clinic_id, t);
    let mut timeline = vec![Moment {
        at: when(incident.first_seen),
        utc: incident.first_seen,
        rank: 0,
        what: match incident.found_by {
            FoundBy::Realtime => "Detected in real time".into(),
            FoundBy::Audit => "Found by the audit (real-time detection had missed it)".into(),
        },
    }];
    timeline.extend(
        store
            .outbox_events(&incident.id)
            .await?
            .into_iter()
            .map(|e| Moment {
                at: when(e.at),
                utc: e.at,
                rank: 2,
                what: event_words(&e.event).into(),
            }),
    );
    if let (Some(at), Some(by)) = (incident.acknowledged_at, &incident.acknowledged_by) {
        timeline.push(Moment {
            at: when(at),
            utc: at,
            rank: 1,
            what: format!("Acknowledged by {by}"),
        });
    }
    if let (Some(at), Some(by)) = (incident.resolved_at, &incident.resolved_by) {
        timeline.push(Moment {
            at: when(at),
            utc: at,
            rank: 1,
            what: if by == "auto" {
                "Resolved automatically: the duplicate is gone".into()
            } else {
                format!("Resolved by {by}")
            },
        });
    }
    timeline.sort_by_key(|m| (m.utc, m.rank));
    let notifications = store
        .incident_notifications(&incident.id)
        .await?
        .into_iter()
        .map(|(n, _)| {
            let (icon, label) = match n.state {
                crate::store::detection::DeliveryState::Pending => ("…", "pending"),
                crate::store::detection::DeliveryState::Delivered => ("✓", "delivered"),
                crate::store::detection::DeliveryState::Dead => ("✗", "dead letter"),
            };
            Sent {
                retry_path: format!(
                    "/incidents/{}/notifications/{}/{}/retry",
                    path_segment(&incident.id),
                    path_segment(&n.id),
                    path_segment(&n.channel)
                ),
                dead: n.state == crate::store::detection::DeliveryState::Dead,
                channel: n.channel.clone(),
                event: n.event.clone(),
                state: label,
                icon,
                attempts: n.attempts,
                last_error: n.last_error.clone().unwrap_or_default(),
                created_at: when(n.created_at),
                delivered_at: n.delivered_at.map(when),
            }
        })
        .collect();
    let doctor = doctors.name(&g.clinic_id, &g.doctor_id);
    let title = format!(
        "{} {} · {} · {}",
        if incident.kind == crate::domain::DuplicateKind::Slot {
            "Slot"
        } else {
            "Token"
        },
        incident.key,
        doctor,
        g.date
    );
    let recheck = match query.get("recheck") {
        Some("present") => Some("Re-checked just now: the duplicate is still there.".to_owned()),
        Some("gone") => {
            Some("Re-checked just now: the duplicate is gone; the incident is resolved.".to_owned())
        }
        _ => None,
    };
    let retried = match query.get("retried") {
        Some("queued") => Some(
            "The dead letter is queued again: it goes out at the dispatcher's next pass."
                .to_owned(),
        ),
        Some("not-dead") => {
            Some("Nothing to retry: that notification is no longer a dead letter.".to_owned())
        }
        _ => None,
    };
    let page = InvestigatePage {
        chrome: visitor.chrome("incidents", title.clone()),
        id: incident.id.clone(),
        title,
        clinic: clinics.name(&g.clinic_id),
        clinic_id: g.clinic_id.to_string(),
        doctor,
        doctor_id: g.doctor_id.to_string(),
        date: g.date.to_string(),
        badge: badge(incident.state),
        state: incident.state.as_str(),
        found_by: found_by_label(incident.found_by),
        first_seen: when(incident.first_seen),
        last_seen: when(incident.last_seen),
        regressions: incident.regressions,
        note: incident.note.clone(),
        members,
        timeline,
        notifications,
        may_act: staff.may(StaffAction::Act, Some(&g.clinic_id)),
        shows_patients: names,
        recheck,
        retried,
    };
    Ok(render(&page)?.into_response())
}

/// The incident of a form, if the person may act on it.
async fn actionable(state: &WebState, form: &StaffForm, id: &str) -> Result<Incident, PageError> {
    let incident = visible(state, &form.visitor.staff, id).await?;
    if !form
        .visitor
        .staff
        .may(StaffAction::Act, Some(&incident.group.clinic_id))
    {
        return Err(PageError::forbidden());
    }
    Ok(incident)
}

fn back(id: &str) -> Response {
    Redirect::to(&format!("/incidents/{id}")).into_response()
}

pub async fn acknowledge(
    State(state): State<WebState>,
    PathId(id): PathId,
    form: StaffForm,
) -> Result<Response, PageError> {
    let incident = actionable(&state, &form, &id).await?;
    let note = form
        .form
        .parse_opt("note", |f, raw| parse_line(f, raw, 2000))?;
    state
        .detector
        .move_incident(
            incident,
            IncidentState::Acknowledged,
            &form.visitor.staff.actor(),
            note,
        )
        .await?;
    Ok(back(&id))
}

pub async fn resolve(
    State(state): State<WebState>,
    PathId(id): PathId,
    form: StaffForm,
) -> Result<Response, PageError> {
    let incident = actionable(&state, &form, &id).await?;
    let note = parse_line(
        "note",
        form.form.get("note").ok_or_else(|| {
            PageError::bad_request(
                "note is required: say what was done (for example, which patient was moved).",
            )
        })?,
        2000,
    )?;
    state
        .detector
        .move_incident(
            incident,
            IncidentState::Resolved,
            &form.visitor.staff.actor(),
            Some(note),
        )
        .await?;
    Ok(back(&id))
}

/// Runs the detector on the incident's doctor-day now and shows what it found.
pub async fn recheck(
    State(state): State<WebState>,
    PathId(id): PathId,
    form: StaffForm,
) -> Result<Response, PageError> {
    let incident = actionable(&state, &form, &id).await?;
    state
        .detector
        .check(&incident.group, FoundBy::Realtime)
        .await?;
    let now = state
        .store()
        .incident(&id)
        .await?
        .ok_or_else(|| PageError::not_found("incident"))?;
    let still = now.state != IncidentState::Resolved
        || state
            .store()
            .duplicates(&incident.group)
            .await?
            .iter()
            .any(|d| d.kind == incident.kind && d.key == incident.key);
    Ok(Redirect::to(&format!(
        "/incidents/{id}?recheck={}",
        if still { "present" } else { "gone" }
    ))
    .into_response())
}

/// Silences alerts of the incident's clinic and kind for a while.
pub async fn silence(
    State(state): State<WebState>,
    PathId(id): PathId,
    form: StaffForm,
) -> Result<Response, PageError> {
    let incident = actionable(&state, &form, &id).await?;
    let hours = form.form.parse_opt("hours", silence_hours)?.unwrap_or(4);
    let now = state.bookings.now();
    let reason = form
        .form
        .parse_opt("reason", |f, raw| parse_line(f, raw, 500))?
        .unwrap_or_else(|| format!("silenced from incident {id}"));
    state
        .store()
        .insert_silence(&Silence {
            id: uuid::Uuid::new_v4().to_string(),
            clinic_id: Some(incident.group.clinic_id.to_string()),
            kind: Some(incident.kind.as_str().to_owned()),
            reason,
            created_by: form.visitor.staff.actor(),
            created_at: now,
            ends_at: now + Duration::hours(hours),
        })
        .await?;
    Ok(Redirect::to("/silences").into_response())
}

/// Queues a dead letter about this incident again (`POST
/// /incidents/{id}/notifications/{notification}/{channel}/retry`), for a new round of
/// attempts; the same as the API's `POST /api/v1/notifications/{id}/retry`.
pub async fn retry(
    State(state): State<WebState>,
    axum::extract::Path((id, notification, channel)): axum::extract::Path<(String, String, String)>,
    form: StaffForm,
) -> Result<Response, PageError> {
    for part in [&id, &notification, &channel] {
        if part.is_empty() || part.len() > 128 || part.chars().any(char::is_control) {
            return Err(PageError::not_found("notification"));
        }
    }
    let incident = actionable(&state, &form, &id).await?;
    // Only a notification about this incident, which the person may act on.
    let about = state
        .store()
        .incident_notifications(&incident.id)
        .await?
        .into_iter()
        .any(|(n, _)| n.id == notification && n.channel == channel);
    if !about {
        return Err(PageError::not_found("notification"));
    }
    let queued = state
        .store()
        .retry_dead(
            &crate::store::detection::DeadLetters {
                id: Some(notification),
                channel: Some(channel),
                clinic: None,
            },
            &form.visitor.staff.actor(),
            state.bookings.now(),
        )
        .await?;
    Ok(Redirect::to(&format!(
        "/incidents/{id}?retried={}",
        if queued.is_empty() {
            "not-dead"
        } else {
            "queued"
        }
    ))
    .into_response())
}

/// A silence's length in hours: 1 to 168 (a week).
pub fn silence_hours(field: &str, raw: &str) -> Result<i64, FieldError> {
    raw.parse::<i64>()
        .ok()
        .filter(|h| (1..=168).contains(h))
        .ok_or_else(|| FieldError::new(field, "must be a whole number of hours from 1 to 168"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_name_with_a_slash_or_a_space_stays_one_path_segment() {
        assert_eq!(path_segment("clinic mail/ops"), "clinic%20mail%2Fops");
        assert_eq!(path_segment("on-call_2.sms~"), "on-call_2.sms~");
    }

    #[test]
    fn a_masked_phone_keeps_its_last_four_digits() {
        assert_eq!(masked("+919876540000"), "+••••••••0000");
        assert_eq!(masked("123"), "123");
    }
}
