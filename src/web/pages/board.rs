//! `/board?clinic&doctor&date`: one doctor's day as the waiting room sees it. Every
//! slot of the doctor's schedule with its state (free, taken, reserved for walk-ins,
//! past), token and occupants, slotguard's own bookings and watched documents
//! together; a slot or token held twice stands out and links to its incident. Slots
//! outside the schedule that someone occupies (a forced walk-in, another app's
//! document) are listed after it. A doctor known only from watched data has no
//! schedule here: only the occupied slots are shown.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;

use super::{badge, clinic_options, visible_clinic, Badge, ClinicOption};
use crate::booking::rules::SlotState;
use crate::domain::schedule::parse_date;
use crate::domain::{ClinicId, DoctorId, DuplicateKind, Group, StaffAction};
use crate::web::page::{render, Chrome, Clinics, PageError, Query};
use crate::web::session::Visitor;
use crate::web::WebState;

#[derive(Template)]
#[template(path = "pages/board.html")]
struct BoardPage {
    chrome: Chrome,
    clinics: Vec<ClinicOption>,
    doctors: Vec<DoctorOption>,
    date: String,
    day: Option<Day>,
}

struct DoctorOption {
    id: String,
    name: String,
    selected: bool,
}

struct Day {
    heading: String,
    registered: bool,
    rows: Vec<SlotRow>,
    doubled: usize,
    names: bool,
}

struct SlotRow {
    slot: u32,
    time: String,
    state: &'static str,
    icon: &'static str,
    /// CSS class of the row: the state in one word.
    class: &'static str,
    occupants: Vec<Occupant>,
    /// Held by two or more occupying appointments, or their tokens clash.
    double: bool,
    incident: Option<(String, Badge)>,
}

struct Occupant {
    token: String,
    patient: String,
    status: String,
    source: String,
    booked_via: String,
}

/// A slot's state in words, icon and CSS class.
fn state_words(state: Option<SlotState>) -> (&'static str, &'static str, &'static str) {
    match state {
        Some(SlotState::Free) => ("free", "○", "free"),
        Some(SlotState::Taken) => ("taken", "●", "taken"),
        Some(SlotState::ReservedWalkIn) => ("reserved for walk-ins", "◇", "reserved"),
        Some(SlotState::Past) => ("past", "–", "past"),
        None => ("outside the schedule", "·", "outside"),
    }
}

pub async fn page(
    State(state): State<WebState>,
    visitor: Visitor,
    query: Query,
) -> Result<Response, PageError> {
    let staff = &visitor.staff;
    let store = state.store();
    let clinics = Clinics::load(&state.auditor).await?;
    let options = clinic_options(store, &clinics, staff, None).await?;
    let clinic = match visible_clinic(staff, query.get("clinic"), "clinic")? {
        Some(c) => Some(c),
        None => options
            .first()
            .map(|o| ClinicId::parse("clinic", &o.id))
            .transpose()?,
    };
    let now = state.bookings.now();
    let date: NaiveDate = match query.parse_opt("date", parse_date)? {
        Some(d) => d,
        None => clinic
            .as_ref()
            .map(|c| clinics.today(c, now))
            .unwrap_or_else(|| now.date_naive()),
    };
    let requested_doctor = query.parse_opt("doctor", DoctorId::parse_stored)?;
    let mut doctors = Vec::new();
    if let Some(c) = &clinic {
        let mut known: BTreeMap<DoctorId, String> = store
            .doctors_of(c)
            .await?
            .into_iter()
            .map(|d| (d.id, d.name))
            .collect();
        for id in store.seen_doctors(c).await? {
            known.entry(id.clone()).or_insert_with(|| id.to_string());
        }
        doctors = known.into_iter().collect::<Vec<_>>();
    }
    let doctor = match (&requested_doctor, doctors.first()) {
        (Some(d), _) => Some(d.clone()),
        (None, Some((d, _))) => Some(d.clone()),
        (None, None) => None,
    };
    let day = match (&clinic, &doctor) {
        (Some(c), Some(d)) => Some(day(&state, &visitor, &clinics, c, d, date, &doctors).await?),
        _ => None,
    };
    let page = BoardPage {
        chrome: visitor.chrome("board", "Day board"),
        clinics: options
            .into_iter()
            .map(|o| ClinicOption {
                selected: clinic.as_ref().is_some_and(|c| c.as_str() == o.id),
                ..o
            })
            .collect(),
        doctors: doctors
            .iter()
            .map(|(id, name)| DoctorOption {
                id: id.to_string(),
                name: name.clone(),
                selected: doctor.as_ref() == Some(id),
            })
            .collect(),
        date: date.to_string(),
        day,
    };
    Ok(render(&page)?.into_response())
}

async fn day(
    state: &WebState,
    visitor: &Visitor,
    clinics: &Clinics,
    clinic: &ClinicId,
    doctor: &DoctorId,
    date: NaiveDate,
    doctors: &[(DoctorId, String)],
) -> Result<Day, PageError> {
    let store = state.store();
    let group = Group {
        clinic_id: clinic.clone(),
        doctor_id: doctor.clone(),
        date,
    };
    let names = visitor.staff.may(StaffAction::SeePatients, Some(clinic));
    let patient = |name: Option<&str>| match (name, names) {
        (_, false) => "(hidden for your role)".to_owned(),
        (Some(n), true) => n.to_owned(),
        (None, true) => "—".to_owned(),
    };
    let mut occupants: BTreeMap<u32, Vec<Occupant>> = BTreeMap::new();
    for a in store.occupying(clinic, doctor, date).await? {
        occupants.entry(a.slot_index).or_default().push(Occupant {
            token: a.token_number.clone(),
            patient: patient(Some(&a.patient_name)),
            status: a.status.as_str().to_owned(),
            source: "slotguard".into(),
            booked_via: a.booked_via.clone(),
        });
    }
    for w in store.watched_occupying(&group).await? {
        occupants.entry(w.slot_index).or_default().push(Occupant {
            token: w.token_number.clone().unwrap_or_else(|| {
                if w.is_break {
                    "Break".into()
                } else {
                    "—".into()
                }
            }),
            patient: patient(w.document.get("patientName").and_then(|v| v.as_str())),
            status: w.status.clone(),
            source: w.source.clone(),
            booked_via: w.booked_via.clone().unwrap_or_default(),
        });
    }
    let incidents = store.group_incidents(&group).await?;
    let incident_of = |slot: u32, tokens: &[String]| {
        incidents
            .iter()
            .filter(|i| match i.kind {
                DuplicateKind::Slot => i.key == slot.to_string(),
                DuplicateKind::Token => tokens.contains(&i.key),
            })
            .max_by_key(|i| {
                (
                    i.state != crate::domain::IncidentState::Resolved,
                    i.last_seen,
                )
            })
            .map(|i| (i.id.clone(), badge(i.state)))
    };
    let mut token_holders: BTreeMap<&str, usize> = BTreeMap::new();
    for o in occupants.values().flatten() {
        if o.token != "—" && o.token != "Break" {
            *token_holders.entry(o.token.as_str()).or_default() += 1;
        }
    }
    let clashing: Vec<String> = token_holders
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(t, _)| (*t).to_owned())
        .collect();
    let row = |slot: u32, time: String, slot_state: Option<SlotState>, list: Vec<Occupant>| {
        let tokens: Vec<String> = list.iter().map(|o| o.token.clone()).collect();
        let double = list.len() > 1 || tokens.iter().any(|t| clashing.contains(t));
        let occupied = if list.is_empty() {
            slot_state
        } else {
            Some(SlotState::Taken)
        };
        let (state, icon, class) = state_words(occupied);
        SlotRow {
            slot,
            time,
            state,
            icon,
            class,
            incident: incident_of(slot, &tokens),
            double,
            occupants: list,
        }
    };
    let (registered, heading) = match store.doctor(clinic, doctor).await? {
        Some(d) => (true, d.name),
        None => (
            false,
            doctors
                .iter()
                .find(|(id, _)| id == doctor)
                .map(|(_, n)| n.clone())
                .unwrap_or_else(|| doctor.to_string()),
        ),
    };
    let mut rows = Vec::new();
    if registered {
        for session in state.bookings.availability(clinic, doctor, date).await? {
            for s in session.slots {
                let list = occupants.remove(&s.slot_index).unwrap_or_default();
                rows.push(row(s.slot_index, s.time, Some(s.state), list));
            }
        }
    }
    for (slot, list) in std::mem::take(&mut occupants) {
        let time = list.first().map(|_| "—".to_owned()).unwrap_or_default();
        rows.push(row(slot, time, None, list));
    }
    Ok(Day {
        heading: format!("{heading} · {} · {date}", clinics.name(clinic)),
        registered,
        doubled: rows.iter().filter(|r| r.double).count(),
        rows,
        names,
    })
}
