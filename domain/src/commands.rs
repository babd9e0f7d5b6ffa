//! Commands: what upstream apps ask Homeroom to do, one struct per API command, named
//! and shaped exactly as in API.md. Values are checked by the deciders, so a malformed
//! phone number or an empty body comes back as a `validation` refusal with details.

use chrono::NaiveDate;
use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::{
    ConversationId, DeliveryId, DistrictId, MessageId, PersonId, PhoneNumber, ProviderMessageId,
    RoleId, SchoolId,
};
use crate::inbound::InboundRoute;
use crate::permissions::PermissionSet;
use crate::values::NumberOwner;

/// The value types command fields use, re-exported so callers find them beside the
/// commands.
pub use crate::plan::{DeliverySender, PlannedDelivery};
pub use crate::values::{Channel, ContactChannel, ContactPoint, OutcomeStatus, PersonKind, SendAs};

/// Registers a school of the district, with its shared SMS number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterSchool {
    /// Chosen by the caller.
    pub school_id: SchoolId,
    /// The school's name, shown as the sender of school messages.
    pub name: String,
    /// The school's own number (E.164 after normalising).
    #[serde(default)]
    pub sms_number: Option<String>,
}

/// Registers a staff member, student or guardian (usually from the SIS sync).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterPerson {
    /// Chosen by the caller.
    pub person_id: PersonId,
    /// Staff, student or guardian.
    pub kind: PersonKind,
    /// Full name, used in merge fields and as the sender's name.
    pub name: String,
    /// The schools the person belongs to.
    pub school_ids: Vec<SchoolId>,
    /// Students' birth dates decide who may get personal messages.
    #[serde(default)]
    pub birth_date: Option<NaiveDate>,
    /// Added by hand rather than by the SIS (still messageable).
    #[serde(default)]
    pub manually_added: Option<bool>,
    /// Preferred language (default `en`).
    #[serde(default)]
    pub language: Option<String>,
    /// Preferred channel.
    #[serde(default)]
    pub preferred_channel: Option<Channel>,
    /// Phone numbers and email addresses.
    #[serde(default)]
    pub contact_points: Option<Vec<ContactPoint>>,
}

/// Links a guardian to a student (recorded on the guardian's stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct LinkGuardian {
    /// The guardian.
    pub guardian_id: PersonId,
    /// The student.
    pub student_id: PersonId,
}

/// Ends a guardian's link to a student (a custody change in the SIS): from now on the
/// guardian is not reached through that student, and the student's record keeps only
/// what was written while they were linked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct UnlinkGuardian {
    /// The guardian.
    pub guardian_id: PersonId,
    /// The student.
    pub student_id: PersonId,
}

/// Replaces a student's current teachers (the teacher rule depends on them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SetStudentTeachers {
    /// The student.
    pub student_id: PersonId,
    /// Every current teacher (staff).
    pub teacher_ids: Vec<PersonId>,
}

/// Defines (or redefines) a custom role with any subset of permissions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DefineRole {
    /// Not a built-in id.
    pub role_id: RoleId,
    /// A name for admin screens.
    pub name: String,
    /// What the role grants.
    pub permissions: PermissionSet,
}

/// Gives a person a role at one school, or district-wide without `school_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AssignRole {
    /// The staff member.
    pub person_id: PersonId,
    /// A built-in or defined role.
    pub role_id: RoleId,
    /// Where it applies; `None` = district-wide.
    #[serde(default)]
    pub school_id: Option<SchoolId>,
}

/// Takes back a role assignment (the same triple as `AssignRole`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeRole {
    /// The staff member.
    pub person_id: PersonId,
    /// The role.
    pub role_id: RoleId,
    /// Where it applied; `None` = the district-wide assignment.
    #[serde(default)]
    pub school_id: Option<SchoolId>,
}

/// Changes district settings; absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ChangeDistrictSettings {
    /// Whether students may be conversation participants.
    #[serde(default)]
    pub students_in_conversations: Option<bool>,
    /// Most participants in a conversation, starter included (2 to 100).
    #[serde(default)]
    pub max_participants: Option<u16>,
    /// Channel used when a recipient has both SMS and email and no preference.
    #[serde(default)]
    pub default_channel: Option<ContactChannel>,
    /// Content-guard patterns (see `BlockedPattern`); replaces the whole list.
    #[serde(default)]
    pub blocked_patterns: Option<Vec<String>>,
}

/// Sets a person's preferred channel and/or language; absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SetContactPreferences {
    /// The person.
    pub person_id: PersonId,
    /// New preferred channel.
    #[serde(default)]
    pub preferred_channel: Option<Channel>,
    /// New language.
    #[serde(default)]
    pub language: Option<String>,
    /// Every phone number and email address the person has now, replacing the ones
    /// recorded (a family changed phones); an address kept keeps its failing mark.
    #[serde(default)]
    pub contact_points: Option<Vec<ContactPoint>>,
}

/// Clears the failing mark of a contact point, so messages use it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ResetContactPoint {
    /// The person.
    pub person_id: PersonId,
    /// The phone number or email address.
    pub address: String,
}

/// Adds numbers to the district's pool of personal SMS sender numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AddSenderNumbers {
    /// E.164 numbers (normalised on the way in).
    pub numbers: Vec<String>,
}

/// A 1:1 message from the actor's own identity, continuing (or starting) their personal
/// conversation with the recipient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SendPersonalMessage {
    /// A student aged 13+ or a guardian tied to a school where the actor holds
    /// `personal_messages`.
    pub recipient_id: PersonId,
    /// The text, with merge fields.
    pub body: String,
    /// Optional subject (email).
    #[serde(default)]
    pub subject: Option<String>,
    /// The sender's pick of channel.
    #[serde(default)]
    pub channel: Option<Channel>,
    /// Chosen by the caller, else derived from the command id.
    #[serde(default)]
    pub message_id: Option<MessageId>,
}

/// Starts a group or school conversation with a first message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct StartConversation {
    /// Chosen by the caller.
    pub conversation_id: ConversationId,
    /// The school it belongs to.
    pub school_id: SchoolId,
    /// Everyone but the starter.
    pub participant_ids: Vec<PersonId>,
    /// The first message.
    pub body: String,
    /// Optional title.
    #[serde(default)]
    pub title: Option<String>,
    /// `school` to send from the school's identity (needs `school_inbox`).
    #[serde(default)]
    pub from: Option<SendAs>,
    /// The sender's pick of channel for the first message.
    #[serde(default)]
    pub channel: Option<Channel>,
}

/// Posts a message (or a reply) in an existing conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Chosen by the caller.
    pub message_id: MessageId,
    /// The text, with merge fields.
    pub body: String,
    /// `school` to post from the school (school conversations only).
    #[serde(default)]
    pub from: Option<SendAs>,
}

macro_rules! conversation_command {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// The conversation.
            pub conversation_id: ConversationId,
        }
    };
}

conversation_command!(
    /// Stops a conversation: it stays readable, no new message is accepted.
    StopConversation
);
conversation_command!(
    /// Stops notifications of a conversation for the actor.
    MuteConversation
);
conversation_command!(
    /// Turns notifications back on for the actor.
    UnmuteConversation
);
conversation_command!(
    /// Moves a conversation out of the actor's inbox.
    ArchiveConversation
);
conversation_command!(
    /// Brings an archived conversation back into the actor's inbox.
    UnarchiveConversation
);

/// Changes a conversation's title for everyone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RenameConversation {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// 1 to 200 characters.
    pub title: String,
}

/// Moves the actor's read position forward (read receipts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The last message read.
    pub up_to_message_id: MessageId,
}

/// What a delivery worker learnt about one delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RecordDeliveryOutcome {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// Sent, delivered or failed.
    pub status: OutcomeStatus,
    /// The provider's id of the message (e.g. Twilio's `MessageSid`).
    #[serde(default)]
    pub provider_message_id: Option<String>,
    /// The provider's error, for failures.
    #[serde(default)]
    pub error: Option<String>,
    /// Whether a failure is permanent (e.g. an email bounce).
    #[serde(default)]
    pub permanent: Option<bool>,
    /// With `sent`: the address it went out from (an SMS number, an email address).
    #[serde(default)]
    pub sender: Option<String>,
    /// With `sent`: the text exactly as handed to the provider.
    #[serde(default)]
    pub sent_text: Option<String>,
    /// With `sent`: the language `sent_text` was machine-translated to, if it was.
    #[serde(default)]
    pub translated_to: Option<String>,
}

/// Internal (not in the HTTP API): creates one delivery from a message's plan; issued by
/// the process manager that reacts to `MessagePosted` (and, with `fallback_of`, by the
/// one that reacts to a failed delivery).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueDelivery {
    /// The planned delivery, as recorded in `MessagePosted`.
    pub delivery: PlannedDelivery,
    /// The message it delivers.
    pub message_id: MessageId,
    /// The message's conversation.
    pub conversation_id: ConversationId,
    /// The failed delivery this one replaces on the other channel.
    #[serde(default)]
    pub fallback_of: Option<DeliveryId>,
    /// Who it goes out as.
    #[serde(default)]
    pub sender: Option<DeliverySender>,
}

/// Internal: a delivery worker's attempt failed in a way worth retrying (the provider
/// was unreachable or asked to try later). After the last allowed attempt the delivery
/// fails for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordFailedAttempt {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// The attempt that failed (the delivery's current one).
    pub attempt: u32,
    /// What went wrong.
    pub error: String,
    /// The provider never answered, so it may have taken the message: the next attempt
    /// reuses this one's idempotency key.
    #[serde(default)]
    pub unanswered: bool,
}

/// Internal: a delivery to this address failed for good; mark it failing so later
/// messages use the person's other channel until `ResetContactPoint`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkContactPointFailing {
    /// The person.
    pub person_id: PersonId,
    /// The phone number or email address.
    pub address: String,
    /// The delivery whose failure showed it.
    pub delivery_id: DeliveryId,
}

/// Internal: gives a staff member their own SMS number from the district's pool (at
/// their first personal SMS). Repeating it answers the number already given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignSenderNumber {
    /// The staff member.
    pub person_id: PersonId,
}

/// Internal: binds an SMS number to the district and identity sending from it, so
/// inbound SMS to it find their way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindSmsNumber {
    /// The number.
    pub number: PhoneNumber,
    /// The district sending from it.
    pub district: DistrictId,
    /// The school or person it belongs to.
    pub owner: NumberOwner,
}

/// Internal: an SMS for a conversation went from one of the district's numbers to a
/// family number (recorded by the process manager that reacts to a sent SMS delivery).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSmsSent {
    /// The district's number.
    pub our_number: PhoneNumber,
    /// The recipient's number.
    pub their_number: PhoneNumber,
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The person it was for.
    pub recipient_id: PersonId,
    /// The delivery that sent it.
    pub delivery_id: DeliveryId,
}

/// Internal: a family number answered STOP (`opted_out: true`) or START.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSmsOptOut {
    /// The district's number it wrote to.
    pub our_number: PhoneNumber,
    /// The family number.
    pub their_number: PhoneNumber,
    /// STOP (true) or START (false).
    pub opted_out: bool,
    /// The inbound SMS that said so.
    pub message_sid: ProviderMessageId,
}

/// Internal: records an inbound SMS exactly as the provider sent it, before anything
/// is decided about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveSms {
    /// The provider's id of the SMS.
    pub message_sid: ProviderMessageId,
    /// The sender's number, as given.
    pub from: String,
    /// The number it was sent to, as given.
    pub to: String,
    /// The text.
    pub body: String,
    /// The pictures or files sent with it (the provider's URLs, e.g. Twilio's
    /// `MediaUrl0`…), in order.
    #[serde(default)]
    pub media_urls: Vec<String>,
}

/// Internal: records where an inbound SMS went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteInboundSms {
    /// The provider's id of the SMS.
    pub message_sid: ProviderMessageId,
    /// Its route.
    pub route: InboundRoute,
}

/// Internal: an SMS reply from a family member in a conversation they received SMS
/// for. Posted as their message when the conversation is open; kept and refused when
/// it was stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveReply {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Who replied (the person the conversation's SMS went to on that number).
    pub author_id: PersonId,
    /// The provider's id of the SMS (the message id derives from it).
    pub message_sid: ProviderMessageId,
    /// The text.
    pub body: String,
    /// The number it came from: other participants with that number too are recorded
    /// beside the author (`MessagePosted::shared_phone_with`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_number: Option<PhoneNumber>,
}

macro_rules! commands {
    (api: $($name:ident => $api:literal),* $(,)?; internal: $($inner:ident),* $(,)?) => {
        /// Every command the domain decides, one variant per command struct. Serialises
        /// as `{"Name": {body}}`, the canonical form a command's digest is taken over.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        pub enum Command {
            $(
                #[doc = concat!("`", stringify!($name), "`.")]
                $name($name),
            )*
            $(
                #[doc = concat!("`", stringify!($inner), "` (internal, not in the HTTP API).")]
                $inner($inner),
            )*
        }

        impl Command {
            /// The command names served at `POST /v1/commands/{CommandName}`.
            pub const API_NAMES: &'static [&'static str] = &[$($api),*];

            /// The commands Homeroom's own process managers and workers issue, never
            /// accepted over the API.
            pub const INTERNAL_NAMES: &'static [&'static str] = &[$(stringify!($inner)),*];

            /// The name of the command (`"RegisterSchool"`, …, and the internal ones').
            pub fn name(&self) -> &'static str {
                match self {
                    $(Command::$name(_) => $api,)*
                    $(Command::$inner(_) => stringify!($inner),)*
                }
            }

            /// Reads the body of `POST /v1/commands/{name}`: `Ok(None)` when `name` is
            /// not an API command, so the caller can answer 404 rather than 400.
            ///
            /// # Errors
            /// The deserializer's error when the body does not fit the command.
            pub fn deserialize_named<'de, D: Deserializer<'de>>(
                name: &str,
                body: D,
            ) -> Result<Option<Command>, D::Error> {
                Ok(Some(match name {
                    $($api => Command::$name($name::deserialize(body)?),)*
                    _ => return Ok(None),
                }))
            }
        }

        $(
            impl From<$name> for Command {
                fn from(cmd: $name) -> Command {
                    Command::$name(cmd)
                }
            }
        )*
        $(
            impl From<$inner> for Command {
                fn from(cmd: $inner) -> Command {
                    Command::$inner(cmd)
                }
            }
        )*
    };
}

commands! {
    api:
    RegisterSchool => "RegisterSchool",
    RegisterPerson => "RegisterPerson",
    LinkGuardian => "LinkGuardian",
    UnlinkGuardian => "UnlinkGuardian",
    SetStudentTeachers => "SetStudentTeachers",
    DefineRole => "DefineRole",
    AssignRole => "AssignRole",
    RevokeRole => "RevokeRole",
    ChangeDistrictSettings => "ChangeDistrictSettings",
    SetContactPreferences => "SetContactPreferences",
    ResetContactPoint => "ResetContactPoint",
    AddSenderNumbers => "AddSenderNumbers",
    SendPersonalMessage => "SendPersonalMessage",
    StartConversation => "StartConversation",
    PostMessage => "PostMessage",
    StopConversation => "StopConversation",
    RenameConversation => "RenameConversation",
    MuteConversation => "MuteConversation",
    UnmuteConversation => "UnmuteConversation",
    ArchiveConversation => "ArchiveConversation",
    UnarchiveConversation => "UnarchiveConversation",
    MarkRead => "MarkRead",
    RecordDeliveryOutcome => "RecordDeliveryOutcome";
    internal:
    QueueDelivery,
    RecordFailedAttempt,
    MarkContactPointFailing,
    AssignSenderNumber,
    BindSmsNumber,
    RecordSmsSent,
    SetSmsOptOut,
    ReceiveSms,
    RouteInboundSms,
    ReceiveReply,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_can_never_be_edited_or_deleted() {
        for name in Command::API_NAMES {
            assert!(
                !name.contains("Edit") && !name.contains("Delete") && !name.contains("Update"),
                "{name} would change a sent message"
            );
        }
        // API.md's 22, and `UnlinkGuardian` (custody changes).
        assert_eq!(Command::API_NAMES.len(), 23);
        for internal in Command::INTERNAL_NAMES {
            assert!(!Command::API_NAMES.contains(internal), "{internal}");
        }
    }

    #[test]
    fn names_are_the_api_names() {
        let cmd = Command::from(StopConversation {
            conversation_id: ConversationId::new(uuid::Uuid::nil()),
        });
        assert_eq!(cmd.name(), "StopConversation");
    }
}
