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
use std::time::{Duration, Instant};

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

/// About how long one rebuild batch may hold the read models' write lock (SQLite's one
/// writer, PostgreSQL's advisory lock). The serving generations wait for it to apply
/// what was just written, and a read with `min_position` waits for them (5 s at most):
/// a full catch-up batch of 32,768 events held it for seconds. Rebuild batches are
/// sized from the last one's pace to take about this long.
const REBUILD_BATCH_BUDGET: Duration = Duration::from_millis(200);

/// The first rebuild batch, before any pace is known, and the smallest.
const REBUILD_FIRST_BATCH: usize = 512;

/// After a rebuild batch, while the serving generations are behind the log (someone is
/// writing and they wait to apply it), the rebuild pauses this long before taking the
/// lock again: longer than SQLite's busy handler sleeps between its tries (100 ms), so
/// the waiting writer gets its turn.
const REBUILD_YIELD: Duration = Duration::from_millis(120);

/// The next rebuild batch's length: as many events as the last pace fits in
/// [`REBUILD_BATCH_BUDGET`], between [`REBUILD_FIRST_BATCH`] and `most`.
fn next_rebuild_batch(last: usize, took: Duration, most: usize) -> usize {
    let per_event = took.as_secs_f64() / last.max(1) as f64;
    if per_event <= 0.0 {
        return most;
    }
    let fits = (REBUILD_BATCH_BUDGET.as_secs_f64() / per_event) as usize;
    fits.clamp(REBUILD_FIRST_BATCH.min(most), most.max(1))
}

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
    /// The next rebuild batch's length ([`next_rebuild_batch`]); live and catch-up
    /// batches take [`super::RuntimeConfig::batch_size`].
    rebuild_batch: usize,
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
            rebuild_batch: REBUILD_FIRST_BATCH,
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
        let building = matches!(self.set, LaneSet::Building(_));
        let limit = match (narrow, building) {
            (true, _) => 1,
            (false, true) => self.rebuild_batch.min(self.rt.config.batch_size),
            (false, false) => self.rt.config.batch_size,
        };
        let n = limit.min(self.buffer.len()).max(1);
        let events = &self.buffer.make_contiguous()[..n];
        let last = events[n - 1].recorded.position;
        let started = Instant::now();
        match lanes::write_batch(self.rt, self.set, self.prev, events, self.fence).await {
            Ok(lanes) => {
                if building {
                    self.rebuild_batch =
                        next_rebuild_batch(n, started.elapsed(), self.rt.config.batch_size);
                    if self.rt.serving_lags().await {
                        tokio::time::sleep(REBUILD_YIELD).await;
                    }
                }
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
                        self.rt.park(name, generation, position, &error).await;
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
                    self.rt
                        .park(lane.name(), lane.generation, position, &error)
                        .await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuild_batch_is_sized_to_hold_the_write_lock_for_about_the_budget() {
        // 10,000 events in a second: 2,000 fit in 200 ms.
        assert_eq!(
            next_rebuild_batch(10_000, Duration::from_secs(1), 32_768),
            2_000
        );
        // A fast pace is capped by the configured batch, a slow one floored.
        assert_eq!(
            next_rebuild_batch(512, Duration::from_micros(10), 32_768),
            32_768
        );
        assert_eq!(
            next_rebuild_batch(512, Duration::from_secs(10), 32_768),
            REBUILD_FIRST_BATCH
        );
        assert_eq!(next_rebuild_batch(100, Duration::ZERO, 4_096), 4_096);
        assert_eq!(next_rebuild_batch(1, Duration::from_secs(1), 8), 8);
    }
}
