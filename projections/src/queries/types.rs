//! What queries return: serde structs whose field names are API.md's (binding), plus a
//! few more fields where they help a client.

use chrono::{DateTime, Utc};
use homeroom_domain::{
    Channel, ConversationId, ConversationKind, DeliveryId, MessageId, PersonId, PersonKind,
    SchoolId, SendAs,
};
use homeroom_eventstore::Position;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for a channel worker.
    Queued,
    /// Handed to the provider.
    Sent,
    /// Arrived.
    Delivered,
    /// Did not arrive.
    Failed,
}

impl DeliveryStatus {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "queued" => Some(Self::Queued),
            "sent" => Some(Self::Sent),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A page request: at most `limit` items after `cursor` (a `next` from an earlier
/// page, or none for the first page).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageRequest {
    /// Items per page; 0 means the default (50); at most 500.
    pub limit: u32,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

impl PageRequest {
    /// The first page with the default size.
    pub fn first() -> Self {
        Self::default()
    }

    /// The first page with `limit` items.
    pub fn of(limit: u32) -> Self {
        Self {
            limit,
            cursor: None,
        }
    }

    /// The page after `cursor`.
    pub fn after(limit: u32, cursor: impl Into<String>) -> Self {
        Self {
            limit,
            cursor: Some(cursor.into()),
        }
    }

    pub(crate) fn size(&self) -> i64 {
        match self.limit {
            0 => 50,
            n => i64::from(n.min(500)),
        }
    }
}

/// The latest message of a conversation, as an inbox shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LastMessage {
    /// The message.
    pub message_id: MessageId,
    /// Who wrote it (for a family member or student, the school's id when it came from
    /// the school).
    pub author_id: PersonId,
    /// Whether it went out under the author's or the school's identity.
    pub sent_as: SendAs,
    /// Its text: as rendered for the viewer when they received it, else the original.
    pub body: String,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
}

/// One conversation in an inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct InboxConversation {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Its title, if it has one.
    #[cfg_attr(feature = "schema", schemars(required))]
    pub title: Option<String>,
    /// Personal, school or group.
    pub kind: ConversationKind,
    /// The school it belongs to.
    pub school_id: SchoolId,
    /// Its latest message.
    #[cfg_attr(feature = "schema", schemars(required))]
    pub last_message: Option<LastMessage>,
    /// Messages by others after the viewer's read position.
    pub unread_count: u64,
    /// Whether the viewer muted it.
    pub muted: bool,
    /// Whether the viewer archived it.
    pub archived: bool,
    /// Whether it was stopped.
    pub stopped: bool,
}

/// `GET /v1/inbox`: most recent activity first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Inbox {
    /// The page.
    pub conversations: Vec<InboxConversation>,
    /// The cursor of the next page, if there may be one.
    #[cfg_attr(feature = "schema", schemars(required))]
    pub next: Option<String>,
}

/// A person taking part in a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Participant {
    /// The person.
    pub person_id: PersonId,
    /// Their name (null if the directory does not know them).
    #[cfg_attr(feature = "schema", schemars(required))]
    pub name: Option<String>,
    /// Staff, student or guardian.
    pub kind: Option<PersonKind>,
}

/// One recipient's delivery of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MessageDelivery {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// Who receives it.
    pub recipient_id: PersonId,
    /// How.
    pub channel: Channel,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// When it got there.
    pub status_at: DateTime<Utc>,
    /// Why it failed, as the worker recorded it (the provider's code and words, or
    /// Homeroom's own refusal, e.g. `not sent (no_contact_point): …`); `None` unless
    /// `failed`.
    pub error: Option<String>,
}

/// One message of a thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ThreadMessage {
    /// The message.
    pub message_id: MessageId,
    /// Who wrote it.
    pub author_id: PersonId,
    /// For an SMS reply from a phone other participants have too: them (whoever typed
    /// it may be any of these; the author is the person the phone was last texted for).
    pub shared_phone_with: Vec<PersonId>,
    /// The author's name.
    pub author_name: Option<String>,
    /// Whether it went out under the author's or the school's identity.
    pub sent_as: SendAs,
    /// Its subject, if any.
    pub subject: Option<String>,
    /// The text in the viewer's language, as rendered for them (the original when the
    /// viewer was not a recipient).
    pub body: String,
    /// The text before any translation: as rendered for the viewer when they were a
    /// recipient (their merge fields), else as written (merge fields unrendered).
    pub original_body: String,
    /// The language of `body`.
    #[cfg_attr(feature = "schema", schemars(required))]
    pub language: Option<String>,
    /// Whether `body` is a machine translation of `original_body` (the viewer's copy,
    /// translated when it was sent); false when it is in the language it was written in.
    pub machine_translated: bool,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
    /// One per recipient.
    pub deliveries: Vec<MessageDelivery>,
    /// Everyone but the author whose read position covers it.
    pub read_by: Vec<PersonId>,
}

/// `GET /v1/conversations/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Conversation {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Its title, if it has one.
    #[cfg_attr(feature = "schema", schemars(required))]
    pub title: Option<String>,
    /// Personal, school or group.
    pub kind: ConversationKind,
    /// Its school (the query layer checks school-wide permissions against it).
    pub school_id: SchoolId,
    /// Who started it.
    pub started_by: PersonId,
    /// When.
    pub started_at: DateTime<Utc>,
    /// Whether it was stopped.
    pub stopped: bool,
    /// Every participant, the starter first.
    pub participants: Vec<Participant>,
    /// Every message, in order.
    pub messages: Vec<ThreadMessage>,
    /// The SMS replies it kept without posting them (it was stopped, or the text held
    /// blocked content), in the order they came: never messages, never lost.
    pub refused_replies: Vec<RefusedReply>,
}

/// An SMS reply a conversation kept but did not post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RefusedReply {
    /// Who sent it (the family member the line last texted).
    pub author_id: PersonId,
    /// The other participants with the phone it came from (any of them may have sent
    /// it), as for a message.
    pub shared_phone_with: Vec<PersonId>,
    /// Their name.
    pub author_name: Option<String>,
    /// The text as received.
    pub body: String,
    /// Why it was not posted: `conversation_stopped` or `blocked_content`.
    pub reason: String,
    /// When it came.
    pub received_at: DateTime<Utc>,
    /// The provider's id of the SMS.
    pub message_sid: String,
}

impl RefusedReply {
    /// Whether `person` may have sent it: its author, or someone with the same phone.
    pub fn may_be_from(&self, person: PersonId) -> bool {
        self.author_id == person || self.shared_phone_with.contains(&person)
    }
}

impl Conversation {
    /// Whether `person` takes part in it.
    pub fn has_participant(&self, person: PersonId) -> bool {
        self.participants.iter().any(|p| p.person_id == person)
    }
}

/// Which way a message on a student's record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From staff (needs `student_record` to see).
    Outbound,
    /// A reply from the student or one of their guardians (needs `inbound_replies`).
    Inbound,
}

/// One message on a student's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RecordEntry {
    /// The message.
    pub message_id: MessageId,
    /// Its conversation.
    pub conversation_id: ConversationId,
    /// The conversation's kind.
    pub conversation_kind: ConversationKind,
    /// Outbound (staff) or inbound (a reply from the family).
    pub direction: Direction,
    /// Who sent it.
    pub sender_id: PersonId,
    /// Their name.
    pub sender_name: Option<String>,
    /// Under whose identity it went out.
    pub sent_as: SendAs,
    /// When.
    pub sent_at: DateTime<Utc>,
    /// The text as written (merge fields unrendered; each delivery has its rendering).
    pub body: String,
    /// Outbound: its deliveries to the student and their guardians. Inbound: every
    /// delivery it caused.
    pub deliveries: Vec<RecordDelivery>,
}

/// One delivery on a student's record: where it stands and what the recipient was
/// given, so the record shows the content each of them received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RecordDelivery {
    /// The delivery, as a thread shows it (its fields sit beside the texts in JSON).
    #[serde(flatten)]
    pub delivery: MessageDelivery,
    /// The text rendered for the recipient (their merge fields).
    pub text: String,
    /// The text exactly as handed to the provider (translated, labelled), once sent.
    pub sent_text: Option<String>,
}

/// `GET /v1/students/{id}/messages`: oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StudentRecord {
    /// The student.
    pub student_id: PersonId,
    /// The page.
    pub messages: Vec<RecordEntry>,
    /// The cursor of the next page, if there may be one.
    #[cfg_attr(feature = "schema", schemars(required))]
    pub next: Option<String>,
}

/// One conversation as oversight lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OversightConversation {
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
    /// How many messages it holds.
    pub message_count: u64,
    /// Its latest message (original text).
    pub last_message: Option<LastMessage>,
    /// Every participant.
    pub participants: Vec<Participant>,
}

/// `GET /v1/oversight/conversations`: most recent activity first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Oversight {
    /// The page.
    pub conversations: Vec<OversightConversation>,
    /// The cursor of the next page, if there may be one.
    #[cfg_attr(feature = "schema", schemars(required))]
    pub next: Option<String>,
}

/// What oversight may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OversightScope {
    /// Every school of the district (oversight held district-wide).
    District,
    /// These schools only.
    Schools(Vec<SchoolId>),
}

/// Oversight's search.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OversightFilter {
    /// Text found (case-insensitively) in the title, a message or a participant's name.
    pub q: Option<String>,
    /// A person who takes part.
    pub participant: Option<PersonId>,
    /// With a message sent at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// With a message sent before this time.
    pub until: Option<DateTime<Utc>>,
}

/// The audit trail's filter (`GET /v1/audit?stream=&actor=&since=&until=&after=`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditFilter {
    /// Events of this stream only.
    pub stream: Option<String>,
    /// Events by this actor only (a person id or a service name).
    pub actor: Option<String>,
    /// Recorded at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before this time.
    pub until: Option<DateTime<Utc>>,
    /// After this position (the previous page's `next`).
    pub after: Option<Position>,
    /// Events per page; 0 means 100; at most 1000.
    pub limit: u32,
}

/// One event of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuditEvent {
    /// Its position (a token: number or string).
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::queries::position_schema")
    )]
    pub position: Position,
    /// Its stream.
    pub stream: String,
    /// Its version in the stream.
    pub version: u64,
    /// Its stored name.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Who caused it.
    pub actor: String,
    /// Its district.
    pub district: String,
    /// The user action it belongs to.
    pub correlation_id: Uuid,
    /// What directly caused it.
    pub causation_id: Uuid,
    /// Its hash.
    pub hash: String,
    /// The previous event's hash in its stream.
    pub prev_hash: String,
    /// Its data, as recorded.
    pub data: serde_json::Value,
    /// Its id.
    pub event_id: Uuid,
    /// The shape version of `data`.
    pub schema_version: u32,
    /// The school it concerns.
    pub school: Option<String>,
    /// The command that recorded it.
    pub command_id: Uuid,
}

/// `GET /v1/audit`: in position order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuditPage {
    /// The page.
    pub events: Vec<AuditEvent>,
    /// Pass as `after` for the next page; null when this page is the last.
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::queries::optional_position_schema", required)
    )]
    pub next: Option<Position>,
}

/// One delivery, with everything known about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeliveryView {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// The message.
    pub message_id: MessageId,
    /// Its conversation.
    pub conversation_id: ConversationId,
    /// The recipient.
    pub recipient_id: PersonId,
    /// The channel.
    pub channel: Channel,
    /// The phone number or email address (none in-app).
    pub address: Option<String>,
    /// The recipient's language.
    pub language: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Since when.
    pub status_at: DateTime<Utc>,
    /// The provider's id for it.
    pub provider_message_id: Option<String>,
    /// The provider's error, when it failed.
    pub error: Option<String>,
    /// Whether the failure was permanent.
    pub permanent: Option<bool>,
}

/// A person as the directory read model knows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PersonView {
    /// The person.
    pub person_id: PersonId,
    /// Staff, student or guardian.
    pub kind: PersonKind,
    /// Their name.
    pub name: String,
    /// Their language.
    pub language: String,
}
