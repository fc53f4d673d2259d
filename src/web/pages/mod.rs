//! One module per page, and the pieces several pages show: an incident as a table
//! row, the state badge, the clinic picker.

use std::collections::HashMap;

use chrono::NaiveDate;

use super::page::{Clinics, PageError, When};
use crate::domain::{ClinicId, DoctorId, DuplicateKind, FoundBy, Incident, IncidentState, Staff};
use crate::store::Store;

pub mod admin;
pub mod audits;
pub mod board;
pub mod incidents;
pub mod investigate;
pub mod overview;
pub mod reports;
pub mod silences;

/// An incident's state as text and icon, never by colour alone.
#[derive(Debug, Clone, Copy)]
pub struct Badge {
    pub icon: &'static str,
    pub label: &'static str,
    /// CSS class: the colour repeats what icon and text say.
    pub class: &'static str,
}

pub fn badge(state: IncidentState) -> Badge {
    match state {
        IncidentState::Open => Badge {
            icon: "●",
            label: "Open",
            class: "open",
        },
        IncidentState::Acknowledged => Badge {
            icon: "◐",
            label: "Acknowledged",
            class: "acknowledged",
        },
        IncidentState::Resolved => Badge {
            icon: "✓",
            label: "Resolved",
            class: "resolved",
        },
    }
}

pub fn found_by_label(found_by: FoundBy) -> &'static str {
    match found_by {
        FoundBy::Realtime => "real time",
        FoundBy::Audit => "audit",
    }
}

/// Doctors' names, read once per page for the doctors it shows; a doctor known only
/// from watched data is shown by id.
#[derive(Default)]
pub struct DoctorNames(HashMap<(ClinicId, DoctorId), String>);

impl DoctorNames {
    /// The names of the registered doctors of these clinics, from one query.
    pub async fn load(store: &dyn Store, mut clinics: Vec<ClinicId>) -> Result<Self, PageError> {
        clinics.sort();
        clinics.dedup();
        if clinics.is_empty() {
            return Ok(Self::default());
        }
        Ok(Self(
            store
                .doctor_names(&clinics)
                .await?
                .into_iter()
                .map(|(c, d, name)| ((c, d), name))
                .collect(),
        ))
    }

    pub fn name(&self, clinic: &ClinicId, doctor: &DoctorId) -> String {
        self.0
            .get(&(clinic.clone(), doctor.clone()))
            .cloned()
            .unwrap_or_else(|| doctor.to_string())
    }
}

/// An incident as one row of a table.
#[derive(Debug, Clone)]
pub struct IncidentRow {
    pub id: String,
    pub first_seen: When,
    pub last_seen: When,
    pub clinic_id: String,
    pub clinic: String,
    pub doctor_id: String,
    pub doctor: String,
    pub date: NaiveDate,
    /// `Slot 5` or `Token A1-006`.
    pub duplicate: String,
    pub slot: String,
    pub token: String,
    pub count: usize,
    pub kind: &'static str,
    pub badge: Badge,
    pub found_by: &'static str,
}

impl IncidentRow {
    pub fn new(incident: &Incident, clinics: &Clinics, doctors: &DoctorNames) -> Self {
        let g = &incident.group;
        let (slot, token) = match incident.kind {
            DuplicateKind::Slot => (incident.key.clone(), "—".to_owned()),
            DuplicateKind::Token => ("—".to_owned(), incident.key.clone()),
        };
        Self {
            id: incident.id.clone(),
            first_seen: clinics.when(&g.clinic_id, incident.first_seen),
            last_seen: clinics.when(&g.clinic_id, incident.last_seen),
            clinic_id: g.clinic_id.to_string(),
            clinic: clinics.name(&g.clinic_id),
            doctor_id: g.doctor_id.to_string(),
            doctor: doctors.name(&g.clinic_id, &g.doctor_id),
            date: g.date,
            duplicate: match incident.kind {
                DuplicateKind::Slot => format!("Slot {}", incident.key),
                DuplicateKind::Token => format!("Token {}", incident.key),
            },
            slot,
            token,
            count: incident.members.len(),
            kind: incident.kind.as_str(),
            badge: badge(incident.state),
            found_by: found_by_label(incident.found_by),
        }
    }

    /// Rows for a list of incidents, doctors' names read once.
    pub async fn many(
        store: &dyn Store,
        incidents: &[Incident],
        clinics: &Clinics,
    ) -> Result<Vec<Self>, PageError> {
        let shown = incidents
            .iter()
            .map(|i| i.group.clinic_id.clone())
            .collect();
        let doctors = DoctorNames::load(store, shown).await?;
        Ok(incidents
            .iter()
            .map(|i| Self::new(i, clinics, &doctors))
            .collect())
    }
}

/// A clinic to choose in a picker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClinicOption {
    pub id: String,
    pub name: String,
    pub selected: bool,
}

/// The clinics a person may pick: registered ones and those seen only in watched
/// data, within their scope.
pub async fn clinic_options(
    store: &dyn Store,
    clinics: &Clinics,
    staff: &Staff,
    selected: Option<&ClinicId>,
) -> Result<Vec<ClinicOption>, PageError> {
    let mut ids: Vec<ClinicId> = clinics.known().map(|k| k.clinic.id.clone()).collect();
    ids.extend(store.seen_clinics().await?);
    ids.sort();
    ids.dedup();
    Ok(ids
        .into_iter()
        .filter(|id| staff.sees(id))
        .map(|id| ClinicOption {
            name: clinics.name(&id),
            selected: selected == Some(&id),
            id: id.to_string(),
        })
        .collect())
}

/// A clinic named in a query string: it must parse and the person must see it (an
/// unseen clinic is answered as if it did not exist).
pub fn visible_clinic(
    staff: &Staff,
    raw: Option<&str>,
    field: &str,
) -> Result<Option<ClinicId>, PageError> {
    let Some(raw) = raw else { return Ok(None) };
    let clinic = ClinicId::parse(field, raw)?;
    if !staff.sees(&clinic) {
        return Err(PageError::not_found("clinic"));
    }
    Ok(Some(clinic))
}
