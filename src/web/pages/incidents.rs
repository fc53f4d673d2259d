//! `/incidents`: every duplicate the detector and the audit recorded, filtered by
//! clinic, doctor, state, kind, found by and the appointments' dates (all kept in the
//! URL, so a view can be bookmarked and shared), newest first, 50 a page with a
//! cursor (`?before=`); `/incidents.csv` exports every incident the filters match.

use askama::Template;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

use super::{clinic_options, visible_clinic, ClinicOption, IncidentRow};
use crate::domain::schedule::parse_date;
use crate::domain::{DoctorId, DuplicateKind, FieldError, FoundBy, IncidentState, Staff};
use crate::store::dashboard::IncidentQuery;
use crate::web::page::{render, Chrome, Clinics, Form, PageError, Query};
use crate::web::session::Visitor;
use crate::web::WebState;

pub const PAGE_SIZE: u32 = 50;
/// The CSV is read in pages of this many, so a large export never holds one query open.
const CSV_BATCH: u32 = 1000;

/// The filters, as parsed from the query string, and the same as text to put back
/// into forms and links.
#[derive(Debug, Clone, Default)]
struct Filters {
    query: IncidentQuery,
    clinic: String,
    doctor: String,
    state: String,
    kind: String,
    found_by: String,
    from: String,
    to: String,
}

impl Filters {
    fn parse(staff: &Staff, q: &Form) -> Result<Self, PageError> {
        let clinic = visible_clinic(staff, q.get("clinic"), "clinic")?;
        let text = |name: &str| q.get(name).unwrap_or("").to_owned();
        let state = q.parse_opt("state", |f, raw| {
            IncidentState::parse(raw)
                .ok_or_else(|| FieldError::new(f, "must be open, acknowledged or resolved"))
        })?;
        let kind = q.parse_opt("kind", |f, raw| {
            DuplicateKind::parse(raw).ok_or_else(|| FieldError::new(f, "must be slot or token"))
        })?;
        let found_by = q.parse_opt("found_by", |f, raw| match raw {
            "realtime" => Ok(FoundBy::Realtime),
            "audit" => Ok(FoundBy::Audit),
            _ => Err(FieldError::new(f, "must be realtime or audit")),
        })?;
        let from = q.parse_opt("from", parse_date)?;
        let to = q.parse_opt("to", parse_date)?;
        if let (Some(f), Some(t)) = (from, to) {
            if t < f {
                return Err(FieldError::new("to", "must not be before from").into());
            }
        }
        let before = q.parse_opt("before", IncidentQuery::parse_cursor)?;
        Ok(Self {
            query: IncidentQuery {
                scope: staff.scope().map(<[_]>::to_vec),
                doctor: q.parse_opt("doctor", DoctorId::parse_stored)?,
                clinic,
                state,
                kind,
                found_by,
                from,
                to,
                before,
                limit: PAGE_SIZE,
                ..IncidentQuery::default()
            },
            clinic: text("clinic"),
            doctor: text("doctor"),
            state: text("state"),
            kind: text("kind"),
            found_by: text("found_by"),
            from: text("from"),
            to: text("to"),
        })
    }

    /// The filters as a query string (without the cursor).
    fn encoded(&self) -> String {
        let pairs: Vec<(&str, &str)> = [
            ("clinic", self.clinic.as_str()),
            ("doctor", &self.doctor),
            ("state", &self.state),
            ("kind", &self.kind),
            ("found_by", &self.found_by),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }

    fn is_filtered(&self) -> bool {
        !self.encoded().is_empty()
    }
}

#[derive(Template)]
#[template(path = "pages/incidents.html")]
struct IncidentsPage {
    chrome: Chrome,
    clinics: Vec<ClinicOption>,
    filters: Filters,
    list: IncidentList,
}

/// The table, its count and the link to the next page; live on the first page.
#[derive(Template)]
#[template(path = "partials/incident_list.html")]
struct IncidentList {
    rows: Vec<IncidentRow>,
    total: u64,
    filtered: bool,
    first_page: bool,
    next: Option<String>,
    fragment_url: String,
    csv_url: String,
    newest_url: String,
    freshness: Option<String>,
}

async fn list(state: &WebState, filters: &Filters) -> Result<IncidentList, PageError> {
    let store = state.store();
    let clinics = Clinics::load(&state.auditor).await?;
    let mut page = filters.query.clone();
    page.limit = PAGE_SIZE + 1;
    let mut incidents = store.incident_page(&page).await?;
    let more = incidents.len() > PAGE_SIZE as usize;
    incidents.truncate(PAGE_SIZE as usize);
    let total = store.incident_count(&filters.query).await?;
    let encoded = filters.encoded();
    let with = |extra: String| {
        if encoded.is_empty() {
            extra
        } else if extra.is_empty() {
            encoded.clone()
        } else {
            format!("{encoded}&{extra}")
        }
    };
    let next = match (more, incidents.last()) {
        (true, Some(last)) => Some(format!(
            "/incidents?{}",
            with(
                serde_urlencoded::to_string([("before", IncidentQuery::cursor_after(last))])
                    .unwrap_or_default()
            )
        )),
        _ => None,
    };
    let freshness = crate::web::live::last_detector_pass(store, state.bookings.now())
        .await?
        .map(|t| {
            format!(
                "Detection last ran {}",
                crate::web::page::When::new(t, crate::domain::Clinic::DEFAULT_TIMEZONE).clock()
            )
        });
    Ok(IncidentList {
        rows: IncidentRow::many(store, &incidents, &clinics).await?,
        total,
        filtered: filters.is_filtered(),
        first_page: filters.query.before.is_none(),
        next,
        fragment_url: format!("/fragments/incidents?{}", with(String::new())),
        csv_url: format!("/incidents.csv?{}", with(String::new())),
        newest_url: format!("/incidents?{}", with(String::new())),
        freshness,
    })
}

pub async fn page(
    State(state): State<WebState>,
    visitor: Visitor,
    query: Query,
) -> Result<Response, PageError> {
    let filters = Filters::parse(&visitor.staff, &query)?;
    let clinics = Clinics::load(&state.auditor).await?;
    let page = IncidentsPage {
        chrome: visitor.chrome("incidents", "Incidents"),
        clinics: clinic_options(
            state.store(),
            &clinics,
            &visitor.staff,
            filters.query.clinic.as_ref(),
        )
        .await?,
        list: list(&state, &filters).await?,
        filters,
    };
    Ok(render(&page)?.into_response())
}

pub async fn fragment(
    State(state): State<WebState>,
    visitor: Visitor,
    query: Query,
) -> Result<Html<String>, PageError> {
    let filters = Filters::parse(&visitor.staff, &query)?;
    render(&list(&state, &filters).await?)
}

/// `/incidents.csv`: every incident the filters match, all pages. A patient's name is
/// never in it; cells that a spreadsheet would run as a formula are quoted with `'`.
pub async fn csv(
    State(state): State<WebState>,
    visitor: Visitor,
    query: Query,
) -> Result<Response, PageError> {
    let filters = Filters::parse(&visitor.staff, &query)?;
    let store = state.store();
    let clinics = Clinics::load(&state.auditor).await?;
    let mut out = csv::Writer::from_writer(Vec::new());
    let header = [
        "id",
        "clinic_id",
        "clinic",
        "doctor_id",
        "doctor",
        "date",
        "kind",
        "slot",
        "token",
        "count",
        "state",
        "found_by",
        "first_seen_utc",
        "last_seen_utc",
        "first_seen_local",
        "acknowledged_by",
        "resolved_by",
        "note",
    ];
    let failed = |_| {
        PageError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "The CSV could not be written.",
        )
    };
    out.write_record(header).map_err(failed)?;
    let mut page = filters.query.clone();
    page.limit = CSV_BATCH;
    loop {
        let batch = store.incident_page(&page).await?;
        let rows = IncidentRow::many(store, &batch, &clinics).await?;
        for (incident, row) in batch.iter().zip(&rows) {
            let record = [
                row.id.clone(),
                row.clinic_id.clone(),
                row.clinic.clone(),
                row.doctor_id.clone(),
                row.doctor.clone(),
                row.date.to_string(),
                row.kind.to_owned(),
                row.slot.clone(),
                row.token.clone(),
                row.count.to_string(),
                incident.state.as_str().to_owned(),
                row.found_by.to_owned(),
                row.first_seen.iso(),
                row.last_seen.iso(),
                row.first_seen.short(),
                incident.acknowledged_by.clone().unwrap_or_default(),
                incident.resolved_by.clone().unwrap_or_default(),
                incident.note.clone().unwrap_or_default(),
            ];
            out.write_record(record.iter().map(|c| spreadsheet_safe(c)))
                .map_err(failed)?;
        }
        match batch.last() {
            Some(last) if batch.len() == CSV_BATCH as usize => {
                page.before = Some((last.first_seen, last.id.clone()));
            }
            _ => break,
        }
    }
    let bytes = out.into_inner().map_err(|_| {
        PageError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "The CSV could not be written.",
        )
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"slotguard-incidents.csv\"",
            ),
        ],
        bytes,
    )
        .into_response())
}

/// A cell starting with `=`, `+`, `-`, `@`, tab or carriage return gets a leading `'`
/// so a spreadsheet shows it instead of running it.
fn spreadsheet_safe(cell: &str) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_defused_in_csv_cells() {
        assert_eq!(spreadsheet_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(spreadsheet_safe("A1-006"), "A1-006");
    }
}
