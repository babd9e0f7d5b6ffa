//! The appender: head, retry check, intents, conditional append, read-back.
//!
//! 1. Read the stream's last event: its version and hash continue the chain.
//! 2. Look the batch's first event id up in the batch index ([`crate::index`]): if a
//!    batch starting with it is stored in this stream, return that batch's result,
//!    whatever `expected` says (an idempotent retry).
//! 3. Check `expected` against the version read, compute the hash chain, write the
//!    intents, then append **expecting exactly the revision read** (never "any": the
//!    chain was computed for that place).
//! 4. On success, read the batch back: its last event gives the result's position, and
//!    its ids prove the server stored this batch there (KurrentDB acknowledges a
//!    repeated write of the same ids at the same place without writing it again, which
//!    is how concurrent retries of one batch all get one result).
//! 5. On the server's wrong-expected-version (told by the error's kind): look the batch
//!    up again (a concurrent retry may have won), else report
//!    [`StoreError::Conflict`] with the version the server reported; for
//!    [`ExpectedVersion::Any`], start again from step 1.
//!
//! Step 1 comes before step 2 on purpose: a batch found missing in step 2 was not stored
//! before the head of step 1 was read, so the append of step 3, which expects that head,
//! cannot put a second copy of it after the first.

use crate::codec::encode_batch;
use crate::error::{append_error, wrong_expected_version, KurrentStoreError};
use crate::index::{recorded_batch, write_intents};
use crate::position::from_kurrent;
use crate::store::Inner;
use chrono::Utc;
use homeroom_eventstore::hash::{self, GENESIS};
use homeroom_eventstore::{AppendResult, ExpectedVersion, NewEvent, StoreError, StreamId};
use kurrentdb::StreamState;
use std::collections::HashSet;

/// How often an [`ExpectedVersion::Any`] append starts again after losing a race before
/// it reports the conflict (each loss means another writer won).
const MAX_ATTEMPTS: u32 = 64;

/// The stream's last version and hash.
struct Head {
    version: u64,
    hash: String,
}

/// What KurrentDB must find for the append to go where the chain was computed.
pub(crate) fn expected_state(head_version: u64) -> StreamState {
    match head_version {
        0 => StreamState::NoStream,
        v => StreamState::StreamRevision(v - 1),
    }
}

async fn read_head(inner: &Inner, kurrent_stream: &str) -> Result<Head, StoreError> {
    let last = inner
        .backend
        .read_last(kurrent_stream)
        .await
        .map_err(crate::error::unavailable)?;
    match last {
        None => Ok(Head {
            version: 0,
            hash: GENESIS.to_owned(),
        }),
        Some(raw) => {
            let event = crate::codec::decode(&inner.ns, &raw)?;
            Ok(Head {
                version: event.version,
                hash: event.hash,
            })
        }
    }
}

/// The port's `append`, as described in the module docs.
pub(crate) async fn append(
    inner: &Inner,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Result<AppendResult, StoreError> {
    let first_id = events.first().ok_or(StoreError::EmptyAppend)?.event_id;
    if !inner.ns.admits(stream) {
        return Err(KurrentStoreError::OutsideCategories {
            stream: stream.clone(),
        }
        .into());
    }
    let mut ids = HashSet::new();
    if !events.iter().all(|e| ids.insert(e.event_id)) {
        return Err(KurrentStoreError::DuplicateEventId {
            stream: stream.clone(),
            first_event_id: first_id,
        }
        .into());
    }
    let kurrent_stream = inner.ns.stream_name(stream);
    let mut actual = 0;
    for _ in 0..MAX_ATTEMPTS {
        let head = read_head(inner, &kurrent_stream).await?;
        if let Some(original) = recorded_batch(inner, stream, first_id).await? {
            return Ok(original);
        }
        if !expected.admits(head.version) {
            return Err(StoreError::Conflict {
                stream: stream.clone(),
                expected,
                actual: head.version,
            });
        }
        let recorded_at = hash::storable_time(Utc::now());
        let outgoing = encode_batch(stream, head.version, &head.hash, &events, recorded_at);
        write_intents(inner, stream, head.version, &events).await?;
        match inner
            .backend
            .append(&kurrent_stream, expected_state(head.version), outgoing)
            .await
        {
            Ok(()) => return confirm(inner, stream, &kurrent_stream, head.version, &events).await,
            Err(err) => {
                let Some(now) = wrong_expected_version(&err) else {
                    return Err(append_error(err, stream, expected));
                };
                if let Some(original) = recorded_batch(inner, stream, first_id).await? {
                    return Ok(original);
                }
                actual = now;
                if !expected.admits(now) {
                    return Err(append_error(err, stream, expected));
                }
            }
        }
    }
    Err(StoreError::Conflict {
        stream: stream.clone(),
        expected,
        actual,
    })
}

/// Reads an acknowledged batch back: its ids must be where it was appended.
async fn confirm(
    inner: &Inner,
    stream: &StreamId,
    kurrent_stream: &str,
    head_version: u64,
    events: &[NewEvent],
) -> Result<AppendResult, StoreError> {
    let stored = inner
        .backend
        .read_stream(kurrent_stream, head_version, events.len())
        .await
        .map_err(crate::error::unavailable)?;
    let entry = crate::index::IndexEntry::new(stream, head_version, events);
    match stored.last() {
        Some(last) if entry.matches(&stored) => Ok(AppendResult {
            version: last.revision + 1,
            position: from_kurrent(last.position),
        }),
        _ => Err(KurrentStoreError::Unconfirmed {
            stream: stream.clone(),
            version: head_version + 1,
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_append_expects_exactly_the_revision_the_chain_was_computed_for() {
        assert_eq!(expected_state(0), StreamState::NoStream);
        assert_eq!(expected_state(1), StreamState::StreamRevision(0));
        assert_eq!(expected_state(42), StreamState::StreamRevision(41));
    }
}
