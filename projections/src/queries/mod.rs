//! Queries over the read models, parameterised by what to show.
//!
//! Who may see what is the query layer's business (in `crates/app`, from the viewer's
//! permissions); these functions only answer what they are asked, always within one
//! district. Each runs in one read transaction: it first reads which generation of
//! each projector serves (`projection_generations`), then its rows, all from one
//! snapshot, so a rebuild switching meanwhile is never half-seen.

mod audit;
mod export;
mod inbox;
mod oversight;
mod record;
mod thread;
mod types;

pub use export::{
    ConversationExport, ExportDelivery, ExportMessage, ExportParticipant, EXPORT_MEDIA_TYPE,
};
pub use types::*;

use crate::db::{query, Engine, ReadDb, Row, Tx};
use crate::error::QueryError;
use crate::projector::Generation;
use chrono::{DateTime, Utc};
use homeroom_domain::{DistrictId, PersonId};
use std::collections::HashMap;
use uuid::Uuid;

/// The read models' queries. Cheap to clone; shares the read connection pool.
#[derive(Clone, Debug)]
pub struct ReadModels {
    db: ReadDb,
}

impl ReadModels {
    /// Queries over the read models in `db` (built by a [`crate::ProjectionRuntime`],
    /// possibly in another process).
    pub fn new(db: ReadDb) -> Self {
        Self { db }
    }

    /// One person as the directory knows them (`None` when unknown in `district`).
    ///
    /// # Errors
    /// [`QueryError`] when the database fails.
    pub async fn person(
        &self,
        district: &DistrictId,
        person: PersonId,
    ) -> Result<Option<PersonView>, QueryError> {
        let mut s = Snapshot::open(&self.db, &[crate::models::directory::NAME]).await?;
        let sql = s.sql(
            "SELECT kind, name, language FROM people{directory}
             WHERE district = $1 AND person_id = $2",
        );
        let row = query(&sql)
            .bind(district.as_str())
            .bind(person.as_uuid())
            .fetch_optional(&mut s.tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(PersonView {
            person_id: person,
            kind: person_kind(&row, "kind")?.ok_or(QueryError::Corrupt("person kind"))?,
            name: row.get("name")?,
            language: row.get("language")?,
        }))
    }

    /// Everyone in `district` reachable at `address` (a phone number in E.164 form or an
    /// email address as registered): more than one means the address is shared.
    ///
    /// # Errors
    /// [`QueryError`] when the database fails.
    pub async fn people_at_address(
        &self,
        district: &DistrictId,
        address: &str,
    ) -> Result<Vec<PersonId>, QueryError> {
        let mut s = Snapshot::open(&self.db, &[crate::models::directory::NAME]).await?;
        let sql = s.sql(
            "SELECT person_id FROM contact_points{directory}
             WHERE district = $1 AND address = $2 ORDER BY person_id",
        );
        let rows = query(&sql)
            .bind(district.as_str())
            .bind(address)
            .fetch_all(&mut s.tx)
            .await?;
        rows.iter()
            .map(|row| Ok(PersonId::new(row.get("person_id")?)))
            .collect()
    }

    /// One delivery with its status (`None` when unknown in `district`).
    ///
    /// # Errors
    /// [`QueryError`] when the database fails.
    pub async fn delivery(
        &self,
        district: &DistrictId,
        delivery: homeroom_domain::DeliveryId,
    ) -> Result<Option<DeliveryView>, QueryError> {
        let mut s = Snapshot::open(&self.db, &[crate::models::deliveries::NAME]).await?;
        let sql = s.sql(
            "SELECT delivery_id, message_id, conversation_id, recipient_id, channel, address,
                    language, status, status_at, provider_message_id, error, permanent
             FROM deliveries{deliveries} WHERE district = $1 AND delivery_id = $2",
        );
        let row = query(&sql)
            .bind(district.as_str())
            .bind(delivery.as_uuid())
            .fetch_optional(&mut s.tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(DeliveryView {
            delivery_id: delivery,
            message_id: uuid(&row, "message_id")?.into(),
            conversation_id: uuid(&row, "conversation_id")?.into(),
            recipient_id: uuid(&row, "recipient_id")?.into(),
            channel: channel(&row, "channel")?,
            address: row.get("address")?,
            language: row.get("language")?,
            status: status(&row, "status")?,
            status_at: time(&row, "status_at")?,
            provider_message_id: row.get("provider_message_id")?,
            error: row.get("error")?,
            permanent: row.get("permanent")?,
        }))
    }
}

/// The JSON Schema of a position token (a number, or an order-preserving string).
#[cfg(feature = "schema")]
pub fn position_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "A token of the log's delivery order; compare only for equality and order.",
        "oneOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]
    })
}

/// The JSON Schema of an optional position token.
#[cfg(feature = "schema")]
pub fn optional_position_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "A token of the log's delivery order, or null when there is none.",
        "oneOf": [{"type": "integer", "minimum": 0}, {"type": "string"}, {"type": "null"}]
    })
}

/// One read transaction and the generations serving in it.
pub(crate) struct Snapshot {
    pub tx: Tx<'static>,
    engine: Engine,
    generations: HashMap<String, Generation>,
}

impl Snapshot {
    /// Begins the snapshot and reads the serving generations of `needs`.
    pub async fn open(db: &ReadDb, needs: &[&'static str]) -> Result<Self, QueryError> {
        let rows = match db.begin_read().await {
            Ok(mut tx) => {
                match query("SELECT projector, active_generation FROM projection_generations")
                    .fetch_all(&mut tx)
                    .await
                {
                    Ok(rows) => Some((tx, rows)),
                    // Nothing has opened the runtime on this database yet.
                    Err(e) if crate::db::is_missing_table(&e) => None,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) if crate::db::is_missing_table(&e) => None,
            Err(e) => return Err(e.into()),
        };
        let Some((tx, rows)) = rows else {
            let missing = needs.first().copied().unwrap_or("projection_generations");
            return Err(QueryError::NotInitialised(missing));
        };
        let mut generations = HashMap::new();
        for row in rows {
            let name: String = row.get(0)?;
            let number: i64 = row.get(1)?;
            let number = u64::try_from(number).map_err(|_| QueryError::Corrupt("generation"))?;
            generations.insert(name, Generation::new(number));
        }
        if let Some(missing) = needs.iter().find(|n| !generations.contains_key(**n)) {
            return Err(QueryError::NotInitialised(missing));
        }
        Ok(Self {
            engine: db.engine(),
            tx,
            generations,
        })
    }

    /// The engine the snapshot reads.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Renders a query template for the serving generations.
    pub fn sql(&self, template: &str) -> String {
        self.engine
            .render(template, |name| self.generations.get(name).copied())
    }
}

/// A keyset paging cursor: the sort key of the last item returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub commit: i64,
    pub sequence: i64,
    pub id: Uuid,
}

impl Cursor {
    /// Before everything in descending order.
    pub const TOP: Cursor = Cursor {
        commit: i64::MAX,
        sequence: i64::MAX,
        id: Uuid::max(),
    };

    /// Before everything in ascending order.
    pub const BOTTOM: Cursor = Cursor {
        commit: -1,
        sequence: -1,
        id: Uuid::nil(),
    };

    /// Opaque text for clients.
    pub fn encode(&self) -> String {
        hex::encode(format!(
            "{}.{}.{}",
            self.commit,
            self.sequence,
            self.id.simple()
        ))
    }

    /// Reads back [`Cursor::encode`]; `default` when there is none.
    pub fn decode(text: Option<&str>, default: Cursor) -> Result<Cursor, QueryError> {
        let Some(text) = text else {
            return Ok(default);
        };
        let bytes = hex::decode(text).map_err(|_| QueryError::BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| QueryError::BadCursor)?;
        let mut parts = text.split('.');
        let mut next = || parts.next().ok_or(QueryError::BadCursor);
        let commit = next()?.parse().map_err(|_| QueryError::BadCursor)?;
        let sequence = next()?.parse().map_err(|_| QueryError::BadCursor)?;
        let id = Uuid::parse_str(next()?).map_err(|_| QueryError::BadCursor)?;
        Ok(Cursor {
            commit,
            sequence,
            id,
        })
    }
}

pub(crate) fn uuid(row: &Row, column: &str) -> Result<Uuid, QueryError> {
    Ok(row.get(column)?)
}

pub(crate) fn opt_uuid(row: &Row, column: &str) -> Result<Option<Uuid>, QueryError> {
    Ok(row.get(column)?)
}

pub(crate) fn time(row: &Row, column: &str) -> Result<DateTime<Utc>, QueryError> {
    opt_time(row, column)?.ok_or(QueryError::Corrupt("time"))
}

pub(crate) fn opt_time(row: &Row, column: &str) -> Result<Option<DateTime<Utc>>, QueryError> {
    row.time(column).map_err(|e| match e {
        sqlx::Error::Decode(_) => QueryError::Corrupt("time"),
        other => other.into(),
    })
}

pub(crate) fn count(row: &Row, column: &str) -> Result<u64, QueryError> {
    let n: i64 = row.get(column)?;
    u64::try_from(n).map_err(|_| QueryError::Corrupt("count"))
}

pub(crate) fn conversation_kind(
    row: &Row,
    column: &str,
) -> Result<homeroom_domain::ConversationKind, QueryError> {
    let text: String = row.get(column)?;
    crate::models::names::parse_conversation_kind(&text)
        .ok_or(QueryError::Corrupt("conversation kind"))
}

pub(crate) fn person_kind(
    row: &Row,
    column: &str,
) -> Result<Option<homeroom_domain::PersonKind>, QueryError> {
    let text: Option<String> = row.get(column)?;
    text.map(|t| {
        crate::models::names::parse_person_kind(&t).ok_or(QueryError::Corrupt("person kind"))
    })
    .transpose()
}

pub(crate) fn channel(row: &Row, column: &str) -> Result<homeroom_domain::Channel, QueryError> {
    let text: String = row.get(column)?;
    crate::models::names::parse_channel(&text).ok_or(QueryError::Corrupt("channel"))
}

pub(crate) fn sent_as(row: &Row, column: &str) -> Result<homeroom_domain::SendAs, QueryError> {
    let text: String = row.get(column)?;
    crate::models::names::parse_sent_as(&text).ok_or(QueryError::Corrupt("sent as"))
}

/// A delivery's `error` column when its `status` is `failed`: a retried attempt's error
/// stays in the row until the next outcome, and is no failure of a delivery that then
/// arrived.
pub(crate) fn failure(row: &Row) -> Result<Option<String>, QueryError> {
    if status(row, "status")? == DeliveryStatus::Failed {
        Ok(row.get("error")?)
    } else {
        Ok(None)
    }
}

pub(crate) fn status(row: &Row, column: &str) -> Result<DeliveryStatus, QueryError> {
    let text: String = row.get(column)?;
    DeliveryStatus::parse(&text).ok_or(QueryError::Corrupt("delivery status"))
}

/// The join that finds conversation `c`'s last message as `lm` (its primary key), for
/// what the denormalised columns leave out: `lm.sent_as AS last_sent_as` is selected
/// with it.
pub(crate) const LAST_MESSAGE: &str = "LEFT JOIN messages{conversations} lm
               ON lm.district = c.district AND lm.message_id = c.last_message_id
              AND lm.conversation_id = c.conversation_id";

/// The conversation's last message from the denormalised columns `last_*` and
/// `last_sent_as` ([`LAST_MESSAGE`]), with `body_column` as its text.
pub(crate) fn last_message(
    row: &Row,
    body_column: &str,
) -> Result<Option<LastMessage>, QueryError> {
    let (Some(message_id), Some(author_id), Some(sent_at)) = (
        opt_uuid(row, "last_message_id")?,
        opt_uuid(row, "last_author_id")?,
        opt_time(row, "last_sent_at")?,
    ) else {
        return Ok(None);
    };
    let body: Option<String> = row.get(body_column)?;
    let sent_as: Option<String> = row.get("last_sent_as")?;
    let sent_as = match sent_as {
        Some(text) => {
            crate::models::names::parse_sent_as(&text).ok_or(QueryError::Corrupt("sent as"))?
        }
        None => homeroom_domain::SendAs::Personal,
    };
    Ok(Some(LastMessage {
        message_id: message_id.into(),
        author_id: author_id.into(),
        sent_as,
        body: body.unwrap_or_default(),
        sent_at,
    }))
}

/// The paging cursor of a conversation row (`last_commit`, `last_sequence`,
/// `conversation_id`).
pub(crate) fn conversation_cursor(row: &Row) -> Result<Cursor, QueryError> {
    Ok(Cursor {
        commit: row.get("last_commit")?,
        sequence: row.get("last_sequence")?,
        id: uuid(row, "conversation_id")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor {
            commit: 0,
            sequence: 42,
            id: Uuid::from_u128(7),
        };
        assert_eq!(Cursor::decode(Some(&c.encode()), Cursor::TOP).unwrap(), c);
        assert_eq!(Cursor::decode(None, Cursor::TOP).unwrap(), Cursor::TOP);
        assert!(matches!(
            Cursor::decode(Some("zz"), Cursor::TOP),
            Err(QueryError::BadCursor)
        ));
        assert!(matches!(
            Cursor::decode(Some(&hex::encode("1.2")), Cursor::TOP),
            Err(QueryError::BadCursor)
        ));
    }
}
