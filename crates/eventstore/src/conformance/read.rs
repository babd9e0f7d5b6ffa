//! Reading: streams, the whole log, versions and commands.

use super::support::{
    assert_strictly_increasing, event, events, ok, read_log, read_stream, stream,
};
use super::Harness;
use crate::{AppendResult, ExpectedVersion, Position, RecordedEvent};
use crate::{EventAppender as _, EventReader as _};
use serde_json::json;
use uuid::Uuid;

/// `read_stream` pages by version: `after_version` excludes, `limit` bounds, and pages
/// taken one after another return the whole stream and nothing of any other stream. This
/// is how the app loads a long aggregate.
pub async fn read_stream_pages<H: Harness>(h: &H) {
    let store = h.fresh().await;
    let s = stream("paged");
    let other = stream("paged_other");
    for (i, size) in [3, 1, 4, 2].into_iter().enumerate() {
        ok(
            store
                .append(&s, ExpectedVersion::Any, events(size, "paged"))
                .await,
            "append",
        );
        ok(
            store
                .append(&other, ExpectedVersion::Any, events(i + 1, "other"))
                .await,
            "append to another stream",
        );
    }
    let whole = read_stream(&*store, &s).await;
    assert_eq!(
        whole.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<u64>>()
    );
    assert!(
        whole.iter().all(|e| e.stream == s),
        "only this stream's events"
    );
    assert_strictly_increasing(&whole, "read_stream");

    let page = |after: u64, limit: usize| {
        let store = store.clone();
        let s = s.clone();
        async move {
            ok(
                store.read_stream(&s, after, limit).await,
                "read_stream page",
            )
        }
    };
    assert_eq!(page(0, 3).await, whole[0..3]);
    assert_eq!(page(3, 3).await, whole[3..6]);
    assert_eq!(page(6, 3).await, whole[6..9]);
    assert_eq!(page(9, 3).await, whole[9..10], "a short last page");
    assert_eq!(
        page(10, 3).await,
        Vec::<RecordedEvent>::new(),
        "after the end"
    );
    assert_eq!(
        page(50, 3).await,
        Vec::<RecordedEvent>::new(),
        "far after the end"
    );
    assert_eq!(page(4, 1).await, whole[4..5]);
    assert_eq!(page(0, 100).await, whole, "a limit above the length");

    let mut paged = Vec::new();
    loop {
        let next = page(paged.len() as u64, 4).await;
        if next.is_empty() {
            break;
        }
        assert!(
            next[0].version == paged.len() as u64 + 1 && next.len() <= 4,
            "read_stream after {} returned versions from {} ({} events for limit 4)",
            paged.len(),
            next[0].version,
            next.len()
        );
        paged.extend(next);
    }
    assert_eq!(paged, whole, "pages taken in turn return the whole stream");

    let missing = stream("paged_missing");
    assert!(
        ok(store.read_stream(&missing, 0, 10).await, "missing stream").is_empty(),
        "a stream with no events reads empty"
    );
}

/// `read_all` pages the whole log in delivery order with no gaps and no repeats, `after`
/// excludes, and `head` is the last deliverable position ([`Position::START`] when empty):
/// projectors and the relay rest on this.
pub async fn read_all_pages_and_head<H: Harness>(h: &H) {
    let store = h.fresh().await;
    assert_eq!(
        ok(store.head().await, "head"),
        Position::START,
        "a fresh store is empty (does the harness share a database?)"
    );
    assert!(ok(store.read_all(Position::START, 10).await, "read_all").is_empty());

    let streams = [stream("log_a"), stream("log_b"), stream("log_c")];
    let mut results: Vec<(usize, AppendResult)> = Vec::new();
    for (i, size) in [2, 1, 3, 1, 1, 2, 1, 1].into_iter().enumerate() {
        let target = &streams[i % streams.len()];
        let r = ok(
            store
                .append(target, ExpectedVersion::Any, events(size, "log"))
                .await,
            "append",
        );
        assert_eq!(
            ok(store.head().await, "head"),
            r.position,
            "head follows appends"
        );
        results.push((size, r));
    }
    let total: usize = results.iter().map(|(size, _)| size).sum();
    let head = ok(store.head().await, "head");

    let whole = read_log(&*store, 5).await;
    assert_eq!(whole.len(), total, "read_all returns every event once");
    assert_strictly_increasing(&whole, "read_all");
    assert!(whole[0].position > Position::START);
    assert_eq!(
        whole[total - 1].position,
        head,
        "head is the last event's position"
    );
    let mut end = 0;
    for (size, r) in &results {
        end += size;
        let last = &whole[end - 1];
        assert_eq!(
            (last.version, last.position),
            (r.version, r.position),
            "an append's result is its last event, in read_all too"
        );
    }

    let all = |after: Position, limit: usize| {
        let store = store.clone();
        async move { ok(store.read_all(after, limit).await, "read_all page") }
    };
    assert_eq!(all(Position::START, 5).await, whole[0..5]);
    assert_eq!(all(whole[4].position, 5).await, whole[5..10]);
    assert_eq!(
        all(whole[9].position, 5).await,
        whole[10..],
        "a short last page"
    );
    assert!(all(head, 5).await.is_empty(), "nothing after head");
    assert_eq!(all(Position::START, 100).await, whole);
    for i in 0..total - 1 {
        assert_eq!(
            all(whole[i].position, 1).await,
            whole[i + 1..i + 2],
            "read_all after event {i} starts at the next one"
        );
    }

    for s in &streams {
        let in_log: Vec<RecordedEvent> = whole.iter().filter(|e| &e.stream == s).cloned().collect();
        assert_eq!(
            read_stream(&*store, s).await,
            in_log,
            "read_all and read_stream agree on {s}"
        );
    }
}

/// `stream_versions` answers for many streams at once, in the order asked, 0 for a stream
/// with no events: how a command checks that the facts it decided on are still fresh.
pub async fn stream_versions_of_existing_and_missing_streams<H: Harness>(h: &H) {
    let store = h.fresh().await;
    let (a, b, missing) = (
        stream("versions_a"),
        stream("versions_b"),
        stream("versions_none"),
    );
    ok(
        store.append(&a, ExpectedVersion::Any, events(2, "a")).await,
        "append a",
    );
    ok(
        store.append(&b, ExpectedVersion::Any, events(1, "b")).await,
        "append b",
    );
    ok(
        store.append(&a, ExpectedVersion::Any, events(1, "a")).await,
        "append a",
    );
    let asked = [a.clone(), missing.clone(), b.clone(), a.clone()];
    assert_eq!(
        ok(store.stream_versions(&asked).await, "versions"),
        vec![3, 0, 1, 3]
    );
    assert_eq!(
        ok(store.stream_versions(&[]).await, "no streams"),
        Vec::<u64>::new()
    );
    assert_eq!(
        ok(
            store.stream_versions(std::slice::from_ref(&missing)).await,
            "missing"
        ),
        vec![0]
    );
    ok(
        store
            .append(&b, ExpectedVersion::Exact(1), events(2, "b"))
            .await,
        "append b",
    );
    assert_eq!(
        ok(store.stream_versions(&[b, a]).await, "versions"),
        vec![3, 3]
    );
}

/// `find_command` returns every event one command recorded, in stream order, and nothing
/// for a command that recorded nothing: how a retried command finds its first result.
pub async fn find_command_returns_what_a_command_recorded<H: Harness>(h: &H) {
    let store = h.fresh().await;
    let s = stream("commands");
    let other = stream("commands_other");
    let (c, d) = (Uuid::now_v7(), Uuid::now_v7());
    let with_command = |command: Uuid, n: usize| {
        (0..n)
            .map(|i| {
                let mut e = event("kit_noted", json!({ "i": i }));
                e.metadata.command_id = command;
                e
            })
            .collect::<Vec<_>>()
    };
    ok(
        store
            .append(&s, ExpectedVersion::NoStream, events(1, "unrelated"))
            .await,
        "unrelated",
    );
    ok(
        store
            .append(&s, ExpectedVersion::Exact(1), with_command(c, 2))
            .await,
        "command c",
    );
    ok(
        store
            .append(&other, ExpectedVersion::Any, events(2, "unrelated"))
            .await,
        "unrelated",
    );
    ok(
        store
            .append(&s, ExpectedVersion::Exact(3), with_command(d, 1))
            .await,
        "command d",
    );
    let recorded = read_stream(&*store, &s).await;
    assert_eq!(
        ok(store.find_command(c).await, "find c"),
        recorded[1..3],
        "both events of command c, in stream order"
    );
    assert_eq!(ok(store.find_command(d).await, "find d"), recorded[3..4]);
    assert!(
        ok(store.find_command(Uuid::now_v7()).await, "find unknown").is_empty(),
        "a command that recorded nothing finds nothing"
    );
}
