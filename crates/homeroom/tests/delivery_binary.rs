//! Delivery through real parts, as a server deployment runs it: `homeroom serve` and two
//! `homeroom worker` processes on PostgreSQL and NATS JetStream, texts through a local
//! server that speaks the Twilio Messages API (and posts signed status callbacks and
//! inbound texts), email through a real SMTP server on loopback. One worker is killed
//! with SIGKILL mid-run: nothing is lost and nothing the provider accepted is sent twice.
//!
//! Needs PostgreSQL and NATS (see `homeroom_store_postgres::testing` and
//! `homeroom_bus_nats::testing`): under `CI=true` it fails without them, otherwise it
//! says in one line that it did not run.

use homeroom_email_smtp::fake::FakeSmtp;
use homeroom_sms_twilio::fake::FakeTwilio;
use homeroom_tests::http::{position_text, Api, District, Server};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(60);
/// The school number of the district the flow builds.
fn school_number() -> String {
    homeroom_tests::school_number_of("deliveryville")
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_homeroom"))
}

/// Polls `check` (a read of the API) until it holds, bounded.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every delivery of every message of a conversation, by delivery id: (recipient, channel, status).
fn deliveries(
    api: &Api,
    token: &str,
    conversation: &str,
) -> HashMap<String, (String, String, String)> {
    let thread = api.read(token, &format!("/v1/conversations/{conversation}"));
    let mut out = HashMap::new();
    for m in thread.ok()["messages"].as_array().unwrap() {
        for d in m["deliveries"].as_array().unwrap() {
            out.insert(
                d["delivery_id"].as_str().unwrap().to_owned(),
                (
                    d["recipient_id"].as_str().unwrap().to_owned(),
                    d["channel"].as_str().unwrap().to_owned(),
                    d["status"].as_str().unwrap().to_owned(),
                ),
            );
        }
    }
    out
}

/// A number no district sends from.
const STRAY_NUMBER: &str = "+15559990000";

/// A runtime for the test's own calls, and the URLs of PostgreSQL and NATS; `None`
/// (having said why in one line) where either is missing outside CI.
fn services() -> Option<(tokio::runtime::Runtime, String, String)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pg = rt.block_on(homeroom_store_postgres::testing::postgres_or_skip())?;
    let nats = rt.block_on(homeroom_bus_nats::testing::nats_or_skip())?;
    Some((rt, pg, nats))
}

#[test]
fn messages_reach_people_by_sms_and_email_through_workers_one_of_them_killed() {
    let Some((rt, pg, nats)) = services() else {
        return;
    };
    let twilio = rt.block_on(FakeTwilio::start()).unwrap();
    let smtp = rt.block_on(FakeSmtp::start()).unwrap();
    let schema = homeroom_store_postgres::testing::unique_schema();
    let bus = homeroom_bus_nats::testing::unique_config();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = vec![
        ("HOMEROOM_STORE", pg.clone()),
        ("HOMEROOM_PG_SCHEMA", schema.clone()),
        ("HOMEROOM_BUS", nats.clone()),
        ("HOMEROOM_NATS_STREAM", bus.stream.clone()),
        ("HOMEROOM_NATS_PREFIX", bus.subject_prefix.clone()),
        ("HOMEROOM_NATS_ACK_WAIT", "3".to_owned()),
        ("HOMEROOM_SMS", "twilio".to_owned()),
        (
            "HOMEROOM_TWILIO_ACCOUNT_SID",
            twilio.account_sid().to_owned(),
        ),
        ("HOMEROOM_TWILIO_AUTH_TOKEN", twilio.auth_token().to_owned()),
        ("HOMEROOM_TWILIO_BASE_URL", twilio.base_url()),
        ("HOMEROOM_EMAIL", "smtp".to_owned()),
        ("HOMEROOM_SMTP_URL", smtp.url()),
        ("HOMEROOM_EMAIL_FROM", "office@lincoln.example".to_owned()),
    ];
    let server = Server::start_with(&bin(), &data, &env);
    assert!(
        server.banner.iter().any(|l| l.contains("PostgreSQL")),
        "{:?}",
        server.banner
    );
    let api = server.api(&bin(), &data);
    let mut worker_env = env.clone();
    worker_env.push(("HOMEROOM_PUBLIC_URL", format!("http://{}", server.addr)));
    let mut doomed = Some(Server::start_worker(&bin(), &data, &worker_env));
    let survivor = Server::start_worker(&bin(), &data, &worker_env);

    let d = District::build(&api, "deliveryville");
    let parent_number = "+15550002003";
    let principal = api.token(&d.name, &d.principal.to_string(), false);

    // A burst of texts to the parent; one worker dies in the middle of it.
    let first = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.parent, "body": "Message 0"}),
        )
        .ok()
        .clone();
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    let burst = 30;
    for i in 1..burst {
        d.by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.parent, "body": format!("Message {i}")}),
        )
        .ok();
        if i == 10 {
            if let Some(worker) = doomed.take() {
                worker.kill();
            }
        }
    }
    rt.block_on(twilio.wait_for_messages(burst, PATIENCE))
        .expect("every text reaches the provider");
    let messages = twilio.messages();
    let to_parent: Vec<_> = messages.iter().filter(|m| m.to == parent_number).collect();
    assert_eq!(to_parent.len(), burst, "each text was sent exactly once");
    let bodies: HashSet<&str> = to_parent.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies.len(), burst, "no text twice, none missing");
    assert!(to_parent.iter().all(|m| m.from == school_number().as_str()));
    assert!(to_parent.iter().all(|m| m
        .status_callback
        .as_deref()
        .is_some_and(|u| u.contains("/v1/webhooks/twilio/status?district=deliveryville"))));

    // Twilio reports them delivered, with signed callbacks: the thread shows it.
    for m in &to_parent {
        let answered = rt.block_on(twilio.deliver(&m.sid)).unwrap();
        assert_eq!(answered.status, 200, "a signed status callback is accepted");
    }
    eventually("every text shown delivered", || {
        let all = deliveries(&api, &principal, &conversation);
        (all.len() == burst
            && all
                .values()
                .all(|(_, channel, status)| channel == "sms" && status == "delivered"))
        .then_some(())
    });

    // Email: a guardian who prefers it gets it over SMTP; a bounce falls back to SMS.
    let reader = Uuid::now_v7();
    let bouncer = Uuid::now_v7();
    d.system(
        "RegisterPerson",
        json!({"person_id": reader, "kind": "guardian", "name": "Edna", "school_ids": [d.school],
               "preferred_channel": "email", "contact_points": [{"channel": "email", "address": "edna@example.org"}]}),
    );
    d.system(
        "RegisterPerson",
        json!({"person_id": bouncer, "kind": "guardian", "name": "Ned", "school_ids": [d.school],
               "preferred_channel": "email",
               "contact_points": [{"channel": "email", "address": "ned@example.org"}, {"channel": "sms", "address": "+15550004004"}]}),
    );
    smtp.reject("ned@example.org", 550);
    let to_reader = d
        .by(d.principal, "SendPersonalMessage", json!({"recipient_id": reader, "body": "Conference on Tuesday", "subject": "Conferences"}))
        .ok()
        .clone();
    let to_bouncer = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": bouncer, "body": "Field trip form"}),
        )
        .ok()
        .clone();
    let mail = rt
        .block_on(smtp.wait_for_messages(1, PATIENCE))
        .expect("the email arrives");
    assert_eq!(mail[0].header("Subject"), Some("Conferences"));
    assert!(mail[0].body.contains("Conference on Tuesday"));
    let reader_conversation = to_reader["conversation_id"].as_str().unwrap().to_owned();
    eventually("the email shown sent", || {
        let all = deliveries(&api, &principal, &reader_conversation);
        all.values()
            .any(|(_, channel, status)| channel == "email" && status == "sent")
            .then_some(())
    });
    let fallback = eventually("the bounce falling back to SMS", || {
        twilio
            .messages()
            .into_iter()
            .find(|m| m.to == "+15550004004")
    });
    assert_eq!(fallback.body, "Field trip form\n- Principal Skinner");
    // The records officer's export says why the email failed.
    let bouncer_conversation = to_bouncer["conversation_id"].as_str().unwrap().to_owned();
    let why = eventually("the bounce's reason in the export", || {
        let export = api.read(
            &principal,
            &format!("/v1/conversations/{bouncer_conversation}/export?format=json"),
        );
        let doc: Value = serde_json::from_str(&export.text).ok()?;
        doc["messages"][0]["deliveries"]
            .as_array()?
            .iter()
            .find(|d| d["channel"] == "email" && d["status"] == "failed")
            .and_then(|d| d["error"].as_str().map(str::to_owned))
    });
    assert!(why.contains("550"), "{why}");

    // Two people of the district share a phone: texts to it say whom they are for.
    let (ann, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let mut registered = Value::Null;
    for (id, name) in [(ann, "Ann Smith"), (bob, "Bob Smith")] {
        registered = d.system(
            "RegisterPerson",
            json!({"person_id": id, "kind": "guardian", "name": name, "school_ids": [d.school],
                   "contact_points": [{"channel": "sms", "address": "+15550005005"}]}),
        );
    }
    // The directory read model knows both before the text goes out.
    api.read(
        &principal,
        &format!("/v1/inbox?{}", homeroom_tests::http::after(&registered)),
    )
    .ok();
    d.by(
        d.principal,
        "SendPersonalMessage",
        json!({"recipient_id": ann, "body": "Bake sale Friday"}),
    )
    .ok();
    let shared = eventually("the text to the shared phone", || {
        twilio
            .messages()
            .into_iter()
            .find(|m| m.to == "+15550005005")
    });
    assert_eq!(
        shared.body,
        "For Ann: Bake sale Friday\n- Principal Skinner"
    );

    // Both in a group that was then stopped: a text from their phone is kept, and both
    // of them find it, since either may have typed it.
    let group = Uuid::now_v7();
    d.by(
        d.principal,
        "StartConversation",
        json!({"conversation_id": group, "school_id": d.school, "participant_ids": [ann, bob],
               "body": "Volunteers?"}),
    )
    .ok();
    let asked = eventually("both texts of the group", || {
        let texts: Vec<_> = twilio
            .messages()
            .into_iter()
            .filter(|m| m.to == "+15550005005" && m.body.contains("Volunteers?"))
            .collect();
        (texts.len() == 2).then_some(texts)
    });
    // Replies find the group once its line records both texts.
    eventually("the group's texts on the SMS line", || {
        let audit = api.read(&d.system_token(), "/v1/audit?limit=1000");
        let lines = audit.ok()["events"]
            .as_array()?
            .iter()
            .filter(|e| {
                e["type"] == "sms_line_used" && e["data"]["conversation_id"] == group.to_string()
            })
            .count();
        (lines == 2).then_some(())
    });
    d.by(
        d.principal,
        "StopConversation",
        json!({"conversation_id": group}),
    )
    .ok();
    let refused = rt
        .block_on(twilio.send_inbound(
            &format!("http://{}/v1/webhooks/twilio/inbound", server.addr),
            "+15550005005",
            &asked[0].from,
            "We can both help",
        ))
        .unwrap();
    assert_eq!(refused.status, 200);
    for guardian in [ann, bob] {
        let token = api.token(&d.name, &guardian.to_string(), false);
        eventually("the kept text in each sharer's thread", || {
            let thread = api.read(&token, &format!("/v1/conversations/{group}"));
            (thread.status == 200).then_some(())?;
            thread.ok()["refused_replies"]
                .as_array()?
                .iter()
                .any(|r| r["body"] == "We can both help")
                .then_some(())
        });
    }

    // Replies: a signed inbound text lands in the conversation; an unsigned one is 403.
    let inbound_url = format!("http://{}/v1/webhooks/twilio/inbound", server.addr);
    let answer = rt
        .block_on(twilio.send_inbound(
            &inbound_url,
            parent_number,
            school_number().as_str(),
            "Thank you!",
        ))
        .unwrap();
    assert_eq!(answer.status, 200);
    eventually("the reply in the thread", || {
        let thread = api.read(&principal, &format!("/v1/conversations/{conversation}"));
        thread.ok()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["body"] == "Thank you!" && m["author_id"] == d.parent.to_string())
            .then_some(())
    });
    let forged = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .post(&inbound_url)
        .header("X-Twilio-Signature", "bm90IGEgc2lnbmF0dXJl")
        .send_form([
            ("From", parent_number),
            ("To", school_number().as_str()),
            ("Body", "forged"),
            ("MessageSid", "SMforged"),
        ])
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);

    // STOP: nothing more goes to the number by SMS.
    let stop = rt
        .block_on(twilio.send_inbound(
            &inbound_url,
            parent_number,
            school_number().as_str(),
            "STOP",
        ))
        .unwrap();
    assert_eq!(stop.status, 200);
    let before = twilio
        .messages()
        .iter()
        .filter(|m| m.to == parent_number)
        .count();
    let blocked = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.parent, "body": "After STOP"}),
        )
        .ok()
        .clone();
    let blocked_delivery = blocked["delivery_ids"][0].as_str().unwrap().to_owned();
    eventually("the text to a number that said STOP failing", || {
        let all = deliveries(&api, &principal, &conversation);
        all.get(&blocked_delivery)
            .filter(|(_, _, status)| status == "failed")
            .map(|_| ())
    });
    assert_eq!(
        twilio
            .messages()
            .iter()
            .filter(|m| m.to == parent_number)
            .count(),
        before,
        "nothing was sent after STOP"
    );

    // A text to a number no district owns is kept under `_unrouted`: no district's
    // audit shows it, the operator's `homeroom audit unrouted` does (below).
    let stray = rt
        .block_on(twilio.send_inbound(&inbound_url, parent_number, STRAY_NUMBER, "Wrong number?"))
        .unwrap();
    assert_eq!(stray.status, 200);

    // The audit trail holds the inbound texts, the outcomes and the reactions.
    let audit = api.read(&d.system_token(), "/v1/audit?limit=1000");
    let types: HashSet<String> = audit.ok()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    for expected in [
        "delivery_queued",
        "delivery_sent",
        "delivery_delivered",
        "delivery_failed",
        "contact_point_failing",
        "sms_line_used",
        "inbound_sms_received",
        "inbound_sms_routed",
        "sms_opted_out",
    ] {
        assert!(
            types.contains(expected),
            "{expected} missing from {types:?}"
        );
    }

    // A reply to a stopped conversation is kept, not posted, and the family is told so.
    d.by(
        d.principal,
        "StopConversation",
        json!({"conversation_id": conversation}),
    )
    .ok();
    let late = rt
        .block_on(twilio.send_inbound(
            &inbound_url,
            parent_number,
            school_number().as_str(),
            "One more question",
        ))
        .unwrap();
    assert_eq!(late.status, 200);
    assert!(
        late.body.contains("this conversation has been closed"),
        "{}",
        late.body
    );
    // The audit trail is a read model: it shows the refusal once it has caught up.
    let kept = eventually("the kept reply in the audit trail", || {
        let audit = api.read(&d.system_token(), "/v1/audit?limit=1000");
        audit.ok()["events"]
            .as_array()?
            .iter()
            .find(|e| {
                e["type"] == "inbound_reply_refused" && e["data"]["body"] == "One more question"
            })
            .cloned()
    });
    // Staff find it beside the thread, and the records officer in the export.
    let at = match &kept["position"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let thread = api.read(
        &principal,
        &format!("/v1/conversations/{conversation}?min_position={at}"),
    );
    let refused = thread.ok()["refused_replies"].clone();
    assert_eq!(refused[0]["body"], "One more question", "{}", thread.text);
    assert_eq!(refused[0]["reason"], "conversation_stopped");
    assert_eq!(refused[0]["author_id"], d.parent.to_string());
    let csv = api.read(
        &principal,
        &format!("/v1/conversations/{conversation}/export?format=csv&min_position={at}"),
    );
    assert!(
        csv.text.lines().any(|l| l.starts_with("refused_reply,")
            && l.contains("One more question")
            && l.ends_with(",conversation_stopped,")),
        "{}",
        csv.text
    );

    survivor.kill();
    assert!(server.terminate().success());
    let listed = Command::new(bin())
        .args(["audit", "unrouted", "--data-dir"])
        .arg(&data)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let stray: Vec<Value> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["sms"]["to"] == STRAY_NUMBER)
        .collect();
    assert_eq!(stray.len(), 1, "{stray:?}");
    assert_eq!(stray[0]["sms"]["body"], "Wrong number?");
    assert_eq!(stray[0]["sms"]["from"], parent_number);
    let verified = Command::new(bin())
        .args(["audit", "verify", "--district", "_unrouted", "--data-dir"])
        .arg(&data)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(verified.status.success(), "{verified:?}");
    rt.block_on(async {
        homeroom_store_postgres::testing::drop_schema(&pg, &schema).await;
        homeroom_store_postgres::testing::drop_schema(&pg, &format!("{schema}_read")).await;
        homeroom_bus_nats::testing::delete_stream(&nats, &bus.stream).await;
    });
}

/// Every position the NATS stream `stream` holds, in stream order, once it holds
/// `count` messages (or when `patience` runs out).
fn positions_on_the_bus(
    rt: &tokio::runtime::Runtime,
    nats: &str,
    stream: &str,
    count: u64,
    patience: Duration,
) -> Vec<String> {
    rt.block_on(async {
        let client = async_nats::connect(nats).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut handle = js.get_stream(stream).await.unwrap();
        let deadline = Instant::now() + patience;
        loop {
            let held = handle.info().await.unwrap().state.messages;
            if held >= count || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let last = handle.info().await.unwrap().state.last_sequence;
        let mut positions = Vec::new();
        for sequence in 1..=last {
            if let Ok(message) = handle.get_raw_message(sequence).await {
                let position = message
                    .headers
                    .get(homeroom_bus_nats::POSITION_HEADER)
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default();
                positions.push(position);
            }
        }
        positions
    })
}

#[test]
fn servers_on_one_database_relay_the_log_one_at_a_time_and_one_takes_over() {
    let Some((rt, pg, nats)) = services() else {
        return;
    };
    let schema = homeroom_store_postgres::testing::unique_schema();
    let bus = homeroom_bus_nats::testing::unique_config();
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("HOMEROOM_STORE", pg.clone()),
        ("HOMEROOM_PG_SCHEMA", schema.clone()),
        ("HOMEROOM_BUS", nats.clone()),
        ("HOMEROOM_NATS_STREAM", bus.stream.clone()),
        ("HOMEROOM_NATS_PREFIX", bus.subject_prefix.clone()),
    ];
    // Both nodes run a relay (the default); the first to start holds the turn.
    let first_dir = dir.path().join("node0");
    let first = Server::start_with(&bin(), &first_dir, &env);
    let second_dir = dir.path().join("node1");
    std::fs::create_dir_all(&second_dir).unwrap();
    std::fs::copy(first_dir.join("jwt.key"), second_dir.join("jwt.key")).unwrap();
    let second = Server::start_with(&bin(), &second_dir, &env);
    let (api0, api1) = (
        first.api(&bin(), &first_dir),
        second.api(&bin(), &second_dir),
    );
    let d = District::build(&api0, "relayville");
    let (name, principal, parent) = (d.name.clone(), d.principal, d.parent);
    let post = |api: &Api, i: usize| -> String {
        let token = api.token(&name, &principal.to_string(), false);
        let reply = api.command(
            &token,
            "SendPersonalMessage",
            &json!({"recipient_id": parent, "body": format!("Message {i}")}),
            Some(Uuid::now_v7()),
        );
        assert_eq!(reply.status, 200, "{}", reply.text);
        position_text(&reply.body["position"])
    };
    for i in 0..20 {
        post(if i % 2 == 0 { &api0 } else { &api1 }, i);
    }
    // The relaying node dies; the other takes the turn and relays the rest.
    first.kill();
    let mut last = String::new();
    for i in 20..40 {
        last = post(&api1, i);
    }
    let system = d.system_token();
    let trail: Vec<String> = api1
        .audit_trail(&system, &last)
        .iter()
        .map(|e| position_text(&e["position"]))
        .collect();
    let on_the_bus = positions_on_the_bus(
        &rt,
        &nats,
        &bus.stream,
        trail.len() as u64,
        Duration::from_secs(30),
    );
    assert!(
        on_the_bus.windows(2).all(|w| w[0] < w[1]),
        "the stream holds the log in log order, every event once: {on_the_bus:?}"
    );
    let held: HashSet<&String> = on_the_bus.iter().collect();
    let missing: Vec<&String> = trail.iter().filter(|p| !held.contains(p)).collect();
    assert!(missing.is_empty(), "not on the stream: {missing:?}");
    assert!(second.terminate().success());
    rt.block_on(async {
        homeroom_bus_nats::testing::delete_stream(&nats, &bus.stream).await;
        homeroom_store_postgres::testing::drop_schema(&pg, &schema).await;
        homeroom_store_postgres::testing::drop_schema(&pg, &format!("{schema}_read")).await;
    });
}
