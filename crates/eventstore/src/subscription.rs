//! Catch-up-then-live subscriptions, written once for every backend.
//!
//! A backend provides two things: a gap-free [`EventReader::read_all`] and a
//! [`CommitSignal`] it raises after each commit becomes readable (in-process for SQLite
//! and the in-memory store, LISTEN/NOTIFY for PostgreSQL). [`catch_up_then_live`] pages
//! through the stored log, then sleeps on the signal instead of polling.

use crate::{EventReader, EventStream, Position, RecordedEvent, StoreError};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::watch;

/// Events a subscription reads per round trip.
pub const PAGE: usize = 512;

/// Raised by a backend whenever newly committed events may be readable.
#[derive(Debug, Clone)]
pub struct CommitSignal(Arc<watch::Sender<u64>>);

impl Default for CommitSignal {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl CommitSignal {
    /// Wakes every subscription so it reads again.
    pub fn notify(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver a subscription waits on.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

struct State<R: ?Sized> {
    reader: Arc<R>,
    wake: watch::Receiver<u64>,
    after: Position,
    buffer: VecDeque<RecordedEvent>,
    failed: bool,
}

/// Every event after `after`: the stored log first, then new commits as `signal` reports
/// them, in delivery order and without gaps (it only ever reads after the last event it
/// delivered). Ends after yielding the first read error.
pub fn catch_up_then_live<R>(reader: Arc<R>, signal: &CommitSignal, after: Position) -> EventStream
where
    R: EventReader + ?Sized + 'static,
{
    let state = State {
        reader,
        wake: signal.watch(),
        after,
        buffer: VecDeque::new(),
        failed: false,
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        if s.failed {
            return None;
        }
        loop {
            if let Some(event) = s.buffer.pop_front() {
                s.after = event.position;
                return Some((Ok(event), s));
            }
            // Mark the signal seen *before* reading: a commit that lands after this read
            // bumps it again, so `changed()` below cannot miss it.
            s.wake.borrow_and_update();
            match s.reader.read_all(s.after, PAGE).await {
                Ok(events) if !events.is_empty() => s.buffer.extend(events),
                Ok(_) => {
                    if s.wake.changed().await.is_err() {
                        s.failed = true;
                        return Some((Err(StoreError::Closed), s));
                    }
                }
                Err(e) => {
                    s.failed = true;
                    return Some((Err(e), s));
                }
            }
        }
    }))
}
