//! An in-process model of the KurrentDB semantics the adapter relies on (feature
//! `testing`), so the adapter's own logic (hash chain, expected revisions, retries,
//! indexes, resubscription) runs the conformance kit where no server is reachable.
//!
//! It is a model, written from the server's documented and observed behaviour, not the
//! server: passing on it proves the adapter's protocol, not the client or the server.
//! What it models:
//!
//! - streams of events with revisions from 0; appends are atomic and checked against
//!   the expected stream state; a failed check is the client's
//!   [`kurrentdb::Error::WrongExpectedVersion`] with the current revision, except that a
//!   repeated write of the same event ids at the same place succeeds without writing
//!   (KurrentDB's idempotent append);
//! - one log, `$all`, in append order; positions are `(commit, prepare)` pairs where the
//!   events of one append share the commit position of the first and have their own
//!   prepare positions (as older servers report; current ones report equal pairs),
//!   spaced like byte offsets, so that off-by-one position bugs show;
//! - filtered `$all` reads that include an event at exactly the start position, and
//!   filtered subscriptions that deliver what comes *after* their start, catch-up then
//!   live, with a filter checkpoint whenever they pass other streams' events;
//! - faults on demand: subscriptions dropped after some events with a chosen error
//!   (e.g. gRPC `ABORTED`, the server's "consumer too slow"), subscriptions that repeat
//!   events from before their start, attacker writes that bypass the adapter, in-place
//!   edits of stored bytes, and truncation.

use crate::backend::{Backend, Deliveries, Delivery};
use crate::codec::{Outgoing, RawEvent};
use crate::{ConnectError, KurrentConfig, KurrentStore};
use async_trait::async_trait;
use futures::StreamExt;
use kurrentdb::{CurrentRevision, StreamPosition, StreamState};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// Where the first event lands: the server's log starts with records that are not events.
const FIRST_POSITION: u64 = 256;

#[derive(Default)]
struct Log {
    /// Every event in log order.
    events: Vec<RawEvent>,
    /// Per stream, indexes into `events` in revision order.
    streams: HashMap<String, Vec<usize>>,
    /// Per stream, the first revision reads still return (`$tb`, truncate-before).
    truncated: HashMap<String, u64>,
    /// The position the next record gets.
    next: u64,
}

#[derive(Default)]
struct Faults {
    /// For each subscription opened from now on, in turn: after how many events it is
    /// dropped, and with which error.
    drops: VecDeque<(usize, kurrentdb::Error)>,
    /// How many events from before their start subscriptions deliver again.
    repeat: usize,
    /// Where each subscription was opened, in order.
    opened: Vec<StreamPosition<kurrentdb::Position>>,
    /// Per stream, failures of the next appends to it: the error, and whether the write
    /// happened anyway (an acknowledgement lost on the way back).
    appends: HashMap<String, VecDeque<(kurrentdb::Error, bool)>>,
    /// How often every open subscription was cut, and with which error last.
    cuts: (u64, Option<kurrentdb::Error>),
}

struct Shared {
    log: Mutex<Log>,
    faults: Mutex<Faults>,
    changed: watch::Sender<u64>,
}

/// The model server. Clones share one log.
#[derive(Clone)]
pub struct SimulatedServer {
    shared: Arc<Shared>,
}

impl Default for SimulatedServer {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SimulatedServer {
    /// An empty server.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                log: Mutex::new(Log {
                    next: FIRST_POSITION,
                    ..Log::default()
                }),
                faults: Mutex::new(Faults::default()),
                changed: watch::channel(0).0,
            }),
        }
    }

    /// A store on this server.
    ///
    /// # Errors
    /// [`ConnectError::Config`] for an unusable configuration.
    pub fn store(&self, config: &KurrentConfig) -> Result<KurrentStore, ConnectError> {
        KurrentStore::with_backend(Arc::new(self.clone()), config)
    }

    /// Drops the next subscription opened after it delivered `after` events, with `error`.
    /// Calls queue up: each applies to one subscription, in order.
    pub fn drop_next_subscription(&self, after: usize, error: kurrentdb::Error) {
        lock(&self.shared.faults).drops.push_back((after, error));
    }

    /// Makes every subscription opened from now on first deliver again the `count`
    /// matching events up to its start position (as a careless server might).
    pub fn repeat_before_start(&self, count: usize) {
        lock(&self.shared.faults).repeat = count;
    }

    /// Cuts every subscription open now with `error` (a lost connection, or the server
    /// deciding they are too slow).
    pub fn drop_open_subscriptions(&self, error: kurrentdb::Error) {
        {
            let mut faults = lock(&self.shared.faults);
            faults.cuts = (faults.cuts.0 + 1, Some(error));
        }
        self.shared.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The cut a subscription opened at `seen` cuts has not seen yet.
    fn cut_since(&self, seen: u64) -> Option<kurrentdb::Error> {
        let faults = lock(&self.shared.faults);
        (faults.cuts.0 > seen)
            .then(|| faults.cuts.1.clone())
            .flatten()
    }

    /// Fails the next append to the KurrentDB stream `stream` with `error`; with
    /// `written`, the events are stored all the same (the acknowledgement was lost).
    pub fn fail_next_append(&self, stream: &str, error: kurrentdb::Error, written: bool) {
        lock(&self.shared.faults)
            .appends
            .entry(stream.to_owned())
            .or_default()
            .push_back((error, written));
    }

    /// Where each subscription was opened, in order.
    pub fn subscriptions_opened(&self) -> Vec<StreamPosition<kurrentdb::Position>> {
        lock(&self.shared.faults).opened.clone()
    }

    /// Overwrites the stored data bytes of `stream`'s event at `revision` in place, as an
    /// edit of the server's files would, leaving everything else as it was.
    ///
    /// # Panics
    /// When there is no such event.
    pub fn overwrite_data(&self, stream: &str, revision: u64, data: Vec<u8>) {
        let mut log = lock(&self.shared.log);
        let index = log.streams[stream][usize::try_from(revision).expect("a revision")];
        log.events[index].data = data;
    }

    /// Hides the events of `stream` before `revision` from reads (stream metadata
    /// `$tb`, what a delete of the stream's start looks like).
    pub fn truncate_before(&self, stream: &str, revision: u64) {
        lock(&self.shared.log)
            .truncated
            .insert(stream.to_owned(), revision);
    }

    /// Appends raw events (type, data bytes, metadata bytes) to `stream` with no check,
    /// as someone writing with their own client, bypassing the adapter, would.
    pub fn append_raw(&self, stream: &str, events: Vec<(String, Vec<u8>, Vec<u8>)>) {
        self.write(
            stream,
            events
                .into_iter()
                .map(|(event_type, data, metadata)| {
                    (uuid::Uuid::now_v7(), event_type, data, metadata)
                })
                .collect(),
        );
    }

    fn write(&self, stream: &str, events: Vec<(uuid::Uuid, String, Vec<u8>, Vec<u8>)>) {
        write_locked(&mut lock(&self.shared.log), stream, events);
        self.shared.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The readable events of a stream, in revision order.
    fn stream_events(&self, stream: &str) -> Vec<RawEvent> {
        let log = lock(&self.shared.log);
        let from = log.truncated.get(stream).copied().unwrap_or(0);
        log.streams
            .get(stream)
            .map(|indexes| {
                indexes
                    .iter()
                    .map(|&i| log.events[i].clone())
                    .filter(|e| e.revision >= from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The matching events of the log from `from`, and the position of the log's end.
    fn log_from(
        &self,
        from: StreamPosition<kurrentdb::Position>,
        inclusive: bool,
        prefixes: &[String],
    ) -> (Vec<RawEvent>, Option<kurrentdb::Position>) {
        let log = lock(&self.shared.log);
        let after = |p: kurrentdb::Position| match from {
            StreamPosition::Start => true,
            StreamPosition::End => false,
            StreamPosition::Position(at) => p > at || (inclusive && p == at),
        };
        let events = log
            .events
            .iter()
            .filter(|e| after(e.position) && prefixes.iter().any(|p| e.stream.starts_with(p)))
            .cloned()
            .collect();
        (events, log.events.last().map(|e| e.position))
    }
}

/// Appends events to the log, as one write (the caller holds the log's lock).
fn write_locked(log: &mut Log, stream: &str, events: Vec<(uuid::Uuid, String, Vec<u8>, Vec<u8>)>) {
    let commit = log.next;
    for (id, event_type, data, metadata) in events {
        let prepare = log.next;
        log.next += 64 + (data.len() + metadata.len()) as u64;
        let index = log.events.len();
        let revisions = log.streams.entry(stream.to_owned()).or_default();
        let revision = revisions.len() as u64;
        revisions.push(index);
        log.events.push(RawEvent {
            stream: stream.to_owned(),
            revision,
            id,
            event_type,
            data,
            metadata,
            position: kurrentdb::Position { commit, prepare },
        });
    }
    // The commit record of the append.
    log.next += 32;
}

#[async_trait]
impl Backend for SimulatedServer {
    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        count: usize,
    ) -> kurrentdb::Result<Vec<RawEvent>> {
        Ok(self
            .stream_events(stream)
            .into_iter()
            .filter(|e| e.revision >= from)
            .take(count)
            .collect())
    }

    async fn read_last(&self, stream: &str) -> kurrentdb::Result<Option<RawEvent>> {
        Ok(self.stream_events(stream).pop())
    }

    async fn read_all(
        &self,
        from: StreamPosition<kurrentdb::Position>,
        count: usize,
        prefixes: &[String],
    ) -> kurrentdb::Result<Vec<RawEvent>> {
        let (mut events, _) = self.log_from(from, true, prefixes);
        events.truncate(count);
        Ok(events)
    }

    async fn read_all_last(&self, prefixes: &[String]) -> kurrentdb::Result<Option<RawEvent>> {
        Ok(self.log_from(StreamPosition::Start, true, prefixes).0.pop())
    }

    async fn probe(&self) -> kurrentdb::Result<()> {
        Ok(())
    }

    async fn append(
        &self,
        stream: &str,
        state: StreamState,
        events: Vec<Outgoing>,
    ) -> kurrentdb::Result<()> {
        let ids: Vec<_> = events.iter().map(|e| e.id).collect();
        let fault = lock(&self.shared.faults)
            .appends
            .get_mut(stream)
            .and_then(VecDeque::pop_front);
        if let Some((error, false)) = fault {
            return Err(error);
        }
        {
            let mut log = lock(&self.shared.log);
            let stored: Vec<uuid::Uuid> = log
                .streams
                .get(stream)
                .map(|indexes| indexes.iter().map(|&i| log.events[i].id).collect())
                .unwrap_or_default();
            let current = match stored.len() {
                0 => CurrentRevision::NoStream,
                n => CurrentRevision::Current(n as u64 - 1),
            };
            let next = match state {
                StreamState::Any => None,
                StreamState::NoStream => Some(0),
                StreamState::StreamExists => (!stored.is_empty()).then_some(stored.len() as u64),
                StreamState::StreamRevision(r) => Some(r + 1),
            };
            let fits = match state {
                StreamState::Any => true,
                StreamState::StreamExists => !stored.is_empty(),
                _ => next == Some(stored.len() as u64),
            };
            if !fits {
                // The same ids already where this write expected to put them: KurrentDB
                // acknowledges the repeat without writing it.
                let at = next
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(usize::MAX);
                let repeat = stored
                    .get(at..at.saturating_add(ids.len()))
                    .is_some_and(|s| s == ids.as_slice());
                if repeat {
                    return Ok(());
                }
                return Err(kurrentdb::Error::WrongExpectedVersion {
                    expected: state,
                    current,
                });
            }
            write_locked(
                &mut log,
                stream,
                events
                    .iter()
                    .map(|e| {
                        (
                            e.id,
                            e.event_type.clone(),
                            e.data_bytes(),
                            e.metadata_bytes(),
                        )
                    })
                    .collect(),
            );
        }
        self.shared.changed.send_modify(|n| *n = n.wrapping_add(1));
        match fault {
            Some((error, _)) => Err(error),
            None => Ok(()),
        }
    }

    fn subscribe(
        &self,
        from: StreamPosition<kurrentdb::Position>,
        prefixes: &[String],
    ) -> Deliveries {
        let (drop_after, repeat, cuts) = {
            let mut faults = lock(&self.shared.faults);
            faults.opened.push(from);
            (faults.drops.pop_front(), faults.repeat, faults.cuts.0)
        };
        let from = match from {
            // "From the end" means after the last event there is now.
            StreamPosition::End => lock(&self.shared.log)
                .events
                .last()
                .map_or(StreamPosition::Start, |e| {
                    StreamPosition::Position(e.position)
                }),
            other => other,
        };
        let mut buffer = VecDeque::new();
        if let (StreamPosition::Position(at), true) = (from, repeat > 0) {
            let (before, _) = self.log_from(StreamPosition::Start, true, prefixes);
            let upto: Vec<_> = before.into_iter().filter(|e| e.position <= at).collect();
            let skip = upto.len().saturating_sub(repeat);
            buffer.extend(upto.into_iter().skip(skip).map(Delivery::Event));
        }
        let state = Subscription {
            server: self.clone(),
            prefixes: prefixes.to_vec(),
            wake: self.shared.changed.subscribe(),
            cursor: from,
            buffer,
            delivered: 0,
            drop_after,
            cuts,
        };
        futures::stream::unfold(Some(state), |state| async move {
            let mut s = state?;
            loop {
                if let Some((after, error)) = &s.drop_after {
                    if s.delivered >= *after {
                        return Some((Err(error.clone()), None));
                    }
                }
                if let Some(error) = s.server.cut_since(s.cuts) {
                    return Some((Err(error), None));
                }
                if let Some(delivery) = s.buffer.pop_front() {
                    if matches!(delivery, Delivery::Event(_)) {
                        s.delivered += 1;
                    }
                    return Some((Ok(delivery), Some(s)));
                }
                s.wake.borrow_and_update();
                let (events, end) = s.server.log_from(s.cursor, false, &s.prefixes);
                if let Some(last) = events.last() {
                    s.cursor = StreamPosition::Position(last.position);
                    s.buffer.extend(events.into_iter().map(Delivery::Event));
                    continue;
                }
                if let Some(end) = end {
                    let behind = match s.cursor {
                        StreamPosition::Position(at) => at < end,
                        StreamPosition::Start => true,
                        StreamPosition::End => false,
                    };
                    if behind {
                        // Past other streams' events: a filter checkpoint.
                        s.cursor = StreamPosition::Position(end);
                        s.buffer.push_back(Delivery::Checkpoint(end));
                        continue;
                    }
                }
                if s.wake.changed().await.is_err() {
                    return None;
                }
            }
        })
        .boxed()
    }
}

struct Subscription {
    server: SimulatedServer,
    prefixes: Vec<String>,
    wake: watch::Receiver<u64>,
    cursor: StreamPosition<kurrentdb::Position>,
    buffer: VecDeque<Delivery>,
    delivered: usize,
    drop_after: Option<(usize, kurrentdb::Error)>,
    /// The cuts made before it opened.
    cuts: u64,
}
