//! Group commit for pooled appends: concurrent appends to different streams share one
//! statement, so one transaction (and one WAL flush) serves many of them.
//!
//! An append whose stream head is cached (see [`crate::append::HeadCache`]) and admits
//! its expectation has everything it needs to insert without reading: versions, hash
//! chain, rows. It hands those rows to the group task instead of inserting them itself.
//! The task takes every request waiting (at most [`MAX_GROUP`], one per stream) and
//! inserts them all with one `INSERT … SELECT FROM unnest(…)`, which is its own
//! transaction, on a pooled connection; up to [`IN_FLIGHT`] groups run at once, so the
//! next group forms while one commits.
//!
//! A group is all or nothing. If its statement fails for any reason (a stale cached
//! head hitting `UNIQUE (stream, version)`, a reused event id, a lost connection),
//! every member is told to [`Grouped::Alone`]: it forgets its cached head and appends
//! the careful way, reading the head first. That path decides conflicts and idempotent
//! retries exactly as before, including for a group that did commit but whose answer
//! was lost (the events are found by id). Delivery order still follows stream order:
//! a cached head was written by a committed transaction, so the group's transaction id
//! is younger than it.

use crate::append::CachedHead;
use crate::error::store_error;
use crate::read::parse_xid;
use chrono::{DateTime, Utc};
use homeroom_eventstore::{AppendResult, Position, StoreError, StreamId};
use sqlx::postgres::PgPool;
use sqlx::Row;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Appends in one group at most.
pub(crate) const MAX_GROUP: usize = 128;

/// Groups being inserted at once. More lets the next group form while one commits;
/// each holds a pooled connection.
pub(crate) const IN_FLIGHT: usize = 4;

/// Appends waiting for the task at most; beyond this appends wait to be queued.
const QUEUE: usize = 4 * MAX_GROUP;

/// Every row of a group, in order; each append's rows in version order.
const INSERT_GROUP: &str = concat!(
    insert_many_streams!("stream, seq"),
    "SELECT stream, max(seq) AS last_seq, pg_current_xact_id()::text AS commit_text
FROM ins GROUP BY stream"
);

/// The rows one append inserts, hash-chained onto its cached head by the caller.
pub(crate) struct Rows {
    pub(crate) stream: StreamId,
    pub(crate) event_ids: Vec<Uuid>,
    pub(crate) versions: Vec<i64>,
    pub(crate) event_types: Vec<String>,
    pub(crate) schema_versions: Vec<i64>,
    pub(crate) data: Vec<String>,
    pub(crate) metadata: Vec<String>,
    pub(crate) command_ids: Vec<Uuid>,
    pub(crate) recorded_at: DateTime<Utc>,
    pub(crate) prev_hashes: Vec<String>,
    pub(crate) hashes: Vec<String>,
    /// The stream's version after these rows.
    pub(crate) last_version: u64,
}

/// What became of a grouped append.
pub(crate) enum Grouped {
    /// Committed with its group: the result and the stream's new head.
    Done(AppendResult, CachedHead),
    /// The group did not go through: append alone, reading the head first.
    Alone,
}

struct Request {
    rows: Rows,
    reply: oneshot::Sender<Grouped>,
}

/// The handle appends use; dropping the store's handle stops the task.
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<Request>,
    task: JoinHandle<()>,
}

impl GroupCommit {
    /// Starts the group task on `pool`.
    pub(crate) fn spawn(pool: PgPool) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(pool, requests));
        Self { queue, task }
    }

    /// Inserts `rows` with the next group; [`Grouped::Alone`] when that failed (or the
    /// task is gone).
    pub(crate) async fn append(&self, rows: Rows) -> Grouped {
        let (reply, answer) = oneshot::channel();
        if self.queue.send(Request { rows, reply }).await.is_err() {
            return Grouped::Alone;
        }
        answer.await.unwrap_or(Grouped::Alone)
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(pool: PgPool, mut requests: mpsc::Receiver<Request>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut waiting = Vec::with_capacity(MAX_GROUP);
    loop {
        // A free slot first: while every slot commits, requests pile up into a bigger
        // next group.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if requests.recv_many(&mut waiting, MAX_GROUP).await == 0 {
            return;
        }
        let mut streams = HashSet::with_capacity(waiting.len());
        let mut group = Vec::with_capacity(waiting.len());
        for request in waiting.drain(..) {
            // A second append to a stream in one group would collide with the first.
            if streams.insert(request.rows.stream.clone()) {
                group.push(request);
            } else {
                let _ = request.reply.send(Grouped::Alone);
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            insert_group(&pool, group).await;
            drop(slot);
        });
    }
}

/// Inserts one group and answers every member.
async fn insert_group(pool: &PgPool, group: Vec<Request>) {
    match try_insert(pool, &group).await {
        Ok(results) => {
            for (request, result) in group.into_iter().zip(results) {
                let _ = request.reply.send(result);
            }
        }
        Err(error) => {
            tracing::debug!(%error, appends = group.len(), "a group append failed; each goes alone");
            for request in group {
                let _ = request.reply.send(Grouped::Alone);
            }
        }
    }
}

async fn try_insert(pool: &PgPool, group: &[Request]) -> Result<Vec<Grouped>, StoreError> {
    let rows = group.iter().map(|r| &r.rows);
    let column = |f: &dyn Fn(&Rows) -> Vec<String>| -> Vec<String> {
        group.iter().flat_map(|r| f(&r.rows)).collect()
    };
    let streams = column(&|r| vec![r.stream.to_string(); r.event_ids.len()]);
    let event_types = column(&|r| r.event_types.clone());
    let data = column(&|r| r.data.clone());
    let metadata = column(&|r| r.metadata.clone());
    let prev_hashes = column(&|r| r.prev_hashes.clone());
    let hashes = column(&|r| r.hashes.clone());
    let event_ids: Vec<Uuid> = rows.clone().flat_map(|r| r.event_ids.clone()).collect();
    let versions: Vec<i64> = rows.clone().flat_map(|r| r.versions.clone()).collect();
    let schema_versions: Vec<i64> = rows
        .clone()
        .flat_map(|r| r.schema_versions.clone())
        .collect();
    let command_ids: Vec<Uuid> = rows.clone().flat_map(|r| r.command_ids.clone()).collect();
    let recorded_at: Vec<DateTime<Utc>> = rows
        .clone()
        .flat_map(|r| vec![r.recorded_at; r.event_ids.len()])
        .collect();
    let batch_ends: Vec<i64> = rows
        .flat_map(|r| vec![to_i64(r.last_version); r.event_ids.len()])
        .collect();

    let returned = sqlx::query(INSERT_GROUP)
        .bind(&event_ids)
        .bind(&streams)
        .bind(&versions)
        .bind(&event_types)
        .bind(&schema_versions)
        .bind(&data)
        .bind(&metadata)
        .bind(&command_ids)
        .bind(&recorded_at)
        .bind(&prev_hashes)
        .bind(&hashes)
        .bind(&batch_ends)
        .fetch_all(pool)
        .await
        .map_err(store_error)?;

    let mut last_seqs: HashMap<String, i64> = HashMap::with_capacity(returned.len());
    let mut commit = None;
    for row in &returned {
        let stream: String = row.try_get("stream").map_err(store_error)?;
        let seq: i64 = row.try_get("last_seq").map_err(store_error)?;
        let text: String = row.try_get("commit_text").map_err(store_error)?;
        commit = Some(parse_xid(&text).map_err(|reason| StoreError::Unavailable(reason.into()))?);
        last_seqs.insert(stream, seq);
    }
    let mismatch = || {
        StoreError::unavailable(GroupAnswer {
            asked: group.len(),
            answered: last_seqs.len(),
        })
    };
    let Some(tx_id) = commit else {
        return Err(mismatch());
    };
    group
        .iter()
        .map(|request| {
            let rows = &request.rows;
            let seq = last_seqs
                .get(rows.stream.as_str())
                .copied()
                .ok_or_else(mismatch)?;
            let hash = rows.hashes.last().cloned().unwrap_or_default();
            Ok(Grouped::Done(
                AppendResult {
                    version: rows.last_version,
                    position: Position {
                        commit: tx_id,
                        sequence: u64::try_from(seq).unwrap_or(0),
                    },
                },
                CachedHead::new(rows.last_version, hash, tx_id),
            ))
        })
        .collect()
}

/// The group's statement did not answer for every stream it inserted into (never seen;
/// the members then append alone, where idempotency sorts out what was stored).
#[derive(Debug, thiserror::Error)]
#[error("a group insert answered for {answered} of its {asked} streams")]
struct GroupAnswer {
    asked: usize,
    answered: usize,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
