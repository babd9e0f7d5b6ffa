//! Each read model's behaviour from a given event history.

use super::support::*;
use crate::queries::*;
use homeroom_domain::events::*;
use homeroom_domain::visibility::{RecordAccess, TakingPart};
use homeroom_domain::{
    Channel, ConversationId, ConversationKind, DeliveryId, MessageId, PersonId, PersonKind,
    PlannedDelivery, SendAs,
};
use uuid::Uuid;

const TEACHER: u128 = 1;
const ADMIN: u128 = 2;
const STUDENT: u128 = 10;
const OTHER_STUDENT: u128 = 11;
const GUARDIAN: u128 = 20;
const OTHER_GUARDIAN: u128 = 21;

/// A small school: a teacher and an admin, two students with a guardian each, and
///
/// - conversation 1: personal, teacher → guardian (message 1);
/// - conversation 2: group of teacher, guardian, other guardian (messages 2, 3 by the
///   guardian, 4 by the other guardian);
/// - conversation 3: school conversation from the admin to the guardian (message 5),
///   the guardian's reply (message 6);
/// - conversation 4: personal, teacher → student (message 7), the student's reply (8).
async fn school_day(w: &World) -> homeroom_eventstore::Position {
    let (t, a, s, s2, g, g2) = (
        person(TEACHER),
        person(ADMIN),
        person(STUDENT),
        person(OTHER_STUDENT),
        person(GUARDIAN),
        person(OTHER_GUARDIAN),
    );
    w.register(NORTH, t, PersonKind::Staff, "Tess Teacher")
        .await;
    w.register(NORTH, a, PersonKind::Staff, "Ada Admin").await;
    w.register(NORTH, s, PersonKind::Student, "Sam Student")
        .await;
    w.register(NORTH, s2, PersonKind::Student, "Sid Student")
        .await;
    w.register(NORTH, g, PersonKind::Guardian, "Gail Guardian")
        .await;
    w.register(NORTH, g2, PersonKind::Guardian, "Gus Guardian")
        .await;
    w.link(NORTH, g, s).await;
    w.link(NORTH, g2, s2).await;
    w.start(
        NORTH,
        conversation(1),
        ConversationKind::Personal,
        &[t, g],
        message(1),
        "Hello {student_name}",
    )
    .await;
    w.start(
        NORTH,
        conversation(2),
        ConversationKind::Group,
        &[t, g, g2],
        message(2),
        "Field trip",
    )
    .await;
    w.post(
        NORTH,
        conversation(2),
        message(3),
        g,
        "We will come",
        &[t, g2],
    )
    .await;
    w.post(NORTH, conversation(2), message(4), g2, "Us too", &[t, g])
        .await;
    w.start(
        NORTH,
        conversation(3),
        ConversationKind::School,
        &[a, g],
        message(5),
        "Office hours",
    )
    .await;
    w.post(NORTH, conversation(3), message(6), g, "Thanks", &[])
        .await;
    w.start(
        NORTH,
        conversation(4),
        ConversationKind::Personal,
        &[t, s],
        message(7),
        "Homework",
    )
    .await;
    w.post(NORTH, conversation(4), message(8), s, "Done", &[t])
        .await
}

/// A viewer's reach into a record at the fixture's first school, with or without the
/// family's replies.
fn at_first_school(inbound: bool) -> RecordAccess {
    RecordAccess {
        schools: vec![school(1)],
        inbound_schools: if inbound { vec![school(1)] } else { vec![] },
    }
}

fn ids(inbox: &Inbox) -> Vec<u128> {
    inbox
        .conversations
        .iter()
        .map(|c| c.conversation_id.as_uuid().as_u128() - 0xc000)
        .collect()
}

async fn the_personal_inbox_holds_only_conversations_the_person_takes_part_in(w: World) {
    school_day(&w).await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);

    let teacher = read
        .inbox_personal(&north, person(TEACHER), false, &PageRequest::first())
        .await
        .unwrap();
    assert_eq!(ids(&teacher), vec![4, 2, 1], "most recent first");
    for (taking_part, expected) in [
        (TakingPart::Schools(vec![school(1)]), vec![4, 2, 1]),
        (TakingPart::Schools(vec![school(2)]), vec![]),
        (TakingPart::Schools(vec![]), vec![]),
    ] {
        let narrowed = read
            .inbox_personal_at(
                &north,
                person(TEACHER),
                &taking_part,
                None,
                false,
                &PageRequest::first(),
            )
            .await
            .unwrap();
        assert_eq!(ids(&narrowed), expected, "{taking_part:?}");
    }
    let admin = read
        .inbox_personal(&north, person(ADMIN), false, &PageRequest::first())
        .await
        .unwrap();
    assert!(
        admin.conversations.is_empty(),
        "staff see school conversations in the school inbox"
    );
    for (boxes, expected) in [
        (vec![school(1)], vec![]),
        (vec![school(2)], vec![3]),
        (vec![], vec![3]),
    ] {
        let admin = read
            .inbox_personal_at(
                &north,
                person(ADMIN),
                &TakingPart::Everywhere,
                Some(&boxes),
                false,
                &PageRequest::first(),
            )
            .await
            .unwrap();
        assert_eq!(
            ids(&admin),
            expected,
            "a school conversation is in the own tab of staff without its school box: {boxes:?}"
        );
    }
    let guardian = read
        .inbox_personal(&north, person(GUARDIAN), false, &PageRequest::first())
        .await
        .unwrap();
    assert_eq!(
        ids(&guardian),
        vec![3, 2, 1],
        "families see their school conversations"
    );
    let other = read
        .inbox_personal(&north, person(OTHER_GUARDIAN), false, &PageRequest::first())
        .await
        .unwrap();
    assert_eq!(ids(&other), vec![2]);

    let first = &guardian.conversations[2];
    assert_eq!(first.kind, ConversationKind::Personal);
    let last = first.last_message.as_ref().unwrap();
    assert_eq!(last.message_id, message(1));
    assert_eq!(last.author_id, person(TEACHER));
    assert_eq!(
        last.body, "Hello {student_name} (for 20)",
        "the guardian's rendering"
    );
    assert_eq!(guardian.next, None);
}

async fn unread_counts_follow_read_positions_and_skip_ones_own_messages(w: World) {
    school_day(&w).await;
    let g = person(GUARDIAN);
    w.conv_event(
        NORTH,
        conversation(2),
        g,
        MessagesRead {
            conversation_id: conversation(2),
            person_id: g,
            up_to_message_id: message(2),
            at: w.now(),
        }
        .into(),
    )
    .await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);
    let unread = |inbox: &Inbox, c: u128| {
        inbox
            .conversations
            .iter()
            .find(|i| i.conversation_id == conversation(c))
            .map(|i| i.unread_count)
    };
    let inbox = read
        .inbox_personal(&north, g, false, &PageRequest::first())
        .await
        .unwrap();
    // Conversation 2: read up to message 2; message 3 is the guardian's own; 4 unread.
    assert_eq!(unread(&inbox, 2), Some(1));
    assert_eq!(unread(&inbox, 1), Some(1));
    let teacher = read
        .inbox_personal(&north, person(TEACHER), false, &PageRequest::first())
        .await
        .unwrap();
    assert_eq!(unread(&teacher, 2), Some(2), "messages 3 and 4 by others");
    assert_eq!(unread(&teacher, 4), Some(1));

    // Reading backwards never moves the read position back.
    w.conv_event(
        NORTH,
        conversation(2),
        g,
        MessagesRead {
            conversation_id: conversation(2),
            person_id: g,
            up_to_message_id: message(4),
            at: w.now(),
        }
        .into(),
    )
    .await;
    w.conv_event(
        NORTH,
        conversation(2),
        g,
        MessagesRead {
            conversation_id: conversation(2),
            person_id: g,
            up_to_message_id: message(2),
            at: w.now(),
        }
        .into(),
    )
    .await;
    runtime.catch_up().await.unwrap();
    let inbox = read
        .inbox_personal(&north, g, false, &PageRequest::first())
        .await
        .unwrap();
    assert_eq!(unread(&inbox, 2), Some(0));
}

async fn archive_mute_rename_and_stop_show_in_the_inbox(w: World) {
    school_day(&w).await;
    let t = person(TEACHER);
    let c = conversation(2);
    w.conv_event(
        NORTH,
        c,
        t,
        ConversationArchived {
            conversation_id: c,
            person_id: t,
            at: w.now(),
        }
        .into(),
    )
    .await;
    w.conv_event(
        NORTH,
        c,
        t,
        ConversationMuted {
            conversation_id: c,
            person_id: t,
            at: w.now(),
        }
        .into(),
    )
    .await;
    w.conv_event(
        NORTH,
        c,
        t,
        ConversationRenamed {
            conversation_id: c,
            title: "Trip".into(),
            by: t,
            at: w.now(),
        }
        .into(),
    )
    .await;
    w.conv_event(
        NORTH,
        c,
        t,
        ConversationStopped {
            conversation_id: c,
            by: t,
            at: w.now(),
        }
        .into(),
    )
    .await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);

    let main = read
        .inbox_personal(&north, t, false, &PageRequest::first())
        .await
        .unwrap();
    assert_eq!(ids(&main), vec![4, 1], "archived ones leave the main tab");
    let archive = read
        .inbox_personal(&north, t, true, &PageRequest::first())
        .await
        .unwrap();
    assert_eq!(ids(&archive), vec![2]);
    let item = &archive.conversations[0];
    assert!(item.muted && item.archived && item.stopped);
    assert_eq!(item.title.as_deref(), Some("Trip"));

    // Only the teacher archived it.
    let g = read
        .inbox_personal(&north, person(GUARDIAN), false, &PageRequest::first())
        .await
        .unwrap();
    let item = g
        .conversations
        .iter()
        .find(|i| i.conversation_id == c)
        .unwrap();
    assert!(!item.muted && !item.archived && item.stopped);

    w.conv_event(
        NORTH,
        c,
        t,
        ConversationUnarchived {
            conversation_id: c,
            person_id: t,
            at: w.now(),
        }
        .into(),
    )
    .await;
    runtime.catch_up().await.unwrap();
    let main = read
        .inbox_personal(&north, t, false, &PageRequest::first())
        .await
        .unwrap();
    assert_eq!(ids(&main), vec![4, 2, 1], "ordered by last message");
}

async fn a_new_message_brings_an_archived_conversation_back(w: World) {
    school_day(&w).await;
    let (t, a, g) = (person(TEACHER), person(ADMIN), person(GUARDIAN));
    let archive = |c: ConversationId, who: PersonId| ConversationArchived {
        conversation_id: c,
        person_id: who,
        at: w.now(),
    };
    // The teacher archives the field trip and the homework; the admin the school's
    // conversation. Then the guardian writes in the field trip and to the school.
    for (c, who) in [(2, t), (4, t), (3, a)] {
        let event = archive(conversation(c), who);
        w.conv_event(NORTH, conversation(c), who, event.into())
            .await;
    }
    w.post(NORTH, conversation(2), message(9), g, "Which bus?", &[t])
        .await;
    w.post(NORTH, conversation(3), message(10), g, "And lunch?", &[])
        .await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);

    let first = PageRequest::first();
    let schools = [school(1)];
    let tab = |archived| read.inbox_personal(&north, t, archived, &first);
    let main = tab(false).await.unwrap();
    assert_eq!(ids(&main), vec![2, 1]);
    assert!(!main.conversations[0].archived);
    assert_eq!(
        main.conversations[0].unread_count, 3,
        "the families' three answers"
    );
    let archive_tab = tab(true).await.unwrap();
    assert_eq!(
        ids(&archive_tab),
        vec![4],
        "nothing new came in the homework"
    );
    assert!(archive_tab.conversations[0].archived);

    let school_box = |archived| read.inbox_school(&north, &schools, a, archived, &first);
    assert_eq!(ids(&school_box(false).await.unwrap()), vec![3]);
    assert_eq!(ids(&school_box(true).await.unwrap()), Vec::<u128>::new());

    // Archived again after the answer, it stays archived until the next message.
    let event = archive(conversation(2), t);
    w.conv_event(NORTH, conversation(2), t, event.into()).await;
    runtime.catch_up().await.unwrap();
    assert_eq!(ids(&tab(true).await.unwrap()), vec![2, 4]);
}

async fn replies_kept_without_posting_show_beside_the_thread_and_in_the_export(w: World) {
    school_day(&w).await;
    let (t, g) = (person(TEACHER), person(GUARDIAN));
    let c = conversation(1);
    w.conv_event(
        NORTH,
        c,
        t,
        ConversationStopped {
            conversation_id: c,
            by: t,
            at: w.now(),
        }
        .into(),
    )
    .await;
    for (sid, body, reason) in [
        ("SM1", "One more question", None),
        ("SM2", "My SSN is 123-45-6789", Some("blocked_content")),
    ] {
        let refused = InboundReplyRefused {
            conversation_id: c,
            author_id: g,
            message_sid: homeroom_domain::ProviderMessageId::parse(sid).unwrap(),
            body: body.to_owned(),
            reason: reason.map(str::to_owned),
            shared_phone_with: if sid == "SM2" {
                vec![person(OTHER_GUARDIAN)]
            } else {
                vec![]
            },
            at: w.now(),
        };
        // The provider retrying its webhook is one reply, not two.
        for _ in 0..2 {
            w.conv_event(NORTH, c, g, refused.clone().into()).await;
        }
    }
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);
    let thread = read
        .conversation(&north, c, Some(t))
        .await
        .unwrap()
        .unwrap();
    let kept: Vec<(&str, &str, &str)> = thread
        .refused_replies
        .iter()
        .map(|r| (r.message_sid.as_str(), r.body.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(
        kept,
        vec![
            ("SM1", "One more question", "conversation_stopped"),
            ("SM2", "My SSN is 123-45-6789", "blocked_content"),
        ]
    );
    assert_eq!(thread.refused_replies[0].author_id, g);
    assert!(thread.refused_replies[0].shared_phone_with.is_empty());
    assert_eq!(
        thread.refused_replies[1].shared_phone_with,
        vec![person(OTHER_GUARDIAN)]
    );
    assert_eq!(
        thread.refused_replies[0].author_name.as_deref(),
        Some("Gail Guardian")
    );
    assert_eq!(thread.messages.len(), 1, "never a message");
    let export = read.export_conversation(&north, c).await.unwrap().unwrap();
    assert_eq!(export.refused_replies, thread.refused_replies);
    let lines = export.to_json_lines();
    assert_eq!(
        lines
            .lines()
            .filter(|l| l.starts_with(r#"{"record":"refused_reply""#))
            .count(),
        2,
        "{lines}"
    );
}

async fn a_reply_from_a_shared_phone_names_who_else_has_it_in_thread_and_export(w: World) {
    school_day(&w).await;
    let (t, g, g2) = (person(TEACHER), person(GUARDIAN), person(OTHER_GUARDIAN));
    let c = conversation(2);
    let mut reply = w.message_posted(c, message(9), g, "We will be there", &[t]);
    reply.shared_phone_with = vec![g2];
    w.conv_event(NORTH, c, g, reply.into()).await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);
    let thread = read
        .conversation(&north, c, Some(t))
        .await
        .unwrap()
        .unwrap();
    let shared: Vec<(MessageId, Vec<PersonId>)> = thread
        .messages
        .iter()
        .map(|m| (m.message_id, m.shared_phone_with.clone()))
        .collect();
    assert_eq!(
        shared.last(),
        Some(&(message(9), vec![g2])),
        "only the reply from the shared phone: {shared:?}"
    );
    assert!(shared[..shared.len() - 1].iter().all(|(_, s)| s.is_empty()));
    let export = read.export_conversation(&north, c).await.unwrap().unwrap();
    assert_eq!(export.messages.last().unwrap().shared_phone_with, vec![g2]);
}

async fn the_school_inbox_is_shared_by_every_holder_with_their_own_state(w: World) {
    school_day(&w).await;
    let other_admin = person(3);
    w.register(NORTH, other_admin, PersonKind::Staff, "Otto Office")
        .await;
    let c = conversation(3);
    w.conv_event(
        NORTH,
        c,
        other_admin,
        MessagesRead {
            conversation_id: c,
            person_id: other_admin,
            up_to_message_id: message(6),
            at: w.now(),
        }
        .into(),
    )
    .await;
    w.conv_event(
        NORTH,
        c,
        other_admin,
        ConversationMuted {
            conversation_id: c,
            person_id: other_admin,
            at: w.now(),
        }
        .into(),
    )
    .await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);

    let admin = read
        .inbox_school(
            &north,
            &[school(1)],
            person(ADMIN),
            false,
            &PageRequest::first(),
        )
        .await
        .unwrap();
    assert_eq!(ids(&admin), vec![3]);
    assert_eq!(
        admin.conversations[0].unread_count, 1,
        "the guardian's reply"
    );
    assert_eq!(
        admin.conversations[0].last_message.as_ref().unwrap().body,
        "Thanks"
    );
    let other = read
        .inbox_school(
            &north,
            &[school(1)],
            other_admin,
            false,
            &PageRequest::first(),
        )
        .await
        .unwrap();
    assert_eq!(ids(&other), vec![3], "holders need not be participants");
    assert_eq!(other.conversations[0].unread_count, 0);
    assert!(other.conversations[0].muted);
    assert!(!admin.conversations[0].muted);

    let elsewhere = read
        .inbox_school(
            &north,
            &[school(2)],
            person(ADMIN),
            false,
            &PageRequest::first(),
        )
        .await
        .unwrap();
    assert!(elsewhere.conversations.is_empty());
    let none = read
        .inbox_school(&north, &[], person(ADMIN), false, &PageRequest::first())
        .await
        .unwrap();
    assert!(none.conversations.is_empty());
}

async fn what_the_school_sent_is_not_unread_for_any_holder_of_its_inbox(w: World) {
    let (a, b, g) = (person(ADMIN), person(TEACHER), person(GUARDIAN));
    w.register(NORTH, a, PersonKind::Staff, "Ada Admin").await;
    w.register(NORTH, b, PersonKind::Staff, "Otto Office").await;
    w.register(NORTH, g, PersonKind::Guardian, "Gail Guardian")
        .await;
    let c = conversation(1);
    let from_school = |m: u128, author: PersonId| {
        let mut posted = w.message_posted(c, message(m), author, "From the office", &[g]);
        posted.sent_as = SendAs::School;
        Event::from(posted)
    };
    w.append(
        NORTH,
        &conv_stream(NORTH, c),
        &a.to_string(),
        vec![
            w.started(c, ConversationKind::School, &[a, g], None),
            from_school(1, a),
        ],
    )
    .await;
    w.post(NORTH, c, message(2), g, "A question", &[]).await;
    w.conv_event(NORTH, c, b, from_school(3, b)).await;
    let (runtime, read) = w.runtime().await;
    let unread = |viewer: PersonId| {
        let (runtime, read) = (&runtime, &read);
        async move {
            runtime.catch_up().await.unwrap();
            let inbox = read
                .inbox_school(
                    &district(NORTH),
                    &[school(1)],
                    viewer,
                    false,
                    &PageRequest::first(),
                )
                .await
                .unwrap();
            inbox.conversations[0].unread_count
        }
    };
    assert_eq!(
        unread(a).await,
        1,
        "the family's question, not the colleague's answer"
    );
    assert_eq!(unread(b).await, 1, "nor one's own answer");
    w.post(NORTH, c, message(4), g, "Thank you", &[]).await;
    assert_eq!(unread(a).await, 2);
    w.conv_event(
        NORTH,
        c,
        a,
        MessagesRead {
            conversation_id: c,
            person_id: a,
            up_to_message_id: message(2),
            at: w.now(),
        }
        .into(),
    )
    .await;
    assert_eq!(unread(a).await, 1, "what came after the read position");
    assert_eq!(unread(b).await, 2, "each holder reads for themselves");
    w.post(NORTH, c, message(5), b, "Writing as myself", &[g])
        .await;
    assert_eq!(unread(a).await, 1, "nor what staff wrote as themselves");
    assert_eq!(unread(b).await, 2);
}

async fn inboxes_page_with_an_opaque_cursor(w: World) {
    let t = person(TEACHER);
    w.register(NORTH, t, PersonKind::Staff, "Tess").await;
    for n in 0..5u128 {
        let g = person(100 + n);
        w.register(NORTH, g, PersonKind::Guardian, "G").await;
        w.start(
            NORTH,
            conversation(100 + n),
            ConversationKind::Personal,
            &[t, g],
            message(100 + n),
            "hi",
        )
        .await;
    }
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);
    let first = read
        .inbox_personal(&north, t, false, &PageRequest::of(2))
        .await
        .unwrap();
    assert_eq!(ids(&first), vec![104, 103]);
    let second = read
        .inbox_personal(
            &north,
            t,
            false,
            &PageRequest::after(2, first.next.clone().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(ids(&second), vec![102, 101]);
    let third = read
        .inbox_personal(
            &north,
            t,
            false,
            &PageRequest::after(2, second.next.clone().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(ids(&third), vec![100]);
    assert_eq!(third.next, None);
    assert!(matches!(
        read.inbox_personal(&north, t, false, &PageRequest::after(2, "nonsense"))
            .await,
        Err(crate::QueryError::BadCursor)
    ));
}

async fn the_thread_shows_participants_messages_deliveries_and_read_receipts(w: World) {
    school_day(&w).await;
    let (t, g, g2) = (person(TEACHER), person(GUARDIAN), person(OTHER_GUARDIAN));
    let c = conversation(2);
    w.outcome(NORTH, delivery_id_for(message(2), g), "sent")
        .await;
    w.outcome(NORTH, delivery_id_for(message(2), g), "delivered")
        .await;
    w.outcome(NORTH, delivery_id_for(message(2), g2), "failed")
        .await;
    w.conv_event(
        NORTH,
        c,
        g2,
        MessagesRead {
            conversation_id: c,
            person_id: g2,
            up_to_message_id: message(3),
            at: w.now(),
        }
        .into(),
    )
    .await;
    w.conv_event(
        NORTH,
        c,
        t,
        MessagesRead {
            conversation_id: c,
            person_id: t,
            up_to_message_id: message(4),
            at: w.now(),
        }
        .into(),
    )
    .await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);

    let thread = read
        .conversation(&north, c, Some(g))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(thread.kind, ConversationKind::Group);
    assert!(!thread.stopped);
    let names: Vec<_> = thread
        .participants
        .iter()
        .map(|p| (p.person_id, p.name.clone().unwrap()))
        .collect();
    assert_eq!(
        names,
        vec![
            (t, "Tess Teacher".into()),
            (g, "Gail Guardian".into()),
            (g2, "Gus Guardian".into())
        ]
    );
    let bodies: Vec<_> = thread
        .messages
        .iter()
        .map(|m| m.original_body.as_str())
        .collect();
    assert_eq!(
        bodies,
        vec!["Field trip (for 20)", "We will come", "Us too (for 20)"],
        "before any translation: as rendered for the viewer where they were a recipient, \
         else as written"
    );
    let as_written = read.conversation(&north, c, None).await.unwrap().unwrap();
    let written: Vec<_> = as_written
        .messages
        .iter()
        .map(|m| m.original_body.as_str())
        .collect();
    assert_eq!(written, vec!["Field trip", "We will come", "Us too"]);

    let first = &thread.messages[0];
    assert_eq!(first.author_id, t);
    assert_eq!(first.author_name.as_deref(), Some("Tess Teacher"));
    assert_eq!(first.body, "Field trip (for 20)", "the viewer's rendering");
    assert_eq!(
        first.language.as_deref(),
        Some("en"),
        "the delivery's language"
    );
    let statuses: Vec<_> = first
        .deliveries
        .iter()
        .map(|d| (d.recipient_id, d.status))
        .collect();
    assert!(statuses.contains(&(g, DeliveryStatus::Delivered)));
    assert!(statuses.contains(&(g2, DeliveryStatus::Failed)));
    assert_eq!(first.read_by, vec![g2], "the author is not a reader");

    let own = &thread.messages[1];
    assert_eq!(
        own.body, "We will come",
        "the viewer's own message is the original"
    );
    assert_eq!(own.language.as_deref(), Some("es"), "the author's language");
    assert_eq!(own.read_by, {
        let mut r = vec![t, g2];
        r.sort();
        r
    });
    assert_eq!(thread.messages[2].read_by, vec![t]);

    // JSON field names are API.md's.
    let json = serde_json::to_value(&thread).unwrap();
    for field in [
        "conversation_id",
        "title",
        "kind",
        "stopped",
        "participants",
        "messages",
    ] {
        assert!(json.get(field).is_some(), "{field}");
    }
    let m = &json["messages"][0];
    for field in [
        "message_id",
        "author_id",
        "body",
        "original_body",
        "language",
        "sent_at",
        "deliveries",
        "read_by",
    ] {
        assert!(m.get(field).is_some(), "{field}");
    }
    for field in ["recipient_id", "channel", "status"] {
        assert!(m["deliveries"][0].get(field).is_some(), "{field}");
    }
    assert_eq!(json["participants"][0]["name"], "Tess Teacher");

    assert!(read
        .conversation(&north, conversation(99), None)
        .await
        .unwrap()
        .is_none());
}

async fn delivery_status_moves_forward_only(w: World) {
    school_day(&w).await;
    let d = delivery_id_for(message(1), person(GUARDIAN));
    w.outcome(NORTH, d, "delivered").await;
    w.outcome(NORTH, d, "sent").await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);
    let view = read.delivery(&north, d).await.unwrap().unwrap();
    assert_eq!(view.status, DeliveryStatus::Delivered);
    assert_eq!(view.recipient_id, person(GUARDIAN));
    assert_eq!(view.message_id, message(1));

    let queued = read
        .delivery(&north, delivery_id_for(message(7), person(STUDENT)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        queued.status,
        DeliveryStatus::Queued,
        "from the MessagePosted plan"
    );

    // A DeliveryQueued for a planned delivery keeps its status.
    w.append(
        NORTH,
        &format!("delivery-{NORTH}:{d}"),
        "pm",
        vec![DeliveryQueued {
            delivery: planned(message(1), person(GUARDIAN), "again"),
            message_id: message(1),
            conversation_id: conversation(1),
            fallback_of: None,
            sender: None,
            at: w.now(),
        }
        .into()],
    )
    .await;
    runtime.catch_up().await.unwrap();
    let view = read.delivery(&north, d).await.unwrap().unwrap();
    assert_eq!(view.status, DeliveryStatus::Delivered);
    assert!(read.delivery(&district(SOUTH), d).await.unwrap().is_none());
}

async fn a_message_that_fell_back_to_another_channel_lists_its_conversation_once(w: World) {
    school_day(&w).await;
    let (t, g) = (person(TEACHER), person(GUARDIAN));
    w.post(NORTH, conversation(1), message(20), t, "Picture day", &[g])
        .await;
    // The SMS fails and the message goes once more, by email, under a new delivery id.
    let first = delivery_id_for(message(20), g);
    w.outcome(NORTH, first, "failed").await;
    let fallback = DeliveryId::new(Uuid::from_u128(0xfa11));
    w.append(
        NORTH,
        &format!("delivery-{NORTH}:{fallback}"),
        "reactor",
        vec![DeliveryQueued {
            delivery: PlannedDelivery {
                delivery_id: fallback,
                channel: Channel::Email,
                address: Some("pat@example.org".to_owned()),
                ..planned(message(20), g, "Picture day")
            },
            message_id: message(20),
            conversation_id: conversation(1),
            fallback_of: Some(first),
            sender: None,
            at: w.now(),
        }
        .into()],
    )
    .await;
    w.outcome(NORTH, fallback, "delivered").await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let inbox = read
        .inbox_personal(&district(NORTH), g, false, &PageRequest::first())
        .await
        .unwrap();
    let listed: Vec<_> = inbox
        .conversations
        .iter()
        .filter(|i| i.conversation_id == conversation(1))
        .collect();
    assert_eq!(listed.len(), 1, "{:?}", inbox.conversations);
    assert_eq!(
        listed[0].last_message.as_ref().map(|m| m.body.as_str()),
        Some("Picture day")
    );
    // Both deliveries stay in the thread: the failed one and the one that arrived.
    let thread = read
        .conversation(&district(NORTH), conversation(1), None)
        .await
        .unwrap()
        .unwrap();
    let last = thread.messages.last().unwrap();
    assert_eq!(last.deliveries.len(), 2, "{last:?}");
}

async fn a_students_record_keeps_what_a_former_guardian_was_sent_until_the_link_ended(w: World) {
    school_day(&w).await;
    let (t, g, s) = (person(TEACHER), person(GUARDIAN), person(STUDENT));
    let unlinked = GuardianUnlinked {
        guardian_id: g,
        student_id: s,
        at: w.now(),
        by: homeroom_domain::Actor::System("sis".into()),
    };
    w.append(
        NORTH,
        &format!("person-{NORTH}:{g}"),
        "sis",
        vec![unlinked.into()],
    )
    .await;
    // After the custody change the teacher and the former guardian still talk.
    w.post(
        NORTH,
        conversation(1),
        message(9),
        t,
        "About the bake sale",
        &[g],
    )
    .await;
    w.post(NORTH, conversation(1), message(10), g, "Count me in", &[t])
        .await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let record = read
        .student_record(
            &district(NORTH),
            s,
            &at_first_school(true),
            &PageRequest::first(),
        )
        .await
        .unwrap();
    let got: Vec<u128> = record
        .messages
        .iter()
        .map(|e| e.message_id.as_uuid().as_u128() - 0xe000)
        .collect();
    assert_eq!(
        got,
        vec![1, 2, 3, 5, 6, 7, 8],
        "what was written while the link held stays; nothing after it joins"
    );
    // It stays as it was: the former guardian's words are the family's, and what the
    // school sent them is shown as delivered to them.
    let hello = &record.messages[0];
    assert_eq!(hello.deliveries.len(), 1, "{hello:?}");
    assert_eq!(hello.deliveries[0].delivery.recipient_id, g);
    let answer = &record.messages[2];
    assert_eq!(answer.direction, Direction::Inbound);
}

async fn a_students_record_holds_staff_messages_and_optionally_the_familys_replies(w: World) {
    school_day(&w).await;
    let d = delivery_id_for(message(2), person(GUARDIAN));
    w.outcome(NORTH, d, "sent").await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);

    let record = read
        .student_record(
            &north,
            person(STUDENT),
            &at_first_school(true),
            &PageRequest::first(),
        )
        .await
        .unwrap();
    let got: Vec<_> = record
        .messages
        .iter()
        .map(|e| (e.message_id.as_uuid().as_u128() - 0xe000, e.direction))
        .collect();
    use Direction::*;
    assert_eq!(
        got,
        vec![
            (1, Outbound),
            (2, Outbound),
            (3, Inbound),
            (5, Outbound),
            (6, Inbound),
            (7, Outbound),
            (8, Inbound)
        ],
        "another family's reply (4) is not on this record"
    );
    let trip = &record.messages[1];
    assert_eq!(trip.sender_name.as_deref(), Some("Tess Teacher"));
    assert_eq!(
        trip.deliveries.len(),
        1,
        "only deliveries to the student's family"
    );
    assert_eq!(trip.deliveries[0].delivery.recipient_id, person(GUARDIAN));
    assert_eq!(trip.deliveries[0].delivery.status, DeliveryStatus::Sent);
    let hello = &record.messages[0];
    assert_eq!(hello.body, "Hello {student_name}", "as written");
    assert_eq!(
        hello.deliveries[0].text, "Hello {student_name} (for 20)",
        "and as rendered for the one who received it"
    );
    let reply = &record.messages[2];
    assert_eq!(
        reply.deliveries.len(),
        2,
        "an inbound reply shows every delivery"
    );

    let outbound = read
        .student_record(
            &north,
            person(STUDENT),
            &at_first_school(false),
            &PageRequest::first(),
        )
        .await
        .unwrap();
    assert!(outbound.messages.iter().all(|e| e.direction == Outbound));
    assert_eq!(outbound.messages.len(), 4);

    let paged = read
        .student_record(
            &north,
            person(STUDENT),
            &at_first_school(true),
            &PageRequest::of(4),
        )
        .await
        .unwrap();
    assert_eq!(paged.messages.len(), 4);
    let rest = read
        .student_record(
            &north,
            person(STUDENT),
            &at_first_school(true),
            &PageRequest::after(4, paged.next.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.messages.len(), 3);
    assert_eq!(rest.next, None);

    let other = read
        .student_record(
            &north,
            person(OTHER_STUDENT),
            &at_first_school(true),
            &PageRequest::first(),
        )
        .await
        .unwrap();
    let got: Vec<_> = other.messages.iter().map(|e| e.message_id).collect();
    assert_eq!(got, vec![message(2), message(4)]);
}

async fn a_students_record_holds_a_guardian_only_while_each_of_their_links_held(w: World) {
    school_day(&w).await;
    let (t, g2, s) = (person(TEACHER), person(OTHER_GUARDIAN), person(STUDENT));
    let record_of = |read: crate::ReadModels| async move {
        let record = read
            .student_record(
                &district(NORTH),
                s,
                &at_first_school(true),
                &PageRequest::first(),
            )
            .await
            .unwrap();
        record
            .messages
            .iter()
            .map(|e| e.message_id.as_uuid().as_u128() - 0xe000)
            .collect::<Vec<u128>>()
    };
    // Another child's guardian, written to before they were linked to this one,
    w.start(
        NORTH,
        conversation(30),
        ConversationKind::Personal,
        &[t, g2],
        message(30),
        "About Sid's homework",
    )
    .await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let before = record_of(read.clone()).await;
    assert!(!before.contains(&30));
    // is linked to the student (a new partner, say): what came before is not about them;
    w.link(NORTH, g2, s).await;
    w.post(NORTH, conversation(30), message(31), t, "Welcome", &[g2])
        .await;
    // the link ends, and what is written meanwhile is not on the record;
    let unlinked = GuardianUnlinked {
        guardian_id: g2,
        student_id: s,
        at: w.now(),
        by: homeroom_domain::Actor::System("sis".into()),
    };
    w.append(
        NORTH,
        &format!("person-{NORTH}:{g2}"),
        "sis",
        vec![unlinked.into()],
    )
    .await;
    w.post(NORTH, conversation(30), message(32), t, "Between", &[g2])
        .await;
    w.post(NORTH, conversation(30), message(33), g2, "Noted", &[t])
        .await;
    // then they are linked again, and what follows is.
    w.link(NORTH, g2, s).await;
    w.post(NORTH, conversation(30), message(34), t, "Back again", &[g2])
        .await;
    w.post(NORTH, conversation(30), message(35), g2, "Thanks", &[t])
        .await;
    runtime.catch_up().await.unwrap();
    let mut expected = before.clone();
    expected.extend([31, 34, 35]);
    assert_eq!(record_of(read).await, expected);
}

async fn what_another_school_wrote_to_a_guardian_is_not_on_this_schools_student_record(w: World) {
    school_day(&w).await;
    let (t, g) = (person(TEACHER), person(GUARDIAN));
    let mut started = w.started(conversation(5), ConversationKind::Personal, &[t, g], None);
    if let Event::ConversationStarted(e) = &mut started {
        e.school_id = school(2);
    }
    w.append(
        NORTH,
        &conv_stream(NORTH, conversation(5)),
        &t.to_string(),
        vec![
            started,
            w.posted(
                conversation(5),
                message(9),
                t,
                "About your other child",
                &[g],
            ),
        ],
    )
    .await;
    w.post(NORTH, conversation(5), message(10), g, "Noted", &[t])
        .await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);
    let on_record = |record: StudentRecord| -> Vec<u128> {
        record
            .messages
            .iter()
            .map(|e| e.message_id.as_uuid().as_u128() - 0xe000)
            .collect()
    };

    let first = read
        .student_record(
            &north,
            person(STUDENT),
            &at_first_school(true),
            &PageRequest::first(),
        )
        .await
        .unwrap();
    assert_eq!(on_record(first), vec![1, 2, 3, 5, 6, 7, 8]);

    let second = RecordAccess {
        schools: vec![school(2)],
        inbound_schools: vec![school(2)],
    };
    let at_second = read
        .student_record(&north, person(STUDENT), &second, &PageRequest::first())
        .await
        .unwrap();
    assert_eq!(on_record(at_second), vec![9, 10]);

    let replies_only_at_first = RecordAccess {
        schools: vec![school(1), school(2)],
        inbound_schools: vec![school(1)],
    };
    let both = read
        .student_record(
            &north,
            person(STUDENT),
            &replies_only_at_first,
            &PageRequest::first(),
        )
        .await
        .unwrap();
    assert_eq!(
        on_record(both),
        vec![1, 2, 3, 5, 6, 7, 8, 9],
        "the reply at the second school needs inbound_replies there"
    );
}

async fn oversight_sees_every_conversation_and_searches_text_participant_and_dates(w: World) {
    school_day(&w).await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);
    let all = |f: OversightFilter| {
        let read = read.clone();
        let north = north.clone();
        async move {
            let page = read
                .oversight(&north, &OversightScope::District, &f, &PageRequest::first())
                .await
                .unwrap();
            page.conversations
                .iter()
                .map(|c| c.conversation_id.as_uuid().as_u128() - 0xc000)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        all(OversightFilter::default()).await,
        vec![4, 3, 2, 1],
        "personal ones included"
    );
    let text = |q: &str| OversightFilter {
        q: Some(q.into()),
        ..Default::default()
    };
    assert_eq!(
        all(text("field TRIP")).await,
        vec![2],
        "case-insensitive body match"
    );
    assert_eq!(all(text("gus")).await, vec![2], "participant names");
    assert_eq!(
        all(text("100%")).await,
        Vec::<u128>::new(),
        "wildcards are literal"
    );
    let with = OversightFilter {
        participant: Some(person(STUDENT)),
        ..Default::default()
    };
    assert_eq!(all(with).await, vec![4]);

    let thread = read
        .conversation(&north, conversation(3), None)
        .await
        .unwrap()
        .unwrap();
    let since = thread.messages[0].sent_at;
    let range = OversightFilter {
        since: Some(since),
        ..Default::default()
    };
    assert_eq!(all(range).await, vec![4, 3]);
    let before = OversightFilter {
        until: Some(since),
        ..Default::default()
    };
    assert_eq!(all(before).await, vec![2, 1]);

    let scoped = read
        .oversight(
            &north,
            &OversightScope::Schools(vec![school(2)]),
            &OversightFilter::default(),
            &PageRequest::first(),
        )
        .await
        .unwrap();
    assert!(scoped.conversations.is_empty());
    let page = read
        .oversight(
            &north,
            &OversightScope::Schools(vec![school(1)]),
            &OversightFilter::default(),
            &PageRequest::of(3),
        )
        .await
        .unwrap();
    assert_eq!(page.conversations.len(), 3);
    assert_eq!(page.conversations[0].participants.len(), 2);
    assert_eq!(page.conversations[0].message_count, 2);
    assert!(page.next.is_some());
}

async fn oversight_search_ignores_case_and_accents_in_any_alphabet(w: World) {
    let (t, g, g2) = (person(TEACHER), person(GUARDIAN), person(OTHER_GUARDIAN));
    w.register(NORTH, t, PersonKind::Staff, "Tess Teacher")
        .await;
    w.register(NORTH, g, PersonKind::Guardian, "Ángela Núñez")
        .await;
    w.register(NORTH, g2, PersonKind::Guardian, "Gus Guardian")
        .await;
    let (c1, c2, c3) = (conversation(1), conversation(2), conversation(3));
    w.conv_event(
        NORTH,
        c1,
        t,
        w.started(c1, ConversationKind::Personal, &[t, g], None),
    )
    .await;
    w.post(NORTH, c1, message(1), t, "Réunion à l'ÉCOLE jeudi", &[g])
        .await;
    w.conv_event(
        NORTH,
        c2,
        t,
        w.started(
            c2,
            ConversationKind::Group,
            &[t, g2],
            Some("ΣΧΟΛΙΚΉ ΕΚΔΡΟΜΉ"),
        ),
    )
    .await;
    w.post(NORTH, c2, message(2), t, "Bus at 8", &[g2]).await;
    w.conv_event(
        NORTH,
        c3,
        t,
        w.started(c3, ConversationKind::Personal, &[t, g2], Some("Homework")),
    )
    .await;
    let mut with_subject = w.message_posted(c3, message(3), t, "Page 12", &[g2]);
    with_subject.subject = Some("Convocatoria Ñoño".into());
    w.conv_event(NORTH, c3, t, with_subject.into()).await;
    w.conv_event(
        NORTH,
        c3,
        t,
        ConversationRenamed {
            conversation_id: c3,
            title: "Devoirs de français".into(),
            by: t,
            at: w.now(),
        }
        .into(),
    )
    .await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);
    let found = |q: &str| {
        let read = read.clone();
        let north = north.clone();
        let filter = OversightFilter {
            q: Some(q.into()),
            ..Default::default()
        };
        async move {
            let page = read
                .oversight(
                    &north,
                    &OversightScope::District,
                    &filter,
                    &PageRequest::first(),
                )
                .await
                .unwrap();
            page.conversations
                .iter()
                .map(|c| c.conversation_id.as_uuid().as_u128() - 0xc000)
                .collect::<Vec<_>>()
        }
    };
    let none = Vec::<u128>::new();
    assert_eq!(found("angela").await, vec![1], "a name without its accent");
    assert_eq!(
        found("NÚÑEZ").await,
        vec![1],
        "a name in capitals with its accents"
    );
    assert_eq!(found("école").await, vec![1], "a body in capitals");
    assert_eq!(
        found("reunion a l'ecole").await,
        vec![1],
        "a body without accents"
    );
    assert_eq!(
        found("σχολική").await,
        vec![2],
        "a Greek title in lower case"
    );
    assert_eq!(found("FRANCAIS").await, vec![3], "the title a rename gave");
    assert_eq!(
        found("homework").await,
        none,
        "not the title the rename replaced"
    );
    assert_eq!(
        found("BUS AT").await,
        vec![2],
        "plain ASCII still ignores case"
    );
    assert_eq!(
        found("ñ%").await,
        none,
        "wildcards stay literal after folding"
    );
    assert_eq!(
        found("convocatoria nono").await,
        vec![3],
        "an email's subject"
    );
}

async fn audit_lists_every_event_with_its_metadata_paged_by_position(w: World) {
    let last = school_day(&w).await;
    w.register(SOUTH, person(TEACHER), PersonKind::Staff, "Elsewhere")
        .await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);

    let all = read
        .audit(
            &north,
            &AuditFilter {
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        all.events.len() as u64,
        last.sequence,
        "every north event, none of south's"
    );
    assert_eq!(all.next, None);
    let stored = w.store_events().await;
    let first = &all.events[0];
    assert_eq!(first.position, stored[0].position);
    assert_eq!(first.hash, stored[0].hash);
    assert_eq!(first.prev_hash, stored[0].prev_hash);
    assert_eq!(first.data, stored[0].data);
    assert_eq!(first.event_type, "person_registered");
    assert_eq!(first.actor, "sis");
    assert_eq!(first.district, NORTH);
    let json = serde_json::to_value(first).unwrap();
    for field in [
        "position",
        "stream",
        "version",
        "type",
        "recorded_at",
        "actor",
        "district",
        "correlation_id",
        "causation_id",
        "hash",
        "prev_hash",
        "data",
    ] {
        assert!(json.get(field).is_some(), "{field}");
    }
    assert_eq!(
        json["position"],
        serde_json::json!(1),
        "a number on SQLite-ordered logs"
    );

    let page = read
        .audit(
            &north,
            &AuditFilter {
                limit: 5,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.events.len(), 5);
    let next = read
        .audit(
            &north,
            &AuditFilter {
                limit: 5,
                after: page.next,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        next.events[0].position.sequence,
        page.events[4].position.sequence + 1
    );

    let stream = conv_stream(NORTH, conversation(2));
    let by_stream = read
        .audit(
            &north,
            &AuditFilter {
                stream: Some(stream.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_stream.events.len(), 4);
    assert!(by_stream.events.iter().all(|e| e.stream == stream));
    let versions: Vec<_> = by_stream.events.iter().map(|e| e.version).collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    let by_actor = read
        .audit(
            &north,
            &AuditFilter {
                actor: Some(person(GUARDIAN).to_string()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_actor.events.len(), 2);

    let recorded = stored[3].recorded_at;
    let since = read
        .audit(
            &north,
            &AuditFilter {
                since: Some(recorded),
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(since.events.iter().all(|e| e.recorded_at >= recorded));
    let until = read
        .audit(
            &north,
            &AuditFilter {
                until: Some(recorded),
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(until.events.iter().all(|e| e.recorded_at < recorded));
    assert_eq!(since.events.len() + until.events.len(), all.events.len());
}

async fn a_nul_in_a_name_recorded_long_ago_stops_no_read_model(w: World) {
    school_day(&w).await;
    // Names are refused with a NUL now; a log may hold one from before.
    let odd = person(77);
    w.register(NORTH, odd, PersonKind::Staff, "nul\0name").await;
    w.start(
        NORTH,
        conversation(77),
        ConversationKind::Group,
        &[odd, person(GUARDIAN)],
        message(77),
        "Bus at \0 noon",
    )
    .await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let thread = read
        .conversation(&district(NORTH), conversation(77), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        thread.participants[0].name.as_deref(),
        Some("nul\u{FFFD}name")
    );
    assert_eq!(thread.messages[0].body, "Bus at \u{FFFD} noon");
}

async fn a_family_that_changed_phones_is_found_at_the_new_number_only(w: World) {
    use homeroom_domain::{Actor, ContactChannel, ContactPoint};
    let g = person(GUARDIAN);
    w.register(NORTH, g, PersonKind::Guardian, "Gail Guardian")
        .await;
    let north = district(NORTH);
    let change = |points: &[(ContactChannel, &str)]| -> Event {
        ContactPointsChanged {
            person_id: g,
            contact_points: points
                .iter()
                .map(|(channel, address)| ContactPoint {
                    channel: *channel,
                    address: (*address).to_owned(),
                })
                .collect(),
            at: w.now(),
            by: Actor::System("sis".into()),
        }
        .into()
    };
    let stream = format!("person-{NORTH}:{g}");
    let first = change(&[
        (ContactChannel::Sms, "+15550100001"),
        (ContactChannel::Email, "gail@example.org"),
    ]);
    w.append(NORTH, &stream, "sis", vec![first]).await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    assert_eq!(
        read.people_at_address(&north, "+15550100001")
            .await
            .unwrap(),
        vec![g]
    );
    let second = change(&[(ContactChannel::Sms, "+15550100077")]);
    w.append(NORTH, &stream, "sis", vec![second]).await;
    runtime.catch_up().await.unwrap();
    assert_eq!(
        read.people_at_address(&north, "+15550100077")
            .await
            .unwrap(),
        vec![g]
    );
    for address in ["+15550100001", "gail@example.org"] {
        assert!(
            read.people_at_address(&north, address)
                .await
                .unwrap()
                .is_empty(),
            "{address} is no longer theirs"
        );
    }
}

async fn an_older_generation_answers_this_versions_queries_until_its_rebuild(w: World) {
    use crate::db::query;
    use crate::projector::render_for;
    use crate::{Generation, RebuildTarget};
    school_day(&w).await;
    let t = person(TEACHER);
    let archived = ConversationArchived {
        conversation_id: conversation(2),
        person_id: t,
        at: w.now(),
    };
    w.conv_event(NORTH, conversation(2), t, archived.into())
        .await;
    let (runtime, _) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    drop(runtime);
    // Make the serving generations what the previous release built: without the
    // columns and table this one added, at their versions then.
    let db = w.db().await;
    let first = Generation::new(1);
    let mut tx = db.begin_write().await.unwrap();
    for (projector, statement) in [
        ("conversations", "ALTER TABLE conversation_people{conversations} DROP COLUMN archived_seq"),
        ("conversations", "ALTER TABLE messages{conversations} DROP COLUMN shared_phone_with"),
        ("conversations", "DROP TABLE refused_replies{conversations}"),
        ("conversations", "UPDATE projection_generations SET active_version = 4 WHERE projector = 'conversations'"),
        ("directory", "ALTER TABLE guardian_links{directory} DROP COLUMN unlinked_at"),
        ("directory", "UPDATE projection_generations SET active_version = 3 WHERE projector = 'directory'"),
    ] {
        let statement = render_for(db.engine(), statement, projector, first);
        query(&statement).execute(&mut tx).await.unwrap();
    }
    tx.commit().await.unwrap();

    // This version opens on them: until its rebuild switches, the old generations
    // answer its queries, as they meant.
    let (runtime, read) = w.runtime_on(db, crate::models::all(), fast()).await;
    let archive = |read: crate::ReadModels| async move {
        read.inbox_personal(&district(NORTH), t, true, &PageRequest::first())
            .await
            .unwrap()
    };
    assert_eq!(ids(&archive(read.clone()).await), vec![2]);
    let thread = read
        .conversation(&district(NORTH), conversation(2), Some(t))
        .await
        .unwrap()
        .unwrap();
    assert!(thread.refused_replies.is_empty());
    read.student_record(
        &district(NORTH),
        person(STUDENT),
        &at_first_school(true),
        &PageRequest::first(),
    )
    .await
    .unwrap();
    // Opening again bridges nothing twice.
    let (again, _) = w.runtime_with(crate::models::all(), fast()).await;
    drop(again);
    runtime.rebuild(RebuildTarget::All, |_| {}).await.unwrap();
    assert_eq!(ids(&archive(read).await), vec![2]);
}

async fn districts_never_see_each_others_rows(w: World) {
    school_day(&w).await;
    // The same ids in another district.
    let (t, g) = (person(TEACHER), person(GUARDIAN));
    w.register(SOUTH, t, PersonKind::Staff, "South Teacher")
        .await;
    w.register(SOUTH, g, PersonKind::Guardian, "South Guardian")
        .await;
    w.start(
        SOUTH,
        conversation(1),
        ConversationKind::Personal,
        &[t, g],
        message(50),
        "South hello",
    )
    .await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let (north, south) = (district(NORTH), district(SOUTH));

    let south_inbox = read
        .inbox_personal(&south, t, false, &PageRequest::first())
        .await
        .unwrap();
    assert_eq!(ids(&south_inbox), vec![1]);
    assert_eq!(
        south_inbox.conversations[0]
            .last_message
            .as_ref()
            .unwrap()
            .body,
        "South hello"
    );
    let north_thread = read
        .conversation(&north, conversation(1), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(north_thread.messages.len(), 1);
    assert_eq!(
        north_thread.messages[0].original_body,
        "Hello {student_name}"
    );
    assert_eq!(
        north_thread.participants[0].name.as_deref(),
        Some("Tess Teacher")
    );
    let south_thread = read
        .conversation(&south, conversation(1), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        south_thread.participants[0].name.as_deref(),
        Some("South Teacher")
    );
    assert!(read
        .conversation(&south, conversation(2), None)
        .await
        .unwrap()
        .is_none());
    let record = read
        .student_record(
            &south,
            person(STUDENT),
            &at_first_school(true),
            &PageRequest::first(),
        )
        .await
        .unwrap();
    assert!(record.messages.is_empty());
    let oversight = read
        .oversight(
            &south,
            &OversightScope::District,
            &OversightFilter::default(),
            &PageRequest::first(),
        )
        .await
        .unwrap();
    assert_eq!(oversight.conversations.len(), 1);
    assert_eq!(
        read.person(&south, t).await.unwrap().unwrap().name,
        "South Teacher"
    );
}

async fn a_conversation_exports_as_json_lines(w: World) {
    school_day(&w).await;
    w.outcome(
        NORTH,
        delivery_id_for(message(2), person(GUARDIAN)),
        "delivered",
    )
    .await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let export = read
        .export_conversation(&district(NORTH), conversation(2))
        .await
        .unwrap()
        .unwrap();
    let text = export.to_json_lines();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "a conversation line and three messages");
    assert_eq!(lines[0]["record"], "conversation");
    assert_eq!(lines[0]["participants"].as_array().unwrap().len(), 3);
    assert_eq!(lines[1]["record"], "message");
    assert_eq!(lines[1]["body"], "Field trip");
    assert_eq!(lines[1]["author_name"], "Tess Teacher");
    let deliveries = lines[1]["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    let to_gail = deliveries
        .iter()
        .find(|d| d["recipient_name"] == "Gail Guardian")
        .unwrap();
    assert_eq!(to_gail["status"], "delivered");
    assert_eq!(to_gail["channel"], "sms");
    assert!(to_gail["status_at"].is_string());
    assert!(text.ends_with('\n'));
    assert!(read
        .export_conversation(&district(SOUTH), conversation(2))
        .await
        .unwrap()
        .is_none());
}

async fn queries_before_the_runtime_ever_ran_say_so(w: World) {
    let read = crate::ReadModels::new(w.db().await);
    assert!(matches!(
        read.inbox_personal(&district(NORTH), person(1), false, &PageRequest::first())
            .await,
        Err(crate::QueryError::NotInitialised(_))
    ));
}

/// The log never holds a message twice (the domain refuses a reused message id), but a
/// fold must not trust that: a second `MessagePosted` with a stored id changes nothing,
/// whether it arrives in the same bulk run as the first or in a later batch.
async fn a_message_recorded_twice_is_folded_once(w: World) {
    let (teacher, guardian) = (person(TEACHER), person(GUARDIAN));
    let c = conversation(9);
    w.start(
        NORTH,
        c,
        ConversationKind::Personal,
        &[teacher, guardian],
        message(90),
        "first",
    )
    .await;
    w.post(NORTH, c, message(91), teacher, "second", &[guardian])
        .await;
    w.post(NORTH, c, message(91), teacher, "second, again", &[guardian])
        .await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    w.post(
        NORTH,
        c,
        message(91),
        teacher,
        "second, once more",
        &[guardian],
    )
    .await;
    let last = w
        .post(NORTH, c, message(92), guardian, "thanks", &[teacher])
        .await;
    runtime.catch_up().await.unwrap();
    assert!(runtime.checkpoint("conversations").unwrap() >= last);

    let north = district(NORTH);
    let thread = read
        .conversation(&north, c, None)
        .await
        .unwrap()
        .expect("the conversation is there");
    let bodies: Vec<_> = thread.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["first", "second", "thanks"]);
    let inbox = read
        .inbox_personal(&north, guardian, false, &PageRequest::first())
        .await
        .unwrap();
    let mine = inbox
        .conversations
        .iter()
        .find(|i| i.conversation_id == c)
        .expect("in the guardian's inbox");
    assert_eq!(mine.unread_count, 2, "the teacher's two messages");
    let theirs = read
        .inbox_personal(&north, teacher, false, &PageRequest::first())
        .await
        .unwrap();
    let theirs = theirs
        .conversations
        .iter()
        .find(|i| i.conversation_id == c)
        .unwrap();
    assert_eq!(theirs.unread_count, 1, "the guardian's reply");
}

/// A recipient's copy shows the machine translation they were sent (without the shared
/// phone's label), says so, and keeps the original; an untranslated copy says it is in
/// the language it was written in. The export keeps the text exactly as sent.
async fn a_translated_copy_is_the_viewers_body_beside_the_original(w: World) {
    school_day(&w).await;
    let (g, g2) = (person(GUARDIAN), person(OTHER_GUARDIAN));
    let to_gail = delivery_id_for(message(2), g);
    w.append(
        NORTH,
        &format!("delivery-{NORTH}:{to_gail}"),
        "delivery-worker",
        vec![DeliverySent {
            delivery_id: to_gail,
            provider_message_id: Some("SM7".to_owned()),
            sender: Some("+15550001000".to_owned()),
            sent_text: Some("For Gail: Excursión".to_owned()),
            translated_to: Some("es".to_owned()),
            at: w.now(),
        }
        .into()],
    )
    .await;
    w.outcome(NORTH, delivery_id_for(message(2), g2), "sent")
        .await;
    let us_too = delivery_id_for(message(4), g);
    w.append(
        NORTH,
        &format!("delivery-{NORTH}:{us_too}"),
        "delivery-worker",
        vec![DeliverySent {
            delivery_id: us_too,
            provider_message_id: None,
            sender: None,
            sent_text: Some("Nosotros también".to_owned()),
            translated_to: Some("es".to_owned()),
            at: w.now(),
        }
        .into()],
    )
    .await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);

    let inbox = read
        .inbox_personal(&north, g, false, &PageRequest::first())
        .await
        .unwrap();
    let group = inbox
        .conversations
        .iter()
        .find(|c| c.conversation_id == conversation(2))
        .unwrap();
    assert_eq!(
        group.last_message.as_ref().unwrap().body,
        "Nosotros también",
        "the inbox previews the viewer's own copy"
    );

    let for_gail = read
        .conversation(&north, conversation(2), Some(g))
        .await
        .unwrap()
        .unwrap();
    let trip = &for_gail.messages[0];
    assert_eq!(trip.body, "Excursión");
    assert_eq!(trip.language.as_deref(), Some("es"));
    assert!(trip.machine_translated);
    assert_eq!(
        trip.original_body, "Field trip (for 20)",
        "beside it, what she was sent before its translation"
    );

    let for_gus = read
        .conversation(&north, conversation(2), Some(g2))
        .await
        .unwrap()
        .unwrap();
    let trip = &for_gus.messages[0];
    assert_eq!(trip.body, "Field trip (for 21)", "rendered, not translated");
    assert_eq!(
        trip.language.as_deref(),
        Some("en"),
        "the language it was written in"
    );
    assert!(!trip.machine_translated);

    let export = read
        .export_conversation(&north, conversation(2))
        .await
        .unwrap()
        .unwrap();
    let sent: Vec<_> = export.messages[0]
        .deliveries
        .iter()
        .map(|d| (d.recipient_id, d.sent_text.clone(), d.translated_to.clone()))
        .collect();
    assert!(sent.contains(&(
        g,
        Some("For Gail: Excursión".to_owned()),
        Some("es".to_owned())
    )));
    assert!(sent.contains(&(g2, None, None)));
}

async fn each_recipient_sees_their_own_rendering_of_the_subject(w: World) {
    school_day(&w).await;
    let (t, g, g2) = (person(TEACHER), person(GUARDIAN), person(OTHER_GUARDIAN));
    let c = conversation(8);
    let m = message(80);
    let mut posted = w.message_posted(c, m, t, "Report cards", &[g, g2]);
    posted.subject = Some("About {student_name}".to_owned());
    for (delivery, name) in posted.deliveries.iter_mut().zip(["Sam", "Sid"]) {
        delivery.subject = Some(format!("About {name}"));
    }
    w.append(
        NORTH,
        &conv_stream(NORTH, c),
        &t.to_string(),
        vec![
            w.started(c, ConversationKind::Group, &[t, g, g2], None),
            posted.into(),
        ],
    )
    .await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);
    let subject_for = |viewer| {
        let read = &read;
        let north = &north;
        async move {
            read.conversation(north, c, viewer)
                .await
                .unwrap()
                .unwrap()
                .messages[0]
                .subject
                .clone()
        }
    };
    assert_eq!(subject_for(Some(g)).await.as_deref(), Some("About Sam"));
    assert_eq!(subject_for(Some(g2)).await.as_deref(), Some("About Sid"));
    assert_eq!(
        subject_for(Some(t)).await.as_deref(),
        Some("About {student_name}"),
        "the author sees what they wrote"
    );
}

async fn a_message_id_used_in_two_conversations_is_a_message_of_each(w: World) {
    school_day(&w).await;
    let (t, a, g) = (person(TEACHER), person(ADMIN), person(GUARDIAN));
    let reused = message(70);
    let (first, second) = (conversation(71), conversation(72));
    for (c, author, body) in [(first, t, "Bus is late"), (second, a, "Gym is closed")] {
        let mut posted = w.message_posted(c, reused, author, body, &[g]);
        // As the domain plans them: the conversation is part of a delivery's id.
        for d in &mut posted.deliveries {
            d.delivery_id = homeroom_domain::delivery_id_for(c, reused, d.recipient_id);
        }
        w.append(
            NORTH,
            &conv_stream(NORTH, c),
            &author.to_string(),
            vec![
                w.started(c, ConversationKind::Group, &[author, g], None),
                posted.into(),
            ],
        )
        .await;
    }
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let north = district(NORTH);
    for (c, author, body) in [(first, t, "Bus is late"), (second, a, "Gym is closed")] {
        let thread = read
            .conversation(&north, c, Some(g))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            thread.messages.len(),
            1,
            "each conversation keeps its message"
        );
        let m = &thread.messages[0];
        assert_eq!(m.author_id, author);
        assert!(
            m.original_body.starts_with(body),
            "its own text, as rendered for the viewer: {m:?}"
        );
        assert_eq!(
            m.deliveries
                .iter()
                .map(|d| d.delivery_id)
                .collect::<Vec<_>>(),
            vec![homeroom_domain::delivery_id_for(c, reused, g)],
            "and only its own deliveries"
        );
    }
    let inbox = read
        .inbox_personal(&north, g, false, &PageRequest::first())
        .await
        .unwrap();
    let preview = |c| {
        inbox
            .conversations
            .iter()
            .find(|x| x.conversation_id == c)
            .and_then(|x| x.last_message.as_ref())
            .map(|m| m.body.clone())
    };
    assert_eq!(preview(first).as_deref(), Some("Bus is late (for 20)"));
    assert_eq!(preview(second).as_deref(), Some("Gym is closed (for 20)"));
}

async fn the_audit_trail_reads_back_in_log_order_for_verification(w: World) {
    school_day(&w).await;
    w.register(SOUTH, person(TEACHER), PersonKind::Staff, "Elsewhere")
        .await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    type Entry = (
        homeroom_eventstore::Position,
        String,
        u64,
        String,
        serde_json::Value,
        String,
    );
    let stored: Vec<Entry> = w
        .store_events()
        .await
        .into_iter()
        .filter(|e| e.metadata.district == NORTH)
        .map(|e| {
            (
                e.position,
                e.stream.to_string(),
                e.version,
                e.hash,
                e.data,
                e.metadata.actor,
            )
        })
        .collect();
    let entries = |page: Vec<AuditEvent>| -> Vec<Entry> {
        page.into_iter()
            .map(|e| (e.position, e.stream, e.version, e.hash, e.data, e.actor))
            .collect()
    };
    let head = stored.last().unwrap().0;
    // Paged three at a time, the trail is the log, entry for entry.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = read.audit_trail_page(NORTH, after, head, 3).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.position);
        paged.extend(entries(page));
    }
    assert_eq!(paged, stored);
    // Nothing past `up_to`.
    let early = read
        .audit_trail_page(NORTH, None, stored[1].0, 100)
        .await
        .unwrap();
    assert_eq!(entries(early), stored[..2].to_vec());
}

on_both_engines! {
    #[tokio::test] the_audit_trail_reads_back_in_log_order_for_verification,
    #[tokio::test] a_message_id_used_in_two_conversations_is_a_message_of_each,
    #[tokio::test] each_recipient_sees_their_own_rendering_of_the_subject,
    #[tokio::test] a_translated_copy_is_the_viewers_body_beside_the_original,
    #[tokio::test] the_personal_inbox_holds_only_conversations_the_person_takes_part_in,
    #[tokio::test] unread_counts_follow_read_positions_and_skip_ones_own_messages,
    #[tokio::test] a_message_recorded_twice_is_folded_once,
    #[tokio::test] archive_mute_rename_and_stop_show_in_the_inbox,
    #[tokio::test] a_new_message_brings_an_archived_conversation_back,
    #[tokio::test] a_reply_from_a_shared_phone_names_who_else_has_it_in_thread_and_export,
    #[tokio::test] replies_kept_without_posting_show_beside_the_thread_and_in_the_export,
    #[tokio::test] the_school_inbox_is_shared_by_every_holder_with_their_own_state,
    #[tokio::test] what_the_school_sent_is_not_unread_for_any_holder_of_its_inbox,
    #[tokio::test] inboxes_page_with_an_opaque_cursor,
    #[tokio::test] the_thread_shows_participants_messages_deliveries_and_read_receipts,
    #[tokio::test] delivery_status_moves_forward_only,
    #[tokio::test] a_message_that_fell_back_to_another_channel_lists_its_conversation_once,
    #[tokio::test] a_students_record_holds_staff_messages_and_optionally_the_familys_replies,
    #[tokio::test] a_students_record_keeps_what_a_former_guardian_was_sent_until_the_link_ended,
    #[tokio::test] a_students_record_holds_a_guardian_only_while_each_of_their_links_held,
    #[tokio::test] what_another_school_wrote_to_a_guardian_is_not_on_this_schools_student_record,
    #[tokio::test] oversight_sees_every_conversation_and_searches_text_participant_and_dates,
    #[tokio::test] oversight_search_ignores_case_and_accents_in_any_alphabet,
    #[tokio::test] audit_lists_every_event_with_its_metadata_paged_by_position,
    #[tokio::test] districts_never_see_each_others_rows,
    #[tokio::test] an_older_generation_answers_this_versions_queries_until_its_rebuild,
    #[tokio::test] a_family_that_changed_phones_is_found_at_the_new_number_only,
    #[tokio::test] a_nul_in_a_name_recorded_long_ago_stops_no_read_model,
    #[tokio::test] a_conversation_exports_as_json_lines,
    #[tokio::test] queries_before_the_runtime_ever_ran_say_so,
}
