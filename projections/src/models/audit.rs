//! The audit read model: every event of the log with its metadata and hash, per
//! district, in position order. It needs no decoding of the data (it stores the JSON
//! as recorded), and it writes many rows per statement because it sees every event.

use crate::db::{position_columns, query, Engine, Query, Tx};
use crate::error::ProjectionError;
use crate::projector::{render_for, Envelope, Generation, PerGeneration, Projector};
use async_trait::async_trait;
use homeroom_domain::Event;
use homeroom_eventstore::RecordedEvent;

/// The projector's name.
pub const NAME: &str = "audit";

/// Rows per multi-row `INSERT` (17 parameters each); measured fastest around 32.
const CHUNK: usize = 32;
const COLUMNS: usize = 17;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS audit_events{audit} (
        district TEXT NOT NULL,
        pos_commit BIGINT NOT NULL,
        pos_sequence BIGINT NOT NULL,
        event_id {uuid} NOT NULL,
        stream TEXT NOT NULL,
        version BIGINT NOT NULL,
        type TEXT NOT NULL,
        schema_version BIGINT NOT NULL,
        recorded_at {ts} NOT NULL,
        actor TEXT NOT NULL,
        school TEXT,
        correlation_id {uuid} NOT NULL,
        causation_id {uuid} NOT NULL,
        command_id {uuid} NOT NULL,
        hash TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        data {json} NOT NULL,
        PRIMARY KEY (district, pos_commit, pos_sequence)
    )",
    "CREATE INDEX IF NOT EXISTS audit_events{audit}_stream
        ON audit_events{audit} (district, stream, pos_commit, pos_sequence)",
    "CREATE INDEX IF NOT EXISTS audit_events{audit}_actor
        ON audit_events{audit} (district, actor, pos_commit, pos_sequence)",
];

fn insert(engine: Engine, rows: usize) -> String {
    format!(
        "INSERT {{or_fail}} INTO audit_events{{audit}}
            (district, pos_commit, pos_sequence, event_id, stream, version, type,
             schema_version, recorded_at, actor, school, correlation_id, causation_id,
             command_id, hash, prev_hash, data)
        VALUES {}
        ON CONFLICT (district, pos_commit, pos_sequence) DO NOTHING",
        engine.value_rows(rows, COLUMNS)
    )
}

struct Sql {
    one: String,
    chunk: String,
}

impl Sql {
    fn new(engine: Engine, g: Generation) -> Self {
        Self {
            one: render_for(engine, &insert(engine, 1), NAME, g),
            chunk: render_for(engine, &insert(engine, CHUNK), NAME, g),
        }
    }
}

/// One audit row, converted once so a statement can borrow it.
struct Row<'a> {
    e: &'a RecordedEvent,
    commit: i64,
    sequence: i64,
    version: i64,
    data: String,
}

impl<'a> Row<'a> {
    fn new(e: &'a RecordedEvent) -> Result<Self, ProjectionError> {
        let (commit, sequence) = position_columns(e.position)?;
        Ok(Self {
            e,
            commit,
            sequence,
            version: i64::try_from(e.version).map_err(|_| ProjectionError::OutOfRange)?,
            data: e.data.to_string(),
        })
    }
}

fn bind<'q>(q: Query<'q>, row: &'q Row<'q>) -> Query<'q> {
    let m = &row.e.metadata;
    q.bind(m.district.as_str())
        .bind(row.commit)
        .bind(row.sequence)
        .bind(row.e.event_id)
        .bind(row.e.stream.as_str())
        .bind(row.version)
        .bind(row.e.event_type.as_str())
        .bind(i64::from(row.e.schema_version))
        .bind(row.e.recorded_at)
        .bind(m.actor.as_str())
        .bind(m.school.as_deref())
        .bind(m.correlation_id)
        .bind(m.causation_id)
        .bind(m.command_id)
        .bind(row.e.hash.as_str())
        .bind(row.e.prev_hash.as_str())
        .bind(row.data.as_str())
}

/// Builds `audit_events` from every recorded event.
#[derive(Default)]
pub struct Audit {
    sql: PerGeneration<Sql>,
}

#[async_trait]
impl Projector for Audit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_events"]
    }

    fn schema(&self, engine: Engine, generation: Generation) -> Vec<String> {
        SCHEMA
            .iter()
            .map(|t| render_for(engine, t, NAME, generation))
            .collect()
    }

    async fn apply(
        &self,
        tx: &mut Tx<'_>,
        generation: Generation,
        recorded: &RecordedEvent,
        _event: &Event,
    ) -> Result<(), ProjectionError> {
        let sql = self.sql.get(tx.engine(), generation, Sql::new);
        let row = Row::new(recorded)?;
        bind(query(&sql.one), &row).execute(tx).await?;
        Ok(())
    }

    async fn apply_batch(
        &self,
        tx: &mut Tx<'_>,
        generation: Generation,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let sql = self.sql.get(tx.engine(), generation, Sql::new);
        let rows = events
            .iter()
            .map(|e| Row::new(&e.recorded))
            .collect::<Result<Vec<_>, _>>()?;
        let mut chunks = rows.chunks_exact(CHUNK);
        for chunk in &mut chunks {
            let mut q = query(&sql.chunk);
            for row in chunk {
                q = bind(q, row);
            }
            q.execute(tx).await?;
        }
        for row in chunks.remainder() {
            bind(query(&sql.one), row).execute(tx).await?;
        }
        Ok(())
    }
}
