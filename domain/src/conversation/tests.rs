use uuid::Uuid;

use super::*;
use crate::commands::{
    ArchiveConversation, MuteConversation, SendPersonalMessage, StartConversation,
    StopConversation, UnarchiveConversation, UnmuteConversation,
};
use crate::events::{ConversationResumed, ConversationStarted, MessagePosted};
use crate::ids::{delivery_id_for, personal_conversation_id};
use crate::plan::PlannedDelivery;
use crate::testing::*;
use crate::text::BlockedPattern;
use crate::values::{Channel, ContactChannel, PersonKind};

const CONV: ConversationId = ConversationId::new(Uuid::from_u128(0xd001));
const M1: MessageId = MessageId::new(Uuid::from_u128(0xe001));
const M2: MessageId = MessageId::new(Uuid::from_u128(0xe002));
const M3: MessageId = MessageId::new(Uuid::from_u128(0xe003));
const NEWCOMER: PersonId = PersonId::new(Uuid::from_u128(0x9001));

// ---- events and commands ------------------------------------------------------------

fn started(kind: ConversationKind, participants: &[PersonId]) -> Event {
    ConversationStarted {
        conversation_id: CONV,
        kind,
        school_id: SCHOOL,
        title: None,
        started_by: participants[0],
        participant_ids: participants.to_vec(),
        at: now(),
    }
    .into()
}

fn group(participants: &[PersonId]) -> Event {
    started(ConversationKind::Group, participants)
}

fn school_conversation(participants: &[PersonId]) -> Event {
    started(ConversationKind::School, participants)
}

fn posted(message_id: MessageId, author_id: PersonId) -> Event {
    MessagePosted {
        conversation_id: CONV,
        message_id,
        author_id,
        sent_as: SendAs::Personal,
        body: "hi".to_owned(),
        subject: None,
        deliveries: vec![],
        shared_phone_with: vec![],
        at: now(),
    }
    .into()
}

fn stopped(by: PersonId) -> Event {
    ConversationStopped {
        conversation_id: CONV,
        by,
        at: now(),
    }
    .into()
}

fn personal(recipient_id: PersonId, body: &str) -> SendPersonalMessage {
    SendPersonalMessage {
        recipient_id,
        body: body.to_owned(),
        subject: None,
        channel: None,
        message_id: Some(M1),
    }
}

fn start(participants: &[PersonId]) -> StartConversation {
    StartConversation {
        conversation_id: CONV,
        school_id: SCHOOL,
        participant_ids: participants.to_vec(),
        body: "Hello {recipient_name}".to_owned(),
        title: None,
        from: None,
        channel: None,
    }
}

fn from_school(participants: &[PersonId]) -> StartConversation {
    StartConversation {
        from: Some(SendAs::School),
        ..start(participants)
    }
}

fn post(body: &str) -> PostMessage {
    PostMessage {
        conversation_id: CONV,
        message_id: M3,
        body: body.to_owned(),
        from: None,
    }
}

fn students_enabled() -> Event {
    settings_changed(|s| s.students_in_conversations = true)
}

fn blocking(pattern: &str) -> Event {
    let pattern = BlockedPattern::parse(pattern).unwrap();
    settings_changed(|s| s.blocked_patterns = vec![pattern])
}

/// The `MessagePosted` among decided events.
fn the_message(events: &[Event]) -> &MessagePosted {
    events
        .iter()
        .find_map(|e| match e {
            Event::MessagePosted(m) => Some(m),
            _ => None,
        })
        .expect("a MessagePosted")
}

fn recipients_of(events: &[Event]) -> Vec<PersonId> {
    the_message(events)
        .deliveries
        .iter()
        .map(|d| d.recipient_id)
        .collect()
}

fn a_student_born(day: chrono::NaiveDate) -> PersonState {
    person(NEWCOMER, PersonKind::Student, "Tia")
        .at(SCHOOL)
        .born(day)
        .build()
}

// ---- personal messages --------------------------------------------------------------

#[test]
fn first_personal_message_starts_the_personal_conversation_with_a_delivery_plan() {
    let conversation_id = personal_conversation_id(ADMIN, GUARDIAN);
    given([])
        .when(personal(
            GUARDIAN,
            "Hi {recipient_name}, about {student_name}",
        ))
        .then([
            ConversationStarted {
                conversation_id,
                kind: ConversationKind::Personal,
                school_id: SCHOOL,
                title: None,
                started_by: ADMIN,
                participant_ids: vec![ADMIN, GUARDIAN],
                at: now(),
            }
            .into(),
            MessagePosted {
                conversation_id,
                message_id: M1,
                author_id: ADMIN,
                sent_as: SendAs::Personal,
                body: "Hi {recipient_name}, about {student_name}".to_owned(),
                subject: None,
                deliveries: vec![PlannedDelivery {
                    delivery_id: delivery_id_for(conversation_id, M1, GUARDIAN),
                    recipient_id: GUARDIAN,
                    channel: Channel::Sms,
                    address: Some("+15550100001".to_owned()),
                    language: "es".to_owned(),
                    text: "Hi Pat Parent, about Dennis".to_owned(),
                    subject: None,
                }],
                shared_phone_with: vec![],
                at: now(),
            }
            .into(),
        ]);
}

#[test]
fn a_later_personal_message_continues_the_conversation() {
    let conversation_id = personal_conversation_id(ADMIN, GUARDIAN);
    let before = ConversationStarted {
        conversation_id,
        kind: ConversationKind::Personal,
        school_id: SCHOOL,
        title: None,
        started_by: ADMIN,
        participant_ids: vec![ADMIN, GUARDIAN],
        at: now(),
    };
    let events = given([before.into(), posted(M1, ADMIN)])
        .when(SendPersonalMessage {
            message_id: Some(M2),
            ..personal(GUARDIAN, "Again")
        })
        .events();
    assert_eq!(events.len(), 1);
    assert_eq!(the_message(&events).message_id, M2);
    assert_eq!(the_message(&events).conversation_id, conversation_id);
}

#[test]
fn personal_message_to_a_student_under_13_is_refused() {
    given([])
        .when(personal(STUDENT_12, "Hi"))
        .then_err(ConversationError::RecipientTooYoung {
            recipient_id: STUDENT_12,
            age: Some(12),
            min_age: 13,
        });
}

#[test]
fn personal_message_to_a_student_of_13_or_over_is_allowed() {
    let events = given([]).when(personal(STUDENT_14, "Hi")).events();
    assert_eq!(recipients_of(&events), vec![STUDENT_14]);
    assert_eq!(the_message(&events).deliveries[0].channel, Channel::Sms);
}

#[test]
fn personal_message_to_a_student_on_their_13th_birthday_is_allowed() {
    given([])
        .with_person(a_student_born(date(2012, 3, 10)))
        .when(personal(NEWCOMER, "Happy birthday"))
        .events();
    given([])
        .with_person(a_student_born(date(2012, 3, 11)))
        .when(personal(NEWCOMER, "Hi"))
        .then_code("recipient_too_young");
}

#[test]
fn personal_message_to_a_student_without_birth_date_is_refused_as_too_young() {
    given([])
        .with_person(
            person(NEWCOMER, PersonKind::Student, "Tia")
                .at(SCHOOL)
                .build(),
        )
        .when(personal(NEWCOMER, "Hi"))
        .then_err(ConversationError::RecipientTooYoung {
            recipient_id: NEWCOMER,
            age: None,
            min_age: 13,
        });
}

#[test]
fn manually_added_students_are_messageable_like_any_other() {
    let manual = person(NEWCOMER, PersonKind::Student, "Tia")
        .at(SCHOOL)
        .born(date(2009, 1, 1))
        .manually_added()
        .build();
    assert!(manual.manually_added());
    given([])
        .with_person(manual)
        .when(personal(NEWCOMER, "Hi"))
        .events();
}

#[test]
fn personal_message_needs_personal_messages_held_somewhere() {
    for staff in [TECH_ADMIN, VIEWER, TEACHER, NO_ROLE] {
        given([])
            .acting_as(staff)
            .when(personal(GUARDIAN, "Hi"))
            .then_err(ConversationError::NotPermitted);
    }
}

#[test]
fn personal_message_to_a_family_at_a_school_without_the_permission_is_not_reachable() {
    given([]).when(personal(OTHER_GUARDIAN, "Hi")).then_err(
        ConversationError::RecipientNotReachable {
            recipient_id: OTHER_GUARDIAN,
        },
    );
    given([])
        .acting_as(OTHER_ADMIN)
        .when(personal(GUARDIAN, "Hi"))
        .then_code("recipient_not_reachable");
}

#[test]
fn a_district_wide_role_reaches_families_at_every_school() {
    let events = given([])
        .acting_as(DISTRICT_ADMIN)
        .when(personal(OTHER_GUARDIAN, "Hi"))
        .events();
    assert!(matches!(
        &events[0],
        Event::ConversationStarted(e) if e.school_id == OTHER_SCHOOL
    ));
}

#[test]
fn a_custom_role_with_only_personal_messages_may_send_personal_messages() {
    let coach_role = crate::events::RoleDefined {
        role_id: role("coach"),
        name: "Coach".to_owned(),
        permissions: [Permission::PersonalMessages].into_iter().collect(),
        at: now(),
        by: sis(),
    };
    let coach = person(NEWCOMER, PersonKind::Staff, "Coach Carter")
        .role("coach", Some(SCHOOL))
        .build();
    given([])
        .district([coach_role.into()])
        .with_person(coach)
        .acting_as(NEWCOMER)
        .when(personal(GUARDIAN, "Practice at 5"))
        .events();
}

#[test]
fn staff_to_staff_personal_messages_are_refused() {
    given([])
        .when(personal(TEACHER, "Hi"))
        .then_err(ConversationError::RecipientNotReachable {
            recipient_id: TEACHER,
        });
}

#[test]
fn personal_message_to_an_unknown_person_is_refused() {
    given([])
        .when(personal(NEWCOMER, "Hi"))
        .then_err(ConversationError::UnknownPerson {
            person_id: NEWCOMER,
        });
}

#[test]
fn messaging_needs_a_person_not_a_service() {
    given([])
        .acting_as_system()
        .when(personal(GUARDIAN, "Hi"))
        .then_err(ConversationError::NotPermitted);
    given([group(&[ADMIN, GUARDIAN])])
        .acting_as_system()
        .when(post("Hi"))
        .then_err(ConversationError::NotPermitted);
}

#[test]
fn families_may_not_send_personal_messages() {
    given([])
        .acting_as(GUARDIAN)
        .when(personal(STUDENT_14, "Hi"))
        .then_err(ConversationError::NotPermitted);
}

#[test]
fn a_guardian_is_reachable_only_through_students_whose_facts_are_loaded() {
    given([])
        .without_person(STUDENT_14)
        .when(personal(GUARDIAN, "Hi"))
        .then_code("recipient_not_reachable");
}

#[test]
fn the_message_id_is_derived_from_the_command_id_when_not_given() {
    let events = given([])
        .when(SendPersonalMessage {
            message_id: None,
            ..personal(GUARDIAN, "Hi")
        })
        .events();
    assert_eq!(
        the_message(&events).message_id,
        crate::ids::message_id_for_command(command_id())
    );
}

#[test]
fn the_senders_channel_pick_is_used_when_the_recipient_has_it() {
    let events = given([])
        .when(SendPersonalMessage {
            channel: Some(Channel::Email),
            subject: Some("About {student_name}".to_owned()),
            ..personal(GUARDIAN, "Hi")
        })
        .events();
    let delivery = &the_message(&events).deliveries[0];
    assert_eq!(delivery.channel, Channel::Email);
    assert_eq!(delivery.address.as_deref(), Some("pat@example.org"));
    assert_eq!(delivery.subject.as_deref(), Some("About Dennis"));
    assert_eq!(
        the_message(&events).subject.as_deref(),
        Some("About {student_name}")
    );
}

#[test]
fn a_personal_message_takes_a_stopped_personal_conversation_up_again() {
    let conversation_id = personal_conversation_id(ADMIN, GUARDIAN);
    let before = ConversationStarted {
        conversation_id,
        kind: ConversationKind::Personal,
        school_id: SCHOOL,
        title: None,
        started_by: ADMIN,
        participant_ids: vec![ADMIN, GUARDIAN],
        at: now(),
    };
    let history = vec![before.into(), posted(M1, ADMIN), stopped(ADMIN)];
    let events = given(history.clone())
        .when(SendPersonalMessage {
            message_id: Some(M2),
            ..personal(GUARDIAN, "Hi again")
        })
        .events();
    assert_eq!(
        events[0],
        ConversationResumed {
            conversation_id,
            by: ADMIN,
            at: now(),
        }
        .into()
    );
    assert_eq!(the_message(&events).message_id, M2);
    assert_eq!(events.len(), 2);
    // Taken up again, it takes the family's replies again.
    let resumed = history.into_iter().chain(events).collect::<Vec<_>>();
    let reply = given(resumed)
        .acting_as_system()
        .when(ReceiveReply {
            conversation_id,
            author_id: GUARDIAN,
            message_sid: sms_sid(),
            body: "Thanks".to_owned(),
            from_number: None,
        })
        .events();
    assert!(matches!(&reply[0], Event::MessagePosted(m) if m.body == "Thanks"));
}

// ---- message text -------------------------------------------------------------------

#[test]
fn an_empty_or_overlong_body_is_refused() {
    given([])
        .when(personal(GUARDIAN, "  "))
        .then_err(ValidationError::Empty { field: "body" });
    given([])
        .when(personal(GUARDIAN, &"x".repeat(5001)))
        .then_err(ValidationError::TooLong {
            field: "body",
            max: 5000,
            got: 5001,
        });
    given([])
        .when(SendPersonalMessage {
            subject: Some("s".repeat(201)),
            ..personal(GUARDIAN, "Hi")
        })
        .then_code("validation");
}

#[test]
fn a_body_with_blocked_content_is_refused_before_anything_is_recorded() {
    given([])
        .district([blocking("###-##-####")])
        .when(personal(GUARDIAN, "His SSN is 123-45-6789"))
        .then_err(ConversationError::BlockedContent {
            pattern: "###-##-####".to_owned(),
        });
    given([group(&[ADMIN, GUARDIAN])])
        .district([blocking("###-##-####")])
        .acting_as(GUARDIAN)
        .when(post("mine is 987-65-4321"))
        .then_code("blocked_content");
}

#[test]
fn a_subject_with_blocked_content_is_refused() {
    given([])
        .district([blocking("password")])
        .when(SendPersonalMessage {
            subject: Some("Your PASSWORD".to_owned()),
            ..personal(GUARDIAN, "Hi")
        })
        .then_code("blocked_content");
}

#[test]
fn a_title_with_blocked_content_is_refused_when_started_or_renamed() {
    given([])
        .district([blocking("###-##-####")])
        .acting_as(TEACHER)
        .when(StartConversation {
            title: Some("SSN 123-45-6789".to_owned()),
            ..start(&[GUARDIAN])
        })
        .then_code("blocked_content");
    given([group(&[TEACHER, GUARDIAN])])
        .district([blocking("###-##-####")])
        .acting_as(TEACHER)
        .when(RenameConversation {
            conversation_id: CONV,
            title: "About 123-45-6789".to_owned(),
        })
        .then_code("blocked_content");
}

#[test]
fn an_unknown_merge_field_is_refused_so_typos_never_reach_families() {
    given([])
        .when(personal(GUARDIAN, "Dear {studnet_name}"))
        .then_err(ValidationError::UnknownMergeField {
            field: "studnet_name".to_owned(),
        });
}

#[test]
fn what_a_family_member_writes_goes_out_as_typed_braces_and_all() {
    let events = given([group(&[TEACHER, GUARDIAN])])
        .acting_as(GUARDIAN)
        .when(post("Thanks {lol} and {recipient_name}"))
        .events();
    let message = the_message(&events);
    assert_eq!(message.body, "Thanks {lol} and {recipient_name}");
    assert!(message
        .deliveries
        .iter()
        .all(|d| d.text == "Thanks {lol} and {recipient_name}"));
    // Staff write templates: the same text from the teacher names a field that does
    // not exist.
    given([group(&[TEACHER, GUARDIAN])])
        .acting_as(TEACHER)
        .when(post("Thanks {lol}"))
        .then_err(ValidationError::UnknownMergeField {
            field: "lol".to_owned(),
        });
}

#[test]
fn merge_fields_are_rendered_per_recipient() {
    let events = given([])
        .acting_as(TEACHER)
        .when(StartConversation {
            body: "{recipient_name}: {student_name} at {school_name}, from {sender_name}"
                .to_owned(),
            ..start(&[GUARDIAN, GUARDIAN_12])
        })
        .events();
    let texts: Vec<&str> = the_message(&events)
        .deliveries
        .iter()
        .map(|d| d.text.as_str())
        .collect();
    assert_eq!(
        texts,
        vec![
            "Pat Parent: Dennis at Hillside, from Tom Teacher",
            "Sam Parent: Mia at Hillside, from Tom Teacher",
        ]
    );
}

/// Pat Parent, guardian of both Dennis and Mia.
fn parent_of_two() -> PersonState {
    person(GUARDIAN, PersonKind::Guardian, "Pat Parent")
        .contact(ContactChannel::Sms, "+15550100001")
        .guardian_of(STUDENT_14)
        .guardian_of(STUDENT_12)
        .build()
}

#[test]
fn a_parent_of_two_is_written_to_about_both_children() {
    let events = given([])
        .with_person(parent_of_two())
        .when(personal(GUARDIAN, "About {student_name}"))
        .events();
    assert_eq!(
        the_message(&events).deliveries[0].text,
        "About Dennis and Mia"
    );
}

#[test]
fn a_parent_is_written_to_about_their_child_at_this_school_not_one_elsewhere() {
    let parent = person(GUARDIAN, PersonKind::Guardian, "Pat Parent")
        .contact(ContactChannel::Sms, "+15550100001")
        .guardian_of(STUDENT_14)
        .guardian_of(OTHER_STUDENT)
        .build();
    let events = given([])
        .with_person(parent)
        .when(personal(GUARDIAN, "About {student_name}"))
        .events();
    assert_eq!(the_message(&events).deliveries[0].text, "About Dennis");
}

#[test]
fn a_parent_of_two_is_written_to_about_the_child_in_the_conversation() {
    let events = given([])
        .with_person(parent_of_two())
        .district([students_enabled()])
        .when(StartConversation {
            body: "About {student_name}".to_owned(),
            ..start(&[GUARDIAN, STUDENT_12])
        })
        .events();
    assert_eq!(the_message(&events).deliveries[0].text, "About Mia");
}

#[test]
fn a_message_from_the_school_is_signed_by_the_school() {
    let events = given([])
        .when(StartConversation {
            body: "From {sender_name}".to_owned(),
            ..from_school(&[GUARDIAN])
        })
        .events();
    assert_eq!(the_message(&events).deliveries[0].text, "From Hillside");
}

// ---- starting conversations ---------------------------------------------------------

fn crowd(n: u128) -> Vec<PersonState> {
    (0..n)
        .map(|i| {
            let id = PersonId::new(Uuid::from_u128(0xf100 + i));
            person(id, PersonKind::Staff, "Staff")
                .at(SCHOOL)
                .role("teacher", Some(SCHOOL))
                .build()
        })
        .collect()
}

fn ids(people: &[PersonState]) -> Vec<PersonId> {
    people.iter().filter_map(PersonState::id).collect()
}

#[test]
fn a_group_conversation_is_limited_to_15_participants_starter_included() {
    let fourteen = crowd(14);
    let events = given([])
        .with_people(fourteen.clone())
        .when(start(&ids(&fourteen)))
        .events();
    assert_eq!(recipients_of(&events).len(), 14);
    let fifteen = crowd(15);
    given([])
        .with_people(fifteen.clone())
        .when(start(&ids(&fifteen)))
        .then_err(ConversationError::TooManyParticipants { max: 15, got: 16 });
}

#[test]
fn a_district_setting_may_raise_the_participant_limit() {
    let many = crowd(29);
    given([])
        .district([settings_changed(|s| s.max_participants = 30)])
        .with_people(many.clone())
        .when(start(&ids(&many)))
        .events();
}

#[test]
fn the_starter_listed_among_participants_counts_once() {
    let events = given([]).when(start(&[ADMIN, TEACHER, TEACHER])).events();
    assert!(matches!(
        &events[0],
        Event::ConversationStarted(e) if e.participant_ids == vec![ADMIN, TEACHER]
    ));
    given([])
        .when(start(&[ADMIN]))
        .then_err(ValidationError::NoParticipants);
    given([])
        .when(start(&[]))
        .then_err(ValidationError::NoParticipants);
}

#[test]
fn every_participant_must_exist_in_the_district() {
    given([])
        .when(start(&[TEACHER, NEWCOMER]))
        .then_err(ConversationError::UnknownPerson {
            person_id: NEWCOMER,
        });
}

#[test]
fn a_conversation_belongs_to_a_registered_school() {
    let unknown = SchoolId::new(Uuid::from_u128(0x5c99));
    given([])
        .when(StartConversation {
            school_id: unknown,
            ..start(&[TEACHER])
        })
        .then_err(ConversationError::UnknownSchool { school_id: unknown });
}

#[test]
fn a_conversation_id_is_used_once() {
    given([group(&[ADMIN, TEACHER])])
        .when(start(&[TEACHER]))
        .then_err(ConversationError::AlreadyStarted {
            conversation_id: CONV,
        });
}

#[test]
fn starting_the_same_conversation_again_is_a_retry_and_records_nothing() {
    let first = given([]).when(start(&[TEACHER, GUARDIAN])).events();
    given(first.clone())
        .when(start(&[GUARDIAN, TEACHER, ADMIN]))
        .then_nothing();
    let clash = ConversationError::AlreadyStarted {
        conversation_id: CONV,
    };
    given(first.clone())
        .when(StartConversation {
            body: "Something else".to_owned(),
            ..start(&[TEACHER, GUARDIAN])
        })
        .then_err(clash.clone());
    given(first.clone())
        .when(start(&[TEACHER]))
        .then_err(clash.clone());
    given(first)
        .acting_as(TEACHER)
        .when(start(&[ADMIN, GUARDIAN]))
        .then_err(clash);
}

#[test]
fn a_title_is_at_most_200_characters() {
    given([])
        .when(StartConversation {
            title: Some("t".repeat(201)),
            ..start(&[TEACHER])
        })
        .then_code("validation");
    let events = given([])
        .when(StartConversation {
            title: Some(" Field trip ".to_owned()),
            ..start(&[TEACHER])
        })
        .events();
    assert!(matches!(
        &events[0],
        Event::ConversationStarted(e) if e.title.as_deref() == Some("Field trip")
    ));
}

#[test]
fn students_need_students_in_conversations_enabled() {
    given([]).when(start(&[GUARDIAN, STUDENT_14])).then_err(
        ConversationError::StudentsNotEnabled {
            student_id: STUDENT_14,
        },
    );
    given([])
        .district([students_enabled()])
        .when(start(&[GUARDIAN, STUDENT_14]))
        .events();
}

#[test]
fn staff_to_staff_messages_happen_in_group_conversations() {
    let events = given([]).when(start(&[TEACHER, COLLEAGUE])).events();
    assert!(matches!(
        &events[0],
        Event::ConversationStarted(e) if e.kind == ConversationKind::Group
    ));
    assert_eq!(recipients_of(&events), vec![TEACHER, COLLEAGUE]);
}

#[test]
fn from_school_needs_the_school_inbox_and_makes_a_school_conversation() {
    let events = given([]).when(from_school(&[GUARDIAN])).events();
    assert!(matches!(
        &events[0],
        Event::ConversationStarted(e) if e.kind == ConversationKind::School
    ));
    assert_eq!(the_message(&events).sent_as, SendAs::School);
    given([])
        .acting_as(TEACHER)
        .when(from_school(&[GUARDIAN]))
        .then_err(ConversationError::NotPermitted);
}

#[test]
fn a_school_conversation_delivers_only_to_non_staff_participants() {
    let events = given([]).when(from_school(&[GUARDIAN, TEACHER])).events();
    assert_eq!(recipients_of(&events), vec![GUARDIAN]);
}

#[test]
fn a_teacher_may_start_a_class_conversation_with_their_students_families() {
    let events = given([])
        .acting_as(TEACHER)
        .when(start(&[GUARDIAN, GUARDIAN_12, COLLEAGUE]))
        .events();
    assert_eq!(
        recipients_of(&events),
        vec![GUARDIAN, GUARDIAN_12, COLLEAGUE]
    );
    given([])
        .district([students_enabled()])
        .acting_as(TEACHER)
        .when(start(&[STUDENT_12, GUARDIAN_12]))
        .events();
}

#[test]
fn a_conversation_of_two_reaches_a_student_only_where_a_personal_message_would() {
    let too_young = ConversationError::RecipientTooYoung {
        recipient_id: STUDENT_12,
        age: Some(12),
        min_age: MIN_PERSONAL_MESSAGE_AGE,
    };
    for starter in [ADMIN, TEACHER] {
        given([])
            .district([students_enabled()])
            .acting_as(starter)
            .when(start(&[STUDENT_12]))
            .then_err(too_young.clone());
    }
    given([])
        .district([students_enabled()])
        .when(start(&[STUDENT_14]))
        .events();
    // From the school, the shared inbox reads it; with a guardian in it, it is not private.
    given([])
        .district([students_enabled()])
        .when(from_school(&[STUDENT_12]))
        .events();
    given([])
        .district([students_enabled()])
        .when(start(&[STUDENT_12, GUARDIAN_12]))
        .events();
}

#[test]
fn staff_start_no_conversation_at_a_school_where_they_hold_no_role() {
    given([])
        .acting_as(OTHER_ADMIN)
        .when(start(&[GUARDIAN]))
        .then_err(ConversationError::NotPermitted);
}

#[test]
fn a_teacher_may_not_include_families_of_students_they_do_not_teach() {
    given([])
        .acting_as(TEACHER)
        .when(start(&[GUARDIAN, OTHER_GUARDIAN]))
        .then_err(ConversationError::NotACurrentTeacher {
            teacher_id: TEACHER,
            of: OTHER_GUARDIAN,
        });
    // The same rule, the same answer, when they teach none of the families.
    given([])
        .acting_as(COLLEAGUE)
        .when(start(&[GUARDIAN]))
        .then_err(ConversationError::NotACurrentTeacher {
            teacher_id: COLLEAGUE,
            of: GUARDIAN,
        });
}

#[test]
fn staff_without_personal_messages_or_students_may_not_start_conversations() {
    given([])
        .acting_as(VIEWER)
        .when(start(&[TEACHER]))
        .then_err(ConversationError::NotPermitted);
    given([])
        .acting_as(TEACHER)
        .when(start(&[COLLEAGUE]))
        .then_err(ConversationError::NotPermitted);
}

#[test]
fn family_participants_must_be_tied_to_the_conversations_school() {
    given([])
        .when(start(&[OTHER_GUARDIAN]))
        .then_err(ConversationError::RecipientNotReachable {
            recipient_id: OTHER_GUARDIAN,
        });
}

#[test]
fn a_guardian_may_start_a_conversation_with_their_students_current_teacher() {
    let events = given([])
        .acting_as(GUARDIAN)
        .when(start(&[TEACHER]))
        .events();
    assert_eq!(recipients_of(&events), vec![TEACHER]);
    assert_eq!(the_message(&events).deliveries[0].channel, Channel::App);
}

#[test]
fn families_may_only_start_conversations_with_the_students_current_teachers() {
    given([])
        .acting_as(GUARDIAN)
        .when(start(&[COLLEAGUE]))
        .then_err(ConversationError::NotACurrentTeacher {
            teacher_id: COLLEAGUE,
            of: GUARDIAN,
        });
    given([])
        .acting_as(GUARDIAN)
        .when(start(&[TEACHER, GUARDIAN_12]))
        .then_err(ConversationError::NotACurrentTeacher {
            teacher_id: GUARDIAN_12,
            of: GUARDIAN,
        });
}

#[test]
fn families_may_not_start_from_the_school_or_at_another_school() {
    given([])
        .acting_as(GUARDIAN)
        .when(from_school(&[TEACHER]))
        .then_err(ConversationError::NotPermitted);
    given([])
        .acting_as(GUARDIAN)
        .when(StartConversation {
            school_id: OTHER_SCHOOL,
            ..start(&[TEACHER])
        })
        .then_err(ConversationError::NotPermitted);
}

#[test]
fn a_student_may_start_with_their_teacher_when_students_are_enabled() {
    given([])
        .acting_as(STUDENT_14)
        .when(start(&[TEACHER]))
        .then_err(ConversationError::StudentsNotEnabled {
            student_id: STUDENT_14,
        });
    given([])
        .district([students_enabled()])
        .acting_as(STUDENT_14)
        .when(start(&[TEACHER]))
        .events();
}

#[test]
fn a_student_under_13_may_not_start_a_conversation_of_two_with_a_staff_member() {
    // The teacher's answers would reach the child 1:1 from the teacher's own identity.
    given([])
        .district([students_enabled()])
        .acting_as(STUDENT_12)
        .when(start(&[TEACHER]))
        .then_err(ConversationError::RecipientTooYoung {
            recipient_id: STUDENT_12,
            age: Some(12),
            min_age: MIN_PERSONAL_MESSAGE_AGE,
        });
    // At 14 they may (a_student_may_start_with_their_teacher_when_students_are_enabled).
}

// ---- posting ------------------------------------------------------------------------

#[test]
fn posting_to_an_unknown_conversation_is_refused() {
    given([])
        .when(post("Hi"))
        .then_err(ConversationError::UnknownConversation {
            conversation_id: CONV,
        });
}

#[test]
fn a_stopped_conversation_accepts_no_new_message_or_reply() {
    for author in [ADMIN, GUARDIAN] {
        given([group(&[ADMIN, GUARDIAN]), posted(M1, ADMIN), stopped(ADMIN)])
            .acting_as(author)
            .when(post("Hi"))
            .then_err(ConversationError::ConversationStopped {
                conversation_id: CONV,
            });
    }
}

#[test]
fn only_participants_may_post() {
    given([group(&[ADMIN, GUARDIAN])])
        .acting_as(TEACHER)
        .when(post("Hi"))
        .then_err(ConversationError::NotAParticipant { person_id: TEACHER });
}

#[test]
fn families_reply_in_any_conversation_they_are_in_and_everyone_else_gets_it() {
    let events = given([
        group(&[TEACHER, GUARDIAN, GUARDIAN_12]),
        posted(M1, TEACHER),
    ])
    .acting_as(GUARDIAN)
    .when(post("Thanks!"))
    .events();
    assert_eq!(
        the_message(&events),
        &MessagePosted {
            conversation_id: CONV,
            message_id: M3,
            author_id: GUARDIAN,
            sent_as: SendAs::Personal,
            body: "Thanks!".to_owned(),
            subject: None,
            deliveries: vec![
                PlannedDelivery {
                    delivery_id: delivery_id_for(CONV, M3, TEACHER),
                    recipient_id: TEACHER,
                    channel: Channel::App,
                    address: None,
                    language: "en".to_owned(),
                    text: "Thanks!".to_owned(),
                    subject: None,
                },
                PlannedDelivery {
                    delivery_id: delivery_id_for(CONV, M3, GUARDIAN_12),
                    recipient_id: GUARDIAN_12,
                    channel: Channel::Sms,
                    address: Some("+15550100002".to_owned()),
                    language: "en".to_owned(),
                    text: "Thanks!".to_owned(),
                    subject: None,
                },
            ],
            shared_phone_with: vec![],
            at: now(),
        }
    );
}

#[test]
fn any_school_inbox_holder_may_post_from_the_school_in_a_school_conversation() {
    let events = given([school_conversation(&[ADMIN, GUARDIAN])])
        .acting_as(TECH_ADMIN)
        .when(post("We are closed tomorrow"))
        .events();
    assert_eq!(the_message(&events).sent_as, SendAs::School);
    assert_eq!(recipients_of(&events), vec![GUARDIAN]);
}

#[test]
fn a_family_reply_in_a_school_conversation_goes_to_the_school_inbox_not_to_staff() {
    let events = given([school_conversation(&[ADMIN, GUARDIAN, GUARDIAN_12])])
        .acting_as(GUARDIAN)
        .when(post("OK"))
        .events();
    assert_eq!(recipients_of(&events), vec![GUARDIAN_12]);
}

#[test]
fn from_school_is_only_for_school_conversations_and_school_inbox_holders() {
    given([group(&[ADMIN, GUARDIAN])])
        .when(PostMessage {
            from: Some(SendAs::School),
            ..post("Hi")
        })
        .then_code("validation");
    given([school_conversation(&[ADMIN, GUARDIAN])])
        .acting_as(GUARDIAN)
        .when(PostMessage {
            from: Some(SendAs::School),
            ..post("Hi")
        })
        .then_err(ConversationError::NotPermitted);
}

#[test]
fn a_message_id_is_used_once_per_conversation() {
    given([group(&[ADMIN, GUARDIAN]), posted(M3, ADMIN)])
        .when(post("Hi"))
        .then_err(ValidationError::DuplicateMessageId { message_id: M3 });
    given([group(&[ADMIN, GUARDIAN]), posted(M3, ADMIN)])
        .when(post("Hi"))
        .then_code("already_exists");
}

#[test]
fn posting_the_same_message_again_is_a_retry_and_records_nothing() {
    let first = given([group(&[ADMIN, GUARDIAN])])
        .when(post("See you at  the fair "))
        .events();
    let history = || [group(&[ADMIN, GUARDIAN])].into_iter().chain(first.clone());
    given(history())
        .when(post("See you at  the fair"))
        .then_nothing();
    // Even once the conversation is stopped: the retried message was accepted before.
    given(history().chain([stopped(ADMIN)]))
        .when(post("See you at  the fair"))
        .then_nothing();
    given(history())
        .when(post("See you at the fair"))
        .then_code("already_exists");
    given(history())
        .acting_as(GUARDIAN)
        .when(post("See you at  the fair"))
        .then_code("already_exists");
}

#[test]
fn a_personal_message_sent_again_under_its_id_is_a_retry() {
    let first = given([]).when(personal(GUARDIAN, "Hi")).events();
    given(first.clone())
        .when(personal(GUARDIAN, "Hi"))
        .then_nothing();
    given(first)
        .when(SendPersonalMessage {
            subject: Some("Re".to_owned()),
            ..personal(GUARDIAN, "Hi")
        })
        .then_code("already_exists");
}

#[test]
fn staff_who_lost_personal_messages_may_not_continue_a_personal_conversation() {
    let before = started(ConversationKind::Personal, &[NO_ROLE, GUARDIAN]);
    given([before.clone()])
        .acting_as(NO_ROLE)
        .when(post("Hi"))
        .then_err(ConversationError::NotPermitted);
    given([before])
        .acting_as(GUARDIAN)
        .when(post("Hello?"))
        .events();
}

// ---- stop and rename ----------------------------------------------------------------

fn stop() -> StopConversation {
    StopConversation {
        conversation_id: CONV,
    }
}

#[test]
fn a_staff_participant_may_stop_a_conversation() {
    given([group(&[TEACHER, GUARDIAN])])
        .acting_as(TEACHER)
        .when(stop())
        .then([stopped(TEACHER)]);
}

#[test]
fn stopping_twice_is_a_no_op() {
    given([group(&[TEACHER, GUARDIAN]), stopped(TEACHER)])
        .acting_as(TEACHER)
        .when(stop())
        .then_nothing();
}

#[test]
fn families_may_not_stop_or_rename_a_conversation() {
    given([group(&[TEACHER, GUARDIAN])])
        .acting_as(GUARDIAN)
        .when(stop())
        .then_err(ConversationError::NotPermitted);
    given([group(&[TEACHER, GUARDIAN])])
        .acting_as(GUARDIAN)
        .when(RenameConversation {
            conversation_id: CONV,
            title: "Mine".to_owned(),
        })
        .then_err(ConversationError::NotPermitted);
}

#[test]
fn staff_outside_a_conversation_may_not_stop_it_unless_they_hold_its_school_inbox() {
    given([group(&[TEACHER, GUARDIAN])])
        .acting_as(ADMIN)
        .when(stop())
        .then_err(ConversationError::NotAParticipant { person_id: ADMIN });
    given([school_conversation(&[ADMIN, GUARDIAN])])
        .acting_as(TECH_ADMIN)
        .when(stop())
        .then([stopped(TECH_ADMIN)]);
}

#[test]
fn a_stopped_conversation_stays_readable() {
    given([
        group(&[TEACHER, GUARDIAN]),
        posted(M1, TEACHER),
        stopped(TEACHER),
    ])
    .acting_as(GUARDIAN)
    .when(MarkRead {
        conversation_id: CONV,
        up_to_message_id: M1,
    })
    .events();
}

#[test]
fn rename_changes_the_title_for_everyone() {
    let rename = |title: &str| RenameConversation {
        conversation_id: CONV,
        title: title.to_owned(),
    };
    let renamed: Event = ConversationRenamed {
        conversation_id: CONV,
        title: "Field trip".to_owned(),
        by: TEACHER,
        at: now(),
    }
    .into();
    given([group(&[TEACHER, GUARDIAN])])
        .acting_as(TEACHER)
        .when(rename(" Field trip "))
        .then([renamed.clone()]);
    given([group(&[TEACHER, GUARDIAN]), renamed])
        .acting_as(TEACHER)
        .when(rename("Field trip"))
        .then_nothing();
    given([group(&[TEACHER, GUARDIAN])])
        .acting_as(TEACHER)
        .when(rename(""))
        .then_err(ValidationError::Empty { field: "title" });
}

// ---- per participant ----------------------------------------------------------------

#[test]
fn mute_and_unmute_are_per_participant_and_repeating_is_a_no_op() {
    let muted: Event = ConversationMuted {
        conversation_id: CONV,
        person_id: GUARDIAN,
        at: now(),
    }
    .into();
    let mute = MuteConversation {
        conversation_id: CONV,
    };
    let unmute = UnmuteConversation {
        conversation_id: CONV,
    };
    given([group(&[TEACHER, GUARDIAN])])
        .acting_as(GUARDIAN)
        .when(mute.clone())
        .then([muted.clone()]);
    given([group(&[TEACHER, GUARDIAN]), muted.clone()])
        .acting_as(GUARDIAN)
        .when(mute)
        .then_nothing();
    given([group(&[TEACHER, GUARDIAN]), muted.clone()])
        .acting_as(TEACHER)
        .when(unmute.clone())
        .then_nothing();
    given([group(&[TEACHER, GUARDIAN]), muted])
        .acting_as(GUARDIAN)
        .when(unmute)
        .then([ConversationUnmuted {
            conversation_id: CONV,
            person_id: GUARDIAN,
            at: now(),
        }
        .into()]);
}

#[test]
fn a_participant_who_muted_gets_new_messages_in_the_app_only() {
    let muted: Event = ConversationMuted {
        conversation_id: CONV,
        person_id: GUARDIAN,
        at: now(),
    }
    .into();
    let events = given([group(&[TEACHER, GUARDIAN, GUARDIAN_12]), muted.clone()])
        .acting_as(TEACHER)
        .when(post("Picture day is Friday"))
        .events();
    let channels: Vec<(PersonId, Channel, Option<String>)> = the_message(&events)
        .deliveries
        .iter()
        .map(|d| (d.recipient_id, d.channel, d.address.clone()))
        .collect();
    assert_eq!(channels[0], (GUARDIAN, Channel::App, None), "muted: no SMS");
    assert_ne!(channels[1].1, Channel::App, "not muted: as before");
    // Unmuted, they are texted again.
    let unmuted: Event = ConversationUnmuted {
        conversation_id: CONV,
        person_id: GUARDIAN,
        at: now(),
    }
    .into();
    let events = given([group(&[TEACHER, GUARDIAN]), muted, unmuted])
        .acting_as(TEACHER)
        .when(post("And bring a smile"))
        .events();
    assert_ne!(the_message(&events).deliveries[0].channel, Channel::App);
}

#[test]
fn archive_and_unarchive_are_per_participant() {
    let archived: Event = ConversationArchived {
        conversation_id: CONV,
        person_id: TEACHER,
        at: now(),
    }
    .into();
    given([group(&[TEACHER, GUARDIAN])])
        .acting_as(TEACHER)
        .when(ArchiveConversation {
            conversation_id: CONV,
        })
        .then([archived.clone()]);
    given([group(&[TEACHER, GUARDIAN])])
        .acting_as(TEACHER)
        .when(UnarchiveConversation {
            conversation_id: CONV,
        })
        .then_nothing();
    given([group(&[TEACHER, GUARDIAN]), archived])
        .acting_as(TEACHER)
        .when(UnarchiveConversation {
            conversation_id: CONV,
        })
        .then([ConversationUnarchived {
            conversation_id: CONV,
            person_id: TEACHER,
            at: now(),
        }
        .into()]);
}

#[test]
fn a_new_message_brings_an_archived_conversation_back() {
    let archived: Event = ConversationArchived {
        conversation_id: CONV,
        person_id: TEACHER,
        at: now(),
    }
    .into();
    let events = [group(&[TEACHER, GUARDIAN]), archived.clone()];
    let state = events.iter().fold(ConversationState::default(), evolve);
    assert!(state.is_archived(TEACHER));
    let state = evolve(state, &posted(M1, GUARDIAN));
    assert!(
        !state.is_archived(TEACHER),
        "the family's answer is not left unseen"
    );
    // So unarchiving is nothing more, and archiving again is recorded again.
    given([
        group(&[TEACHER, GUARDIAN]),
        archived.clone(),
        posted(M1, GUARDIAN),
    ])
    .acting_as(TEACHER)
    .when(UnarchiveConversation {
        conversation_id: CONV,
    })
    .then_nothing();
    given([
        group(&[TEACHER, GUARDIAN]),
        archived.clone(),
        posted(M1, GUARDIAN),
    ])
    .acting_as(TEACHER)
    .when(ArchiveConversation {
        conversation_id: CONV,
    })
    .then([archived]);
}

#[test]
fn only_participants_and_school_inbox_holders_have_a_view_to_change() {
    given([group(&[TEACHER, GUARDIAN])])
        .acting_as(GUARDIAN_12)
        .when(MuteConversation {
            conversation_id: CONV,
        })
        .then_err(ConversationError::NotAParticipant {
            person_id: GUARDIAN_12,
        });
    given([school_conversation(&[ADMIN, GUARDIAN])])
        .acting_as(TECH_ADMIN)
        .when(ArchiveConversation {
            conversation_id: CONV,
        })
        .events();
}

fn read(up_to_message_id: MessageId) -> MarkRead {
    MarkRead {
        conversation_id: CONV,
        up_to_message_id,
    }
}

#[test]
fn mark_read_moves_the_read_position_forward_only() {
    let history = [
        group(&[TEACHER, GUARDIAN]),
        posted(M1, TEACHER),
        posted(M2, TEACHER),
    ];
    let read_m2: Event = MessagesRead {
        conversation_id: CONV,
        person_id: GUARDIAN,
        up_to_message_id: M2,
        at: now(),
    }
    .into();
    given(history.clone())
        .acting_as(GUARDIAN)
        .when(read(M2))
        .then([read_m2.clone()]);
    let mut after = history.to_vec();
    after.push(read_m2);
    given(after.clone())
        .acting_as(GUARDIAN)
        .when(read(M1))
        .then_nothing();
    given(after)
        .acting_as(GUARDIAN)
        .when(read(M2))
        .then_nothing();
}

#[test]
fn mark_read_names_a_message_of_the_conversation() {
    given([group(&[TEACHER, GUARDIAN]), posted(M1, TEACHER)])
        .acting_as(GUARDIAN)
        .when(read(M3))
        .then_err(ValidationError::UnknownMessage { message_id: M3 });
}

// ---- evolve -------------------------------------------------------------------------

#[test]
fn evolve_folds_the_conversations_history() {
    let events = [
        group(&[TEACHER, GUARDIAN]),
        posted(M1, TEACHER),
        posted(M2, GUARDIAN),
        MessagesRead {
            conversation_id: CONV,
            person_id: GUARDIAN,
            up_to_message_id: M2,
            at: now(),
        }
        .into(),
        MessagesRead {
            conversation_id: CONV,
            person_id: GUARDIAN,
            up_to_message_id: M1,
            at: now(),
        }
        .into(),
        ConversationMuted {
            conversation_id: CONV,
            person_id: GUARDIAN,
            at: now(),
        }
        .into(),
        stopped(TEACHER),
        crate::events::DeliverySent {
            delivery_id: delivery_id_for(CONV, M1, GUARDIAN),
            provider_message_id: None,
            sender: None,
            sent_text: None,
            translated_to: None,
            at: now(),
        }
        .into(),
    ];
    let state = events.iter().fold(ConversationState::default(), evolve);
    assert_eq!(state.id(), Some(CONV));
    assert_eq!(state.kind(), Some(ConversationKind::Group));
    assert_eq!(state.school_id(), Some(SCHOOL));
    assert_eq!(state.started_by(), Some(TEACHER));
    assert_eq!(state.participants(), &[TEACHER, GUARDIAN]);
    assert_eq!(state.messages(), &[M1, M2]);
    assert_eq!(state.read_up_to(GUARDIAN), Some(M2));
    assert_eq!(state.read_up_to(TEACHER), None);
    assert!(state.is_muted(GUARDIAN) && !state.is_muted(TEACHER));
    assert!(!state.is_archived(GUARDIAN));
    assert!(state.is_stopped());
    assert_eq!(state.title(), None);
}

#[test]
fn channel_choice_uses_the_district_default_for_recipients_with_both() {
    let events = given([])
        .district([settings_changed(|s| {
            s.default_channel = ContactChannel::Email
        })])
        .when(personal(GUARDIAN, "Hi"))
        .events();
    assert_eq!(the_message(&events).deliveries[0].channel, Channel::Email);
}

// ---- SMS replies --------------------------------------------------------------------

fn sms_sid() -> ProviderMessageId {
    ProviderMessageId::parse("SMreply0001").unwrap()
}

fn reply(author_id: PersonId, body: &str) -> ReceiveReply {
    ReceiveReply {
        conversation_id: CONV,
        author_id,
        message_sid: sms_sid(),
        body: body.to_owned(),
        from_number: None,
    }
}

#[test]
fn an_sms_reply_is_posted_as_the_family_members_message_exactly_as_written() {
    let events = given([group(&[TEACHER, GUARDIAN])])
        .acting_as_system()
        .when(reply(GUARDIAN, "Gracias! {student_name} will be there"))
        .events();
    let [Event::MessagePosted(posted)] = &events[..] else {
        panic!("expected a posted message, got {events:?}")
    };
    assert_eq!(posted.author_id, GUARDIAN);
    assert_eq!(posted.message_id, inbound_message_id(&sms_sid()));
    assert_eq!(posted.body, "Gracias! {student_name} will be there");
    let recipients: Vec<PersonId> = posted.deliveries.iter().map(|d| d.recipient_id).collect();
    assert_eq!(recipients, vec![TEACHER], "everyone else gets the reply");
    assert_eq!(
        posted.deliveries[0].text, "Gracias! {student_name} will be there",
        "a family's text is never rendered as a template"
    );
}

#[test]
fn an_sms_reply_is_not_texted_back_to_the_phone_it_came_from() {
    // Pat and a second guardian share Pat's phone; a third has their own.
    let sharer = person(NEWCOMER, PersonKind::Guardian, "Sid Sharer")
        .contact(ContactChannel::Sms, "+15550100001")
        .guardian_of(STUDENT_14)
        .build();
    let events = given([group(&[TEACHER, GUARDIAN, NEWCOMER, GUARDIAN_12])])
        .with_person(sharer)
        .acting_as_system()
        .when(reply(GUARDIAN, "Got it"))
        .events();
    let posted = the_message(&events);
    let recipients: Vec<PersonId> = posted.deliveries.iter().map(|d| d.recipient_id).collect();
    assert_eq!(
        recipients,
        vec![TEACHER, GUARDIAN_12],
        "the sharer was next to the phone it was typed on"
    );
}

#[test]
fn a_reply_from_a_shared_phone_names_everyone_who_has_that_phone() {
    // Pat and a second guardian share Pat's phone; a third has their own.
    let sharer = person(NEWCOMER, PersonKind::Guardian, "Sid Sharer")
        .contact(ContactChannel::Sms, "+15550100001")
        .guardian_of(STUDENT_14)
        .build();
    let from = |number: &str| ReceiveReply {
        from_number: Some(PhoneNumber::parse(number).unwrap()),
        ..reply(GUARDIAN, "Got it")
    };
    let events = given([group(&[TEACHER, GUARDIAN, NEWCOMER, GUARDIAN_12])])
        .with_person(sharer.clone())
        .acting_as_system()
        .when(from("+15550100001"))
        .events();
    let posted = the_message(&events);
    assert_eq!(
        posted.author_id, GUARDIAN,
        "the person the phone was last texted for"
    );
    assert_eq!(
        posted.shared_phone_with,
        vec![NEWCOMER],
        "but it may be Sid"
    );
    // From a phone nobody else in the conversation has, the author is the author.
    let events = given([group(&[TEACHER, GUARDIAN, GUARDIAN_12])])
        .with_person(sharer.clone())
        .acting_as_system()
        .when(from("+15550100001"))
        .events();
    assert!(the_message(&events).shared_phone_with.is_empty());
    // A reply kept unposted (the conversation was stopped) names them too.
    let events = given([
        group(&[TEACHER, GUARDIAN, NEWCOMER, GUARDIAN_12]),
        stopped(TEACHER),
    ])
    .with_person(sharer)
    .acting_as_system()
    .when(from("+15550100001"))
    .events();
    assert!(
        matches!(&events[..], [Event::InboundReplyRefused(r)] if r.shared_phone_with == vec![NEWCOMER]),
        "{events:?}"
    );
}

#[test]
fn a_reply_from_a_phone_the_family_no_longer_has_is_not_theirs() {
    // Pat's phone is +15550100001; the line still remembers texting Pat at an old one.
    let from_old_phone = ReceiveReply {
        from_number: Some(PhoneNumber::parse("+15550100077").unwrap()),
        ..reply(GUARDIAN, "Who is this?")
    };
    given([group(&[TEACHER, GUARDIAN])])
        .acting_as_system()
        .when(from_old_phone.clone())
        .then_err(ConversationError::NotTheirNumber {
            person_id: GUARDIAN,
        });
    // A phone Pat shared and left with the other guardian is still the other's.
    let kept_it = person(NEWCOMER, PersonKind::Guardian, "Sid Sharer")
        .contact(ContactChannel::Sms, "+15550100077")
        .guardian_of(STUDENT_14)
        .build();
    let events = given([group(&[TEACHER, GUARDIAN, NEWCOMER])])
        .with_person(kept_it)
        .acting_as_system()
        .when(from_old_phone)
        .events();
    let posted = the_message(&events);
    assert_eq!(posted.author_id, NEWCOMER);
    assert!(posted.shared_phone_with.is_empty(), "{posted:?}");
    assert_eq!(
        posted
            .deliveries
            .iter()
            .map(|d| d.recipient_id)
            .collect::<Vec<_>>(),
        vec![TEACHER, GUARDIAN],
        "Pat, on a phone of their own now, is told what Sid wrote"
    );
}

#[test]
fn an_sms_reply_to_a_stopped_conversation_is_kept_and_refused() {
    given([group(&[TEACHER, GUARDIAN]), stopped(TEACHER)])
        .acting_as_system()
        .when(reply(GUARDIAN, "One more thing"))
        .then([InboundReplyRefused {
            conversation_id: CONV,
            author_id: GUARDIAN,
            message_sid: sms_sid(),
            body: "One more thing".to_owned(),
            reason: Some("conversation_stopped".to_owned()),
            shared_phone_with: vec![],
            at: now(),
        }
        .into()]);
}

#[test]
fn an_sms_reply_holding_blocked_content_is_kept_but_relayed_to_nobody() {
    given([group(&[TEACHER, GUARDIAN, GUARDIAN_12])])
        .district([blocking("###-##-####")])
        .acting_as_system()
        .when(reply(GUARDIAN, "my ssn is 123-45-6789"))
        .then([InboundReplyRefused {
            conversation_id: CONV,
            author_id: GUARDIAN,
            message_sid: sms_sid(),
            body: "my ssn is 123-45-6789".to_owned(),
            reason: Some("blocked_content".to_owned()),
            shared_phone_with: vec![],
            at: now(),
        }
        .into()]);
}

#[test]
fn a_reply_the_provider_sends_twice_is_posted_once() {
    let first = given([group(&[TEACHER, GUARDIAN])])
        .acting_as_system()
        .when(reply(GUARDIAN, "Thanks"))
        .events();
    let history: Vec<Event> = std::iter::once(group(&[TEACHER, GUARDIAN]))
        .chain(first)
        .collect();
    given(history)
        .acting_as_system()
        .when(reply(GUARDIAN, "Thanks"))
        .then_nothing();
}

#[test]
fn only_participants_reply_and_only_through_homeroom_services() {
    given([group(&[TEACHER, GUARDIAN])])
        .acting_as_system()
        .when(reply(GUARDIAN_12, "Hi"))
        .then_err(ConversationError::NotAParticipant {
            person_id: GUARDIAN_12,
        });
    given([group(&[TEACHER, GUARDIAN])])
        .acting_as(GUARDIAN)
        .when(reply(GUARDIAN, "Hi"))
        .then_err(ConversationError::NotPermitted);
}

#[test]
fn a_too_young_refusal_says_the_age_in_words() {
    let recipient_id = PersonId::new(uuid::Uuid::nil());
    let known = ConversationError::RecipientTooYoung {
        recipient_id,
        age: Some(9),
        min_age: 13,
    };
    assert!(
        known.to_string().ends_with("is under 13 (age 9)"),
        "{known}"
    );
    let unknown = ConversationError::RecipientTooYoung {
        recipient_id,
        age: None,
        min_age: 13,
    };
    assert!(
        unknown
            .to_string()
            .ends_with("is under 13 (no birth date is known)"),
        "{unknown}"
    );
}

// ---- staff take part through their roles at the school --------------------------------

#[test]
fn staff_whose_roles_at_the_school_are_gone_no_longer_write_read_or_manage_its_conversations() {
    let history = || [group(&[NO_ROLE, GUARDIAN]), posted(M1, NO_ROLE)];
    given(history())
        .acting_as(NO_ROLE)
        .when(post("still here?"))
        .then_code("not_permitted");
    given(history())
        .acting_as(NO_ROLE)
        .when(read(M1))
        .then_code("not_permitted");
    given(history())
        .acting_as(NO_ROLE)
        .when(stop())
        .then_code("not_permitted");
    // The family keeps taking part.
    given(history())
        .acting_as(GUARDIAN)
        .when(post("Are you there?"))
        .events();
}

#[test]
fn staff_who_left_the_schools_roles_are_sent_nothing_more() {
    let events = given([group(&[TEACHER, NO_ROLE, GUARDIAN]), posted(M1, TEACHER)])
        .acting_as(GUARDIAN)
        .when(post("Thanks"))
        .events();
    assert_eq!(recipients_of(&events), vec![TEACHER]);
}

#[test]
fn a_group_is_not_started_with_staff_who_hold_no_role_at_its_school() {
    given([])
        .when(start(&[ADMIN, GUARDIAN, OTHER_ADMIN]))
        .then_err(ConversationError::RecipientNotReachable {
            recipient_id: OTHER_ADMIN,
        });
    given([]).when(start(&[ADMIN, GUARDIAN, NO_ROLE])).then_err(
        ConversationError::RecipientNotReachable {
            recipient_id: NO_ROLE,
        },
    );
}

#[test]
fn a_teacher_of_one_child_is_no_teacher_of_the_family_at_the_siblings_school() {
    let both = person(GUARDIAN, PersonKind::Guardian, "Pat Parent")
        .contact(ContactChannel::Sms, "+15550100001")
        .guardian_of(STUDENT_14)
        .guardian_of(OTHER_STUDENT)
        .build();
    let teacher_at_both = person(TEACHER, PersonKind::Staff, "Tom Teacher")
        .at(SCHOOL)
        .role("teacher", Some(SCHOOL))
        .role("teacher", Some(OTHER_SCHOOL))
        .build();
    let at_other_school = StartConversation {
        school_id: OTHER_SCHOOL,
        ..start(&[TEACHER, GUARDIAN])
    };
    given([])
        .with_people([both.clone(), teacher_at_both.clone()])
        .acting_as(TEACHER)
        .when(at_other_school)
        .then_err(ConversationError::NotACurrentTeacher {
            teacher_id: TEACHER,
            of: GUARDIAN,
        });
    given([])
        .with_people([both, teacher_at_both])
        .acting_as(TEACHER)
        .when(start(&[TEACHER, GUARDIAN]))
        .events();
}
