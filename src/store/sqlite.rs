//! The embedded default store: one SQLite file in WAL mode, one writer connection
//! (every write transaction `BEGIN IMMEDIATE`, so writes are serial and never fail
//! to upgrade a lock), a few reader connections, `synchronous=FULL` unless traded.
//! Bookings go through a group committer: all bookings waiting for the writer are
//! committed in one transaction, one savepoint each.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::codec::{book_in_transaction, impl_store, APPOINTMENT_COLUMNS};
use super::{
    ApiKeyRecord, AppointmentFilter, Backend, Booking, BookingOutcome, StoreError, StoredResponse,
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
    bookings: mpsc::Sender<Job>,
}

fn migrator() -> sqlx::migrate::Migrator {
    super::migrator(&[
        (
            1,
            "booking core",
            include_str!("../../migrations/sqlite/0001_booking_core.sql"),
        ),
        (
            2,
            "detection",
            include_str!("../../migrations/sqlite/0002_detection.sql"),
        ),
        (
            3,
            "audit",
            include_str!("../../migrations/sqlite/0003_audit.sql"),
        ),
        (
            4,
            "rollups",
            include_str!("../../migrations/sqlite/0004_rollups.sql"),
        ),
    ])
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
        let (bookings, jobs) = mpsc::channel(1024);
        tokio::spawn(group_committer(writer.clone(), jobs));
        Ok(Self {
            writer,
            reader,
            bookings,
        })
    }

    /// Row locks are implicit: `BEGIN IMMEDIATE` holds the database's write lock.
    const LOCK_ROW: &'static str = "";

    async fn begin_write(&self) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }

    async fn announce_group(&self, _group: &crate::detect::Group) -> Result<(), StoreError> {
        Ok(())
    }

    async fn listen_groups(&self) -> Option<mpsc::UnboundedReceiver<crate::detect::Group>> {
        None
    }

    /// Hands the booking to the group committer and waits for its commit. The single
    /// writer never meets a serialization failure, so nothing is ever retried.
    async fn book_committed(&self, booking: Booking) -> BookingOutcome {
        let (reply, answer) = oneshot::channel();
        let result = match self.bookings.send(Job { booking, reply }).await {
            Ok(()) => answer.await.unwrap_or(Err(StoreError::GroupCommitFailed)),
            Err(_) => Err(StoreError::GroupCommitFailed),
        };
        BookingOutcome { result, retries: 0 }
    }
}

/// Bookings committed together at most: bounds how long the first one waits.
const MAX_GROUP: usize = 64;

struct Job {
    booking: Booking,
    reply: oneshot::Sender<Result<Appointment, StoreError>>,
}

/// The single writer of bookings. It takes every booking waiting when it is free and
/// commits them in one transaction, each in its own savepoint, so one booking's
/// conflict touches no other and one fsync covers the group. Each booking is
/// answered only after the commit that holds it, so an acknowledged booking is as
/// durable as with one transaction per booking.
async fn group_committer(writer: SqlitePool, mut jobs: mpsc::Receiver<Job>) {
    while let Some(first) = jobs.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let outcomes = match commit_group(&writer, &group).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                tracing::error!(error = %e, bookings = group.len(), "group commit failed");
                group
                    .iter()
                    .map(|_| Err(StoreError::GroupCommitFailed))
                    .collect()
            }
        };
        for (job, outcome) in group.into_iter().zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
    }
}

async fn commit_group(
    writer: &SqlitePool,
    group: &[Job],
) -> Result<Vec<Result<Appointment, StoreError>>, StoreError> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let mut outcomes = Vec::with_capacity(group.len());
    for job in group {
        let mut savepoint = tx.begin().await?;
        let outcome = async {
            let appointment = book_in_transaction!(savepoint, &job.booking);
            Ok::<_, StoreError>(appointment)
        }
        .await;
        match outcome {
            Ok(_) => savepoint.commit().await?,
            Err(_) => savepoint.rollback().await?,
        }
        outcomes.push(outcome);
    }
    tx.commit().await?;
    Ok(outcomes)
}

crate::store::detection::impl_detection!(SqliteStore);
crate::store::audit::impl_audit!(SqliteStore);
crate::store::metrics::impl_metrics!(SqliteStore);
impl_store!(SqliteStore, Backend::Sqlite);
