//! The deliveries read model: one row per delivery (one message to one recipient), with
//! its channel and where it stands: queued, sent, delivered or failed.
//!
//! A row appears with the `MessagePosted` plan (status `queued`), so a thread shows
//! every recipient at once; `DeliveryQueued` confirms the plan, and the outcome events
//! move the status forward only (a late `sent` never overwrites `delivered`).

use super::names;
use crate::error::ProjectionError;
use crate::projector::{render_for, Generation, PerGeneration, Projector};
use crate::sqlite::{ts, Tx};
use async_trait::async_trait;
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
        PRIMARY KEY (district, delivery_id)
    )",
    "CREATE INDEX IF NOT EXISTS deliveries{deliveries}_message
        ON deliveries{deliveries} (district, message_id, recipient_id)",
    "CREATE INDEX IF NOT EXISTS deliveries{deliveries}_conversation
        ON deliveries{deliveries} (district, conversation_id)",
];

const INSERT: &str = "INSERT INTO deliveries{deliveries}
        (district, delivery_id, message_id, conversation_id, recipient_id, channel, address,
         language, text, subject, status, status_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', $11)
    ON CONFLICT (district, delivery_id) DO ";

struct Sql {
    planned: String,
    queued: String,
    sent: String,
    delivered: String,
    failed: String,
}

impl Sql {
    fn new(g: Generation) -> Self {
        let r = |t: &str| render_for(t, NAME, g);
        Self {
            planned: r(&format!("{INSERT} NOTHING")),
            queued: r(&format!(
                "{INSERT} UPDATE SET channel = excluded.channel, address = excluded.address,
                    language = excluded.language, text = excluded.text,
                    subject = excluded.subject"
            )),
            sent: r(
                "UPDATE deliveries{deliveries} SET status = 'sent', status_at = $3,
                    provider_message_id = COALESCE($4, provider_message_id)
                WHERE district = $1 AND delivery_id = $2 AND status = 'queued'",
            ),
            delivered: r("UPDATE deliveries{deliveries} SET status = 'delivered',
                    status_at = $3, provider_message_id = COALESCE($4, provider_message_id)
                WHERE district = $1 AND delivery_id = $2 AND status IN ('queued', 'sent')"),
            failed: r(
                "UPDATE deliveries{deliveries} SET status = 'failed', status_at = $3,
                    provider_message_id = COALESCE($4, provider_message_id),
                    error = $5, permanent = $6
                WHERE district = $1 AND delivery_id = $2 AND status IN ('queued', 'sent')",
            ),
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
    at: String,
}

async fn plan(tx: &mut Tx<'_>, sql: &str, p: Plan<'_>) -> Result<(), ProjectionError> {
    let d = p.delivery;
    sqlx::query(sql)
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
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl Projector for Deliveries {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["deliveries"]
    }

    fn schema(&self, generation: Generation) -> Vec<String> {
        SCHEMA
            .iter()
            .map(|t| render_for(t, NAME, generation))
            .collect()
    }

    async fn apply(
        &self,
        tx: &mut Tx<'_>,
        generation: Generation,
        recorded: &RecordedEvent,
        event: &Event,
    ) -> Result<(), ProjectionError> {
        let sql = self.sql.get(generation, Sql::new);
        let district = recorded.metadata.district.as_str();
        match event {
            Event::MessagePosted(e) => {
                let at = ts(&e.at);
                for delivery in &e.deliveries {
                    let p = Plan {
                        district,
                        message: e.message_id,
                        conversation: e.conversation_id,
                        delivery,
                        at: at.clone(),
                    };
                    plan(tx, &sql.planned, p).await?;
                }
            }
            Event::DeliveryQueued(e) => {
                let p = Plan {
                    district,
                    message: e.message_id,
                    conversation: e.conversation_id,
                    delivery: &e.delivery,
                    at: ts(&e.at),
                };
                plan(tx, &sql.queued, p).await?;
            }
            Event::DeliverySent(e) => {
                sqlx::query(&sql.sent)
                    .bind(district)
                    .bind(e.delivery_id.as_uuid())
                    .bind(ts(&e.at))
                    .bind(&e.provider_message_id)
                    .execute(&mut **tx)
                    .await?;
            }
            Event::DeliveryDelivered(e) => {
                sqlx::query(&sql.delivered)
                    .bind(district)
                    .bind(e.delivery_id.as_uuid())
                    .bind(ts(&e.at))
                    .bind(&e.provider_message_id)
                    .execute(&mut **tx)
                    .await?;
            }
            Event::DeliveryFailed(e) => {
                sqlx::query(&sql.failed)
                    .bind(district)
                    .bind(e.delivery_id.as_uuid())
                    .bind(ts(&e.at))
                    .bind(&e.provider_message_id)
                    .bind(&e.error)
                    .bind(e.permanent)
                    .execute(&mut **tx)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}
