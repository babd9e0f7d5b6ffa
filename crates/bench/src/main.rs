//! Homeroom's benchmarks. Each subcommand prints the figures `docs/benchmarks.md` quotes,
//! with the command that produced them.
//!
//! - `commands`: many concurrent staff members post messages into many conversations
//!   through the real command service on the real SQLite store (WAL,
//!   `synchronous=FULL`, group commit), measuring commands per second and per-command
//!   latency.
//! - `replay`: every projector together rebuilds its read models from a log of a million
//!   events, measuring events per second and the process's memory as the log goes by.
//! - `inbox`: inbox queries against read models holding a million messages, measuring
//!   per-query latency.
//! - `deliveries`: messages through the relay, NATS, the reactor and four workers, from
//!   accepted command to recorded outcome.
//! - `postgres`: append throughput and latency of the PostgreSQL event store beside the
//!   `cqrs-es` + `postgres-es` crates doing the same appends, on the same database.

mod delivery;
mod pg;
mod read_side;

/// The allocator `homeroom` itself runs with, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Any error a benchmark can stop on.
pub(crate) type BoxError = Box<dyn std::error::Error>;

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use homeroom_app::{parse_command, CommandContext, CommandService};
use homeroom_domain::{Actor, DistrictId, PersonId};
use homeroom_store_sqlite::SqliteStore;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "Homeroom benchmarks")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// PostMessage throughput and latency through the command service on SQLite.
    Commands {
        /// Concurrent senders (tasks), each a staff member with their own conversations.
        #[arg(long, default_value_t = 64)]
        senders: usize,
        /// Conversations the messages are spread over.
        #[arg(long, default_value_t = 1_000)]
        conversations: usize,
        /// PostMessage commands to send in the measured phase.
        #[arg(long, default_value_t = 200_000)]
        messages: u64,
        /// Commands sent before measuring, to warm caches.
        #[arg(long, default_value_t = 10_000)]
        warmup: u64,
    },
    /// Replay throughput of all projectors together, and memory as the log grows.
    Replay {
        /// Messages in the log (one event each, plus the set-up events).
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Keep the generated log here and reuse it on the next run (it is built when
        /// the directory holds none).
        #[arg(long, value_name = "DIR")]
        data: Option<std::path::PathBuf>,
        /// Replay only these projectors (comma-separated names), to see what each one
        /// costs; all of them when absent.
        #[arg(long, value_delimiter = ',', value_name = "NAMES")]
        only: Vec<String>,
    },
    /// Deliveries end to end over NATS: command accepted to outcome recorded.
    Deliveries {
        /// Messages (one delivery each).
        #[arg(long, default_value_t = 50_000)]
        messages: u64,
        /// Concurrent senders.
        #[arg(long, default_value_t = 64)]
        senders: usize,
        /// Delivery workers on the shared consumer.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Messages per second offered, spread over the senders (0: as fast as the
        /// command service takes them, which measures throughput; a rate below that
        /// measures latency without a backlog).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// The NATS server.
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats: String,
    },
    /// Inbox query latency with read models holding many messages.
    Inbox {
        /// Messages in the log.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Inbox queries to time.
        #[arg(long, default_value_t = 20_000)]
        queries: u64,
        /// Whole-thread queries to time after them (each conversation holds about a
        /// thousandth of the messages).
        #[arg(long, default_value_t = 1_000)]
        threads: u64,
        /// Keep the generated log and read models here and reuse them.
        #[arg(long, value_name = "DIR")]
        data: Option<std::path::PathBuf>,
    },
    /// Append throughput and latency on PostgreSQL, ours beside cqrs-es + postgres-es.
    Postgres {
        /// Concurrent writers, each appending single events to its own stream.
        #[arg(long, default_value_t = 64)]
        writers: usize,
        /// Events appended per side in the measured phase.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Events appended per side before measuring.
        #[arg(long, default_value_t = 5_000)]
        warmup: u64,
        /// Connections in each side's pool.
        #[arg(long, default_value_t = 16)]
        pool: u32,
        /// The database both sides use (each in a fresh schema of its own).
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/test"
        )]
        url: String,
    },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().bench {
        Bench::Commands {
            senders,
            conversations,
            messages,
            warmup,
        } => commands(senders, conversations, messages, warmup).await,
        Bench::Replay {
            messages,
            data,
            only,
        } => read_side::replay(messages, data, &only).await,
        Bench::Deliveries {
            messages,
            senders,
            workers,
            rate,
            nats,
        } => delivery::deliveries(messages, senders, workers, rate, nats).await,
        Bench::Inbox {
            messages,
            queries,
            threads,
            data,
        } => read_side::inbox(messages, queries, threads, data).await,
        Bench::Postgres {
            writers,
            events,
            warmup,
            pool,
            url,
        } => pg::postgres(pg::Args {
            url,
            writers,
            events,
            warmup,
            pool,
        })
        .await
        .map_err(|e| e as Box<dyn std::error::Error>),
    }
}

pub(crate) struct World {
    pub(crate) service: Arc<CommandService>,
    pub(crate) district: DistrictId,
    /// For each conversation, the staff member who started it.
    pub(crate) conversations: Vec<(Uuid, PersonId)>,
    /// The store, to close it when done.
    pub(crate) store: SqliteStore,
}

async fn run(
    service: &CommandService,
    district: &DistrictId,
    actor: Actor,
    name: &str,
    body: serde_json::Value,
) -> Result<(), Box<dyn std::error::Error>> {
    let command = parse_command(name, body)?;
    let ctx = CommandContext::new(district.clone(), actor);
    service.execute(&ctx, &command).await?;
    Ok(())
}

/// A district with one school, `senders` school admins and one guardian per
/// conversation, each conversation started by one of the admins.
pub(crate) async fn build_world(
    dir: &std::path::Path,
    senders: usize,
    conversations: usize,
) -> Result<World, Box<dyn std::error::Error>> {
    let store = SqliteStore::open(&dir.join("events.sqlite")).await?;
    let service = Arc::new(CommandService::new(Arc::new(store.clone()), 100_000));
    let district = DistrictId::parse("bench")?;
    let system = || Actor::System("bench-setup".into());
    let school = Uuid::now_v7();
    run(
        &service,
        &district,
        system(),
        "RegisterSchool",
        json!({"school_id": school, "name": "Bench Middle School", "sms_number": "+15550000001"}),
    )
    .await?;
    let mut staff = Vec::new();
    for i in 0..senders {
        let id = Uuid::now_v7();
        run(&service, &district, system(), "RegisterPerson", json!({
            "person_id": id, "kind": "staff", "name": format!("Staff {i}"), "school_ids": [school],
            "contact_points": [{"channel": "email", "address": format!("staff{i}@bench.example")}]
        }))
        .await?;
        run(
            &service,
            &district,
            system(),
            "AssignRole",
            json!({"person_id": id, "role_id": "school_admin", "school_id": school}),
        )
        .await?;
        staff.push(PersonId::new(id));
    }
    let mut list = Vec::new();
    for c in 0..conversations {
        let guardian = Uuid::now_v7();
        run(&service, &district, system(), "RegisterPerson", json!({
            "person_id": guardian, "kind": "guardian", "name": format!("Guardian {c}"), "school_ids": [school],
            "contact_points": [{"channel": "sms", "address": format!("+1555{:07}", c)}]
        }))
        .await?;
        let starter = staff[c % senders];
        let conversation = Uuid::now_v7();
        run(
            &service,
            &district,
            Actor::Person(starter),
            "StartConversation",
            json!({
                "conversation_id": conversation, "school_id": school, "participant_ids": [guardian],
                "body": "Welcome to the new school year!", "title": format!("Family {c}")
            }),
        )
        .await?;
        list.push((conversation, starter));
    }
    Ok(World {
        service,
        district,
        conversations: list,
        store,
    })
}

/// The `PostMessage` every benchmark sender sends, with a fresh message id.
pub(crate) fn picture_day_notice(conversation: Uuid) -> homeroom_domain::Command {
    parse_command(
        "PostMessage",
        json!({"conversation_id": conversation, "message_id": Uuid::now_v7(),
               "body": "Picture day is Friday. Please return the permission form."}),
    )
    .expect("a valid PostMessage")
}

/// Sends `count` PostMessage commands from `senders` tasks; returns the merged latency
/// histogram (microseconds) and the elapsed time.
pub(crate) async fn post_messages(
    world: &Arc<World>,
    senders: usize,
    count: u64,
) -> (Histogram<u64>, Duration) {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for sender in 0..senders {
        let world = world.clone();
        let issued = issued.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mine: Vec<_> = world
                .conversations
                .iter()
                .enumerate()
                .filter(|(i, _)| i % senders == sender)
                .map(|(_, c)| *c)
                .collect();
            let mut next = 0;
            while issued.fetch_add(1, Ordering::Relaxed) < count {
                let (conversation, author) = mine[next % mine.len()];
                next += 1;
                let command = picture_day_notice(conversation);
                let ctx = CommandContext::new(world.district.clone(), Actor::Person(author));
                let t = Instant::now();
                world
                    .service
                    .execute(&ctx, &command)
                    .await
                    .expect("PostMessage is accepted");
                hist.record(t.elapsed().as_micros().max(1) as u64).ok();
            }
            hist
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    for task in tasks {
        all.add(task.await.expect("sender task"))
            .expect("same bounds");
    }
    (all, started.elapsed())
}

async fn commands(
    senders: usize,
    conversations: usize,
    messages: u64,
    warmup: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    assert!(
        senders > 0 && conversations >= senders,
        "need at least one conversation per sender"
    );
    let dir = tempfile::tempdir()?;
    let setup = Instant::now();
    let world = Arc::new(build_world(dir.path(), senders, conversations).await?);
    println!(
        "setup: {conversations} conversations, {senders} senders in {:.1?}",
        setup.elapsed()
    );
    post_messages(&world, senders, warmup).await;
    let (hist, elapsed) = post_messages(&world, senders, messages).await;
    let per_second = messages as f64 / elapsed.as_secs_f64();
    println!(
        "PostMessage on SQLite: {messages} commands, {senders} concurrent senders, {conversations} conversations"
    );
    println!(
        "  throughput: {per_second:.0} commands/s ({:.2?} total)",
        elapsed
    );
    println!(
        "  latency: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        hist.value_at_quantile(0.50) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );
    Ok(())
}
