//! Lanes: one generation of one projector and its checkpoint, as the database says now.
//!
//! Every batch re-reads its lanes inside its own write transaction (holding the
//! engine's write lock: `BEGIN IMMEDIATE` on SQLite, the schema's advisory lock on
//! PostgreSQL, so nobody else writes meanwhile), applies the events each lane has not seen, moves
//! each lane's checkpoint, and commits. Because the truth is read from the database
//! each time, a rebuild switched by another process, or a second rebuilder of the same
//! generation, can never make a batch apply an event twice or skip one: a lane that is
//! ahead skips what it has, and a lane that is behind the batch reports a gap.

use super::Inner;
use crate::db::{position_columns, position_from, query, Tx};
use crate::error::ProjectionError;
use crate::projector::{Envelope, Generation, Projector};
use homeroom_eventstore::Position;
use std::sync::Arc;

/// Which generation of each projector a batch writes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LaneSet<'a> {
    /// The generations serving queries, of projectors built by their current version
    /// and not parked.
    Active,
    /// The generations being rebuilt for these projectors.
    Building(&'a [&'static str]),
}

/// One generation of one projector, and how far it has applied the log.
#[derive(Clone)]
pub(crate) struct Lane {
    pub projector: Arc<dyn Projector>,
    pub generation: Generation,
    pub version: u32,
    pub checkpoint: Position,
}

impl Lane {
    pub fn name(&self) -> &'static str {
        self.projector.name()
    }
}

/// Why a batch did not commit.
pub(crate) enum BatchError {
    /// A lane needs events from before this batch: read again from its checkpoint.
    Gap,
    /// One projector failed; the whole batch was rolled back.
    Lane {
        name: &'static str,
        generation: Generation,
        position: Position,
        error: ProjectionError,
    },
    /// The database failed outside any projector (begin, checkpoints, commit).
    Db(ProjectionError),
    /// A fenced batch found that this process no longer holds the lease; nothing was
    /// written.
    LeaseLost,
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Db(e.into())
    }
}

const ACTIVE: &str = "SELECT g.projector, g.active_generation, g.active_version,
        c.commit_pos, c.sequence
    FROM projection_generations g
    JOIN projection_checkpoints c
      ON c.projector = g.projector AND c.generation = g.active_generation";

const BUILDING: &str = "SELECT g.projector, g.building_generation, g.building_version,
        c.commit_pos, c.sequence
    FROM projection_generations g
    JOIN projection_checkpoints c
      ON c.projector = g.projector AND c.generation = g.building_generation
    WHERE g.building_generation IS NOT NULL";

/// Every lane of `set` as stored, in registration order. Lanes of projectors that are
/// not registered here (or, for [`LaneSet::Active`], built by another version or
/// parked) are left out.
pub(crate) async fn load(
    rt: &Inner,
    tx: &mut Tx<'_>,
    set: LaneSet<'_>,
) -> Result<Vec<Lane>, ProjectionError> {
    let sql = match set {
        LaneSet::Active => ACTIVE,
        LaneSet::Building(_) => BUILDING,
    };
    let rows = query(sql).fetch_all(tx).await?;
    let mut lanes = Vec::with_capacity(rows.len());
    for projector in &rt.projectors {
        let name = projector.name();
        if let LaneSet::Building(names) = set {
            if !names.contains(&name) {
                continue;
            }
        }
        let Some(row) = rows.iter().find(|r| r.get::<&str, _>(0).ok() == Some(name)) else {
            continue;
        };
        let generation = Generation::new(
            u64::try_from(row.get::<i64, _>(1)?).map_err(|_| ProjectionError::OutOfRange)?,
        );
        let version =
            u32::try_from(row.get::<i64, _>(2)?).map_err(|_| ProjectionError::OutOfRange)?;
        let checkpoint =
            position_from(row.get(3)?, row.get(4)?).ok_or(ProjectionError::OutOfRange)?;
        if version != projector.version() {
            continue;
        }
        if matches!(set, LaneSet::Active) && rt.is_parked(name, generation) {
            continue;
        }
        lanes.push(Lane {
            projector: projector.clone(),
            generation,
            version,
            checkpoint,
        });
    }
    Ok(lanes)
}

/// Applies `events` (consecutive, the first one right after `prev`) to every lane that
/// has not seen them and moves those lanes' checkpoints, inside `tx`. Returns the
/// indexes of the lanes that moved.
pub(crate) async fn apply(
    tx: &mut Tx<'_>,
    lanes: &mut [Lane],
    prev: Position,
    events: &[Envelope],
) -> Result<Vec<usize>, BatchError> {
    let Some(last) = events.last().map(|e| e.recorded.position) else {
        return Ok(Vec::new());
    };
    let mut moved = Vec::new();
    for (index, lane) in lanes.iter_mut().enumerate() {
        if lane.checkpoint < prev {
            return Err(BatchError::Gap);
        }
        let start = events.partition_point(|e| e.recorded.position <= lane.checkpoint);
        let todo = &events[start..];
        let Some(first) = todo.first() else {
            continue;
        };
        if let Err(error) = lane.projector.apply_batch(tx, lane.generation, todo).await {
            return Err(BatchError::Lane {
                name: lane.name(),
                generation: lane.generation,
                position: first.recorded.position,
                error,
            });
        }
        save_checkpoint(tx, lane.name(), lane.generation, last)
            .await
            .map_err(BatchError::Db)?;
        lane.checkpoint = last;
        moved.push(index);
    }
    Ok(moved)
}

/// Stores a generation's checkpoint (inside the batch's transaction).
pub(crate) async fn save_checkpoint(
    tx: &mut Tx<'_>,
    name: &str,
    generation: Generation,
    position: Position,
) -> Result<(), ProjectionError> {
    let (commit, sequence) = position_columns(position)?;
    query(
        "UPDATE projection_checkpoints SET commit_pos = $3, sequence = $4
         WHERE projector = $1 AND generation = $2",
    )
    .bind(name)
    .bind(generation_column(generation)?)
    .bind(commit)
    .bind(sequence)
    .execute(tx)
    .await?;
    Ok(())
}

/// A generation number as an integer column.
pub(crate) fn generation_column(generation: Generation) -> Result<i64, ProjectionError> {
    i64::try_from(generation.number()).map_err(|_| ProjectionError::OutOfRange)
}

/// One batch in its own write transaction: load the lanes, apply, commit. On any error
/// the transaction is rolled back, so nothing of the batch (nor any checkpoint) stays.
///
/// With a `fence` (the lease holder's session, on PostgreSQL) the batch first checks
/// that this session still holds the lease, and writes nothing when it does not.
/// Batches of serving generations tell standbys their new checkpoints on commit.
pub(crate) async fn write_batch(
    rt: &Inner,
    set: LaneSet<'_>,
    prev: Position,
    events: &[Envelope],
    fence: Option<i32>,
) -> Result<Vec<Lane>, BatchError> {
    let mut tx = rt.db.begin_write().await?;
    let outcome = async {
        if let Some(pid) = fence {
            if !rt.db.holds_lease(&mut tx, pid).await? {
                return Err(BatchError::LeaseLost);
            }
        }
        let mut lanes = load(rt, &mut tx, set).await.map_err(BatchError::Db)?;
        let moved = apply(&mut tx, &mut lanes, prev, events).await?;
        if matches!(set, LaneSet::Active) && !moved.is_empty() {
            rt.db.notify(&mut tx).await?;
        }
        Ok::<_, BatchError>(lanes)
    }
    .await;
    match outcome {
        Ok(lanes) => {
            tx.commit().await?;
            Ok(lanes)
        }
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "rolling back a failed projection batch");
            }
            Err(e)
        }
    }
}
