//! The audit read model: every event of the log with its metadata and hash, per
//! district, in position order. It needs no decoding of the data (it stores the JSON
//! as recorded), and it writes many rows per statement because it sees every event.

use crate::db::{execute_rows, position_columns, Engine, Tx, Value};
use crate::error::ProjectionError;
use crate::projector::{render_for, Envelope, Generation, Projector};
use async_trait::async_trait;
use homeroom_domain::Event;
use homeroom_eventstore::RecordedEvent;
use std::borrow::Cow;

/// The projector's name.
pub const NAME: &str = "audit";

/// Rows per multi-row `INSERT` (17 parameters each, 4,352 a statement: well inside
/// both engines' limits). Each statement is a round trip to SQLite's connection thread,
/// so fewer, larger ones keep that thread busier: 256 replayed about a tenth faster
/// than 32 and as fast as 1,024 (docs/benchmarks.md).
const CHUNK: usize = 256;
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

/// One audit row, converted once so a statement can borrow it.
struct Row<'a> {
    e: &'a RecordedEvent,
    commit: i64,
    sequence: i64,
    version: i64,
    /// `e.data` as JSON text.
    data: Cow<'a, str>,
}

impl<'a> Row<'a> {
    fn new(e: &'a RecordedEvent, data: Cow<'a, str>) -> Result<Self, ProjectionError> {
        let (commit, sequence) = position_columns(e.position)?;
        Ok(Self {
            e,
            commit,
            sequence,
            version: i64::try_from(e.version).map_err(|_| ProjectionError::OutOfRange)?,
            data,
        })
    }
}

impl Row<'_> {
    /// The row's values, in the column order of [`insert`].
    fn values(&self) -> Vec<Value<'_>> {
        let m = &self.e.metadata;
        vec![
            m.district.as_str().into(),
            self.commit.into(),
            self.sequence.into(),
            self.e.event_id.into(),
            self.e.stream.as_str().into(),
            self.version.into(),
            self.e.event_type.as_str().into(),
            i64::from(self.e.schema_version).into(),
            self.e.recorded_at.into(),
            m.actor.as_str().into(),
            m.school.as_deref().into(),
            m.correlation_id.into(),
            m.causation_id.into(),
            m.command_id.into(),
            self.e.hash.as_str().into(),
            self.e.prev_hash.as_str().into(),
            self.data.as_ref().into(),
        ]
    }
}

/// Inserts the rows of `events` (each with its data as JSON text), [`CHUNK`] per
/// statement.
async fn insert_all<'a>(
    tx: &mut Tx<'_>,
    generation: Generation,
    events: impl Iterator<Item = (&'a RecordedEvent, Cow<'a, str>)>,
) -> Result<(), ProjectionError> {
    let engine = tx.engine();
    let rows = events
        .map(|(e, data)| Row::new(e, data))
        .collect::<Result<Vec<_>, _>>()?;
    let values = rows.iter().map(Row::values).collect();
    execute_rows(tx, values, CHUNK, |n| {
        render_for(engine, &insert(engine, n), NAME, generation)
    })
    .await?;
    Ok(())
}

/// Builds `audit_events` from every recorded event.
#[derive(Default)]
pub struct Audit;

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
        let data = Cow::Owned(recorded.data.to_string());
        insert_all(tx, generation, std::iter::once((recorded, data))).await
    }

    async fn apply_batch(
        &self,
        tx: &mut Tx<'_>,
        generation: Generation,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let rows = events
            .iter()
            .map(|e| (&e.recorded, Cow::Borrowed(e.data_json.as_str())));
        insert_all(tx, generation, rows).await
    }
}
