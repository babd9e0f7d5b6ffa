use uuid::Uuid;

use super::*;
use crate::commands::{
    PostMessage, RecordDeliveryOutcome, RegisterSchool, SendPersonalMessage, StartConversation,
    StopConversation,
};
use crate::testing::*;
use crate::values::OutcomeStatus;

const CONV: ConversationId = ConversationId::new(Uuid::from_u128(0xd001));

fn district_id() -> DistrictId {
    DistrictId::parse("north").unwrap()
}

fn stop() -> Command {
    StopConversation {
        conversation_id: CONV,
    }
    .into()
}

#[test]
fn stream_names_carry_the_district() {
    let person = PersonId::new(Uuid::from_u128(1));
    assert_eq!(
        StreamRef::District.stream_name(&district_id()),
        "district-north"
    );
    assert_eq!(
        StreamRef::Person(person).stream_name(&district_id()),
        "person-north:00000000-0000-0000-0000-000000000001"
    );
    assert!(StreamRef::Conversation(CONV)
        .stream_name(&district_id())
        .starts_with("conversation-north:"));
    assert!(StreamRef::Delivery(DeliveryId::new(Uuid::nil()))
        .stream_name(&district_id())
        .starts_with("delivery-north:"));
}

#[test]
fn a_personal_message_targets_the_senders_conversation_with_the_recipient() {
    let cmd: Command = SendPersonalMessage {
        recipient_id: GUARDIAN,
        body: "Hi".to_owned(),
        subject: None,
        channel: None,
        message_id: None,
    }
    .into();
    assert_eq!(
        target(&cmd, &Actor::Person(ADMIN)),
        StreamRef::Conversation(personal_conversation_id(ADMIN, GUARDIAN))
    );
    assert_eq!(
        target(&cmd, &sis()),
        StreamRef::Conversation(personal_conversation_id(
            PersonId::new(Uuid::nil()),
            GUARDIAN
        ))
    );
}

#[test]
fn commands_target_the_stream_they_change() {
    let school: Command = RegisterSchool {
        school_id: SCHOOL,
        name: "Hillside".to_owned(),
        sms_number: None,
    }
    .into();
    assert_eq!(target(&school, &sis()), StreamRef::District);
    assert_eq!(target(&stop(), &sis()), StreamRef::Conversation(CONV));
    let outcome: Command = RecordDeliveryOutcome {
        delivery_id: DeliveryId::new(Uuid::nil()),
        status: OutcomeStatus::Sent,
        provider_message_id: None,
        error: None,
        permanent: None,
        sender: None,
        sent_text: None,
        translated_to: None,
    }
    .into();
    assert_eq!(
        target(&outcome, &sis()),
        StreamRef::Delivery(DeliveryId::new(Uuid::nil()))
    );
}

#[test]
fn people_needed_covers_the_actor_the_named_people_and_the_participants() {
    let cmd: Command = StartConversation {
        conversation_id: CONV,
        school_id: SCHOOL,
        participant_ids: vec![GUARDIAN, TEACHER, GUARDIAN],
        body: "Hi".to_owned(),
        title: None,
        from: None,
        channel: None,
    }
    .into();
    let mut expected = vec![ADMIN, GUARDIAN, TEACHER];
    expected.sort();
    let empty = target(&cmd, &Actor::Person(ADMIN)).initial_state();
    assert_eq!(people_needed(&cmd, &empty, &Actor::Person(ADMIN)), expected);

    let started = events::ConversationStarted {
        conversation_id: CONV,
        kind: values::ConversationKind::Group,
        school_id: SCHOOL,
        title: None,
        started_by: TEACHER,
        participant_ids: vec![TEACHER, GUARDIAN_12],
        at: now(),
    };
    let state = empty.evolve(&started.into());
    let post: Command = PostMessage {
        conversation_id: CONV,
        message_id: MessageId::new(Uuid::nil()),
        body: "Hi".to_owned(),
        from: None,
    }
    .into();
    let mut expected = vec![GUARDIAN, TEACHER, GUARDIAN_12];
    expected.sort();
    assert_eq!(
        people_needed(&post, &state, &Actor::Person(GUARDIAN)),
        expected
    );
    assert_eq!(school_of(&state, &post), Some(SCHOOL));
}

#[test]
fn a_command_sent_to_the_wrong_kind_of_stream_is_a_validation_error() {
    let err = decide(&State::District(district()), &stop(), &facts()).unwrap_err();
    assert_eq!(
        err,
        DomainError::Validation(ValidationError::WrongStream {
            command: "StopConversation",
            state: "district",
        })
    );
    assert_eq!(err.code(), "validation");
}

#[test]
fn every_error_maps_to_its_api_code() {
    let cases: Vec<(DomainError, &str)> = vec![
        (ConversationError::NotPermitted.into(), "not_permitted"),
        (
            ConversationError::RecipientTooYoung {
                recipient_id: STUDENT_12,
                age: Some(12),
                min_age: 13,
            }
            .into(),
            "recipient_too_young",
        ),
        (
            ConversationError::TooManyParticipants { max: 15, got: 16 }.into(),
            "too_many_participants",
        ),
        (
            ConversationError::UnknownConversation {
                conversation_id: CONV,
            }
            .into(),
            "unknown_conversation",
        ),
        (
            DeliveryError::UnknownDelivery {
                delivery_id: DeliveryId::new(Uuid::nil()),
            }
            .into(),
            "unknown_delivery",
        ),
        (
            PersonError::UnknownPerson {
                person_id: GUARDIAN,
            }
            .into(),
            "unknown_person",
        ),
        (DistrictError::NotPermitted.into(), "not_permitted"),
        (ValidationError::NoParticipants.into(), "validation"),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), code, "{err:?}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn api_commands_are_read_by_name() {
    use serde::de::value::{Error, MapDeserializer};
    let body = || {
        MapDeserializer::<_, Error>::new(
            [("conversation_id", "00000000-0000-0000-0000-00000000d001")].into_iter(),
        )
    };
    assert_eq!(
        Command::deserialize_named("StopConversation", body()).unwrap(),
        Some(stop())
    );
    assert_eq!(
        Command::deserialize_named("EditMessage", body()).unwrap(),
        None
    );
    assert!(Command::deserialize_named("MarkRead", body()).is_err());
}

#[test]
fn a_whole_story_folds_through_the_top_level_state() {
    let mut state = StreamRef::Conversation(CONV).initial_state();
    let start: Command = StartConversation {
        conversation_id: CONV,
        school_id: SCHOOL,
        participant_ids: vec![GUARDIAN],
        body: "Hi".to_owned(),
        title: None,
        from: None,
        channel: None,
    }
    .into();
    for event in decide(&state, &start, &facts()).unwrap() {
        state = state.evolve(&event);
    }
    for event in decide(&state, &stop(), &facts()).unwrap() {
        state = state.evolve(&event);
    }
    let State::Conversation(conversation) = &state else {
        panic!("a conversation state");
    };
    assert!(conversation.is_stopped());
    assert_eq!(decide(&state, &stop(), &facts()), Ok(vec![]));
    assert_eq!(school_of(&state, &stop()), Some(SCHOOL));
}

#[test]
fn every_stream_the_domain_writes_is_of_a_listed_category() {
    use crate::ids::{PhoneNumber, ProviderMessageId};
    let district = DistrictId::parse("north").unwrap();
    let number = || PhoneNumber::parse("+15550001000").unwrap();
    let id = Uuid::nil();
    for stream in [
        StreamRef::District,
        StreamRef::Person(PersonId::new(id)),
        StreamRef::Conversation(ConversationId::new(id)),
        StreamRef::Delivery(DeliveryId::new(id)),
        StreamRef::SmsLine {
            ours: number(),
            theirs: number(),
        },
        StreamRef::SmsNumber(number()),
        StreamRef::Inbound(ProviderMessageId::parse("SM1").unwrap()),
    ] {
        let name = stream.stream_name(&district);
        let category = name.split('-').next().unwrap();
        assert!(
            StreamRef::CATEGORIES.contains(&category),
            "{name} is of no listed category"
        );
    }
}
