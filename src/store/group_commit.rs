//! SQLite's booking writer. Bookings waiting for the writer are committed together
//! in one transaction, each in its own savepoint, so one booking's conflict touches
//! no other and one fsync covers the group. Each booking is answered only after the
//! commit that holds it, so an acknowledged booking is as durable as with one
//! transaction per booking.
//!
//! The group runs on its own connection, opened with rusqlite, on a blocking thread:
//! the statements of a group go straight to SQLite instead of one hand-off each to
//! sqlx's connection thread and back, which is what limited the writer before.
//! While a group commits, the committer holds sqlx's only writer connection, so no
//! other write of this process has to wait in SQLite's busy handler (which sleeps).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::ToSql;
use rusqlite::{CachedStatement, Connection, OpenFlags};
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::codec::{
    self, CANCEL_REPLACED, INSERT_APPOINTMENT, INSERT_IDEMPOTENCY_KEY, NEXT_WALK_IN_NUMBER,
    OCCUPIED_SLOTS,
};
use super::{Booking, SqliteSync, StoreError};
use crate::domain::{Appointment, Kind, Token};

/// Bookings committed together at most: bounds how long the first one waits.
const MAX_GROUP: usize = 64;

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
    /// starts committing. `gate` is sqlx's single-connection writer pool.
    pub fn start(path: &str, sync: SqliteSync, gate: SqlitePool) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(
            None,
            "synchronous",
            match sync {
                SqliteSync::Full => "FULL",
                SqliteSync::Normal => "NORMAL",
            },
        )?;
        let (jobs, waiting) = mpsc::channel(1024);
        tokio::spawn(commit_groups(Arc::new(Mutex::new(conn)), gate, waiting));
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

async fn commit_groups(
    conn: Arc<Mutex<Connection>>,
    gate: SqlitePool,
    mut waiting: mpsc::Receiver<Job>,
) {
    while let Some(first) = waiting.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match waiting.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let outcomes = match gate.acquire().await {
            Ok(held) => {
                let conn = Arc::clone(&conn);
                let committed = tokio::task::spawn_blocking(move || {
                    let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
                    let outcomes = commit_group(&mut conn, &group);
                    (group, outcomes)
                })
                .await;
                drop(held);
                match committed {
                    Ok((back, outcomes)) => {
                        group = back;
                        outcomes
                    }
                    Err(e) => {
                        // The group went down with the thread; its senders with it.
                        tracing::error!(error = %e, "group commit panicked");
                        continue;
                    }
                }
            }
            Err(e) => Err(e.into()),
        };
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
}

/// One transaction for the group; on any error nothing of it is committed.
fn commit_group(
    conn: &mut Connection,
    group: &[Job],
) -> Result<Vec<Result<Appointment, StoreError>>, StoreError> {
    if !conn.is_autocommit() {
        // Left open by a group that failed half-way (or a thread that panicked).
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
    let created_at = instant(a.created_at);
    let updated_at = instant(a.updated_at);
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
            &created_at,
            &updated_at,
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
}
