//! What detection and alerting keep: the watched mirror, incidents, the alert outbox,
//! notifications and their attempts, silences, leases: the trait, its SQL, and its one
//! implementation for every [`SqlBackend`] (the day lookups differ by `B::BACKEND`).

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::rows::{self, corrupt, u32_of};
use super::sql::{query, SqlBackend, Tx};
use super::{Backend, StoreError};
use crate::domain::{
    Changes, ClinicId, Group, Incident, Keys, MemberRef, OutboxEntry, Touched, WatchedAppointment,
};

/// A member's row, for showing an incident: from `appointments` (source `native`)
/// or the watched mirror.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberRow {
    pub source: String,
    pub id: String,
    pub slot_index: u32,
    pub token_number: Option<String>,
    pub status: String,
    pub created_at: Option<DateTime<Utc>>,
    /// Local `HH:MM` of the slot (a watched document's own `time` as it wrote it).
    pub time: Option<String>,
    pub booked_via: Option<String>,
    /// Personal data: shown on the dashboard to the clinic's staff and admins only,
    /// never sent by the API or in alerts.
    #[serde(skip)]
    pub patient_name: Option<String>,
    #[serde(skip)]
    pub patient_phone: Option<String>,
}

impl MemberRow {
    /// The patient fields of a watched document (Kloqo: `patientName`,
    /// `communicationPhone` or `patientPhone`, `time`).
    pub fn with_document(mut self, document: &serde_json::Value) -> Self {
        let text = |key: &str| {
            document
                .get(key)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        self.patient_name = text("patientName");
        self.patient_phone = text("patientPhone").or_else(|| text("communicationPhone"));
        self.time = text("time");
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Gave up: a permanent error, or too many transient ones. Visible via the API.
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Dead,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// One grouped message on one channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRow {
    pub id: String,
    pub channel: String,
    pub clinic_id: String,
    pub event: String,
    #[serde(skip)]
    pub payload: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// `attempts` when it was last queued again by a person (a dead letter retried
    /// on demand): the dispatcher counts its round of retries from here.
    pub retry_from: u32,
    pub retried_at: Option<DateTime<Utc>>,
    /// Who asked for the retry: an API key's id, `user:<email>`, or `cli`.
    pub retried_by: Option<String>,
}

/// Which dead letters to queue again.
#[derive(Debug, Clone, Default)]
pub struct DeadLetters {
    /// One notification (every channel of it, unless `channel` says which).
    pub id: Option<String>,
    pub channel: Option<String>,
    pub clinic: Option<ClinicId>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub notification_id: String,
    pub channel: String,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// `delivered`, `transient` or `permanent`.
    pub outcome: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: String,
    /// `None` matches every clinic.
    pub clinic_id: Option<String>,
    /// `slot`, `token`, or `None` for both.
    pub kind: Option<String>,
    pub reason: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

#[async_trait]
pub trait DetectionStore: Send + Sync {
    /// Mirrors documents (one transaction). For each: whether it was applied (not
    /// older than what is stored). Also the groups touched, old and new.
    async fn upsert_watched(
        &self,
        source: &str,
        documents: &[WatchedAppointment],
        received_at: DateTime<Utc>,
    ) -> Result<(Vec<bool>, Touched), StoreError>;
    /// Tombstones a document; the slot and token it held, if it existed.
    async fn delete_watched(
        &self,
        source: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Touched>, StoreError>;
    /// Every duplicate of each doctor-day, native and watched rows together: one
    /// set-based query per `DAYS_PER_STATEMENT` days, with the same "occupying" as the
    /// unique indexes. Days without a duplicate are left out.
    async fn duplicates_of(
        &self,
        days: &[Group],
    ) -> Result<BTreeMap<Group, Vec<Duplicate>>, StoreError>;
    /// Every duplicate in the given slots and tokens of each doctor-day (reading only
    /// their rows); days without one are left out.
    async fn duplicates_at(
        &self,
        keys: &[(Group, Keys)],
    ) -> Result<BTreeMap<Group, Vec<Duplicate>>, StoreError>;
    /// The incidents of each doctor-day; days without one are left out.
    async fn incidents_of(
        &self,
        days: &[Group],
    ) -> Result<BTreeMap<Group, Vec<Incident>>, StoreError>;
    /// Every duplicate of one doctor-day.
    async fn duplicates(&self, day: &Group) -> Result<Vec<Duplicate>, StoreError> {
        let mut found = self.duplicates_of(std::slice::from_ref(day)).await?;
        Ok(found.remove(day).unwrap_or_default())
    }
    /// The incidents of one doctor-day.
    async fn group_incidents(&self, day: &Group) -> Result<Vec<Incident>, StoreError> {
        let mut found = self.incidents_of(std::slice::from_ref(day)).await?;
        Ok(found.remove(day).unwrap_or_default())
    }
    /// Saves incident changes and their alerts in one transaction.
    async fn save_incidents(&self, changes: &Changes) -> Result<(), StoreError>;
    /// Groups with a write since `since` (the periodic re-scan).
    async fn changed_groups(&self, since: DateTime<Utc>) -> Result<Vec<Group>, StoreError>;
    async fn incident(&self, id: &str) -> Result<Option<Incident>, StoreError>;
    async fn member_rows(
        &self,
        group: &Group,
        members: &[MemberRef],
    ) -> Result<Vec<MemberRow>, StoreError>;
    /// Takes or renews lease `name` for `holder` until `until`; false when another
    /// holder's lease is still running.
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Gives up lease `name` if `holder` holds it (a clean stop), so the next server
    /// takes over at once instead of waiting for it to run out.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Until when watermark `name` says everything has been checked (`None`: never).
    async fn watermark(&self, name: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Moves watermark `name` to `until` (never backwards).
    async fn set_watermark(&self, name: &str, until: DateTime<Utc>) -> Result<(), StoreError>;

    async fn ungrouped_alerts(&self) -> Result<Vec<OutboxEntry>, StoreError>;
    /// Marks outbox entries as grouped into notification `rows[..].id` and queues the
    /// rows (none when everything was silenced, or no channel wants it), in one
    /// transaction; `incident_ids` were told of at `at` (their reminders count from
    /// then, whether or not a channel carried it).
    async fn queue_notifications(
        &self,
        outbox_ids: &[String],
        notification_id: &str,
        rows: &[NotificationRow],
        incident_ids: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    async fn due_notifications(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<NotificationRow>, StoreError>;
    /// Stores the outcome of one delivery attempt and the notification's new state.
    async fn record_attempt(
        &self,
        updated: &NotificationRow,
        attempt: &Attempt,
    ) -> Result<(), StoreError>;
    /// Newest first (created, then id and channel); `after` continues a list after
    /// that row (created, id, channel).
    async fn notifications(
        &self,
        state: Option<DeliveryState>,
        clinic: Option<&ClinicId>,
        after: Option<&(DateTime<Utc>, String, String)>,
        limit: u32,
    ) -> Result<Vec<NotificationRow>, StoreError>;
    /// Every channel's delivery of notification `id`.
    async fn notification(&self, id: &str) -> Result<Vec<NotificationRow>, StoreError>;
    /// Queues the dead letters `which` selects again, due now, for a new round of
    /// attempts; `by` names who asked. The deliveries queued (none that was not
    /// dead: a delivered notification is never sent again this way).
    async fn retry_dead(
        &self,
        which: &DeadLetters,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<NotificationRow>, StoreError>;
    /// Notifications that carried an incident, with every attempt.
    async fn incident_notifications(
        &self,
        incident_id: &str,
    ) -> Result<Vec<(NotificationRow, Vec<Attempt>)>, StoreError>;
    /// Open incidents not notified since `before`.
    async fn reminders_due(&self, before: DateTime<Utc>) -> Result<Vec<Incident>, StoreError>;

    async fn insert_silence(&self, silence: &Silence) -> Result<(), StoreError>;
    async fn silences(&self, active_at: Option<DateTime<Utc>>) -> Result<Vec<Silence>, StoreError>;
    async fn end_silence(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError>;
}

// ---- decoding -------------------------------------------------------------------

use super::sql::DecodeRow;
use crate::domain::{Duplicate, DuplicateKind};

/// Folds the member rows of `DUPLICATES` into one duplicate per (kind, key).
pub fn fold_duplicates<'r, R: DecodeRow + 'r>(
    rows: impl IntoIterator<Item = &'r R>,
) -> Result<Vec<Duplicate>, StoreError> {
    let mut found: BTreeMap<(DuplicateKind, String), Duplicate> = Default::default();
    for row in rows {
        let kind = row.text("kind")?;
        let kind = DuplicateKind::parse(&kind).ok_or_else(|| rows::corrupt("kind", &kind))?;
        let key = row.text("key")?;
        let entry = found
            .entry((kind, key.clone()))
            .or_insert_with(|| Duplicate {
                kind,
                key,
                members: BTreeSet::new(),
                last_change: None,
                last_commit: None,
            });
        entry.members.insert(MemberRef {
            source: row.text("source")?,
            id: row.text("id")?,
        });
        entry.last_change = entry.last_change.max(row.opt_instant("changed")?);
        entry.last_commit = entry.last_commit.max(row.opt_instant("committed")?);
    }
    Ok(found.into_values().collect())
}

pub const INCIDENT_COLUMNS: &str =
    "id, clinic_id, doctor_id, date, kind, key, state, found_by, members, \
    member_count, regressions, first_seen, last_seen, changed_at, detection_ms, acknowledged_at, \
    acknowledged_by, resolved_at, resolved_by, note, last_notified_at, revision";

/// Doctor-days per statement of the set-based reads (`duplicates_of_days`,
/// `incidents_of_days`): three parameters each, far under both backends' limits.
pub const DAYS_PER_STATEMENT: usize = 200;

/// Slots and tokens per statement of `duplicates_at_keys`: four parameters each.
pub const KEYS_PER_STATEMENT: usize = 250;

/// `name (day_clinic, day_doctor, day_date[, extra]) AS (VALUES ($k, …), …)`: `n`
/// rows of `width` parameters, numbered from `$first`.
fn keys_table(name: &str, extra: Option<&str>, n: usize, first: usize) -> String {
    let width = 3 + usize::from(extra.is_some());
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let at = first + width * i;
            let params: Vec<String> = (at..at + width).map(|p| format!("${p}")).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let extra = extra.map(|e| format!(", {e}")).unwrap_or_default();
    format!(
        "{name} (day_clinic, day_doctor, day_date{extra}) AS (VALUES {})",
        rows.join(", ")
    )
}

/// `keys` (a table of doctor-days, maybe with a slot or token each) joined with
/// `table`'s rows of each, where `also` holds too. On PostgreSQL each key is its own
/// index lookup (a `LATERAL` subquery kept apart by `OFFSET 0`): a plain join is
/// planned from statistics that a burst into a young table outdates (a nested loop
/// over a sequential scan: 740 ms for 200 days of 20,000 rows, 17 ms this way).
/// SQLite has no `LATERAL`, and its planner looks each key up by index anyway.
fn rows_of(backend: Backend, keys: &str, table: &str, also: &str) -> String {
    let of_key =
        format!("clinic_id = day_clinic AND doctor_id = day_doctor AND date = day_date{also}");
    match backend {
        Backend::Sqlite => format!("{keys} JOIN {table} ON {of_key}"),
        Backend::Postgres => format!(
            "{keys} CROSS JOIN LATERAL (SELECT * FROM {table} WHERE {of_key} OFFSET 0) AS {table}"
        ),
    }
}

/// The occupying rows, native and watched, of each row of `keys` (with `also`), as
/// members: their day, source, id, slot, token, last change and commit. Occupying
/// is the same set as the unique indexes': every status but Cancelled and No-show
/// (for watched rows, `occupying` was computed by `Status::occupies` on arrival).
fn occupying_rows(backend: Backend, keys: &str, also: &str) -> String {
    format!(
        "SELECT clinic_id, doctor_id, date, 'native' AS source, id, slot_index, token_number, \
          updated_at AS changed, updated_at AS committed FROM {} \
        UNION ALL \
        SELECT clinic_id, doctor_id, date, source, id, slot_index, token_number, \
          COALESCE(updated_at, created_at, received_at) AS changed, received_at AS committed FROM {}",
        rows_of(
            backend,
            keys,
            "appointments",
            &format!("{also} AND status NOT IN ('Cancelled', 'No-show')")
        ),
        rows_of(
            backend,
            keys,
            "watched_appointments",
            &format!("{also} AND occupying = 1 AND deleted = 0")
        ),
    )
}

/// Member rows of `rows` sharing their doctor-day's slot (`kind` slot) or token.
fn shared(rows: &str, kind: DuplicateKind) -> String {
    let (column, key) = match kind {
        DuplicateKind::Slot => ("slot_index", "CAST(slot_index AS TEXT)"),
        DuplicateKind::Token => ("token_number", "token_number"),
    };
    format!(
        "SELECT clinic_id, doctor_id, date, '{}' AS kind, {key} AS key, source, id, changed, committed \
         FROM (SELECT {rows}.*, COUNT({column}) OVER (PARTITION BY clinic_id, doctor_id, date, {column}) \
         AS sharing FROM {rows}) AS {rows}_counted WHERE sharing > 1",
        kind.as_str()
    )
}

/// Members of every duplicate of `n` doctor-days, one row each, with the day they
/// are in. Break placeholders hold their slot but no token (`COUNT` skips NULLs).
pub fn duplicates_of_days(backend: Backend, n: usize) -> String {
    format!(
        "WITH {}, occ AS ({}) {} UNION ALL {}",
        keys_table("days", None, n, 1),
        occupying_rows(backend, "days", ""),
        shared("occ", DuplicateKind::Slot),
        shared("occ", DuplicateKind::Token),
    )
}

/// Members of every duplicate in `slots` doctor-day slots (bound first, four
/// parameters each) and `tokens` doctor-day tokens: only the rows of those slots
/// and tokens are read, each slot's and each token's counted apart (a slot's rows
/// hold tokens of which they are not all the holders). At least one of the two.
pub fn duplicates_at_keys(backend: Backend, slots: usize, tokens: usize) -> String {
    let mut tables = Vec::new();
    let mut found = Vec::new();
    if slots > 0 {
        tables.push(keys_table("slots", Some("at_slot"), slots, 1));
        tables.push(format!(
            "in_slot AS ({})",
            occupying_rows(backend, "slots", " AND slot_index = at_slot")
        ));
        found.push(shared("in_slot", DuplicateKind::Slot));
    }
    if tokens > 0 {
        tables.push(keys_table(
            "tokens",
            Some("at_token"),
            tokens,
            4 * slots + 1,
        ));
        tables.push(format!(
            "with_token AS ({})",
            occupying_rows(backend, "tokens", " AND token_number = at_token")
        ));
        found.push(shared("with_token", DuplicateKind::Token));
    }
    format!("WITH {} {}", tables.join(", "), found.join(" UNION ALL "))
}

/// The incidents of `n` doctor-days.
pub fn incidents_of_days(backend: Backend, n: usize) -> String {
    format!(
        "WITH {} SELECT {INCIDENT_COLUMNS} FROM {}",
        keys_table("days", None, n, 1),
        rows_of(backend, "days", "incidents", "")
    )
}

/// The slots and tokens of `keys`, split into statements of at most
/// `KEYS_PER_STATEMENT`: each statement's slots, then its tokens.
#[allow(clippy::type_complexity)]
pub fn key_statements(keys: &[(Group, Keys)]) -> Vec<(Vec<(&Group, u32)>, Vec<(&Group, &str)>)> {
    let mut statements = Vec::new();
    let (mut slots, mut tokens) = (Vec::new(), Vec::new());
    for (day, keys) in keys {
        for slot in &keys.slots {
            slots.push((day, *slot));
            if slots.len() + tokens.len() == KEYS_PER_STATEMENT {
                statements.push((std::mem::take(&mut slots), std::mem::take(&mut tokens)));
            }
        }
        for token in &keys.tokens {
            tokens.push((day, token.as_str()));
            if slots.len() + tokens.len() == KEYS_PER_STATEMENT {
                statements.push((std::mem::take(&mut slots), std::mem::take(&mut tokens)));
            }
        }
    }
    if !slots.is_empty() || !tokens.is_empty() {
        statements.push((slots, tokens));
    }
    statements
}

/// Splits the rows of `duplicates_of_days` by doctor-day and folds each day's.
pub fn fold_days<R: DecodeRow>(rows: &[R]) -> Result<BTreeMap<Group, Vec<Duplicate>>, StoreError> {
    let mut by_day: BTreeMap<Group, Vec<&R>> = BTreeMap::new();
    for row in rows {
        by_day.entry(rows::group(row)?).or_default().push(row);
    }
    by_day
        .into_iter()
        .map(|(day, rows)| Ok((day, fold_duplicates(rows)?)))
        .collect()
}

/// Stores a document unless the stored copy orders after it: the `WHERE` is
/// `domain::watched::supersedes` over `domain::EventOrder`s (version, stage,
/// fingerprint), which `audit --file` applies too.
pub const UPSERT_WATCHED: &str = "INSERT INTO watched_appointments (source, id, clinic_id, doctor_id, date, \
    session_index, slot_index, token_number, status, occupying, is_break, booked_via, created_at, updated_at, \
    version, deleted, received_at, document, update_time, stage, fingerprint) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 0, $16, $17, $18, $19, $20) \
    ON CONFLICT (source, id) DO UPDATE SET clinic_id = excluded.clinic_id, doctor_id = excluded.doctor_id, \
    date = excluded.date, session_index = excluded.session_index, slot_index = excluded.slot_index, \
    token_number = excluded.token_number, status = excluded.status, occupying = excluded.occupying, \
    is_break = excluded.is_break, booked_via = excluded.booked_via, created_at = excluded.created_at, \
    updated_at = excluded.updated_at, version = excluded.version, deleted = 0, \
    received_at = excluded.received_at, document = excluded.document, \
    update_time = excluded.update_time, stage = excluded.stage, fingerprint = excluded.fingerprint \
    WHERE COALESCE(excluded.version, -9223372036854775807) > COALESCE(watched_appointments.version, -9223372036854775807) \
    OR (COALESCE(excluded.version, -9223372036854775807) = COALESCE(watched_appointments.version, -9223372036854775807) \
    AND (excluded.stage > watched_appointments.stage \
    OR (excluded.stage = watched_appointments.stage AND excluded.fingerprint >= watched_appointments.fingerprint)))";

/// Inserts a new incident (revision 0), or saves a change over the revision it was
/// made from, bumping it; a change made from an older revision updates nothing (the
/// caller reads again and decides again).
pub const UPSERT_INCIDENT: &str = "INSERT INTO incidents (id, clinic_id, doctor_id, date, kind, key, state, \
    found_by, members, member_count, regressions, first_seen, last_seen, changed_at, detection_ms, \
    acknowledged_at, acknowledged_by, resolved_at, resolved_by, note, last_notified_at, revision) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22) \
    ON CONFLICT (id) DO UPDATE SET state = excluded.state, members = excluded.members, \
    member_count = excluded.member_count, regressions = excluded.regressions, last_seen = excluded.last_seen, \
    changed_at = excluded.changed_at, detection_ms = excluded.detection_ms, \
    acknowledged_at = excluded.acknowledged_at, acknowledged_by = excluded.acknowledged_by, \
    resolved_at = excluded.resolved_at, resolved_by = excluded.resolved_by, note = excluded.note, \
    last_notified_at = excluded.last_notified_at, revision = incidents.revision + 1 \
    WHERE incidents.revision = excluded.revision";

pub const NOTIFICATION_COLUMNS: &str = "id, channel, clinic_id, event, payload, state, attempts, \
    next_attempt_at, last_error, delivered_at, created_at, retry_from, retried_at, retried_by";

/// Queues notification rows in transaction `tx`. A row already there (same id and
/// channel: a notice queued twice) is left as it is, so it is delivered once.
pub async fn insert_notifications<T: Tx>(
    tx: &mut T,
    rows: &[NotificationRow],
) -> Result<(), StoreError> {
    let insert = format!(
        "INSERT INTO notifications ({NOTIFICATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (id, channel) DO NOTHING"
    );
    for n in rows {
        query(insert.as_str())
            .bind(&n.id)
            .bind(&n.channel)
            .bind(&n.clinic_id)
            .bind(&n.event)
            .bind(&n.payload)
            .bind(n.state.as_str())
            .bind(i64::from(n.attempts))
            .bind(n.next_attempt_at)
            .bind(n.last_error.as_deref())
            .bind(n.delivered_at)
            .bind(n.created_at)
            .bind(i64::from(n.retry_from))
            .bind(n.retried_at)
            .bind(n.retried_by.as_deref())
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Stores `$documents` of `$source` in transaction `$tx` (`UPSERT_WATCHED`, one by
/// one, each logged when two versions were put in order): which were applied, and
/// the slots and tokens touched, the stored copies' included. An expression of type
/// `Result<(Vec<bool>, Touched), StoreError>`; the caller commits.
pub async fn upsert_watched_rows<T: Tx>(
    tx: &mut T,
    source: &str,
    documents: &[WatchedAppointment],
    received_at: DateTime<Utc>,
) -> Result<(Vec<bool>, Touched), StoreError> {
    let mut applied = Vec::with_capacity(documents.len());
    let mut touched = Touched::default();
    for w in documents {
        let order = w.order();
        let mut stored = None;
        if let Some(row) = query("SELECT clinic_id, doctor_id, date, slot_index, token_number, version, stage, fingerprint FROM watched_appointments WHERE source = $1 AND id = $2")
            .bind(source)
            .bind(&w.id)
            .fetch_optional(&mut *tx)
            .await?
        {
            rows::touch(&mut touched, &row)?;
            stored = Some(rows::stored_order(&row)?);
        }
        let done = query(UPSERT_WATCHED)
            .bind(source)
            .bind(&w.id)
            .bind(w.clinic_id.as_str())
            .bind(w.doctor_id.as_str())
            .bind(w.date)
            .bind(w.session_index.map(i64::from))
            .bind(i64::from(w.slot_index))
            .bind(w.token_number.as_deref())
            .bind(&w.status)
            .bind(i64::from(w.occupying))
            .bind(i64::from(w.is_break))
            .bind(w.booked_via.as_deref())
            .bind(w.created_at)
            .bind(w.updated_at)
            .bind(w.version())
            .bind(received_at)
            .bind(w.document.to_string())
            .bind(w.update_time)
            .bind(i64::from(order.stage))
            .bind(&order.fingerprint)
            .execute(&mut *tx)
            .await?;
        let kept = done > 0;
        if let Some(stored) = stored.filter(|s| s.version == order.version || !kept) {
            // Out of order, or the same version twice: say which was kept and why.
            let (winner, loser) = if kept {
                (&order, &stored)
            } else {
                (&stored, &order)
            };
            tracing::info!(
                target: "slotguarwatch",
                source,
                id = %w.id,
                kept = if kept { "the event received" } else { "the stored version" },
                decided_by = winner.decided_by(loser),
                received_version = ?order.version,
                stored_version = ?stored.version,
                "two versions of a document put in order"
            );
        }
        applied.push(kept);
        touched.key(
            Group {
                clinic_id: w.clinic_id.clone(),
                doctor_id: w.doctor_id.clone(),
                date: w.date,
            },
            w.slot_index,
            w.token_number.clone(),
        );
    }
    Ok((applied, touched))
}

pub fn notification<R: DecodeRow>(row: &R) -> Result<NotificationRow, StoreError> {
    let state = row.text("state")?;
    Ok(NotificationRow {
        id: row.text("id")?,
        channel: row.text("channel")?,
        clinic_id: row.text("clinic_id")?,
        event: row.text("event")?,
        payload: row.text("payload")?,
        state: DeliveryState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        attempts: u32_of("attempts", row.int("attempts")?)?,
        next_attempt_at: row.instant("next_attempt_at")?,
        last_error: row.opt_text("last_error")?,
        delivered_at: row.opt_instant("delivered_at")?,
        created_at: row.instant("created_at")?,
        retry_from: u32_of("retry_from", row.int("retry_from")?)?,
        retried_at: row.opt_instant("retried_at")?,
        retried_by: row.opt_text("retried_by")?,
    })
}

pub fn attempt<R: DecodeRow>(row: &R) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        notification_id: row.text("notification_id")?,
        channel: row.text("channel")?,
        attempt: u32_of("attempt", row.int("attempt")?)?,
        at: row.instant("at")?,
        outcome: row.text("outcome")?,
        error: row.opt_text("error")?,
    })
}

pub fn silence<R: DecodeRow>(row: &R) -> Result<Silence, StoreError> {
    Ok(Silence {
        id: row.text("id")?,
        clinic_id: row.opt_text("clinic_id")?,
        kind: row.opt_text("kind")?,
        reason: row.text("reason")?,
        created_by: row.text("created_by")?,
        created_at: row.instant("created_at")?,
        ends_at: row.instant("ends_at")?,
    })
}

#[async_trait::async_trait]
impl<B: SqlBackend> DetectionStore for B {
    async fn upsert_watched(
        &self,
        source: &str,
        documents: &[WatchedAppointment],
        received_at: DateTime<Utc>,
    ) -> Result<(Vec<bool>, Touched), StoreError> {
        self.upsert_watched_committed(source, documents, received_at)
            .await
    }

    async fn delete_watched(
        &self,
        source: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Touched>, StoreError> {
        let mut tx = self.begin_write().await?;
        let Some(row) = query("SELECT clinic_id, doctor_id, date, slot_index, token_number FROM watched_appointments WHERE source = $1 AND id = $2")
            .bind(source)
            .bind(id)
            .fetch_optional(&mut tx)
            .await?
        else {
            return Ok(None);
        };
        let mut touched = Touched::default();
        rows::touch(&mut touched, &row)?;
        query(
            "UPDATE watched_appointments SET deleted = 1, occupying = 0, received_at = $3, \
             version = CASE WHEN version IS NULL OR version < $4 THEN $4 ELSE version END \
             WHERE source = $1 AND id = $2",
        )
        .bind(source)
        .bind(id)
        .bind(at)
        .bind(at.timestamp_micros())
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(Some(touched))
    }

    async fn duplicates_of(
        &self,
        days: &[Group],
    ) -> Result<BTreeMap<Group, Vec<Duplicate>>, StoreError> {
        let mut found = BTreeMap::new();
        for chunk in days.chunks(DAYS_PER_STATEMENT) {
            let sql = duplicates_of_days(B::BACKEND, chunk.len());
            let mut query = query(&sql);
            for day in chunk {
                query = query
                    .bind(day.clinic_id.as_str())
                    .bind(day.doctor_id.as_str())
                    .bind(day.date);
            }
            found.append(&mut fold_days(&query.fetch_all(self.reader()).await?)?);
        }
        Ok(found)
    }

    async fn duplicates_at(
        &self,
        keys: &[(Group, Keys)],
    ) -> Result<BTreeMap<Group, Vec<Duplicate>>, StoreError> {
        let mut found: BTreeMap<_, Vec<_>> = BTreeMap::new();
        for (slots, tokens) in key_statements(keys) {
            let sql = duplicates_at_keys(B::BACKEND, slots.len(), tokens.len());
            let mut query = query(&sql);
            for (day, slot) in slots {
                query = query
                    .bind(day.clinic_id.as_str())
                    .bind(day.doctor_id.as_str())
                    .bind(day.date)
                    .bind(i64::from(slot));
            }
            for (day, token) in tokens {
                query = query
                    .bind(day.clinic_id.as_str())
                    .bind(day.doctor_id.as_str())
                    .bind(day.date)
                    .bind(token);
            }
            for (day, duplicates) in fold_days(&query.fetch_all(self.reader()).await?)? {
                found.entry(day).or_default().extend(duplicates);
            }
        }
        Ok(found)
    }

    async fn incidents_of(
        &self,
        days: &[Group],
    ) -> Result<BTreeMap<Group, Vec<Incident>>, StoreError> {
        let mut found: BTreeMap<_, Vec<_>> = BTreeMap::new();
        for chunk in days.chunks(DAYS_PER_STATEMENT) {
            let sql = incidents_of_days(B::BACKEND, chunk.len());
            let mut query = query(&sql);
            for day in chunk {
                query = query
                    .bind(day.clinic_id.as_str())
                    .bind(day.doctor_id.as_str())
                    .bind(day.date);
            }
            for row in query.fetch_all(self.reader()).await? {
                let incident = rows::incident(&row)?;
                found
                    .entry(incident.group.clone())
                    .or_default()
                    .push(incident);
            }
        }
        Ok(found)
    }

    async fn save_incidents(&self, changes: &Changes) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for i in &changes.incidents {
            let saved = query(UPSERT_INCIDENT)
                .bind(&i.id)
                .bind(i.group.clinic_id.as_str())
                .bind(i.group.doctor_id.as_str())
                .bind(i.group.date)
                .bind(i.kind.as_str())
                .bind(&i.key)
                .bind(i.state.as_str())
                .bind(i.found_by.as_str())
                .bind(
                    serde_json::to_string(&i.members)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                )
                .bind(i.members.len() as i64)
                .bind(i64::from(i.regressions))
                .bind(i.first_seen)
                .bind(i.last_seen)
                .bind(i.changed_at)
                .bind(i.detection_ms)
                .bind(i.acknowledged_at)
                .bind(i.acknowledged_by.as_deref())
                .bind(i.resolved_at)
                .bind(i.resolved_by.as_deref())
                .bind(i.note.as_deref())
                .bind(i.last_notified_at)
                .bind(i.revision)
                .execute(&mut tx)
                .await
                .map_err(|e| match super::records::unique_violation(&e) {
                    // Another checker (the audit, another server's detector) opened the
                    // same incident first: decide again from what is stored now.
                    Some(_) => StoreError::Changed("the incident was opened meanwhile"),
                    None => StoreError::Database(e),
                })?;
            if saved == 0 {
                // Someone saved a newer revision since this change was decided; the
                // transaction rolls back as it is dropped.
                return Err(StoreError::Changed("the incident changed meanwhile"));
            }
        }
        for o in &changes.outbox {
            query("INSERT INTO alert_outbox (id, clinic_id, incident_id, event, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&o.id)
                .bind(o.clinic_id.as_str())
                .bind(&o.incident_id)
                .bind(serde_json::to_value(o.event).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
                .bind(o.created_at)
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn changed_groups(&self, since: DateTime<Utc>) -> Result<Vec<Group>, StoreError> {
        query(
            "SELECT clinic_id, doctor_id, date FROM appointments WHERE updated_at >= $1 \
             UNION SELECT clinic_id, doctor_id, date FROM watched_appointments WHERE received_at >= $1",
        )
        .bind(since)
        .fetch_all(self.reader())
        .await?
        .iter()
        .map(rows::group)
        .collect()
    }

    async fn incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        query(format!(
            "SELECT {} FROM incidents WHERE id = $1",
            INCIDENT_COLUMNS
        ))
        .bind(id)
        .fetch_optional(self.reader())
        .await?
        .map(|r| rows::incident(&r))
        .transpose()
    }

    async fn member_rows(
        &self,
        group: &Group,
        members: &[MemberRef],
    ) -> Result<Vec<MemberRow>, StoreError> {
        let mut rows = Vec::with_capacity(members.len());
        for m in members {
            let native = m.source == crate::domain::incident::NATIVE;
            let row = if native {
                query("SELECT slot_index, token_number, status, created_at, time, booked_via, patient_name, patient_phone \
                             FROM appointments WHERE id = $1 AND clinic_id = $2")
                    .bind(&m.id)
                    .bind(group.clinic_id.as_str())
                    .fetch_optional(self.reader())
                    .await?
            } else {
                query(
                    "SELECT slot_index, token_number, status, created_at, booked_via, document \
                             FROM watched_appointments WHERE source = $1 AND id = $2",
                )
                .bind(&m.source)
                .bind(&m.id)
                .fetch_optional(self.reader())
                .await?
            };
            if let Some(row) = row {
                let member = MemberRow {
                    source: m.source.clone(),
                    id: m.id.clone(),
                    slot_index: rows::u32_of("slot_index", row.int("slot_index")?)?,
                    token_number: row.opt_text("token_number")?,
                    status: row.text("status")?,
                    created_at: row.opt_instant("created_at")?,
                    time: None,
                    booked_via: row.opt_text("booked_via")?,
                    patient_name: None,
                    patient_phone: None,
                };
                rows.push(if native {
                    MemberRow {
                        time: row.opt_text("time")?,
                        patient_name: row.opt_text("patient_name")?,
                        patient_phone: row.opt_text("patient_phone")?,
                        ..member
                    }
                } else {
                    let document: serde_json::Value = serde_json::from_str(&row.text("document")?)
                        .map_err(|e| rows::corrupt("document", e))?;
                    member.with_document(&document)
                });
            }
        }
        Ok(rows)
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(self.writer())
        .await?;
        Ok(done > 0)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    async fn watermark(&self, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        query("SELECT checked_until FROM watermarks WHERE name = $1")
            .bind(name)
            .fetch_optional(self.writer())
            .await?
            .map(|r| r.instant("checked_until"))
            .transpose()
    }

    async fn set_watermark(&self, name: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        query(
            "INSERT INTO watermarks (name, checked_until) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET checked_until = excluded.checked_until \
             WHERE excluded.checked_until > watermarks.checked_until",
        )
        .bind(name)
        .bind(until)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn ungrouped_alerts(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = query("SELECT id, clinic_id, incident_id, event, created_at FROM alert_outbox WHERE notification_id IS NULL ORDER BY created_at, id LIMIT 1000")
            .fetch_all(self.writer())
            .await?;
        rows.iter()
            .map(|r| {
                let event = r.text("event")?;
                Ok(OutboxEntry {
                    id: r.text("id")?,
                    clinic_id: ClinicId::parse("clinic_id", &r.text("clinic_id")?)
                        .map_err(|e| rows::corrupt("clinic id", e))?,
                    incident_id: r.text("incident_id")?,
                    event: serde_json::from_value(serde_json::Value::String(event.clone()))
                        .map_err(|_| rows::corrupt("event", &event))?,
                    created_at: r.instant("created_at")?,
                })
            })
            .collect()
    }

    async fn queue_notifications(
        &self,
        outbox_ids: &[String],
        notification_id: &str,
        rows: &[NotificationRow],
        incident_ids: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for id in outbox_ids {
            query("UPDATE alert_outbox SET notification_id = $1 WHERE id = $2")
                .bind(notification_id)
                .bind(id)
                .execute(&mut tx)
                .await?;
        }
        insert_notifications(&mut tx, rows).await?;
        // Also with no delivery: a server with no channel (its log is the channel)
        // reminds once per repeat interval, not at every pass.
        for id in incident_ids {
            query(
                "UPDATE incidents SET last_notified_at = $1, revision = revision + 1 WHERE id = $2",
            )
            .bind(at)
            .bind(id)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn due_notifications(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        query(format!(
            "SELECT {} FROM notifications WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2",
            NOTIFICATION_COLUMNS
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(self.writer())
        .await?
        .iter()
        .map(notification)
        .collect()
    }

    async fn record_attempt(&self, n: &NotificationRow, a: &Attempt) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        query(
            "UPDATE notifications SET state = $3, attempts = $4, next_attempt_at = $5, last_error = $6, delivered_at = $7 \
             WHERE id = $1 AND channel = $2",
        )
        .bind(&n.id)
        .bind(&n.channel)
        .bind(n.state.as_str())
        .bind(i64::from(n.attempts))
        .bind(n.next_attempt_at)
        .bind(n.last_error.as_deref())
        .bind(n.delivered_at)
        .execute(&mut tx)
        .await?;
        query("INSERT INTO notification_attempts (notification_id, channel, attempt, at, outcome, error) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&a.notification_id)
            .bind(&a.channel)
            .bind(i64::from(a.attempt))
            .bind(a.at)
            .bind(&a.outcome)
            .bind(a.error.as_deref())
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn notifications(
        &self,
        state: Option<DeliveryState>,
        clinic: Option<&ClinicId>,
        after: Option<&(DateTime<Utc>, String, String)>,
        limit: u32,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        query(format!(
            "SELECT {} FROM notifications WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR clinic_id = $2) \
             AND ($4 IS NULL OR created_at < $4 OR (created_at = $4 AND (id > $5 OR (id = $5 AND channel > $6)))) \
             ORDER BY created_at DESC, id, channel LIMIT $3",
            NOTIFICATION_COLUMNS
        ))
        .bind(state.map(DeliveryState::as_str))
        .bind(clinic.map(ClinicId::as_str))
        .bind(i64::from(limit))
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1.as_str()).unwrap_or(""))
        .bind(after.map(|a| a.2.as_str()).unwrap_or(""))
        .fetch_all(self.reader())
        .await?
        .iter()
        .map(notification)
        .collect()
    }

    async fn notification(&self, id: &str) -> Result<Vec<NotificationRow>, StoreError> {
        query(format!(
            "SELECT {} FROM notifications WHERE id = $1 ORDER BY channel",
            NOTIFICATION_COLUMNS
        ))
        .bind(id)
        .fetch_all(self.writer())
        .await?
        .iter()
        .map(notification)
        .collect()
    }

    async fn retry_dead(
        &self,
        which: &DeadLetters,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        // Only dead rows change, in one statement: a retry racing the dispatcher, or
        // a second click, finds nothing dead and queues nothing twice.
        query(format!(
            "UPDATE notifications SET state = 'pending', next_attempt_at = $1, retry_from = attempts, \
             retried_at = $1, retried_by = $2 \
             WHERE state = 'dead' AND ($3 IS NULL OR id = $3) AND ($4 IS NULL OR channel = $4) \
             AND ($5 IS NULL OR clinic_id = $5) RETURNING {}",
            NOTIFICATION_COLUMNS
        ))
        .bind(now)
        .bind(by)
        .bind(which.id.as_deref())
        .bind(which.channel.as_deref())
        .bind(which.clinic.as_ref().map(ClinicId::as_str))
        .fetch_all(self.writer())
        .await?
        .iter()
        .map(notification)
        .collect()
    }

    async fn incident_notifications(
        &self,
        incident_id: &str,
    ) -> Result<Vec<(NotificationRow, Vec<Attempt>)>, StoreError> {
        let rows = query(format!(
            "SELECT {} FROM notifications WHERE id IN \
             (SELECT notification_id FROM alert_outbox WHERE incident_id = $1) ORDER BY created_at, channel",
            NOTIFICATION_COLUMNS
        ))
        .bind(incident_id)
        .fetch_all(self.reader())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let n = notification(row)?;
            let attempts = query("SELECT * FROM notification_attempts WHERE notification_id = $1 AND channel = $2 ORDER BY attempt")
                .bind(&n.id)
                .bind(&n.channel)
                .fetch_all(self.reader())
                .await?
                .iter()
                .map(attempt)
                .collect::<Result<Vec<_>, _>>()?;
            out.push((n, attempts));
        }
        Ok(out)
    }

    async fn reminders_due(&self, before: DateTime<Utc>) -> Result<Vec<Incident>, StoreError> {
        query(format!(
            "SELECT {} FROM incidents WHERE state = 'open' AND last_notified_at IS NOT NULL AND last_notified_at < $1 \
             AND id NOT IN (SELECT incident_id FROM alert_outbox WHERE notification_id IS NULL)",
            INCIDENT_COLUMNS
        ))
        .bind(before)
        .fetch_all(self.writer())
        .await?
        .iter()
        .map(rows::incident)
        .collect()
    }

    async fn insert_silence(&self, s: &Silence) -> Result<(), StoreError> {
        query("INSERT INTO silences (id, clinic_id, kind, reason, created_by, created_at, ends_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&s.id)
            .bind(s.clinic_id.as_deref())
            .bind(s.kind.as_deref())
            .bind(&s.reason)
            .bind(&s.created_by)
            .bind(s.created_at)
            .bind(s.ends_at)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    async fn silences(&self, active_at: Option<DateTime<Utc>>) -> Result<Vec<Silence>, StoreError> {
        query("SELECT * FROM silences WHERE ($1 IS NULL OR ends_at > $1) ORDER BY created_at, id")
            .bind(active_at)
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(silence)
            .collect()
    }

    async fn end_silence(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = query("UPDATE silences SET ends_at = $1 WHERE id = $2 AND ends_at > $1")
            .bind(now)
            .bind(id)
            .execute(self.writer())
            .await?;
        Ok(done > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::incident::tests::day;

    #[test]
    fn keys_are_split_into_statements_of_at_most_their_share_each_kept_once() {
        let keys: Vec<(Group, Keys)> = (0..300)
            .map(|d| {
                let keys = Keys {
                    slots: BTreeSet::from([1, 2]),
                    tokens: BTreeSet::from([format!("T-{d}")]),
                };
                (day(&format!("dr-{d}")), keys)
            })
            .collect();
        let statements = key_statements(&keys);
        assert_eq!(statements.len(), 900_usize.div_ceil(KEYS_PER_STATEMENT));
        let mut slots = BTreeSet::new();
        let mut tokens = BTreeSet::new();
        for (s, t) in &statements {
            assert!(s.len() + t.len() <= KEYS_PER_STATEMENT);
            assert!(!s.is_empty() || !t.is_empty());
            for (day, slot) in s {
                assert!(slots.insert(((*day).clone(), *slot)), "a slot twice");
            }
            for (day, token) in t {
                assert!(
                    tokens.insert(((*day).clone(), token.to_string())),
                    "a token twice"
                );
            }
        }
        assert_eq!((slots.len(), tokens.len()), (600, 300));
    }

    #[test]
    fn the_key_statement_numbers_its_tokens_after_its_slots() {
        let sql = duplicates_at_keys(Backend::Sqlite, 2, 1);
        assert!(sql.contains("slots (day_clinic, day_doctor, day_date, at_slot) AS (VALUES ($1, $2, $3, $4), ($5, $6, $7, $8))"), "{sql}");
        assert!(sql.contains("tokens (day_clinic, day_doctor, day_date, at_token) AS (VALUES ($9, $10, $11, $12))"), "{sql}");
        let only_tokens = duplicates_at_keys(Backend::Postgres, 0, 1);
        assert!(!only_tokens.contains("slots"), "{only_tokens}");
        assert!(
            only_tokens.contains("VALUES ($1, $2, $3, $4)"),
            "{only_tokens}"
        );
        assert!(only_tokens.contains("LATERAL"), "{only_tokens}");
    }
}
