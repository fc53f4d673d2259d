//! `/reports`: the weekly reports. Weeks whose report was sent (stored, so they read
//! the same every time) and the weeks under way, each as HTML (the same page the
//! Monday email carries), JSON or CSV. Reading a report never stores it and never
//! stands in for the Monday send.

use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, Duration};

use super::{clinic_options, visible_clinic, ClinicOption};
use crate::audit::report::{self, Format, WeeklyReport};
use crate::audit::schedule::{iso_week, parse_iso_week};
use crate::domain::FieldError;
use crate::web::page::{render, Chrome, Clinics, PageError, Query, When};
use crate::web::session::Visitor;
use crate::web::WebState;

/// Stored reports listed.
const LISTED: u32 = 200;

#[derive(Template)]
#[template(path = "pages/reports.html")]
struct ReportsPage {
    chrome: Chrome,
    clinics: Vec<ClinicOption>,
    current: Vec<(String, String)>,
    stored: Vec<StoredRow>,
}

struct StoredRow {
    clinic: String,
    /// The query string of its links: `clinic=…&week=…`.
    query: String,
    week: String,
    generated: When,
}

fn link(clinic: &str, week: &str) -> String {
    serde_urlencoded::to_string([("clinic", clinic), ("week", week)]).unwrap_or_default()
}

pub async fn page(State(state): State<WebState>, visitor: Visitor) -> Result<Response, PageError> {
    let staff = &visitor.staff;
    let store = state.store();
    let clinics = Clinics::load(&state.auditor).await?;
    let everywhere = staff.scope().is_none();
    let mut stored = Vec::new();
    for r in store.stored_reports(LISTED).await? {
        let visible = match r.clinic_id.as_str() {
            "*" => everywhere,
            id => crate::domain::ClinicId::parse("clinic", id).is_ok_and(|c| staff.sees(&c)),
        };
        if !visible {
            continue;
        }
        let (name, generated) = match crate::domain::ClinicId::parse("clinic", &r.clinic_id) {
            Ok(c) if r.clinic_id != "*" => (clinics.name(&c), clinics.when(&c, r.generated_at)),
            _ => (
                "All clinics".to_owned(),
                When::new(r.generated_at, crate::domain::Clinic::DEFAULT_TIMEZONE),
            ),
        };
        stored.push(StoredRow {
            clinic: name,
            query: link(&r.clinic_id, &r.week),
            week: r.week,
            generated,
        });
    }
    let now = state.bookings.now();
    let mut current = Vec::new();
    let visible: Vec<_> = clinics
        .known()
        .map(|k| &k.clinic)
        .filter(|c| staff.sees(&c.id))
        .collect();
    for c in &visible {
        let today = c.today(now);
        let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
        current.push((c.name.clone(), link(c.id.as_str(), &iso_week(monday))));
    }
    current.sort();
    let page = ReportsPage {
        chrome: visitor.chrome("reports", "Weekly reports"),
        clinics: clinic_options(store, &clinics, staff, None).await?,
        current,
        stored,
    };
    Ok(render(&page)?.into_response())
}

/// `/reports/view?clinic=<id or *>&week=2026-W47&format=html|json|csv`.
pub async fn view(
    State(state): State<WebState>,
    visitor: Visitor,
    query: Query,
) -> Result<Response, PageError> {
    let staff = &visitor.staff;
    let store = state.store();
    let clinic = match query.require("clinic")? {
        "*" if staff.scope().is_none() => None,
        "*" => return Err(PageError::forbidden()),
        raw => visible_clinic(staff, Some(raw), "clinic")?,
    };
    let format = match query.get("format") {
        None => Format::Html,
        Some(raw) => Format::parse(raw)
            .ok_or_else(|| FieldError::new("format", "must be html, json or csv"))?,
    };
    let week = query.require("week")?;
    let monday = parse_iso_week(week)
        .ok_or_else(|| FieldError::new("week", "must be an ISO week written like 2026-W47"))?;
    let now = state.bookings.now();
    let scope = report::scope_name(clinic.as_ref());
    let report: WeeklyReport = match store.weekly_report(scope, &iso_week(monday)).await? {
        Some(body) => serde_json::from_str(&body)
            .map_err(|e| PageError::from(crate::store::StoreError::Corrupt(e.to_string())))?,
        None => {
            let clinics = Clinics::load(&state.auditor).await?;
            let known = match &clinic {
                Some(c) => Some(clinics.get_known(c).ok_or_else(|| {
                    PageError::not_found("clinic (it is not registered nor in watched data)")
                })?),
                None => None,
            };
            if let Some(refusal) = report::week_in_range(clinics.all_known(), known, monday, now) {
                return Err(refusal.into());
            }
            report::build(store, clinic.as_ref(), monday, now).await?
        }
    };
    let mut response = (
        [(header::CONTENT_TYPE, format.content_type())],
        report.render(format),
    )
        .into_response();
    // The report's HTML is the email's: its own inline styles, no script.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
    );
    Ok(response)
}
