//! Malformed values: the refusals that say "fix the request", whichever decider finds
//! them. They all answer with the API code `validation`.

use crate::ids::{IdError, MessageId, PersonId};
use crate::values::PersonKind;

/// A value in a command that can never be accepted as sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    /// An identifier, phone number or email address did not parse.
    #[error(transparent)]
    Id(#[from] IdError),
    /// A required text was empty (after trimming).
    #[error("{field} is empty")]
    Empty {
        /// The command field.
        field: &'static str,
    },
    /// A text holds a control character (other than a line break or a tab).
    #[error("{field} holds the control character U+{code:04X}")]
    ControlCharacter {
        /// The command field.
        field: &'static str,
        /// The character's code point.
        code: u32,
    },
    /// A text was longer than allowed.
    #[error("{field} is {got} characters long, at most {max} allowed")]
    TooLong {
        /// The command field.
        field: &'static str,
        /// The limit.
        max: usize,
        /// The length received.
        got: usize,
    },
    /// A list held more entries than allowed.
    #[error("{field} holds {got} entries, at most {max} allowed")]
    TooMany {
        /// The command field.
        field: &'static str,
        /// The limit.
        max: usize,
        /// The entries received.
        got: usize,
    },
    /// A number was outside its allowed range.
    #[error("{field} is {got}, allowed {min} to {max}")]
    OutOfRange {
        /// The command field.
        field: &'static str,
        /// The smallest allowed value.
        min: u32,
        /// The largest allowed value.
        max: u32,
        /// The value received.
        got: u32,
    },
    /// A `{field}` in a body or subject that Homeroom cannot fill, refused so that typos
    /// never reach families.
    #[error("unknown merge field {{{field}}}")]
    UnknownMergeField {
        /// The name between the braces.
        field: String,
    },
    /// A content-guard pattern that cannot be used.
    #[error("blocked pattern {pattern:?} is invalid: {reason}")]
    InvalidPattern {
        /// The pattern received.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A language tag that is not of the `en`, `es-MX` kind.
    #[error("{value:?} is not a language tag")]
    InvalidLanguage {
        /// The value received.
        value: String,
    },
    /// A conversation needs at least one participant besides its starter.
    #[error("a conversation needs at least one participant besides its starter")]
    NoParticipants,
    /// `MarkRead` named a message that is not in the conversation.
    #[error("message {message_id} is not part of this conversation")]
    UnknownMessage {
        /// The message named.
        message_id: MessageId,
    },
    /// A message id already used in this conversation.
    #[error("message {message_id} already exists in this conversation")]
    DuplicateMessageId {
        /// The message id.
        message_id: MessageId,
    },
    /// A person of the wrong kind for the command (e.g. a teacher who is not staff).
    #[error("person {person_id} is not a {expected:?}")]
    WrongKind {
        /// The person named.
        person_id: PersonId,
        /// The kind the command needs.
        expected: PersonKind,
    },
    /// A contact address the person does not have.
    #[error("the person has no contact point {address:?}")]
    UnknownAddress {
        /// The address named.
        address: String,
    },
    /// A phone number already used by a school or the sender pool.
    #[error("phone number {number} is already in use")]
    NumberInUse {
        /// The number.
        number: String,
    },
    /// A birth date after the day of the command.
    #[error("birth date lies in the future")]
    BirthDateInFuture,
    /// `from: school` outside a school conversation, or similar misuse of a field.
    #[error("{field} cannot be used here: {reason}")]
    NotApplicable {
        /// The command field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A command sent to the wrong kind of stream: a bug in the caller, not in the input.
    #[error("command {command} cannot be decided by a {state} stream")]
    WrongStream {
        /// The command's API name.
        command: &'static str,
        /// The kind of state it was sent to.
        state: &'static str,
    },
}

impl ValidationError {
    /// The API error code: `validation` for a malformed value; `already_exists` and
    /// `number_in_use` for a well-formed one that is taken.
    pub fn code(&self) -> &'static str {
        match self {
            // Well-formed, but taken: the same codes as the other "already there" refusals.
            ValidationError::DuplicateMessageId { .. } => "already_exists",
            ValidationError::NumberInUse { .. } => "number_in_use",
            _ => "validation",
        }
    }
}

/// Trims `value` and checks it holds 1 to `max` characters; names and titles use it.
///
/// # Errors
/// [`ValidationError::Empty`] or [`ValidationError::TooLong`].
pub fn required_text(
    field: &'static str,
    value: &str,
    max: usize,
) -> Result<String, ValidationError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    let got = trimmed.chars().count();
    if got > max {
        return Err(ValidationError::TooLong { field, max, got });
    }
    Ok(trimmed.to_owned())
}

/// Checks a language tag loosely (`en`, `es-MX`, `zh-Hant`): 2 to 35 characters of
/// letters, digits and dashes, starting with a letter; returns it trimmed.
///
/// # Errors
/// [`ValidationError::InvalidLanguage`] otherwise.
pub fn language(value: &str) -> Result<String, ValidationError> {
    let tag = value.trim();
    let ok = (2..=35).contains(&tag.len())
        && tag.starts_with(|c: char| c.is_ascii_alphabetic())
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(tag.to_owned())
    } else {
        Err(ValidationError::InvalidLanguage {
            value: value.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_text_is_trimmed_and_bounded() {
        assert_eq!(required_text("name", "  Ada ", 10), Ok("Ada".to_owned()));
        assert_eq!(
            required_text("name", "   ", 10),
            Err(ValidationError::Empty { field: "name" })
        );
        assert_eq!(
            required_text("name", "abcdef", 5),
            Err(ValidationError::TooLong {
                field: "name",
                max: 5,
                got: 6
            })
        );
    }

    #[test]
    fn language_tags_are_checked_loosely() {
        assert!(language("en").is_ok());
        assert!(language("es-MX").is_ok());
        assert!(language("e").is_err());
        assert!(language("en_US").is_err());
        assert!(language("12").is_err());
    }
}
