//! Watch (mirror an external app's documents), incidents, notifications and silences.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::super::error::ApiError;
use super::super::extract::{required, JsonBody, JsonDocument, QueryParams};
use super::super::AppState;
use crate::auth::{Action, Principal};
use crate::domain::text::parse_line;
use crate::domain::{ClinicId, FieldError, Incident, IncidentState, Touched};
use crate::store::dashboard::IncidentQuery;
use crate::store::detection::{DeadLetters, DeliveryState, Silence};
use crate::store::StoreError;
use crate::watch::kloqo::{parse_document, parse_document_with_id};

/// Most documents one batch may carry.
const MAX_BATCH: usize = 1000;

/// A source is named like an id: it appears in URLs and keys.
fn source_name(raw: &str) -> Result<String, FieldError> {
    ClinicId::parse("source", raw).map(|s| s.as_str().to_owned())
}

async fn wake(state: &AppState, touched: Touched) {
    if let Some(wakeups) = state.bookings.wakeups() {
        wakeups.touch(touched).await;
    }
}

/// The header a forwarder sends the source's own write time in (Firestore's
/// `updateTime` of the change it forwards).
const UPDATE_TIME_HEADER: &str = "x-update-time";

/// `X-Update-Time`, if sent: an RFC 3339 time within the years documents may carry.
fn update_time_header(
    headers: &axum::http::HeaderMap,
) -> Result<Option<DateTime<Utc>>, FieldError> {
    let Some(raw) = headers.get(UPDATE_TIME_HEADER) else {
        return Ok(None);
    };
    let refused = || {
        FieldError::new(
            "X-Update-Time",
            "must be an RFC 3339 time such as 2026-12-01T04:30:00.123456Z (Firestore's updateTime)",
        )
    };
    let at = raw
        .to_str()
        .ok()
        .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(refused)?;
    crate::watch::kloqo::check_year("X-Update-Time", at)?;
    Ok(Some(at))
}

/// `PUT /watch/{source}/appointments/{id}`: one document, upserted; an older
/// version than the stored one is acknowledged and ignored (`applied: false`).
/// `X-Update-Time` (the source's write time) orders it before anything in the body.
pub async fn watch_put(
    State(state): State<AppState>,
    principal: Principal,
    Path((source, id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    JsonDocument(body): JsonDocument,
) -> Result<Json<Value>, ApiError> {
    let source = source_name(&source)?;
    principal.may_watch(&source)?;
    let mut document = parse_document_with_id(&id, &body)?;
    if let Some(at) = update_time_header(&headers)? {
        document.update_time = Some(at);
    }
    principal.may_watch_clinic(&document.clinic_id)?;
    let bookings = &state.bookings;
    document.check_not_future(bookings.now())?;
    let (applied, groups) = bookings
        .store()
        .upsert_watched(&source, &[document], bookings.now())
        .await?;
    wake(&state, groups).await;
    Ok(Json(
        json!({"source": source, "id": id, "applied": applied[0]}),
    ))
}

/// `POST /watch/{source}/appointments:batch`: `[doc, …]` or `{"documents": [doc, …]}`.
/// Every document is parsed before anything is stored: one bad document refuses
/// the batch, naming it.
pub async fn watch_batch(
    State(state): State<AppState>,
    principal: Principal,
    Path(source): Path<String>,
    JsonDocument(body): JsonDocument,
) -> Result<Json<Value>, ApiError> {
    let source = source_name(&source)?;
    principal.may_watch(&source)?;
    let list = match &body {
        Value::Array(list) => list,
        Value::Object(o) => o
            .get("documents")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                FieldError::new("documents", "must be a list of appointment documents")
            })?,
        _ => {
            return Err(
                FieldError::new("documents", "must be a list of appointment documents").into(),
            )
        }
    };
    if list.len() > MAX_BATCH {
        return Err(FieldError::new(
            "documents",
            format!("holds more than {MAX_BATCH} documents; split the batch"),
        )
        .into());
    }
    let bookings = &state.bookings;
    let now = bookings.now();
    let documents = list
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            parse_document(doc)
                .and_then(|d| d.check_not_future(now).map(|()| d))
                .map_err(|e| FieldError::new(format!("documents[{i}].{}", e.field), e.message))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for document in &documents {
        principal.may_watch_clinic(&document.clinic_id)?;
    }
    let (applied, groups) = bookings
        .store()
        .upsert_watched(&source, &documents, bookings.now())
        .await?;
    wake(&state, groups).await;
    Ok(Json(json!({
        "source": source,
        "received": documents.len(),
        "applied": applied.iter().filter(|a| **a).count(),
        "stale": applied.iter().filter(|a| !**a).count(),
    })))
}

pub async fn watch_delete(
    State(state): State<AppState>,
    principal: Principal,
    Path((source, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let source = source_name(&source)?;
    principal.may_watch(&source)?;
    let bookings = &state.bookings;
    if let Some(group) = bookings.store().watched_group(&source, &id).await? {
        principal.may_watch_clinic(&group.clinic_id)?;
    }
    let touched = bookings
        .store()
        .delete_watched(&source, &id, bookings.now())
        .await?
        .ok_or(StoreError::NotFound(crate::domain::Entity::Document))?;
    wake(&state, touched).await;
    Ok(Json(json!({"source": source, "id": id, "deleted": true})))
}

fn instant(field: &str, raw: &str) -> Result<DateTime<Utc>, FieldError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            crate::domain::schedule::parse_date(field, raw)
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        })
        .map_err(|_| FieldError::new(field, "must be an RFC 3339 time or a date YYYY-MM-DD"))
}

/// Most incidents one page of `GET /incidents` carries, and the default.
const MAX_PAGE: u32 = 1000;
const DEFAULT_PAGE: u32 = 100;

/// `GET /incidents?clinicId&state&since&until&limit&cursor`: newest first seen first,
/// `limit` a page (default 100, at most 1000), and `next`, the cursor of the following
/// page (`null` on the last).
pub async fn incidents(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let clinic = query.parse("clinicId", ClinicId::parse)?;
    let limit = page_limit(&query)?;
    let filter = IncidentQuery {
        scope: match principal.role {
            crate::domain::Role::Admin => None,
            _ => Some(principal.clinics.clone()),
        },
        state: query
            .get("state")
            .map(|s| {
                IncidentState::parse(s).ok_or_else(|| {
                    FieldError::new("state", "must be open, acknowledged or resolved")
                })
            })
            .transpose()?,
        changed_since: query.parse("since", instant)?,
        first_seen_until: query.parse("until", instant)?,
        before: query.parse("cursor", IncidentQuery::parse_cursor)?,
        limit: limit + 1,
        clinic,
        ..IncidentQuery::default()
    };
    principal.may(Action::RunClinicDay, filter.clinic.as_ref())?;
    let mut incidents = state.bookings.store().incident_page(&filter).await?;
    let next = (incidents.len() > limit as usize).then(|| {
        incidents.truncate(limit as usize);
        incidents.last().map(IncidentQuery::cursor_after)
    });
    Ok(Json(
        json!({"incidents": incidents, "next": next.flatten()}),
    ))
}

async fn load(state: &AppState, principal: &Principal, id: &str) -> Result<Incident, ApiError> {
    let incident = state
        .bookings
        .store()
        .incident(id)
        .await?
        .ok_or(StoreError::NotFound(crate::domain::Entity::Incident))?;
    principal.may(Action::RunClinicDay, Some(&incident.group.clinic_id))?;
    Ok(incident)
}

pub async fn incident(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let incident = load(&state, &principal, &id).await?;
    let store = state.bookings.store();
    let members = store
        .member_rows(&incident.group, &incident.members)
        .await?;
    let notifications: Vec<Value> = store
        .incident_notifications(&incident.id)
        .await?
        .into_iter()
        .map(|(n, attempts)| {
            let mut n = serde_json::to_value(n).unwrap_or_default();
            n["attempts"] = json!(attempts);
            n
        })
        .collect();
    let mut body = serde_json::to_value(&incident).unwrap_or_default();
    body["members"] = json!(members);
    body["notifications"] = json!(notifications);
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    note: Option<String>,
}

/// The rules of the move are the detector's (`Detector::move_incident`).
async fn move_incident(
    state: &AppState,
    principal: &Principal,
    id: &str,
    to: IncidentState,
    note: Option<String>,
) -> Result<Json<Incident>, ApiError> {
    let incident = load(state, principal, id).await?;
    let note = note.map(|n| parse_line("note", &n, 2000)).transpose()?;
    let moved = state
        .detector
        .move_incident(incident, to, &principal.key_id, note)
        .await?;
    Ok(Json(moved))
}

pub async fn acknowledge(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: JsonBody<NoteBody>,
) -> Result<Json<Incident>, ApiError> {
    move_incident(
        &state,
        &principal,
        &id,
        IncidentState::Acknowledged,
        body.value.note,
    )
    .await
}

pub async fn resolve(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: JsonBody<NoteBody>,
) -> Result<Json<Incident>, ApiError> {
    let note = required("note", body.value.note)?;
    move_incident(&state, &principal, &id, IncidentState::Resolved, Some(note)).await
}

pub async fn notifications(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let clinic = query.parse("clinicId", ClinicId::parse)?;
    let delivery = query
        .get("state")
        .map(|s| {
            DeliveryState::parse(s)
                .ok_or_else(|| FieldError::new("state", "must be pending, delivered or dead"))
        })
        .transpose()?;
    let limit = page_limit(&query)?;
    let after = query.parse("cursor", |field, raw| {
        let bad = || {
            FieldError::new(
                field,
                "is not a cursor this list made; start from the first page",
            )
        };
        let mut parts = raw.splitn(3, '~');
        let (at, id, channel) = (parts.next(), parts.next(), parts.next());
        let at = at
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .ok_or_else(bad)?
            .with_timezone(&Utc);
        match (id, channel) {
            (Some(id), Some(channel))
                if !id.is_empty() && id.len() <= 64 && channel.len() <= 64 =>
            {
                Ok((at, id.to_owned(), channel.to_owned()))
            }
            _ => Err(bad()),
        }
    })?;
    principal.may(Action::RunClinicDay, clinic.as_ref())?;
    let mut rows = state
        .bookings
        .store()
        .notifications(delivery, clinic.as_ref(), after.as_ref(), limit + 1)
        .await?;
    let next = (rows.len() > limit as usize).then(|| {
        rows.truncate(limit as usize);
        rows.last().map(|n| {
            format!(
                "{}~{}~{}",
                n.created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                n.id,
                n.channel
            )
        })
    });
    Ok(Json(json!({"notifications": rows, "next": next.flatten()})))
}

/// `?limit=`: 1 to 1000, default 100.
fn page_limit(query: &QueryParams) -> Result<u32, FieldError> {
    Ok(query
        .parse("limit", |field, raw| {
            raw.parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| {
                    FieldError::new(
                        field,
                        format!("must be a whole number from 1 to {MAX_PAGE}"),
                    )
                })
        })?
        .unwrap_or(DEFAULT_PAGE))
}

/// `channel` of a retry, from the query or the body (`{"channel": "ops"}`); an
/// empty body is no body.
fn retry_channel(query: &QueryParams, body: &[u8]) -> Result<Option<String>, ApiError> {
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let document: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::malformed(format!("The body is not valid JSON: {e}.")))?;
        let Value::Object(fields) = document else {
            return Err(ApiError::malformed("The body must be a JSON object."));
        };
        match fields.get("channel") {
            None | Some(Value::Null) => None,
            Some(Value::String(channel)) => Some(channel.clone()),
            Some(_) => return Err(FieldError::new("channel", "must be a channel's name").into()),
        }
    };
    match (query.get("channel"), from_body) {
        (Some(q), Some(b)) if q != b => Err(FieldError::new(
            "channel",
            "is given twice, differently, in the query and the body",
        )
        .into()),
        (Some(q), _) => Ok(Some(q.to_owned())),
        (None, b) => Ok(b),
    }
}

/// `POST /notifications/{id}/retry`: a dead letter queued again, due now, for a new
/// round of attempts. `channel` (query or body) says which delivery when the
/// notification is dead on more than one channel. Admin, or a clinic key for the
/// notification's clinic. 202: the dispatcher delivers it at its next pass.
pub async fn retry_notification(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    query: QueryParams,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let channel = retry_channel(&query, &body)?;
    let store = state.bookings.store();
    let deliveries = store.notification(&id).await?;
    let first = deliveries
        .first()
        .ok_or(StoreError::NotFound(crate::domain::Entity::Notification))?;
    // A notice for every clinic (the weekly report of all) is an admin's to retry.
    let clinic = ClinicId::parse("clinicId", &first.clinic_id).ok();
    principal.may(Action::RunClinicDay, clinic.as_ref())?;
    let channels: Vec<&str> = deliveries.iter().map(|d| d.channel.as_str()).collect();
    if let Some(wanted) = &channel {
        if !channels.contains(&wanted.as_str()) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "Notification {id} was not sent on channel {wanted}; its channels are {}.",
                    channels.join(", ")
                ),
            ));
        }
    }
    let on_channel = |d: &&crate::store::detection::NotificationRow| {
        channel.as_deref().is_none_or(|c| d.channel == c)
    };
    let dead: Vec<&str> = deliveries
        .iter()
        .filter(on_channel)
        .filter(|d| d.state == DeliveryState::Dead)
        .map(|d| d.channel.as_str())
        .collect();
    let channel = match (channel.as_deref(), dead.as_slice()) {
        (_, []) => {
            let states = deliveries
                .iter()
                .filter(on_channel)
                .map(|d| format!("{} on {}", d.state.as_str(), d.channel))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_dead_letter",
                format!("Notification {id} is {states}; only dead letters are retried."),
            ));
        }
        (None, [one]) => (*one).to_owned(),
        (None, several) => {
            return Err(FieldError::new(
                "channel",
                format!(
                    "is required: notification {id} is dead on channels {}",
                    several.join(", ")
                ),
            )
            .into())
        }
        (Some(c), _) => c.to_owned(),
    };
    let which = DeadLetters {
        id: Some(id.clone()),
        channel: Some(channel),
        clinic: None,
    };
    let queued = store
        .retry_dead(&which, &principal.key_id, state.bookings.now())
        .await?;
    if queued.is_empty() {
        // Another retry got there first.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_dead_letter",
            format!("Notification {id} is no longer a dead letter."),
        ));
    }
    for row in &queued {
        tracing::info!(notification = %row.id, channel = %row.channel, clinic = %row.clinic_id, by = %principal.key_id, "dead letter queued again");
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"notifications": queued}))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct SilenceBody {
    clinic_id: Option<String>,
    kind: Option<String>,
    reason: Option<String>,
    ends_at: Option<String>,
}

pub async fn create_silence(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody<SilenceBody>,
) -> Result<(StatusCode, Json<Silence>), ApiError> {
    let b = body.value;
    let clinic = b
        .clinic_id
        .as_deref()
        .map(|c| ClinicId::parse("clinicId", c))
        .transpose()?;
    principal.may(Action::RunClinicDay, clinic.as_ref())?;
    let kind = match b.kind.as_deref() {
        None => None,
        Some(k @ ("slot" | "token")) => Some(k.to_owned()),
        Some(_) => {
            return Err(
                FieldError::new("kind", "must be slot or token (or left out for both)").into(),
            )
        }
    };
    let now = state.bookings.now();
    let ends_at = instant("endsAt", &required("endsAt", b.ends_at)?)?;
    if ends_at <= now {
        return Err(FieldError::new("endsAt", "must be in the future").into());
    }
    let silence = Silence {
        id: uuid::Uuid::new_v4().to_string(),
        clinic_id: clinic.map(|c| c.as_str().to_owned()),
        kind,
        reason: parse_line("reason", &required("reason", b.reason)?, 500)?,
        created_by: principal.key_id.clone(),
        created_at: now,
        ends_at,
    };
    state.bookings.store().insert_silence(&silence).await?;
    Ok((StatusCode::CREATED, Json(silence)))
}

pub async fn silences(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    let all = state
        .bookings
        .store()
        .silences(Some(state.bookings.now()))
        .await?;
    let visible: Vec<Silence> = all
        .into_iter()
        .filter(|s| {
            let clinic = s
                .clinic_id
                .as_deref()
                .and_then(|c| ClinicId::parse("c", c).ok());
            principal.may(Action::RunClinicDay, clinic.as_ref()).is_ok()
        })
        .collect();
    Ok(Json(json!({"silences": visible})))
}

pub async fn end_silence(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = state.bookings.store();
    let silence = store
        .silences(None)
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or(StoreError::NotFound(crate::domain::Entity::Silence))?;
    let clinic = silence
        .clinic_id
        .as_deref()
        .and_then(|c| ClinicId::parse("c", c).ok());
    principal.may(Action::RunClinicDay, clinic.as_ref())?;
    let ended = store.end_silence(&id, state.bookings.now()).await?;
    Ok(Json(json!({"id": id, "ended": ended})))
}
