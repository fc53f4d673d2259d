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

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::ToSql;
use rusqlite::{CachedStatement, Connection, OpenFlags};
use sqlx::SqlitePool;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use super::codec::{
    self, CANCEL_REPLACED, INSERT_APPOINTMENT, INSERT_IDEMPOTENCY_KEY, NEXT_WALK_IN_NUMBER,
    OCCUPIED_SLOTS,
};
use super::{Booking, SqliteSync, StoreError};
use crate::domain::{Appointment, Kind, Token};

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

/// The steps of one booking, as `codec::book_in_transaction!` runs them on
/// PostgreSQL: cancel the appointment being replaced, read the day's occupied
/// slots, let the planner choose, number the token, insert, record the
/// idempotency key.
fn book(conn: &Connection, b: &Booking) -> Result<Appointment, StoreError> {
    let date = b.date.format("%F").to_string();
    let now = instant(b.now);
    if let Some(old) = &b.replaces {
        let cancelled = bound(
            conn,
            CANCEL_REPLACED,
            &[&now, &old.as_str(), &b.clinic_id.as_str()],
        )?
        .raw_execute()?;
        if cancelled == 0 {
            return Err(codec::replaced_gone());
        }
    }
    let day: [&dyn ToSql; 3] = [&b.clinic_id.as_str(), &b.doctor_id.as_str(), &date];
    let mut taken = BTreeSet::new();
    {
        let mut occupied = bound(conn, OCCUPIED_SLOTS, &day)?;
        let mut rows = occupied.raw_query();
        while let Some(row) = rows.next()? {
            if let Ok(slot) = u32::try_from(row.get::<_, i64>(0)?) {
                taken.insert(slot);
            }
        }
    }
    let planned = (b.plan)(&taken)?;
    let token = match b.kind {
        Kind::Advance => Token::advance(planned.slot),
        Kind::WalkIn => {
            let session = i64::from(planned.slot.session());
            let mut next = bound(
                conn,
                NEXT_WALK_IN_NUMBER,
                &[day[0], day[1], day[2], &session],
            )?;
            let n: i64 = match next.raw_query().next()? {
                Some(row) => row.get(0)?,
                None => return Err(codec::corrupt("walk-in number", "missing")),
            };
            let n = u32::try_from(n).map_err(|_| codec::corrupt("walk-in number", n))?;
            Token::walk_in(planned.slot.session(), n)
        }
    };
    let a = codec::new_appointment(b, planned, token);
    // A new appointment is created and last updated at the booking's `now`.
    debug_assert!(a.created_at == b.now && a.updated_at == b.now);
    bound(
        conn,
        INSERT_APPOINTMENT,
        &[
            &a.id.as_str(),
            &a.clinic_id.as_str(),
            &a.doctor_id.as_str(),
            &date,
            &i64::from(a.session_index),
            &i64::from(a.slot_index),
            &a.time,
            &a.kind.as_str(),
            &i64::from(a.numeric_token),
            &a.token_number,
            &a.status.as_str(),
            &a.patient_name,
            &a.patient_phone,
            &a.booked_via,
            &now,
            &now,
            &a.previous_appointment_id.as_ref().map(|p| p.as_str()),
        ],
    )?
    .raw_execute()
    .map_err(refused)?;
    if let Some(key) = &b.idempotency {
        let body = codec::idempotent_body(&a)?;
        bound(
            conn,
            INSERT_IDEMPOTENCY_KEY,
            &[
                &b.clinic_id.as_str(),
                &key.key_hash,
                &key.request_hash,
                &201_i64,
                &body,
                &now,
            ],
        )?
        .raw_execute()
        .map_err(refused)?;
    }
    Ok(a)
}

/// A cached statement with `values[n - 1]` bound to each `$n`, as sqlx binds them,
/// so the SQL text is the one both backends share.
fn bound<'c>(
    conn: &'c Connection,
    sql: &str,
    values: &[&dyn ToSql],
) -> Result<CachedStatement<'c>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    for index in 1..=statement.parameter_count() {
        let n = statement
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$')?.parse::<usize>().ok())
            .filter(|n| (1..=values.len()).contains(n))
            .ok_or_else(|| codec::corrupt("placeholder", format!("{index} of {sql}")))?;
        statement.raw_bind_parameter(index, values[n - 1])?;
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
            codec::unique_violation_named(message)
        }
        _ => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        use crate::booking::rules::PlannedSlot;
        use crate::domain::schedule::tests::doctor;
        use crate::domain::{AppointmentId, Clinic, Patient, SlotIndex};
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
