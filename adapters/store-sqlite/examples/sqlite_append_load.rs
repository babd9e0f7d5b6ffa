//! A quick throughput check of the SQLite store: many tasks each append single events
//! to their own conversation stream (what the command service does), with exact
//! expected versions, through the real group-commit path and fsync.
//!
//! ```sh
//! cargo run --release -p homeroom-store-sqlite --example sqlite_append_load [-- EVENTS TASKS [FILE]]
//! ```
//!
//! Defaults: 100,000 events from 64 tasks into a fresh file in a temporary directory.
//! Prints appends/s, the mean batch size, and append latency percentiles.

use homeroom_eventstore::{EventAppender, EventMetadata, ExpectedVersion, NewEvent, StreamId};
use homeroom_store_sqlite::SqliteStore;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let tasks: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let file = args
        .next()
        .map_or_else(|| dir.path().join("events.sqlite"), PathBuf::from);

    let store = Arc::new(SqliteStore::open(&file).await?);
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let store = store.clone();
        let issued = issued.clone();
        handles.push(tokio::spawn(async move {
            let stream = StreamId::parse(format!("conversation-load:{}", Uuid::now_v7()))?;
            let (district, actor) = ("district-load".to_owned(), "staff-load".to_owned());
            let mut version = 0;
            let mut latencies = Vec::new();
            while issued.fetch_add(1, Ordering::Relaxed) < total {
                let event = NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: "message_posted".into(),
                    schema_version: 1,
                    data: serde_json::json!({
                        "message_id": Uuid::now_v7(),
                        "author": actor,
                        "body": "Picture day is Friday. Please send the signed form back by Thursday.",
                        "channel": "app",
                    }),
                    metadata: EventMetadata {
                        district: district.clone(),
                        school: Some("school-load".into()),
                        actor: actor.clone(),
                        correlation_id: Uuid::now_v7(),
                        causation_id: Uuid::now_v7(),
                        command_id: Uuid::now_v7(),
                        command_digest: None,
                    },
                };
                let sent = Instant::now();
                version = store
                    .append(&stream, ExpectedVersion::from_version(version), vec![event])
                    .await?
                    .version;
                latencies.push(sent.elapsed());
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(total as usize);
    for handle in handles {
        latencies.extend(handle.await?.map_err(|e| e as Box<dyn std::error::Error>)?);
    }
    let elapsed = started.elapsed();
    let stats = store.stats();
    store.close().await;

    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(Duration::ZERO)
    };
    println!(
        "{} single-event appends from {tasks} tasks in {elapsed:.2?}: {:.0} appends/s",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "{} transactions, {:.1} appends per transaction; latency p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        stats.transactions,
        stats.requests as f64 / stats.transactions.max(1) as f64,
        at(0.50),
        at(0.99),
        at(1.0),
    );
    Ok(())
}
