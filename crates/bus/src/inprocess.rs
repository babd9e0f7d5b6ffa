//! The bus of the embedded default: a [`WorkQueue`] fed straight from the event store,
//! in this process, with no broker.
//!
//! It keeps the promises a broker's durable consumer keeps, for one process:
//!
//! - every event of the chosen types after the queue's checkpoint is handed out, in log
//!   order, and comes back until it is acknowledged: after [`InProcessConfig::ack_wait`]
//!   when its worker went quiet, after the delay asked for by
//!   [`WorkItem::retry_after`](crate::WorkItem::retry_after);
//! - the checkpoint is the position before the oldest unacknowledged event, written to
//!   a file (atomically, by rename) as acknowledgements move it, so a restart resumes
//!   without a gap. Events acknowledged after the oldest unacknowledged one are handed
//!   out again after a restart: workers are idempotent by delivery id, as with a broker.
//!
//! Several processes must not share one queue file: with more than one process, use a
//! broker (NATS).

use crate::{BusError, Settle, WorkItem, WorkQueue};
use async_trait::async_trait;
use futures::StreamExt;
use homeroom_eventstore::{EventStore, Position, RecordedEvent};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How an in-process queue hands out work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InProcessConfig {
    /// How long a handed-out item may stay unsettled before it is handed out again.
    pub ack_wait: Duration,
    /// The most events read ahead of the workers.
    pub read_ahead: usize,
    /// The longest pause before resubscribing after the store failed.
    pub max_backoff: Duration,
}

impl Default for InProcessConfig {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(60),
            read_ahead: 4_096,
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Why an in-process queue could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum InProcessError {
    /// The checkpoint file cannot be read or holds something else.
    #[error("queue checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// One event in the queue's care.
#[derive(Debug, Clone)]
struct Entry {
    event: RecordedEvent,
    attempt: u32,
    /// The last position read before it: where a restart resumes while it is pending.
    before: Position,
}

/// Where an unacknowledged event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Waiting to be handed out (in `ready`).
    Ready,
    /// Handed out; comes back at the instant.
    Out(Instant),
    /// Asked to come back at the instant.
    Delayed(Instant),
}

#[derive(Debug, Default)]
struct State {
    /// Every unacknowledged event read so far, by position.
    pending: BTreeMap<Position, (Entry, Place)>,
    /// Positions ready to hand out, oldest first.
    ready: VecDeque<Position>,
    /// The last position the feeder has read (matching or not).
    fed: Position,
    /// The checkpoint last written.
    written: Position,
    closed: bool,
}

impl State {
    /// Everything at or before it is acknowledged (or not the queue's business).
    fn checkpoint(&self) -> Position {
        match self.pending.values().next() {
            // Just before the oldest unacknowledged event.
            Some((entry, _)) => entry.before,
            None => self.fed,
        }
    }

    /// Moves due items back to `ready`; the next instant something becomes due.
    fn release_due(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut due = Vec::new();
        for (position, (_, place)) in &self.pending {
            match place {
                Place::Out(at) | Place::Delayed(at) if *at <= now => due.push(*position),
                Place::Out(at) | Place::Delayed(at) => {
                    next = Some(next.map_or(*at, |n| n.min(*at)));
                }
                Place::Ready => {}
            }
        }
        for position in due {
            if let Some((entry, place)) = self.pending.get_mut(&position) {
                if matches!(place, Place::Out(_)) {
                    // Handed out and never settled: the worker is gone.
                    entry.attempt += 1;
                }
                *place = Place::Ready;
                self.ready.push_back(position);
            }
        }
        // Keep handing out in log order.
        self.ready.make_contiguous().sort();
        next
    }
}

struct Inner {
    state: Mutex<State>,
    /// Work arrived or came due.
    work: Notify,
    /// Room for the feeder to read ahead.
    room: Notify,
    checkpoint_file: PathBuf,
    config: InProcessConfig,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the checkpoint if it moved (temporary file, then rename).
    fn persist(&self) {
        let checkpoint = {
            let state = self.lock();
            let checkpoint = state.checkpoint();
            if checkpoint == state.written {
                return;
            }
            checkpoint
        };
        let tmp = self.checkpoint_file.with_extension("tmp");
        let written = std::fs::write(&tmp, checkpoint.to_string())
            .and_then(|()| std::fs::rename(&tmp, &self.checkpoint_file));
        match written {
            Ok(()) => {
                let mut state = self.lock();
                if state.written < checkpoint {
                    state.written = checkpoint;
                }
            }
            Err(error) => tracing::warn!(
                path = %self.checkpoint_file.display(),
                %error,
                "cannot write the queue checkpoint; work after it may be handed out again after a restart"
            ),
        }
    }

    fn settle(&self, position: Position, outcome: Option<Instant>) {
        {
            let mut state = self.lock();
            match outcome {
                None => {
                    state.pending.remove(&position);
                }
                Some(at) => {
                    if let Some((entry, place)) = state.pending.get_mut(&position) {
                        entry.attempt += 1;
                        *place = Place::Delayed(at);
                    }
                }
            }
        }
        if outcome.is_none() {
            self.room.notify_one();
            self.persist();
        }
        self.work.notify_waiters();
    }
}

/// A durable queue of one process over the event store. Cheap to clone.
#[derive(Clone)]
pub struct InProcessQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for InProcessQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessQueue")
            .field("checkpoint_file", &self.inner.checkpoint_file)
            .finish_non_exhaustive()
    }
}

impl InProcessQueue {
    /// Opens the queue whose checkpoint lives in `checkpoint_file` (created on the first
    /// acknowledgement) and starts feeding it every event of `event_types` after that
    /// checkpoint from `store`, until [`InProcessQueue::close`].
    ///
    /// # Errors
    /// [`InProcessError::Checkpoint`] when the file exists but holds no position.
    pub fn open(
        store: Arc<dyn EventStore>,
        checkpoint_file: &Path,
        event_types: &[&'static str],
        config: InProcessConfig,
    ) -> Result<Self, InProcessError> {
        let bad = |reason: String| InProcessError::Checkpoint {
            path: checkpoint_file.to_owned(),
            reason,
        };
        let start = match std::fs::read_to_string(checkpoint_file) {
            Ok(text) => text
                .trim()
                .parse::<Position>()
                .map_err(|e| bad(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Position::START,
            Err(e) => return Err(bad(e.to_string())),
        };
        if let Some(dir) = checkpoint_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
        }
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                fed: start,
                written: start,
                ..State::default()
            }),
            work: Notify::new(),
            room: Notify::new(),
            checkpoint_file: checkpoint_file.to_owned(),
            config,
        });
        tokio::spawn(feed(
            inner.clone(),
            store,
            event_types.iter().map(|t| (*t).to_owned()).collect(),
        ));
        Ok(Self { inner })
    }

    /// Stops reading the log and wakes every waiting `fetch` (which then answers
    /// [`BusError::Closed`]); what is unacknowledged is handed out again after a restart.
    pub fn close(&self) {
        self.inner.lock().closed = true;
        self.inner.work.notify_waiters();
        self.inner.room.notify_waiters();
    }

    /// The position a restart would resume after.
    pub fn checkpoint(&self) -> Position {
        self.inner.lock().checkpoint()
    }
}

/// Reads the log into the queue, resubscribing after failures, until closed.
async fn feed(inner: Arc<Inner>, store: Arc<dyn EventStore>, types: Vec<String>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let after = inner.lock().fed;
        let mut events = store.subscribe_all(after);
        loop {
            // Wait for room before reading further ahead of the workers.
            loop {
                let room = inner.room.notified();
                {
                    let state = inner.lock();
                    if state.closed {
                        return;
                    }
                    if state.pending.len() < inner.config.read_ahead {
                        break;
                    }
                }
                room.await;
            }
            let next = tokio::select! {
                next = events.next() => next,
                () = closed(&inner) => return,
            };
            match next {
                Some(Ok(event)) => {
                    backoff = Duration::from_millis(100);
                    let mut state = inner.lock();
                    let before = state.fed;
                    state.fed = event.position;
                    if types.contains(&event.event_type) {
                        let position = event.position;
                        let entry = Entry {
                            event,
                            attempt: 1,
                            before,
                        };
                        state.pending.insert(position, (entry, Place::Ready));
                        state.ready.push_back(position);
                        drop(state);
                        inner.work.notify_waiters();
                    }
                }
                Some(Err(homeroom_eventstore::StoreError::Closed)) => {
                    // The store shuts down: so does the process.
                    return;
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "the queue's subscription failed; resubscribing");
                    break;
                }
                None => break,
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(inner.config.max_backoff);
    }
}

/// Resolves once the queue is closed.
async fn closed(inner: &Inner) {
    loop {
        let woken = inner.work.notified();
        if inner.lock().closed {
            return;
        }
        woken.await;
    }
}

struct InProcessSettle {
    inner: Arc<Inner>,
    position: Position,
}

#[async_trait]
impl Settle for InProcessSettle {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.inner.settle(self.position, None);
        Ok(())
    }

    async fn retry_after(self: Box<Self>, delay: Duration) -> Result<(), BusError> {
        self.inner
            .settle(self.position, Some(Instant::now() + delay));
        Ok(())
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        let mut state = self.inner.lock();
        if let Some((_, place)) = state.pending.get_mut(&self.position) {
            if matches!(place, Place::Out(_)) {
                *place = Place::Out(Instant::now() + self.inner.config.ack_wait);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl WorkQueue for InProcessQueue {
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<WorkItem>, BusError> {
        let give_up = Instant::now() + wait;
        loop {
            let woken = self.inner.work.notified();
            let next_due = {
                let mut state = self.inner.lock();
                if state.closed {
                    return Err(BusError::Closed);
                }
                let now = Instant::now();
                let next_due = state.release_due(now);
                let mut items = Vec::new();
                while items.len() < max.max(1) {
                    let Some(position) = state.ready.pop_front() else {
                        break;
                    };
                    let deadline = now + self.inner.config.ack_wait;
                    if let Some((entry, place)) = state.pending.get_mut(&position) {
                        if *place != Place::Ready {
                            continue;
                        }
                        *place = Place::Out(deadline);
                        items.push(WorkItem::new(
                            entry.event.clone(),
                            entry.attempt,
                            Box::new(InProcessSettle {
                                inner: self.inner.clone(),
                                position,
                            }),
                            self.inner.config.ack_wait,
                        ));
                    }
                }
                if !items.is_empty() {
                    return Ok(items);
                }
                next_due
            };
            let until = next_due.map_or(give_up, |due| due.min(give_up));
            if Instant::now() >= give_up {
                return Ok(Vec::new());
            }
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
