//! Persistence: one `Store` trait with one method per use case, implemented for the
//! embedded SQLite default and for PostgreSQL. The invariants of docs/PRODUCT.md live in the
//! migrations (`migrations/{sqlite,postgres}`), not here: code picks a slot, the
//! partial unique indexes make sure no second occupant can ever commit.
//!
//! - [`sql`]: statements (SQL text with `$n` placeholders, the same on both backends,
//!   and their typed values), where they run, and [`sql::SqlBackend`], what a backend
//!   provides.
//! - `records`, [`detection`], [`audit`], [`metrics`], [`dashboard`]: one capability
//!   each: its trait, its SQL and its one implementation for every `SqlBackend`.
//! - `booking`: the steps of a booking in its transaction, once for both backends.
//! - `rows`: every stored row decoded back into a value.
//! - [`sqlite`], [`postgres`]: each backend: connections, migrations, and what it
//!   does its own way (SQLite's group commits, PostgreSQL's retries and NOTIFY).

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::domain::{
    Appointment, AppointmentId, Clinic, ClinicId, Doctor, DoctorId, Entity, Kind, Patient,
    PlannedSlot, Refusal, Role, Status,
};

pub mod audit;
mod booking;
pub mod dashboard;
pub mod detection;
pub mod metrics;
pub mod postgres;
mod records;
mod rows;
pub mod sql;
pub mod sqlite;

pub use sqlite::SqliteSync;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(Entity),
    #[error("{0} already exists")]
    AlreadyExists(Entity),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("an appointment that is {from} cannot become {to}")]
    InvalidTransition { from: Status, to: Status },
    #[error("an incident that is {from} cannot become {to}")]
    InvalidIncidentMove {
        from: &'static str,
        to: &'static str,
    },
    /// A concurrent change got there first.
    #[error("{0}")]
    Changed(&'static str),
    /// The idempotency key was stored by a concurrent request first.
    #[error("idempotency key already used")]
    IdempotencyKeyUsed,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// From SQLite's group committer, which has its own connection.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is unreadable: {0}")]
    Corrupt(String),
    /// The group commit holding this write (a booking, watched documents) failed as
    /// a whole (nothing of it was committed); the cause is logged by the committer.
    #[error("the group commit holding this write failed; nothing of it was written")]
    GroupCommitFailed,
    #[error("unsupported database URL: {0}")]
    BadUrl(String),
    /// The database server could not be reached or refused the connection.
    #[error("{0}")]
    Unreachable(String),
}

/// Which engine is behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// What committing a booking came to, and how many times the store ran its
/// transaction again first (PostgreSQL serialization failures and deadlocks; always
/// 0 on SQLite, whose single writer never has to), for the metrics.
#[derive(Debug)]
pub struct BookingOutcome {
    pub result: Result<Appointment, StoreError>,
    pub retries: u32,
}

/// Decides the slot once the day's occupied slots are known, inside the transaction.
pub type Planner = Box<dyn Fn(&BTreeSet<u32>) -> Result<PlannedSlot, Refusal> + Send + Sync>;

/// One booking to commit: a new appointment, or a reschedule that cancels
/// `replaces` in the same transaction. Owned, so SQLite's group committer can take
/// it to its writer task.
pub struct Booking {
    pub id: AppointmentId,
    pub clinic_id: ClinicId,
    pub doctor_id: DoctorId,
    pub date: NaiveDate,
    pub kind: Kind,
    pub patient: Patient,
    pub now: DateTime<Utc>,
    pub replaces: Option<AppointmentId>,
    pub idempotency: Option<IdempotencyRecord>,
    pub plan: Planner,
}

/// The idempotency key of a booking request, stored with its response in the
/// booking's own transaction.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub key_hash: String,
    pub request_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

#[derive(Debug, Clone, Default)]
pub struct AppointmentFilter {
    pub clinic_id: Option<ClinicId>,
    pub doctor_id: Option<DoctorId>,
    pub date: Option<NaiveDate>,
    pub status: Option<Status>,
    pub limit: u32,
}

/// An API key as stored: only a hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    pub id: String,
    pub role: Role,
    pub clinics: Vec<ClinicId>,
    /// For `watch` keys: the clinics whose documents they may forward (empty: every
    /// clinic); their `clinics` are source names.
    pub watch_clinics: Vec<ClinicId>,
    #[serde(skip)]
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait Store:
    detection::DetectionStore
    + audit::AuditStore
    + metrics::MetricsStore
    + dashboard::DashboardStore
    + Send
    + Sync
{
    fn backend(&self) -> Backend;
    async fn ping(&self) -> Result<(), StoreError>;

    async fn insert_clinic(&self, clinic: &Clinic, now: DateTime<Utc>) -> Result<(), StoreError>;
    async fn update_clinic(&self, clinic: &Clinic, now: DateTime<Utc>) -> Result<(), StoreError>;
    async fn clinic(&self, id: &ClinicId) -> Result<Option<Clinic>, StoreError>;

    async fn insert_doctor(&self, doctor: &Doctor, now: DateTime<Utc>) -> Result<(), StoreError>;
    async fn update_doctor(&self, doctor: &Doctor, now: DateTime<Utc>) -> Result<(), StoreError>;
    async fn doctor(&self, clinic: &ClinicId, id: &DoctorId) -> Result<Option<Doctor>, StoreError>;

    /// Commits a booking atomically: the slot chosen by `plan`, its token, the
    /// cancellation of a replaced appointment and the idempotency record, or nothing.
    async fn book(&self, booking: Booking) -> BookingOutcome;
    async fn change_status(
        &self,
        id: &AppointmentId,
        to: Status,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError>;
    async fn appointment(&self, id: &AppointmentId) -> Result<Option<Appointment>, StoreError>;
    async fn appointments(
        &self,
        filter: &AppointmentFilter,
    ) -> Result<Vec<Appointment>, StoreError>;
    /// Occupying appointments of one doctor-day, by slot: what availability shows and
    /// what duplicate detection will check.
    async fn occupying(
        &self,
        clinic: &ClinicId,
        doctor: &DoctorId,
        date: NaiveDate,
    ) -> Result<Vec<Appointment>, StoreError>;

    async fn idempotent_response(
        &self,
        clinic: &ClinicId,
        key_hash: &str,
    ) -> Result<Option<StoredResponse>, StoreError>;
    async fn forget_idempotency_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;
    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
    async fn revoke_api_key(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Tells other instances a doctor-day changed (PostgreSQL NOTIFY; nothing on
    /// SQLite, which one process serves).
    async fn announce(&self, group: &crate::domain::Group) -> Result<(), StoreError>;
    /// Changed days announced by other instances, when the backend can hear them.
    async fn listen(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<crate::domain::Group>>;
}

/// The SQLite file a database URL names (`sqlite://…`, `sqlite:…` or a plain path), or
/// `None` for PostgreSQL.
pub fn sqlite_path(url: &str) -> Option<&str> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return None;
    }
    Some(
        url.strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url),
    )
}

/// Opens (creating and migrating) the store a URL names: `postgres://…` or
/// `postgresql://…` for PostgreSQL, `sqlite:…` or a plain file path for SQLite.
pub async fn open(url: &str, sync: SqliteSync) -> Result<Box<dyn Store>, StoreError> {
    match sqlite_path(url) {
        None => Ok(Box::new(postgres::PostgresStore::open(url).await?)),
        Some(path) => Ok(Box::new(sqlite::SqliteStore::open(path, sync).await?)),
    }
}

/// Builds a migrator from migrations embedded in the binary (`include_str!`), so a
/// fresh machine needs nothing but the executable.
fn migrator(sources: &[(i64, &'static str, &'static str)]) -> sqlx::migrate::Migrator {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator {
        migrations: sources
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into(),
                    false,
                )
            })
            .collect::<Vec<_>>()
            .into(),
        ..Migrator::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    /// A migration file the binary does not embed is never applied (each is listed
    /// by hand in `sqlite::migrator` and `postgres::migrator`).
    #[test]
    fn every_migration_file_is_embedded_in_order() {
        for (backend, migrator) in [
            ("sqlite", super::sqlite::migrator()),
            ("postgres", super::postgres::migrator()),
        ] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(backend);
            let mut files: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            let embedded: Vec<(i64, String)> = migrator
                .iter()
                .map(|m| (m.version, m.sql.to_string()))
                .collect();
            assert_eq!(embedded.len(), files.len(), "{backend}: {files:?}");
            for ((version, sql), file) in embedded.iter().zip(&files) {
                assert!(
                    file.starts_with(&format!("{version:04}_")),
                    "{backend}: {file}"
                );
                let text = std::fs::read_to_string(dir.join(file)).unwrap();
                assert_eq!(*sql, text, "{backend}: {file} is embedded as written");
            }
        }
    }
}
