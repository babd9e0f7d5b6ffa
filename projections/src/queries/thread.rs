//! A conversation's thread: participants, messages in order with their deliveries and
//! read receipts, and the replies it kept without posting them.

use super::{
    channel, conversation_kind, failure, person_kind, sent_as, status, time, uuid, Conversation,
    MessageDelivery, Participant, ReadModels, RefusedReply, Snapshot, ThreadMessage,
};
use crate::db::query;
use crate::error::QueryError;
use crate::models::{conversations, deliveries, directory};
use homeroom_domain::{sms, ConversationId, DistrictId, MessageId, PersonId};
use std::collections::HashMap;
use uuid::Uuid;

/// One delivery with what the thread's views add to it.
pub(crate) struct Planned {
    pub delivery: MessageDelivery,
    pub recipient_name: Option<String>,
    /// The text rendered for the recipient.
    pub text: String,
    /// The subject rendered for the recipient, if the message has one.
    pub subject: Option<String>,
    pub language: String,
    /// The text exactly as handed to the provider (translated, labelled), once sent.
    pub sent_text: Option<String>,
    /// The language `sent_text` was machine-translated to, if it was.
    pub translated_to: Option<String>,
}

/// The parts of a thread every view of it needs.
pub(crate) struct Parts {
    pub conversation: Conversation,
    /// Each message's deliveries.
    pub deliveries: HashMap<MessageId, Vec<Planned>>,
}

impl Snapshot {
    /// Reads a conversation's rows; `viewer` picks whose rendering of each message is
    /// the `body`.
    pub(crate) async fn thread(
        &mut self,
        district: &DistrictId,
        id: ConversationId,
        viewer: Option<PersonId>,
    ) -> Result<Option<Parts>, QueryError> {
        let d = district.as_str();
        let sql = self.sql(
            "SELECT conversation_id, title, kind, school_id, started_by, started_at, stopped
             FROM conversations{conversations} WHERE district = $1 AND conversation_id = $2",
        );
        let Some(row) = query(&sql)
            .bind(d)
            .bind(id.as_uuid())
            .fetch_optional(&mut self.tx)
            .await?
        else {
            return Ok(None);
        };
        let mut conversation = Conversation {
            conversation_id: id,
            title: row.get("title")?,
            kind: conversation_kind(&row, "kind")?,
            school_id: uuid(&row, "school_id")?.into(),
            started_by: uuid(&row, "started_by")?.into(),
            started_at: time(&row, "started_at")?,
            stopped: row.get("stopped")?,
            participants: Vec::new(),
            messages: Vec::new(),
            refused_replies: Vec::new(),
        };

        let sql = self.sql(
            "SELECT p.person_id, n.name, n.kind
             FROM conversation_people{conversations} p
             LEFT JOIN people{directory} n ON n.district = p.district AND n.person_id = p.person_id
             WHERE p.district = $1 AND p.conversation_id = $2 AND p.participant = TRUE
             ORDER BY p.ordinal",
        );
        for row in query(&sql)
            .bind(d)
            .bind(id.as_uuid())
            .fetch_all(&mut self.tx)
            .await?
        {
            conversation.participants.push(Participant {
                person_id: uuid(&row, "person_id")?.into(),
                name: row.get("name")?,
                kind: person_kind(&row, "kind")?,
            });
        }

        let sql = self.sql(
            "SELECT person_id, read_seq FROM conversation_people{conversations}
             WHERE district = $1 AND conversation_id = $2 AND read_seq > 0
             ORDER BY person_id",
        );
        let mut reads: Vec<(PersonId, i64)> = Vec::new();
        for row in query(&sql)
            .bind(d)
            .bind(id.as_uuid())
            .fetch_all(&mut self.tx)
            .await?
        {
            reads.push((uuid(&row, "person_id")?.into(), row.get("read_seq")?));
        }

        let sql = self.sql(
            // Through the conversation's messages (`messages_order`) to their deliveries
            // (`deliveries_message`): deliveries keep no index by conversation, which
            // would dirty one page per conversation in every catch-up batch. `CROSS JOIN`
            // makes SQLite keep that order (left alone, it walked every delivery of the
            // district in `ORDER BY` order); PostgreSQL plans it as a plain join.
            "SELECT v.delivery_id, v.message_id, v.recipient_id, v.channel, v.status,
                    v.status_at, v.text, v.subject, v.language, v.sent_text, v.translated_to,
                    v.error, n.name
             FROM messages{conversations} m
             CROSS JOIN deliveries{deliveries} v
             LEFT JOIN people{directory} n ON n.district = v.district AND n.person_id = v.recipient_id
             WHERE m.district = $1 AND m.conversation_id = $2
               AND v.district = m.district AND v.message_id = m.message_id
               AND v.conversation_id = m.conversation_id
             ORDER BY v.message_id, v.recipient_id",
        );
        let mut by_message: HashMap<MessageId, Vec<Planned>> = HashMap::new();
        for row in query(&sql)
            .bind(d)
            .bind(id.as_uuid())
            .fetch_all(&mut self.tx)
            .await?
        {
            let delivery = MessageDelivery {
                delivery_id: uuid(&row, "delivery_id")?.into(),
                recipient_id: uuid(&row, "recipient_id")?.into(),
                channel: channel(&row, "channel")?,
                status: status(&row, "status")?,
                status_at: time(&row, "status_at")?,
                error: failure(&row)?,
            };
            by_message
                .entry(uuid(&row, "message_id")?.into())
                .or_default()
                .push(Planned {
                    delivery,
                    recipient_name: row.get("name")?,
                    text: row.get("text")?,
                    subject: row.get("subject")?,
                    language: row.get("language")?,
                    sent_text: row.get("sent_text")?,
                    translated_to: row.get("translated_to")?,
                });
        }

        let sql = self.sql(
            "SELECT m.message_id, m.seq, m.author_id, a.name AS author_name,
                    a.language AS author_language, m.sent_as, m.subject, m.body, m.sent_at,
                    m.shared_phone_with
             FROM messages{conversations} m
             LEFT JOIN people{directory} a ON a.district = m.district AND a.person_id = m.author_id
             WHERE m.district = $1 AND m.conversation_id = $2
             ORDER BY m.seq",
        );
        for row in query(&sql)
            .bind(d)
            .bind(id.as_uuid())
            .fetch_all(&mut self.tx)
            .await?
        {
            let message_id: MessageId = uuid(&row, "message_id")?.into();
            let author_id: PersonId = uuid(&row, "author_id")?.into();
            let seq: i64 = row.get("seq")?;
            let original: String = row.get("body")?;
            let planned = by_message.get(&message_id);
            let mine = viewer.and_then(|v| {
                planned.and_then(|ds| ds.iter().find(|p| p.delivery.recipient_id == v))
            });
            // The viewer's own copy: machine-translated once the worker translated it,
            // else rendered for them in the language it was written in.
            let author_language: Option<String> = row.get("author_language")?;
            let author_name: Option<String> = row.get("author_name")?;
            let (body, language, machine_translated) = match mine {
                Some(Planned {
                    sent_text: Some(sent),
                    translated_to: Some(to),
                    recipient_name,
                    ..
                }) => (
                    sms::own_copy(
                        sent,
                        recipient_name.as_deref().unwrap_or(""),
                        author_name.as_deref().unwrap_or(""),
                    )
                    .to_owned(),
                    Some(to.clone()),
                    true,
                ),
                Some(p) => (p.text.clone(), author_language, false),
                None => (original.clone(), author_language, false),
            };
            // Their subject too, merge fields rendered (the author sees the template).
            let subject = match mine {
                Some(p) => p.subject.clone(),
                None => row.get("subject")?,
            };
            // What it said before any translation: to a recipient, as rendered for them
            // (their child's name, not `{student_name}`); to everyone else, as written.
            let original_body = match mine {
                Some(p) => p.text.clone(),
                None => original,
            };
            let shared_phone_with = shared_phone(&row)?;
            conversation.messages.push(ThreadMessage {
                message_id,
                author_id,
                shared_phone_with,
                author_name,
                sent_as: sent_as(&row, "sent_as")?,
                subject,
                body,
                original_body,
                language,
                machine_translated,
                sent_at: time(&row, "sent_at")?,
                deliveries: planned
                    .map(|ds| ds.iter().map(|p| p.delivery.clone()).collect())
                    .unwrap_or_default(),
                read_by: reads
                    .iter()
                    .filter(|(p, read)| *read >= seq && *p != author_id)
                    .map(|(p, _)| *p)
                    .collect(),
            });
        }
        let sql = self.sql(
            "SELECT r.author_id, a.name AS author_name, r.body, r.reason, r.received_at,
                    r.message_sid, r.shared_phone_with
             FROM refused_replies{conversations} r
             LEFT JOIN people{directory} a ON a.district = r.district AND a.person_id = r.author_id
             WHERE r.district = $1 AND r.conversation_id = $2
             ORDER BY r.pos_commit, r.pos_sequence",
        );
        for row in query(&sql)
            .bind(d)
            .bind(id.as_uuid())
            .fetch_all(&mut self.tx)
            .await?
        {
            conversation.refused_replies.push(RefusedReply {
                author_id: uuid(&row, "author_id")?.into(),
                shared_phone_with: shared_phone(&row)?,
                author_name: row.get("author_name")?,
                body: row.get("body")?,
                reason: row.get("reason")?,
                received_at: time(&row, "received_at")?,
                message_sid: row.get("message_sid")?,
            });
        }
        Ok(Some(Parts {
            conversation,
            deliveries: by_message,
        }))
    }
}

/// The `shared_phone_with` column (ids separated by spaces, `NULL` for none) of `row`.
fn shared_phone(row: &crate::db::Row) -> Result<Vec<PersonId>, QueryError> {
    let shared: Option<String> = row.get("shared_phone_with")?;
    shared
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .map(|id| {
            Uuid::parse_str(id)
                .map(PersonId::new)
                .map_err(|_| QueryError::Corrupt("shared phone"))
        })
        .collect()
}

impl ReadModels {
    /// A conversation's thread (`None` when there is no such conversation in
    /// `district`). `viewer` is whose rendering of each message becomes `body` (their
    /// merge fields and language); without one, or for messages the viewer did not
    /// receive, `body` is the original. The query layer checks that the viewer may see
    /// it (participant, school-inbox holder, oversight) from `participants`, `kind` and
    /// `school_id`.
    ///
    /// # Errors
    /// [`QueryError`] when the database fails.
    pub async fn conversation(
        &self,
        district: &DistrictId,
        id: ConversationId,
        viewer: Option<PersonId>,
    ) -> Result<Option<Conversation>, QueryError> {
        let mut s = Snapshot::open(
            &self.db,
            &[conversations::NAME, deliveries::NAME, directory::NAME],
        )
        .await?;
        Ok(s.thread(district, id, viewer)
            .await?
            .map(|p| p.conversation))
    }
}
