//! The hub over the in-memory store, driven by the real command service.

use super::*;
use crate::{parse_command, CommandContext, CommandOutcome, CommandService};
use homeroom_domain::commands::QueueDelivery;
use homeroom_domain::{Actor, Command};
use homeroom_eventstore::memory::InMemoryStore;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);

/// A district with a school, two school admins, a 14-year-old student and a
/// guardian, built through commands on a shared store.
struct World {
    service: Arc<CommandService>,
    store: Arc<dyn EventStore>,
    district: DistrictId,
    school: Uuid,
    principal: PersonId,
    counselor: PersonId,
    teen: PersonId,
    parent: PersonId,
}

impl World {
    async fn build(store: Arc<dyn EventStore>, name: &str) -> Self {
        let id = || PersonId::new(Uuid::now_v7());
        let w = Self {
            service: Arc::new(CommandService::new(store.clone(), 1_000)),
            store,
            district: DistrictId::parse(name).unwrap(),
            school: Uuid::now_v7(),
            principal: id(),
            counselor: id(),
            teen: id(),
            parent: id(),
        };
        let school = w.school;
        let born = (chrono::Utc::now().date_naive() - chrono::Days::new(14 * 366)).to_string();
        w.system(
            "RegisterSchool",
            json!({"school_id": school, "name": "Lincoln"}),
        )
        .await;
        for (person, name) in [(w.principal, "Skinner"), (w.counselor, "Troi")] {
            w.system(
                "RegisterPerson",
                json!({"person_id": person, "kind": "staff", "name": name, "school_ids": [school]}),
            )
            .await;
        }
        w.system("RegisterPerson", json!({"person_id": w.teen, "kind": "student", "name": "Dennis", "school_ids": [school], "birth_date": born, "contact_points": [{"channel": "sms", "address": "+15550002001"}]})).await;
        w.system("RegisterPerson", json!({"person_id": w.parent, "kind": "guardian", "name": "Marge", "school_ids": [school], "contact_points": [{"channel": "sms", "address": "+15550002003"}]})).await;
        w.system(
            "LinkGuardian",
            json!({"guardian_id": w.parent, "student_id": w.teen}),
        )
        .await;
        for (person, role) in [(w.principal, "school_admin"), (w.counselor, "school_admin")] {
            w.system(
                "AssignRole",
                json!({"person_id": person, "role_id": role, "school_id": school}),
            )
            .await;
        }
        w
    }

    async fn run(&self, actor: Actor, command: Command) -> CommandOutcome {
        let ctx = CommandContext::new(self.district.clone(), actor);
        self.service
            .execute(&ctx, &command)
            .await
            .unwrap_or_else(|e| panic!("{} refused: {e}", command.name()))
    }

    async fn system(&self, name: &str, body: serde_json::Value) -> CommandOutcome {
        let command = parse_command(name, body).unwrap();
        self.run(Actor::System("sis".into()), command).await
    }

    /// `from` sends `to` a personal message.
    async fn send(&self, from: PersonId, to: PersonId, body: &str) -> CommandOutcome {
        let command = parse_command(
            "SendPersonalMessage",
            json!({"recipient_id": to, "body": body}),
        )
        .unwrap();
        self.run(Actor::Person(from), command).await
    }

    /// Queues every delivery of the message `sent` posted, as the delivery process does.
    async fn queue(&self, sent: &CommandOutcome) {
        let posted = sent.events.last().unwrap();
        let stream = StreamId::parse(posted.stream.clone()).unwrap();
        let recorded = self
            .store
            .read_stream(&stream, posted.version - 1, 1)
            .await
            .unwrap();
        let Event::MessagePosted(m) = codec::decode(&recorded[0]).unwrap() else {
            panic!("not a message")
        };
        for delivery in m.deliveries {
            let command = Command::QueueDelivery(QueueDelivery {
                delivery,
                message_id: m.message_id,
                conversation_id: m.conversation_id,
                fallback_of: None,
                sender: None,
            });
            self.run(Actor::System("delivery".into()), command).await;
        }
    }

    async fn outcome(&self, delivery: DeliveryId, status: &str) -> CommandOutcome {
        self.system(
            "RecordDeliveryOutcome",
            json!({"delivery_id": delivery, "status": status}),
        )
        .await
    }
}

type Feed = BoxStream<'static, Result<Update, LiveError>>;

async fn next(feed: &mut Feed) -> Update {
    tokio::time::timeout(WAIT, feed.next())
        .await
        .expect("the feed answers in time")
        .expect("the feed is open")
        .expect("the feed does not fail")
}

/// The feed of `person`, once it is live.
async fn feed(
    hub: &LiveHub,
    w: &World,
    person: PersonId,
    after: Option<Position>,
) -> (Feed, Position) {
    feed_with_inboxes(hub, w, person, vec![], after).await
}

/// The feed of `person` holding the shared inboxes of `school_inboxes`, once it is live.
async fn feed_with_inboxes(
    hub: &LiveHub,
    w: &World,
    person: PersonId,
    school_inboxes: Vec<SchoolId>,
    after: Option<Position>,
) -> (Feed, Position) {
    let listener = Listener {
        district: w.district.clone(),
        person,
        school_inboxes,
        taking_part: TakingPart::Everywhere,
        // Staff are told how each recipient was reached; the family is not.
        hears_every_delivery: person != w.parent && person != w.teen,
        sees_who_wrote_for_the_school: person != w.parent && person != w.teen,
        // As the query service does: their roles are read now.
        roles_known_at: w.store.head().await.unwrap(),
        roles_held: if person == w.principal || person == w.counselor {
            vec![RoleId::parse("school_admin").unwrap()]
        } else {
            vec![]
        },
    };
    let mut feed = hub.subscribe(listener, after);
    match next(&mut feed).await {
        Update::Ready { position } => (feed, position),
        other => panic!("the first update is not Ready: {other:?}"),
    }
}

fn message(update: Update) -> MessageNotice {
    match update {
        Update::Notice(Notice::Message(m)) => m,
        other => panic!("expected a message notice, got {other:?}"),
    }
}

fn delivery(update: Update) -> DeliveryNotice {
    match update {
        Update::Notice(Notice::Delivery(d)) => d,
        other => panic!("expected a delivery notice, got {other:?}"),
    }
}

fn memory_store() -> Arc<dyn EventStore> {
    Arc::new(InMemoryStore::new())
}

#[tokio::test]
async fn participants_are_told_of_a_message_posted_after_they_connected() {
    let store = memory_store();
    let w = World::build(store.clone(), "north").await;
    let hub = LiveHub::new(store, LiveConfig::default());
    let (mut parent, ready) = feed(&hub, &w, w.parent, None).await;
    let (mut principal, _) = feed(&hub, &w, w.principal, None).await;
    assert_eq!(ready, w.store.head().await.unwrap(), "live from the head");

    let sent = w.send(w.principal, w.parent, "Field trip on Friday").await;

    let told = message(next(&mut parent).await);
    assert_eq!(
        (
            Some(told.conversation_id),
            Some(told.message_id),
            told.author_id,
            told.position
        ),
        (
            sent.conversation_id,
            sent.message_id,
            w.principal,
            sent.position
        )
    );
    let own = message(next(&mut principal).await);
    assert_eq!(own.message_id, told.message_id, "the author is told too");
}

#[tokio::test]
async fn staff_hear_nothing_of_the_conversations_of_a_school_whose_roles_they_left() {
    let store = memory_store();
    let w = World::build(store.clone(), "north").await;
    let hub = LiveHub::new(store, LiveConfig::default());
    let gone = Listener {
        district: w.district.clone(),
        person: w.principal,
        school_inboxes: vec![],
        taking_part: TakingPart::Schools(vec![]),
        hears_every_delivery: true,
        sees_who_wrote_for_the_school: true,
        roles_known_at: Position::START,
        roles_held: vec![],
    };
    let mut principal = hub.subscribe(gone, None);
    assert!(matches!(next(&mut principal).await, Update::Ready { .. }));
    let (mut parent, _) = feed(&hub, &w, w.parent, None).await;

    let first = w.send(w.principal, w.parent, "Before the roles went").await;
    let second = w
        .send(w.counselor, w.parent, "From someone still here")
        .await;

    // the family hears of both
    assert_eq!(
        Some(message(next(&mut parent).await).message_id),
        first.message_id
    );
    assert_eq!(
        Some(message(next(&mut parent).await).message_id),
        second.message_id
    );
    // and of how the principal's message reached them,
    w.queue(&first).await;
    w.outcome(first.delivery_ids[0], "delivered").await;
    // while the principal, taking part nowhere, hears of neither message, nor of the
    // delivery of their own: nothing of a conversation they left.
    let within = tokio::time::timeout(Duration::from_millis(300), next(&mut principal)).await;
    assert!(within.is_err(), "{within:?}");
    // Nor when the hub has forgotten whose message it was and reads it again.
    let catching_up = Listener {
        district: w.district.clone(),
        person: w.principal,
        school_inboxes: vec![],
        taking_part: TakingPart::Schools(vec![]),
        hears_every_delivery: true,
        sees_who_wrote_for_the_school: true,
        roles_known_at: w.store.head().await.unwrap(),
        roles_held: vec![],
    };
    let fresh = LiveHub::new(w.store.clone(), LiveConfig::default());
    let mut resumed = fresh.subscribe(catching_up, Some(Position::START));
    assert!(matches!(next(&mut resumed).await, Update::Ready { .. }));
    let mut told = Vec::new();
    while let Ok(update) =
        tokio::time::timeout(Duration::from_millis(300), next(&mut resumed)).await
    {
        told.push(update);
    }
    assert!(
        told.iter()
            .all(|u| matches!(u, Update::Notice(Notice::RolesChanged(_)))),
        "only the role changes of the log's start: {told:?}"
    );
}

#[tokio::test]
async fn holders_of_the_school_inbox_are_told_of_school_conversations_only() {
    let store = memory_store();
    let w = World::build(store.clone(), "north").await;
    let hub = LiveHub::new(store, LiveConfig::default());
    let school = SchoolId::new(w.school);
    let (mut counselor, _) = feed_with_inboxes(&hub, &w, w.counselor, vec![school], None).await;
    let (mut teen, _) = feed(&hub, &w, w.teen, None).await;
    let (mut parent, from_here) = feed(&hub, &w, w.parent, None).await;

    // given a personal message the counselor takes no part in
    w.send(w.principal, w.parent, "Just between us").await;
    next(&mut parent).await;
    // when the principal writes to the parent on behalf of the school
    let start = parse_command(
        "StartConversation",
        json!({"conversation_id": Uuid::now_v7(), "school_id": w.school, "from": "school",
               "participant_ids": [w.parent], "body": "From the office"}),
    )
    .unwrap();
    let office = w.run(Actor::Person(w.principal), start).await;
    // then the shared inbox's holder hears of it (and of nothing before it)
    let told = message(next(&mut counselor).await);
    assert_eq!(Some(told.message_id), office.message_id);
    assert_eq!(
        told.author_id, w.principal,
        "staff know who wrote for the school"
    );
    // and the family is told it is the school's, live and when catching up
    let theirs = message(next(&mut parent).await);
    assert_eq!(theirs.message_id, told.message_id);
    assert_eq!(theirs.author_id, PersonId::new(w.school));
    let (mut again, _) = feed(&hub, &w, w.parent, Some(from_here)).await;
    next(&mut again).await;
    assert_eq!(
        message(next(&mut again).await).author_id,
        PersonId::new(w.school)
    );
    // and someone without the inbox hears of their own messages only
    let mine = w.send(w.counselor, w.teen, "Yours").await;
    assert_eq!(
        Some(message(next(&mut teen).await).message_id),
        mine.message_id
    );
}

#[tokio::test]
async fn nothing_of_another_district_or_of_a_conversation_they_are_not_in() {
    let store = memory_store();
    let north = World::build(store.clone(), "north").await;
    let south = World::build(store.clone(), "south").await;
    let hub = LiveHub::new(store, LiveConfig::default());
    let (mut teen, _) = feed(&hub, &north, north.teen, None).await;

    // given messages the teen takes no part in: to someone with their very id in another
    // district, and to their parent
    south.system("RegisterPerson", json!({"person_id": north.teen, "kind": "guardian", "name": "Twin", "school_ids": [south.school]})).await;
    south
        .send(south.principal, north.teen, "Other district")
        .await;
    north
        .send(north.principal, north.parent, "Only for the parent")
        .await;
    // when one is sent to them
    let mine = north.send(north.counselor, north.teen, "Yours").await;
    // then it is the first thing they are told
    let told = message(next(&mut teen).await);
    assert_eq!(Some(told.message_id), mine.message_id);
}

#[tokio::test]
async fn the_author_is_told_when_a_delivery_of_their_message_changes_status() {
    let store = memory_store();
    let w = World::build(store.clone(), "north").await;
    let hub = LiveHub::new(store, LiveConfig::default());
    let (mut principal, _) = feed(&hub, &w, w.principal, None).await;
    let (mut parent, _) = feed(&hub, &w, w.parent, None).await;

    let sent = w.send(w.principal, w.parent, "Report cards are out").await;
    w.queue(&sent).await;
    let delivery_id = sent.delivery_ids[0];
    let at_sent = w.outcome(delivery_id, "sent").await;
    let at_delivered = w.outcome(delivery_id, "delivered").await;

    assert_eq!(
        Some(message(next(&mut principal).await).message_id),
        sent.message_id
    );
    let first = delivery(next(&mut principal).await);
    assert_eq!(
        (
            first.delivery_id,
            Some(first.message_id),
            first.recipient_id,
            first.status,
            first.position
        ),
        (
            delivery_id,
            sent.message_id,
            w.parent,
            LiveStatus::Sent,
            at_sent.position
        )
    );
    let second = delivery(next(&mut principal).await);
    assert_eq!(
        (second.status, second.position, Some(second.conversation_id)),
        (
            LiveStatus::Delivered,
            at_delivered.position,
            sent.conversation_id
        )
    );

    // The recipient is told of the message, not of its delivery.
    assert_eq!(
        Some(message(next(&mut parent).await).message_id),
        sent.message_id
    );
    let later = w.send(w.principal, w.parent, "One more").await;
    assert_eq!(
        Some(message(next(&mut parent).await).message_id),
        later.message_id,
        "no delivery notice in between"
    );
}

#[tokio::test]
async fn a_feed_resumes_after_a_position_without_loss() {
    let store = memory_store();
    let w = World::build(store.clone(), "north").await;
    let hub = LiveHub::new(store, LiveConfig::default());
    let (first, ready) = feed(&hub, &w, w.parent, None).await;
    drop(first);

    // given three messages while the parent was away
    let mut sent = Vec::new();
    for body in ["one", "two", "three"] {
        sent.push(w.send(w.principal, w.parent, body).await.message_id);
    }
    // when they come back after where they were
    let (mut back, from) = feed(&hub, &w, w.parent, Some(ready)).await;
    assert_eq!(from, ready);
    // then they get all three, in order, and what follows live
    let mut told = Vec::new();
    for _ in 0..3 {
        told.push(message(next(&mut back).await));
    }
    assert_eq!(
        told.iter().map(|m| Some(m.message_id)).collect::<Vec<_>>(),
        sent
    );
    let live = w.send(w.principal, w.parent, "four").await;
    assert_eq!(
        Some(message(next(&mut back).await).message_id),
        live.message_id
    );

    // and resuming after the second one's id gives the third and the fourth
    let (mut again, _) = feed(&hub, &w, w.parent, Some(told[1].position)).await;
    assert_eq!(Some(message(next(&mut again).await).message_id), sent[2]);
    assert_eq!(
        Some(message(next(&mut again).await).message_id),
        live.message_id
    );
}

#[tokio::test]
async fn a_feed_too_slow_for_the_broadcast_catches_up_from_the_log() {
    let store = memory_store();
    let w = World::build(store.clone(), "north").await;
    let config = LiveConfig {
        buffer: 1,
        ..LiveConfig::default()
    };
    let hub = LiveHub::new(store, config);
    let (mut slow, _) = feed(&hub, &w, w.parent, None).await;
    let (mut watcher, _) = feed(&hub, &w, w.principal, None).await;

    // given five messages the slow feed does not read while they are broadcast
    let mut sent = Vec::new();
    for n in 0..5 {
        sent.push(
            w.send(w.principal, w.parent, &format!("m{n}"))
                .await
                .message_id,
        );
    }
    for expected in &sent {
        // (the other feed reads them as they come, so the hub has broadcast them all)
        assert_eq!(
            Some(message(next(&mut watcher).await).message_id),
            *expected
        );
    }
    // then the slow feed still gets every one, in order
    for expected in &sent {
        assert_eq!(Some(message(next(&mut slow).await).message_id), *expected);
    }
}

#[tokio::test]
async fn what_the_hub_never_saw_or_forgot_it_reads_from_the_streams() {
    let store = memory_store();
    let w = World::build(store.clone(), "north").await;
    // given a message posted and queued before the hub started, and a hub that
    // remembers one thing of each kind
    let before = w.send(w.principal, w.parent, "Before the hub").await;
    w.queue(&before).await;
    let config = LiveConfig {
        memory: 1,
        ..LiveConfig::default()
    };
    let hub = LiveHub::new(store, config);
    let (mut principal, _) = feed(&hub, &w, w.principal, None).await;
    let (mut counselor, _) = feed(&hub, &w, w.counselor, None).await;
    // and other conversations and deliveries crowding its memory
    let other = w.send(w.counselor, w.teen, "Homework").await;
    w.queue(&other).await;

    // when the early message's delivery changes status
    w.outcome(before.delivery_ids[0], "failed").await;
    w.outcome(other.delivery_ids[0], "sent").await;
    let again = w.send(w.principal, w.parent, "Again").await;

    // then its author is told, and every notice still finds its people
    let failed = delivery(next(&mut principal).await);
    assert_eq!(
        (failed.delivery_id, failed.status, Some(failed.message_id)),
        (
            before.delivery_ids[0],
            LiveStatus::Failed,
            before.message_id
        )
    );
    assert_eq!(
        Some(message(next(&mut principal).await).message_id),
        again.message_id
    );
    assert_eq!(
        Some(message(next(&mut counselor).await).message_id),
        other.message_id
    );
    let sent = delivery(next(&mut counselor).await);
    assert_eq!(sent.delivery_id, other.delivery_ids[0]);
}

#[tokio::test]
async fn closing_the_hub_ends_every_feed() {
    let store = memory_store();
    let w = World::build(store.clone(), "north").await;
    let hub = LiveHub::new(store, LiveConfig::default());
    let (mut open, _) = feed(&hub, &w, w.parent, None).await;
    assert_eq!(hub.subscribers(), 1);

    hub.close();

    let end = tokio::time::timeout(WAIT, open.next())
        .await
        .expect("ends in time");
    assert!(end.is_none(), "the feed ended: {end:?}");
    let mut late = hub.subscribe(
        Listener {
            district: w.district.clone(),
            person: w.parent,
            school_inboxes: vec![],
            taking_part: TakingPart::Everywhere,
            hears_every_delivery: false,
            sees_who_wrote_for_the_school: false,
            roles_known_at: Position::START,
            roles_held: vec![],
        },
        None,
    );
    let end = tokio::time::timeout(WAIT, late.next())
        .await
        .expect("ends in time");
    assert!(end.is_none(), "a feed opened after closing ends at once");
    assert!(hub.is_closed());
}

#[tokio::test]
async fn a_feed_too_far_behind_is_reset_to_the_head() {
    let store = memory_store();
    let w = World::build(store.clone(), "north").await;
    let config = LiveConfig {
        max_catch_up: 1,
        ..LiveConfig::default()
    };
    let hub = LiveHub::new(store.clone(), config);
    // given a client that comes back after more of the log than a feed replays
    let (mut feed, _) = feed(&hub, &w, w.parent, Some(Position::START)).await;
    // then it is reset to the head, and told what follows
    let head = store.head().await.unwrap();
    assert_eq!(next(&mut feed).await, Update::Reset { position: head });
    let live = w.send(w.principal, w.parent, "After the reset").await;
    assert_eq!(
        Some(message(next(&mut feed).await).message_id),
        live.message_id
    );
}

#[tokio::test]
async fn a_family_member_who_writes_is_not_told_how_the_others_were_reached() {
    let store = memory_store();
    let w = World::build(store.clone(), "north").await;
    let hub = LiveHub::new(store, LiveConfig::default());
    let (mut parent, _) = feed(&hub, &w, w.parent, None).await;

    let opened = w.send(w.principal, w.parent, "How is Dennis?").await;
    let reply = parse_command(
        "PostMessage",
        json!({"conversation_id": opened.conversation_id, "message_id": Uuid::now_v7(), "body": "Better, thanks"}),
    )
    .unwrap();
    let answered = w.run(Actor::Person(w.parent), reply).await;
    w.queue(&answered).await;
    w.outcome(answered.delivery_ids[0], "delivered").await;
    // A later message the parent hears of: everything before it was looked at.
    let last = w.send(w.principal, w.parent, "Glad to hear it").await;

    let mut told = Vec::new();
    while let Update::Notice(notice) = next(&mut parent).await {
        let done = matches!(&notice, Notice::Message(m) if Some(m.message_id) == last.message_id);
        told.push(notice);
        if done {
            break;
        }
    }
    assert!(
        told.iter().all(|n| matches!(n, Notice::Message(_))),
        "the parent heard of a delivery to the principal: {told:?}"
    );
}

#[tokio::test]
async fn a_feed_ends_when_its_persons_roles_change_so_the_next_follows_them() {
    let store = memory_store();
    let w = World::build(store.clone(), "north").await;
    let hub = LiveHub::new(store, LiveConfig::default());
    let (mut principal, _) = feed(&hub, &w, w.principal, None).await;
    let (mut counselor, _) = feed(&hub, &w, w.counselor, None).await;

    let revoked = w
        .system(
            "RevokeRole",
            json!({"person_id": w.principal, "role_id": "school_admin", "school_id": w.school}),
        )
        .await;

    match next(&mut principal).await {
        Update::Notice(Notice::RolesChanged(n)) => assert_eq!(n.position, revoked.position),
        other => panic!("expected roles_changed, got {other:?}"),
    }
    let end = tokio::time::timeout(WAIT, principal.next())
        .await
        .expect("ends in time");
    assert!(end.is_none(), "the feed ended: {end:?}");
    // Nobody else is told.
    let sent = w.send(w.counselor, w.parent, "Still here").await;
    assert_eq!(
        Some(message(next(&mut counselor).await).message_id),
        sent.message_id
    );
}

#[tokio::test]
async fn a_feed_ends_when_a_role_its_person_holds_is_redefined() {
    let store = memory_store();
    let w = World::build(store.clone(), "north").await;
    let hub = LiveHub::new(store, LiveConfig::default());
    w.system(
        "DefineRole",
        json!({"role_id": "front_office", "name": "Front office", "permissions": ["school_inbox"]}),
    )
    .await;
    w.system(
        "AssignRole",
        json!({"person_id": w.counselor, "role_id": "front_office", "school_id": w.school}),
    )
    .await;
    let holder = Listener {
        district: w.district.clone(),
        person: w.counselor,
        school_inboxes: vec![SchoolId::new(w.school)],
        taking_part: TakingPart::Everywhere,
        hears_every_delivery: true,
        sees_who_wrote_for_the_school: true,
        roles_known_at: w.store.head().await.unwrap(),
        roles_held: vec![
            RoleId::parse("school_admin").unwrap(),
            RoleId::parse("front_office").unwrap(),
        ],
    };
    let mut counselor = hub.subscribe(holder, None);
    assert!(matches!(next(&mut counselor).await, Update::Ready { .. }));
    let (mut principal, _) = feed(&hub, &w, w.principal, None).await;

    // The district takes the shared inbox away from the role: the holder's feed, opened
    // with it, must not go on telling of the school's conversations.
    let redefined = w
        .system(
            "DefineRole",
            json!({"role_id": "front_office", "name": "Front office", "permissions": ["personal_messages"]}),
        )
        .await;
    match next(&mut counselor).await {
        Update::Notice(Notice::RolesChanged(n)) => assert_eq!(n.position, redefined.position),
        other => panic!("expected roles_changed, got {other:?}"),
    }
    let end = tokio::time::timeout(WAIT, counselor.next())
        .await
        .expect("ends in time");
    assert!(end.is_none(), "the feed ended: {end:?}");
    // Someone who does not hold the role is not told, and their feed goes on.
    let sent = w.send(w.principal, w.parent, "Still here").await;
    assert_eq!(
        Some(message(next(&mut principal).await).message_id),
        sent.message_id
    );
}

#[tokio::test]
async fn catching_up_past_a_role_change_its_roles_already_follow_tells_it_and_goes_on() {
    let store = memory_store();
    let w = World::build(store.clone(), "north").await;
    let hub = LiveHub::new(store, LiveConfig::default());
    let before = w.store.head().await.unwrap();
    let assigned = w
        .system(
            "AssignRole",
            json!({"person_id": w.counselor, "role_id": "teacher", "school_id": w.school}),
        )
        .await;
    // The client reconnects from before the change; its new feed reads the roles as
    // they are now, after the change.
    let (mut counselor, _) = feed(&hub, &w, w.counselor, Some(before)).await;
    match next(&mut counselor).await {
        Update::Notice(Notice::RolesChanged(n)) => assert_eq!(n.position, assigned.position),
        other => panic!("expected roles_changed, got {other:?}"),
    }
    // and stays open for what comes next.
    let sent = w.send(w.counselor, w.parent, "Still with us?").await;
    assert_eq!(
        Some(message(next(&mut counselor).await).message_id),
        sent.message_id
    );
}

#[tokio::test]
async fn a_person_may_hold_only_so_many_feeds_open_at_once() {
    let store = memory_store();
    let w = World::build(store.clone(), "north").await;
    let hub = LiveHub::new(store, LiveConfig::default());
    let listener = |person| Listener {
        district: w.district.clone(),
        person,
        school_inboxes: vec![],
        taking_part: TakingPart::Everywhere,
        hears_every_delivery: false,
        sees_who_wrote_for_the_school: false,
        roles_known_at: Position::START,
        roles_held: vec![],
    };
    let mut slots: Vec<FeedSlot> = (0..MAX_FEEDS_PER_PERSON)
        .map(|_| hub.admit(&listener(w.parent)).unwrap())
        .collect();
    assert!(hub.admit(&listener(w.parent)).is_err(), "one too many");
    assert!(
        hub.admit(&listener(w.teen)).is_ok(),
        "another person is not held up"
    );
    slots.pop();
    assert!(
        hub.admit(&listener(w.parent)).is_ok(),
        "a closed feed gives its place back"
    );
}
