//! The command service end to end, on every embedded backend: the seeds' rules, what a
//! refusal leaves behind (nothing), idempotency across restarts, concurrent writers, and
//! fresh facts across service instances.

use homeroom_app::{CommandContext, CommandError, CommandService};
use homeroom_domain::{Actor, PersonId};
use homeroom_eventstore::{hash, memory::InMemoryStore, EventStore, Position};
use homeroom_store_sqlite::SqliteStore;
use homeroom_tests::District;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

/// Runs one scenario against every embedded backend.
macro_rules! on_every_backend {
    ($($scenario:ident),+ $(,)?) => {
        mod in_memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario(std::sync::Arc::new(super::InMemoryStore::default())).await;
            })+
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                let dir = tempfile::tempdir().unwrap();
                let store = super::SqliteStore::open(&dir.path().join("events.sqlite")).await.unwrap();
                super::$scenario(std::sync::Arc::new(store)).await;
            })+
        }
    };
}

on_every_backend!(
    a_school_admin_messages_a_teen_but_not_a_twelve_year_old,
    a_refused_command_records_nothing,
    a_retried_command_answers_its_first_result_even_after_a_restart,
    a_reused_command_id_with_another_body_is_refused,
    the_same_key_at_two_nodes_at_once_answers_the_first_result_at_both,
    a_reaction_another_node_recorded_is_not_recorded_again_on_top_of_later_events,
    concurrent_posts_to_one_conversation_all_land_in_order,
    a_revoked_role_is_honoured_by_a_service_with_a_stale_cache,
    every_recorded_stream_verifies,
    a_district_cannot_take_a_number_another_district_sends_from,
);

fn code(result: Result<homeroom_app::CommandOutcome, CommandError>) -> &'static str {
    match result {
        Ok(outcome) => panic!("expected a refusal, got {outcome:?}"),
        Err(e) => e.code(),
    }
}

async fn a_school_admin_messages_a_teen_but_not_a_twelve_year_old(store: Arc<dyn EventStore>) {
    let d = District::build(store, "springfield").await;
    let sent = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.teen, "body": "Hi {student_name}, see me after class."}),
        )
        .await
        .expect("a school admin may message a 14-year-old");
    assert!(sent.conversation_id.is_some() && sent.message_id.is_some());
    assert_eq!(
        sent.delivery_ids.len(),
        1,
        "one delivery for the one recipient"
    );

    let again = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.teen, "body": "One more thing."}),
        )
        .await
        .unwrap();
    assert_eq!(
        again.conversation_id, sent.conversation_id,
        "a second personal message continues the same conversation"
    );

    let refused = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.child, "body": "Hi"}),
        )
        .await;
    assert_eq!(code(refused), "recipient_too_young");

    let refused = d
        .by(
            d.technician,
            "SendPersonalMessage",
            json!({"recipient_id": d.teen, "body": "Hi"}),
        )
        .await;
    assert_eq!(code(refused), "not_permitted");
}

async fn a_refused_command_records_nothing(store: Arc<dyn EventStore>) {
    let d = District::build(store.clone(), "shelbyville").await;
    let before = store.head().await.unwrap();
    let refused = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.child, "body": "Hi"}),
        )
        .await;
    assert_eq!(code(refused), "recipient_too_young");
    let refused = d
        .by(
            d.parent,
            "StartConversation",
            json!({
                "conversation_id": Uuid::now_v7(), "school_id": d.school,
                "participant_ids": [d.principal], "body": "Hello"
            }),
        )
        .await;
    assert_eq!(code(refused), "not_a_current_teacher");
    assert_eq!(
        store.head().await.unwrap(),
        before,
        "refusals append nothing"
    );
}

async fn a_retried_command_answers_its_first_result_even_after_a_restart(
    store: Arc<dyn EventStore>,
) {
    let d = District::build(store.clone(), "ogdenville").await;
    let key = Uuid::now_v7();
    let ctx = CommandContext::new(d.district.clone(), Actor::Person(PersonId::new(d.parent)))
        .with_command_id(key);
    let body = json!({
        "conversation_id": Uuid::now_v7(), "school_id": d.school,
        "participant_ids": [d.teacher], "body": "Is Dennis's project due Friday?"
    });
    let first = d
        .run_in(&ctx, "StartConversation", body.clone())
        .await
        .unwrap();
    let head = store.head().await.unwrap();

    let second = d
        .run_in(&ctx, "StartConversation", body.clone())
        .await
        .unwrap();
    assert!(second.replayed && !first.replayed);
    assert_eq!(
        homeroom_app::CommandOutcome {
            replayed: false,
            ..second
        },
        first,
        "the same key and body answer the first result"
    );

    // A new service has an empty cache: the answer comes from the store itself.
    let restarted = CommandService::new(store.clone(), 100);
    let command = homeroom_app::parse_command("StartConversation", body).unwrap();
    let third = restarted.execute(&ctx, &command).await.unwrap();
    assert_eq!(third.events, first.events);
    assert_eq!(third.position, first.position);
    assert_eq!(store.head().await.unwrap(), head, "retries record nothing");
}

async fn a_reused_command_id_with_another_body_is_refused(store: Arc<dyn EventStore>) {
    let d = District::build(store.clone(), "capital_city").await;
    let ctx = CommandContext::new(
        d.district.clone(),
        Actor::Person(PersonId::new(d.principal)),
    )
    .with_command_id(Uuid::now_v7());
    d.run_in(
        &ctx,
        "SendPersonalMessage",
        json!({"recipient_id": d.teen, "body": "Hi"}),
    )
    .await
    .unwrap();
    let head = store.head().await.unwrap();
    let reused = d
        .run_in(
            &ctx,
            "SendPersonalMessage",
            json!({"recipient_id": d.teen, "body": "Something else"}),
        )
        .await;
    assert_eq!(code(reused), "idempotency_key_reused");
    assert_eq!(store.head().await.unwrap(), head);

    // The same key and body from another person is not their command: they are told
    // the key is taken, not the first caller's result (nor its ids).
    let technician = CommandContext::new(
        d.district.clone(),
        Actor::Person(PersonId::new(d.technician)),
    )
    .with_command_id(ctx.command_id);
    let borrowed = d
        .run_in(
            &technician,
            "SendPersonalMessage",
            json!({"recipient_id": d.teen, "body": "Hi"}),
        )
        .await;
    assert_eq!(code(borrowed), "idempotency_key_reused");
    assert_eq!(store.head().await.unwrap(), head);

    // Another district's caller who happens on the same key is told nothing of this
    // one: the key is theirs too, for their own command.
    let other = District::build(store.clone(), "springfield_heights").await;
    let elsewhere = CommandContext::new(
        other.district.clone(),
        Actor::Person(PersonId::new(other.principal)),
    )
    .with_command_id(ctx.command_id);
    let theirs = other
        .run_in(
            &elsewhere,
            "SendPersonalMessage",
            json!({"recipient_id": other.teen, "body": "Something else"}),
        )
        .await
        .unwrap();
    assert!(!theirs.replayed && !theirs.events.is_empty(), "{theirs:?}");
    // and each district's retry answers its own first result.
    let again = other
        .run_in(
            &elsewhere,
            "SendPersonalMessage",
            json!({"recipient_id": other.teen, "body": "Something else"}),
        )
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.conversation_id, theirs.conversation_id);
    let ours = d
        .run_in(
            &ctx,
            "SendPersonalMessage",
            json!({"recipient_id": d.teen, "body": "Hi"}),
        )
        .await
        .unwrap();
    assert!(ours.replayed);
    assert_ne!(ours.conversation_id, theirs.conversation_id);
}

async fn concurrent_posts_to_one_conversation_all_land_in_order(store: Arc<dyn EventStore>) {
    let d = Arc::new(District::build(store.clone(), "north_haverbrook").await);
    let started = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.parent, "body": "Welcome!"}),
        )
        .await
        .unwrap();
    let conversation = started.conversation_id.unwrap();
    let writers: Vec<_> = (0..24)
        .map(|i| {
            let d = d.clone();
            tokio::spawn(async move {
                d.by(
                    d.principal,
                    "PostMessage",
                    json!({
                        "conversation_id": conversation, "message_id": Uuid::now_v7(),
                        "body": format!("update {i}")
                    }),
                )
                .await
            })
        })
        .collect();
    for w in writers {
        w.await
            .unwrap()
            .expect("every concurrent post lands after retries");
    }
    let stream = homeroom_app::service::stream_id(
        &homeroom_domain::StreamRef::Conversation(conversation),
        &d.district,
    )
    .unwrap();
    let events = store.read_stream(&stream, 0, 1_000).await.unwrap();
    let posted = events
        .iter()
        .filter(|e| e.event_type == "message_posted")
        .count();
    assert_eq!(posted, 25, "the welcome and 24 updates");
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=events.len() as u64).collect::<Vec<_>>());
}

async fn a_revoked_role_is_honoured_by_a_service_with_a_stale_cache(store: Arc<dyn EventStore>) {
    let d = District::build(store.clone(), "brockway").await;
    // A second API node: it decides one message, so it caches the principal's roles.
    let other_node = CommandService::new(store.clone(), 100);
    let ctx = || {
        CommandContext::new(
            d.district.clone(),
            Actor::Person(PersonId::new(d.principal)),
        )
    };
    let send = homeroom_app::parse_command(
        "SendPersonalMessage",
        json!({"recipient_id": d.teen, "body": "Hi"}),
    )
    .unwrap();
    other_node.execute(&ctx(), &send).await.unwrap();

    // The first node revokes the role; the caller is told it was recorded.
    d.system(
        "RevokeRole",
        json!({"person_id": d.principal, "role_id": "school_admin", "school_id": d.school}),
    )
    .await;

    let refused = other_node.execute(&ctx(), &send).await;
    assert_eq!(
        code(refused),
        "not_permitted",
        "the other node must not decide on its stale copy of the roles"
    );
}

async fn every_recorded_stream_verifies(store: Arc<dyn EventStore>) {
    let d = District::build(store.clone(), "cypress_creek").await;
    d.by(
        d.principal,
        "SendPersonalMessage",
        json!({"recipient_id": d.teen, "body": "Hi"}),
    )
    .await
    .unwrap();
    let all = store.read_all(Position::START, 10_000).await.unwrap();
    assert!(all.len() > 10);
    let mut streams = std::collections::BTreeMap::<_, Vec<_>>::new();
    for e in &all {
        streams.entry(e.stream.clone()).or_default().push(e.clone());
        assert_eq!(e.metadata.district, "cypress_creek");
    }
    for (stream, events) in streams {
        assert!(
            hash::verify_stream(&events).is_empty(),
            "{stream} does not verify"
        );
    }
}

/// A store that answers the first `find_command` as if nothing were recorded yet: how a
/// node sees the log when another node records the same command just after it looked.
struct LooksTooEarly {
    inner: Arc<dyn EventStore>,
    looked: std::sync::atomic::AtomicBool,
    /// What another node does right after the first look, before its answer arrives.
    meanwhile: std::sync::Mutex<Option<futures::future::BoxFuture<'static, ()>>>,
}

impl LooksTooEarly {
    fn new(inner: Arc<dyn EventStore>) -> Self {
        Self {
            inner,
            looked: std::sync::atomic::AtomicBool::new(false),
            meanwhile: std::sync::Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl homeroom_eventstore::EventAppender for LooksTooEarly {
    async fn append(
        &self,
        stream: &homeroom_eventstore::StreamId,
        expected: homeroom_eventstore::ExpectedVersion,
        events: Vec<homeroom_eventstore::NewEvent>,
    ) -> Result<homeroom_eventstore::AppendResult, homeroom_eventstore::StoreError> {
        self.inner.append(stream, expected, events).await
    }

    async fn append_with_facts(
        &self,
        stream: &homeroom_eventstore::StreamId,
        expected: homeroom_eventstore::ExpectedVersion,
        events: Vec<homeroom_eventstore::NewEvent>,
        facts: &[(homeroom_eventstore::StreamId, u64)],
    ) -> Result<homeroom_eventstore::AppendResult, homeroom_eventstore::StoreError> {
        self.inner
            .append_with_facts(stream, expected, events, facts)
            .await
    }

    fn checks_facts(&self) -> bool {
        self.inner.checks_facts()
    }
}

#[async_trait::async_trait]
impl homeroom_eventstore::EventReader for LooksTooEarly {
    async fn read_stream(
        &self,
        stream: &homeroom_eventstore::StreamId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<homeroom_eventstore::RecordedEvent>, homeroom_eventstore::StoreError> {
        self.inner.read_stream(stream, after_version, limit).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<homeroom_eventstore::RecordedEvent>, homeroom_eventstore::StoreError> {
        self.inner.read_all(after, limit).await
    }

    async fn stream_versions(
        &self,
        streams: &[homeroom_eventstore::StreamId],
    ) -> Result<Vec<u64>, homeroom_eventstore::StoreError> {
        self.inner.stream_versions(streams).await
    }

    async fn find_command(
        &self,
        command_id: Uuid,
    ) -> Result<Vec<homeroom_eventstore::RecordedEvent>, homeroom_eventstore::StoreError> {
        if !self.looked.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let meanwhile = self.meanwhile.lock().unwrap().take();
            if let Some(meanwhile) = meanwhile {
                meanwhile.await;
            }
            return Ok(Vec::new());
        }
        self.inner.find_command(command_id).await
    }

    async fn head(&self) -> Result<Position, homeroom_eventstore::StoreError> {
        self.inner.head().await
    }
}

impl homeroom_eventstore::EventSubscriber for LooksTooEarly {
    fn subscribe_all(&self, after: Position) -> homeroom_eventstore::EventStream {
        self.inner.subscribe_all(after)
    }
}

async fn the_same_key_at_two_nodes_at_once_answers_the_first_result_at_both(
    store: Arc<dyn EventStore>,
) {
    let d = District::build(store.clone(), "shelbyville").await;
    let ctx = CommandContext::new(d.district.clone(), Actor::Person(PersonId::new(d.parent)))
        .with_command_id(Uuid::now_v7());
    let body = json!({
        "conversation_id": Uuid::now_v7(), "school_id": d.school,
        "participant_ids": [d.teacher], "body": "Is the bus late?"
    });
    let command = homeroom_app::parse_command("StartConversation", body).unwrap();
    // Node B looks for the command before node A has recorded it…
    let node_b = CommandService::new(Arc::new(LooksTooEarly::new(store.clone())), 100);
    // …and node A records it.
    let node_a = CommandService::new(store.clone(), 100);
    let first = node_a.execute(&ctx, &command).await.unwrap();
    let head = store.head().await.unwrap();

    let second = node_b
        .execute(&ctx, &command)
        .await
        .expect("the loser of the race answers the first result, not an error");
    assert!(second.replayed);
    assert_eq!(second.events, first.events);
    assert_eq!(second.position, first.position);
    assert_eq!(store.head().await.unwrap(), head, "nothing recorded twice");
}

/// Two nodes react to the same event (a redelivery after the first node's ack wait):
/// node B loads the SMS line and looks for the reaction's command; just after that look,
/// node A records the reaction and a later text moves the line on. B must answer A's
/// result, not record the old text as the line's last one again.
async fn a_reaction_another_node_recorded_is_not_recorded_again_on_top_of_later_events(
    store: Arc<dyn EventStore>,
) {
    use homeroom_domain::commands::RecordSmsSent;
    use homeroom_domain::{ConversationId, DeliveryId, PhoneNumber};
    let d = District::build(store.clone(), "capitalcity").await;
    let sent = |delivery: Uuid| {
        homeroom_domain::Command::RecordSmsSent(RecordSmsSent {
            our_number: PhoneNumber::parse(&d.school_number).unwrap(),
            their_number: PhoneNumber::parse("+15550002001").unwrap(),
            conversation_id: ConversationId::new(Uuid::now_v7()),
            recipient_id: PersonId::new(d.teen),
            delivery_id: DeliveryId::new(delivery),
        })
    };
    let (old_text, later_text) = (sent(Uuid::now_v7()), sent(Uuid::now_v7()));
    let reaction = CommandContext::new(d.district.clone(), Actor::System("delivery".into()))
        .with_command_id(Uuid::now_v7());
    let later = CommandContext::new(d.district.clone(), Actor::System("delivery".into()));
    let node_a = CommandService::new(store.clone(), 100);
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let node_a_meanwhile = {
        let (reaction, old_text, later_text) =
            (reaction.clone(), old_text.clone(), later_text.clone());
        Box::pin(async move {
            let first = node_a.execute(&reaction, &old_text).await.unwrap();
            node_a.execute(&later, &later_text).await.unwrap();
            let _ = first_tx.send(first);
        })
    };
    let looks = LooksTooEarly::new(store.clone());
    *looks.meanwhile.lock().unwrap() = Some(node_a_meanwhile);
    let node_b = CommandService::new(Arc::new(looks), 100);

    let again = node_b.execute(&reaction, &old_text).await.unwrap();
    let first = first_rx.await.unwrap();
    assert!(again.replayed, "{again:?}");
    assert_eq!(again.events, first.events);
    let line_used = store.find_command(reaction.command_id).await.unwrap().len();
    assert_eq!(line_used, 1, "the reaction is recorded once");
}

async fn a_district_cannot_take_a_number_another_district_sends_from(store: Arc<dyn EventStore>) {
    let ogdenville = District::build(store.clone(), "ogdenville").await;
    let brockway = District::build(store.clone(), "brockway").await;
    // Ogdenville's school number is bound to it, as the reactor does once the school is
    // registered (inbound SMS to it find Ogdenville).
    let bind = homeroom_domain::Command::BindSmsNumber(homeroom_domain::commands::BindSmsNumber {
        number: homeroom_domain::PhoneNumber::parse(&ogdenville.school_number).unwrap(),
        district: ogdenville.district.clone(),
        owner: homeroom_domain::NumberOwner::School(homeroom_domain::SchoolId::new(
            ogdenville.school,
        )),
    });
    let service = CommandContext::new(
        ogdenville.district.clone(),
        Actor::System("delivery".into()),
    );
    ogdenville.service.execute(&service, &bind).await.unwrap();
    let head = store.head().await.unwrap();
    let school = brockway
        .run(
            Actor::System("sis-sync".into()),
            "RegisterSchool",
            json!({"school_id": Uuid::now_v7(), "name": "Brockway High", "sms_number": ogdenville.school_number}),
        )
        .await;
    assert_eq!(code(school), "number_in_use");
    let pool = brockway
        .run(
            Actor::System("sis-sync".into()),
            "AddSenderNumbers",
            json!({"numbers": [ogdenville.school_number]}),
        )
        .await;
    assert_eq!(code(pool), "number_in_use");
    assert_eq!(store.head().await.unwrap(), head, "nothing recorded");
    // A number nobody sends from is still Brockway's to take.
    brockway
        .system("AddSenderNumbers", json!({"numbers": ["+15550009901"]}))
        .await;
}
