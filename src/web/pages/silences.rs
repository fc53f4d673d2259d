//! `/silences`: alerts held back on purpose. Active silences (which clinic, which
//! kind, until when, why, who), a form to add one, and a button to end one early.
//! A silence holds back alerts only: incidents are still opened and shown.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Duration;

use super::investigate::silence_hours;
use super::{clinic_options, ClinicOption};
use crate::domain::text::parse_line;
use crate::domain::{ClinicId, FieldError, StaffAction};
use crate::store::detection::Silence;
use crate::web::page::{render, Chrome, Clinics, PageError, PathId, When};
use crate::web::session::{StaffForm, Visitor};
use crate::web::WebState;

#[derive(Template)]
#[template(path = "pages/silences.html")]
struct SilencesPage {
    chrome: Chrome,
    clinics: Vec<ClinicOption>,
    may_act: bool,
    may_silence_all: bool,
    rows: Vec<Row>,
}

struct Row {
    id: String,
    clinic: String,
    kind: String,
    reason: String,
    created_by: String,
    ends: When,
    may_end: bool,
}

fn clinic_of(silence: &Silence) -> Option<ClinicId> {
    silence
        .clinic_id
        .as_deref()
        .and_then(|c| ClinicId::parse("clinic", c).ok())
}

pub async fn page(State(state): State<WebState>, visitor: Visitor) -> Result<Response, PageError> {
    let staff = &visitor.staff;
    let store = state.store();
    let clinics = Clinics::load(&state.auditor).await?;
    let now = state.bookings.now();
    let rows = store
        .silences(Some(now))
        .await?
        .into_iter()
        .filter_map(|s| {
            let clinic = clinic_of(&s);
            // A silence of every clinic is shown to everyone it silences.
            if clinic.as_ref().is_some_and(|c| !staff.sees(c)) {
                return None;
            }
            Some(Row {
                clinic: clinic
                    .as_ref()
                    .map(|c| clinics.name(c))
                    .unwrap_or_else(|| "every clinic".into()),
                kind: s.kind.clone().unwrap_or_else(|| "slot and token".into()),
                ends: match &clinic {
                    Some(c) => clinics.when(c, s.ends_at),
                    None => When::new(s.ends_at, crate::domain::Clinic::DEFAULT_TIMEZONE),
                },
                may_end: staff.may(StaffAction::Act, clinic.as_ref()),
                id: s.id,
                reason: s.reason,
                created_by: s.created_by,
            })
        })
        .collect();
    let options = clinic_options(store, &clinics, staff, None).await?;
    let page = SilencesPage {
        chrome: visitor.chrome("silences", "Silences"),
        may_act: options.iter().any(|o| {
            ClinicId::parse("clinic", &o.id).is_ok_and(|c| staff.may(StaffAction::Act, Some(&c)))
        }),
        may_silence_all: staff.may(StaffAction::Act, None),
        clinics: options,
        rows,
    };
    Ok(render(&page)?.into_response())
}

pub async fn create(State(state): State<WebState>, form: StaffForm) -> Result<Response, PageError> {
    let staff = &form.visitor.staff;
    let clinic = match form.form.get("clinic") {
        Some(raw) => Some(ClinicId::parse("clinic", raw)?),
        None => None,
    };
    if clinic.as_ref().is_some_and(|c| !staff.sees(c)) {
        return Err(PageError::not_found("clinic"));
    }
    if !staff.may(StaffAction::Act, clinic.as_ref()) {
        return Err(PageError::forbidden());
    }
    let kind = match form.form.get("kind") {
        None => None,
        Some(k @ ("slot" | "token")) => Some(k.to_owned()),
        Some(_) => {
            return Err(FieldError::new("kind", "must be slot or token (or empty for both)").into())
        }
    };
    let hours = silence_hours("hours", form.form.require("hours")?)?;
    let reason = parse_line("reason", form.form.require("reason")?, 500)?;
    let now = state.bookings.now();
    state
        .store()
        .insert_silence(&Silence {
            id: uuid::Uuid::new_v4().to_string(),
            clinic_id: clinic.map(|c| c.to_string()),
            kind,
            reason,
            created_by: staff.actor(),
            created_at: now,
            ends_at: now + Duration::hours(hours),
        })
        .await?;
    Ok(Redirect::to("/silences").into_response())
}

pub async fn end(
    State(state): State<WebState>,
    PathId(id): PathId,
    form: StaffForm,
) -> Result<Response, PageError> {
    let staff = &form.visitor.staff;
    let store = state.store();
    let silence = store
        .silences(None)
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| PageError::not_found("silence"))?;
    let clinic = clinic_of(&silence);
    if clinic.as_ref().is_some_and(|c| !staff.sees(c)) {
        return Err(PageError::not_found("silence"));
    }
    if !staff.may(StaffAction::Act, clinic.as_ref()) {
        return Err(PageError::forbidden());
    }
    store.end_silence(&id, state.bookings.now()).await?;
    Ok(Redirect::to("/silences").into_response())
}
