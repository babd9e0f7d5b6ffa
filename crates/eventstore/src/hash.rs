//! The per-stream SHA-256 hash chain that makes tampering detectable.
//!
//! Each event's hash covers the previous event's hash and everything the event says:
//! stream, version, id, type, schema version, data, metadata and recorded time. Change
//! any byte of a stored event, or remove one, and the chain no longer verifies from that
//! event on. Backends chain what they append with [`chain_batch`]; auditors check a
//! stream with [`verify_stream`].

use crate::{EventMetadata, EventReader, NewEvent, Position, RecordedEvent, StoreError, StreamId};
use chrono::{DateTime, SubsecRound, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The `prev_hash` of a stream's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Truncates a time to what every engine stores (microseconds), so the hash computed at
/// append time is the hash recomputed from the stored row.
pub fn storable_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// A recorded time as the hash covers it: RFC 3339 in UTC with exactly six fractional
/// digits (`2026-12-01T23:19:09.461771Z`).
pub fn hashed_time(at: DateTime<Utc>) -> String {
    storable_time(at)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// The fields an event's hash covers.
#[derive(Debug, Clone, Copy)]
pub struct HashInput<'a> {
    /// Hex hash of the previous event of the stream ([`GENESIS`] for the first).
    pub prev_hash: &'a str,
    /// The stream.
    pub stream: &'a StreamId,
    /// The event's version in the stream.
    pub version: u64,
    /// The event id.
    pub event_id: Uuid,
    /// The stored name.
    pub event_type: &'a str,
    /// The shape version.
    pub schema_version: u32,
    /// The event's fields.
    pub data: &'a serde_json::Value,
    /// Who and what caused it.
    pub metadata: &'a EventMetadata,
    /// When it was recorded (already truncated with [`storable_time`]).
    pub recorded_at: DateTime<Utc>,
}

/// Hex SHA-256 over the previous hash and a length-prefixed encoding of every field.
///
/// JSON values are hashed in `serde_json`'s canonical form (object keys sorted), so the
/// hash does not depend on how an engine happens to store the document.
pub fn chain_hash(input: HashInput<'_>) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(input.prev_hash.as_bytes());
    field(input.stream.as_str().as_bytes());
    field(&input.version.to_be_bytes());
    field(input.event_id.as_bytes());
    field(input.event_type.as_bytes());
    field(&input.schema_version.to_be_bytes());
    field(&canonical_json(input.data));
    field(&canonical_json(
        &serde_json::to_value(input.metadata).unwrap_or(serde_json::Value::Null),
    ));
    field(hashed_time(input.recorded_at).as_bytes());
    hex::encode(h.finalize())
}

/// The hash a recorded event should carry, recomputed from its fields.
pub fn recompute(event: &RecordedEvent) -> String {
    chain_hash(HashInput {
        prev_hash: &event.prev_hash,
        stream: &event.stream,
        version: event.version,
        event_id: event.event_id,
        event_type: &event.event_type,
        schema_version: event.schema_version,
        data: &event.data,
        metadata: &event.metadata,
        recorded_at: event.recorded_at,
    })
}

/// Serialises a JSON value with object keys sorted at every depth.
fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    fn sort(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sort(v)))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sort).collect())
            }
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sort(value)).unwrap_or_default()
}

/// One appended event's place in its stream's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chained {
    /// Its version in the stream.
    pub version: u64,
    /// The hash of the event before it ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// Its own hash.
    pub hash: String,
}

/// The chain of `events` appended to `stream` after its event at `version`, whose hash is
/// `prev_hash`, all recorded at `recorded_at` (already [`storable_time`]): each event's
/// version, previous hash and hash, in order. Every backend chains its appends through
/// this one loop, so none can disagree with another on what follows what.
pub fn chain_batch<'a>(
    stream: &'a StreamId,
    version: u64,
    prev_hash: &str,
    events: &'a [NewEvent],
    recorded_at: DateTime<Utc>,
) -> impl Iterator<Item = Chained> + 'a {
    let mut prev = prev_hash.to_owned();
    events
        .iter()
        .zip(version + 1..)
        .map(move |(event, version)| {
            let hash = chain_hash(HashInput {
                prev_hash: &prev,
                stream,
                version,
                event_id: event.event_id,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                data: &event.data,
                metadata: &event.metadata,
                recorded_at,
            });
            Chained {
                version,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            }
        })
}

/// Where one stream's chain stands while it is being checked: the version and the
/// `prev_hash` its next event must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    expected_version: u64,
    expected_prev: String,
}

impl Default for ChainLink {
    fn default() -> Self {
        Self {
            expected_version: 1,
            expected_prev: GENESIS.to_owned(),
        }
    }
}

impl ChainLink {
    /// Checks the stream's next event and moves past it; `false` when it is broken: its
    /// stored hash differs from the recomputed one, its `prev_hash` is not the previous
    /// event's hash, or its version does not follow.
    pub fn accept(&mut self, event: &RecordedEvent) -> bool {
        let intact = event.prev_hash == self.expected_prev
            && event.version == self.expected_version
            && recompute(event) == event.hash;
        self.expected_prev.clone_from(&event.hash);
        self.expected_version = event.version + 1;
        intact
    }
}

/// Checks a whole stream, read in version order, and returns the versions whose hash or
/// link does not hold (empty when the chain is intact). See [`ChainLink::accept`].
pub fn verify_stream<'a>(events: impl IntoIterator<Item = &'a RecordedEvent>) -> Vec<u64> {
    let mut link = ChainLink::default();
    events
        .into_iter()
        .filter(|event| !link.accept(event))
        .map(|event| event.version)
        .collect()
}

/// Checks every stream of a log read in delivery order (in which each stream's events
/// come in version order), holding one [`ChainLink`] per stream rather than the log.
#[derive(Debug, Default)]
pub struct LogVerifier {
    links: std::collections::HashMap<StreamId, ChainLink>,
    checked: u64,
    broken: Vec<(StreamId, u64)>,
}

impl LogVerifier {
    /// A verifier that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next event of the log.
    pub fn check(&mut self, event: &RecordedEvent) {
        self.checked += 1;
        let link = self.links.entry(event.stream.clone()).or_default();
        if !link.accept(event) {
            self.broken.push((event.stream.clone(), event.version));
        }
    }

    /// How many events were checked.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Every broken event so far, as (stream, version), in the order found.
    pub fn broken(&self) -> &[(StreamId, u64)] {
        &self.broken
    }
}

/// Events read per round trip by [`verify_log`].
const VERIFY_PAGE: usize = 1_000;

/// Reads the whole log from `reader`, in delivery order, and checks the chain of every
/// stream whose events `include` keeps (e.g. one district's).
///
/// # Errors
/// [`StoreError`] when the log cannot be read.
pub async fn verify_log<R: EventReader + ?Sized>(
    reader: &R,
    include: impl Fn(&RecordedEvent) -> bool,
) -> Result<LogVerifier, StoreError> {
    let mut verifier = LogVerifier::new();
    let mut after = Position::START;
    loop {
        let page = reader.read_all(after, VERIFY_PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(verifier);
        };
        after = last.position;
        for event in page.iter().filter(|e| include(e)) {
            verifier.check(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_time_is_hashed_with_exactly_six_fractional_digits() {
        let at = DateTime::parse_from_rfc3339("2026-12-02T00:55:14.537Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(hashed_time(at), "2026-12-02T00:55:14.537000Z");
        let fine = DateTime::parse_from_rfc3339("2026-12-02T00:55:14.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(hashed_time(fine), "2026-12-02T00:55:14.123456Z");
    }

    fn event(prev: &str, version: u64, data: serde_json::Value) -> RecordedEvent {
        let stream = StreamId::parse("conversation-d:1").unwrap();
        let mut e = RecordedEvent {
            event_id: Uuid::now_v7(),
            stream,
            version,
            position: Position::at(version),
            event_type: "message_posted".into(),
            schema_version: 1,
            data,
            metadata: EventMetadata::default(),
            recorded_at: storable_time(Utc::now()),
            prev_hash: prev.to_owned(),
            hash: String::new(),
        };
        e.hash = recompute(&e);
        e
    }

    #[test]
    fn an_intact_chain_verifies() {
        let a = event(GENESIS, 1, serde_json::json!({"body": "hi"}));
        let b = event(&a.hash, 2, serde_json::json!({"body": "there"}));
        assert!(verify_stream([&a, &b]).is_empty());
    }

    #[test]
    fn a_changed_body_breaks_the_chain_at_that_event() {
        let a = event(GENESIS, 1, serde_json::json!({"body": "hi"}));
        let mut b = event(&a.hash, 2, serde_json::json!({"body": "there"}));
        b.data = serde_json::json!({"body": "edited"});
        assert_eq!(verify_stream([&a, &b]), vec![2]);
    }

    #[test]
    fn a_removed_event_breaks_the_chain() {
        let a = event(GENESIS, 1, serde_json::json!(1));
        let b = event(&a.hash, 2, serde_json::json!(2));
        let c = event(&b.hash, 3, serde_json::json!(3));
        assert_eq!(verify_stream([&a, &c]), vec![3]);
    }

    #[test]
    fn a_log_verifier_checks_interleaved_streams_each_on_its_own_chain() {
        let a1 = event(GENESIS, 1, serde_json::json!(1));
        let a2 = event(&a1.hash, 2, serde_json::json!(2));
        let mut b1 = event(GENESIS, 1, serde_json::json!("b"));
        b1.stream = StreamId::parse("person-d:2").unwrap();
        b1.hash = recompute(&b1);
        let mut b2 = b1.clone();
        b2.version = 2;
        b2.prev_hash = b1.hash.clone();
        b2.data = serde_json::json!("forged");
        let mut verifier = LogVerifier::new();
        for e in [&a1, &b1, &a2, &b2] {
            verifier.check(e);
        }
        assert_eq!(verifier.checked(), 4);
        assert_eq!(verifier.broken(), &[(b2.stream.clone(), 2)]);
    }

    #[test]
    fn key_order_does_not_change_the_hash() {
        let x: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":{"d":2,"c":3}}"#).unwrap();
        let y: serde_json::Value = serde_json::from_str(r#"{"b":{"c":3,"d":2},"a":1}"#).unwrap();
        assert_eq!(canonical_json(&x), canonical_json(&y));
    }
}
