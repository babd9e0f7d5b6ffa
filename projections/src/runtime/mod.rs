//! The projector runtime: follows the log from each projector's checkpoint, applies
//! events in batches, and writes each batch with its checkpoint in one read-model
//! transaction, so a crash never applies an event twice or skips one.
//!
//! - [`ProjectionRuntime::open`] creates what is missing (the runtime's own tables, a
//!   first generation of a new projector's tables).
//! - [`ProjectionRuntime::run`] catches up, then follows the log live until shutdown;
//!   it also rebuilds, in the background, every projector whose serving generation was
//!   built by another version (or whose rebuild was interrupted).
//! - [`ProjectionRuntime::wait_for`] lets a query with `?min_position=P` wait until the
//!   read models have applied `P` (a watch of every checkpoint; no polling).
//! - [`ProjectionRuntime::status`] reports per projector its generation, checkpoint,
//!   lag behind the log, and health (live, stale, retrying, parked).
//! - [`ProjectionRuntime::rebuild`] (in `rebuild.rs`) builds new generations
//!   blue/green and switches atomically.
//! - On PostgreSQL, [`ProjectionRuntime::run`] applies the log only while this process
//!   holds the schema's lease (in `lease.rs`); otherwise it stands by, keeping its
//!   checkpoints current from the holder's notifications so `wait_for` still answers.

mod driver;
pub(crate) mod lanes;
mod lease;
mod rebuild;

pub use lease::LeaseState;

pub use rebuild::{RebuildPhase, RebuildProgress, RebuildReport, RebuildTarget, RebuiltProjector};

use crate::db::{position_from, query, Engine, ReadDb, Tx, META_SCHEMA};
use crate::error::{ProjectionError, WaitError};
use crate::postgres::PgLease;
use crate::projector::{Bridge, Generation, Projector};
use crate::queries::ReadModels;
use driver::{Driver, Step};
use futures::StreamExt;
use homeroom_eventstore::{EventStore, Position, StoreError};
use lanes::{Lane, LaneSet};
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// How failures are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// The wait after the first failure; it doubles with each further one.
    pub first_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// Attempts at one event before a deterministic failure parks the projector (or
    /// stops a rebuild). Transient failures are retried for as long as they last.
    pub park_after: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            park_after: 5,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempts + 1`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Tuning of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The most events applied in one transaction. Live, a batch is whatever is
    /// immediately available up to this; during catch-up and rebuilds, full batches.
    pub batch_size: usize,
    /// How failures are retried.
    pub retry: RetryPolicy,
}

/// The default [`RuntimeConfig::batch_size`]. Large batches matter in catch-up: the
/// index pages a batch touches are written once per commit however many of its events
/// touch them.
pub const DEFAULT_BATCH: usize = 4096;

/// [`RuntimeConfig::batch_size`] on SQLite. The indexes keyed by conversation or
/// stream dirty one page per conversation in every batch, whatever its length, and a
/// commit writes each dirty page to the WAL: with 16 KiB pages that was most of a
/// replay's writing, so larger batches pay for it less often. Catching up on a million
/// messages: 4,096 wrote about 10,500 events/s, 16,384 about 43,000 (after time-ordered
/// ids, 16 KiB pages and one index fewer), 32,768 about 50,000, for about 200 MiB more
/// memory at its peak (docs/benchmarks.md). A batch then holds the file's write lock
/// for well under a second while catching up, which only other writers of the read
/// models wait for (queries read beside it). PostgreSQL keeps [`DEFAULT_BATCH`]: there
/// a batch's transaction holds back the delivery of events for the whole cluster while
/// it runs.
pub const SQLITE_BATCH: usize = 32_768;

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_BATCH,
            retry: RetryPolicy::default(),
        }
    }
}

impl RuntimeConfig {
    /// The settings for read models on `engine`: the default, with the batch size that
    /// suits it ([`SQLITE_BATCH`], [`DEFAULT_BATCH`]).
    pub fn for_engine(engine: crate::Engine) -> Self {
        Self {
            batch_size: match engine {
                crate::Engine::Sqlite => SQLITE_BATCH,
                crate::Engine::Postgres => DEFAULT_BATCH,
            },
            ..Self::default()
        }
    }
}

/// How a projector is doing, as [`ProjectionRuntime::status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Health {
    /// Applying the log as it comes.
    Live,
    /// The generation serving queries was built by another version of the projector:
    /// it keeps answering (frozen) until the rebuild with this version switches over.
    Stale {
        /// The version that built the serving generation.
        built_by: u32,
    },
    /// A batch failed and is being retried.
    Retrying {
        /// Failed attempts so far.
        attempts: u32,
        /// The last error.
        error: String,
    },
    /// Stopped at an event it cannot apply; needs a fix (then a restart, `resume` or a
    /// rebuild). Every other projector carries on.
    Parked {
        /// The event it stopped at.
        position: Position,
        /// Why.
        error: String,
    },
}

/// A rebuild in progress, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildingStatus {
    /// The generation being built.
    pub generation: u64,
    /// The version building it.
    pub version: u32,
    /// How far it has applied the log.
    pub checkpoint: Position,
    /// Events behind the head of the log.
    pub lag: u64,
    /// Why the last rebuild attempt in this process stopped, if it did.
    pub error: Option<String>,
}

/// One projector's state: what an operator (and `/metrics`) looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectorStatus {
    /// The projector.
    pub name: &'static str,
    /// Its version in this build of Homeroom.
    pub version: u32,
    /// The generation serving queries.
    pub generation: u64,
    /// The last position that generation has applied.
    pub checkpoint: Position,
    /// Events behind the head of the log (`head.sequence - checkpoint.sequence`): the
    /// value to export as a gauge.
    pub lag: u64,
    /// How it is doing.
    pub health: Health,
    /// The generation being rebuilt, if any.
    pub rebuild: Option<BuildingStatus>,
    /// Whether this process applies the log (the same for every projector: one lease
    /// covers them all).
    pub lease: LeaseState,
}

impl Health {
    /// Whether the projector has stopped at an event it cannot apply: the state to
    /// alert on (`homeroom_projection_parked`).
    pub fn is_parked(&self) -> bool {
        matches!(self, Health::Parked { .. })
    }
}

/// In-memory health of a projector's serving generation.
#[derive(Debug, Clone)]
enum LaneHealth {
    Live,
    Retrying {
        attempts: u32,
        error: String,
    },
    Parked {
        generation: Generation,
        position: Position,
        error: String,
    },
}

pub(crate) struct Inner {
    store: Arc<dyn EventStore>,
    db: ReadDb,
    projectors: Vec<Arc<dyn Projector>>,
    config: RuntimeConfig,
    checkpoints: HashMap<&'static str, watch::Sender<Position>>,
    health: Mutex<HashMap<&'static str, LaneHealth>>,
    rebuild_errors: Mutex<HashMap<&'static str, String>>,
    /// Raised when lanes change outside the live loop (a switch, a resume), so an idle
    /// live loop re-reads them.
    changed: Notify,
    /// Counts the switches this process made.
    switches: watch::Sender<u64>,
    rebuild_lock: tokio::sync::Mutex<()>,
    /// The lease on PostgreSQL (`None` on SQLite, which needs none).
    pub(crate) lease: Option<PgLease>,
    /// What this process knows about the lease.
    lease_state: watch::Sender<LeaseState>,
}

/// The projector runtime. Clones share one runtime.
#[derive(Clone)]
pub struct ProjectionRuntime {
    pub(crate) inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProjectionRuntime {
    /// Opens the runtime over `store` and the read models in `db`: creates the
    /// runtime's tables and a first generation for every projector that has none,
    /// drops generations retired by an earlier switch, and loads the checkpoints.
    ///
    /// # Errors
    /// [`ProjectionError::DuplicateProjector`] when two projectors share a name;
    /// [`ProjectionError::Database`] when the read-model database fails.
    pub async fn open(
        store: Arc<dyn EventStore>,
        db: ReadDb,
        projectors: Vec<Arc<dyn Projector>>,
        config: RuntimeConfig,
    ) -> Result<Self, ProjectionError> {
        for (i, p) in projectors.iter().enumerate() {
            if projectors[..i].iter().any(|q| q.name() == p.name()) {
                return Err(ProjectionError::DuplicateProjector(p.name()));
            }
        }
        let engine = db.engine();
        let mut tx = db.begin_write().await?;
        for statement in META_SCHEMA {
            query(&engine.render(statement, |_| None))
                .execute(&mut tx)
                .await?;
        }
        for p in &projectors {
            let serving = query(
                "SELECT active_generation, active_version FROM projection_generations
                 WHERE projector = $1",
            )
            .bind(p.name())
            .fetch_optional(&mut tx)
            .await?;
            if let Some(row) = serving {
                let (generation, built_by): (i64, i64) = (row.get(0)?, row.get(1)?);
                let built_by = u32::try_from(built_by).unwrap_or(u32::MAX);
                if built_by < p.version() {
                    let generation = Generation::new(u64::try_from(generation).unwrap_or(0));
                    bridge(&mut tx, p.bridge_from(engine, generation, built_by)).await?;
                }
                continue;
            }
            let first = Generation::new(1);
            for statement in p.schema(engine, first) {
                query(&statement).execute(&mut tx).await?;
            }
            query(
                "INSERT INTO projection_generations
                    (projector, active_generation, active_version, next_generation)
                 VALUES ($1, 1, $2, 2)",
            )
            .bind(p.name())
            .bind(i64::from(p.version()))
            .execute(&mut tx)
            .await?;
            query(
                "INSERT INTO projection_checkpoints (projector, generation, commit_pos, sequence)
                 VALUES ($1, 1, 0, 0)",
            )
            .bind(p.name())
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;

        let mut checkpoints = HashMap::new();
        for p in &projectors {
            checkpoints.insert(p.name(), watch::channel(Position::START).0);
        }
        // Empty until something happens to a projector here: until then its status is
        // what the read models recorded (`projection_parked`).
        let health = HashMap::new();
        let lease = db.postgres().map(|pg| pg.lease());
        let lease_state = watch::channel(match engine {
            Engine::Sqlite => LeaseState::NotNeeded,
            Engine::Postgres => LeaseState::Standby,
        })
        .0;
        let inner = Inner {
            lease,
            lease_state,
            store,
            db,
            projectors,
            config,
            checkpoints,
            health: Mutex::new(health),
            rebuild_errors: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            switches: watch::channel(0).0,
            rebuild_lock: tokio::sync::Mutex::new(()),
        };
        if let Err(e) = inner.drop_retired().await {
            // PostgreSQL may give up waiting for queries still reading an old
            // generation: it is dropped after the next switch or start instead.
            if !e.is_transient() {
                return Err(e);
            }
            tracing::warn!(error = %e, "dropping retired generations failed; later, then");
        }
        inner.refresh_checkpoints().await?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The queries over these read models.
    pub fn read_models(&self) -> ReadModels {
        ReadModels::new(self.inner.db.clone())
    }

    /// The registered projectors' names, in the order batches are applied.
    pub fn projector_names(&self) -> Vec<&'static str> {
        self.inner.projectors.iter().map(|p| p.name()).collect()
    }

    /// Follows the log until `shutdown` completes: catch-up from each projector's
    /// checkpoint, then live. Projectors whose serving generation was built by another
    /// version, and rebuilds interrupted earlier, are rebuilt in the background
    /// meanwhile (see [`ProjectionRuntime::rebuild`]); their old generation keeps
    /// answering queries until the switch.
    ///
    /// Failures never end the loop: they are retried, or park one projector (see
    /// [`Health`]).
    ///
    /// On PostgreSQL, several processes may run this on one schema: only the holder of
    /// the schema's lease applies the log (and runs the start-up rebuilds); the others
    /// stand by, keep their checkpoints (and so [`Self::wait_for`]) current from the
    /// holder's notifications, and one of them takes the lease within
    /// [`crate::PgReadConfig::lease_retry`] once the holder's session ends.
    /// [`Self::lease`] says which this process is.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] only when the start-up check for pending rebuilds
    /// fails.
    pub async fn run(
        &self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ProjectionError> {
        if self.inner.lease.is_some() {
            return self.run_leased(shutdown).await;
        }
        let background = self.start_pending_rebuilds().await?;
        self.inner.live(shutdown, None).await;
        if let Some(task) = background {
            // An unfinished rebuild rolls back its current batch and resumes from its
            // own checkpoint on the next start.
            task.abort();
        }
        Ok(())
    }

    /// Starts, in the background, the rebuilds `run` does on start.
    async fn start_pending_rebuilds(
        &self,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, ProjectionError> {
        let pending = self.inner.pending_rebuilds().await?;
        if pending.is_empty() {
            return Ok(None);
        }
        let rt = self.clone();
        Ok(Some(tokio::spawn(async move {
            let names = pending.iter().map(|n| n.to_string()).collect();
            tracing::info!(projectors = ?pending, "rebuilding projectors on start");
            if let Err(error) = rt.rebuild(RebuildTarget::Named(names), |_| {}).await {
                tracing::error!(error = %error, "start-up rebuild stopped");
            }
        })))
    }

    /// Applies everything in the log now (up to its head) to the serving generations,
    /// then returns the position reached. For tools and tests; [`Self::run`] does this
    /// and then stays live. It does not take the PostgreSQL lease: alongside a running
    /// holder it is still safe (every batch re-reads its checkpoints under the write
    /// lock, so nothing is applied twice), merely redundant.
    ///
    /// # Errors
    /// None in practice: failures are retried or park a projector, as in `run`.
    pub async fn catch_up(&self) -> Result<Position, ProjectionError> {
        self.inner.drive(LaneSet::Active, &mut |_| {}).await
    }

    /// Waits until every projector's serving generation has applied `position` (a
    /// query's `?min_position`). [`Position::START`] never waits.
    ///
    /// # Errors
    /// [`WaitError::Timeout`] when that takes longer than `timeout` (answer 503
    /// `stale`); a parked or stale projector times out.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<(), WaitError> {
        let names = self.projector_names();
        self.wait_for_projectors(&names, position, timeout).await
    }

    /// Like [`Self::wait_for`], for the named projectors only (those a query reads).
    ///
    /// # Errors
    /// [`WaitError::Timeout`] as in `wait_for`; [`WaitError::UnknownProjector`] for a
    /// name not registered.
    pub async fn wait_for_projectors(
        &self,
        names: &[&str],
        position: Position,
        timeout: Duration,
    ) -> Result<(), WaitError> {
        let mut receivers = Vec::with_capacity(names.len());
        for name in names {
            let tx = self
                .inner
                .checkpoints
                .get(name)
                .ok_or_else(|| WaitError::UnknownProjector((*name).to_owned()))?;
            receivers.push(tx.subscribe());
        }
        let all = async {
            for rx in &mut receivers {
                // The sender lives as long as the runtime; an error means it is gone.
                if rx.wait_for(|p| *p >= position).await.is_err() {
                    return false;
                }
            }
            true
        };
        match tokio::time::timeout(timeout, all).await {
            Ok(true) => Ok(()),
            _ => Err(WaitError::Timeout {
                position,
                waited: timeout,
            }),
        }
    }

    /// Counts the generation switches (finished rebuilds) made by this process, so a
    /// caller can wait for the start-up rebuilds of [`Self::run`] or drop a cache keyed
    /// by generation.
    pub fn switches(&self) -> watch::Receiver<u64> {
        self.inner.switches.subscribe()
    }

    /// The last position `name`'s serving generation has applied, as this process
    /// knows it.
    pub fn checkpoint(&self, name: &str) -> Option<Position> {
        self.inner.checkpoints.get(name).map(|tx| *tx.borrow())
    }

    /// Takes a parked projector back into the live loop (after a fix that needed no
    /// version bump); it retries the event it stopped at.
    ///
    /// # Errors
    /// [`ProjectionError::UnknownProjector`] for a name not registered.
    pub fn resume(&self, name: &str) -> Result<(), ProjectionError> {
        let key = self
            .inner
            .projector(name)
            .ok_or_else(|| ProjectionError::UnknownProjector(name.to_owned()))?
            .name();
        lock(&self.inner.health).insert(key, LaneHealth::Live);
        self.inner.changed.notify_waiters();
        Ok(())
    }

    /// Every projector's generation, checkpoint, lag and health, read from the
    /// database (so it also shows rebuilds run by another process).
    ///
    /// # Errors
    /// [`ProjectionError`] when the log's head or the database cannot be read.
    pub async fn status(&self) -> Result<Vec<ProjectorStatus>, ProjectionError> {
        let head = self.inner.store.head().await?;
        let lag = |p: Position| head.sequence.saturating_sub(p.sequence);
        let lease = self.lease();
        let mut tx = self.inner.db.begin_read().await?;
        let rows = query(
            "SELECT g.projector, g.active_generation, g.active_version, a.commit_pos, a.sequence,
                    g.building_generation, g.building_version, b.commit_pos, b.sequence
             FROM projection_generations g
             LEFT JOIN projection_checkpoints a
               ON a.projector = g.projector AND a.generation = g.active_generation
             LEFT JOIN projection_checkpoints b
               ON b.projector = g.projector AND b.generation = g.building_generation",
        )
        .fetch_all(&mut tx)
        .await?;
        let parked_rows = query(
            "SELECT projector, generation, commit_pos, sequence, error FROM projection_parked",
        )
        .fetch_all(&mut tx)
        .await?;
        let failure_rows =
            query("SELECT projector, generation, error FROM projection_rebuild_failures")
                .fetch_all(&mut tx)
                .await?;
        tx.commit().await?;
        // Both tables are keyed by (projector, generation) in their first two columns.
        let key = |row: &crate::db::Row| -> Result<(String, u64), ProjectionError> {
            let generation =
                u64::try_from(row.get::<i64, _>(1)?).map_err(|_| ProjectionError::OutOfRange)?;
            Ok((row.get::<String, _>(0)?, generation))
        };
        let mut recorded_failures = HashMap::new();
        for row in &failure_rows {
            recorded_failures.insert(key(row)?, row.get::<String, _>(2)?);
        }
        let mut recorded_parks = HashMap::new();
        for row in &parked_rows {
            let position =
                position_from(row.get(2)?, row.get(3)?).ok_or(ProjectionError::OutOfRange)?;
            recorded_parks.insert(key(row)?, (position, row.get::<String, _>(4)?));
        }
        let health = lock(&self.inner.health).clone();
        let rebuild_errors = lock(&self.inner.rebuild_errors).clone();
        let mut out = Vec::new();
        for p in &self.inner.projectors {
            let name = p.name();
            let Some(row) = rows.iter().find(|r| r.get::<&str, _>(0).ok() == Some(name)) else {
                continue;
            };
            let number = |i: usize| -> Result<Option<u64>, ProjectionError> {
                row.get::<Option<i64>, _>(i)?
                    .map(|v| u64::try_from(v).map_err(|_| ProjectionError::OutOfRange))
                    .transpose()
            };
            let position = |i: usize| -> Result<Position, ProjectionError> {
                let commit: Option<i64> = row.get(i)?;
                let sequence: Option<i64> = row.get(i + 1)?;
                position_from(commit.unwrap_or(0), sequence.unwrap_or(0))
                    .ok_or(ProjectionError::OutOfRange)
            };
            let generation = number(1)?.unwrap_or(0);
            let built_by = u32::try_from(number(2)?.unwrap_or(0)).unwrap_or(u32::MAX);
            let checkpoint = position(3)?;
            let health = if built_by != p.version() {
                Health::Stale { built_by }
            } else {
                match health.get(name) {
                    Some(LaneHealth::Parked {
                        generation: g,
                        position,
                        error,
                    }) if g.number() == generation => Health::Parked {
                        position: *position,
                        error: error.clone(),
                    },
                    Some(LaneHealth::Retrying { attempts, error }) => Health::Retrying {
                        attempts: *attempts,
                        error: error.clone(),
                    },
                    Some(_) => Health::Live,
                    // Nothing failed here (another process applies the log, or this
                    // one has not met the event yet): a park recorded by any process
                    // holds until the checkpoint passes it.
                    None => match recorded_parks.remove(&(name.to_owned(), generation)) {
                        Some((position, error)) if checkpoint < position => {
                            Health::Parked { position, error }
                        }
                        _ => Health::Live,
                    },
                }
            };
            let rebuild = match number(5)? {
                Some(building) => {
                    let checkpoint = position(7)?;
                    Some(BuildingStatus {
                        generation: building,
                        version: u32::try_from(number(6)?.unwrap_or(0)).unwrap_or(u32::MAX),
                        checkpoint,
                        lag: lag(checkpoint),
                        error: rebuild_errors
                            .get(name)
                            .cloned()
                            .or_else(|| recorded_failures.remove(&(name.to_owned(), building))),
                    })
                }
                None => None,
            };
            out.push(ProjectorStatus {
                name,
                version: p.version(),
                generation,
                checkpoint,
                lag: lag(checkpoint),
                health,
                rebuild,
                lease,
            });
        }
        Ok(out)
    }
}

impl Inner {
    fn projector(&self, name: &str) -> Option<&Arc<dyn Projector>> {
        self.projectors.iter().find(|p| p.name() == name)
    }

    pub(crate) fn is_parked(&self, name: &str, generation: Generation) -> bool {
        matches!(
            lock(&self.health).get(name),
            Some(LaneHealth::Parked { generation: g, .. }) if *g == generation
        )
    }

    /// Parks `name` at `position`: in memory, for this process's live loop and status,
    /// and in `projection_parked`, for the status every other process reads (the CLI,
    /// a PostgreSQL standby), which has no memory of it.
    pub(crate) async fn park(
        &self,
        name: &'static str,
        generation: Generation,
        position: Position,
        error: &ProjectionError,
    ) {
        tracing::error!(
            projector = name,
            %position,
            error = %error,
            "projector parked at an event it cannot apply"
        );
        let error = error.to_string();
        lock(&self.health).insert(
            name,
            LaneHealth::Parked {
                generation,
                position,
                error: error.clone(),
            },
        );
        if let Err(e) = self.record_park(name, generation, position, &error).await {
            tracing::warn!(
                projector = name,
                error = %e,
                "the park could not be recorded: only this process's status shows it"
            );
        }
    }

    async fn record_park(
        &self,
        name: &'static str,
        generation: Generation,
        position: Position,
        error: &str,
    ) -> Result<(), ProjectionError> {
        let (commit, sequence) = crate::db::position_columns(position)?;
        let generation =
            i64::try_from(generation.number()).map_err(|_| ProjectionError::OutOfRange)?;
        let mut tx = self.db.begin_write().await?;
        query(
            "INSERT INTO projection_parked
                (projector, generation, commit_pos, sequence, error, parked_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (projector, generation) DO UPDATE SET
                commit_pos = excluded.commit_pos, sequence = excluded.sequence,
                error = excluded.error, parked_at = excluded.parked_at",
        )
        .bind(name)
        .bind(generation)
        .bind(commit)
        .bind(sequence)
        .bind(error)
        .bind(chrono::Utc::now())
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) fn retrying(&self, name: &'static str, attempts: u32, error: &ProjectionError) {
        let mut health = lock(&self.health);
        if !matches!(health.get(name), Some(LaneHealth::Parked { .. })) {
            health.insert(
                name,
                LaneHealth::Retrying {
                    attempts,
                    error: error.to_string(),
                },
            );
        }
    }

    /// After an active batch committed: checkpoints to the watchers, health to live.
    pub(crate) fn committed(&self, lanes: &[Lane]) {
        let mut health = lock(&self.health);
        for lane in lanes {
            if let Some(tx) = self.checkpoints.get(lane.name()) {
                let at = lane.checkpoint;
                tx.send_if_modified(|p| {
                    let newer = at > *p;
                    if newer {
                        *p = at;
                    }
                    newer
                });
            }
            if matches!(health.get(lane.name()), Some(LaneHealth::Retrying { .. })) {
                health.insert(lane.name(), LaneHealth::Live);
            }
        }
    }

    /// The lanes of `set`, read outside any batch.
    pub(crate) async fn read_lanes(&self, set: LaneSet<'_>) -> Result<Vec<Lane>, ProjectionError> {
        let mut tx = self.db.begin_read().await?;
        let lanes = lanes::load(self, &mut tx, set).await?;
        tx.commit().await?;
        Ok(lanes)
    }

    /// Whether some serving generation is behind the head of the log: then a live
    /// projector (here or in another process) has events to apply and may be waiting
    /// for the write lock a rebuild batch holds. A failed read says no.
    pub(crate) async fn serving_lags(&self) -> bool {
        let (Ok(lanes), Ok(head)) = (
            self.read_lanes(LaneSet::Active).await,
            self.store.head().await,
        ) else {
            return false;
        };
        lanes.iter().any(|lane| lane.checkpoint < head)
    }

    /// Every registered projector's serving generation and checkpoint.
    async fn serving(&self) -> Result<Vec<(&'static str, Generation, Position)>, ProjectionError> {
        let mut tx = self.db.begin_read().await?;
        let rows = query(
            "SELECT g.projector, g.active_generation, c.commit_pos, c.sequence
             FROM projection_generations g
             JOIN projection_checkpoints c
               ON c.projector = g.projector AND c.generation = g.active_generation",
        )
        .fetch_all(&mut tx)
        .await?;
        tx.commit().await?;
        let mut out = Vec::new();
        for row in rows {
            let name: &str = row.get(0)?;
            let Some(p) = self.projector(name) else {
                continue;
            };
            let generation =
                u64::try_from(row.get::<i64, _>(1)?).map_err(|_| ProjectionError::OutOfRange)?;
            let checkpoint =
                position_from(row.get(2)?, row.get(3)?).ok_or(ProjectionError::OutOfRange)?;
            out.push((p.name(), Generation::new(generation), checkpoint));
        }
        Ok(out)
    }

    /// Moves the checkpoint watches up to what the database says the serving
    /// generations have applied (work of another process, or of an earlier run).
    async fn refresh_checkpoints(&self) -> Result<(), ProjectionError> {
        for (name, _, checkpoint) in self.serving().await? {
            if let Some(tx) = self.checkpoints.get(name) {
                tx.send_if_modified(|p| {
                    let newer = checkpoint > *p;
                    if newer {
                        *p = checkpoint;
                    }
                    newer
                });
            }
        }
        Ok(())
    }

    /// Where a feed for `set` starts: the lowest checkpoint among its lanes, or the
    /// head of the log when there is none.
    async fn start_of(&self, set: LaneSet<'_>) -> Result<Position, ProjectionError> {
        let lanes = self.read_lanes(set).await?;
        match lanes.iter().map(|l| l.checkpoint).min() {
            Some(p) => Ok(p),
            None => Ok(self.store.head().await?),
        }
    }

    /// Reads the log with `read_all` until it is exhausted, applying it to `set`.
    /// Returns the position reached.
    async fn drive(
        &self,
        set: LaneSet<'_>,
        progress: &mut (dyn FnMut(Position) + Send),
    ) -> Result<Position, ProjectionError> {
        let mut failures = 0u32;
        'feed: loop {
            let from = match self.start_of(set).await {
                Ok(p) => p,
                Err(e) if e.is_transient() => {
                    failures += 1;
                    tokio::time::sleep(self.config.retry.backoff(failures)).await;
                    continue 'feed;
                }
                Err(e) => return Err(e),
            };
            let mut driver = Driver::new(self, set, from);
            // The next page, read and decoded on another task while a batch is written.
            let mut ahead: Option<ReadAhead> = None;
            loop {
                if driver.is_idle() {
                    let read = match ahead.take() {
                        Some(next) if next.after == driver.prev => next.page().await,
                        _ => {
                            ReadAhead::start(&self.store, driver.prev, self.config.batch_size)
                                .page()
                                .await
                        }
                    };
                    let page = match read {
                        Ok(page) => page,
                        Err(e) => {
                            let e = ProjectionError::from(e);
                            if !e.is_transient() {
                                return Err(e);
                            }
                            failures += 1;
                            tracing::warn!(error = %e, "reading the log failed; retrying");
                            tokio::time::sleep(self.config.retry.backoff(failures)).await;
                            continue;
                        }
                    };
                    failures = 0;
                    let Some(last) = page.last().map(|decoded| match decoded {
                        Ok(envelope) => envelope.recorded.position,
                        Err(undecodable) => undecodable.0.position,
                    }) else {
                        return Ok(driver.prev);
                    };
                    ahead = Some(ReadAhead::start(&self.store, last, self.config.batch_size));
                    for decoded in page {
                        if !driver.push_decoded(decoded) {
                            break;
                        }
                    }
                    continue;
                }
                match driver.step().await {
                    Step::Progress => progress(driver.prev),
                    // Only fenced (live) drivers lose a lease; this one is not.
                    Step::Gap | Step::LeaseLost => continue 'feed,
                    Step::Wait(d) => tokio::time::sleep(d).await,
                    Step::Fatal(e) => return Err(e),
                }
            }
        }
    }

    /// The live loop: subscribe from the lowest checkpoint, batch what is immediately
    /// available, and never stop until `stop` completes (`Some` of its output) or, with
    /// a `fence` (the lease holder's session), until a batch finds the lease gone
    /// (`None`).
    async fn live<T>(&self, stop: impl Future<Output = T>, fence: Option<i32>) -> Option<T> {
        let mut shutdown = pin!(stop);
        let mut failures = 0u32;
        'subscribe: loop {
            let from = match self.start_of(LaneSet::Active).await {
                Ok(p) => p,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "reading projection checkpoints failed; retrying");
                    tokio::select! {
                        out = &mut shutdown => return Some(out),
                        _ = tokio::time::sleep(self.config.retry.backoff(failures)) => continue 'subscribe,
                    }
                }
            };
            let mut stream = self
                .store
                .subscribe_all(from)
                .ready_chunks(self.config.batch_size);
            let mut driver = Driver::new(self, LaneSet::Active, from);
            driver.fence = fence;
            let mut broken = false;
            loop {
                if driver.is_idle() {
                    if broken {
                        failures += 1;
                        tokio::select! {
                            out = &mut shutdown => return Some(out),
                            _ = tokio::time::sleep(self.config.retry.backoff(failures)) => continue 'subscribe,
                        }
                    }
                    let changed = self.changed.notified();
                    tokio::select! {
                        biased;
                        out = &mut shutdown => return Some(out),
                        _ = changed => continue 'subscribe,
                        chunk = stream.next() => match chunk {
                            None => broken = true,
                            Some(items) => {
                                for item in items {
                                    match item {
                                        Ok(recorded) => {
                                            failures = 0;
                                            if !driver.push(recorded) {
                                                // An undecodable event: deal with it,
                                                // then read again after it.
                                                broken = true;
                                                break;
                                            }
                                        }
                                        Err(e) => {
                                            tracing::warn!(error = %e, "the log subscription failed; resubscribing");
                                            broken = true;
                                            break;
                                        }
                                    }
                                }
                            }
                        },
                    }
                    continue;
                }
                match driver.step().await {
                    Step::Progress => {}
                    Step::Gap => continue 'subscribe,
                    Step::Wait(d) => {
                        tokio::select! {
                            out = &mut shutdown => return Some(out),
                            _ = tokio::time::sleep(d) => {}
                        }
                    }
                    Step::LeaseLost => return None,
                    Step::Fatal(e) => {
                        // Not produced for active lanes; log rather than lose it.
                        tracing::error!(error = %e, "projection failure");
                        continue 'subscribe;
                    }
                }
            }
        }
    }

    /// Drops the tables of generations an earlier switch retired.
    async fn drop_retired(&self) -> Result<(), ProjectionError> {
        let mut tx = self.db.begin_write().await?;
        let rows = query("SELECT projector, generation FROM projection_retired")
            .fetch_all(&mut tx)
            .await?;
        let mut retired = Vec::new();
        for row in &rows {
            let name: &str = row.get(0)?;
            let number: i64 = row.get(1)?;
            if let Some(p) = self.projector(name) {
                retired.push((p, number));
            }
        }
        if !retired.is_empty() {
            self.db.before_drop(&mut tx).await?;
        }
        for (p, number) in retired {
            let generation =
                Generation::new(u64::try_from(number).map_err(|_| ProjectionError::OutOfRange)?);
            crate::db::drop_tables(&mut tx, p.tables(), generation).await?;
            for table in ["projection_retired", "projection_parked"] {
                query(&format!(
                    "DELETE FROM {table} WHERE projector = $1 AND generation = $2"
                ))
                .bind(p.name())
                .bind(number)
                .execute(&mut tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Projectors to rebuild on start: serving a generation built by another version,
    /// or with a rebuild left unfinished.
    async fn pending_rebuilds(&self) -> Result<Vec<&'static str>, ProjectionError> {
        let mut tx = self.db.begin_read().await?;
        let rows = query(
            "SELECT projector, active_version, building_generation FROM projection_generations",
        )
        .fetch_all(&mut tx)
        .await?;
        tx.commit().await?;
        let mut out = Vec::new();
        for p in &self.projectors {
            let Some(row) = rows
                .iter()
                .find(|r| r.get::<&str, _>(0).ok() == Some(p.name()))
            else {
                continue;
            };
            let version: i64 = row.get(1)?;
            let building: Option<i64> = row.get(2)?;
            if version != i64::from(p.version()) || building.is_some() {
                out.push(p.name());
            }
        }
        Ok(out)
    }
}

/// Runs `steps` ([`Projector::bridge_from`]) in `tx`: a column is added only where it
/// is missing.
async fn bridge(tx: &mut Tx<'_>, steps: Vec<Bridge>) -> Result<(), ProjectionError> {
    for step in steps {
        match step {
            Bridge::AddColumn {
                table,
                column,
                definition,
            } => {
                let statement = match tx.engine() {
                    Engine::Postgres => {
                        format!(
                            "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {definition}"
                        )
                    }
                    Engine::Sqlite => {
                        let there: i64 = query(&format!(
                            "SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = $1"
                        ))
                        .bind(column)
                        .fetch_one(tx)
                        .await?
                        .get(0)?;
                        if there > 0 {
                            continue;
                        }
                        format!("ALTER TABLE {table} ADD COLUMN {column} {definition}")
                    }
                };
                query(&statement).execute(tx).await?;
            }
            Bridge::Run(statement) => {
                query(&statement).execute(tx).await?;
            }
        }
    }
    Ok(())
}

/// A page of the log being read and decoded on its own task, so catch-up reads the next
/// page while the current one is written (the two use different connections and, on a
/// machine with more than one core, different cores). Dropping it cancels the read.
struct ReadAhead {
    /// The position the page follows.
    after: Position,
    task: tokio::task::JoinHandle<Result<Vec<driver::Decoded>, StoreError>>,
}

impl ReadAhead {
    fn start(store: &Arc<dyn EventStore>, after: Position, limit: usize) -> Self {
        let store = store.clone();
        let task = tokio::spawn(async move {
            let page = store.read_all(after, limit).await?;
            Ok(page.into_iter().map(driver::decoded).collect())
        });
        Self { after, task }
    }

    async fn page(mut self) -> Result<Vec<driver::Decoded>, StoreError> {
        match (&mut self.task).await {
            Ok(page) => page,
            Err(join) => Err(StoreError::Unavailable(Box::new(join))),
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}
