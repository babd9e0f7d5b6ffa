//! The deliveries read model: one row per delivery (one message to one recipient), with
//! its channel and where it stands: queued, sent, delivered or failed.
//!
//! A row appears with the `MessagePosted` plan (status `queued`), so a thread shows
//! every recipient at once; `DeliveryQueued` confirms the plan (or adds the fallback
//! delivery of a message by the recipient's other channel), and the outcome events move
//! the status forward only (a late `sent` never overwrites `delivered`). A failed attempt
//! that will be retried keeps the delivery queued and records why it is late.

use super::names;
use crate::db::{execute_rows, query, Engine, Tx, Value};
use crate::error::ProjectionError;
use crate::projector::{
    message_runs, render_for, Envelope, Generation, PerGeneration, Projector, Run,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use homeroom_domain::events::MessagePosted;
use homeroom_domain::{ConversationId, Event, MessageId, PlannedDelivery};
use homeroom_eventstore::RecordedEvent;

/// The projector's name.
pub const NAME: &str = "deliveries";

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS deliveries{deliveries} (
        district TEXT NOT NULL,
        delivery_id {uuid} NOT NULL,
        message_id {uuid} NOT NULL,
        conversation_id {uuid} NOT NULL,
        recipient_id {uuid} NOT NULL,
        channel TEXT NOT NULL,
        address TEXT,
        language TEXT NOT NULL,
        text TEXT NOT NULL,
        subject TEXT,
        status TEXT NOT NULL,
        status_at {ts} NOT NULL,
        provider_message_id TEXT,
        error TEXT,
        permanent BOOLEAN,
        sent_text TEXT,
        translated_to TEXT,
        PRIMARY KEY (district, delivery_id)
    )",
    "CREATE INDEX IF NOT EXISTS deliveries{deliveries}_message
        ON deliveries{deliveries} (district, message_id, recipient_id)",
];

const INSERT: &str = "INSERT INTO deliveries{deliveries}
        (district, delivery_id, message_id, conversation_id, recipient_id, channel, address,
         language, text, subject, status, status_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', $11)
    ON CONFLICT (district, delivery_id) DO ";

struct Sql {
    queued: String,
    sent: String,
    delivered: String,
    failed: String,
    attempt_failed: String,
}

impl Sql {
    fn new(engine: Engine, g: Generation) -> Self {
        let r = |t: &str| render_for(engine, t, NAME, g);
        Self {
            queued: r(&format!(
                "{INSERT} UPDATE SET channel = excluded.channel, address = excluded.address,
                    language = excluded.language, text = excluded.text,
                    subject = excluded.subject"
            )),
            // The status moves forward only, but the text as handed over is kept
            // whenever it is told (a status callback's `sent` tells none).
            sent: r("UPDATE deliveries{deliveries} SET
                    status = CASE WHEN status = 'queued' THEN 'sent' ELSE status END,
                    status_at = CASE WHEN status = 'queued' THEN $3 ELSE status_at END,
                    provider_message_id = COALESCE($4, provider_message_id),
                    sent_text = COALESCE($5, sent_text),
                    translated_to = COALESCE($6, translated_to)
                WHERE district = $1 AND delivery_id = $2"),
            delivered: r("UPDATE deliveries{deliveries} SET status = 'delivered',
                    status_at = $3, provider_message_id = COALESCE($4, provider_message_id)
                WHERE district = $1 AND delivery_id = $2 AND status IN ('queued', 'sent')"),
            // After `delivered` only for an email that bounced (the domain records no
            // other failure once delivered).
            failed: r(
                "UPDATE deliveries{deliveries} SET status = 'failed', status_at = $3,
                    provider_message_id = COALESCE($4, provider_message_id),
                    error = $5, permanent = $6
                WHERE district = $1 AND delivery_id = $2
                  AND status IN ('queued', 'sent', 'delivered')",
            ),
            attempt_failed: r("UPDATE deliveries{deliveries} SET error = $3
                WHERE district = $1 AND delivery_id = $2 AND status = 'queued'"),
        }
    }
}

/// Builds `deliveries` from `MessagePosted` plans and the delivery streams' events.
#[derive(Default)]
pub struct Deliveries {
    sql: PerGeneration<Sql>,
}

struct Plan<'a> {
    district: &'a str,
    message: MessageId,
    conversation: ConversationId,
    delivery: &'a PlannedDelivery,
    at: DateTime<Utc>,
}

/// Rows per multi-row `INSERT` of planned deliveries (12 parameters each).
const CHUNK: usize = 256;

/// The planned deliveries of a run of consecutive `MessagePosted` events, in multi-row
/// statements: the same rows [`plan`] inserts one by one.
async fn plan_run(
    tx: &mut Tx<'_>,
    generation: Generation,
    run: &[(&RecordedEvent, &MessagePosted)],
) -> Result<(), ProjectionError> {
    let engine = tx.engine();
    let mut rows = Vec::new();
    for (recorded, e) in run {
        let district = recorded.metadata.district.as_str();
        for d in &e.deliveries {
            rows.push(vec![
                Value::from(district),
                d.delivery_id.as_uuid().into(),
                e.message_id.as_uuid().into(),
                e.conversation_id.as_uuid().into(),
                d.recipient_id.as_uuid().into(),
                names::channel(d.channel).into(),
                d.address.as_deref().into(),
                d.language.as_str().into(),
                d.text.as_str().into(),
                d.subject.as_deref().into(),
                e.at.into(),
                "queued".into(),
            ]);
        }
    }
    execute_rows(tx, rows, CHUNK, |n| {
        let values = engine.value_rows(n, 12);
        render_for(
            engine,
            &format!(
                "INSERT {{or_fail}} INTO deliveries{{deliveries}}
                    (district, delivery_id, message_id, conversation_id, recipient_id, channel,
                     address, language, text, subject, status_at, status)
                VALUES {values}
                ON CONFLICT (district, delivery_id) DO NOTHING"
            ),
            NAME,
            generation,
        )
    })
    .await?;
    Ok(())
}

async fn plan(tx: &mut Tx<'_>, sql: &str, p: Plan<'_>) -> Result<(), ProjectionError> {
    let d = p.delivery;
    query(sql)
        .bind(p.district)
        .bind(d.delivery_id.as_uuid())
        .bind(p.message.as_uuid())
        .bind(p.conversation.as_uuid())
        .bind(d.recipient_id.as_uuid())
        .bind(names::channel(d.channel))
        .bind(&d.address)
        .bind(&d.language)
        .bind(&d.text)
        .bind(&d.subject)
        .bind(p.at)
        .execute(tx)
        .await?;
    Ok(())
}

#[async_trait]
impl Projector for Deliveries {
    fn name(&self) -> &'static str {
        NAME
    }

    /// 3: the text as handed over and its translation (`sent_text`, `translated_to`).
    fn version(&self) -> u32 {
        3
    }

    fn tables(&self) -> &'static [&'static str] {
        &["deliveries"]
    }

    fn schema(&self, engine: Engine, generation: Generation) -> Vec<String> {
        SCHEMA
            .iter()
            .map(|t| render_for(engine, t, NAME, generation))
            .collect()
    }

    /// Runs of messages go in bulk; every other event one by one, in log order (an
    /// outcome never precedes its plan).
    async fn apply_batch(
        &self,
        tx: &mut Tx<'_>,
        generation: Generation,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        for run in message_runs(events) {
            match run {
                Run::Messages(posts) => plan_run(tx, generation, &posts).await?,
                Run::Other(e) => self.apply(tx, generation, &e.recorded, &e.event).await?,
            }
        }
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut Tx<'_>,
        generation: Generation,
        recorded: &RecordedEvent,
        event: &Event,
    ) -> Result<(), ProjectionError> {
        let sql = self.sql.get(tx.engine(), generation, Sql::new);
        let district = recorded.metadata.district.as_str();
        match event {
            Event::MessagePosted(e) => plan_run(tx, generation, &[(recorded, e)]).await?,
            Event::DeliveryQueued(e) => {
                let p = Plan {
                    district,
                    message: e.message_id,
                    conversation: e.conversation_id,
                    delivery: &e.delivery,
                    at: e.at,
                };
                plan(tx, &sql.queued, p).await?;
            }
            Event::DeliverySent(e) => {
                query(&sql.sent)
                    .bind(district)
                    .bind(e.delivery_id.as_uuid())
                    .bind(e.at)
                    .bind(&e.provider_message_id)
                    .bind(&e.sent_text)
                    .bind(&e.translated_to)
                    .execute(tx)
                    .await?;
            }
            Event::DeliveryDelivered(e) => {
                query(&sql.delivered)
                    .bind(district)
                    .bind(e.delivery_id.as_uuid())
                    .bind(e.at)
                    .bind(&e.provider_message_id)
                    .execute(tx)
                    .await?;
            }
            Event::DeliveryFailed(e) => {
                query(&sql.failed)
                    .bind(district)
                    .bind(e.delivery_id.as_uuid())
                    .bind(e.at)
                    .bind(&e.provider_message_id)
                    .bind(&e.error)
                    .bind(e.permanent)
                    .execute(tx)
                    .await?;
            }
            Event::DeliveryAttemptFailed(e) => {
                // Still queued for its next attempt; the error says why it is late.
                query(&sql.attempt_failed)
                    .bind(district)
                    .bind(e.delivery_id.as_uuid())
                    .bind(&e.error)
                    .execute(tx)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}
