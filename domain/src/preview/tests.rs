use uuid::Uuid;

use super::*;
use crate::events::{ConversationStarted, ConversationStopped};
use crate::ids::{personal_conversation_id, MessageId};
use crate::sms::SmsEncoding;
use crate::testing::*;
use crate::text::{BlockedPattern, MAX_BODY_CHARS};
use crate::validation::ValidationError;
use crate::values::{ContactPoint, ConversationKind, PersonKind};

// ---- the harness --------------------------------------------------------------------

/// A preview scenario: the personal conversation's past events, the facts a send would
/// load, and the numbers the caller found shared.
struct Given {
    events: Vec<Event>,
    facts: Facts,
    shared: Vec<String>,
}

fn given(events: impl IntoIterator<Item = Event>) -> Given {
    Given {
        events: events.into_iter().collect(),
        facts: facts(),
        shared: Vec::new(),
    }
}

impl Given {
    fn acting_as(mut self, person: PersonId) -> Self {
        self.facts.actor = crate::facts::Actor::Person(person);
        self
    }

    fn district(mut self, events: impl IntoIterator<Item = Event>) -> Self {
        self.facts.district = events
            .into_iter()
            .fold(self.facts.district, |d, e| crate::district::evolve(d, &e));
        self
    }

    fn with_person(mut self, person: PersonState) -> Self {
        self.facts = self.facts.with_person(person);
        self
    }

    /// Someone else of the district has `number` too.
    fn sharing(mut self, number: &str) -> Self {
        self.shared.push(number.to_owned());
        self
    }

    fn when(self, request: PreviewRequest) -> Outcome {
        let state = self
            .events
            .iter()
            .fold(ConversationState::default(), conversation::evolve);
        Outcome(preview(&state, &request, &self.facts, &self.shared))
    }
}

struct Outcome(Result<Render, ConversationError>);

impl Outcome {
    #[track_caller]
    fn then(self) -> Render {
        match self.0 {
            Ok(render) => render,
            Err(e) => panic!("expected a render, got refusal {e:?} ({})", e.code()),
        }
    }

    #[track_caller]
    fn then_err(self, expected: ConversationError) {
        match self.0 {
            Ok(render) => panic!("expected refusal {expected:?}, got {render:#?}"),
            Err(e) => assert_eq!(e, expected),
        }
    }
}

fn to(recipient_id: PersonId, body: &str) -> PreviewRequest {
    PreviewRequest {
        recipient_id,
        body: body.to_owned(),
        channel: None,
    }
}

fn by(channel: Channel, request: PreviewRequest) -> PreviewRequest {
    PreviewRequest {
        channel: Some(channel),
        ..request
    }
}

fn letters(n: usize) -> String {
    "a".repeat(n)
}

/// The signature every SMS preview of the fixture's sender ends with.
const SIGNATURE: &str = "\n- Ada Admin";

/// `text` as an SMS from the fixture's sender goes out: signed with her name.
fn signed(text: &str) -> String {
    format!("{text}{SIGNATURE}")
}

fn personal_started(recipient: PersonId) -> Event {
    ConversationStarted {
        conversation_id: personal_conversation_id(ADMIN, recipient),
        kind: ConversationKind::Personal,
        school_id: SCHOOL,
        title: None,
        started_by: ADMIN,
        participant_ids: vec![ADMIN, recipient],
        at: now(),
    }
    .into()
}

// ---- rendering ----------------------------------------------------------------------

#[test]
fn a_preview_renders_the_merge_fields_for_the_recipient() {
    let render = given([])
        .when(to(
            GUARDIAN,
            "Hi {recipient_name}, about {student_name} at {school_name}. {sender_name}",
        ))
        .then();
    assert_eq!(
        render,
        Render {
            recipient_id: GUARDIAN,
            channel: Channel::Sms,
            address: Some("+15550100001".to_owned()),
            language: "es".to_owned(),
            text: signed("Hi Pat Parent, about Dennis at Hillside. Ada Admin"),
            labelled: false,
            measure: sms::measure(&signed(
                "Hi Pat Parent, about Dennis at Hillside. Ada Admin"
            )),
        }
    );
}

#[test]
fn a_preview_is_the_delivery_that_sending_would_plan() {
    let cases = [
        to(GUARDIAN, "About {student_name}: 5€ for the trip"),
        by(Channel::Email, to(GUARDIAN, "Dear {recipient_name}")),
        by(Channel::Email, to(GUARDIAN_12, "Hello {student_name}")),
        to(STUDENT_14, "{recipient_name}, see me after class"),
    ];
    for request in cases {
        let render = given([]).when(request.clone()).then();
        let sent = conversation::decide(
            &ConversationState::default(),
            &Command::SendPersonalMessage(SendPersonalMessage {
                recipient_id: request.recipient_id,
                body: request.body.clone(),
                subject: None,
                channel: request.channel,
                message_id: None,
            }),
            &facts(),
        )
        .unwrap();
        let planned = sent
            .iter()
            .find_map(|e| match e {
                Event::MessagePosted(m) => m.deliveries.first().cloned(),
                _ => None,
            })
            .unwrap();
        // As the worker sends it: an SMS signed with the sender's name.
        let text = match planned.channel {
            Channel::Sms => signed(&planned.text),
            _ => planned.text,
        };
        assert_eq!(
            (render.channel, render.address, render.language, render.text),
            (planned.channel, planned.address, planned.language, text),
            "{request:?}"
        );
    }
}

#[test]
fn a_preview_in_the_existing_conversation_renders_as_its_next_message_would() {
    // given a personal conversation that already holds a message
    let earlier = crate::events::MessagePosted {
        conversation_id: personal_conversation_id(ADMIN, GUARDIAN),
        message_id: MessageId::new(Uuid::from_u128(0xe001)),
        author_id: ADMIN,
        sent_as: crate::values::SendAs::Personal,
        body: "Hi".to_owned(),
        subject: None,
        deliveries: vec![],
        shared_phone_with: vec![],
        at: now(),
    };
    // when the next one is previewed, then it renders for the same recipient
    let render = given([personal_started(GUARDIAN), earlier.into()])
        .when(to(GUARDIAN, "Again about {student_name}"))
        .then();
    assert_eq!(render.text, signed("Again about Dennis"));
}

// ---- the channel --------------------------------------------------------------------

#[test]
fn the_senders_pick_of_channel_wins_when_the_recipient_has_it() {
    let render = given([])
        .when(by(Channel::Email, to(GUARDIAN, "Hi")))
        .then();
    assert_eq!(
        (render.channel, render.address.as_deref()),
        (Channel::Email, Some("pat@example.org"))
    );
}

#[test]
fn a_pick_the_recipient_cannot_receive_gives_way_to_the_usual_choice() {
    // given a guardian with a phone number only, when the sender picks email
    let render = given([])
        .when(by(Channel::Email, to(GUARDIAN_12, "Hi")))
        .then();
    // then it goes by SMS
    assert_eq!(
        (render.channel, render.address.as_deref()),
        (Channel::Sms, Some("+15550100002"))
    );
}

// ---- the counter --------------------------------------------------------------------

#[test]
fn a_gsm_text_counts_gsm7_segments_of_160_then_153() {
    // The signature counts too.
    let one = given([])
        .when(to(GUARDIAN, &letters(160 - SIGNATURE.len())))
        .then();
    assert_eq!(
        (
            one.measure.encoding,
            one.measure.units,
            one.measure.segments
        ),
        (SmsEncoding::Gsm7, 160, 1)
    );
    let two = given([])
        .when(to(GUARDIAN, &letters(161 - SIGNATURE.len())))
        .then();
    assert_eq!(two.measure.segments, 2);
}

#[test]
fn one_character_outside_gsm_makes_the_count_ucs2() {
    let render = given([]).when(to(GUARDIAN, "Thanks for coming ☕")).then();
    assert_eq!(render.measure.encoding, SmsEncoding::Ucs2);
    let long = given([])
        .when(to(
            GUARDIAN,
            &format!("☕{}", letters(70 - SIGNATURE.len())),
        ))
        .then();
    assert_eq!(long.measure.segments, 2, "71 UCS-2 units need two segments");
}

#[test]
fn the_count_is_of_the_rendered_text_not_the_template() {
    // given a template of 153 letters and a merge field that renders longer than its
    // own spelling would suggest ("Pat Parent" is 10, "{recipient_name}" 16)
    let body = format!("{}{{recipient_name}}", letters(150 - SIGNATURE.len()));
    let render = given([]).when(to(GUARDIAN, &body)).then();
    // then the count is of the 160 rendered characters, signature included
    assert_eq!((render.measure.units, render.measure.segments), (160, 1));
}

#[test]
fn an_email_or_in_app_preview_still_reports_the_sms_count() {
    let email = given([])
        .when(by(Channel::Email, to(GUARDIAN, &letters(200))))
        .then();
    assert_eq!(email.channel, Channel::Email);
    assert_eq!(
        (email.measure.encoding, email.measure.segments),
        (SmsEncoding::Gsm7, 2)
    );
    let app_user = person(NEWCOMER, PersonKind::Guardian, "Ann App")
        .prefers(Channel::App)
        .guardian_of(STUDENT_14)
        .build();
    let app = given([])
        .with_person(app_user)
        .when(to(NEWCOMER, "Hi"))
        .then();
    assert_eq!((app.channel, app.address), (Channel::App, None));
    assert_eq!(app.measure.segments, 1);
}

const NEWCOMER: PersonId = PersonId::new(Uuid::from_u128(0x9001));

// ---- the shared-phone label ---------------------------------------------------------

#[test]
fn an_sms_to_a_shared_number_leads_with_the_recipients_first_name() {
    let render = given([])
        .sharing("+15550100001")
        .when(to(GUARDIAN, "No school Friday"))
        .then();
    assert_eq!(render.text, signed("For Pat: No school Friday"));
    assert!(render.labelled);
    assert_eq!(
        render.measure,
        sms::measure(&signed("For Pat: No school Friday"))
    );
}

#[test]
fn the_label_counts_toward_the_segments() {
    // given 155 characters with the signature, one segment on their own
    let body = letters(155 - SIGNATURE.len());
    assert_eq!(
        given([]).when(to(GUARDIAN, &body)).then().measure.segments,
        1
    );
    // when the number is shared, the label ("For Pat: ", 9 more) makes it two
    let render = given([])
        .sharing("+15550100001")
        .when(to(GUARDIAN, &body))
        .then();
    assert_eq!((render.measure.units, render.measure.segments), (164, 2));
}

#[test]
fn a_shared_number_the_sms_does_not_go_to_adds_no_label() {
    let render = given([])
        .sharing("+15550100002")
        .when(to(GUARDIAN, "Hi"))
        .then();
    assert_eq!((render.text, render.labelled), (signed("Hi"), false));
}

#[test]
fn an_email_to_someone_whose_phone_is_shared_has_no_label() {
    let render = given([])
        .sharing("+15550100001")
        .when(by(Channel::Email, to(GUARDIAN, "Hi")))
        .then();
    assert_eq!((render.text.as_str(), render.labelled), ("Hi", false));
}

#[test]
fn the_numbers_to_check_are_the_recipients_usable_phone_numbers() {
    let sms = |address: &str| ContactPoint {
        channel: ContactChannel::Sms,
        address: address.to_owned(),
    };
    let email = ContactPoint {
        channel: ContactChannel::Email,
        address: "pat@example.org".to_owned(),
    };
    let recipient = person_with_contacts(
        PersonKind::Guardian,
        None,
        vec![sms("+15550100001"), email, sms("+15550100009")],
        &["+15550100009"],
    );
    assert_eq!(sms_numbers(&recipient), ["+15550100001"]);
}

// ---- refusals, as sending would -----------------------------------------------------

#[test]
fn an_unknown_recipient_is_refused() {
    given([])
        .when(to(NEWCOMER, "Hi"))
        .then_err(ConversationError::UnknownPerson {
            person_id: NEWCOMER,
        });
}

#[test]
fn a_student_under_13_is_refused() {
    given([])
        .when(to(STUDENT_12, "Hi"))
        .then_err(ConversationError::RecipientTooYoung {
            recipient_id: STUDENT_12,
            age: Some(12),
            min_age: crate::conversation::MIN_PERSONAL_MESSAGE_AGE,
        });
}

#[test]
fn a_family_of_another_school_or_a_colleague_is_not_reachable() {
    for recipient_id in [OTHER_GUARDIAN, TEACHER] {
        given([])
            .when(to(recipient_id, "Hi"))
            .then_err(ConversationError::RecipientNotReachable { recipient_id });
    }
}

#[test]
fn a_sender_without_personal_messages_is_refused() {
    given([])
        .acting_as(TECH_ADMIN)
        .when(to(GUARDIAN, "Hi"))
        .then_err(ConversationError::NotPermitted);
}

#[test]
fn blocked_content_is_refused() {
    let pattern = BlockedPattern::parse("###-##-####").unwrap();
    given([])
        .district([settings_changed(|s| s.blocked_patterns = vec![pattern])])
        .when(to(GUARDIAN, "SSN 123-45-6789"))
        .then_err(ConversationError::BlockedContent {
            pattern: "###-##-####".to_owned(),
        });
}

#[test]
fn an_empty_or_overlong_body_is_refused() {
    given([])
        .when(to(GUARDIAN, "   "))
        .then_err(ConversationError::Validation(ValidationError::Empty {
            field: "body",
        }));
    given([])
        .when(to(GUARDIAN, &letters(MAX_BODY_CHARS + 1)))
        .then_err(ConversationError::Validation(ValidationError::TooLong {
            field: "body",
            max: MAX_BODY_CHARS,
            got: MAX_BODY_CHARS + 1,
        }));
}

#[test]
fn an_unknown_merge_field_is_refused() {
    given([])
        .when(to(GUARDIAN, "Hi {studnet_name}"))
        .then_err(ConversationError::Validation(
            ValidationError::UnknownMergeField {
                field: "studnet_name".to_owned(),
            },
        ));
}

#[test]
fn a_stopped_personal_conversation_is_previewed_as_taken_up_again() {
    let stopped = ConversationStopped {
        conversation_id: personal_conversation_id(ADMIN, GUARDIAN),
        by: ADMIN,
        at: now(),
    };
    let render = given([personal_started(GUARDIAN), stopped.into()])
        .when(to(GUARDIAN, "Hi"))
        .then();
    assert_eq!(render.text, signed("Hi"));
}
