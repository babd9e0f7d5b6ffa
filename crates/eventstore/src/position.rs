//! Positions: tokens of the log's delivery order.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where an event stands in the order the whole log is delivered to subscribers.
///
/// A pair, compared lexicographically: `(commit, sequence)`. Engines whose global
/// sequence is already in commit order (SQLite, the in-memory store) keep `commit` at 0;
/// PostgreSQL puts the writing transaction's id there, KurrentDB its commit position.
/// [`Position::START`] stands before every event.
///
/// Clients see a position as a token ([`Position::token`]): a JSON number when `commit`
/// is 0, otherwise a zero-padded string that sorts in delivery order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// The commit order component (0 where the sequence alone is in commit order).
    pub commit: u64,
    /// The global sequence of the event.
    pub sequence: u64,
}

/// Why a token is not a position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a position token: {0:?}")]
pub struct BadPositionToken(pub String);

impl Position {
    /// Before every event: reading or subscribing after it delivers the whole log.
    pub const START: Position = Position {
        commit: 0,
        sequence: 0,
    };

    /// A position on an engine whose sequence is already in commit order.
    pub const fn at(sequence: u64) -> Self {
        Self {
            commit: 0,
            sequence,
        }
    }

    /// Whether this position and `other` have the same engine's shape: both without a
    /// commit component (SQLite's numbers) or both with one (PostgreSQL's and
    /// KurrentDB's strings). [`Position::START`] has every shape. A position of the
    /// other shape than a log's was never handed out by it (one kept from before a
    /// migration) and would compare as before or after everything.
    pub fn same_shape_as(self, other: Position) -> bool {
        self == Self::START || other == Self::START || (self.commit == 0) == (other.commit == 0)
    }

    /// The position as clients see it: a number or an order-preserving string.
    pub fn token(&self) -> serde_json::Value {
        if self.commit == 0 {
            serde_json::Value::from(self.sequence)
        } else {
            serde_json::Value::String(self.to_string())
        }
    }

    /// Reads back a token produced by [`Position::token`].
    ///
    /// # Errors
    /// [`BadPositionToken`] when the value is neither a non-negative number nor a
    /// `commit-sequence` string.
    pub fn from_token(value: &serde_json::Value) -> Result<Self, BadPositionToken> {
        match value {
            serde_json::Value::Number(n) => n
                .as_u64()
                .map(Self::at)
                .ok_or_else(|| BadPositionToken(n.to_string())),
            serde_json::Value::String(s) => s.parse(),
            other => Err(BadPositionToken(other.to_string())),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.commit == 0 {
            write!(f, "{}", self.sequence)
        } else {
            write!(f, "{:020}-{:020}", self.commit, self.sequence)
        }
    }
}

impl FromStr for Position {
    type Err = BadPositionToken;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPositionToken(s.to_owned());
        match s.split_once('-') {
            None => s.parse::<u64>().map(Self::at).map_err(|_| bad()),
            Some((commit, sequence)) => Ok(Self {
                commit: commit.parse().map_err(|_| bad())?,
                sequence: sequence.parse().map_err(|_| bad())?,
            }),
        }
    }
}

impl Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.token().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Self::from_token(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_order_positions_are_numbers() {
        assert_eq!(Position::at(42).token(), serde_json::json!(42));
        assert_eq!(
            Position::from_token(&serde_json::json!(42)).unwrap(),
            Position::at(42)
        );
    }

    #[test]
    fn paired_positions_are_strings_that_sort_in_delivery_order() {
        let a = Position {
            commit: 9,
            sequence: 100,
        };
        let b = Position {
            commit: 10,
            sequence: 3,
        };
        assert!(a < b);
        let (ta, tb) = (a.to_string(), b.to_string());
        assert!(ta < tb, "{ta} should sort before {tb}");
        assert_eq!(Position::from_token(&a.token()).unwrap(), a);
    }

    #[test]
    fn garbage_is_not_a_position() {
        assert!(Position::from_token(&serde_json::json!("x-1")).is_err());
        let (number, string) = (
            Position::at(5),
            Position {
                commit: 3,
                sequence: 9,
            },
        );
        assert!(number.same_shape_as(Position::at(9)));
        assert!(string.same_shape_as(Position {
            commit: 1,
            sequence: 1
        }));
        assert!(!number.same_shape_as(string) && !string.same_shape_as(number));
        assert!(Position::START.same_shape_as(string) && number.same_shape_as(Position::START));
        assert!(Position::from_token(&serde_json::json!(-1)).is_err());
        assert!(Position::from_token(&serde_json::json!(null)).is_err());
    }
}
