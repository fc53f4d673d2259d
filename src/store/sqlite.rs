//! The embedded default store: one SQLite file in WAL mode, one writer connection
//! (every write transaction `BEGIN IMMEDIATE`, so writes are serial and never fail
//! to upgrade a lock), a few reader connections, `synchronous=FULL` unless traded.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::codec::{book_in_transaction, impl_store, APPOINTMENT_COLUMNS};
use super::{
    ApiKeyRecord, AppointmentFilter, Backend, Booking, Counters, StoreError, StoredResponse,
};
use crate::domain::schedule::days_off_to_json;
use crate::domain::{Appointment, AppointmentId, Clinic, ClinicId, Doctor, DoctorId, Status};

/// SQLite's durability setting for each commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SqliteSync {
    /// fsync on every commit: an acknowledged booking survives power loss.
    #[default]
    Full,
    /// fsync at checkpoints only: survives a crash of slotguard, not of the machine.
    Normal,
}

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    counters: Counters,
}

fn migrator() -> sqlx::migrate::Migrator {
    super::migrator(&[(
        1,
        "booking core",
        include_str!("../../migrations/sqlite/0001_booking_core.sql"),
    )])
}

impl SqliteStore {
    pub async fn open(url: &str, sync: SqliteSync) -> Result<Self, StoreError> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::BadUrl(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match sync {
                SqliteSync::Full => SqliteSynchronous::Full,
                SqliteSync::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        migrator().run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self {
            writer,
            reader,
            counters: Counters::default(),
        })
    }

    /// Row locks are implicit: `BEGIN IMMEDIATE` holds the database's write lock.
    const LOCK_ROW: &'static str = "";

    async fn begin_write(&self) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }

    async fn book_committed(&self, b: &Booking<'_>) -> Result<Appointment, StoreError> {
        let mut tx = self.begin_write().await?;
        let appointment = book_in_transaction!(tx, b);
        tx.commit().await?;
        Ok(appointment)
    }
}

impl_store!(SqliteStore, Backend::Sqlite);
