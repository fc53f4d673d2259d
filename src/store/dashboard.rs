//! What the dashboard keeps and reads: staff accounts and their sessions, and the
//! views its pages need (a page of incidents, counts, a doctor-day's watched rows,
//! stored weekly reports): the trait, its SQL, and its one implementation for every
//! [`SqlBackend`].

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use super::rows::{self, corrupt, u32_of};
use super::sql::{query, DecodeRow, SqlBackend, Tx, Value};
use super::StoreError;
use crate::domain::{
    ClinicId, Doctor, DoctorId, DuplicateKind, Email, Entity, FieldError, FoundBy, Group, Incident,
    IncidentState, StaffUser,
};

/// A logged-in browser, as stored: the hash of its cookie's secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffSession {
    pub id_hash: String,
    pub user_id: String,
    /// Sent back with every form; a request without it changes nothing.
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// The absolute end, whatever the activity.
    pub expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// Which incidents a list shows: filters from the page's query string, the clinics
/// the person may see, and the cursor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IncidentQuery {
    /// The clinics the person sees; `None` for every clinic.
    pub scope: Option<Vec<ClinicId>>,
    pub clinic: Option<ClinicId>,
    pub doctor: Option<DoctorId>,
    pub state: Option<IncidentState>,
    pub kind: Option<DuplicateKind>,
    pub found_by: Option<FoundBy>,
    /// The appointments' local dates, both ends included.
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// Only incidents whose members, state or notes changed at or after this instant.
    pub changed_since: Option<DateTime<Utc>>,
    /// Only incidents first seen at or before this instant.
    pub first_seen_until: Option<DateTime<Utc>>,
    /// Newest first: only incidents first seen before this one (first seen, id).
    pub before: Option<(DateTime<Utc>, String)>,
    pub limit: u32,
}

impl IncidentQuery {
    /// The cursor that continues a list after `last`: its first-seen instant, to the
    /// nanosecond as SQLite keeps it, and its id: `2026-12-01T04:30:00.123456789Z~id`.
    pub fn cursor_after(last: &Incident) -> String {
        format!(
            "{}~{}",
            last.first_seen
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            last.id
        )
    }

    /// Reads a cursor [`Self::cursor_after`] made.
    pub fn parse_cursor(field: &str, raw: &str) -> Result<(DateTime<Utc>, String), FieldError> {
        let bad = || {
            FieldError::new(
                field,
                "is not a cursor this list made; start from the first page",
            )
        };
        let (at, id) = raw.split_once('~').ok_or_else(bad)?;
        let at = DateTime::parse_from_rfc3339(at).map_err(|_| bad())?;
        if id.is_empty() || id.len() > 64 {
            return Err(bad());
        }
        Ok((at.with_timezone(&Utc), id.to_owned()))
    }
}

/// Incidents of one clinic in one state, however old.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentTally {
    pub clinic_id: ClinicId,
    pub state: IncidentState,
    pub count: u64,
}

/// What happened to an incident that the alert outbox recorded: opened, grew,
/// regressed, resolved, reminded; with when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub event: String,
    pub at: DateTime<Utc>,
}

/// A watched document of a doctor-day, for the day board.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchedRow {
    pub source: String,
    pub id: String,
    pub slot_index: u32,
    pub token_number: Option<String>,
    pub status: String,
    pub is_break: bool,
    pub booked_via: Option<String>,
    pub document: serde_json::Value,
}

/// A stored weekly report, without its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReport {
    /// `*` for the all-clinics report.
    pub clinic_id: String,
    pub week: String,
    pub generated_at: DateTime<Utc>,
}

#[async_trait]
pub trait DashboardStore: Send + Sync {
    /// `AlreadyExists("user")` when the email is taken.
    async fn insert_staff_user(&self, user: &StaffUser) -> Result<(), StoreError>;
    async fn staff_user(&self, id: &str) -> Result<Option<StaffUser>, StoreError>;
    async fn staff_user_by_email(&self, email: &Email) -> Result<Option<StaffUser>, StoreError>;
    async fn staff_users(&self) -> Result<Vec<StaffUser>, StoreError>;
    /// Saves role, clinics, password hash and disabled time; when the password changed
    /// or the account was disabled, every session of the user ends in the same
    /// transaction. `NotFound("user")` for an unknown id.
    async fn update_staff_user(
        &self,
        user: &StaffUser,
        end_sessions_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError>;

    async fn insert_session(&self, session: &StaffSession) -> Result<(), StoreError>;
    /// A session that has not ended, with its user.
    async fn session(&self, id_hash: &str)
        -> Result<Option<(StaffSession, StaffUser)>, StoreError>;
    async fn touch_session(&self, id_hash: &str, at: DateTime<Utc>) -> Result<(), StoreError>;
    async fn end_session(&self, id_hash: &str, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// One page of incidents, newest first seen first.
    async fn incident_page(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError>;
    /// How many incidents the query's filters match, every page together.
    async fn incident_count(&self, query: &IncidentQuery) -> Result<u64, StoreError>;
    async fn incident_tallies(
        &self,
        scope: Option<&[ClinicId]>,
    ) -> Result<Vec<IncidentTally>, StoreError>;
    async fn outbox_events(&self, incident_id: &str) -> Result<Vec<OutboxEvent>, StoreError>;
    async fn doctors_of(&self, clinic: &ClinicId) -> Result<Vec<Doctor>, StoreError>;
    /// The names of the registered doctors of these clinics.
    async fn doctor_names(
        &self,
        clinics: &[ClinicId],
    ) -> Result<Vec<(ClinicId, DoctorId, String)>, StoreError>;
    /// Clinics that appear in incidents or watched documents, registered or not.
    async fn seen_clinics(&self) -> Result<Vec<ClinicId>, StoreError>;
    /// Doctors of a clinic that appear in incidents or watched documents.
    async fn seen_doctors(&self, clinic: &ClinicId) -> Result<Vec<DoctorId>, StoreError>;
    /// The doctor-day a watched document is in, if it exists (deleted or not).
    async fn watched_group(&self, source: &str, id: &str) -> Result<Option<Group>, StoreError>;
    /// Occupying watched documents of a doctor-day, by slot.
    async fn watched_occupying(&self, group: &Group) -> Result<Vec<WatchedRow>, StoreError>;
    async fn stored_reports(&self, limit: u32) -> Result<Vec<StoredReport>, StoreError>;
    /// Incidents about appointments of local dates `from..=to`, of one clinic or all
    /// (the incidents `stats_rows` reads, alone).
    async fn incidents_dated(
        &self,
        clinic: Option<&ClinicId>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<Incident>, StoreError>;
    /// Incidents opened, changed, acknowledged or resolved at or after `since`, by any
    /// process: (id, clinic, the newest of those instants).
    async fn incidents_touched_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, ClinicId, DateTime<Utc>)>, StoreError>;
    /// When the detector lease expires (`web::live::last_detector_pass` turns it into
    /// the time of the last detector pass).
    async fn detector_lease_expiry(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
}

// ---- decoding and SQL ---------------------------------------------------------

/// Distinct clinics of the incidents and the watched mirror, read as a skip scan
/// (one index probe per clinic, not one row per document: the mirror may hold
/// millions), on both backends.
pub const SEEN_CLINICS: &str = "WITH RECURSIVE \
    w(id) AS (SELECT MIN(clinic_id) FROM watched_appointments \
      UNION ALL SELECT (SELECT MIN(clinic_id) FROM watched_appointments WHERE clinic_id > w.id) \
      FROM w WHERE w.id IS NOT NULL), \
    i(id) AS (SELECT MIN(clinic_id) FROM incidents \
      UNION ALL SELECT (SELECT MIN(clinic_id) FROM incidents WHERE clinic_id > i.id) \
      FROM i WHERE i.id IS NOT NULL) \
    SELECT id AS clinic_id FROM w WHERE id IS NOT NULL \
    UNION SELECT id AS clinic_id FROM i WHERE id IS NOT NULL ORDER BY clinic_id";

/// Distinct doctors of one clinic in the watched mirror and the incidents, the same way.
pub const SEEN_DOCTORS: &str = "WITH RECURSIVE \
    w(id) AS (SELECT MIN(doctor_id) FROM watched_appointments WHERE clinic_id = $1 \
      UNION ALL SELECT (SELECT MIN(doctor_id) FROM watched_appointments \
        WHERE clinic_id = $1 AND doctor_id > w.id) FROM w WHERE w.id IS NOT NULL) \
    SELECT id AS doctor_id FROM w WHERE id IS NOT NULL \
    UNION SELECT doctor_id FROM incidents WHERE clinic_id = $1 ORDER BY doctor_id";

pub const STAFF_USER_COLUMNS: &str =
    "id, email, role, clinics, password_hash, created_at, disabled_at";

/// `clinic_id IN ($n, …)` for a scope (nothing for every clinic; a clause that
/// matches nothing for an empty list).
fn scope_clause(scope: Option<&[ClinicId]>, binds: &mut Vec<Value<'static>>) -> Option<String> {
    let clinics = scope?;
    if clinics.is_empty() {
        return Some("1 = 0".into());
    }
    let placeholders: Vec<String> = clinics
        .iter()
        .map(|c| {
            binds.push(Value::from(c.as_str().to_owned()));
            format!("${}", binds.len())
        })
        .collect();
    Some(format!("clinic_id IN ({})", placeholders.join(", ")))
}

/// The WHERE clause of an incident query (without the cursor) and its values.
pub fn incident_where(q: &IncidentQuery, with_cursor: bool) -> (String, Vec<Value<'static>>) {
    let mut binds = Vec::new();
    let mut clauses: Vec<String> = scope_clause(q.scope.as_deref(), &mut binds)
        .into_iter()
        .collect();
    let mut add =
        |column: &str, op: &str, value: Value<'static>, binds: &mut Vec<Value<'static>>| {
            binds.push(value);
            clauses.push(format!("{column} {op} ${}", binds.len()));
        };
    if let Some(c) = &q.clinic {
        add(
            "clinic_id",
            "=",
            Value::from(c.as_str().to_owned()),
            &mut binds,
        );
    }
    if let Some(d) = &q.doctor {
        add(
            "doctor_id",
            "=",
            Value::from(d.as_str().to_owned()),
            &mut binds,
        );
    }
    if let Some(s) = q.state {
        add("state", "=", Value::from(s.as_str().to_owned()), &mut binds);
    }
    if let Some(k) = q.kind {
        add("kind", "=", Value::from(k.as_str().to_owned()), &mut binds);
    }
    if let Some(f) = q.found_by {
        add(
            "found_by",
            "=",
            Value::from(f.as_str().to_owned()),
            &mut binds,
        );
    }
    if let Some(from) = q.from {
        add("date", ">=", Value::from(from), &mut binds);
    }
    if let Some(to) = q.to {
        add("date", "<=", Value::from(to), &mut binds);
    }
    if let Some(since) = q.changed_since {
        add("changed_at", ">=", Value::from(since), &mut binds);
    }
    if let Some(until) = q.first_seen_until {
        add("first_seen", "<=", Value::from(until), &mut binds);
    }
    if let (true, Some((seen, id))) = (with_cursor, &q.before) {
        binds.push(Value::from(*seen));
        binds.push(Value::from(id.clone()));
        let (a, b) = (binds.len() - 1, binds.len());
        clauses.push(format!(
            "(first_seen < ${a} OR (first_seen = ${a} AND id < ${b}))"
        ));
    }
    let clause = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    (clause, binds)
}

pub fn doctor_names_sql(clinics: &[ClinicId]) -> (String, Vec<Value<'static>>) {
    let mut binds = Vec::new();
    let clause = scope_clause(Some(clinics), &mut binds).unwrap_or_default();
    (
        format!("SELECT clinic_id, id, name FROM doctors WHERE {clause}"),
        binds,
    )
}

pub fn tallies_sql(scope: Option<&[ClinicId]>) -> (String, Vec<Value<'static>>) {
    let mut binds = Vec::new();
    let clause = scope_clause(scope, &mut binds)
        .map(|c| format!(" WHERE {c}"))
        .unwrap_or_default();
    (
        format!(
            "SELECT clinic_id, state, COUNT(*) AS n FROM incidents{clause} GROUP BY clinic_id, state"
        ),
        binds,
    )
}

pub fn staff_session<R: DecodeRow>(row: &R) -> Result<StaffSession, StoreError> {
    Ok(StaffSession {
        id_hash: row.text("id_hash")?,
        user_id: row.text("user_id")?,
        csrf_token: row.text("csrf_token")?,
        created_at: row.instant("created_at")?,
        last_seen_at: row.instant("last_seen_at")?,
        expires_at: row.instant("expires_at")?,
        ended_at: row.opt_instant("ended_at")?,
    })
}

pub fn watched_row<R: DecodeRow>(row: &R) -> Result<WatchedRow, StoreError> {
    Ok(WatchedRow {
        source: row.text("source")?,
        id: row.text("id")?,
        slot_index: u32_of("slot_index", row.int("slot_index")?)?,
        token_number: row.opt_text("token_number")?,
        status: row.text("status")?,
        is_break: row.int("is_break")? != 0,
        booked_via: row.opt_text("booked_via")?,
        document: serde_json::from_str(&row.text("document")?)
            .map_err(|e| corrupt("document", e))?,
    })
}

pub fn incident_tally<R: DecodeRow>(row: &R) -> Result<IncidentTally, StoreError> {
    let state = row.text("state")?;
    Ok(IncidentTally {
        clinic_id: ClinicId::parse("clinic_id", &row.text("clinic_id")?)
            .map_err(|e| corrupt("clinic id", e))?,
        state: IncidentState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        count: u64::try_from(row.int("n")?).unwrap_or(0),
    })
}

#[async_trait::async_trait]
impl<B: SqlBackend> DashboardStore for B {
    async fn insert_staff_user(&self, u: &StaffUser) -> Result<(), StoreError> {
        query(format!(
            "INSERT INTO staff_users ({}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            STAFF_USER_COLUMNS
        ))
        .bind(&u.id)
        .bind(u.email.as_str())
        .bind(u.role.as_str())
        .bind(super::records::clinics_json(&u.clinics))
        .bind(&u.password_hash)
        .bind(u.created_at)
        .bind(u.disabled_at)
        .execute(self.writer())
        .await
        .map_err(|e| match e.as_database_error().map(|d| d.kind()) {
            Some(sqlx::error::ErrorKind::UniqueViolation) => {
                StoreError::AlreadyExists(Entity::User)
            }
            _ => StoreError::Database(e),
        })?;
        Ok(())
    }

    async fn staff_user(&self, id: &str) -> Result<Option<StaffUser>, StoreError> {
        query(format!(
            "SELECT {} FROM staff_users WHERE id = $1",
            STAFF_USER_COLUMNS
        ))
        .bind(id)
        .fetch_optional(self.reader())
        .await?
        .map(|r| rows::staff_user(&r))
        .transpose()
    }

    async fn staff_user_by_email(&self, email: &Email) -> Result<Option<StaffUser>, StoreError> {
        query(format!(
            "SELECT {} FROM staff_users WHERE email = $1",
            STAFF_USER_COLUMNS
        ))
        .bind(email.as_str())
        .fetch_optional(self.reader())
        .await?
        .map(|r| rows::staff_user(&r))
        .transpose()
    }

    async fn staff_users(&self) -> Result<Vec<StaffUser>, StoreError> {
        query(format!(
            "SELECT {} FROM staff_users ORDER BY email",
            STAFF_USER_COLUMNS
        ))
        .fetch_all(self.reader())
        .await?
        .iter()
        .map(rows::staff_user)
        .collect()
    }

    async fn update_staff_user(
        &self,
        u: &StaffUser,
        end_sessions_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let done = query(
            "UPDATE staff_users SET role = $2, clinics = $3, password_hash = $4, disabled_at = $5 WHERE id = $1",
        )
        .bind(&u.id)
        .bind(u.role.as_str())
        .bind(super::records::clinics_json(&u.clinics))
        .bind(&u.password_hash)
        .bind(u.disabled_at)
        .execute(&mut tx)
        .await?;
        super::records::found(done, Entity::User)?;
        if let Some(at) = end_sessions_at {
            query(
                "UPDATE staff_sessions SET ended_at = $2 WHERE user_id = $1 AND ended_at IS NULL",
            )
            .bind(&u.id)
            .bind(at)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert_session(&self, s: &StaffSession) -> Result<(), StoreError> {
        query(
            "INSERT INTO staff_sessions (id_hash, user_id, csrf_token, created_at, last_seen_at, expires_at, ended_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&s.id_hash)
        .bind(&s.user_id)
        .bind(&s.csrf_token)
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.expires_at)
        .bind(s.ended_at)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn session(
        &self,
        id_hash: &str,
    ) -> Result<Option<(StaffSession, StaffUser)>, StoreError> {
        let Some(row) =
            query("SELECT * FROM staff_sessions WHERE id_hash = $1 AND ended_at IS NULL")
                .bind(id_hash)
                .fetch_optional(self.reader())
                .await?
        else {
            return Ok(None);
        };
        let session = staff_session(&row)?;
        let user = query(format!(
            "SELECT {} FROM staff_users WHERE id = $1",
            STAFF_USER_COLUMNS
        ))
        .bind(&session.user_id)
        .fetch_optional(self.reader())
        .await?
        .map(|r| rows::staff_user(&r))
        .transpose()?;
        Ok(user.map(|u| (session, u)))
    }

    async fn touch_session(&self, id_hash: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        query(
            "UPDATE staff_sessions SET last_seen_at = $2 WHERE id_hash = $1 AND ended_at IS NULL",
        )
        .bind(id_hash)
        .bind(at)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn end_session(&self, id_hash: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        query("UPDATE staff_sessions SET ended_at = $2 WHERE id_hash = $1 AND ended_at IS NULL")
            .bind(id_hash)
            .bind(at)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    async fn incident_page(&self, q: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        let (clause, mut binds) = incident_where(q, true);
        binds.push(Value::from(i64::from(q.limit)));
        let sql = format!(
            "SELECT {} FROM incidents{clause} ORDER BY first_seen DESC, id DESC LIMIT ${}",
            crate::store::detection::INCIDENT_COLUMNS,
            binds.len()
        );
        query(&sql)
            .bind_all(binds)
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(rows::incident)
            .collect()
    }

    async fn incident_count(&self, q: &IncidentQuery) -> Result<u64, StoreError> {
        let (clause, binds) = incident_where(q, false);
        let sql = format!("SELECT COUNT(*) AS n FROM incidents{clause}");
        let row = query(&sql).bind_all(binds).fetch_one(self.reader()).await?;
        Ok(u64::try_from(row.int("n")?).unwrap_or(0))
    }

    async fn incident_tallies(
        &self,
        scope: Option<&[ClinicId]>,
    ) -> Result<Vec<IncidentTally>, StoreError> {
        let (sql, binds) = tallies_sql(scope);
        query(&sql)
            .bind_all(binds)
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(incident_tally)
            .collect()
    }

    async fn outbox_events(&self, incident_id: &str) -> Result<Vec<OutboxEvent>, StoreError> {
        query("SELECT event, created_at FROM alert_outbox WHERE incident_id = $1 ORDER BY created_at, id")
            .bind(incident_id)
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(|r| Ok(OutboxEvent { event: r.text("event")?, at: r.instant("created_at")? }))
            .collect()
    }

    async fn doctors_of(&self, clinic: &ClinicId) -> Result<Vec<Doctor>, StoreError> {
        query("SELECT * FROM doctors WHERE clinic_id = $1 ORDER BY name, id")
            .bind(clinic.as_str())
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(rows::doctor)
            .collect()
    }

    async fn doctor_names(
        &self,
        clinics: &[ClinicId],
    ) -> Result<Vec<(ClinicId, DoctorId, String)>, StoreError> {
        let (clause, binds) = doctor_names_sql(clinics);
        query(&clause)
            .bind_all(binds)
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(|r| {
                Ok((
                    ClinicId::parse("clinic_id", &r.text("clinic_id")?)
                        .map_err(|e| rows::corrupt("clinic id", e))?,
                    DoctorId::parse("id", &r.text("id")?)
                        .map_err(|e| rows::corrupt("doctor id", e))?,
                    r.text("name")?,
                ))
            })
            .collect()
    }

    async fn seen_clinics(&self) -> Result<Vec<ClinicId>, StoreError> {
        query(SEEN_CLINICS)
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(|r| {
                ClinicId::parse("clinic_id", &r.text("clinic_id")?)
                    .map_err(|e| rows::corrupt("clinic id", e))
            })
            .collect()
    }

    async fn seen_doctors(&self, clinic: &ClinicId) -> Result<Vec<DoctorId>, StoreError> {
        query(SEEN_DOCTORS)
            .bind(clinic.as_str())
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(|r| {
                DoctorId::parse_stored("doctor_id", &r.text("doctor_id")?)
                    .map_err(|e| rows::corrupt("doctor id", e))
            })
            .collect()
    }

    async fn watched_group(&self, source: &str, id: &str) -> Result<Option<Group>, StoreError> {
        query("SELECT clinic_id, doctor_id, date FROM watched_appointments WHERE source = $1 AND id = $2")
            .bind(source)
            .bind(id)
            .fetch_optional(self.reader())
            .await?
            .map(|r| rows::group(&r))
            .transpose()
    }

    async fn watched_occupying(&self, group: &Group) -> Result<Vec<WatchedRow>, StoreError> {
        query(
            "SELECT source, id, slot_index, token_number, status, is_break, booked_via, document \
             FROM watched_appointments WHERE clinic_id = $1 AND doctor_id = $2 AND date = $3 \
             AND occupying = 1 AND deleted = 0 ORDER BY slot_index, source, id",
        )
        .bind(group.clinic_id.as_str())
        .bind(group.doctor_id.as_str())
        .bind(group.date)
        .fetch_all(self.reader())
        .await?
        .iter()
        .map(watched_row)
        .collect()
    }

    async fn stored_reports(&self, limit: u32) -> Result<Vec<StoredReport>, StoreError> {
        query("SELECT clinic_id, week, generated_at FROM weekly_reports ORDER BY week DESC, clinic_id LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(|r| Ok(StoredReport {
                clinic_id: r.text("clinic_id")?,
                week: r.text("week")?,
                generated_at: r.instant("generated_at")?,
            }))
            .collect()
    }

    async fn incidents_dated(
        &self,
        clinic: Option<&ClinicId>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<Incident>, StoreError> {
        query(crate::store::metrics::INCIDENTS_DATED.sql(clinic))
            .bind(clinic.map(ClinicId::as_str))
            .bind(from)
            .bind(to)
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(rows::incident)
            .collect()
    }

    async fn incidents_touched_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, ClinicId, DateTime<Utc>)>, StoreError> {
        query(
            "SELECT id, clinic_id, changed_at, acknowledged_at, resolved_at FROM incidents \
             WHERE changed_at >= $1 OR acknowledged_at >= $1 OR resolved_at >= $1",
        )
        .bind(since)
        .fetch_all(self.reader())
        .await?
        .iter()
        .map(|r| {
            let stamp = [
                r.opt_instant("acknowledged_at")?,
                r.opt_instant("resolved_at")?,
            ]
            .into_iter()
            .flatten()
            .fold(r.instant("changed_at")?, std::cmp::max);
            let clinic = ClinicId::parse("clinic_id", &r.text("clinic_id")?)
                .map_err(|e| rows::corrupt("clinic id", e))?;
            Ok((r.text("id")?, clinic, stamp))
        })
        .collect()
    }

    async fn detector_lease_expiry(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        query("SELECT expires_at FROM leases WHERE name = 'detector'")
            .fetch_optional(self.reader())
            .await?
            .map(|r| r.instant("expires_at"))
            .transpose()
    }
}
