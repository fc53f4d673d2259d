//! The production store: PostgreSQL at READ COMMITTED, several `slotguard serve`
//! processes may share it. Bookings of one doctor-day take that day's row lock in
//! `booking_days` first; the partial unique indexes remain the guard. Serialization
//! failures and deadlocks are retried a bounded number of times with jittered backoff.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres};

use super::booking::book_in;
use super::sql::{query, sqlx_query, Reads, SqlBackend, Statement, Tx};
use super::{Backend, Booking, BookingOutcome, StoreError};
use crate::domain::{Appointment, Group, Touched, WatchedAppointment};

/// The NOTIFY channel on which instances announce changed doctor-days.
const CHANGED_DAYS: &str = "slotguard_changed_days";

/// Attempts per booking when PostgreSQL reports a serialization failure or deadlock.
const MAX_ATTEMPTS: u32 = 6;

pub struct PostgresStore {
    writer: PgPool,
    reader: PgPool,
    announcements: tokio::sync::mpsc::UnboundedSender<crate::domain::Group>,
    /// This instance's name in `leases` while it listens for changed days.
    presence: String,
}

pub(super) fn migrator() -> sqlx::migrate::Migrator {
    super::migrator(&[
        (
            1,
            "booking core",
            include_str!("../../../migrations/postgres/0001_booking_core.sql"),
        ),
        (
            2,
            "detection",
            include_str!("../../../migrations/postgres/0002_detection.sql"),
        ),
        (
            3,
            "audit",
            include_str!("../../../migrations/postgres/0003_audit.sql"),
        ),
        (
            4,
            "rollups",
            include_str!("../../../migrations/postgres/0004_rollups.sql"),
        ),
        (
            5,
            "dashboard",
            include_str!("../../../migrations/postgres/0005_dashboard.sql"),
        ),
        (
            6,
            "incident revision",
            include_str!("../../../migrations/postgres/0006_incident_revision.sql"),
        ),
        (
            7,
            "notification retry",
            include_str!("../../../migrations/postgres/0007_notification_retry.sql"),
        ),
        (
            8,
            "watch key clinics",
            include_str!("../../../migrations/postgres/0008_watch_key_clinics.sql"),
        ),
        (
            9,
            "incident changes",
            include_str!("../../../migrations/postgres/0009_incident_changes.sql"),
        ),
        (
            10,
            "watermarks",
            include_str!("../../../migrations/postgres/0010_watermarks.sql"),
        ),
        (
            11,
            "rollups by day covering",
            include_str!("../../../migrations/postgres/0011_rollups_by_day_covering.sql"),
        ),
        (
            12,
            "event order",
            include_str!("../../../migrations/postgres/0012_event_order.sql"),
        ),
        (
            13,
            "watched clinics",
            include_str!("../../../migrations/postgres/0013_watched_clinics.sql"),
        ),
        (
            14,
            "watched keys",
            include_str!("../../../migrations/postgres/0014_watched_keys.sql"),
        ),
    ])
}

const LOCK_DOCTOR_DAY: &str = "INSERT INTO booking_days (clinic_id, doctor_id, date, bookings) \
    VALUES ($1, $2, $3, 1) ON CONFLICT (clinic_id, doctor_id, date) \
    DO UPDATE SET bookings = booking_days.bookings + 1";

impl PostgresStore {
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        // One connection first, so a refused connection or a failed login is reported
        // as what it is, not as the pool's "timed out".
        sqlx::Connection::close(
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&options)
                .await
                .map_err(|e| {
                    StoreError::Unreachable(format!(
                        "{} at {}:{}",
                        match &e {
                            sqlx::Error::Io(io) => io.to_string(),
                            other => other.to_string(),
                        },
                        options.get_host(),
                        options.get_port()
                    ))
                })?,
        )
        .await?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // A broken connection fails its statement and is dropped; pinging every
            // connection before each use would add a round trip to every booking.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        // sqlx takes an advisory lock while migrating, so two processes starting
        // together apply each migration once.
        migrator().run(&pool).await?;
        let (announcements, changed) = tokio::sync::mpsc::unbounded_channel();
        let presence = format!("{PRESENCE}{}", uuid::Uuid::new_v4());
        tokio::spawn(announce_in_batches(pool.clone(), presence.clone(), changed));
        Ok(Self {
            reader: pool.clone(),
            writer: pool,
            announcements,
            presence,
        })
    }

    /// One attempt: the doctor-day's lock first, so bookings of one day queue
    /// instead of failing on each other's unique index.
    async fn book_once(&self, b: &Booking) -> Result<Appointment, StoreError> {
        let mut tx = self.begin_write().await?;
        query(LOCK_DOCTOR_DAY)
            .bind(b.clinic_id.as_str())
            .bind(b.doctor_id.as_str())
            .bind(b.date)
            .execute(&mut tx)
            .await?;
        let appointment = book_in(&mut tx, b).await?;
        Tx::commit(tx).await?;
        Ok(appointment)
    }
}

impl SqlBackend for PostgresStore {
    const BACKEND: Backend = Backend::Postgres;
    const LOCK_ROW: &'static str = " FOR UPDATE";
    type Row = PgRow;
    type Pool = PgPool;
    type Tx = sqlx::Transaction<'static, Postgres>;

    fn reader(&self) -> &PgPool {
        &self.reader
    }

    fn writer(&self) -> &PgPool {
        &self.writer
    }

    async fn begin_write(&self) -> Result<Self::Tx, sqlx::Error> {
        self.writer.begin().await
    }

    /// Runs the booking, again when PostgreSQL rolled it back for a serialization
    /// failure or deadlock, with jittered exponential backoff.
    async fn book_committed(&self, booking: Booking) -> BookingOutcome {
        let mut retries = 0;
        loop {
            let result = self.book_once(&booking).await;
            match result {
                Err(ref e) if retries + 1 < MAX_ATTEMPTS && is_retryable(e) => {
                    retries += 1;
                    let ceiling_ms = 5u64 << retries;
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(1..=ceiling_ms))).await;
                }
                _ => return BookingOutcome { result, retries },
            }
        }
    }

    /// Watched documents in a transaction of their own: PostgreSQL commits
    /// concurrent transactions together by itself.
    async fn upsert_watched_committed(
        &self,
        source: &str,
        documents: &[WatchedAppointment],
        received_at: DateTime<Utc>,
    ) -> Result<(Vec<bool>, Touched), StoreError> {
        let mut tx = self.begin_write().await?;
        let done =
            super::detection::upsert_watched_rows(&mut tx, source, documents, received_at).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Hands the changed day to the announcer task; the booking does not wait for it.
    async fn announce_group(&self, group: &Group) -> Result<(), StoreError> {
        let _ = self.announcements.send(group.clone());
        Ok(())
    }

    /// Listens for other instances' announcements on a connection of its own (the
    /// listener reconnects by itself after a database restart), and shows that it
    /// does, in `leases`, for as long as the receiver is held.
    async fn listen_groups(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Group>> {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&self.writer).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN; relying on the re-scan");
                return None;
            }
        };
        if let Err(e) = listener.listen(CHANGED_DAYS).await {
            tracing::warn!(error = %e, "cannot LISTEN; relying on the re-scan");
            return None;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (pool, me) = (self.writer.clone(), self.presence.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PRESENCE_EVERY);
            loop {
                tokio::select! {
                    received = listener.recv() => match received {
                        Ok(n) => {
                            if let Ok(group) = serde_json::from_str(n.payload()) {
                                if tx.send(group).is_err() {
                                    return;
                                }
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "LISTEN connection lost; reconnecting");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    },
                    _ = every.tick() => {
                        if tx.is_closed() {
                            return;
                        }
                        say_listening(&pool, &me).await;
                    }
                }
            }
        });
        Some(rx)
    }
}

impl Reads for PgPool {
    type Row = PgRow;
    async fn execute(&self, s: Statement<'_>) -> Result<u64, sqlx::Error> {
        Ok(sqlx_query(&s).execute(self).await?.rows_affected())
    }
    async fn fetch_all(&self, s: Statement<'_>) -> Result<Vec<PgRow>, sqlx::Error> {
        sqlx_query(&s).fetch_all(self).await
    }
    async fn fetch_optional(&self, s: Statement<'_>) -> Result<Option<PgRow>, sqlx::Error> {
        sqlx_query(&s).fetch_optional(self).await
    }
    async fn for_each_row<'a, F>(&'a self, s: Statement<'a>, mut each: F) -> Result<(), StoreError>
    where
        F: FnMut(&PgRow) -> Result<(), StoreError> + Send + 'a,
    {
        use futures_util::TryStreamExt;
        let mut rows = sqlx_query(&s).fetch(self);
        while let Some(row) = rows.try_next().await? {
            each(&row)?;
        }
        Ok(())
    }
}

impl Tx for sqlx::Transaction<'_, Postgres> {
    type Row = PgRow;
    async fn execute(&mut self, s: Statement<'_>) -> Result<u64, sqlx::Error> {
        Ok(sqlx_query(&s).execute(&mut **self).await?.rows_affected())
    }
    async fn fetch_all(&mut self, s: Statement<'_>) -> Result<Vec<PgRow>, sqlx::Error> {
        sqlx_query(&s).fetch_all(&mut **self).await
    }
    async fn fetch_optional(&mut self, s: Statement<'_>) -> Result<Option<PgRow>, sqlx::Error> {
        sqlx_query(&s).fetch_optional(&mut **self).await
    }
    async fn commit(self) -> Result<(), sqlx::Error> {
        sqlx::Transaction::commit(self).await
    }
}

/// How a listening instance shows itself: a row in `leases` it renews every
/// [`PRESENCE_EVERY`] until [`PRESENCE_FOR`], named `listener:<uuid>`.
const PRESENCE: &str = "listener:";
const PRESENCE_EVERY: Duration = Duration::from_secs(2);
const PRESENCE_FOR: &str = "6 seconds";

/// Renews this instance's presence row, and clears rows of instances long gone.
/// Database time throughout: servers' clocks may differ.
async fn say_listening(pool: &PgPool, me: &str) {
    let renewed = sqlx::query(&format!(
        "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $1, now() + INTERVAL '{PRESENCE_FOR}') \
         ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at"
    ))
    .bind(me)
    .execute(pool)
    .await;
    let cleared = sqlx::query(
        "DELETE FROM leases WHERE name LIKE 'listener:%' AND expires_at < now() - INTERVAL '1 hour'",
    )
    .execute(pool)
    .await;
    if let Err(e) = renewed.and(cleared) {
        tracing::debug!(error = %e, "could not renew this instance's presence");
    }
}

/// Whether an instance other than `me` listens for changed days, asked of the
/// database at most every [`PRESENCE_EVERY`]: with none, a NOTIFY is work for nobody.
struct Listeners {
    me: String,
    asked_at: Option<tokio::time::Instant>,
    others: bool,
}

impl Listeners {
    async fn any(&mut self, pool: &PgPool) -> bool {
        if self
            .asked_at
            .is_some_and(|at| at.elapsed() < PRESENCE_EVERY)
        {
            return self.others;
        }
        let others: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "SELECT COUNT(*) FROM leases WHERE name LIKE 'listener:%' AND name <> $1 AND expires_at > now()",
        )
        .bind(&self.me)
        .fetch_one(pool)
        .await;
        // Unsure (the database did not answer): announce, as before presence existed.
        self.others = others.map_or(true, |n| n > 0);
        self.asked_at = Some(tokio::time::Instant::now());
        self.others
    }
}

/// Sends the changed days announced since the last NOTIFY in one statement, until the
/// store is dropped, when another instance listens. A NOTIFY takes a database-wide
/// lock until its transaction ends and makes that transaction flush the WAL, so one
/// per booking would queue concurrent commits behind each other; batched, the days
/// that changed while one statement ran go out together with the next.
async fn announce_in_batches(
    pool: PgPool,
    me: String,
    mut changed: tokio::sync::mpsc::UnboundedReceiver<crate::domain::Group>,
) {
    let mut listeners = Listeners {
        me,
        asked_at: None,
        others: false,
    };
    while let Some(first) = changed.recv().await {
        let mut batch = std::collections::BTreeSet::from([first]);
        while let Ok(more) = changed.try_recv() {
            batch.insert(more);
        }
        if !listeners.any(&pool).await {
            continue;
        }
        let payloads: Vec<String> = batch
            .iter()
            .filter_map(|g| serde_json::to_string(g).ok())
            .collect();
        if let Err(e) = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
            .bind(CHANGED_DAYS)
            .bind(&payloads)
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "could not announce changed days; other instances' re-scan will find them");
        }
    }
}

/// Serialization failure or deadlock: the transaction was rolled back and may simply
/// be run again.
fn is_retryable(err: &StoreError) -> bool {
    let StoreError::Database(e) = err else {
        return false;
    };
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "40001" || code == "40P01")
}
