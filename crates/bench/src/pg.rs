//! `postgres`: append throughput and latency of our PostgreSQL event store beside the
//! `cqrs-es` + `postgres-es` crates, in one run, on the same database.
//!
//! Fairness, as `docs/postgres.md` explains it: the same number of writers, each
//! appending single events to its own stream (aggregate) with optimistic concurrency
//! (our exact expected version; the peer's `current_sequence`, checked by its primary
//! key); the same event payload and metadata; pools of the same size built with the same
//! options; a fresh schema per side, dropped afterwards; the sides run one after the
//! other, never at once. Each side gets an unmeasured warm-up first.

use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, DomainEvent, EventStore as _};
use hdrhistogram::Histogram;
use homeroom_eventstore::{EventAppender as _, EventMetadata, ExpectedVersion, NewEvent, StreamId};
use homeroom_store_postgres::{PgStore, PgStoreConfig};
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the `postgres` subcommand was asked for.
pub(crate) struct Args {
    pub(crate) url: String,
    pub(crate) writers: usize,
    pub(crate) events: u64,
    pub(crate) warmup: u64,
    pub(crate) pool: u32,
}

/// The message every append carries, on both sides: the same fields, the same JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MessagePosted {
    message_id: Uuid,
    author: String,
    body: String,
    channel: String,
}

impl MessagePosted {
    fn new(writer: usize) -> Self {
        Self {
            message_id: Uuid::now_v7(),
            author: format!("staff-{writer}"),
            body: "Picture day is Friday. Please send the signed form back by Thursday.".into(),
            channel: "app".into(),
        }
    }
}

impl DomainEvent for MessagePosted {
    fn event_type(&self) -> String {
        "message_posted".into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

/// Who and what caused it, with the same keys and values on both sides.
fn metadata(writer: usize) -> EventMetadata {
    let command = Uuid::now_v7();
    EventMetadata {
        district: "district-bench".into(),
        school: Some("school-bench".into()),
        actor: format!("staff-{writer}"),
        correlation_id: command,
        causation_id: command,
        command_id: command,
        command_digest: None,
    }
}

fn peer_metadata(m: &EventMetadata) -> HashMap<String, String> {
    HashMap::from([
        ("district".to_owned(), m.district.clone()),
        ("school".to_owned(), m.school.clone().unwrap_or_default()),
        ("actor".to_owned(), m.actor.clone()),
        ("correlation_id".to_owned(), m.correlation_id.to_string()),
        ("causation_id".to_owned(), m.causation_id.to_string()),
        ("command_id".to_owned(), m.command_id.to_string()),
    ])
}

/// The peer's aggregate: commands are not used (the benchmark commits events directly,
/// as our side appends them directly).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Conversation {
    posted: u64,
}

/// The peer aggregate's refusal type (never produced).
#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

impl Aggregate for Conversation {
    const TYPE: &'static str = "conversation";
    type Command = ();
    type Event = MessagePosted;
    type Error = Refused;
    type Services = ();

    async fn handle(
        &mut self,
        _command: Self::Command,
        _services: &Self::Services,
        _sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    fn apply(&mut self, _event: Self::Event) {
        self.posted += 1;
    }
}

type PeerStore = PersistedEventStore<PostgresEventRepository, Conversation>;

/// The peer's table, as `postgres-es` ships it (`db/init.sql`).
const PEER_TABLE: &str = "CREATE TABLE events (
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text NOT NULL,
    event_version  text NOT NULL,
    payload        json NOT NULL,
    metadata       json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
)";

/// One side of the comparison.
enum Side {
    Ours(PgStore),
    Peer(Box<PeerStore>),
}

impl Side {
    /// Appends one event to `writer`'s stream, expecting it at `version`.
    async fn append(&self, writer: usize, stream: &str, version: u64) -> Result<(), BoxError> {
        let payload = MessagePosted::new(writer);
        let meta = metadata(writer);
        match self {
            Side::Ours(store) => {
                let event = NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: payload.event_type(),
                    schema_version: 1,
                    data: serde_json::to_value(&payload)?,
                    metadata: meta,
                };
                store
                    .append(
                        &StreamId::parse(stream)?,
                        ExpectedVersion::from_version(version),
                        vec![event],
                    )
                    .await?;
            }
            Side::Peer(store) => {
                // What `load_aggregate` would return for a writer that knows its
                // stream's version: the optimistic check is the primary key.
                let context = EventStoreAggregateContext {
                    aggregate_id: stream.to_owned(),
                    aggregate: Conversation::default(),
                    current_sequence: usize::try_from(version)?,
                    current_snapshot: None,
                };
                store
                    .commit(vec![payload], context, peer_metadata(&meta))
                    .await?;
            }
        }
        Ok(())
    }
}

/// One side's figures.
struct Figures {
    name: &'static str,
    events: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    /// CPU time this process (the client side: the store's code, the driver, the
    /// benchmark's loop) spent during the measured phase, where the OS tells it.
    client_cpu: Option<Duration>,
}

/// CPU time of every thread of this process so far (Linux: `/proc/self/task/*/schedstat`,
/// nanoseconds on a CPU), or `None` where that cannot be read.
fn process_cpu() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// Every writer appends to its own stream until `total` appends were issued in this
/// phase; returns the merged latency histogram (µs) and the elapsed time.
async fn phase(
    side: &Arc<Side>,
    streams: &Arc<Vec<(String, AtomicU64)>>,
    total: u64,
) -> Result<(Histogram<u64>, Duration), BoxError> {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..streams.len())
        .map(|w| {
            let (side, streams, issued) = (side.clone(), streams.clone(), issued.clone());
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                let (stream, version) = &streams[w];
                while issued.fetch_add(1, Ordering::Relaxed) < total {
                    let at = version.load(Ordering::Relaxed);
                    let t = Instant::now();
                    side.append(w, stream, at).await?;
                    hist.record(t.elapsed().as_micros().max(1) as u64)?;
                    version.store(at + 1, Ordering::Relaxed);
                }
                Ok::<_, BoxError>(hist)
            })
        })
        .collect();
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        all.add(task.await??)?;
    }
    Ok((all, started.elapsed()))
}

async fn measure(name: &'static str, side: Side, args: &Args) -> Result<Figures, BoxError> {
    let side = Arc::new(side);
    let prefix = match *side {
        Side::Ours(_) => "conversation-bench:",
        Side::Peer(_) => "",
    };
    let streams: Arc<Vec<(String, AtomicU64)>> = Arc::new(
        (0..args.writers)
            .map(|_| (format!("{prefix}{}", Uuid::now_v7()), AtomicU64::new(0)))
            .collect(),
    );
    phase(&side, &streams, args.warmup).await?;
    let cpu_before = process_cpu();
    let (latency, elapsed) = phase(&side, &streams, args.events).await?;
    let client_cpu = cpu_before
        .zip(process_cpu())
        .map(|(a, b)| b.saturating_sub(a));
    Ok(Figures {
        name,
        events: args.events,
        elapsed,
        latency,
        client_cpu,
    })
}

fn fresh_schema() -> String {
    format!("hr_bench_{}", Uuid::new_v4().simple())
}

async fn drop_schema(url: &str, schema: &str) -> Result<(), BoxError> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// Our store with `deliverable_wait` as given, in a fresh schema.
async fn ours(
    name: &'static str,
    args: &Args,
    wait: Option<Duration>,
) -> Result<Figures, BoxError> {
    let schema = fresh_schema();
    let mut config = PgStoreConfig::new(&args.url, &schema);
    config.max_connections = args.pool;
    if let Some(wait) = wait {
        config.deliverable_wait = wait;
    }
    let store = PgStore::connect_with(config).await?;
    let figures = measure(name, Side::Ours(store.clone()), args).await;
    store.close().await;
    drop_schema(&args.url, &schema).await?;
    figures
}

/// The peer in a fresh schema of its own, its pool built with the options our store
/// builds its own with.
async fn peer(args: &Args) -> Result<Figures, BoxError> {
    let schema = fresh_schema();
    let mut conn = PgConnection::connect(&args.url).await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("SET search_path = {schema}"))
        .execute(&mut conn)
        .await?;
    sqlx::query(PEER_TABLE).execute(&mut conn).await?;
    conn.close().await?;
    let options =
        PgConnectOptions::from_str(&args.url)?.options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(args.pool)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    let store = PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()));
    let figures = measure("cqrs-es + postgres-es", Side::Peer(Box::new(store)), args).await;
    pool.close().await;
    drop_schema(&args.url, &schema).await?;
    figures
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Runs both sides one after the other and prints them side by side.
pub(crate) async fn postgres(args: Args) -> Result<(), BoxError> {
    assert!(
        args.writers > 0 && args.pool >= 2,
        "need writers and a pool of 2 or more"
    );
    let sample = MessagePosted::new(0);
    let meta = metadata(0);
    let ours_bytes = serde_json::to_string(&sample)?.len() + serde_json::to_string(&meta)?.len();
    let peer_bytes =
        serde_json::to_string(&sample)?.len() + serde_json::to_string(&peer_metadata(&meta))?.len();

    let rows = vec![
        ours("homeroom (default: waits until deliverable)", &args, None).await?,
        ours(
            "homeroom (deliverable_wait = 0)",
            &args,
            Some(Duration::ZERO),
        )
        .await?,
        peer(&args).await?,
    ];

    println!(
        "PostgreSQL appends: {} writers, each appending single events to its own stream with \
         optimistic concurrency; {} measured events per side after {} warm-up; pools of {} \
         connections; same database, fresh schema per side, sides run one after the other",
        args.writers, args.events, args.warmup, args.pool
    );
    println!(
        "  event size (data + metadata JSON): homeroom {ours_bytes} bytes, peer {peer_bytes} bytes"
    );
    println!(
        "  {:<46} {:>10} {:>9} {:>9} {:>9} {:>9} {:>14}",
        "side", "events/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "client µs/event"
    );
    for r in &rows {
        let cpu = r.client_cpu.map_or_else(
            || "-".to_owned(),
            |cpu| format!("{:.0}", cpu.as_secs_f64() * 1e6 / r.events as f64),
        );
        println!(
            "  {:<46} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>14}",
            r.name,
            r.events as f64 / r.elapsed.as_secs_f64(),
            ms(r.latency.value_at_quantile(0.50)),
            ms(r.latency.value_at_quantile(0.99)),
            ms(r.latency.value_at_quantile(0.999)),
            ms(r.latency.max()),
            cpu,
        );
    }
    Ok(())
}
