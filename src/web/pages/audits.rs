//! `/audits`: the nightly audit's runs per clinic and local date (status, the three
//! counts, incidents opened and resolved, duration), the dead-man's switch (a clinic
//! whose day has no successful audit past `auditAt` + grace), and "audit this date
//! now", which runs the same audit as `POST /api/v1/audits`.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Duration;

use super::{clinic_options, visible_clinic, ClinicOption};
use crate::domain::schedule::parse_date;
use crate::domain::{ClinicId, StaffAction};
use crate::metrics::stats::DateRange;
use crate::store::audit::{RunStatus, Trigger};
use crate::web::page::{render, Chrome, Clinics, PageError, Query, When};
use crate::web::session::{StaffForm, Visitor};
use crate::web::WebState;

/// Days shown when the query names none.
const DEFAULT_DAYS: i64 = 7;

#[derive(Template)]
#[template(path = "pages/audits.html")]
struct AuditsPage {
    chrome: Chrome,
    clinics: Vec<ClinicOption>,
    actionable: Vec<ClinicOption>,
    from: String,
    to: String,
    missing: Vec<String>,
    runs: Vec<RunRow>,
    done: bool,
}

struct RunRow {
    clinic: String,
    date: String,
    trigger: &'static str,
    status: &'static str,
    icon: &'static str,
    started: When,
    duration: String,
    checked: u64,
    groups: u64,
    extra: u64,
    affected: u64,
    opened: u64,
    resolved: u64,
    error: String,
}

pub async fn page(
    State(state): State<WebState>,
    visitor: Visitor,
    query: Query,
) -> Result<Response, PageError> {
    let staff = &visitor.staff;
    let store = state.store();
    let clinics = Clinics::load(&state.auditor).await?;
    let clinic = visible_clinic(staff, query.get("clinic"), "clinic")?;
    let now = state.bookings.now();
    let today = match &clinic {
        Some(c) => clinics.today(c, now),
        None => now
            .with_timezone(&crate::domain::Clinic::DEFAULT_TIMEZONE)
            .date_naive(),
    };
    let to = query.parse_opt("to", parse_date)?.unwrap_or(today);
    let from = query
        .parse_opt("from", parse_date)?
        .unwrap_or(to - Duration::days(DEFAULT_DAYS - 1));
    let range = DateRange::new(from, to)?;
    let mut runs = Vec::new();
    for run in store
        .audit_runs(clinic.as_ref(), range.from(), range.to())
        .await?
    {
        if !staff.sees(&run.clinic_id) {
            continue;
        }
        let (status, icon) = match run.status {
            RunStatus::Running => ("running", "…"),
            RunStatus::Succeeded if run.counts.duplicate_groups == 0 => ("clean", "✓"),
            RunStatus::Succeeded => ("duplicates found", "⚠"),
            RunStatus::Failed => ("failed", "✗"),
        };
        runs.push(RunRow {
            clinic: clinics.name(&run.clinic_id),
            date: run.local_date.to_string(),
            trigger: match run.trigger {
                Trigger::Nightly => "nightly",
                Trigger::CatchUp => "catch-up",
                Trigger::OnDemand => "on demand",
            },
            status,
            icon,
            started: clinics.when(&run.clinic_id, run.started_at),
            duration: run
                .finished_at
                .map(|f| format!("{} ms", (f - run.started_at).num_milliseconds()))
                .unwrap_or_else(|| "—".into()),
            checked: run.counts.appointments_checked,
            groups: run.counts.duplicate_groups,
            extra: run.counts.extra_rows,
            affected: run.counts.affected_rows,
            opened: run.incidents_opened,
            resolved: run.incidents_resolved,
            error: run.error.clone().unwrap_or_default(),
        });
    }
    runs.reverse();
    let shown: Vec<&crate::domain::KnownClinic> = clinics
        .known()
        .filter(|k| staff.sees(&k.clinic.id) && clinic.as_ref().is_none_or(|x| *x == k.clinic.id))
        .collect();
    let missing = super::overview::audit_state(&state, &shown)
        .await?
        .into_iter()
        .filter_map(|(name, a)| {
            a.missing.map(|(date, error)| match error {
                Some(e) => format!("{name}: no successful audit of {date} (last error: {e})"),
                None => format!("{name}: no successful audit of {date}"),
            })
        })
        .collect();
    let options = clinic_options(store, &clinics, staff, clinic.as_ref()).await?;
    let actionable = options
        .iter()
        .filter(|o| {
            ClinicId::parse("clinic", &o.id).is_ok_and(|id| {
                clinics.get(&id).is_some() && staff.may(StaffAction::Act, Some(&id))
            })
        })
        .cloned()
        .collect();
    let page = AuditsPage {
        chrome: visitor.chrome("audits", "Audits"),
        clinics: options,
        actionable,
        from: from.to_string(),
        to: to.to_string(),
        missing,
        runs,
        done: query.get("done").is_some(),
    };
    Ok(render(&page)?.into_response())
}

/// `POST /audits`: audits one clinic's local date now (on demand; it may repeat and
/// does not stand in for the nightly run).
pub async fn audit_now(
    State(state): State<WebState>,
    form: StaffForm,
) -> Result<Response, PageError> {
    let staff = &form.visitor.staff;
    let clinic_id = ClinicId::parse("clinic", form.form.require("clinic")?)?;
    let date = parse_date("date", form.form.require("date")?)?;
    if !staff.sees(&clinic_id) {
        return Err(PageError::not_found("clinic"));
    }
    if !staff.may(StaffAction::Act, Some(&clinic_id)) {
        return Err(PageError::forbidden());
    }
    let clinic = state
        .auditor
        .known_clinic(&clinic_id)
        .await?
        .ok_or_else(|| PageError::not_found("clinic"))?
        .clinic;
    let today = clinic.today(state.bookings.now());
    if date > today + Duration::days(366) || date < today - Duration::days(3660) {
        return Err(PageError::bad_request(
            "date must be within ten years before and one year after today.",
        ));
    }
    state
        .auditor
        .audit(&clinic, date, Trigger::OnDemand)
        .await?;
    let back = serde_urlencoded::to_string([
        ("clinic", clinic_id.as_str()),
        ("from", &date.to_string()),
        ("to", &date.to_string()),
        ("done", "1"),
    ])
    .unwrap_or_default();
    Ok(Redirect::to(&format!("/audits?{back}")).into_response())
}
