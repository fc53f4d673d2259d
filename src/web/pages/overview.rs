//! `/`: the overview. Cards (duplicates today, this week, all time, open incidents,
//! today's duplicate rate against the 0.1 % target), the freshness line that proves
//! detection and the audit are alive, the duplicate rate of the last 30 days,
//! conflicts by hour × weekday, the retry rate, the clinics ranked, the newest
//! incidents. Every number comes from `metrics::stats::stats` over the same rows as
//! `/api/v1/stats`; "today" and "this week" are each clinic's own local day and ISO
//! week.

use askama::Template;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};

use super::{clinic_options, visible_clinic, ClinicOption, IncidentRow};
use crate::domain::{ClinicId, IncidentState, KnownClinic};
use crate::metrics::stats::{self, DateRange, Stats, Verdict, DUPLICATE_RATE_TARGET};
use crate::store::dashboard::IncidentQuery;
use crate::store::metrics::StatsRows;
use crate::web::page::{render, Chrome, Clinics, PageError, Query, When};
use crate::web::session::Visitor;
use crate::web::WebState;

/// Days the rate chart, the heatmap, the retry rate and the ranking cover.
const DAYS: i64 = 30;
/// Newest incidents listed under the charts.
const RECENT: u32 = 10;
/// Past this without a detector pass, the freshness line turns into a warning.
const DETECTION_STALE: Duration = Duration::seconds(60);

#[derive(Template)]
#[template(path = "pages/overview.html")]
struct OverviewPage {
    chrome: Chrome,
    clinics: Vec<ClinicOption>,
    /// [`OverviewBody`], rendered.
    body: String,
}

/// The live part of the page, also served alone as `/fragments/overview`.
#[derive(Template)]
#[template(path = "partials/overview_body.html")]
struct OverviewBody {
    fragment_url: String,
    today: NaiveDate,
    today_count: usize,
    week_count: usize,
    total: u64,
    open: u64,
    acknowledged: u64,
    rate_today: RateText,
    retry_rate: String,
    freshness: Freshness,
    chart: RateChart,
    heatmap: Heatmap,
    ranking: Vec<ClinicRank>,
    recent: Vec<IncidentRow>,
}

/// A duplicate rate against the target, in words and an icon.
struct RateText {
    value: String,
    verdict: &'static str,
    icon: &'static str,
    class: &'static str,
}

fn percent(rate: Option<f64>) -> String {
    match rate {
        Some(r) => format!("{:.3} %", r * 100.0),
        None => "—".into(),
    }
}

fn rate_text(verdict: &Verdict) -> RateText {
    match (verdict.rate, verdict.met) {
        (None, _) => RateText {
            value: "—".into(),
            verdict: "no appointments yet",
            icon: "○",
            class: "quiet",
        },
        (Some(r), true) => RateText {
            value: percent(Some(r)),
            verdict: "below the 0.1 % target",
            icon: "✓",
            class: "good",
        },
        (Some(r), false) => RateText {
            value: percent(Some(r)),
            verdict: "above the 0.1 % target",
            icon: "✗",
            class: "bad",
        },
    }
}

/// "last check 10:42 IST · 1,284 appointments checked today · last nightly audit clean".
struct Freshness {
    last_check: Option<When>,
    detection_stale: bool,
    checked_today: u64,
    audit: String,
    audit_late: bool,
}

/// Bars of the daily duplicate rate, drawn as SVG by the template.
struct RateChart {
    bars: Vec<Bar>,
    /// y of the 0.1 % target line.
    target_y: f64,
    /// The top of the scale, as text.
    scale: String,
    height: f64,
    any_over: bool,
}

struct Bar {
    x: f64,
    y: f64,
    height: f64,
    over: bool,
    label: String,
}

const CHART_HEIGHT: f64 = 120.0;
const BAR_STEP: f64 = 20.0;

impl RateChart {
    fn of(stats: &Stats) -> Self {
        let top = stats
            .duplicate_rate
            .days
            .iter()
            .filter_map(|d| d.verdict.rate)
            .fold(DUPLICATE_RATE_TARGET * 2.0, f64::max);
        let y_of = |rate: f64| CHART_HEIGHT - rate / top * CHART_HEIGHT;
        let bars: Vec<Bar> = stats
            .duplicate_rate
            .days
            .iter()
            .enumerate()
            .map(|(i, day)| {
                let rate = day.verdict.rate.unwrap_or(0.0);
                let y = y_of(rate);
                Bar {
                    x: i as f64 * BAR_STEP,
                    y,
                    height: (CHART_HEIGHT - y).max(if rate > 0.0 { 2.0 } else { 0.0 }),
                    over: !day.verdict.met,
                    label: format!(
                        "{}: {} ({} of {} appointments)",
                        day.date.format("%a %-d %b"),
                        percent(day.verdict.rate),
                        day.counts.extra_rows,
                        day.counts.appointments_checked
                    ),
                }
            })
            .collect();
        Self {
            any_over: bars.iter().any(|b| b.over),
            bars,
            target_y: y_of(DUPLICATE_RATE_TARGET),
            scale: percent(Some(top)),
            height: CHART_HEIGHT,
        }
    }

    fn width(&self) -> f64 {
        self.bars.len() as f64 * BAR_STEP
    }
}

/// Conflicts by weekday × local hour, shaded in six steps with the number written in.
struct Heatmap {
    rows: Vec<(&'static str, Vec<(u64, u8)>)>,
    total: u64,
}

impl Heatmap {
    fn of(stats: &Stats) -> Self {
        let c = &stats.conflicts_by_hour;
        let days: [(&'static str, &[u64; 24]); 7] = [
            ("Mon", &c.mon),
            ("Tue", &c.tue),
            ("Wed", &c.wed),
            ("Thu", &c.thu),
            ("Fri", &c.fri),
            ("Sat", &c.sat),
            ("Sun", &c.sun),
        ];
        let max = days
            .iter()
            .flat_map(|(_, h)| h.iter())
            .copied()
            .max()
            .unwrap_or(0);
        let shade = |n: u64| -> u8 {
            if n == 0 || max == 0 {
                0
            } else {
                (1 + (n * 4) / max).min(5) as u8
            }
        };
        Self {
            rows: days
                .iter()
                .map(|(name, hours)| (*name, hours.iter().map(|n| (*n, shade(*n))).collect()))
                .collect(),
            total: c.total,
        }
    }
}

struct ClinicRank {
    id: String,
    name: String,
    duplicates: u64,
    extra_rows: u64,
    conflicts: u64,
    bookings: u64,
    rate: RateText,
    retry_rate: String,
}

/// Every clinic there is data of: the registered ones and those only seen in watched
/// documents or incidents.
async fn every_clinic(
    store: &dyn crate::store::Store,
    clinics: &Clinics,
) -> Result<Vec<ClinicId>, PageError> {
    let mut all: std::collections::BTreeSet<ClinicId> =
        clinics.known().map(|k| k.clinic.id.clone()).collect();
    all.extend(store.seen_clinics().await?);
    Ok(all.into_iter().collect())
}

/// Rows re-dated so that every clinic's own today falls on `display_today`: a
/// clinic ahead of or behind the display zone still counts its own local day as
/// today. (With one time zone, as most deployments have, nothing moves.)
fn align_days(
    mut rows: StatsRows,
    clinics: &Clinics,
    now: DateTime<Utc>,
    display_today: NaiveDate,
) -> StatsRows {
    let shift =
        |clinic: &ClinicId, date: NaiveDate| date + (display_today - clinics.today(clinic, now));
    for o in &mut rows.day_outcomes {
        o.day = shift(&o.clinic_id, o.day);
    }
    for a in &mut rows.appointments {
        a.date = shift(&a.clinic_id, a.date);
    }
    for i in &mut rows.incidents {
        i.group.date = shift(&i.group.clinic_id, i.group.date);
    }
    rows
}

async fn body(
    state: &WebState,
    visitor: &Visitor,
    clinics: &Clinics,
    clinic: Option<&ClinicId>,
) -> Result<OverviewBody, PageError> {
    let store = state.store();
    let staff = &visitor.staff;
    let now = state.bookings.now();
    let scope: Option<Vec<ClinicId>> = match clinic {
        Some(c) => Some(vec![c.clone()]),
        None => staff.scope().map(<[ClinicId]>::to_vec),
    };
    // The display zone: the chosen clinic's, else the first one seen, else the default.
    let display_clinic = scope.as_ref().and_then(|s| s.first());
    let display_today = match display_clinic {
        Some(c) => clinics.today(c, now),
        None => now
            .with_timezone(&crate::domain::Clinic::DEFAULT_TIMEZONE)
            .date_naive(),
    };
    let monday =
        display_today - Duration::days(i64::from(display_today.weekday().num_days_from_monday()));
    let sunday = monday + Duration::days(6);
    let from = (display_today - Duration::days(DAYS - 1)).min(monday) - Duration::days(1);
    let to = sunday + Duration::days(1);
    // Days before yesterday are closed: their booking outcomes never change and are
    // read once per view and day; appointment counts are kept per clinic and day until
    // a write to that day is seen, incidents per clinic until one of its changes
    // (`web::counts`).
    let recent = display_today - Duration::days(1);
    let tomorrow = display_today + Duration::days(1);
    let counts = &state.day_counts;
    let mut rows = counts
        .closed_outcomes(store, scope.as_deref(), from, recent - Duration::days(1))
        .await?;
    let fresh = crate::web::counts::outcomes(store, scope.as_deref(), recent, tomorrow).await?;
    rows.day_outcomes.extend(fresh.day_outcomes);
    rows.hour_outcomes.extend(fresh.hour_outcomes);
    // Counts are needed up to today (a day's margin for clinics ahead of the display
    // zone); incidents for the whole ISO week, for the week's card.
    let in_view = match &scope {
        Some(list) => list.clone(),
        None => every_clinic(store, clinics).await?,
    };
    rows.appointments = counts.appointments(store, &in_view, from, tomorrow).await?;
    rows.incidents = counts.incidents(store, &in_view, from, to).await?;
    let rows = align_days(rows, clinics, now, display_today);
    let last30 = DateRange::new(display_today - Duration::days(DAYS - 1), display_today)?;
    let today = DateRange::new(display_today, display_today)?;
    let month = stats::stats(None, last30, &rows);
    let day = stats::stats(None, today, &rows);
    let today_count = rows
        .incidents
        .iter()
        .filter(|i| i.group.date == display_today)
        .count();
    let week_count = rows
        .incidents
        .iter()
        .filter(|i| (monday..=sunday).contains(&i.group.date))
        .count();

    let tallies = store.incident_tallies(scope.as_deref()).await?;
    let count_of = |state: Option<IncidentState>| -> u64 {
        tallies
            .iter()
            .filter(|t| state.is_none_or(|s| t.state == s))
            .map(|t| t.count)
            .sum()
    };

    let recent = store
        .incident_page(&IncidentQuery {
            scope: scope.clone(),
            limit: RECENT,
            ..IncidentQuery::default()
        })
        .await?;

    let freshness = freshness(
        state,
        clinics,
        scope.as_deref(),
        day.duplicate_rate.counts.appointments_checked,
    )
    .await?;
    let ranking = month
        .clinics
        .iter()
        .map(|c| ClinicRank {
            id: c.clinic_id.to_string(),
            name: clinics.name(&c.clinic_id),
            duplicates: c.counts.duplicate_groups,
            extra_rows: c.counts.extra_rows,
            conflicts: c.conflicts,
            bookings: c.bookings,
            rate: rate_text(&c.verdict),
            retry_rate: percent(c.retry_rate),
        })
        .collect();
    Ok(OverviewBody {
        fragment_url: match clinic {
            Some(c) => format!("/fragments/overview?clinic={c}"),
            None => "/fragments/overview".into(),
        },
        today: display_today,
        today_count,
        week_count,
        total: count_of(None),
        open: count_of(Some(IncidentState::Open)),
        acknowledged: count_of(Some(IncidentState::Acknowledged)),
        rate_today: rate_text(&day.duplicate_rate.verdict),
        retry_rate: percent(month.retry_rate.rate),
        freshness,
        chart: RateChart::of(&month),
        heatmap: Heatmap::of(&month),
        ranking,
        recent: IncidentRow::many(store, &recent, clinics).await?,
    })
}

async fn freshness(
    state: &WebState,
    clinics: &Clinics,
    scope: Option<&[ClinicId]>,
    checked_today: u64,
) -> Result<Freshness, PageError> {
    let store = state.store();
    let now = state.bookings.now();
    let last_check = crate::web::live::last_detector_pass(store, now).await?;
    let zone_of = scope
        .and_then(|s| s.first())
        .map(|c| clinics.tz(c))
        .unwrap_or(crate::domain::Clinic::DEFAULT_TIMEZONE);
    let visible: Vec<&KnownClinic> = clinics
        .known()
        .filter(|k| scope.is_none_or(|s| s.contains(&k.clinic.id)))
        .collect();
    let late_or_clean = audit_state(state, &visible).await?;
    let late: Vec<String> = late_or_clean
        .iter()
        .filter_map(|(name, a)| a.missing.as_ref().map(|(d, _)| format!("{name} ({d})")))
        .collect();
    let newest_clean = late_or_clean
        .iter()
        .filter_map(|(_, a)| a.last_clean)
        .reduce(|a, b| a && b);
    let audit = if !late.is_empty() {
        format!("nightly audit missing for {}", late.join(", "))
    } else {
        match newest_clean {
            Some(true) => "last nightly audit clean".into(),
            Some(false) => "last nightly audit found duplicates".into(),
            None => "no nightly audit yet".into(),
        }
    };
    Ok(Freshness {
        detection_stale: last_check.is_none_or(|t| now - t > DETECTION_STALE),
        last_check: last_check.map(|t| When::new(t, zone_of)),
        checked_today,
        audit,
        audit_late: !late.is_empty(),
    })
}

/// A clinic's nightly audit as the freshness line tells it.
pub struct AuditState {
    /// The due date with no successful audit past `auditAt` + grace, and the last
    /// error of its failed runs.
    pub missing: Option<(NaiveDate, Option<String>)>,
    /// Whether the newest successful audit (today's or yesterday's) was clean.
    pub last_clean: Option<bool>,
}

/// The audit state of each clinic, registered or only watched, from one query
/// whatever the number of clinics.
pub async fn audit_state<'a>(
    state: &WebState,
    known: &[&'a KnownClinic],
) -> Result<Vec<(&'a str, AuditState)>, PageError> {
    let clinics: Vec<&crate::domain::Clinic> = known.iter().map(|k| &k.clinic).collect();
    let store = state.store();
    let now = state.bookings.now();
    let Some(from) = clinics
        .iter()
        .map(|c| c.today(now) - Duration::days(2))
        .min()
    else {
        return Ok(Vec::new());
    };
    let to = clinics.iter().map(|c| c.today(now)).max().unwrap_or(from);
    let one = match clinics.as_slice() {
        [only] => Some(&only.id),
        _ => None,
    };
    let runs = store.audit_runs(one, from, to).await?;
    Ok(known
        .iter()
        .map(|k| {
            let c = &k.clinic;
            let last_clean = runs
                .iter()
                .filter(|r| {
                    r.clinic_id == c.id
                        && r.status == crate::store::audit::RunStatus::Succeeded
                        && r.local_date >= c.today(now) - Duration::days(1)
                })
                .max_by_key(|r| (r.local_date, r.started_at))
                .map(|r| r.counts.duplicate_groups == 0);
            let missing = state.auditor.missing_audit_among(c, k.since, &runs);
            (
                c.name.as_str(),
                AuditState {
                    missing,
                    last_clean,
                },
            )
        })
        .collect())
}

/// The live part for this person's view, rendered, from [`Rendered`] when it holds it.
async fn rendered_body(
    state: &WebState,
    visitor: &Visitor,
    clinics: &Clinics,
    clinic: Option<&ClinicId>,
) -> Result<String, PageError> {
    let key = (
        visitor.staff.scope().map(<[ClinicId]>::to_vec),
        clinic.cloned(),
    );
    state
        .rendered_overviews
        .get(key, async {
            Ok(render(&body(state, visitor, clinics, clinic).await?)?.0)
        })
        .await
}

/// A view of the overview: the clinics the person sees (`None`: all) and the clinic
/// chosen.
type ViewKey = (Option<Vec<ClinicId>>, Option<ClinicId>);

/// How long a rendered overview is served again while no incident changes.
const RENDERED_KEPT: std::time::Duration = std::time::Duration::from_secs(5);

/// The overview's live part as last rendered for each view, while no incident has
/// changed since and for at most [`RENDERED_KEPT`]: when one incident makes 200 open
/// dashboards reload at once, the first renders it and the others get the same text
/// (one set of reads and of memory instead of 200). An incident change empties it.
pub struct Rendered {
    changes: std::sync::Mutex<tokio::sync::broadcast::Receiver<crate::detect::IncidentChanged>>,
    kept: tokio::sync::Mutex<std::collections::HashMap<ViewKey, (std::time::Instant, String)>>,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rendered")
    }
}

impl Rendered {
    pub fn new(detector: &crate::detect::Detector) -> Self {
        Self {
            changes: std::sync::Mutex::new(detector.subscribe()),
            kept: tokio::sync::Mutex::default(),
        }
    }

    /// The kept text of `key`, or `render`'s, kept. One view renders at a time, so a
    /// burst of the same request waits for the first instead of repeating it.
    async fn get(
        &self,
        key: ViewKey,
        render: impl std::future::Future<Output = Result<String, PageError>>,
    ) -> Result<String, PageError> {
        let mut kept = self.kept.lock().await;
        let changed = {
            let mut changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
            let mut changed = false;
            loop {
                match changes.try_recv() {
                    Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                        changed = true
                    }
                    Err(_) => break changed,
                }
            }
        };
        if changed || kept.len() > 256 {
            kept.clear();
        }
        if let Some((at, html)) = kept.get(&key) {
            if at.elapsed() < RENDERED_KEPT {
                return Ok(html.clone());
            }
        }
        let html = render.await?;
        kept.insert(key, (std::time::Instant::now(), html.clone()));
        Ok(html)
    }
}

pub async fn page(
    State(state): State<WebState>,
    visitor: Visitor,
    query: Query,
) -> Result<Response, PageError> {
    let clinic = visible_clinic(&visitor.staff, query.get("clinic"), "clinic")?;
    let clinics = Clinics::load(&state.auditor).await?;
    let page = OverviewPage {
        chrome: visitor.chrome("overview", "Overview"),
        clinics: clinic_options(state.store(), &clinics, &visitor.staff, clinic.as_ref()).await?,
        body: rendered_body(&state, &visitor, &clinics, clinic.as_ref()).await?,
    };
    Ok(render(&page)?.into_response())
}

/// The live part alone, for htmx.
pub async fn fragment(
    State(state): State<WebState>,
    visitor: Visitor,
    query: Query,
) -> Result<Html<String>, PageError> {
    let clinic = visible_clinic(&visitor.staff, query.get("clinic"), "clinic")?;
    let clinics = Clinics::load(&state.auditor).await?;
    Ok(Html(
        rendered_body(&state, &visitor, &clinics, clinic.as_ref()).await?,
    ))
}
