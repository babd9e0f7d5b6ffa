//! `deliveries`: messages from accepted command to recorded outcome, through the whole
//! server pipeline in one process: the command service on SQLite, the relay onto NATS
//! JetStream, the reactor queueing deliveries, and four delivery workers on the shared
//! durable consumer, sending through a sandbox provider that records when each delivery
//! reached a worker.
//!
//! Per delivery it measures the time from the command being accepted to a worker handing
//! the text to the provider (command-to-worker) and to the outcome being recorded in the
//! log (end to end); throughput is deliveries whose outcome is recorded per second.

use crate::{build_world, picture_day_notice, BoxError};
use async_trait::async_trait;
use futures::StreamExt;
use hdrhistogram::Histogram;
use homeroom_app::{codec, CommandContext};
use homeroom_bus::relay::{Relay, RelayConfig};
use homeroom_bus::WorkQueue;
use homeroom_bus_nats::{NatsBus, NatsConfig};
use homeroom_channels::sandbox::Untranslated;
use homeroom_channels::{
    ChannelError, EmailSender, Handover, OutboundEmail, OutboundSms, SmsSender,
};
use homeroom_delivery::reactor::{Reactor, ReactorConfig};
use homeroom_delivery::worker::{Channels, Worker, WorkerConfig};
use homeroom_domain::{Actor, DeliveryId, Event};
use homeroom_eventstore::EventStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Records when each delivery reached the provider.
#[derive(Default)]
struct Stopwatch {
    reached: Mutex<HashMap<DeliveryId, Instant>>,
}

#[async_trait]
impl SmsSender for Stopwatch {
    async fn send_sms(&self, sms: &OutboundSms) -> Result<Handover, ChannelError> {
        self.reached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(sms.key.delivery_id)
            .or_insert_with(Instant::now);
        Ok(Handover::Delivered {
            provider_message_id: None,
        })
    }
}

#[async_trait]
impl EmailSender for Stopwatch {
    async fn send_email(&self, email: &OutboundEmail) -> Result<Handover, ChannelError> {
        self.reached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(email.key.delivery_id)
            .or_insert_with(Instant::now);
        Ok(Handover::Delivered {
            provider_message_id: None,
        })
    }
}

/// Nobody shares a phone here (the label is not what is measured).
struct NoBook;

impl homeroom_app::preview::PhoneBook for NoBook {
    fn people_with_number<'a>(
        &'a self,
        _district: &'a homeroom_domain::DistrictId,
        _number: &'a str,
    ) -> homeroom_app::preview::PhoneBookLookup<'a> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

fn ms(hist: &Histogram<u64>, q: f64) -> f64 {
    hist.value_at_quantile(q) as f64 / 1000.0
}

/// Runs the benchmark: `messages` personal-conversation posts from `senders` tasks,
/// delivered by `workers` workers over NATS at `nats_url`.
pub async fn deliveries(
    messages: u64,
    senders: usize,
    workers: usize,
    rate: u64,
    nats_url: String,
) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let conversations = senders * 4;
    let world = Arc::new(build_world(dir.path(), senders, conversations).await?);
    let store: Arc<dyn EventStore> = Arc::new(world.store.clone());
    let id = Uuid::new_v4().simple();
    let config = NatsConfig {
        stream: format!("HR_BENCH_{id}"),
        subject_prefix: format!("hrbench.{id}.events"),
        ..NatsConfig::default()
    };
    let bus = Arc::new(NatsBus::connect(&nats_url, config.clone()).await?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = Vec::new();
    let relay = Relay::new(store.clone(), bus.clone(), RelayConfig::default());
    tasks.push(tokio::spawn({
        let stop = stopped();
        async move {
            let _ = relay.run(stop).await;
        }
    }));
    let reactor_queue: Arc<dyn WorkQueue> = Arc::new(
        bus.work_queue(
            "bench-reactor",
            &[format!("{}.>", homeroom_bus::SUBJECT_PREFIX)],
        )
        .await?,
    );
    let reactor = Reactor::new(
        world.service.clone(),
        Arc::new(NoBook),
        ReactorConfig {
            batch: 256,
            poll: Duration::from_millis(100),
            ..ReactorConfig::default()
        },
    );
    tasks.push(tokio::spawn({
        let stop = stopped();
        async move { reactor.run(reactor_queue, stop).await }
    }));
    let stopwatch = Arc::new(Stopwatch::default());
    for _ in 0..workers {
        let queue: Arc<dyn WorkQueue> = Arc::new(
            bus.work_queue(
                "bench-delivery",
                &[homeroom_bus::filter_for("delivery", "delivery_queued")],
            )
            .await?,
        );
        let worker = Worker::new(
            world.service.clone(),
            Channels {
                sms: stopwatch.clone(),
                email: stopwatch.clone(),
                translator: Arc::new(Untranslated),
                phones: Arc::new(NoBook),
            },
            WorkerConfig {
                batch: 128,
                poll: Duration::from_millis(100),
                ..WorkerConfig::default()
            },
        );
        tasks.push(tokio::spawn({
            let stop = stopped();
            async move { worker.run(queue, stop).await }
        }));
    }

    // Watch the log for outcomes.
    let head = store.head().await?;
    let outcomes = Arc::new(Mutex::new(HashMap::<DeliveryId, Instant>::new()));
    let watcher = tokio::spawn({
        let store = store.clone();
        let outcomes = outcomes.clone();
        async move {
            let mut events = store.subscribe_all(head);
            while let Some(Ok(recorded)) = events.next().await {
                if recorded.event_type != "delivery_delivered" {
                    continue;
                }
                if let Ok(Event::DeliveryDelivered(d)) = codec::decode(&recorded) {
                    let mut outcomes = outcomes.lock().unwrap_or_else(|p| p.into_inner());
                    outcomes.entry(d.delivery_id).or_insert_with(Instant::now);
                    if outcomes.len() as u64 >= messages {
                        return;
                    }
                }
            }
        }
    });

    let offered = if rate > 0 {
        format!("offered at {rate} messages/s")
    } else {
        "sent as fast as the command service takes them".to_owned()
    };
    println!(
        "deliveries over NATS: {messages} messages from {senders} senders ({offered}), {workers} workers, one reactor, relay, SQLite store"
    );
    let accepted = Arc::new(Mutex::new(HashMap::<DeliveryId, Instant>::new()));
    let started = Instant::now();
    let issued = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut senders_tasks = Vec::new();
    for sender in 0..senders {
        let (world, accepted, issued) = (world.clone(), accepted.clone(), issued.clone());
        senders_tasks.push(tokio::spawn(async move {
            let mine: Vec<_> = world
                .conversations
                .iter()
                .enumerate()
                .filter(|(i, _)| i % senders == sender)
                .map(|(_, c)| *c)
                .collect();
            let mut next = 0;
            // With a rate, each sender posts on its own evenly spaced schedule.
            let mut pace = (rate > 0).then(|| {
                let period = Duration::from_secs_f64(senders as f64 / rate as f64);
                let offset = period.mul_f64(sender as f64 / senders as f64);
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks
            });
            while issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < messages {
                if let Some(ticks) = pace.as_mut() {
                    ticks.tick().await;
                }
                let (conversation, author) = mine[next % mine.len()];
                next += 1;
                let command = picture_day_notice(conversation);
                let ctx = CommandContext::new(world.district.clone(), Actor::Person(author));
                let outcome = world
                    .service
                    .execute(&ctx, &command)
                    .await
                    .expect("PostMessage is accepted");
                let now = Instant::now();
                let mut accepted = accepted.lock().unwrap_or_else(|p| p.into_inner());
                for delivery in outcome.delivery_ids {
                    accepted.insert(delivery, now);
                }
            }
        }));
    }
    for task in senders_tasks {
        task.await?;
    }
    let sent_in = started.elapsed();
    tokio::time::timeout(Duration::from_secs(600), watcher).await??;
    let elapsed = started.elapsed();
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }

    let accepted = accepted.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let reached = stopwatch
        .reached
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let outcomes = outcomes.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut to_worker = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut end_to_end = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for (delivery, at) in &accepted {
        if let Some(reached) = reached.get(delivery) {
            to_worker
                .record(reached.saturating_duration_since(*at).as_micros().max(1) as u64)
                .ok();
        }
        if let Some(done) = outcomes.get(delivery) {
            end_to_end
                .record(done.saturating_duration_since(*at).as_micros().max(1) as u64)
                .ok();
        }
    }
    println!(
        "  throughput: {:.0} deliveries/s with the outcome recorded ({} in {elapsed:.2?}; commands took {sent_in:.2?})",
        outcomes.len() as f64 / elapsed.as_secs_f64(),
        outcomes.len()
    );
    println!(
        "  command to worker: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(&to_worker, 0.5),
        ms(&to_worker, 0.99),
        to_worker.max() as f64 / 1000.0
    );
    println!(
        "  command to outcome recorded: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(&end_to_end, 0.5),
        ms(&end_to_end, 0.99),
        end_to_end.max() as f64 / 1000.0
    );
    world.store.close().await;
    homeroom_bus_nats::testing::delete_stream(&nats_url, &config.stream).await;
    Ok(())
}
