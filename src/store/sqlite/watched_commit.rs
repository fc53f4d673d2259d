//! SQLite's watched-document writer. A forwarder sends one document per request, and
//! on SQLite each request was a transaction and an fsync of its own (about 1,000 a
//! second on the benchmark's machine). Requests waiting for the writer are now
//! stored in one transaction, each in its own savepoint, so one request's failure
//! touches no other and one fsync covers them all. Each request is answered only
//! after the commit that holds it: an acknowledged document is as durable as before.

use chrono::{DateTime, Utc};
use sqlx::{Acquire, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::domain::{Touched, WatchedAppointment};
use crate::store::detection::upsert_watched_rows;
use crate::store::StoreError;

/// Requests stored together at most: bounds how long the first one waits.
const MAX_GROUP: usize = 64;

type Stored = Result<(Vec<bool>, Touched), StoreError>;

struct Job {
    source: String,
    documents: Vec<WatchedAppointment>,
    received_at: DateTime<Utc>,
    reply: oneshot::Sender<Stored>,
}

/// The handle the SQLite store writes watched documents through; its task stops
/// when the handle is dropped.
pub struct WatchedCommitter {
    jobs: mpsc::Sender<Job>,
}

impl WatchedCommitter {
    /// Starts the committer's task over sqlx's single-connection writer pool.
    pub fn start(writer: SqlitePool) -> Self {
        let (jobs, waiting) = mpsc::channel(1024);
        tokio::spawn(commit_groups(writer, waiting));
        Self { jobs }
    }

    /// Stores `documents` of `source` and waits for the commit that holds them.
    pub async fn upsert(
        &self,
        source: String,
        documents: Vec<WatchedAppointment>,
        received_at: DateTime<Utc>,
    ) -> Stored {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            source,
            documents,
            received_at,
            reply,
        };
        match self.jobs.send(job).await {
            Ok(()) => answer.await.unwrap_or(Err(StoreError::GroupCommitFailed)),
            Err(_) => Err(StoreError::GroupCommitFailed),
        }
    }
}

async fn commit_groups(writer: SqlitePool, mut waiting: mpsc::Receiver<Job>) {
    while let Some(first) = waiting.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match waiting.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        match commit_group(&writer, &group).await {
            Ok(stored) => {
                for (job, stored) in group.into_iter().zip(stored) {
                    let _ = job.reply.send(stored);
                }
            }
            Err(e) => {
                // Nothing of the group was committed: every request is told so.
                tracing::warn!(error = %e, requests = group.len(), "storing watched documents failed");
                for job in group {
                    let _ = job.reply.send(Err(StoreError::GroupCommitFailed));
                }
            }
        }
    }
}

/// One transaction holding every job of `group`, each in a savepoint: what each
/// stored, or why it stored nothing.
async fn commit_group(writer: &SqlitePool, group: &[Job]) -> Result<Vec<Stored>, StoreError> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let mut stored = Vec::with_capacity(group.len());
    for job in group {
        let mut savepoint = tx.begin().await?;
        let done = upsert_watched_rows(
            &mut savepoint,
            job.source.as_str(),
            &job.documents,
            job.received_at,
        )
        .await;
        match done {
            Ok(done) => {
                savepoint.commit().await?;
                stored.push(Ok(done));
            }
            Err(e) => {
                savepoint.rollback().await?;
                stored.push(Err(e));
            }
        }
    }
    tx.commit().await?;
    Ok(stored)
}
