//! SQLite's booking writer. Bookings waiting for the writer are committed together
//! in one transaction, each in its own savepoint, so one booking's conflict touches
//! no other and one fsync covers the group. Each booking is answered only after the
//! commit that holds it, so an acknowledged booking is as durable as with one
//! transaction per booking.
//!
//! The groups run on a thread of their own with its own connection, opened with
//! rusqlite: the statements of a group go straight to SQLite instead of one hand-off
//! each to sqlx's connection thread and back, which is what limited the writer before.
//! While it commits, the committer holds sqlx's only writer connection, so no other
//! write of this process has to wait in SQLite's busy handler (which sleeps).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{CachedStatement, Connection, OpenFlags};
use sqlx::SqlitePool;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use futures_util::FutureExt;

use super::SqliteSync;
use crate::domain::Appointment;
use crate::store::booking::{book_in, BookingTx};
use crate::store::records::unique_violation_named;
use crate::store::rows::corrupt;
use crate::store::sql::{Statement, Value};
use crate::store::{Booking, StoreError};

/// Bookings committed together at most: bounds how long the first one waits.
const MAX_GROUP: usize = 64;

/// How long the committer keeps sqlx's writer connection while bookings keep
/// coming: the longest any other write of this process waits behind bookings.
const BURST: Duration = Duration::from_millis(10);

struct Job {
    booking: Booking,
    reply: oneshot::Sender<Result<Appointment, StoreError>>,
}

/// The handle the store books through; the committer stops when it is dropped.
pub struct GroupCommitter {
    jobs: mpsc::Sender<Job>,
}

impl GroupCommitter {
    /// Opens the committer's connection to the (already migrated) file at `path` and
    /// starts its thread. `gate` is sqlx's single-connection writer pool.
    pub fn start(path: &str, sync: SqliteSync, gate: SqlitePool) -> Result<Self, StoreError> {
        let conn = connect(path, sync)?;
        // Checkpoints run on a thread of their own (`checkpoint`), off the path of
        // the booking whose commit would otherwise run one every 1000 pages.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = connect(path, sync)?;
        let (running, stopped) = std::sync::mpsc::channel::<()>();
        let wal_long = Arc::new(AtomicBool::new(false));
        let flagged = Arc::clone(&wal_long);
        let (jobs, waiting) = mpsc::channel(1024);
        let runtime = Handle::current();
        spawn_thread("sqlite-checkpoint", move || {
            checkpoint(&checkpointer, &stopped, &flagged);
        })?;
        spawn_thread("sqlite-bookings", move || {
            commit_groups(conn, &wal_long, gate, runtime, waiting);
            drop(running);
        })?;
        Ok(Self { jobs })
    }

    /// Hands the booking to the committer and waits for the commit that holds it.
    pub async fn book(&self, booking: Booking) -> Result<Appointment, StoreError> {
        let (reply, answer) = oneshot::channel();
        match self.jobs.send(Job { booking, reply }).await {
            Ok(()) => answer.await.unwrap_or(Err(StoreError::GroupCommitFailed)),
            Err(_) => Err(StoreError::GroupCommitFailed),
        }
    }
}

fn connect(path: &str, sync: SqliteSync) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", sync.pragma())?;
    Ok(conn)
}

fn spawn_thread(name: &str, run: impl FnOnce() + Send + 'static) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(run)
        .map(drop)
        .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))
}

/// How often committed pages are copied from the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// WAL pages past which the committer finishes a checkpoint itself: SQLite starts
/// the WAL over only when a write begins with every page already copied, which under
/// a steady stream of bookings happens only if the writer checkpoints between two
/// of its own commits. 2000 pages (8 MB) is twice SQLite's own automatic threshold.
const WAL_RESTART_PAGES: i64 = 2000;

/// One `PASSIVE` checkpoint (it waits for no reader or writer): whether it copied
/// every page the WAL holds, and how many that is.
fn checkpoint_once(conn: &Connection) -> Option<(bool, i64)> {
    let outcome = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    });
    match outcome {
        Ok((busy, pages, copied)) => Some((busy == 0 && pages == copied, pages)),
        Err(e) => {
            tracing::warn!(error = %e, "WAL checkpoint failed");
            None
        }
    }
}

/// Copies what the WAL holds into the database file every [`CHECKPOINT_EVERY`],
/// off the bookings' path, until the committer stops; flags a WAL grown past
/// [`WAL_RESTART_PAGES`] for the committer.
fn checkpoint(conn: &Connection, stopped: &std::sync::mpsc::Receiver<()>, wal_long: &AtomicBool) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stopped.recv_timeout(CHECKPOINT_EVERY)
    {
        if let Some((_, pages)) = checkpoint_once(conn) {
            wal_long.store(pages >= WAL_RESTART_PAGES, Ordering::Relaxed);
        }
    }
}

/// The committer's thread: waits for a booking, takes sqlx's writer connection,
/// and commits groups while bookings keep coming, for up to [`BURST`]; then it lets
/// the connection go so the process's other writes get their turn.
fn commit_groups(
    mut conn: Connection,
    wal_long: &AtomicBool,
    gate: SqlitePool,
    runtime: Handle,
    mut waiting: mpsc::Receiver<Job>,
) {
    // Dropping the pool connection spawns a task that returns it to the pool.
    let _runtime = runtime.enter();
    while let Some(first) = waiting.blocking_recv() {
        let held = match runtime.block_on(gate.acquire()) {
            Ok(held) => held,
            Err(e) => {
                answer(gather(first, &mut waiting), Err(e.into()));
                continue;
            }
        };
        let until = Instant::now() + BURST;
        let mut next = Some(first);
        while let Some(first) = next.take() {
            let group = gather(first, &mut waiting);
            let outcomes = commit_group(&mut conn, &group);
            answer(group, outcomes);
            if wal_long.load(Ordering::Relaxed)
                && checkpoint_once(&conn).is_some_and(|(all, _)| all)
            {
                wal_long.store(false, Ordering::Relaxed);
            }
            if Instant::now() < until {
                next = waiting.try_recv().ok();
            }
        }
        drop(held);
    }
}

/// The first booking and every other one already waiting, up to [`MAX_GROUP`].
fn gather(first: Job, waiting: &mut mpsc::Receiver<Job>) -> Vec<Job> {
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        match waiting.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
    group
}

fn answer(group: Vec<Job>, outcomes: Result<Vec<Result<Appointment, StoreError>>, StoreError>) {
    let outcomes = outcomes.unwrap_or_else(|e| {
        tracing::error!(error = %e, bookings = group.len(), "group commit failed");
        group
            .iter()
            .map(|_| Err(StoreError::GroupCommitFailed))
            .collect()
    });
    for (job, outcome) in group.into_iter().zip(outcomes) {
        let _ = job.reply.send(outcome);
    }
}

/// One transaction for the group; on any error nothing of it is committed.
fn commit_group(
    conn: &mut Connection,
    group: &[Job],
) -> Result<Vec<Result<Appointment, StoreError>>, StoreError> {
    if !conn.is_autocommit() {
        // Left open by a group that failed half-way.
        conn.execute_batch("ROLLBACK")?;
    }
    let committed = (|| {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let mut outcomes = Vec::with_capacity(group.len());
        for job in group {
            conn.prepare_cached("SAVEPOINT booking")?.execute([])?;
            let outcome = book(conn, &job.booking);
            if outcome.is_err() {
                conn.prepare_cached("ROLLBACK TO booking")?.execute([])?;
            }
            conn.prepare_cached("RELEASE booking")?.execute([])?;
            outcomes.push(outcome);
        }
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(outcomes)
    })();
    if committed.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    committed
}

/// The group's connection inside one booking's savepoint.
struct Savepoint<'c>(&'c Connection);

impl BookingTx for Savepoint<'_> {
    async fn execute(&mut self, s: Statement<'_>) -> Result<u64, StoreError> {
        Ok(bound(self.0, &s)?.raw_execute().map_err(refused)? as u64)
    }

    async fn integers(&mut self, s: Statement<'_>, column: &str) -> Result<Vec<i64>, StoreError> {
        let mut statement = bound(self.0, &s)?;
        let at = statement.column_index(column)?;
        let mut rows = statement.raw_query();
        let mut found = Vec::new();
        while let Some(row) = rows.next().map_err(refused)? {
            found.push(row.get::<_, i64>(at)?);
        }
        Ok(found)
    }
}

/// Runs the booking's steps (`store::booking::book_in`) in the open savepoint. They
/// never wait: every statement of a `Savepoint` runs to completion when called.
fn book(conn: &Connection, b: &Booking) -> Result<Appointment, StoreError> {
    book_in(&mut Savepoint(conn), b)
        .now_or_never()
        .expect("a savepoint's statements complete without waiting")
}

/// A cached statement with each `$n` bound to the statement's `n`th value, as sqlx
/// binds them, so the SQL text is the one both backends share.
fn bound<'c>(conn: &'c Connection, s: &Statement<'_>) -> Result<CachedStatement<'c>, StoreError> {
    let mut statement = conn.prepare_cached(&s.text)?;
    for index in 1..=statement.parameter_count() {
        let value = statement
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$')?.parse::<usize>().ok())
            .and_then(|n| s.values.get(n.checked_sub(1)?))
            .ok_or_else(|| corrupt("placeholder", format!("{index} of {}", s.text)))?;
        match value {
            Value::Text(v) => statement.raw_bind_parameter(index, v.as_deref())?,
            Value::Int(v) => statement.raw_bind_parameter(index, v)?,
            Value::SmallInt(v) => statement.raw_bind_parameter(index, v)?,
            Value::Date(v) => {
                statement.raw_bind_parameter(index, v.map(|d| d.format("%F").to_string()))?
            }
            Value::Instant(v) => statement.raw_bind_parameter(index, v.map(instant))?,
        }
    }
    Ok(statement)
}

/// A timestamp as sqlx writes `DateTime<Utc>` to SQLite, so sqlx reads it back.
fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// A unique index's refusal, named as for every other write.
fn refused(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(failure, Some(message))
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            unique_violation_named(message)
        }
        _ => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Kind;

    #[test]
    fn timestamps_are_written_as_sqlx_writes_them() {
        let at = DateTime::parse_from_rfc3339("2026-11-24T03:30:05.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut sqlx_args = Vec::new();
        let _ = sqlx::Encode::<sqlx::Sqlite>::encode_by_ref(&at, &mut sqlx_args).unwrap();
        assert_eq!(
            format!("{:?}", sqlx_args[0]),
            format!(
                "{:?}",
                sqlx::sqlite::SqliteArgumentValue::Text(instant(at).into())
            )
        );
    }

    /// Without the committer's own checkpoints the WAL would only grow while
    /// bookings keep coming (SQLite starts it over only when a write begins with
    /// every page copied); with them its file stays within a few times its
    /// restart size.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_a_steady_stream_of_bookings_the_wal_starts_over() {
        use crate::domain::schedule::tests::doctor;
        use crate::domain::{AppointmentId, Clinic, Patient, PlannedSlot, SlotIndex};
        use crate::store::Store;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        let store = std::sync::Arc::new(
            crate::store::sqlite::SqliteStore::open(path.to_str().unwrap(), SqliteSync::Full)
                .await
                .unwrap(),
        );
        let doctor = doctor(
            10,
            serde_json::json!({"mon": [{"from": "09:00", "to": "13:00"}]}),
        );
        let clinic = Clinic {
            id: doctor.clinic_id.clone(),
            name: "Demo".into(),
            timezone: Clinic::DEFAULT_TIMEZONE,
            policy: Default::default(),
            audit_at: Clinic::DEFAULT_AUDIT_AT,
        };
        store.insert_clinic(&clinic, Utc::now()).await.unwrap();
        store.insert_doctor(&doctor, Utc::now()).await.unwrap();

        // 8000 bookings: about 120 MB of WAL if it never started over.
        let (clients, each, days) = (32, 250, 400);
        let mut booked = tokio::task::JoinSet::new();
        for client in 0..clients {
            let (store, doctor) = (store.clone(), doctor.clone());
            booked.spawn(async move {
                for i in 0..each {
                    let date = chrono::NaiveDate::from_ymd_opt(2027, 1, 1).unwrap()
                        + chrono::Duration::days((client * each + i) % days);
                    let outcome = store
                        .book(Booking {
                            id: AppointmentId::generate(),
                            clinic_id: doctor.clinic_id.clone(),
                            doctor_id: doctor.id.clone(),
                            date,
                            kind: Kind::Advance,
                            patient: Patient {
                                name: "Anu".into(),
                                phone: None,
                                booked_via: "test".into(),
                            },
                            now: Utc::now(),
                            replaces: None,
                            idempotency: None,
                            plan: Box::new(|taken| {
                                let k = (0..).find(|k| !taken.contains(k)).unwrap();
                                Ok(PlannedSlot {
                                    slot: SlotIndex::from_parts(0, k),
                                    time: chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
                                })
                            }),
                        })
                        .await;
                    outcome.result.unwrap();
                }
            });
        }
        booked.join_all().await;
        let wal = std::fs::metadata(dir.path().join("wal.db-wal"))
            .unwrap()
            .len();
        // The restart size plus what a checkpoint interval of bookings writes.
        let restart_size = WAL_RESTART_PAGES as u64 * 4096;
        assert!(
            wal < 4 * restart_size,
            "the WAL grew to {wal} bytes for {} bookings",
            clients * each
        );
    }
}
