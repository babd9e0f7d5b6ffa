//! Integrity: tampering is detected, and what is written comes back byte for byte, so the
//! hash chain keeps verifying on every engine.

use super::support::{
    assert_chain_intact, assert_recorded, event, events, metadata, ok, read_log, read_stream,
    stream,
};
use super::Harness;
use crate::EventAppender as _;
use crate::{hash, EventStore, ExpectedVersion, NewEvent, StreamId};
use serde_json::{json, Value};

/// Appends `written` as one batch to a new stream, then checks that `read_stream`,
/// `read_all` and `find_command` return it exactly and that the chain verifies.
async fn assert_round_trip<S: EventStore + ?Sized>(store: &S, s: &StreamId, written: &[NewEvent]) {
    ok(
        store
            .append(s, ExpectedVersion::NoStream, written.to_vec())
            .await,
        "append",
    );
    let recorded = read_stream(store, s).await;
    assert_eq!(recorded.len(), written.len());
    for (i, (rec, new)) in recorded.iter().zip(written).enumerate() {
        assert_recorded(rec, new, s, i as u64 + 1);
    }
    assert_chain_intact(&recorded, "round trip");
    let in_log: Vec<_> = read_log(store, 100)
        .await
        .into_iter()
        .filter(|e| &e.stream == s)
        .collect();
    assert!(
        in_log == recorded,
        "read_all returns the same events as read_stream"
    );
    for rec in &recorded {
        let by_command = ok(
            store.find_command(rec.metadata.command_id).await,
            "find_command",
        );
        assert!(
            by_command.iter().any(|e| e == rec),
            "find_command returns the same event as read_stream"
        );
    }
}

/// A row changed behind the store's back (via [`Harness::tamper`]) is caught by
/// [`hash::verify_stream`] at exactly that version, and no other stream is affected: the
/// audit promise of the log.
pub async fn tampering_is_detected<H: Harness>(h: &H) {
    let store = h.fresh().await;
    let s = stream("tampered");
    let other = stream("untouched");
    ok(
        store
            .append(&s, ExpectedVersion::NoStream, events(2, "first"))
            .await,
        "append",
    );
    ok(
        store
            .append(&other, ExpectedVersion::NoStream, events(2, "other"))
            .await,
        "append",
    );
    ok(
        store
            .append(&s, ExpectedVersion::Exact(2), events(3, "second"))
            .await,
        "append",
    );
    let original = read_stream(&*store, &s).await;
    assert_chain_intact(&original, "before tampering");

    h.tamper(&store, &s, 3).await;

    let tampered = read_stream(&*store, &s).await;
    assert_eq!(tampered.len(), original.len());
    assert!(
        tampered[2].data != original[2].data,
        "the harness's tamper must change the event's data"
    );
    for (i, (now, before)) in tampered.iter().zip(&original).enumerate() {
        if i != 2 {
            assert_eq!(now, before, "tampering touched only version 3");
        }
    }
    assert_eq!(
        hash::verify_stream(&tampered),
        vec![3],
        "verify_stream reports the tampered version, and only it"
    );
    assert_chain_intact(&read_stream(&*store, &other).await, "another stream");
}

/// A ~1 MiB JSON string (with escapes and multi-byte characters), a large document and a
/// large metadata field come back exactly: attachments' text and bulk imports.
pub async fn large_payloads_round_trip<H: Harness>(h: &H) {
    const MIB: usize = 1 << 20;
    let store = h.fresh().await;
    let unit = "0123456789 abcdef \"quoted\" back\\slash\nnew line\ttab é 漢 👍 / ";
    let mut big = String::with_capacity(MIB + unit.len());
    while big.len() < MIB {
        big.push_str(unit);
    }
    let mut as_string = event("kit_large", Value::String(big.clone()));
    as_string.metadata.actor = "a".repeat(64 * 1024);
    let document = event(
        "kit_large",
        json!({
            "body": big,
            "numbers": (0..20_000).collect::<Vec<u32>>(),
            "rows": (0..2_000).map(|i| json!({ "id": i, "name": format!("row {i}") })).collect::<Vec<_>>(),
        }),
    );
    assert_round_trip(&*store, &stream("large"), &[as_string, document]).await;
}

/// Text from every script a school community writes in, emoji sequences, combining marks,
/// invisible and separator characters, and JSON escapes come back exactly in data, keys,
/// metadata and stream names (nothing NUL: PostgreSQL refuses it in text).
pub async fn unicode_round_trips<H: Harness>(h: &H) {
    const SAMPLES: &[&str] = &[
        "emoji 😀 👩‍👩‍👧‍👦 🏳️‍🌈 🇫🇷 👍🏽 ❤️",
        "مرحبا بالعالم — مدرسة ١٢٣",
        "\u{200F}RTL mark, \u{202E}override\u{202C}, שלום עולם",
        "漢字 かな カナ 한국어 中文 繁體",
        "combining: e\u{301} n\u{303} a\u{30A}\u{323} Z\u{364}\u{351}\u{307} \u{301}leading",
        "invisible: \u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF} separators: \u{2028}\u{2029}",
        "astral: 𝄞 𝕳 𐐷 \u{10FFFF} \u{E000}",
        "escapes: \" \\ / \n \r \t \u{1} \u{1F} \u{7F} \u{85}",
        "Ελληνικά Русский हिन्दी ไทย ትግርኛ",
        "",
    ];
    let store = h.fresh().await;
    let keys: serde_json::Map<String, Value> = SAMPLES
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("{s}#{i}"), json!(i)))
        .collect();
    let mut first = event("kit_unicode", json!({ "samples": SAMPLES, "keys": keys }));
    first.metadata.district = "district-مدرسة-漢字".into();
    first.metadata.school = Some(SAMPLES[0].into());
    first.metadata.actor = SAMPLES.join("|");
    first.metadata.command_digest = Some(SAMPLES[3].into());
    let mut second = event("kit_unicode", json!(SAMPLES.concat()));
    second.metadata.actor = SAMPLES[4].into();
    let s = StreamId::parse(format!(
        "kit_unicode-δοκιμή:مدرسة:漢字:👩‍👩‍👧‍👦:{}",
        uuid::Uuid::now_v7()
    ))
    .expect("a unicode stream id without whitespace is valid");
    assert_round_trip(&*store, &s, &[first, second]).await;
}

/// JSON of every shape comes back as the same value: bare scalars, extreme integers,
/// floats, empty containers, deep nesting, keys needing escapes. A number that came back
/// as a different value would break the hash chain.
pub async fn json_shapes_round_trip<H: Harness>(h: &H) {
    let store = h.fresh().await;
    let mut deep = json!("bottom");
    for i in 0..40 {
        deep = if i % 2 == 0 {
            json!({ "level": deep })
        } else {
            json!([deep])
        };
    }
    let shapes = vec![
        Value::Null,
        json!(true),
        json!(false),
        json!(0),
        json!(-1),
        json!(i64::MIN),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(0.1),
        json!(-2.5),
        json!(1.0),
        json!(1e300),
        json!(std::f64::consts::PI),
        json!(""),
        json!({}),
        json!([]),
        json!([[], {}, [{}], { "a": [] }]),
        json!({ "z": 1, "a": 2, "m": { "y": null, "b": [3, 2, 1] } }),
        json!({ "": "empty key", "with \"quote\"": 1, "back\\slash": 2, "new\nline": 3 }),
        json!({ "mixed": [1, "two", 3.5, false, null, { "six": 6 }] }),
        deep,
    ];
    let written: Vec<NewEvent> = shapes
        .into_iter()
        .map(|data| event("kit_shape", data))
        .collect();
    assert_round_trip(&*store, &stream("shapes"), &written).await;
}

/// Metadata comes back field for field, with and without the optional school and command
/// digest: the audit trail of who did what, and why.
pub async fn metadata_round_trips<H: Harness>(h: &H) {
    let store = h.fresh().await;
    let mut without = event("kit_meta", json!({ "school": "none" }));
    without.metadata.school = None;
    without.metadata.command_digest = None;
    let mut with = event("kit_meta", json!({ "school": "some" }));
    with.metadata = metadata();
    with.metadata.school = Some("school-0190c1f6".into());
    with.metadata.command_digest = Some("0f".repeat(32));
    with.metadata.actor = "sis-sync".into();
    let mut empty = event("kit_meta", json!({ "school": "empty" }));
    empty.metadata.school = Some(String::new());
    empty.metadata.district = String::new();
    empty.metadata.actor = String::new();
    let mut nil = event("kit_meta", json!({ "ids": "nil and max" }));
    nil.metadata.correlation_id = uuid::Uuid::nil();
    nil.metadata.causation_id = uuid::Uuid::max();
    nil.metadata.command_id = uuid::Uuid::now_v7();
    assert_round_trip(&*store, &stream("metadata"), &[without, with, empty, nil]).await;
}
