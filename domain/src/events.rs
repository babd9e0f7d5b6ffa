//! Events: what happened, in the past tense, immutable once recorded. Stored names are
//! written out explicitly (never derived from Rust type names) and versioned, so
//! renaming a type never breaks the log.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::district::DistrictSettings;
use crate::facts::Actor;
use crate::ids::{
    ConversationId, DeliveryId, DistrictId, MessageId, PersonId, PhoneNumber, ProviderMessageId,
    RoleId, SchoolId,
};
use crate::inbound::InboundRoute;
use crate::permissions::PermissionSet;
use crate::plan::{DeliverySender, PlannedDelivery};
use crate::values::NumberOwner;
use crate::values::{Channel, ContactPoint, ConversationKind, PersonKind, SendAs};

/// A school joined the district.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchoolRegistered {
    /// The school.
    pub school_id: SchoolId,
    /// Its name.
    pub name: String,
    /// Its shared SMS number.
    pub sms_number: Option<PhoneNumber>,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: Actor,
}

/// A custom role was defined or redefined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleDefined {
    /// The role.
    pub role_id: RoleId,
    /// Its name.
    pub name: String,
    /// What it grants from now on.
    pub permissions: PermissionSet,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: Actor,
}

/// The district's settings changed; carries all of them as they now are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistrictSettingsChanged {
    /// The settings after the change.
    pub settings: DistrictSettings,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: Actor,
}

/// Numbers joined the pool of personal SMS sender numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SenderNumbersAdded {
    /// Only the numbers new to the pool.
    pub numbers: Vec<PhoneNumber>,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: Actor,
}

/// A person was registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonRegistered {
    /// The person.
    pub person_id: PersonId,
    /// Staff, student or guardian.
    pub kind: PersonKind,
    /// Full name.
    pub name: String,
    /// Their schools.
    pub school_ids: Vec<SchoolId>,
    /// Birth date, if known.
    pub birth_date: Option<NaiveDate>,
    /// Added by hand rather than by the SIS.
    pub manually_added: bool,
    /// Preferred language.
    pub language: String,
    /// Preferred channel.
    pub preferred_channel: Option<Channel>,
    /// Contact points, addresses normalised.
    pub contact_points: Vec<ContactPoint>,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: Actor,
}

/// A guardian was linked to a student (on the guardian's stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardianLinked {
    /// The guardian.
    pub guardian_id: PersonId,
    /// The student.
    pub student_id: PersonId,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: Actor,
}

/// A guardian's link to a student ended (on the guardian's stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardianUnlinked {
    /// The guardian.
    pub guardian_id: PersonId,
    /// The student.
    pub student_id: PersonId,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: Actor,
}

/// A student's current teachers were replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudentTeachersSet {
    /// The student.
    pub student_id: PersonId,
    /// Every current teacher.
    pub teacher_ids: Vec<PersonId>,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: Actor,
}

/// A person was given a role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleAssigned {
    /// The person.
    pub person_id: PersonId,
    /// The role.
    pub role_id: RoleId,
    /// Where it applies; `None` = district-wide.
    pub school_id: Option<SchoolId>,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: Actor,
}

/// A role assignment was taken back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleRevoked {
    /// The person.
    pub person_id: PersonId,
    /// The role.
    pub role_id: RoleId,
    /// Where it applied; `None` = district-wide.
    pub school_id: Option<SchoolId>,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: Actor,
}

/// A person's contact preferences changed; carries both as they now are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactPreferencesSet {
    /// The person.
    pub person_id: PersonId,
    /// Preferred channel now.
    pub preferred_channel: Option<Channel>,
    /// Language now.
    pub language: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: Actor,
}

/// A person's phone numbers and email addresses were replaced (a family changed phones):
/// carries them all as they now are. An address kept keeps its failing mark; a new one
/// starts usable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactPointsChanged {
    /// The person.
    pub person_id: PersonId,
    /// Every contact point now, normalised.
    pub contact_points: Vec<ContactPoint>,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: Actor,
}

/// A failing contact point was reset, so messages use it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactPointReset {
    /// The person.
    pub person_id: PersonId,
    /// The address, as recorded.
    pub address: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: Actor,
}

/// A conversation began (always followed by its first `MessagePosted`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationStarted {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Personal, school or group.
    pub kind: ConversationKind,
    /// The school it belongs to.
    pub school_id: SchoolId,
    /// Title, if given.
    pub title: Option<String>,
    /// The starter.
    pub started_by: PersonId,
    /// Every participant, the starter first.
    pub participant_ids: Vec<PersonId>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A message was posted, with its delivery plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagePosted {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The message.
    pub message_id: MessageId,
    /// The person who wrote it (also when sent from the school).
    pub author_id: PersonId,
    /// Personal or school identity.
    pub sent_as: SendAs,
    /// The original body, merge fields unrendered.
    pub body: String,
    /// The original subject.
    pub subject: Option<String>,
    /// One delivery per recipient.
    pub deliveries: Vec<PlannedDelivery>,
    /// For a reply by SMS from a phone that other participants have too: them. The
    /// author is the person that phone was last texted for, as far as Homeroom can
    /// tell; whoever typed it may be any of these
    /// (`conversation::who_else_has_the_phone_a_reply_came_from`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_phone_with: Vec<PersonId>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A conversation was stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationStopped {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Who stopped it.
    pub by: PersonId,
    /// When.
    pub at: DateTime<Utc>,
}

/// A stopped personal conversation was taken up again: its staff member wrote to the
/// family or student anew (`SendPersonalMessage` continues the one personal conversation
/// of the two), so replies are accepted again. The stop stays in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationResumed {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Who took it up again.
    pub by: PersonId,
    /// When.
    pub at: DateTime<Utc>,
}

/// A conversation got a new title.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRenamed {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The new title.
    pub title: String,
    /// Who renamed it.
    pub by: PersonId,
    /// When.
    pub at: DateTime<Utc>,
}

macro_rules! per_person_event {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            /// The conversation.
            pub conversation_id: ConversationId,
            /// Whose view of it changed.
            pub person_id: PersonId,
            /// When.
            pub at: DateTime<Utc>,
        }
    };
}

per_person_event!(
    /// A person muted a conversation.
    ConversationMuted
);
per_person_event!(
    /// A person unmuted a conversation.
    ConversationUnmuted
);
per_person_event!(
    /// A person archived a conversation.
    ConversationArchived
);
per_person_event!(
    /// A person brought an archived conversation back.
    ConversationUnarchived
);

/// A person read a conversation up to a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesRead {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The reader.
    pub person_id: PersonId,
    /// The last message read.
    pub up_to_message_id: MessageId,
    /// When.
    pub at: DateTime<Utc>,
}

/// A delivery was queued for a channel worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryQueued {
    /// The plan, as recorded in `MessagePosted`.
    pub delivery: PlannedDelivery,
    /// The message.
    pub message_id: MessageId,
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The delivery that failed, when this one carries its message by the other channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_of: Option<DeliveryId>,
    /// Who it goes out as (the message's author and identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<DeliverySender>,
    /// When.
    pub at: DateTime<Utc>,
}

/// The provider accepted a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliverySent {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// The provider's message id.
    pub provider_message_id: Option<String>,
    /// The address it went out from (the sender's or the school's SMS number, the
    /// email From address), when the worker reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The text exactly as handed to the provider (label and translation applied), when
    /// the worker reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_text: Option<String>,
    /// The language of `sent_text`, when it was machine-translated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translated_to: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// The provider confirmed a delivery arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryDelivered {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// The provider's message id.
    pub provider_message_id: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A delivery did not arrive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryFailed {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// The provider's message id.
    pub provider_message_id: Option<String>,
    /// The provider's error.
    pub error: Option<String>,
    /// Whether retrying the same address is pointless (e.g. a bounce).
    pub permanent: bool,
    /// When.
    pub at: DateTime<Utc>,
}

/// A delivery attempt failed in a way worth retrying (the provider was unreachable, or
/// asked to try later). The delivery stays queued for its next attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryAttemptFailed {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// Which attempt failed (1 for the first).
    pub attempt: u32,
    /// What the provider or the connection said.
    pub error: String,
    /// The provider never answered (a timeout, a dropped connection): it may have taken
    /// the message, so the next attempt goes with the same idempotency key and the
    /// provider sends it at most once. False (and absent) when it answered a refusal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unanswered: bool,
    /// When.
    pub at: DateTime<Utc>,
}

/// A contact point stopped working (a bounce, an unreachable number, an opt-out):
/// later messages use the person's other channel until `ResetContactPoint`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactPointFailing {
    /// The person.
    pub person_id: PersonId,
    /// The phone number or email address.
    pub address: String,
    /// The delivery whose failure showed it.
    pub delivery_id: DeliveryId,
    /// When.
    pub at: DateTime<Utc>,
}

/// A staff member was given their own SMS number from the district's pool, at their
/// first personal SMS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SenderNumberAssigned {
    /// The staff member.
    pub person_id: PersonId,
    /// Their number from now on.
    pub number: PhoneNumber,
    /// When.
    pub at: DateTime<Utc>,
}

/// An SMS number was bound to the district (and the identity) that sends from it, so
/// inbound SMS to it find their district.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmsNumberBound {
    /// The number.
    pub number: PhoneNumber,
    /// The district sending from it.
    pub district: DistrictId,
    /// The school or person it belongs to.
    pub owner: NumberOwner,
    /// When.
    pub at: DateTime<Utc>,
}

/// An SMS went out from one of the district's numbers to a family number for a
/// conversation: a reply from that number to that number belongs there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmsLineUsed {
    /// The district's number.
    pub our_number: PhoneNumber,
    /// The recipient's number.
    pub their_number: PhoneNumber,
    /// The conversation the SMS belonged to.
    pub conversation_id: ConversationId,
    /// The person it was for.
    pub recipient_id: PersonId,
    /// The delivery that sent it.
    pub delivery_id: DeliveryId,
    /// When.
    pub at: DateTime<Utc>,
}

/// A family number answered STOP: it receives no SMS from that number until START.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmsOptedOut {
    /// The district's number.
    pub our_number: PhoneNumber,
    /// The number that opted out.
    pub their_number: PhoneNumber,
    /// The inbound SMS that said so.
    pub message_sid: ProviderMessageId,
    /// When.
    pub at: DateTime<Utc>,
}

/// A family number answered START after a STOP: SMS may go to it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmsOptedIn {
    /// The district's number.
    pub our_number: PhoneNumber,
    /// The number that opted back in.
    pub their_number: PhoneNumber,
    /// The inbound SMS that said so.
    pub message_sid: ProviderMessageId,
    /// When.
    pub at: DateTime<Utc>,
}

/// An SMS arrived from the provider, exactly as received: recorded before anything is
/// decided about it, so nothing inbound is ever lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundSmsReceived {
    /// The provider's id of the SMS.
    pub message_sid: ProviderMessageId,
    /// The sender's number, as the provider gave it.
    pub from: String,
    /// The number it was sent to, as the provider gave it.
    pub to: String,
    /// The text.
    pub body: String,
    /// The pictures or files sent with it, as the provider's URLs (absent in events
    /// recorded before media were kept, and when there were none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media_urls: Vec<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Where an inbound SMS went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundSmsRouted {
    /// The provider's id of the SMS.
    pub message_sid: ProviderMessageId,
    /// Its route.
    pub route: InboundRoute,
    /// When.
    pub at: DateTime<Utc>,
}

/// A reply arrived that may not be posted (the conversation was stopped, or it holds
/// what the district's content guard forbids): kept with the conversation, not posted
/// or relayed to anyone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundReplyRefused {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Who replied.
    pub author_id: PersonId,
    /// The provider's id of the SMS.
    pub message_sid: ProviderMessageId,
    /// The text.
    pub body: String,
    /// Why: the refusal's code (`conversation_stopped`, `blocked_content`). Absent in
    /// logs from before it was recorded, where it was always a stopped conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The other participants with the phone it came from, as for a posted reply
    /// (`MessagePosted::shared_phone_with`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_phone_with: Vec<PersonId>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Every event, tagged with its stored name (`{"type": …, "data": …}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    /// `school_registered`.
    #[serde(rename = "school_registered")]
    SchoolRegistered(SchoolRegistered),
    /// `role_defined`.
    #[serde(rename = "role_defined")]
    RoleDefined(RoleDefined),
    /// `district_settings_changed`.
    #[serde(rename = "district_settings_changed")]
    DistrictSettingsChanged(DistrictSettingsChanged),
    /// `sender_numbers_added`.
    #[serde(rename = "sender_numbers_added")]
    SenderNumbersAdded(SenderNumbersAdded),
    /// `person_registered`.
    #[serde(rename = "person_registered")]
    PersonRegistered(PersonRegistered),
    /// `guardian_linked`.
    #[serde(rename = "guardian_linked")]
    GuardianLinked(GuardianLinked),
    /// `guardian_unlinked`.
    #[serde(rename = "guardian_unlinked")]
    GuardianUnlinked(GuardianUnlinked),
    /// `student_teachers_set`.
    #[serde(rename = "student_teachers_set")]
    StudentTeachersSet(StudentTeachersSet),
    /// `role_assigned`.
    #[serde(rename = "role_assigned")]
    RoleAssigned(RoleAssigned),
    /// `role_revoked`.
    #[serde(rename = "role_revoked")]
    RoleRevoked(RoleRevoked),
    /// `contact_preferences_set`.
    #[serde(rename = "contact_preferences_set")]
    ContactPreferencesSet(ContactPreferencesSet),
    /// `contact_point_reset`.
    #[serde(rename = "contact_point_reset")]
    ContactPointReset(ContactPointReset),
    /// `contact_points_changed`.
    #[serde(rename = "contact_points_changed")]
    ContactPointsChanged(ContactPointsChanged),
    /// `conversation_started`.
    #[serde(rename = "conversation_started")]
    ConversationStarted(ConversationStarted),
    /// `message_posted`.
    #[serde(rename = "message_posted")]
    MessagePosted(MessagePosted),
    /// `conversation_stopped`.
    #[serde(rename = "conversation_stopped")]
    ConversationStopped(ConversationStopped),
    /// `conversation_resumed`.
    #[serde(rename = "conversation_resumed")]
    ConversationResumed(ConversationResumed),
    /// `conversation_renamed`.
    #[serde(rename = "conversation_renamed")]
    ConversationRenamed(ConversationRenamed),
    /// `conversation_muted`.
    #[serde(rename = "conversation_muted")]
    ConversationMuted(ConversationMuted),
    /// `conversation_unmuted`.
    #[serde(rename = "conversation_unmuted")]
    ConversationUnmuted(ConversationUnmuted),
    /// `conversation_archived`.
    #[serde(rename = "conversation_archived")]
    ConversationArchived(ConversationArchived),
    /// `conversation_unarchived`.
    #[serde(rename = "conversation_unarchived")]
    ConversationUnarchived(ConversationUnarchived),
    /// `messages_read`.
    #[serde(rename = "messages_read")]
    MessagesRead(MessagesRead),
    /// `delivery_queued`.
    #[serde(rename = "delivery_queued")]
    DeliveryQueued(DeliveryQueued),
    /// `delivery_sent`.
    #[serde(rename = "delivery_sent")]
    DeliverySent(DeliverySent),
    /// `delivery_delivered`.
    #[serde(rename = "delivery_delivered")]
    DeliveryDelivered(DeliveryDelivered),
    /// `delivery_failed`.
    #[serde(rename = "delivery_failed")]
    DeliveryFailed(DeliveryFailed),
    /// `delivery_attempt_failed`.
    #[serde(rename = "delivery_attempt_failed")]
    DeliveryAttemptFailed(DeliveryAttemptFailed),
    /// `contact_point_failing`.
    #[serde(rename = "contact_point_failing")]
    ContactPointFailing(ContactPointFailing),
    /// `sender_number_assigned`.
    #[serde(rename = "sender_number_assigned")]
    SenderNumberAssigned(SenderNumberAssigned),
    /// `sms_number_bound`.
    #[serde(rename = "sms_number_bound")]
    SmsNumberBound(SmsNumberBound),
    /// `sms_line_used`.
    #[serde(rename = "sms_line_used")]
    SmsLineUsed(SmsLineUsed),
    /// `sms_opted_out`.
    #[serde(rename = "sms_opted_out")]
    SmsOptedOut(SmsOptedOut),
    /// `sms_opted_in`.
    #[serde(rename = "sms_opted_in")]
    SmsOptedIn(SmsOptedIn),
    /// `inbound_sms_received`.
    #[serde(rename = "inbound_sms_received")]
    InboundSmsReceived(InboundSmsReceived),
    /// `inbound_sms_routed`.
    #[serde(rename = "inbound_sms_routed")]
    InboundSmsRouted(InboundSmsRouted),
    /// `inbound_reply_refused`.
    #[serde(rename = "inbound_reply_refused")]
    InboundReplyRefused(InboundReplyRefused),
}

impl Event {
    /// Every stored name, for codecs and tests.
    pub const NAMES: &'static [&'static str] = &[
        "school_registered",
        "role_defined",
        "district_settings_changed",
        "sender_numbers_added",
        "person_registered",
        "guardian_linked",
        "guardian_unlinked",
        "student_teachers_set",
        "role_assigned",
        "role_revoked",
        "contact_preferences_set",
        "contact_point_reset",
        "contact_points_changed",
        "conversation_started",
        "message_posted",
        "conversation_stopped",
        "conversation_resumed",
        "conversation_renamed",
        "conversation_muted",
        "conversation_unmuted",
        "conversation_archived",
        "conversation_unarchived",
        "messages_read",
        "delivery_queued",
        "delivery_sent",
        "delivery_delivered",
        "delivery_failed",
        "delivery_attempt_failed",
        "contact_point_failing",
        "sender_number_assigned",
        "sms_number_bound",
        "sms_line_used",
        "sms_opted_out",
        "sms_opted_in",
        "inbound_sms_received",
        "inbound_sms_routed",
        "inbound_reply_refused",
    ];

    /// The stored name (`conversation_stopped`, …), written out rather than derived
    /// from the type name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::SchoolRegistered(_) => "school_registered",
            Event::RoleDefined(_) => "role_defined",
            Event::DistrictSettingsChanged(_) => "district_settings_changed",
            Event::SenderNumbersAdded(_) => "sender_numbers_added",
            Event::PersonRegistered(_) => "person_registered",
            Event::GuardianLinked(_) => "guardian_linked",
            Event::GuardianUnlinked(_) => "guardian_unlinked",
            Event::StudentTeachersSet(_) => "student_teachers_set",
            Event::RoleAssigned(_) => "role_assigned",
            Event::RoleRevoked(_) => "role_revoked",
            Event::ContactPreferencesSet(_) => "contact_preferences_set",
            Event::ContactPointReset(_) => "contact_point_reset",
            Event::ContactPointsChanged(_) => "contact_points_changed",
            Event::ConversationStarted(_) => "conversation_started",
            Event::MessagePosted(_) => "message_posted",
            Event::ConversationStopped(_) => "conversation_stopped",
            Event::ConversationResumed(_) => "conversation_resumed",
            Event::ConversationRenamed(_) => "conversation_renamed",
            Event::ConversationMuted(_) => "conversation_muted",
            Event::ConversationUnmuted(_) => "conversation_unmuted",
            Event::ConversationArchived(_) => "conversation_archived",
            Event::ConversationUnarchived(_) => "conversation_unarchived",
            Event::MessagesRead(_) => "messages_read",
            Event::DeliveryQueued(_) => "delivery_queued",
            Event::DeliverySent(_) => "delivery_sent",
            Event::DeliveryDelivered(_) => "delivery_delivered",
            Event::DeliveryFailed(_) => "delivery_failed",
            Event::DeliveryAttemptFailed(_) => "delivery_attempt_failed",
            Event::ContactPointFailing(_) => "contact_point_failing",
            Event::SenderNumberAssigned(_) => "sender_number_assigned",
            Event::SmsNumberBound(_) => "sms_number_bound",
            Event::SmsLineUsed(_) => "sms_line_used",
            Event::SmsOptedOut(_) => "sms_opted_out",
            Event::SmsOptedIn(_) => "sms_opted_in",
            Event::InboundSmsReceived(_) => "inbound_sms_received",
            Event::InboundSmsRouted(_) => "inbound_sms_routed",
            Event::InboundReplyRefused(_) => "inbound_reply_refused",
        }
    }
}

macro_rules! from_event {
    ($($name:ident),* $(,)?) => {
        $(
            impl From<$name> for Event {
                fn from(event: $name) -> Event {
                    Event::$name(event)
                }
            }
        )*
    };
}

from_event!(
    SchoolRegistered,
    RoleDefined,
    DistrictSettingsChanged,
    SenderNumbersAdded,
    PersonRegistered,
    GuardianLinked,
    GuardianUnlinked,
    StudentTeachersSet,
    RoleAssigned,
    RoleRevoked,
    ContactPreferencesSet,
    ContactPointReset,
    ContactPointsChanged,
    ConversationStarted,
    MessagePosted,
    ConversationStopped,
    ConversationResumed,
    ConversationRenamed,
    ConversationMuted,
    ConversationUnmuted,
    ConversationArchived,
    ConversationUnarchived,
    MessagesRead,
    DeliveryQueued,
    DeliverySent,
    DeliveryDelivered,
    DeliveryFailed,
    DeliveryAttemptFailed,
    ContactPointFailing,
    SenderNumberAssigned,
    SmsNumberBound,
    SmsLineUsed,
    SmsOptedOut,
    SmsOptedIn,
    InboundSmsReceived,
    InboundSmsRouted,
    InboundReplyRefused,
);

impl Event {
    /// The shape version of the stored data; every event is at version 1 today. A new
    /// shape bumps this for its event and adds an upcaster at the storage edge.
    pub fn schema_version(&self) -> u32 {
        1
    }

    /// When it happened.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Event::SchoolRegistered(e) => e.at,
            Event::RoleDefined(e) => e.at,
            Event::DistrictSettingsChanged(e) => e.at,
            Event::SenderNumbersAdded(e) => e.at,
            Event::PersonRegistered(e) => e.at,
            Event::GuardianLinked(e) => e.at,
            Event::GuardianUnlinked(e) => e.at,
            Event::StudentTeachersSet(e) => e.at,
            Event::RoleAssigned(e) => e.at,
            Event::RoleRevoked(e) => e.at,
            Event::ContactPreferencesSet(e) => e.at,
            Event::ContactPointReset(e) => e.at,
            Event::ContactPointsChanged(e) => e.at,
            Event::ConversationStarted(e) => e.at,
            Event::MessagePosted(e) => e.at,
            Event::ConversationStopped(e) => e.at,
            Event::ConversationResumed(e) => e.at,
            Event::ConversationRenamed(e) => e.at,
            Event::ConversationMuted(e) => e.at,
            Event::ConversationUnmuted(e) => e.at,
            Event::ConversationArchived(e) => e.at,
            Event::ConversationUnarchived(e) => e.at,
            Event::MessagesRead(e) => e.at,
            Event::DeliveryQueued(e) => e.at,
            Event::DeliverySent(e) => e.at,
            Event::DeliveryDelivered(e) => e.at,
            Event::DeliveryFailed(e) => e.at,
            Event::DeliveryAttemptFailed(e) => e.at,
            Event::ContactPointFailing(e) => e.at,
            Event::SenderNumberAssigned(e) => e.at,
            Event::SmsNumberBound(e) => e.at,
            Event::SmsLineUsed(e) => e.at,
            Event::SmsOptedOut(e) => e.at,
            Event::SmsOptedIn(e) => e.at,
            Event::InboundSmsReceived(e) => e.at,
            Event::InboundSmsRouted(e) => e.at,
            Event::InboundReplyRefused(e) => e.at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_are_unique_snake_case() {
        let mut names = Event::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Event::NAMES.len());
        for name in names {
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }
}
