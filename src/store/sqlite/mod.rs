//! The embedded default store: one SQLite file in WAL mode, one writer connection
//! (every write transaction `BEGIN IMMEDIATE`, so writes are serial and never fail
//! to upgrade a lock), a few reader connections, `synchronous=FULL` unless traded.
//! Bookings go through a group committer (`store::group_commit`): all bookings
//! waiting for the writer are committed in one transaction, one savepoint each;
//! watched documents through one of their own (`store::watched_commit`).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Sqlite, SqlitePool};
use tokio::sync::mpsc;

use super::sql::{sqlx_query, Reads, SqlBackend, Statement, Tx};
use super::{Backend, Booking, BookingOutcome, StoreError};
use crate::domain::{Group, Touched, WatchedAppointment};
use group_commit::GroupCommitter;
use watched_commit::WatchedCommitter;

mod group_commit;
mod watched_commit;

/// SQLite's durability setting for each commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SqliteSync {
    /// fsync on every commit: an acknowledged booking survives power loss.
    #[default]
    Full,
    /// fsync at checkpoints only: survives a crash of slotguard, not of the machine.
    Normal,
}

impl SqliteSync {
    /// The value of `PRAGMA synchronous`, for sqlx's connections and the group
    /// committer's alike.
    pub fn pragma(self) -> &'static str {
        match self {
            SqliteSync::Full => "FULL",
            SqliteSync::Normal => "NORMAL",
        }
    }
}

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    bookings: GroupCommitter,
    watched: WatchedCommitter,
}

pub(super) fn migrator() -> sqlx::migrate::Migrator {
    super::migrator(&[
        (
            1,
            "booking core",
            include_str!("../../../migrations/sqlite/0001_booking_core.sql"),
        ),
        (
            2,
            "detection",
            include_str!("../../../migrations/sqlite/0002_detection.sql"),
        ),
        (
            3,
            "audit",
            include_str!("../../../migrations/sqlite/0003_audit.sql"),
        ),
        (
            4,
            "rollups",
            include_str!("../../../migrations/sqlite/0004_rollups.sql"),
        ),
        (
            5,
            "dashboard",
            include_str!("../../../migrations/sqlite/0005_dashboard.sql"),
        ),
        (
            6,
            "incident revision",
            include_str!("../../../migrations/sqlite/0006_incident_revision.sql"),
        ),
        (
            7,
            "notification retry",
            include_str!("../../../migrations/sqlite/0007_notification_retry.sql"),
        ),
        (
            8,
            "watch key clinics",
            include_str!("../../../migrations/sqlite/0008_watch_key_clinics.sql"),
        ),
        (
            9,
            "incident changes",
            include_str!("../../../migrations/sqlite/0009_incident_changes.sql"),
        ),
        (
            10,
            "watermarks",
            include_str!("../../../migrations/sqlite/0010_watermarks.sql"),
        ),
        (
            11,
            "rollups by day covering",
            include_str!("../../../migrations/sqlite/0011_rollups_by_day_covering.sql"),
        ),
        (
            12,
            "event order",
            include_str!("../../../migrations/sqlite/0012_event_order.sql"),
        ),
        (
            13,
            "watched clinics",
            include_str!("../../../migrations/sqlite/0013_watched_clinics.sql"),
        ),
        (
            14,
            "watched keys",
            include_str!("../../../migrations/sqlite/0014_watched_keys.sql"),
        ),
    ])
}

impl SqliteStore {
    /// Opens (creating and migrating) the database file at `path`.
    pub async fn open(path: &str, sync: SqliteSync) -> Result<Self, StoreError> {
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
            .pragma("synchronous", sync.pragma())
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // The only connection is never idle long enough to go stale, and testing it
        // before each use would cost the group committer a round trip per group.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        migrator().run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let bookings = GroupCommitter::start(path, sync, writer.clone())?;
        let watched = WatchedCommitter::start(writer.clone());
        Ok(Self {
            writer,
            reader,
            bookings,
            watched,
        })
    }
}

impl SqlBackend for SqliteStore {
    const BACKEND: Backend = Backend::Sqlite;
    const LOCK_ROW: &'static str = "";
    type Row = SqliteRow;
    type Pool = SqlitePool;
    type Tx = sqlx::Transaction<'static, Sqlite>;

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// `BEGIN IMMEDIATE`: the write lock is taken at the start, so a transaction that
    /// read first never fails to upgrade it.
    async fn begin_write(&self) -> Result<Self::Tx, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }

    /// The single writer never meets a serialization failure, so nothing is retried.
    async fn book_committed(&self, booking: Booking) -> BookingOutcome {
        BookingOutcome {
            result: self.bookings.book(booking).await,
            retries: 0,
        }
    }

    /// Watched documents through the watched-write committer (`watched_commit`).
    async fn upsert_watched_committed(
        &self,
        source: &str,
        documents: &[WatchedAppointment],
        received_at: DateTime<Utc>,
    ) -> Result<(Vec<bool>, Touched), StoreError> {
        self.watched
            .upsert(source.to_owned(), documents.to_vec(), received_at)
            .await
    }

    /// One process serves a SQLite file: there is nobody to tell.
    async fn announce_group(&self, _group: &Group) -> Result<(), StoreError> {
        Ok(())
    }

    async fn listen_groups(&self) -> Option<mpsc::UnboundedReceiver<Group>> {
        None
    }
}

impl Reads for SqlitePool {
    type Row = SqliteRow;
    async fn execute(&self, s: Statement<'_>) -> Result<u64, sqlx::Error> {
        Ok(sqlx_query(&s).execute(self).await?.rows_affected())
    }
    async fn fetch_all(&self, s: Statement<'_>) -> Result<Vec<SqliteRow>, sqlx::Error> {
        sqlx_query(&s).fetch_all(self).await
    }
    async fn fetch_optional(&self, s: Statement<'_>) -> Result<Option<SqliteRow>, sqlx::Error> {
        sqlx_query(&s).fetch_optional(self).await
    }
    async fn for_each_row<'a, F>(&'a self, s: Statement<'a>, mut each: F) -> Result<(), StoreError>
    where
        F: FnMut(&SqliteRow) -> Result<(), StoreError> + Send + 'a,
    {
        use futures_util::TryStreamExt;
        let mut rows = sqlx_query(&s).fetch(self);
        while let Some(row) = rows.try_next().await? {
            each(&row)?;
        }
        Ok(())
    }
}

impl Tx for sqlx::Transaction<'_, Sqlite> {
    type Row = SqliteRow;
    async fn execute(&mut self, s: Statement<'_>) -> Result<u64, sqlx::Error> {
        Ok(sqlx_query(&s).execute(&mut **self).await?.rows_affected())
    }
    async fn fetch_all(&mut self, s: Statement<'_>) -> Result<Vec<SqliteRow>, sqlx::Error> {
        sqlx_query(&s).fetch_all(&mut **self).await
    }
    async fn fetch_optional(&mut self, s: Statement<'_>) -> Result<Option<SqliteRow>, sqlx::Error> {
        sqlx_query(&s).fetch_optional(&mut **self).await
    }
    async fn commit(self) -> Result<(), sqlx::Error> {
        sqlx::Transaction::commit(self).await
    }
}
