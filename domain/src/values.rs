//! Small enums and value types shared by commands, events and deciders.

use serde::{Deserialize, Serialize};

/// What a person is to the district; most rules depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PersonKind {
    /// Teachers, administrators, office staff.
    Staff,
    /// A student (has a birth date; under-13s get no personal messages).
    Student,
    /// A family contact linked to one or more students.
    Guardian,
}

impl PersonKind {
    /// Students and guardians: the people who may only start conversations with the
    /// student's current teachers.
    pub fn is_family(self) -> bool {
        !matches!(self, PersonKind::Staff)
    }
}

/// How one message reaches one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A text message to a phone number.
    Sms,
    /// An email.
    Email,
    /// In-app only (push / live stream); needs no contact point.
    App,
}

/// The channels a contact point (an address outside Homeroom) can have.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ContactChannel {
    /// A mobile phone number.
    #[default]
    Sms,
    /// An email address.
    Email,
}

impl From<ContactChannel> for Channel {
    fn from(channel: ContactChannel) -> Channel {
        match channel {
            ContactChannel::Sms => Channel::Sms,
            ContactChannel::Email => Channel::Email,
        }
    }
}

/// A phone number or email address of a person, as sent in `RegisterPerson`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ContactPoint {
    /// SMS or email.
    pub channel: ContactChannel,
    /// The phone number (E.164 once recorded) or email address.
    pub address: String,
}

/// Whose identity a message goes out under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum SendAs {
    /// The author's own name, signature and personal number.
    #[default]
    Personal,
    /// The school's shared identity and number (needs `school_inbox`).
    School,
}

/// What a delivery worker reports about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// Handed to the provider.
    Sent,
    /// The provider confirmed it arrived.
    Delivered,
    /// It did not arrive.
    Failed,
}

/// The three kinds of conversation, which differ in who may post and who is notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// 1:1 from a staff member's own identity (`SendPersonalMessage`).
    Personal,
    /// From the school's shared identity; every `school_inbox` holder of the school sees it.
    School,
    /// A group conversation of up to `max_participants` people.
    Group,
}

/// Who sends from an SMS number: a school's shared identity, one staff member's own, or
/// nobody yet (a pool number, bound when added so no other district can take it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum NumberOwner {
    /// The school's shared number.
    School(crate::ids::SchoolId),
    /// A staff member's personal number from the district's pool.
    Person(crate::ids::PersonId),
    /// A number of the district's pool not given to anyone yet.
    Pool,
}
