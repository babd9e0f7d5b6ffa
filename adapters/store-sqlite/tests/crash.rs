//! An acknowledged append survives SIGKILL.
//!
//! The test re-runs its own binary as a child process (`crash_child`, selected with
//! `--exact` and switched on by an environment variable) that appends under load and
//! prints every acknowledged `(stream, version)`. The parent kills it without warning
//! mid-load, copies the file and its WAL elsewhere (what a restart after a crash finds)
//! and opens the copy with a fresh store: every acknowledged event must be there, every
//! stream's hash chain must verify, and positions must have no gaps.
//!
//! A SIGKILL leaves the kernel's page cache intact, so this proves that acknowledgement
//! waits for the commit; surviving a power cut rests on `synchronous=FULL`, which
//! fsyncs the WAL before the commit returns.

use homeroom_eventstore::subscription::PAGE;
use homeroom_eventstore::{
    hash, EventAppender, EventMetadata, EventReader, ExpectedVersion, NewEvent, Position, StreamId,
};
use homeroom_store_sqlite::SqliteStore;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use uuid::Uuid;

/// Set in the child's environment to the file it appends to.
const CHILD_FILE: &str = "HOMEROOM_SQLITE_CRASH_CHILD_FILE";
/// Acknowledgements the parent waits for before it kills the child.
const ACKS_BEFORE_KILL: usize = 2_000;
/// Concurrent appenders in the child.
const TASKS: usize = 16;

/// The child process's body; does nothing (and passes) unless [`CHILD_FILE`] is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Some(file) = std::env::var_os(CHILD_FILE) else {
        return;
    };
    let store = Arc::new(SqliteStore::open(Path::new(&file)).await.unwrap());
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let stream = StreamId::parse(format!("crash-{task}")).unwrap();
                let mut version = 0;
                for n in 0u64.. {
                    // One to three events per append, so whole batches are at stake.
                    let events = (0..=n % 3).map(|i| event(task, n, i)).collect();
                    version = store
                        .append(&stream, ExpectedVersion::Exact(version), events)
                        .await
                        .expect("the only writer of its stream")
                        .version;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {stream} {version}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

fn event(task: usize, n: u64, i: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "crash_noted".into(),
        schema_version: 1,
        data: serde_json::json!({ "task": task, "n": n, "i": i, "body": "x".repeat(200) }),
        metadata: EventMetadata {
            district: "crash".into(),
            actor: "crash-child".into(),
            command_id: Uuid::now_v7(),
            ..Default::default()
        },
    }
}

/// `ack <stream> <version>` lines; anything else (the test harness's chatter) is skipped.
fn record_ack(line: &str, acknowledged: &mut BTreeMap<String, u64>) -> bool {
    let mut words = line.split_whitespace();
    let (Some("ack"), Some(stream), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return false;
    };
    let Ok(version) = version.parse::<u64>() else {
        return false;
    };
    let highest = acknowledged.entry(stream.to_owned()).or_default();
    *highest = (*highest).max(version);
    true
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.sqlite");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_FILE, &file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the child starts");

    let mut acknowledged = BTreeMap::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acks = 0;
    while acks < ACKS_BEFORE_KILL {
        let line = lines
            .next()
            .expect("the child keeps acknowledging until killed")
            .unwrap();
        if record_ack(&line, &mut acknowledged) {
            acks += 1;
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    // Acknowledgements written before the kill but not read yet count too.
    for line in lines.map_while(Result::ok) {
        record_ack(&line, &mut acknowledged);
    }

    // What a restart finds: the file and its WAL, opened by a new process.
    let copy = tempfile::tempdir().unwrap();
    assert!(
        PathBuf::from(format!("{}-wal", file.display())).exists(),
        "killed mid-load, the child leaves its WAL behind"
    );
    for suffix in ["", "-wal"] {
        let from = PathBuf::from(format!("{}{suffix}", file.display()));
        if from.exists() {
            std::fs::copy(&from, copy.path().join(format!("events.sqlite{suffix}"))).unwrap();
        }
    }
    assert_eq!(acknowledged.len(), TASKS, "every appender was acknowledged");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(&copy.path().join("events.sqlite"))
            .await
            .expect("the copy opens and recovers");
        let mut total = 0;
        for (stream, version) in &acknowledged {
            let stream = StreamId::parse(stream.clone()).unwrap();
            let events = store.read_stream(&stream, 0, usize::MAX).await.unwrap();
            assert!(
                events.len() as u64 >= *version,
                "{stream}: acknowledged up to version {version}, found {}",
                events.len()
            );
            assert!(
                hash::verify_stream(&events).is_empty(),
                "{stream}: the hash chain is broken"
            );
            total += events.len();
        }
        let mut after = Position::START;
        let mut positions = 0u64;
        loop {
            let page = store.read_all(after, PAGE).await.unwrap();
            let Some(last) = page.last() else { break };
            for event in &page {
                positions += 1;
                assert_eq!(event.position, Position::at(positions), "no gaps");
            }
            after = last.position;
        }
        assert_eq!(
            positions as usize, total,
            "the log holds only these streams"
        );
        // The recovered file takes appends again.
        let stream = StreamId::parse("crash-0").unwrap();
        let version = store
            .stream_versions(std::slice::from_ref(&stream))
            .await
            .unwrap()[0];
        store
            .append(
                &stream,
                ExpectedVersion::Exact(version),
                vec![event(0, 0, 0)],
            )
            .await
            .unwrap();
        store.close().await;
    });
}
