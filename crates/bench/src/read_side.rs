//! Read-side benchmarks: replaying a large log into every read model, and inbox queries
//! against read models that hold it.
//!
//! Both need a log of `messages` PostMessage events; it is built once through the real
//! command service (as `commands` does) and can be kept with `--data DIR` so a second
//! run measures without rebuilding it.

use crate::{build_world, post_messages};
use hdrhistogram::Histogram;
use homeroom_domain::{DistrictId, PersonId};
use homeroom_eventstore::{EventReader, EventStore};
use homeroom_projections::queries::PageRequest;
use homeroom_projections::{models, ProjectionRuntime, ReadDb, RuntimeConfig};
use homeroom_store_sqlite::SqliteStore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::BoxError;

/// What a kept log holds, so a later run can reuse it.
#[derive(Serialize, Deserialize)]
struct Manifest {
    messages: u64,
    district: String,
    staff: Vec<PersonId>,
}

const MANIFEST: &str = "bench-log.json";

/// The directory to work in: `data`, or a temporary one kept alive by the guard.
fn workdir(data: Option<PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>), BoxError> {
    match data {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            Ok((dir, None))
        }
        None => {
            let tmp = tempfile::tempdir()?;
            Ok((tmp.path().to_owned(), Some(tmp)))
        }
    }
}

/// Builds (or finds) a log of `messages` messages in `dir`.
async fn log_of(dir: &Path, messages: u64) -> Result<Manifest, BoxError> {
    let manifest_path = dir.join(MANIFEST);
    if let Ok(text) = std::fs::read_to_string(&manifest_path) {
        let manifest: Manifest = serde_json::from_str(&text)?;
        if manifest.messages == messages {
            println!(
                "reusing the log of {messages} messages in {}",
                dir.display()
            );
            return Ok(manifest);
        }
        return Err(format!(
            "{} holds a log of {} messages, not {messages}; use another --data",
            dir.display(),
            manifest.messages
        )
        .into());
    }
    let started = Instant::now();
    let (senders, conversations) = (64, 1_000);
    let world = Arc::new(build_world(dir, senders, conversations).await?);
    post_messages(&world, senders, messages).await;
    let mut staff: Vec<PersonId> = world.conversations.iter().map(|(_, s)| *s).collect();
    staff.sort();
    staff.dedup();
    let manifest = Manifest {
        messages,
        district: world.district.to_string(),
        staff,
    };
    world.store.close().await;
    std::fs::write(&manifest_path, serde_json::to_string(&manifest)?)?;
    println!(
        "built a log of {messages} messages in {:.1?}",
        started.elapsed()
    );
    Ok(manifest)
}

/// The resident set size of this process, in MiB (Linux; 0 elsewhere).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `replay`: a fresh read-model database, every projector (or those named in `only`),
/// the whole log.
pub async fn replay(messages: u64, data: Option<PathBuf>, only: &[String]) -> Result<(), BoxError> {
    let (dir, _guard) = workdir(data)?;
    log_of(&dir, messages).await?;
    let store = SqliteStore::open(&dir.join("events.sqlite")).await?;
    let head = store.head().await?;
    read_alone(&store).await?;
    let read_path = dir.join(format!("replay-{}.sqlite", uuid::Uuid::now_v7().simple()));
    let db = ReadDb::open(&read_path).await?;
    let mut projectors = models::all();
    if !only.is_empty() {
        if let Some(unknown) = only
            .iter()
            .find(|name| !projectors.iter().any(|p| p.name() == name.as_str()))
        {
            return Err(format!("no projector is named {unknown}").into());
        }
        projectors.retain(|p| only.iter().any(|name| name == p.name()));
    }
    let watched = projectors[0].name();
    let runtime = projectors_over(&store, &db, projectors).await?;
    let rss_before = rss_mib();
    let samples = Arc::new(std::sync::Mutex::new(Vec::<(u64, f64)>::new()));
    let started = Instant::now();
    let watch = tokio::spawn({
        let runtime = runtime.clone();
        let samples = samples.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let at = runtime.checkpoint(watched).map_or(0, |p| p.sequence);
                samples
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((at, rss_mib()));
            }
        }
    });
    let reached = runtime.catch_up().await?;
    let elapsed = started.elapsed();
    watch.abort();
    let events = reached.sequence;
    println!(
        "replay of all projectors ({}) on SQLite: {events} events (log head {head})",
        runtime.projector_names().join(", ")
    );
    println!(
        "  throughput: {:.0} events/s ({elapsed:.2?} total)",
        events as f64 / elapsed.as_secs_f64()
    );
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let quartiles: Vec<String> = [0.25, 0.5, 0.75, 1.0]
        .iter()
        .filter_map(|q| {
            let target = (events as f64 * q) as u64;
            samples
                .iter()
                .find(|(at, _)| *at >= target)
                .or(samples.last())
                .map(|(at, rss)| format!("{rss:.0} MiB at {at} events"))
        })
        .collect();
    println!(
        "  memory (RSS): {rss_before:.0} MiB before; {}; {:.0} MiB after",
        quartiles.join(", "),
        rss_mib()
    );
    db.close().await;
    store.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = read_path.clone().into_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
    Ok(())
}

/// Every projector over `store` into `db`, set up as the server sets them up.
async fn projectors_over(
    store: &SqliteStore,
    db: &ReadDb,
    projectors: Vec<Arc<dyn homeroom_projections::Projector>>,
) -> Result<ProjectionRuntime, BoxError> {
    let shared: Arc<dyn EventStore> = Arc::new(store.clone());
    Ok(ProjectionRuntime::open(
        shared,
        db.clone(),
        projectors,
        RuntimeConfig::for_engine(db.engine()),
    )
    .await?)
}

/// Reads and decodes the whole log as catch-up does, writing nothing: the ceiling any
/// replay of this log has on this machine.
async fn read_alone(store: &SqliteStore) -> Result<(), BoxError> {
    let started = Instant::now();
    let (mut after, mut events) = (homeroom_eventstore::Position::START, 0u64);
    loop {
        let page = store
            .read_all(after, homeroom_projections::SQLITE_BATCH)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        events += page.len() as u64;
        for recorded in page {
            let event = homeroom_projections::codec::decode(&recorded)?;
            drop(homeroom_projections::Envelope::new(recorded, event));
        }
    }
    let elapsed = started.elapsed();
    println!(
        "reading and decoding the log alone: {events} events in {elapsed:.2?} ({:.0} events/s)",
        events as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// `inbox`: staff inboxes (the first page, as an app opens it) against read models that
/// hold the whole log, one query at a time, as each request would run; then whole
/// threads (`GET /v1/conversations/{id}`) of the conversations those inboxes list.
pub async fn inbox(
    messages: u64,
    queries: u64,
    threads: u64,
    data: Option<PathBuf>,
) -> Result<(), BoxError> {
    let (dir, _guard) = workdir(data)?;
    let manifest = log_of(&dir, messages).await?;
    let store = SqliteStore::open(&dir.join("events.sqlite")).await?;
    let db = ReadDb::open(&dir.join("read.sqlite")).await?;
    let runtime = projectors_over(&store, &db, models::all()).await?;
    let caught_up = Instant::now();
    let reached = runtime.catch_up().await?;
    println!(
        "read models at position {reached} ({:.1?} to catch up)",
        caught_up.elapsed()
    );
    let read = runtime.read_models();
    let district = DistrictId::parse(&manifest.district)?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let page = PageRequest::first();
    let mut rows = 0usize;
    // Warm the page cache as a running server would be, and note each inbox's
    // conversations for the thread queries.
    let mut listed = Vec::new();
    for viewer in &manifest.staff {
        let inbox = read
            .inbox_personal(&district, *viewer, false, &page)
            .await?;
        listed.extend(
            inbox
                .conversations
                .iter()
                .map(|c| (*viewer, c.conversation_id)),
        );
    }
    let started = Instant::now();
    for i in 0..queries {
        let viewer = manifest.staff[(i as usize * 7919) % manifest.staff.len()];
        let t = Instant::now();
        let inbox = read.inbox_personal(&district, viewer, false, &page).await?;
        hist.record(t.elapsed().as_micros().max(1) as u64).ok();
        rows += inbox.conversations.len();
    }
    let elapsed = started.elapsed();
    println!(
        "GET /v1/inbox (personal, first page) with {messages} messages in the read models: {queries} queries over {} staff inboxes, {:.1} conversations each",
        manifest.staff.len(),
        rows as f64 / queries as f64
    );
    println!(
        "  latency: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({:.0} queries/s on one connection)",
        hist.value_at_quantile(0.50) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
        queries as f64 / elapsed.as_secs_f64()
    );
    threads_of(&read, &district, &listed, threads).await?;
    db.close().await;
    store.close().await;
    Ok(())
}

/// Times `count` whole-thread queries over `listed` (viewer, conversation) pairs, each
/// as its viewer opens it.
async fn threads_of(
    read: &homeroom_projections::ReadModels,
    district: &DistrictId,
    listed: &[(PersonId, homeroom_domain::ConversationId)],
    count: u64,
) -> Result<(), BoxError> {
    if listed.is_empty() || count == 0 {
        return Ok(());
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut messages, mut deliveries) = (0usize, 0usize);
    for i in 0..count {
        let (viewer, id) = listed[(i as usize * 7919) % listed.len()];
        let t = Instant::now();
        let thread = read
            .conversation(district, id, Some(viewer))
            .await?
            .ok_or("a listed conversation has no thread")?;
        hist.record(t.elapsed().as_micros().max(1) as u64).ok();
        messages += thread.messages.len();
        deliveries += thread
            .messages
            .iter()
            .map(|m| m.deliveries.len())
            .sum::<usize>();
    }
    println!(
        "GET /v1/conversations/{{id}} (the whole thread): {count} queries over {} conversations, {:.0} messages and {:.0} deliveries each",
        listed.len(),
        messages as f64 / count as f64,
        deliveries as f64 / count as f64
    );
    println!(
        "  latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        hist.value_at_quantile(0.50) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );
    Ok(())
}
