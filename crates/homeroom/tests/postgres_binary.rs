//! Several `homeroom serve` processes on one PostgreSQL database: concurrent writers
//! through all of their APIs, then the audit trail, read from each of them, holds every
//! acknowledged event exactly once, in an order consistent with each stream; one
//! projector holder applies the log, the others stand by and answer.
//!
//! Needs PostgreSQL: under `CI=true` it fails without it, otherwise it says in one line
//! that it did not run.

use homeroom_tests::http::{position_text, Api, District, Server};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use uuid::Uuid;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_homeroom"))
}

/// A position token as a query value.
/// A runtime for the test's own calls, the server's URL and a schema of the test's own;
/// `None` (having said why in one line) where there is no PostgreSQL outside CI.
struct Postgres {
    rt: tokio::runtime::Runtime,
    pg: String,
    schema: String,
}

fn postgres() -> Option<Postgres> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pg = rt.block_on(homeroom_store_postgres::testing::postgres_or_skip())?;
    Some(Postgres {
        rt,
        pg,
        schema: homeroom_store_postgres::testing::unique_schema(),
    })
}

#[test]
fn several_servers_on_one_database_record_every_acknowledged_event_once_in_stream_order() {
    let Some(Postgres { rt, pg, schema }) = postgres() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("HOMEROOM_STORE", pg.clone()),
        ("HOMEROOM_PG_SCHEMA", schema.clone()),
    ];
    // Every node signs and checks tokens with the same key: the first node's.
    let key = dir.path().join("node0").join("jwt.key");
    let servers: Vec<(Server, Arc<Api>)> = (0..3)
        .map(|i| {
            let data = dir.path().join(format!("node{i}"));
            if i > 0 {
                std::fs::create_dir_all(&data).unwrap();
                std::fs::copy(&key, data.join("jwt.key")).unwrap();
            }
            let server = Server::start_with(&bin(), &data, &env);
            let api = Arc::new(server.api(&bin(), &data));
            (server, api)
        })
        .collect();
    let first = &servers[0].1;
    let d = District::build(first, "manynodes");
    let (name, school, principal, parent) = (d.name.clone(), d.school, d.principal, d.parent);
    let system = d.system_token();

    // A few shared conversations (contended streams) and many writers on every node.
    let conversations: Vec<Uuid> = (0..4)
        .map(|_| {
            let id = Uuid::now_v7();
            d.by(
                principal,
                "StartConversation",
                json!({"conversation_id": id, "school_id": school, "participant_ids": [parent], "body": "Welcome"}),
            )
            .ok();
            id
        })
        .collect();
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let api = servers[w % servers.len()].1.clone();
            let token = api.token(&name, &principal.to_string(), false);
            let conversations = conversations.clone();
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for i in 0..25 {
                    let conversation = conversations[(w + i) % conversations.len()];
                    let reply = api.command(
                        &token,
                        "PostMessage",
                        &json!({"conversation_id": conversation, "message_id": Uuid::now_v7(), "body": format!("writer {w} message {i}")}),
                        Some(Uuid::now_v7()),
                    );
                    assert_eq!(reply.status, 200, "{}", reply.text);
                    acknowledged.push(reply.body);
                }
                acknowledged
            })
        })
        .collect();
    let acknowledged: Vec<Value> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("a writer"))
        .collect();
    assert_eq!(acknowledged.len(), 6 * 25);

    // Wait for the last acknowledged position (tokens sort in delivery order).
    let last = acknowledged
        .iter()
        .map(|a| position_text(&a["position"]))
        .max()
        .unwrap();
    let expected: HashSet<(String, u64)> = acknowledged
        .iter()
        .flat_map(|a| a["events"].as_array().unwrap().clone())
        .map(|e| {
            (
                e["stream"].as_str().unwrap().to_owned(),
                e["version"].as_u64().unwrap(),
            )
        })
        .collect();
    for (_, api) in &servers {
        let events = api.audit_trail(&system, &last);
        let mut seen = HashSet::new();
        let mut last_version: HashMap<String, u64> = HashMap::new();
        for e in &events {
            let stream = e["stream"].as_str().unwrap().to_owned();
            let version = e["version"].as_u64().unwrap();
            assert!(
                seen.insert((stream.clone(), version)),
                "{stream} version {version} appears twice"
            );
            let previous = last_version.insert(stream.clone(), version).unwrap_or(0);
            assert!(
                version > previous,
                "{stream}: version {version} after {previous}"
            );
        }
        let missing: Vec<_> = expected.difference(&seen).collect();
        assert!(
            missing.is_empty(),
            "acknowledged but not in the audit trail: {missing:?}"
        );
    }
    let verified = first.read(&system, "/v1/audit/verify");
    assert_eq!(verified.ok()["ok"], true, "{}", verified.text);

    // With the in-process bus, one node at a time sends the schema's deliveries (the
    // others stand by): every outcome was recorded by the same node, never by two.
    let recorded_outcomes = |api: &Api| -> f64 {
        let metrics = api.get("/metrics").text;
        metrics
            .lines()
            .filter(|l| l.starts_with("homeroom_commands_total{command=\"RecordDeliveryOutcome\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let sending = |servers: &[(Server, Arc<Api>)]| -> Vec<usize> {
        (0..servers.len())
            .filter(|&i| recorded_outcomes(&servers[i].1) > 0.0)
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sending(&servers).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let senders = sending(&servers);
    assert_eq!(senders.len(), 1, "nodes that sent deliveries: {senders:?}");

    for (server, _) in servers {
        assert!(server.terminate().success());
    }
    rt.block_on(async {
        homeroom_store_postgres::testing::drop_schema(&pg, &schema).await;
        homeroom_store_postgres::testing::drop_schema(&pg, &format!("{schema}_read")).await;
    });
}

#[test]
fn inspecting_a_schema_that_holds_no_log_is_refused_and_creates_nothing() {
    let Some(Postgres { rt, pg, schema }) = postgres() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["audit", "verify"][..],
        &["projections", "status"],
        &["audit", "export", "--district", "springfield"],
    ] {
        let out = std::process::Command::new(bin())
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env("HOMEROOM_STORE", &pg)
            .env("HOMEROOM_PG_SCHEMA", &schema)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("no instance in the PostgreSQL schema"),
            "{args:?}: {stderr}"
        );
    }
    let created = rt.block_on(homeroom_store_postgres::PgStore::holds_log(&pg, &schema));
    assert!(!created.unwrap(), "a log was made for the typo");
}

#[test]
fn an_embedded_instance_moves_to_postgres_with_every_event_and_hash_intact() {
    let Some(Postgres { rt, pg, schema }) = postgres() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    // An embedded instance with some history.
    let server = Server::start(&bin(), &data);
    let api = server.api(&bin(), &data);
    let d = District::build(&api, "movingday");
    let sent = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.teen, "body": "Moving to the server"}),
        )
        .ok()
        .clone();
    let system = d.system_token();
    let before = api.audit_trail(&system, &position_text(&sent["position"]));
    assert!(server.terminate().success());
    // A records officer keeps an export of the district, taken before the move.
    let exported = std::process::Command::new(bin())
        .args(["audit", "export", "--district", &d.name, "--data-dir"])
        .arg(&data)
        .env_remove("HOMEROOM_STORE")
        .output()
        .unwrap();
    assert!(exported.status.success(), "{exported:?}");
    let export_file = dir.path().join("before-the-move.jsonl");
    std::fs::write(&export_file, &exported.stdout).unwrap();

    let migrate = || {
        std::process::Command::new(bin())
            .args(["migrate", "sqlite-to-postgres", "--to", &pg, "--data-dir"])
            .arg(&data)
            .env("HOMEROOM_PG_SCHEMA", &schema)
            .env_remove("HOMEROOM_STORE")
            .output()
            .unwrap()
    };
    let out = migrate();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("every hash chain verified"), "{text}");
    // Run again: it resumes, finds everything there, writes nothing.
    let again = String::from_utf8_lossy(&migrate().stdout).into_owned();
    assert!(again.contains(", 0 written)"), "{again}");

    // An auditor checks the moved log before any server ran on it: the chains, and no
    // read models created in passing.
    let verified = std::process::Command::new(bin())
        .args(["audit", "verify", "--data-dir"])
        .arg(&data)
        .env("HOMEROOM_STORE", &pg)
        .env("HOMEROOM_PG_SCHEMA", &schema)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&verified.stdout).into_owned(),
        String::from_utf8_lossy(&verified.stderr).into_owned(),
    );
    assert!(verified.status.success(), "{out} {err}");
    assert!(out.contains("every hash chain holds"), "{out}");
    assert!(err.contains("no read models here"), "{err}");
    let read_schema = format!("{schema}_read");
    assert!(
        !rt.block_on(homeroom_projections::ReadDb::postgres_holds(
            &pg,
            &read_schema
        ))
        .unwrap(),
        "no read models made"
    );

    // The export taken before the move still checks against the moved log, whose
    // positions are PostgreSQL's now.
    let checked = std::process::Command::new(bin())
        .args(["audit", "check-export"])
        .arg(&export_file)
        .arg("--data-dir")
        .arg(&data)
        .env("HOMEROOM_STORE", &pg)
        .env("HOMEROOM_PG_SCHEMA", &schema)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{} {}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // Exporting and checking read the log alone: still no read models made.
    let exported_again = std::process::Command::new(bin())
        .args(["audit", "export", "--district", &d.name, "--data-dir"])
        .arg(&data)
        .env("HOMEROOM_STORE", &pg)
        .env("HOMEROOM_PG_SCHEMA", &schema)
        .output()
        .unwrap();
    assert!(exported_again.status.success(), "{exported_again:?}");
    assert!(
        !rt.block_on(homeroom_projections::ReadDb::postgres_holds(
            &pg,
            &read_schema
        ))
        .unwrap(),
        "no read models made by exporting or checking"
    );

    // The same instance on PostgreSQL: the same events, ids, hashes and chains.
    let env = vec![
        ("HOMEROOM_STORE", pg.clone()),
        ("HOMEROOM_PG_SCHEMA", schema.clone()),
    ];
    let server = Server::start_with(&bin(), &data, &env);
    let api = server.api(&bin(), &data);
    let head = api.head();
    let after = api.audit_trail(&system, &position_text(&head));
    let key = |e: &Value| {
        (
            e["event_id"].clone(),
            e["stream"].clone(),
            e["version"].clone(),
            e["hash"].clone(),
            e["prev_hash"].clone(),
            e["recorded_at"].clone(),
        )
    };
    let moved: Vec<_> = after.iter().map(key).collect();
    for e in &before {
        assert!(
            moved.contains(&key(e)),
            "{} was not moved as it was",
            e["event_id"]
        );
    }
    let verified = api.read(&system, "/v1/audit/verify");
    assert_eq!(verified.ok()["ok"], true, "{}", verified.text);
    let principal = api.token(&d.name, &d.principal.to_string(), false);
    let conversation = sent["conversation_id"].as_str().unwrap();
    let thread = api.read(
        &principal,
        &format!(
            "/v1/conversations/{conversation}?min_position={}",
            position_text(&head)
        ),
    );
    assert_eq!(thread.ok()["messages"][0]["body"], "Moving to the server");
    // A position the embedded instance answered (a number) means nothing here: refused,
    // not read as before everything.
    assert!(sent["position"].is_u64(), "{sent}");
    api.read(
        &principal,
        &format!(
            "/v1/conversations/{conversation}?min_position={}",
            sent["position"]
        ),
    )
    .refused(400, "validation");
    assert!(server.terminate().success());
    rt.block_on(async {
        homeroom_store_postgres::testing::drop_schema(&pg, &schema).await;
        homeroom_store_postgres::testing::drop_schema(&pg, &format!("{schema}_read")).await;
    });
}
