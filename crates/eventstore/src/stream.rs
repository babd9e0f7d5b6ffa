//! Stream identity and the optimistic-concurrency expectation of an append.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The name of one stream, e.g. `conversation-d1:0190c1f6-…`.
///
/// The category is the part before the first `-`; it groups streams of one kind of
/// aggregate (conversation, person, district, delivery) for the bus and for filters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

/// Why a text is not a stream id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    /// Stream ids are never empty.
    #[error("a stream id cannot be empty")]
    Empty,
    /// Long names waste index space and hint at a bug.
    #[error("a stream id is at most {max} bytes, got {len}")]
    TooLong {
        /// The length that was given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Control characters and whitespace would make logs and subjects ambiguous.
    #[error("a stream id may not contain whitespace or control characters")]
    BadCharacter,
}

impl StreamId {
    /// The longest stream id any backend must store.
    pub const MAX_LEN: usize = 200;

    /// Checks that `name` can name a stream on every backend.
    ///
    /// # Errors
    /// [`StreamIdError`] when the name is empty, too long, or holds whitespace.
    pub fn parse(name: impl Into<String>) -> Result<Self, StreamIdError> {
        let name = name.into();
        if name.is_empty() {
            return Err(StreamIdError::Empty);
        }
        if name.len() > Self::MAX_LEN {
            return Err(StreamIdError::TooLong {
                len: name.len(),
                max: Self::MAX_LEN,
            });
        }
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(StreamIdError::BadCharacter);
        }
        Ok(Self(name))
    }

    /// The stream's name as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The category: the part before the first `-` (the whole name if there is none).
    pub fn category(&self) -> &str {
        self.0.split('-').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for StreamId {
    type Error = StreamIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<StreamId> for String {
    fn from(value: StreamId) -> Self {
        value.0
    }
}

/// What the writer believes about the stream it appends to.
///
/// Versions count events in a stream: the first event has version 1, so a stream that
/// does not exist is at version 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the stream holds.
    Any,
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream's last event must have exactly this version.
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` satisfies this expectation.
    pub fn admits(self, actual: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == 0,
            Self::Exact(v) => v == actual,
        }
    }

    /// The expectation for a stream the writer saw at `version` (0 means no stream).
    pub fn from_version(version: u64) -> Self {
        if version == 0 {
            Self::NoStream
        } else {
            Self::Exact(version)
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(v) => write!(f, "version {v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_is_the_part_before_the_first_dash() {
        let id = StreamId::parse("conversation-d1:0190-abcd").unwrap();
        assert_eq!(id.category(), "conversation");
    }

    #[test]
    fn whitespace_and_empty_names_are_refused() {
        assert_eq!(StreamId::parse(""), Err(StreamIdError::Empty));
        assert_eq!(StreamId::parse("a b"), Err(StreamIdError::BadCharacter));
        assert!(matches!(
            StreamId::parse("x".repeat(201)),
            Err(StreamIdError::TooLong { .. })
        ));
    }

    #[test]
    fn expectations_admit_only_their_versions() {
        assert!(ExpectedVersion::Any.admits(7));
        assert!(ExpectedVersion::NoStream.admits(0));
        assert!(!ExpectedVersion::NoStream.admits(1));
        assert!(ExpectedVersion::Exact(3).admits(3));
        assert!(!ExpectedVersion::Exact(3).admits(4));
    }
}
