//! Every event shape ever stored must still load. `tests/samples/events.json` holds one
//! stored sample of each (event type, schema version); it only ever grows. When an event
//! changes shape, its old sample stays and the codec's upcaster must turn it into the new
//! one.
//!
//! To add samples for new event types, run this test with `UPDATE_EVENT_SAMPLES=1`: it
//! walks a scenario that records every kind of event and adds the shapes the file lacks
//! (existing samples are never rewritten).

use homeroom_app::codec;
use homeroom_domain::{commands, Event};
use homeroom_eventstore::{memory::InMemoryStore, EventReader, Position};
use homeroom_tests::District;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use uuid::Uuid;

fn samples_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/events.json")
}

/// `"type@version"` → stored data.
fn load_samples() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(samples_path()).expect("tests/samples/events.json exists");
    serde_json::from_str(&text).expect("the samples file is JSON")
}

#[test]
fn every_stored_sample_still_loads_and_round_trips() {
    for (key, data) in load_samples() {
        let (event_type, version) = key.split_once('@').expect("keys are type@version");
        let version: u32 = version.parse().expect("a numeric schema version");
        let event = codec::decode_parts(event_type, version, &data, Position::START)
            .unwrap_or_else(|e| panic!("sample {key} no longer loads: {e}"));
        assert_eq!(event.name(), event_type);
        if version == event.schema_version() {
            let encoded = codec::encode(&event, Default::default());
            assert_eq!(encoded.data, data, "{key} does not round-trip unchanged");
        }
    }
}

#[test]
fn every_event_type_has_a_sample_of_its_current_version() {
    let samples = load_samples();
    for name in Event::NAMES {
        assert!(
            samples.keys().any(|k| k.starts_with(&format!("{name}@"))),
            "no stored sample of {name}: run this test with UPDATE_EVENT_SAMPLES=1"
        );
    }
}

#[tokio::test]
async fn a_scenario_records_the_shapes_the_samples_hold() {
    let store = Arc::new(InMemoryStore::default());
    let d = District::build(store.clone(), "samples").await;
    walk_every_command(&d).await;
    let recorded = store.read_all(Position::START, 10_000).await.unwrap();
    let mut fresh = BTreeMap::new();
    for e in &recorded {
        codec::decode(e).expect("what the service records, it can read");
        fresh
            .entry(format!("{}@{}", e.event_type, e.schema_version))
            .or_insert_with(|| e.data.clone());
    }
    if std::env::var_os("UPDATE_EVENT_SAMPLES").is_some() {
        let mut samples = if samples_path().exists() {
            load_samples()
        } else {
            BTreeMap::new()
        };
        for (k, v) in fresh {
            samples.entry(k).or_insert(v);
        }
        std::fs::create_dir_all(samples_path().parent().unwrap()).unwrap();
        let text = serde_json::to_string_pretty(&samples).unwrap();
        std::fs::write(samples_path(), text + "\n").unwrap();
        return;
    }
    let samples = load_samples();
    for key in fresh.keys() {
        assert!(
            samples.contains_key(key),
            "the service records {key}, which has no stored sample: run with UPDATE_EVENT_SAMPLES=1"
        );
    }
}

/// Drives every command that records something today.
async fn walk_every_command(d: &District) {
    d.system(
        "DefineRole",
        json!({"role_id": "counselor", "name": "Counselor", "permissions": ["personal_messages", "student_record"]}),
    )
    .await;
    d.system(
        "ChangeDistrictSettings",
        json!({"students_in_conversations": true, "max_participants": 20, "default_channel": "email", "blocked_patterns": ["###-##-####"]}),
    )
    .await;
    d.system("AddSenderNumbers", json!({"numbers": ["+15550009001"]}))
        .await;
    d.system(
        "SetContactPreferences",
        json!({"person_id": d.parent, "preferred_channel": "sms", "language": "es"}),
    )
    .await;
    d.system(
        "SetContactPreferences",
        json!({"person_id": d.technician, "contact_points": [{"channel": "sms", "address": "+15550008888"}]}),
    )
    .await;
    // A guardian linked and then unlinked (a custody change).
    let former = Uuid::now_v7();
    d.system(
        "RegisterPerson",
        json!({"person_id": former, "kind": "guardian", "name": "Former", "school_ids": [d.school]}),
    )
    .await;
    for command in ["LinkGuardian", "UnlinkGuardian"] {
        d.system(
            command,
            json!({"guardian_id": former, "student_id": d.teen}),
        )
        .await;
    }
    d.system(
        "RevokeRole",
        json!({"person_id": d.technician, "role_id": "technical_school_admin", "school_id": d.school}),
    )
    .await;
    let conversation = Uuid::now_v7();
    let started = d
        .by(
            d.principal,
            "StartConversation",
            json!({"conversation_id": conversation, "school_id": d.school,
                   "participant_ids": [d.parent, d.teacher], "body": "Hello {recipient_name}", "title": "Field trip"}),
        )
        .await
        .unwrap();
    let message = started.message_id.unwrap();
    let c = json!({"conversation_id": conversation});
    for name in [
        "MuteConversation",
        "UnmuteConversation",
        "ArchiveConversation",
        "UnarchiveConversation",
    ] {
        d.by(d.parent, name, c.clone()).await.unwrap();
    }
    d.by(
        d.parent,
        "MarkRead",
        json!({"conversation_id": conversation, "up_to_message_id": message}),
    )
    .await
    .unwrap();
    d.by(
        d.principal,
        "RenameConversation",
        json!({"conversation_id": conversation, "title": "Field trip (May)"}),
    )
    .await
    .unwrap();

    // Deliveries: queued by the process manager, then outcomes from workers.
    let store_events = d.store.read_all(Position::START, 10_000).await.unwrap();
    let plan = store_events
        .iter()
        .filter_map(|e| codec::decode(e).ok())
        .find_map(|e| match e {
            Event::MessagePosted(m) if m.message_id == message => Some(m.deliveries),
            _ => None,
        })
        .expect("the message recorded its delivery plan");
    let system = || homeroom_domain::Actor::System("delivery-worker".into());
    for (i, delivery) in plan.iter().enumerate() {
        let queue =
            homeroom_domain::Command::QueueDelivery(homeroom_domain::commands::QueueDelivery {
                delivery: delivery.clone(),
                message_id: message,
                conversation_id: homeroom_domain::ConversationId::new(conversation),
                fallback_of: None,
                sender: None,
            });
        let ctx = homeroom_app::CommandContext::new(d.district.clone(), system());
        d.service.execute(&ctx, &queue).await.unwrap();
        if i == 0 {
            internal::<commands::RecordFailedAttempt>(
                d,
                json!({"delivery_id": delivery.delivery_id, "attempt": 1, "error": "503 from the provider"}),
            )
            .await;
        }
        let outcomes: &[Value] = if i == 0 {
            &[
                json!({"status": "sent", "provider_message_id": "SM1"}),
                json!({"status": "delivered"}),
            ]
        } else {
            &[json!({"status": "failed", "error": "mailbox full", "permanent": true})]
        };
        for outcome in outcomes {
            let mut body = outcome.clone();
            body["delivery_id"] = json!(delivery.delivery_id);
            d.run(system(), "RecordDeliveryOutcome", body)
                .await
                .unwrap();
        }
    }
    d.by(d.principal, "StopConversation", c).await.unwrap();
    // A personal conversation, stopped and then taken up again by writing anew.
    let personal = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.parent, "body": "About the field trip"}),
        )
        .await
        .unwrap();
    let personal = json!({"conversation_id": personal.conversation_id.unwrap()});
    d.by(d.principal, "StopConversation", personal)
        .await
        .unwrap();
    d.by(
        d.principal,
        "SendPersonalMessage",
        json!({"recipient_id": d.parent, "body": "One more thing"}),
    )
    .await
    .unwrap();

    // What the delivery services and the SMS webhook record.
    let reached = plan
        .iter()
        .find(|p| p.address.is_some())
        .expect("someone is reached at an address");
    internal::<commands::MarkContactPointFailing>(
        d,
        json!({"person_id": reached.recipient_id, "address": reached.address, "delivery_id": reached.delivery_id}),
    )
    .await;
    internal::<commands::AssignSenderNumber>(d, json!({"person_id": d.principal})).await;
    internal::<commands::BindSmsNumber>(
        d,
        json!({"number": "+15550009001", "district": d.district, "owner": {"person": d.principal}}),
    )
    .await;
    let line = json!({"our_number": "+15550009001", "their_number": "+15550002003"});
    let mut used = line.clone();
    used["conversation_id"] = json!(conversation);
    used["recipient_id"] = json!(d.parent);
    used["delivery_id"] = json!(plan[0].delivery_id);
    internal::<commands::RecordSmsSent>(d, used).await;
    for opted_out in [true, false] {
        let mut stop = line.clone();
        stop["opted_out"] = json!(opted_out);
        stop["message_sid"] = json!(format!("SMstop{opted_out}"));
        internal::<commands::SetSmsOptOut>(d, stop).await;
    }
    internal::<commands::ReceiveSms>(
        d,
        json!({"message_sid": "SMin1", "from": "+15550002003", "to": "+15550009001", "body": "Thanks!"}),
    )
    .await;
    internal::<commands::ReceiveReply>(
        d,
        json!({"conversation_id": conversation, "author_id": d.parent, "message_sid": "SMin1", "body": "Thanks!"}),
    )
    .await;
    internal::<commands::RouteInboundSms>(
        d,
        json!({"message_sid": "SMin1", "route": {"to": "refused", "conversation_id": conversation}}),
    )
    .await;
}

/// Runs an internal command (not in the HTTP API) as a delivery service, asserting it
/// records something.
async fn internal<T>(d: &District, body: Value)
where
    T: serde::de::DeserializeOwned + Into<homeroom_domain::Command>,
{
    let command: homeroom_domain::Command = serde_json::from_value::<T>(body)
        .expect("an internal command body")
        .into();
    let name = command.name();
    let ctx = homeroom_app::CommandContext::new(
        d.district.clone(),
        homeroom_domain::Actor::System("delivery-worker".into()),
    );
    let outcome = d
        .service
        .execute(&ctx, &command)
        .await
        .unwrap_or_else(|e| panic!("{name} refused: {e}"));
    assert!(!outcome.events.is_empty(), "{name} recorded nothing");
}
