//! The driver: turns a run of events into committed batches for a set of lanes,
//! whatever feeds it (a live subscription, a catch-up read, a rebuild).
//!
//! Failure policy, the same everywhere:
//! - a failed batch is rolled back whole, and the next attempts go one event at a time
//!   up to the end of the failed batch, so the events before a bad one still commit and
//!   the bad one is known exactly;
//! - a transient failure (database busy or unreachable) is retried with backoff for as
//!   long as it lasts;
//! - a deterministic failure of one projector on one event is retried
//!   `park_after` times, then the projector is parked there (live) or the rebuild
//!   stops (rebuild), with the error in the status;
//! - an event that does not decode parks every projector that needs it at once:
//!   decoding again cannot help.

use super::lanes::{self, BatchError, LaneSet};
use super::Inner;
use crate::codec::{decode, DecodeError};
use crate::error::ProjectionError;
use crate::projector::Envelope;
use homeroom_eventstore::{Position, RecordedEvent};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// An event read from the log, ready for a batch, or the reason it cannot be applied
/// (rare, so boxed).
pub(crate) type Decoded = Result<Envelope, Box<(RecordedEvent, DecodeError)>>;

/// Decodes `recorded` into what a batch takes.
pub(crate) fn decoded(recorded: RecordedEvent) -> Decoded {
    match decode(&recorded) {
        Ok(event) => Ok(Envelope::new(recorded, event)),
        Err(error) => Err(Box::new((recorded, error))),
    }
}

/// Batches at least this long are dropped on a blocking thread once committed: freeing
/// tens of thousands of decoded events took a share of catch-up's critical path.
const DROP_ASIDE: usize = 1024;

/// What one step did.
pub(crate) enum Step {
    /// A batch committed (or was skipped).
    Progress,
    /// Some lane is behind the buffered events: feed again from the lanes' checkpoints.
    Gap,
    /// Try again after this long.
    Wait(Duration),
    /// Give up (rebuilds only; live projectors park instead).
    Fatal(ProjectionError),
    /// This process no longer holds the lease: stop applying (fenced drivers only).
    LeaseLost,
}

pub(crate) struct Driver<'a> {
    rt: &'a Inner,
    set: LaneSet<'a>,
    /// The position of the last event consumed; the next buffered event follows it.
    pub prev: Position,
    buffer: VecDeque<Envelope>,
    poison: Option<(RecordedEvent, DecodeError)>,
    /// After a failure, batches are one event long until this position is passed.
    narrow_until: Option<Position>,
    failures: HashMap<&'static str, u32>,
    db_failures: u32,
    /// The lease holder's session: every batch checks the lease is still held by it.
    pub fence: Option<i32>,
}

impl<'a> Driver<'a> {
    pub fn new(rt: &'a Inner, set: LaneSet<'a>, from: Position) -> Self {
        Self {
            rt,
            set,
            prev: from,
            buffer: VecDeque::new(),
            poison: None,
            narrow_until: None,
            failures: HashMap::new(),
            db_failures: 0,
            fence: None,
        }
    }

    /// Whether it needs more events to do anything.
    pub fn is_idle(&self) -> bool {
        self.buffer.is_empty() && self.poison.is_none()
    }

    /// Buffers the next event of the log. Returns `false` once an event did not
    /// decode: nothing after it can be applied until it is dealt with, so the feeder
    /// stops and reads again later.
    pub fn push(&mut self, recorded: RecordedEvent) -> bool {
        self.push_decoded(decoded(recorded))
    }

    /// [`Self::push`] for an event decoded elsewhere (by the read-ahead of catch-up).
    pub fn push_decoded(&mut self, decoded: Decoded) -> bool {
        if self.poison.is_some() {
            return false;
        }
        match decoded {
            Ok(envelope) => {
                self.buffer.push_back(envelope);
                true
            }
            Err(undecodable) => {
                self.poison = Some(*undecodable);
                false
            }
        }
    }

    /// Commits the next batch, or deals with the failure.
    pub async fn step(&mut self) -> Step {
        if self.buffer.is_empty() {
            return match self.poison.take() {
                Some((recorded, error)) => self.undecodable(recorded, error).await,
                None => Step::Progress,
            };
        }
        let narrow = self.narrow_until.is_some_and(|until| self.prev < until);
        let limit = if narrow { 1 } else { self.rt.config.batch_size };
        let n = limit.min(self.buffer.len()).max(1);
        let events = &self.buffer.make_contiguous()[..n];
        let last = events[n - 1].recorded.position;
        match lanes::write_batch(self.rt, self.set, self.prev, events, self.fence).await {
            Ok(lanes) => {
                self.db_failures = 0;
                for lane in &lanes {
                    self.failures.remove(lane.name());
                }
                if matches!(self.set, LaneSet::Active) {
                    self.rt.committed(&lanes);
                }
                if n >= DROP_ASIDE {
                    let done: Vec<Envelope> = self.buffer.drain(..n).collect();
                    drop(tokio::task::spawn_blocking(move || drop(done)));
                } else {
                    self.buffer.drain(..n);
                }
                self.prev = last;
                if self.narrow_until.is_some_and(|until| last >= until) {
                    self.narrow_until = None;
                }
                Step::Progress
            }
            Err(BatchError::Gap) => {
                self.buffer.clear();
                self.poison = None;
                Step::Gap
            }
            Err(BatchError::LeaseLost) => {
                self.buffer.clear();
                self.poison = None;
                Step::LeaseLost
            }
            Err(BatchError::Lane {
                name,
                generation,
                position,
                error,
            }) => {
                self.narrow_until = Some(self.narrow_until.map_or(last, |u| u.max(last)));
                let attempts = self.failures.entry(name).or_insert(0);
                *attempts += 1;
                let attempts = *attempts;
                let exact = n == 1;
                let give_up =
                    exact && !error.is_transient() && attempts >= self.rt.config.retry.park_after;
                match (give_up, self.set) {
                    (true, LaneSet::Active) => {
                        self.failures.remove(name);
                        self.rt.park(name, generation, position, &error);
                        Step::Progress
                    }
                    (true, LaneSet::Building(_)) => Step::Fatal(ProjectionError::RebuildFailed {
                        projector: name.to_owned(),
                        position,
                        source: Box::new(error),
                    }),
                    (false, set) => {
                        tracing::warn!(
                            projector = name,
                            %position,
                            attempts,
                            error = %error,
                            "projection batch failed; retrying"
                        );
                        if matches!(set, LaneSet::Active) {
                            self.rt.retrying(name, attempts, &error);
                        }
                        if exact || error.is_transient() {
                            Step::Wait(self.rt.config.retry.backoff(attempts))
                        } else {
                            // Narrow to single events first; no need to wait for that.
                            Step::Progress
                        }
                    }
                }
            }
            Err(BatchError::Db(error)) => {
                self.db_failures += 1;
                tracing::warn!(
                    attempts = self.db_failures,
                    error = %error,
                    "projection batch could not be written; retrying"
                );
                if matches!(self.set, LaneSet::Active) {
                    for projector in &self.rt.projectors {
                        self.rt.retrying(projector.name(), self.db_failures, &error);
                    }
                }
                Step::Wait(self.rt.config.retry.backoff(self.db_failures))
            }
        }
    }

    /// Every lane that has not passed `recorded` stops there.
    async fn undecodable(&mut self, recorded: RecordedEvent, error: DecodeError) -> Step {
        let position = recorded.position;
        let lanes = match self.rt.read_lanes(self.set).await {
            Ok(lanes) => lanes,
            Err(e) => {
                tracing::warn!(error = %e, "reading projection lanes failed; retrying");
                self.poison = Some((recorded, error));
                self.db_failures += 1;
                return Step::Wait(self.rt.config.retry.backoff(self.db_failures));
            }
        };
        let stuck: Vec<_> = lanes.iter().filter(|l| l.checkpoint < position).collect();
        let error = ProjectionError::Decode(error);
        match self.set {
            LaneSet::Active => {
                for lane in stuck {
                    self.rt.park(lane.name(), lane.generation, position, &error);
                }
                Step::Gap
            }
            LaneSet::Building(_) => match stuck.first() {
                Some(lane) => Step::Fatal(ProjectionError::RebuildFailed {
                    projector: lane.name().to_owned(),
                    position,
                    source: Box::new(error),
                }),
                None => Step::Gap,
            },
        }
    }
}
