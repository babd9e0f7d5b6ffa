//! Blue/green rebuilds.
//!
//! 1. **Prepare.** Each projector gets a new generation (`building_generation` in
//!    `projection_generations`): fresh tables `…_g{n}` and a checkpoint at the start of
//!    the log. A generation left half-built by an interrupted rebuild of the same
//!    version is resumed from its own checkpoint instead; one of another version is
//!    dropped.
//! 2. **Build.** The log is applied to the new generations in batches, each batch with
//!    the new checkpoints in one transaction, while the old generations keep serving
//!    queries (and keep following the log, unless their version is outdated).
//! 3. **Switch.** In one write transaction: apply what is left of the log, then point
//!    `active_generation` at the new generation. Queries read that table inside their
//!    own snapshot, so each sees either the old or the new generation, whole. The old
//!    tables are recorded in `projection_retired` and dropped after the commit (or on
//!    the next start, if the process dies first). On PostgreSQL the drop first waits
//!    for the queries still reading the old generation (see [`crate::postgres`]).
//!
//! Killing the process at any point leaves either the old generation serving (and the
//! new one resumable) or the new one serving: never a mix.

use super::driver;
use super::lanes::{self, BatchError, Lane, LaneSet};
use super::{lock, Inner, LaneHealth, ProjectionRuntime};
use crate::db::{drop_tables, query, Tx};
use crate::error::ProjectionError;
use crate::projector::Generation;
use homeroom_eventstore::Position;
use serde::Serialize;

/// Pages of the log applied inside the switch transaction before it commits what it
/// has and tries again (only a log growing faster than the rebuild hits this).
const SWITCH_PAGES: usize = 16;

/// Which projectors to rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebuildTarget {
    /// Every registered projector (together: the log is read once).
    All,
    /// One projector, by name.
    Projector(String),
    /// Several projectors, by name.
    Named(Vec<String>),
    /// Projectors whose serving generation was built by another version, or whose
    /// rebuild was left unfinished: what `run` rebuilds on start.
    Outdated,
}

/// Where a rebuild is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RebuildPhase {
    /// Applying the log to the new generations.
    Building,
    /// Applying the last events and switching over, in one transaction.
    Switching,
    /// The new generations serve queries.
    Done,
}

/// Progress of a rebuild, for a progress bar: `done()` of `total()` events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebuildProgress {
    /// The projectors being rebuilt.
    pub projectors: Vec<&'static str>,
    /// The phase.
    pub phase: RebuildPhase,
    /// Where the new generations started (the start of the log, or where a resumed
    /// generation had got to).
    pub start: Position,
    /// How far they have got.
    pub position: Position,
    /// The head of the log when the rebuild began.
    pub target: Position,
}

impl RebuildProgress {
    /// Events between the start and the target.
    pub fn total(&self) -> u64 {
        self.target.sequence.saturating_sub(self.start.sequence)
    }

    /// Events applied so far, at most [`Self::total`].
    pub fn done(&self) -> u64 {
        self.position
            .sequence
            .saturating_sub(self.start.sequence)
            .min(self.total())
    }
}

/// One projector a rebuild switched over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebuiltProjector {
    /// The projector.
    pub name: &'static str,
    /// The version that built the new generation.
    pub version: u32,
    /// The generation now serving queries.
    pub generation: u64,
    /// Whether it continued a half-built generation.
    pub resumed: bool,
    /// The position it had applied at the switch.
    pub checkpoint: Position,
}

/// What a rebuild did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RebuildReport {
    /// Every projector switched over.
    pub projectors: Vec<RebuiltProjector>,
}

impl ProjectionRuntime {
    /// Rebuilds `target` blue/green (see the module docs), calling `progress` after
    /// every batch and at each phase. Queries keep answering from the old generations
    /// throughout; one rebuild runs at a time in a process.
    ///
    /// # Errors
    /// [`ProjectionError::UnknownProjector`] for a name not registered;
    /// [`ProjectionError::RebuildFailed`] when an event cannot be applied (the
    /// half-built generation is kept, and the next rebuild resumes it);
    /// [`ProjectionError::Database`] or [`ProjectionError::Store`] otherwise.
    pub async fn rebuild(
        &self,
        target: RebuildTarget,
        mut progress: impl FnMut(&RebuildProgress) + Send,
    ) -> Result<RebuildReport, ProjectionError> {
        let inner = &*self.inner;
        let _turn = inner.rebuild_lock.lock().await;
        let names = inner.resolve(target).await?;
        if names.is_empty() {
            return Ok(RebuildReport::default());
        }
        let prepared = inner.prepare(&names).await?;
        let set = LaneSet::Building(&names);
        let start = inner.start_of(set).await?;
        let mut state = RebuildProgress {
            projectors: names.clone(),
            phase: RebuildPhase::Building,
            start,
            position: start,
            target: inner.store.head().await?.max(start),
        };
        progress(&state);
        let mut attempts = 0;
        let switched = loop {
            let built = inner
                .drive(set, &mut |p| {
                    state.position = p;
                    progress(&state);
                })
                .await;
            let outcome = match built {
                Ok(_) => {
                    state.phase = RebuildPhase::Switching;
                    progress(&state);
                    inner.switch(&names).await
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(lanes) => break lanes,
                Err(e) if e.is_transient() => {
                    attempts += 1;
                    tracing::warn!(error = %e, attempts, "rebuild interrupted; retrying");
                    tokio::time::sleep(inner.config.retry.backoff(attempts)).await;
                    state.phase = RebuildPhase::Building;
                }
                Err(e) => {
                    {
                        let mut errors = lock(&inner.rebuild_errors);
                        for name in &names {
                            errors.insert(name, e.to_string());
                        }
                    }
                    if let Err(record) = inner.record_rebuild_failure(&prepared, &e).await {
                        tracing::warn!(
                            error = %record,
                            "the rebuild's failure could not be recorded: only this process's status shows it"
                        );
                    }
                    return Err(e);
                }
            }
        };
        let mut report = RebuildReport::default();
        for lane in switched {
            let resumed = prepared
                .iter()
                .any(|(n, g, resumed)| *n == lane.name() && *g == lane.generation && *resumed);
            state.position = state.position.max(lane.checkpoint);
            report.projectors.push(RebuiltProjector {
                name: lane.name(),
                version: lane.version,
                generation: lane.generation.number(),
                resumed,
                checkpoint: lane.checkpoint,
            });
        }
        state.phase = RebuildPhase::Done;
        progress(&state);
        Ok(report)
    }
}

impl Inner {
    async fn resolve(&self, target: RebuildTarget) -> Result<Vec<&'static str>, ProjectionError> {
        let named = |names: Vec<String>| {
            names
                .iter()
                .map(|n| {
                    self.projector(n)
                        .map(|p| p.name())
                        .ok_or_else(|| ProjectionError::UnknownProjector(n.clone()))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        match target {
            RebuildTarget::All => Ok(self.projectors.iter().map(|p| p.name()).collect()),
            RebuildTarget::Projector(name) => named(vec![name]),
            RebuildTarget::Named(names) => {
                let mut out = named(names)?;
                out.dedup();
                Ok(out)
            }
            RebuildTarget::Outdated => self.pending_rebuilds().await,
        }
    }

    /// Gives each projector a generation to build: the half-built one of this version,
    /// or a fresh one. Returns `(name, generation, resumed)`.
    async fn prepare(
        &self,
        names: &[&'static str],
    ) -> Result<Vec<(&'static str, Generation, bool)>, ProjectionError> {
        let engine = self.db.engine();
        let mut tx = self.db.begin_write().await?;
        let mut out = Vec::new();
        for name in names {
            let Some(p) = self.projector(name) else {
                continue;
            };
            let row = query(
                "SELECT building_generation, building_version, next_generation
                 FROM projection_generations WHERE projector = $1",
            )
            .bind(*name)
            .fetch_one(&mut tx)
            .await?;
            let building: Option<i64> = row.get(0)?;
            let building_version: Option<i64> = row.get(1)?;
            let next: i64 = row.get(2)?;
            if let Some(b) = building {
                let generation = generation_from(b)?;
                if building_version == Some(i64::from(p.version())) {
                    out.push((*name, generation, true));
                    continue;
                }
                drop_tables(&mut tx, p.tables(), generation).await?;
                query(
                    "DELETE FROM projection_checkpoints WHERE projector = $1 AND generation = $2",
                )
                .bind(*name)
                .bind(b)
                .execute(&mut tx)
                .await?;
            }
            let generation = generation_from(next)?;
            drop_tables(&mut tx, p.tables(), generation).await?;
            for statement in p.schema(engine, generation) {
                query(&statement).execute(&mut tx).await?;
            }
            query(
                "INSERT INTO projection_checkpoints (projector, generation, commit_pos, sequence)
                 VALUES ($1, $2, 0, 0)
                 ON CONFLICT (projector, generation) DO UPDATE SET commit_pos = 0, sequence = 0",
            )
            .bind(*name)
            .bind(next)
            .execute(&mut tx)
            .await?;
            query(
                "UPDATE projection_generations
                 SET building_generation = $2, building_version = $3, next_generation = $4
                 WHERE projector = $1",
            )
            .bind(*name)
            .bind(next)
            .bind(i64::from(p.version()))
            .bind(next + 1)
            .execute(&mut tx)
            .await?;
            tracing::info!(
                projector = *name,
                generation = next,
                "building a new generation"
            );
            out.push((*name, generation, false));
        }
        for name in names {
            query("DELETE FROM projection_rebuild_failures WHERE projector = $1")
                .bind(*name)
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        lock(&self.rebuild_errors).retain(|n, _| !names.contains(n));
        Ok(out)
    }

    /// Records why the rebuild of `prepared` stopped, for the `status` of every process
    /// (the rebuild's own, often `homeroom projections rebuild`, is about to end).
    async fn record_rebuild_failure(
        &self,
        prepared: &[(&'static str, Generation, bool)],
        error: &ProjectionError,
    ) -> Result<(), ProjectionError> {
        let mut tx = self.db.begin_write().await?;
        for (name, generation, _) in prepared {
            let generation =
                i64::try_from(generation.number()).map_err(|_| ProjectionError::OutOfRange)?;
            query(
                "INSERT INTO projection_rebuild_failures (projector, generation, error, failed_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (projector, generation) DO UPDATE SET
                    error = excluded.error, failed_at = excluded.failed_at",
            )
            .bind(*name)
            .bind(generation)
            .bind(error.to_string())
            .bind(chrono::Utc::now())
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Applies the rest of the log to the building generations and makes them serve,
    /// in one transaction. Returns the lanes switched.
    async fn switch(&self, names: &[&'static str]) -> Result<Vec<Lane>, ProjectionError> {
        loop {
            let mut tx = self.db.begin_write().await?;
            match self.switch_in(&mut tx, names).await {
                Ok(Some(lanes)) => {
                    tx.commit().await?;
                    self.switched(&lanes);
                    if let Err(e) = self.drop_retired().await {
                        // Dropped on the next start instead.
                        tracing::warn!(error = %e, "dropping retired generations failed");
                    }
                    return Ok(lanes);
                }
                Ok(None) => tx.commit().await?,
                Err(e) => {
                    if let Err(rollback) = tx.rollback().await {
                        tracing::warn!(error = %rollback, "rolling back a failed switch");
                    }
                    return Err(e);
                }
            }
        }
    }

    /// `Some(lanes)` once caught up and switched; `None` when the log kept growing
    /// (commit what was applied and try again).
    async fn switch_in(
        &self,
        tx: &mut Tx<'static>,
        names: &[&'static str],
    ) -> Result<Option<Vec<Lane>>, ProjectionError> {
        let mut lanes = lanes::load(self, tx, LaneSet::Building(names)).await?;
        let Some(mut from) = lanes.iter().map(|l| l.checkpoint).min() else {
            // Another process switched them already.
            return Ok(Some(lanes));
        };
        let mut caught_up = false;
        for _ in 0..SWITCH_PAGES {
            let page = self.store.read_all(from, self.config.batch_size).await?;
            let Some(last) = page.last().map(|e| e.position) else {
                caught_up = true;
                break;
            };
            let mut envelopes = Vec::with_capacity(page.len());
            for recorded in page {
                match driver::decoded(recorded) {
                    Ok(envelope) => envelopes.push(envelope),
                    Err(undecodable) => {
                        let (recorded, e) = *undecodable;
                        return Err(ProjectionError::RebuildFailed {
                            projector: lanes[0].name().to_owned(),
                            position: recorded.position,
                            source: Box::new(e.into()),
                        });
                    }
                }
            }
            match lanes::apply(tx, &mut lanes, from, &envelopes).await {
                Ok(_) => {}
                Err(BatchError::Gap | BatchError::LeaseLost) => return Ok(None),
                Err(BatchError::Db(e)) => return Err(e),
                Err(BatchError::Lane {
                    name,
                    position,
                    error,
                    ..
                }) => {
                    return Err(if error.is_transient() {
                        error
                    } else {
                        ProjectionError::RebuildFailed {
                            projector: name.to_owned(),
                            position,
                            source: Box::new(error),
                        }
                    })
                }
            }
            from = last;
        }
        if !caught_up {
            return Ok(None);
        }
        let now = chrono::Utc::now();
        for lane in &lanes {
            let old: i64 =
                query("SELECT active_generation FROM projection_generations WHERE projector = $1")
                    .bind(lane.name())
                    .fetch_one(tx)
                    .await?
                    .get(0)?;
            query(
                "UPDATE projection_generations
                 SET active_generation = building_generation, active_version = building_version,
                     building_generation = NULL, building_version = NULL, switched_at = $2
                 WHERE projector = $1",
            )
            .bind(lane.name())
            .bind(now)
            .execute(tx)
            .await?;
            query(
                "INSERT INTO projection_retired (projector, generation) VALUES ($1, $2)
                 ON CONFLICT (projector, generation) DO NOTHING",
            )
            .bind(lane.name())
            .bind(old)
            .execute(tx)
            .await?;
            query("DELETE FROM projection_checkpoints WHERE projector = $1 AND generation = $2")
                .bind(lane.name())
                .bind(old)
                .execute(tx)
                .await?;
            tracing::info!(
                projector = lane.name(),
                from = old,
                to = lane.generation.number(),
                checkpoint = %lane.checkpoint,
                "switched to the rebuilt generation"
            );
        }
        self.db.notify(tx).await?;
        Ok(Some(lanes))
    }

    /// After a switch committed: the new checkpoints to the watchers, the new
    /// generations are healthy, and an idle live loop re-reads its lanes.
    fn switched(&self, lanes: &[Lane]) {
        {
            let mut health = lock(&self.health);
            for lane in lanes {
                health.insert(lane.name(), LaneHealth::Live);
            }
        }
        self.committed(lanes);
        self.switches.send_modify(|n| *n += 1);
        self.changed.notify_waiters();
    }
}

fn generation_from(n: i64) -> Result<Generation, ProjectionError> {
    Ok(Generation::new(
        u64::try_from(n).map_err(|_| ProjectionError::OutOfRange)?,
    ))
}
