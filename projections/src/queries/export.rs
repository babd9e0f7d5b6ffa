//! A conversation as a records officer's file, in JSON Lines.
//!
//! JSON Lines rather than CSV: the file must hold the participants and every message
//! with a channel and status per recipient, which nests; one self-describing line per
//! record keeps it streamable and greppable, loads into any spreadsheet tool through
//! its JSON import, and never mangles bodies holding commas, quotes or newlines.
//!
//! ```text
//! {"record":"conversation","conversation_id":"…","title":null,"kind":"group",…,"participants":[{"person_id":"…","name":"…","kind":"staff"}]}
//! {"record":"message","message_id":"…","sent_at":"…","author_id":"…","author_name":"…","body":"…","deliveries":[{"recipient_id":"…","channel":"sms","status":"delivered",…}],"read_by":["…"]}
//! ```

use super::{DeliveryStatus, Participant, ReadModels, RefusedReply, Snapshot};
use crate::error::QueryError;
use crate::models::{conversations, deliveries, directory};
use chrono::{DateTime, Utc};
use homeroom_domain::{
    Channel, ConversationId, ConversationKind, DeliveryId, DistrictId, MessageId, PersonId,
    SchoolId, SendAs,
};
use serde::{Deserialize, Serialize};

/// The media type of [`ConversationExport::to_json_lines`].
pub const EXPORT_MEDIA_TYPE: &str = "application/x-ndjson";

/// A participant, as exported.
pub type ExportParticipant = Participant;

/// One recipient's delivery of a message, as exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ExportDelivery {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// Who received it.
    pub recipient_id: PersonId,
    /// Their name.
    pub recipient_name: Option<String>,
    /// The channel.
    pub channel: Channel,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Since when.
    pub status_at: DateTime<Utc>,
    /// Why it failed, when it did (as in the thread).
    pub error: Option<String>,
    /// The text as rendered for the recipient.
    pub text: String,
    /// The recipient's language (what a translation, if any, was asked for).
    pub language: String,
    /// The text exactly as handed to the provider (translated, with a shared phone's
    /// label), once it was sent.
    pub sent_text: Option<String>,
    /// The language `sent_text` was machine-translated to, if it was.
    pub translated_to: Option<String>,
}

/// One message, as exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ExportMessage {
    /// The message.
    pub message_id: MessageId,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
    /// Who wrote it.
    pub author_id: PersonId,
    /// Their name.
    pub author_name: Option<String>,
    /// For an SMS reply from a phone other participants have too: them.
    pub shared_phone_with: Vec<PersonId>,
    /// Under whose identity it went out.
    pub sent_as: SendAs,
    /// Its subject.
    pub subject: Option<String>,
    /// The text as written.
    pub body: String,
    /// One per recipient.
    pub deliveries: Vec<ExportDelivery>,
    /// Who has read it (their read position is at it or past it), as in the thread.
    pub read_by: Vec<PersonId>,
}

/// Everything about one conversation a records officer needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConversationExport {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Its title.
    pub title: Option<String>,
    /// Personal, school or group.
    pub kind: ConversationKind,
    /// Its school.
    pub school_id: SchoolId,
    /// Who started it.
    pub started_by: PersonId,
    /// When.
    pub started_at: DateTime<Utc>,
    /// Whether it was stopped.
    pub stopped: bool,
    /// Every participant.
    pub participants: Vec<ExportParticipant>,
    /// Every message, in order.
    pub messages: Vec<ExportMessage>,
    /// The SMS replies it kept without posting them, in the order they came.
    pub refused_replies: Vec<RefusedReply>,
}

#[derive(Serialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum Line<'a> {
    Conversation {
        conversation_id: ConversationId,
        title: &'a Option<String>,
        kind: ConversationKind,
        school_id: SchoolId,
        started_by: PersonId,
        started_at: DateTime<Utc>,
        stopped: bool,
        participants: &'a [ExportParticipant],
    },
    Message(&'a ExportMessage),
    RefusedReply(&'a RefusedReply),
}

impl ConversationExport {
    /// The file: a `conversation` line, then one `message` line per message and one
    /// `refused_reply` line per reply kept without being posted, each ending in `\n`
    /// ([`EXPORT_MEDIA_TYPE`]).
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        let header = Line::Conversation {
            conversation_id: self.conversation_id,
            title: &self.title,
            kind: self.kind,
            school_id: self.school_id,
            started_by: self.started_by,
            started_at: self.started_at,
            stopped: self.stopped,
            participants: &self.participants,
        };
        let lines = std::iter::once(header)
            .chain(self.messages.iter().map(Line::Message))
            .chain(self.refused_replies.iter().map(Line::RefusedReply));
        for line in lines {
            // Plain data (strings, ids, times, enums) always serialises.
            if let Ok(text) = serde_json::to_string(&line) {
                out.push_str(&text);
                out.push('\n');
            }
        }
        out
    }
}

impl ReadModels {
    /// The whole conversation for a records officer (`None` when there is no such
    /// conversation in `district`); write it with
    /// [`ConversationExport::to_json_lines`].
    ///
    /// # Errors
    /// [`QueryError`] when the database fails.
    pub async fn export_conversation(
        &self,
        district: &DistrictId,
        id: ConversationId,
    ) -> Result<Option<ConversationExport>, QueryError> {
        let mut s = Snapshot::open(
            &self.db,
            &[conversations::NAME, deliveries::NAME, directory::NAME],
        )
        .await?;
        let Some(mut parts) = s.thread(district, id, None).await? else {
            return Ok(None);
        };
        let c = parts.conversation;
        let messages = c
            .messages
            .into_iter()
            .map(|m| ExportMessage {
                deliveries: parts
                    .deliveries
                    .remove(&m.message_id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| ExportDelivery {
                        delivery_id: p.delivery.delivery_id,
                        recipient_id: p.delivery.recipient_id,
                        recipient_name: p.recipient_name,
                        channel: p.delivery.channel,
                        status: p.delivery.status,
                        status_at: p.delivery.status_at,
                        error: p.delivery.error,
                        text: p.text,
                        language: p.language,
                        sent_text: p.sent_text,
                        translated_to: p.translated_to,
                    })
                    .collect(),
                message_id: m.message_id,
                sent_at: m.sent_at,
                author_id: m.author_id,
                shared_phone_with: m.shared_phone_with,
                author_name: m.author_name,
                sent_as: m.sent_as,
                subject: m.subject,
                body: m.original_body,
                read_by: m.read_by,
            })
            .collect();
        Ok(Some(ConversationExport {
            conversation_id: c.conversation_id,
            title: c.title,
            kind: c.kind,
            school_id: c.school_id,
            started_by: c.started_by,
            started_at: c.started_at,
            stopped: c.stopped,
            participants: c.participants,
            messages,
            refused_replies: c.refused_replies,
        }))
    }
}
