//! Homeroom positions are KurrentDB `$all` positions.
//!
//! A KurrentDB event's place in `$all` is the pair (commit position, prepare position),
//! ordered by commit position, then prepare position; [`Position`] keeps exactly that
//! pair, as `commit` and `sequence`, and its derived ordering is the same. So a
//! Homeroom checkpoint is a `$all` position and can be handed back to the server as is.
//!
//! [`Position::START`] (`0/0`) stands for "before the first event" and is sent as
//! [`StreamPosition::Start`], never as a position: the server's first record is never
//! an event, so no event sits at `0/0`. Reads and subscriptions *after* any other
//! position exclude the event at that position.

use homeroom_eventstore::Position;
use kurrentdb::StreamPosition;

/// The prepare or commit position the server reports for an event it did not place in
/// `$all` (servers before 22.10 did so for stream reads).
pub(crate) const NO_POSITION: u64 = u64::MAX;

/// A KurrentDB `$all` position as a Homeroom position.
pub fn from_kurrent(position: kurrentdb::Position) -> Position {
    Position {
        commit: position.commit,
        sequence: position.prepare,
    }
}

/// A Homeroom position as the KurrentDB `$all` position it stands for.
pub fn to_kurrent(position: Position) -> kurrentdb::Position {
    kurrentdb::Position {
        commit: position.commit,
        prepare: position.sequence,
    }
}

/// Where a read or subscription "after `position`" starts on the server.
pub(crate) fn start_after(position: Position) -> StreamPosition<kurrentdb::Position> {
    if position == Position::START {
        StreamPosition::Start
    } else {
        StreamPosition::Position(to_kurrent(position))
    }
}

/// Whether the server gave the event a real `$all` position.
pub(crate) fn is_placed(position: kurrentdb::Position) -> bool {
    position.commit != NO_POSITION && position.prepare != NO_POSITION
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(commit: u64, prepare: u64) -> kurrentdb::Position {
        kurrentdb::Position { commit, prepare }
    }

    #[test]
    fn commit_is_the_commit_position_and_sequence_the_prepare_position() {
        let p = from_kurrent(k(7_340_032, 7_339_904));
        assert_eq!(
            p,
            Position {
                commit: 7_340_032,
                sequence: 7_339_904
            }
        );
        assert_eq!(to_kurrent(p), k(7_340_032, 7_339_904));
    }

    #[test]
    fn homeroom_order_is_kurrentdb_order() {
        let pairs = [
            (k(100, 100), k(100, 200)),
            (k(100, 900), k(200, 150)),
            (k(4096, 4096), k(4224, 4224)),
            (k(0, 0), k(1, 0)),
        ];
        for (a, b) in pairs {
            assert!(a < b, "KurrentDB orders {a} before {b}");
            assert!(
                from_kurrent(a) < from_kurrent(b),
                "so does Homeroom: {a} before {b}"
            );
        }
    }

    #[test]
    fn checkpoint_tokens_sort_in_log_order_and_round_trip() {
        let positions = [k(128, 128), k(4_224, 4_224), k(1 << 40, 1 << 40)];
        let mut previous: Option<String> = None;
        for position in positions {
            let ours = from_kurrent(position);
            let token = ours.token();
            let text = token
                .as_str()
                .expect("a KurrentDB position is a string token");
            if let Some(before) = &previous {
                assert!(before.as_str() < text, "{before} sorts before {text}");
            }
            previous = Some(text.to_owned());
            let back = Position::from_token(&token).unwrap();
            assert_eq!(
                to_kurrent(back),
                position,
                "the checkpoint goes back unchanged"
            );
        }
    }

    #[test]
    fn start_is_the_server_start_and_anything_else_a_position() {
        assert_eq!(start_after(Position::START), StreamPosition::Start);
        assert_eq!(
            start_after(from_kurrent(k(10, 9))),
            StreamPosition::Position(k(10, 9))
        );
    }

    #[test]
    fn unplaced_events_are_recognised() {
        assert!(is_placed(k(10, 10)));
        assert!(!is_placed(k(NO_POSITION, NO_POSITION)));
        assert!(!is_placed(k(10, NO_POSITION)));
    }
}
