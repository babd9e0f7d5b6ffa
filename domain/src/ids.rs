//! Identifiers and contact addresses: newtypes with private fields, so a value that
//! exists has already passed its invariant.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why an identifier or an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The value was empty.
    #[error("{what} is empty")]
    Empty {
        /// Which kind of value.
        what: &'static str,
    },
    /// The value was longer than allowed.
    #[error("{what} is {got} characters long, at most {max} allowed")]
    TooLong {
        /// Which kind of value.
        what: &'static str,
        /// The limit.
        max: usize,
        /// The length received.
        got: usize,
    },
    /// The value held a character outside its alphabet.
    #[error("{what} may not contain {ch:?}")]
    InvalidChar {
        /// Which kind of value.
        what: &'static str,
        /// The first offending character.
        ch: char,
    },
    /// A value Homeroom keeps for its own use.
    #[error("{what} may not start with {prefix:?}: such names are reserved")]
    Reserved {
        /// Which kind of value.
        what: &'static str,
        /// The reserved prefix.
        prefix: &'static str,
    },
    /// Not an E.164 phone number.
    #[error("{value:?} is not a phone number in E.164 form (+ and 8 to 15 digits)")]
    InvalidPhone {
        /// The value received.
        value: String,
    },
    /// Not an email address.
    #[error("{value:?} is not an email address")]
    InvalidEmail {
        /// The value received.
        value: String,
    },
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps a UUID chosen by the caller (or derived deterministically).
            pub const fn new(id: Uuid) -> Self {
                Self(id)
            }

            /// The UUID inside, for storage and stream names.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

uuid_id!(
    /// A staff member, student or guardian, the same across every school of a district.
    PersonId
);
uuid_id!(
    /// A school of the district, chosen by the caller that registers it.
    SchoolId
);
uuid_id!(
    /// A conversation; personal ones get a deterministic id ([`personal_conversation_id`]).
    ConversationId
);
uuid_id!(
    /// A message; chosen by the caller or derived from the command id, so retries converge.
    MessageId
);
uuid_id!(
    /// One message to one recipient on one channel ([`delivery_id_for`]).
    DeliveryId
);

/// The namespaces of the deterministic (UUID v5) ids, one per purpose so that two kinds
/// of derived ids can never collide. Message and delivery ids then keep their source's
/// time ([`keeps_time_of`]).
pub mod namespace {
    use uuid::Uuid;

    /// Personal conversations: v5 over the sender's then the recipient's UUID bytes.
    pub const PERSONAL_CONVERSATION: Uuid =
        Uuid::from_u128(0x8f3b_6a52_1d4e_4c1f_9b7a_2e5d_0c11_a001);
    /// Messages without a caller-chosen id: v5 over the command id's bytes (timed as
    /// the command id is).
    pub const MESSAGE: Uuid = Uuid::from_u128(0x8f3b_6a52_1d4e_4c1f_9b7a_2e5d_0c11_a002);
    /// Deliveries: v5 over the conversation's, the message's and the recipient's UUID
    /// bytes (timed as the message id is; logs from before hold v5 over the last two).
    pub const DELIVERY: Uuid = Uuid::from_u128(0x8f3b_6a52_1d4e_4c1f_9b7a_2e5d_0c11_a003);
    /// Fallback deliveries: v5 over the failed delivery's UUID bytes.
    pub const FALLBACK_DELIVERY: Uuid = Uuid::from_u128(0x8f3b_6a52_1d4e_4c1f_9b7a_2e5d_0c11_a004);
    /// Messages made of inbound SMS: v5 over the provider's message id.
    pub const INBOUND_MESSAGE: Uuid = Uuid::from_u128(0x8f3b_6a52_1d4e_4c1f_9b7a_2e5d_0c11_a005);
}

fn v5_pair(namespace: &Uuid, a: Uuid, b: Uuid) -> Uuid {
    let mut name = [0u8; 32];
    name[..16].copy_from_slice(a.as_bytes());
    name[16..].copy_from_slice(b.as_bytes());
    Uuid::new_v5(namespace, &name)
}

/// The one personal conversation of `sender` with `recipient`, so a second
/// `SendPersonalMessage` continues it instead of starting another.
pub fn personal_conversation_id(sender: PersonId, recipient: PersonId) -> ConversationId {
    ConversationId(v5_pair(
        &namespace::PERSONAL_CONVERSATION,
        sender.0,
        recipient.0,
    ))
}

/// The message id of a command that did not choose one, so a retried command (same
/// command id) names the same message. It keeps the command id's time
/// ([`keeps_time_of`]).
pub fn message_id_for_command(command_id: Uuid) -> MessageId {
    MessageId(keeps_time_of(
        command_id,
        Uuid::new_v5(&namespace::MESSAGE, command_id.as_bytes()),
    ))
}

/// The delivery of `message` of `conversation` to `recipient`, so replays and retries
/// converge on one delivery. The conversation is part of it because message ids are
/// the caller's and only unique within their conversation: the same id posted in two
/// conversations is two messages with deliveries of their own. It keeps the message
/// id's time ([`keeps_time_of`]). (Logs from before the conversation was part of it
/// keep the ids their events recorded: a delivery id is always read from the log,
/// never derived again.)
pub fn delivery_id_for(
    conversation: ConversationId,
    message: MessageId,
    recipient: PersonId,
) -> DeliveryId {
    let mut name = [0u8; 48];
    name[..16].copy_from_slice(conversation.0.as_bytes());
    name[16..32].copy_from_slice(message.0.as_bytes());
    name[32..].copy_from_slice(recipient.0.as_bytes());
    DeliveryId(keeps_time_of(
        message.0,
        Uuid::new_v5(&namespace::DELIVERY, &name),
    ))
}

/// Derived ids keep the time of what they derive from: when `source` carries a time (a
/// UUID v7, or an id derived by this rule), `derived` takes its 48-bit millisecond
/// timestamp in front of 74 of its own hashed bits and becomes a UUID v8; otherwise it
/// stays the v5 it is. Ids made one after another then sort one after another, so every
/// index keyed by them (the read models', the stores') grows at its end instead of at
/// random pages, which is what kept a replay of a million messages writing most of
/// those indexes again with every batch. Deterministic as before: the same source
/// always gives the same id.
pub fn keeps_time_of(source: Uuid, derived: Uuid) -> Uuid {
    let timed = matches!(
        source.get_version(),
        Some(uuid::Version::SortRand | uuid::Version::Custom)
    );
    if !timed {
        return derived;
    }
    let mut bytes = *derived.as_bytes();
    bytes[..6].copy_from_slice(&source.as_bytes()[..6]);
    Uuid::new_v8(bytes)
}

/// The delivery that carries a message by the other channel when `failed` did not
/// arrive, so the process manager that reacts to the failure converges on one.
pub fn fallback_delivery_id(failed: DeliveryId) -> DeliveryId {
    DeliveryId(Uuid::new_v5(
        &namespace::FALLBACK_DELIVERY,
        failed.0.as_bytes(),
    ))
}

/// The message an inbound SMS becomes, so the provider's retries of one webhook post
/// one message.
pub fn inbound_message_id(sms: &ProviderMessageId) -> MessageId {
    MessageId(Uuid::new_v5(
        &namespace::INBOUND_MESSAGE,
        sms.as_str().as_bytes(),
    ))
}

fn check_chars(
    what: &'static str,
    value: &str,
    allowed: impl Fn(char) -> bool,
) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    let len = value.chars().count();
    if len > 64 {
        return Err(IdError::TooLong {
            what,
            max: 64,
            got: len,
        });
    }
    match value.chars().find(|c| !allowed(*c)) {
        Some(ch) => Err(IdError::InvalidChar { what, ch }),
        None => Ok(()),
    }
}

macro_rules! string_value {
    ($name:ident) => {
        impl $name {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    };
}

/// The tenant: every stream name and token carries it, so districts never mix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DistrictId(String);

impl DistrictId {
    /// The name of [`DistrictId::unrouted`].
    pub const UNROUTED: &'static str = "_unrouted";

    /// Accepts 1 to 64 characters of `[A-Za-z0-9_-]`, safe inside stream names and bus
    /// subjects, not starting with `_` (kept for Homeroom's own use).
    ///
    /// # Errors
    /// [`IdError`] when empty, too long, holding another character or reserved.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        check_chars("district id", value, |c| {
            c.is_ascii_alphanumeric() || c == '_' || c == '-'
        })?;
        if value.starts_with('_') {
            return Err(IdError::Reserved {
                what: "district id",
                prefix: "_",
            });
        }
        Ok(Self(value.to_owned()))
    }

    /// Where what reaches Homeroom without a district is recorded (an SMS to a number no
    /// district owns), so it is never lost.
    pub fn unrouted() -> Self {
        Self(Self::UNROUTED.to_owned())
    }
}
string_value!(DistrictId);

/// A role, built-in (`school_admin`, …) or defined by the district.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(try_from = "String", into = "String")]
pub struct RoleId(String);

impl RoleId {
    /// Accepts 1 to 64 characters of `[a-z0-9_-]`, so ids read the same in CSV files and URLs.
    ///
    /// # Errors
    /// [`IdError`] when empty, too long or holding another character.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        check_chars("role id", value, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
        })?;
        Ok(Self(value.to_owned()))
    }
}
string_value!(RoleId);

/// A phone number in E.164 form (`+` then 8 to 15 digits), the only form SMS providers
/// and inbound routing compare reliably.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Normalises `value` (drops spaces, dashes, dots and parentheses) and checks E.164.
    ///
    /// # Errors
    /// [`IdError::InvalidPhone`] when the result is not `+` and 8 to 15 digits.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let compact: String = value
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
            .collect();
        let invalid = || IdError::InvalidPhone {
            value: value.to_owned(),
        };
        let digits = compact.strip_prefix('+').ok_or_else(invalid)?;
        if !(8..=15).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(invalid());
        }
        Ok(Self(compact))
    }
}
string_value!(PhoneNumber);

/// A provider's id of one message (Twilio's `MessageSid`): 1 to 64 characters of
/// `[A-Za-z0-9_-]`, so it can name a stream.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(try_from = "String", into = "String")]
pub struct ProviderMessageId(String);

impl ProviderMessageId {
    /// Checks the characters.
    ///
    /// # Errors
    /// [`IdError`] when empty, too long or holding another character.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        check_chars("provider message id", value, |c| {
            c.is_ascii_alphanumeric() || c == '_' || c == '-'
        })?;
        Ok(Self(value.to_owned()))
    }
}
string_value!(ProviderMessageId);

/// An email address, checked only as far as needed to catch typos; the mail server has
/// the final word (a bounce marks the contact point failing).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Accepts `local@domain.tld`: one `@`, a non-empty local part, a domain holding a
    /// dot (not at either end), no whitespace, at most 254 characters. Surrounding
    /// whitespace is trimmed.
    ///
    /// # Errors
    /// [`IdError::InvalidEmail`] otherwise.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let trimmed = value.trim();
        let invalid = || IdError::InvalidEmail {
            value: value.to_owned(),
        };
        if trimmed.chars().count() > 254 || trimmed.chars().any(char::is_whitespace) {
            return Err(invalid());
        }
        let (local, domain) = trimmed.split_once('@').ok_or_else(invalid)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@');
        if local.is_empty() || !domain_ok {
            return Err(invalid());
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// Whether two addresses reach the same mailbox as far as Homeroom can tell
    /// (case-insensitive).
    pub fn same_as(&self, other: &EmailAddress) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}
string_value!(EmailAddress);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn district_ids_are_short_and_safe_in_stream_names() {
        assert!(DistrictId::parse("north-valley_1").is_ok());
        assert_eq!(
            DistrictId::parse(""),
            Err(IdError::Empty {
                what: "district id"
            })
        );
        assert!(matches!(
            DistrictId::parse("a:b"),
            Err(IdError::InvalidChar { ch: ':', .. })
        ));
        assert!(matches!(
            DistrictId::parse(&"x".repeat(65)),
            Err(IdError::TooLong { got: 65, .. })
        ));
    }

    #[test]
    fn role_ids_are_lowercase() {
        assert!(RoleId::parse("school_admin").is_ok());
        assert!(RoleId::parse("School").is_err());
    }

    #[test]
    fn phone_numbers_are_normalised_to_e164() {
        let phone = PhoneNumber::parse("+1 (555) 010-2030").unwrap();
        assert_eq!(phone.as_str(), "+15550102030");
        assert!(PhoneNumber::parse("5550102030").is_err());
        assert!(PhoneNumber::parse("+1234567").is_err());
        assert!(PhoneNumber::parse("+1234567890123456").is_err());
        assert!(PhoneNumber::parse("+1555abc2030").is_err());
    }

    #[test]
    fn email_addresses_need_a_local_part_and_a_dotted_domain() {
        assert!(EmailAddress::parse("pat@example.org").is_ok());
        assert!(EmailAddress::parse("pat@example").is_err());
        assert!(EmailAddress::parse("@example.org").is_err());
        assert!(EmailAddress::parse("pat@@example.org").is_err());
        assert!(EmailAddress::parse("p at@example.org").is_err());
        assert!(EmailAddress::parse(&format!("{}@example.org", "a".repeat(250))).is_err());
        let a = EmailAddress::parse("Pat@Example.org").unwrap();
        assert!(a.same_as(&EmailAddress::parse("pat@example.org").unwrap()));
    }

    #[test]
    fn derived_ids_are_deterministic_and_ordered() {
        let a = PersonId::new(Uuid::from_u128(1));
        let b = PersonId::new(Uuid::from_u128(2));
        assert_eq!(
            personal_conversation_id(a, b),
            personal_conversation_id(a, b)
        );
        assert_ne!(
            personal_conversation_id(a, b),
            personal_conversation_id(b, a)
        );
        let m = message_id_for_command(Uuid::from_u128(9));
        assert_eq!(m, message_id_for_command(Uuid::from_u128(9)));
        let (c, other) = (
            ConversationId::new(Uuid::from_u128(3)),
            ConversationId::new(Uuid::from_u128(4)),
        );
        assert_ne!(delivery_id_for(c, m, a), delivery_id_for(c, m, b));
        assert_ne!(
            delivery_id_for(c, m, a),
            delivery_id_for(other, m, a),
            "the same message id in another conversation is another message"
        );
    }

    #[test]
    fn derived_ids_keep_the_time_of_a_timed_source_and_sort_by_it() {
        let (a, b) = (
            PersonId::new(Uuid::from_u128(1)),
            PersonId::new(Uuid::from_u128(2)),
        );
        let earlier = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_700_000_000,
            0,
        ));
        let later = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_700_000_001,
            0,
        ));
        let (m1, m2) = (
            message_id_for_command(earlier),
            message_id_for_command(later),
        );
        assert_eq!(m1, message_id_for_command(earlier), "still deterministic");
        assert_eq!(m1.as_uuid().get_version(), Some(uuid::Version::Custom));
        assert_eq!(m1.as_uuid().as_bytes()[..6], earlier.as_bytes()[..6]);
        assert!(
            m1.as_uuid() < m2.as_uuid(),
            "a later command's message sorts later"
        );
        // Deliveries carry the message's time on, and differ by recipient.
        let c = ConversationId::new(Uuid::from_u128(3));
        let (d1, d2) = (delivery_id_for(c, m1, a), delivery_id_for(c, m1, b));
        assert_ne!(d1, d2);
        assert_eq!(d1.as_uuid().as_bytes()[..6], earlier.as_bytes()[..6]);
        assert!(d2.as_uuid() < delivery_id_for(c, m2, a).as_uuid());
        // The hashed part still depends on the whole source, not only its time.
        let twin = Uuid::from_bytes({
            let mut bytes = *earlier.as_bytes();
            bytes[15] ^= 1;
            bytes
        });
        assert_ne!(message_id_for_command(twin), m1);
    }

    #[test]
    fn derived_ids_of_an_untimed_source_stay_v5() {
        let m = message_id_for_command(Uuid::from_u128(9));
        assert_eq!(m.as_uuid().get_version(), Some(uuid::Version::Sha1));
        let d = delivery_id_for(
            ConversationId::new(Uuid::from_u128(3)),
            m,
            PersonId::new(Uuid::from_u128(1)),
        );
        assert_eq!(d.as_uuid().get_version(), Some(uuid::Version::Sha1));
    }
}
