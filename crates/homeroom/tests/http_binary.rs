//! The real `homeroom` binary on a temporary data directory and a free port: the seeds'
//! scenarios over HTTP (shared with `tests/tests/http_scenarios.rs`), graceful shutdown
//! under load, the CLI's subcommands, and its configuration errors.

use homeroom_tests::http::{Api, District, Server, SCENARIOS};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;
use uuid::Uuid;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_homeroom"))
}

fn start(data: &Path) -> (Server, Api) {
    let server = Server::start(&bin(), data);
    let api = server.api(&bin(), data);
    (server, api)
}

#[test]
fn every_scenario_against_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, api) = start(&data);
    let banner = server.banner.join("\n");
    assert!(
        banner.contains("data directory:") && banner.contains(&*data.to_string_lossy()),
        "it says where its data is: {banner}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("jwt.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key is the owner's only");
        // So is what it holds: every message of the district.
        let mode_of =
            |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode_of(&data), 0o700, "the data directory");
        for file in ["events.sqlite", "read.sqlite"] {
            assert_eq!(mode_of(&data.join(file)), 0o600, "{file}");
        }
    }
    for (name, scenario) in SCENARIOS {
        eprintln!("scenario {name}");
        scenario(&api);
    }
    let metrics = api.get("/metrics");
    assert!(
        metrics.text.contains(
            r#"homeroom_commands_total{command="SendPersonalMessage",outcome="recipient_too_young"}"#
        ),
        "{}",
        metrics.text
    );
    assert!(metrics
        .text
        .contains("homeroom_command_duration_seconds_bucket{command=\"RegisterSchool\""));
    // The delivery runtime's commands are counted too, each once.
    for line in [
        r#"homeroom_commands_total{command="QueueDelivery",outcome="ok"}"#,
        r#"homeroom_commands_total{command="RecordDeliveryOutcome",outcome="ok"}"#,
    ] {
        assert!(metrics.text.contains(line), "{line}: {}", metrics.text);
    }
    let posted = |text: &str| -> u64 {
        text.lines()
            .find(|l| {
                l.starts_with(
                    r#"homeroom_commands_total{command="SendPersonalMessage",outcome="ok"}"#,
                )
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let before = posted(&metrics.text);
    let d = District::build(&api, "countville");
    d.by(
        d.principal,
        "SendPersonalMessage",
        serde_json::json!({"recipient_id": d.teen, "body": "Counted once"}),
    )
    .ok();
    assert_eq!(posted(&api.get("/metrics").text), before + 1, "not twice");
    let doc = api.get("/openapi.json");
    assert_eq!(doc.ok()["openapi"], "3.1.0");
    assert_eq!(api.get("/healthz").ok()["status"], "ok");
    assert!(server.terminate().success());
}

#[test]
fn sigterm_during_load_exits_0_and_every_acknowledged_command_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, api) = start(&data);
    let api = std::sync::Arc::new(api);
    let (school, principal, parent, name) = {
        let d = District::build(&api, "loadtown");
        (d.school, d.principal, d.parent, d.name.clone())
    };
    let token = api.token(&name, &principal.to_string(), false);

    let (acked_tx, acked_rx) = mpsc::channel();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (api, token, acked_tx) = (api.clone(), token.clone(), acked_tx.clone());
            std::thread::spawn(move || {
                for i in 0..2_000 {
                    let key = Uuid::now_v7();
                    let body = json!({"conversation_id": Uuid::now_v7(), "school_id": school, "participant_ids": [parent], "body": format!("Notice {i}")});
                    let Ok(reply) = api.try_post(
                        &token,
                        "/v1/commands/StartConversation",
                        "application/json",
                        &body.to_string(),
                        Some(key),
                    ) else {
                        return; // the server is gone
                    };
                    match reply.status {
                        200 => {
                            if acked_tx.send((key, body, reply.body)).is_err() {
                                return;
                            }
                        }
                        // Refused while shutting down: not acknowledged, fine.
                        503 => {}
                        other => panic!("unexpected {other}: {}", reply.text),
                    }
                }
            })
        })
        .collect();
    drop(acked_tx);

    let mut acked = Vec::new();
    while acked.len() < 40 {
        acked.push(
            acked_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("commands are acknowledged under load"),
        );
    }
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    for worker in workers {
        worker.join().expect("no worker saw an unexpected answer");
    }
    acked.extend(acked_rx.try_iter());

    let (server, api) = start(&data);
    let token = api.token(&name, &principal.to_string(), false);
    for (key, body, first) in &acked {
        let again = api.command(&token, "StartConversation", body, Some(*key));
        assert_eq!(
            again.ok(),
            first,
            "acknowledged command {key} answers as first"
        );
        assert!(
            again.replayed,
            "command {key} was recorded before the shutdown"
        );
    }
    eprintln!("{} acknowledged commands all survived", acked.len());
    assert!(server.terminate().success());
}

fn homeroom(args: &[&str], data: &Path) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("HOMEROOM_STORE")
        .output()
        .expect("homeroom runs")
}

#[test]
fn a_family_reads_the_machine_translation_they_were_sent_beside_the_original() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let translator = rt
        .block_on(homeroom_translate_libre::fake::FakeLibreTranslate::start())
        .unwrap();
    translator.learn("en", "es", "Field trip on Friday", "Excursión el viernes");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [
        ("HOMEROOM_TRANSLATOR", "libretranslate".to_owned()),
        ("HOMEROOM_TRANSLATE_URL", translator.base_url()),
    ];
    let server = Server::start_with(&bin(), &data, &env);
    let api = server.api(&bin(), &data);
    let d = District::build(&api, "translated");
    let abuela = Uuid::now_v7();
    d.system(
        "RegisterPerson",
        json!({"person_id": abuela, "kind": "guardian", "name": "Rosa", "school_ids": [d.school],
               "language": "es", "contact_points": [{"channel": "sms", "address": "+15550004004"}]}),
    );
    let sent = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": abuela, "body": "Field trip on Friday"}),
        )
        .ok()
        .clone();
    let conversation = sent["conversation_id"].as_str().unwrap().to_owned();
    let rosa = api.token(&d.name, &abuela.to_string(), false);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let message = loop {
        let thread = api.read(
            &rosa,
            &format!(
                "/v1/conversations/{conversation}?{}",
                homeroom_tests::http::after(&sent)
            ),
        );
        let message = thread.ok()["messages"][0].clone();
        if message["machine_translated"] == true || std::time::Instant::now() > deadline {
            break message;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(message["body"], "Excursión el viernes", "{message}");
    assert_eq!(message["language"], "es");
    assert_eq!(message["original_body"], "Field trip on Friday");
    let principal = api.token(&d.name, &d.principal.to_string(), false);
    let own = api.read(&principal, &format!("/v1/conversations/{conversation}"));
    assert_eq!(own.ok()["messages"][0]["body"], "Field trip on Friday");
    assert_eq!(own.ok()["messages"][0]["machine_translated"], false);
    assert!(translator.requests().iter().any(
        |r| r.q.as_deref() == Some("Field trip on Friday") && r.target.as_deref() == Some("es")
    ));
    assert!(server.terminate().success());
}

#[test]
fn a_second_server_on_the_same_embedded_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, _api) = start(&data);
    let second = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("HOMEROOM_STORE")
        .env_remove("HOMEROOM_BUS")
        .output()
        .expect("homeroom runs");
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another `homeroom serve` is already serving")
            && stderr.contains(&format!("pid {}", server.pid())),
        "{stderr}"
    );
    assert!(server.terminate().success());
    // Once the first has stopped, the directory may be served again.
    let (again, _api) = start(&data);
    assert!(again.terminate().success());
}

#[test]
fn inspecting_an_instance_that_does_not_exist_is_refused_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo");
    for args in [
        &["projections", "status"][..],
        &["projections", "rebuild", "--all"],
        &["audit", "verify"],
        &["audit", "unrouted"],
    ] {
        let out = homeroom(args, &missing);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no instance at"), "{args:?}: {stderr}");
        assert!(!missing.exists(), "{args:?} created the data directory");
    }
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["token", "--help"],
        &["import", "--help"],
        &["import", "roles", "--help"],
        &["projections", "status", "--help"],
        &["projections", "rebuild", "--help"],
        &["audit", "verify", "--help"],
        &["audit", "unrouted", "--help"],
        &["worker", "--help"],
        &["migrate", "sqlite-to-postgres", "--help"],
    ] {
        let out = Command::new(bin()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
    let serve = Command::new(bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&serve.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--config",
        "--store",
        "--jwt-key-file",
    ] {
        assert!(text.contains(flag), "serve --help lacks {flag}");
    }
}

#[test]
fn token_refuses_an_identity_that_would_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let out = homeroom(
        &["token", "--district", "north", "--subject", "sis-sync"],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("UUID"));
    let out = homeroom(
        &[
            "token",
            "--district",
            "no good",
            "--subject",
            "sis",
            "--scope",
            "system",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    let out = homeroom(
        &[
            "token",
            "--district",
            "north",
            "--subject",
            "sis",
            "--scope",
            "system",
            "--ttl",
            "2h",
        ],
        dir.path(),
    );
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");
}

#[test]
fn wrong_or_incomplete_settings_are_refused_at_start_without_echoing_credentials() {
    let dir = tempfile::tempdir().unwrap();
    // An address that cannot be listened on is refused before an instance is made.
    let fresh = dir.path().join("never-served");
    let out = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:99999", "--data-dir"])
        .arg(&fresh)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on 127.0.0.1:99999"), "{err}");
    assert!(!fresh.exists(), "nothing created: {err}");
    // NATS that does not answer (nothing listens on port 1) is refused before an
    // instance is made too.
    let out = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&fresh)
        .env("HOMEROOM_BUS", "nats://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NATS"), "{err}");
    assert!(!fresh.exists(), "nothing created: {err}");
    let out = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("HOMEROOM_STORE", "mysql://app:hunter2@localhost/homeroom")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HOMEROOM_STORE"), "{err}");
    assert!(!err.contains("hunter2"), "no credentials echoed: {err}");
    let config = dir.path().join("homeroom.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nsms = \"twilio\"\n").unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("HOMEROOM_TWILIO_ACCOUNT_SID")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HOMEROOM_TWILIO_ACCOUNT_SID"), "{err}");
    let out = Command::new(bin())
        .args(["worker", "--data-dir"])
        .arg(dir.path())
        .env_remove("HOMEROOM_BUS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HOMEROOM_BUS"), "a worker needs NATS: {err}");
    // Nor does it make an instance of its own where there is none: it would record
    // outcomes where no server reads them.
    let fresh = dir.path().join("no-instance-here");
    let out = Command::new(bin())
        .args(["worker", "--data-dir"])
        .arg(&fresh)
        .env("HOMEROOM_BUS", "nats://127.0.0.1:4222")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no instance"), "{err}");
    assert!(!fresh.exists(), "nothing created: {err}");
    drop(start(dir.path()));
    // A NATS server that does not answer: said in one line, without the password.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = Command::new(bin())
        .args(["worker", "--data-dir"])
        .arg(dir.path())
        .env(
            "HOMEROOM_BUS",
            format!("nats://natsuser:SeCrEtNats@127.0.0.1:{port}"),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NATS"), "{err}");
    assert!(!err.contains("SeCrEtNats"), "no credentials echoed: {err}");
}

#[test]
fn import_roles_applies_good_rows_reports_bad_ones_and_is_idempotent_with_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, api) = start(&data);
    let d = District::build(&api, "importville");
    d.system(
        "DefineRole",
        json!({"role_id": "messenger", "name": "Personal messages", "permissions": ["personal_messages"]}),
    );
    let (name, school, technician, parent) = (d.name.clone(), d.school, d.technician, d.parent);
    assert!(server.terminate().success());

    let csv = dir.path().join("roles.csv");
    std::fs::write(
        &csv,
        format!(
            "person_id,role_id,school_id\n{technician},messenger,{school}\n{technician},no_such_role,{school}\nnot-a-uuid,teacher,\n"
        ),
    )
    .unwrap();
    let key = Uuid::now_v7().to_string();
    let run = || {
        homeroom(
            &[
                "import",
                "roles",
                csv.to_str().unwrap(),
                "--district",
                &name,
                "--idempotency-key",
                &key,
            ],
            &data,
        )
    };
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "some rows were rejected: {text}"
    );
    assert!(text.contains("3 rows, 1 accepted, 2 rejected"), "{text}");
    assert!(text.contains("row 2: unknown_role"), "{text}");
    assert!(text.contains("row 3: validation"), "{text}");
    let again = run();
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        text,
        "the same answer again"
    );

    let (server, api) = start(&data);
    let token = api.token(&name, &technician.to_string(), false);
    api.command(
        &token,
        "SendPersonalMessage",
        &json!({"recipient_id": parent, "body": "Hello"}),
        None,
    )
    .ok();
    assert!(server.terminate().success());
}

#[test]
fn projections_rebuild_while_serving_and_the_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, api) = start(&data);
    let d = District::build(&api, "rebuildton");
    let sent = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.teen, "body": "Picture day is Tuesday"}),
        )
        .ok()
        .clone();
    let principal = api.token(&d.name, &d.principal.to_string(), false);
    let min = format!("min_position={}", sent["position"]);
    let before = api
        .read(&principal, &format!("/v1/inbox?{min}"))
        .ok()
        .clone();
    assert_eq!(before["conversations"].as_array().unwrap().len(), 1);

    let status = homeroom(&["projections", "status", "--json"], &data);
    assert!(status.status.success(), "{status:?}");
    let listed: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in ["directory", "conversations", "deliveries", "audit"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }

    // Rebuilt by another process while the server answers; then the same views.
    let rebuilt = homeroom(&["projections", "rebuild", "--all"], &data);
    let text = String::from_utf8_lossy(&rebuilt.stdout).into_owned();
    assert!(rebuilt.status.success(), "{text} {rebuilt:?}");
    assert!(text.contains("conversations: version"), "{text}");
    let after = api
        .read(&principal, &format!("/v1/inbox?{min}"))
        .ok()
        .clone();
    assert_eq!(after, before, "the rebuilt views answer the same");
    let unknown = homeroom(&["projections", "rebuild", "no-such"], &data);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no-such"));

    let verified = homeroom(&["audit", "verify", "--district", &d.name], &data);
    let text = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(verified.status.success(), "{text}");
    assert!(text.contains("every hash chain holds"), "{text}");
    // A mistyped district holds nothing: not "every chain holds".
    let typo = homeroom(&["audit", "verify", "--district", "rebuildtown"], &data);
    assert!(!typo.status.success(), "{typo:?}");
    assert!(
        String::from_utf8_lossy(&typo.stderr).contains("no events of district"),
        "{typo:?}"
    );
    assert!(server.terminate().success());

    // The log alone, as handed to an auditor: the reports check and say what they can,
    // and create no read models.
    let handed = dir.path().join("handed-over");
    std::fs::create_dir(&handed).unwrap();
    std::fs::copy(data.join("events.sqlite"), handed.join("events.sqlite")).unwrap();
    let verified = homeroom(&["audit", "verify"], &handed);
    let (out, err) = (
        String::from_utf8_lossy(&verified.stdout).into_owned(),
        String::from_utf8_lossy(&verified.stderr).into_owned(),
    );
    assert!(verified.status.success(), "{out} {err}");
    assert!(out.contains("every hash chain holds"), "{out}");
    assert!(!out.contains("checked 0 events"), "{out}");
    assert!(err.contains("no read models here"), "{err}");
    let status = homeroom(&["projections", "status"], &handed);
    assert!(status.status.success(), "{status:?}");
    assert!(
        String::from_utf8_lossy(&status.stderr).contains("no read models here yet"),
        "{status:?}"
    );
    assert!(
        !handed.join("read.sqlite").exists(),
        "nothing built or created"
    );
}

#[test]
fn an_audit_export_checks_against_the_log_and_shows_lines_taken_out_or_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, api) = start(&data);
    let d = District::build(&api, "exportburg");
    d.by(
        d.principal,
        "SendPersonalMessage",
        json!({"recipient_id": d.teen, "body": "Picture day is Tuesday"}),
    )
    .ok();
    assert!(server.terminate().success());

    let exported = homeroom(&["audit", "export", "--district", &d.name], &data);
    assert!(exported.status.success(), "{exported:?}");
    let text = String::from_utf8(exported.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let check = |name: &str, lines: &[&str]| {
        let file = dir.path().join(name);
        let mut body = lines.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        std::fs::write(&file, body).unwrap();
        let out = homeroom(&["audit", "check-export", file.to_str().unwrap()], &data);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), said)
    };
    let (code, said) = check("whole.jsonl", &lines);
    assert_eq!(code, Some(0), "{said}");

    // A whole stream taken out (the school's registration, its only event).
    let school: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let stream = school["stream"].as_str().unwrap().to_owned();
    let without: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["stream"] != stream.as_str()
        })
        .collect();
    assert!(without.len() < lines.len());
    let (code, said) = check("cut.jsonl", &without);
    assert_eq!(code, Some(3), "{said}");
    assert!(
        said.contains(&format!("MISSING FROM THE FILE: {stream} version 1")),
        "{said}"
    );

    // A line cut in half: the file was altered there.
    let mut damaged = lines.clone();
    let half = &lines[2][..lines[2].len() / 2];
    damaged[2] = half;
    let (code, said) = check("damaged.jsonl", &damaged);
    assert_eq!(code, Some(3), "{said}");
    assert!(
        said.contains("ALTERED IN THE FILE: line 3 is not an exported event"),
        "{said}"
    );

    // An empty file proves nothing.
    let (code, said) = check("empty.jsonl", &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("holds no exported event"), "{said}");
}
