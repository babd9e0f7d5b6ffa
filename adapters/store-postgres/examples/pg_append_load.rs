//! A quick throughput check of the PostgreSQL store: many tasks each append single
//! events to their own conversation stream (what the command service does), with exact
//! expected versions, through the real append path, into a throwaway schema.
//!
//! ```sh
//! cargo run --release -p homeroom-store-postgres --example pg_append_load [-- EVENTS TASKS [BATCH]]
//! ```
//!
//! Defaults: 20,000 events from 32 tasks, one event per append, against `DATABASE_URL`
//! (or the local test database). Set `HOMEROOM_PG_NO_WAIT=1` to skip the wait for
//! deliverability (`PgStoreConfig::deliverable_wait = 0`). Prints appends/s, events/s
//! and append latency percentiles, then drops the schema.

use homeroom_eventstore::{EventAppender, EventMetadata, ExpectedVersion, NewEvent, StreamId};
use homeroom_store_postgres::{PgStore, PgStoreConfig};
use sqlx::{Connection, PgConnection};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let tasks: usize = args.next().map_or(Ok(32), |a| a.parse())?;
    let batch: usize = args.next().map_or(Ok(1), |a| a.parse())?;
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("hr_load_{}", Uuid::new_v4().simple());

    let mut config = PgStoreConfig::new(&url, &schema);
    config.max_connections = u32::try_from(tasks + 2)?;
    if std::env::var("HOMEROOM_PG_NO_WAIT").is_ok() {
        config.deliverable_wait = Duration::ZERO;
    }
    let wait = config.deliverable_wait;
    let store = Arc::new(PgStore::connect_with(config).await?);

    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let (store, issued) = (store.clone(), issued.clone());
        handles.push(tokio::spawn(async move {
            let stream = StreamId::parse(format!("conversation-load:{}", Uuid::now_v7()))?;
            let mut version = 0;
            let mut latencies = Vec::new();
            while issued.fetch_add(batch as u64, Ordering::Relaxed) < total {
                let events = (0..batch).map(|_| message()).collect();
                let t = Instant::now();
                let r = store
                    .append(&stream, ExpectedVersion::from_version(version), events)
                    .await?;
                latencies.push(t.elapsed());
                version = r.version;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await?.map_err(|e| e.to_string())?);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let appends = latencies.len();
    println!(
        "{appends} appends of {batch} event(s) from {tasks} tasks in {elapsed:.2?} \
         (deliverable wait {wait:?}): {:.0} appends/s, {:.0} events/s; \
         latency p50 {:.2?} p99 {:.2?} max {:.2?}",
        appends as f64 / elapsed.as_secs_f64(),
        (appends * batch) as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );

    store.close().await;
    let mut conn = PgConnection::connect(&url).await?;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

fn message() -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "message_posted".into(),
        schema_version: 1,
        data: serde_json::json!({
            "message_id": Uuid::now_v7(),
            "author": "staff-load",
            "body": "Picture day is Friday. Please send the signed form back by Thursday.",
            "channel": "app",
        }),
        metadata: EventMetadata {
            district: "district-load".into(),
            school: Some("school-load".into()),
            actor: "staff-load".into(),
            correlation_id: Uuid::now_v7(),
            causation_id: Uuid::now_v7(),
            command_id: Uuid::now_v7(),
            command_digest: None,
        },
    }
}
