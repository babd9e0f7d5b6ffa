use uuid::Uuid;

use super::*;
use crate::ids::{delivery_id_for, PersonId};
use crate::testing::*;
use crate::values::Channel;

const MESSAGE: MessageId = MessageId::new(Uuid::from_u128(0xe001));
const CONVERSATION: ConversationId = ConversationId::new(Uuid::from_u128(0xd001));

fn plan() -> PlannedDelivery {
    PlannedDelivery {
        delivery_id: delivery_id_for(CONVERSATION, MESSAGE, GUARDIAN),
        recipient_id: GUARDIAN,
        channel: Channel::Sms,
        address: Some("+15550100001".to_owned()),
        language: "es".to_owned(),
        text: "Hola".to_owned(),
        subject: None,
    }
}

fn id() -> DeliveryId {
    plan().delivery_id
}

fn queue() -> QueueDelivery {
    QueueDelivery {
        delivery: plan(),
        message_id: MESSAGE,
        conversation_id: CONVERSATION,
        fallback_of: None,
        sender: None,
    }
}

fn queued() -> Event {
    DeliveryQueued {
        delivery: plan(),
        message_id: MESSAGE,
        conversation_id: CONVERSATION,
        fallback_of: None,
        sender: None,
        at: now(),
    }
    .into()
}

fn sent() -> Event {
    DeliverySent {
        delivery_id: id(),
        provider_message_id: Some("SM1".to_owned()),
        sender: None,
        sent_text: None,
        translated_to: None,
        at: now(),
    }
    .into()
}

fn delivered() -> Event {
    DeliveryDelivered {
        delivery_id: id(),
        provider_message_id: Some("SM1".to_owned()),
        at: now(),
    }
    .into()
}

fn failed() -> Event {
    DeliveryFailed {
        delivery_id: id(),
        provider_message_id: Some("SM1".to_owned()),
        error: Some("30003".to_owned()),
        permanent: true,
        at: now(),
    }
    .into()
}

fn outcome(status: OutcomeStatus) -> RecordDeliveryOutcome {
    RecordDeliveryOutcome {
        delivery_id: id(),
        status,
        provider_message_id: Some("SM1".to_owned()),
        error: (status == OutcomeStatus::Failed).then(|| "30003".to_owned()),
        permanent: (status == OutcomeStatus::Failed).then_some(true),
        sender: None,
        sent_text: None,
        translated_to: None,
    }
}

#[test]
fn the_process_manager_queues_a_planned_delivery_once() {
    given([]).acting_as_system().when(queue()).then([queued()]);
    given([queued()])
        .acting_as_system()
        .when(queue())
        .then_nothing();
}

#[test]
fn only_system_services_act_on_deliveries() {
    given([])
        .acting_as(ADMIN)
        .when(queue())
        .then_err(DeliveryError::NotPermitted);
    given([queued()])
        .acting_as(GUARDIAN)
        .when(outcome(OutcomeStatus::Delivered))
        .then_err(DeliveryError::NotPermitted);
}

#[test]
fn an_outcome_for_an_unknown_delivery_is_refused() {
    given([])
        .acting_as_system()
        .when(outcome(OutcomeStatus::Sent))
        .then_err(DeliveryError::UnknownDelivery { delivery_id: id() });
}

#[test]
fn a_delivery_goes_from_queued_to_sent_to_delivered() {
    given([queued()])
        .acting_as_system()
        .when(outcome(OutcomeStatus::Sent))
        .then([sent()]);
    given([queued(), sent()])
        .acting_as_system()
        .when(outcome(OutcomeStatus::Delivered))
        .then([delivered()]);
    given([queued()])
        .acting_as_system()
        .when(outcome(OutcomeStatus::Delivered))
        .then([delivered()]);
}

#[test]
fn a_failure_is_recorded_with_its_error_and_permanence() {
    given([queued(), sent()])
        .acting_as_system()
        .when(outcome(OutcomeStatus::Failed))
        .then([failed()]);
}

#[test]
fn a_repeated_outcome_is_an_idempotent_no_op() {
    given([queued(), sent()])
        .acting_as_system()
        .when(outcome(OutcomeStatus::Sent))
        .then_nothing();
    given([queued(), sent(), delivered()])
        .acting_as_system()
        .when(outcome(OutcomeStatus::Delivered))
        .then_nothing();
}

#[test]
fn delivered_and_failed_are_final() {
    for status in [OutcomeStatus::Sent, OutcomeStatus::Failed] {
        given([queued(), delivered()])
            .acting_as_system()
            .when(outcome(status))
            .then_nothing();
    }
    for status in [OutcomeStatus::Sent, OutcomeStatus::Delivered] {
        given([queued(), failed()])
            .acting_as_system()
            .when(outcome(status))
            .then_nothing();
    }
}

#[test]
fn an_email_that_bounces_after_it_was_accepted_fails_for_good() {
    let email = PlannedDelivery {
        channel: Channel::Email,
        address: Some("pat@example.org".to_owned()),
        ..plan()
    };
    let queued_email: Event = DeliveryQueued {
        delivery: email,
        message_id: MESSAGE,
        conversation_id: CONVERSATION,
        fallback_of: None,
        sender: None,
        at: now(),
    }
    .into();
    // A bounce (permanent) is recorded, so the message falls back and the address is
    // marked failing; a passing failure after delivery is only a late echo.
    given([queued_email.clone(), delivered()])
        .acting_as_system()
        .when(outcome(OutcomeStatus::Failed))
        .then([failed()]);
    given([queued_email.clone(), delivered()])
        .acting_as_system()
        .when(RecordDeliveryOutcome {
            permanent: Some(false),
            ..outcome(OutcomeStatus::Failed)
        })
        .then_nothing();
    given([queued_email, delivered(), failed()])
        .acting_as_system()
        .when(outcome(OutcomeStatus::Failed))
        .then_nothing();
}

#[test]
fn an_overlong_provider_error_is_refused() {
    given([queued()])
        .acting_as_system()
        .when(RecordDeliveryOutcome {
            error: Some("e".repeat(2001)),
            ..outcome(OutcomeStatus::Failed)
        })
        .then_code("validation");
}

#[test]
fn evolve_tracks_the_status_and_the_plan() {
    let state = [queued(), sent(), delivered()]
        .iter()
        .fold(DeliveryState::default(), evolve);
    assert_eq!(state.status(), Some(DeliveryStatus::Delivered));
    assert_eq!(state.plan().map(|p| p.recipient_id), Some(GUARDIAN));
    assert_eq!(state.message_id(), Some(MESSAGE));
    assert_eq!(state.conversation_id(), Some(CONVERSATION));
    let _ = PersonId::new(Uuid::nil());
}

fn attempt_failed(attempt: u32) -> Event {
    DeliveryAttemptFailed {
        delivery_id: id(),
        attempt,
        error: "429 from the provider".to_owned(),
        unanswered: false,
        at: now(),
    }
    .into()
}

fn attempt_unanswered(attempt: u32) -> Event {
    DeliveryAttemptFailed {
        delivery_id: id(),
        attempt,
        error: "timed out".to_owned(),
        unanswered: true,
        at: now(),
    }
    .into()
}

fn fail_attempt(attempt: u32) -> RecordFailedAttempt {
    RecordFailedAttempt {
        delivery_id: id(),
        attempt,
        error: "429 from the provider".to_owned(),
        unanswered: false,
    }
}

#[test]
fn a_retryable_failure_keeps_the_delivery_queued_for_its_next_attempt() {
    given([queued()])
        .acting_as_system()
        .when(fail_attempt(1))
        .then([attempt_failed(1)]);
    let state = [queued(), attempt_failed(1)]
        .iter()
        .fold(DeliveryState::default(), evolve);
    assert!(state.awaits_sending());
    assert_eq!(state.attempt(), 2);
    assert_eq!(
        state.send_key(),
        2,
        "after a refusal the next attempt has its own key"
    );
}

#[test]
fn attempts_the_provider_left_unanswered_keep_the_first_ones_key() {
    let keys = |history: &[Event]| {
        let state = history.iter().fold(DeliveryState::default(), evolve);
        (state.attempt(), state.send_key())
    };
    assert_eq!(keys(&[queued()]), (1, 1));
    assert_eq!(keys(&[queued(), attempt_unanswered(1)]), (2, 1));
    assert_eq!(
        keys(&[queued(), attempt_unanswered(1), attempt_unanswered(2)]),
        (3, 1),
        "it may have taken the first: the same key until it answers"
    );
    assert_eq!(
        keys(&[queued(), attempt_unanswered(1), attempt_failed(2)]),
        (3, 3),
        "a refusal answers for the key: the next attempt is new"
    );
    assert_eq!(
        keys(&[queued(), attempt_failed(1), attempt_unanswered(2)]),
        (3, 2)
    );
    let mut unanswered = fail_attempt(1);
    unanswered.unanswered = true;
    given([queued()])
        .acting_as_system()
        .when(unanswered)
        .then([attempt_unanswered(1)].map(|e| match e {
            Event::DeliveryAttemptFailed(mut f) => {
                f.error = "429 from the provider".to_owned();
                Event::DeliveryAttemptFailed(f)
            }
            other => other,
        }));
}

#[test]
fn a_delivery_that_keeps_failing_ends_failed_without_blaming_the_address() {
    let history: Vec<Event> = std::iter::once(queued())
        .chain((1..MAX_DELIVERY_ATTEMPTS).map(attempt_failed))
        .collect();
    let events = given(history)
        .acting_as_system()
        .when(fail_attempt(MAX_DELIVERY_ATTEMPTS))
        .events();
    assert_eq!(events[0], attempt_failed(MAX_DELIVERY_ATTEMPTS));
    match &events[1] {
        Event::DeliveryFailed(f) => {
            assert!(
                !f.permanent,
                "the attempts ran out; no provider refused the address"
            );
            assert!(
                f.error
                    .as_deref()
                    .is_some_and(|e| e.contains("gave up after 5 attempts")),
                "{f:?}"
            );
        }
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

#[test]
fn a_report_for_another_attempt_or_a_finished_delivery_changes_nothing() {
    given([queued(), attempt_failed(1)])
        .acting_as_system()
        .when(fail_attempt(1))
        .then_nothing();
    given([queued(), delivered()])
        .acting_as_system()
        .when(fail_attempt(1))
        .then_nothing();
    given([])
        .acting_as_system()
        .when(fail_attempt(1))
        .then_err(DeliveryError::UnknownDelivery { delivery_id: id() });
}

#[test]
fn the_worker_reports_what_it_handed_over_with_the_sent_outcome() {
    let mut report = outcome(OutcomeStatus::Sent);
    report.sender = Some("+15550009999".to_owned());
    report.sent_text = Some("For Dennis: Hola".to_owned());
    let events = given([queued()]).acting_as_system().when(report).events();
    match &events[..] {
        [Event::DeliverySent(e)] => {
            assert_eq!(e.sender.as_deref(), Some("+15550009999"));
            assert_eq!(e.sent_text.as_deref(), Some("For Dennis: Hola"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_fallback_delivery_remembers_the_one_it_replaces() {
    let mut command = queue();
    command.fallback_of = Some(DeliveryId::new(Uuid::from_u128(0xfa11)));
    let events = given([]).acting_as_system().when(command).events();
    let state = events.iter().fold(DeliveryState::default(), evolve);
    assert_eq!(
        state.fallback_of(),
        Some(DeliveryId::new(Uuid::from_u128(0xfa11)))
    );
}

#[test]
fn a_channel_that_delivers_on_hand_over_records_what_it_sent_then_that_it_arrived() {
    let mut report = outcome(OutcomeStatus::Delivered);
    report.sender = Some("app".to_owned());
    report.sent_text = Some("Hola".to_owned());
    let events = given([queued()]).acting_as_system().when(report).events();
    assert!(
        matches!(&events[..], [Event::DeliverySent(s), Event::DeliveryDelivered(_)] if s.sent_text.as_deref() == Some("Hola")),
        "{events:?}"
    );
}

#[test]
fn the_hand_over_is_recorded_even_when_the_providers_callback_came_first() {
    let mut report = outcome(OutcomeStatus::Sent);
    report.sender = Some("+15550001000".to_owned());
    report.sent_text = Some("Hola".to_owned());
    let events = given([queued(), delivered()])
        .acting_as_system()
        .when(report.clone())
        .events();
    assert!(
        matches!(&events[..], [Event::DeliverySent(s)] if s.sender.as_deref() == Some("+15550001000")),
        "{events:?}"
    );
    let state = [queued(), delivered()]
        .iter()
        .chain(&events)
        .fold(DeliveryState::default(), evolve);
    assert_eq!(
        state.status(),
        Some(DeliveryStatus::Delivered),
        "the outcome stands"
    );
    let history: Vec<Event> = [queued(), delivered()].into_iter().chain(events).collect();
    given(history)
        .acting_as_system()
        .when(report)
        .then_nothing();
}

#[test]
fn the_hand_over_is_recorded_after_the_providers_sent_callback() {
    let mut report = outcome(OutcomeStatus::Sent);
    report.sender = Some("+15550001000".to_owned());
    report.sent_text = Some("Hola".to_owned());
    // `sent()` is the callback's: no sender, no text.
    let events = given([queued(), sent()])
        .acting_as_system()
        .when(report.clone())
        .events();
    assert!(
        matches!(&events[..], [Event::DeliverySent(s)] if s.sender.as_deref() == Some("+15550001000") && s.sent_text.as_deref() == Some("Hola")),
        "{events:?}"
    );
    let history: Vec<Event> = [queued(), sent()].into_iter().chain(events).collect();
    let state = history.iter().fold(DeliveryState::default(), evolve);
    assert_eq!(state.status(), Some(DeliveryStatus::Sent));
    given(history)
        .acting_as_system()
        .when(report)
        .then_nothing();
}

#[test]
fn a_report_about_another_provider_message_changes_nothing() {
    let mut stray = outcome(OutcomeStatus::Delivered);
    stray.provider_message_id = Some("SM9".to_owned());
    given([queued(), sent()])
        .acting_as_system()
        .when(stray)
        .then_nothing();
    given([queued(), sent()])
        .acting_as_system()
        .when(outcome(OutcomeStatus::Delivered))
        .then([delivered()]);
}

#[test]
fn a_text_reported_sent_by_the_provider_alone_is_asked_for_again_then_recorded() {
    // The worker's request timed out, and Twilio's callback said `sent` before the retry.
    let history = [queued(), attempt_unanswered(1), sent()];
    let state = history.iter().fold(DeliveryState::default(), evolve);
    assert!(state.lacks_hand_over_report());
    assert!(!state.awaits_sending(), "no new attempt: it was sent");
    assert_eq!(state.send_key(), 1, "asked again under the unanswered key");
    let mut report = outcome(OutcomeStatus::Delivered);
    report.sender = Some("+15550001000".to_owned());
    report.sent_text = Some("Hola".to_owned());
    let events = given(history.clone())
        .acting_as_system()
        .when(report)
        .events();
    assert!(
        matches!(&events[..], [Event::DeliverySent(s), Event::DeliveryDelivered(_)] if s.sender.as_deref() == Some("+15550001000")),
        "{events:?}"
    );
    let state = history
        .iter()
        .chain(&events)
        .fold(DeliveryState::default(), evolve);
    assert!(!state.lacks_hand_over_report());
    assert_eq!(state.status(), Some(DeliveryStatus::Delivered));
    // The callback before any failed attempt (the request still out, or timed out
    // after the callback: that failure is not recorded, the status having moved on):
    // asked again under the first attempt's key.
    let early = [queued(), sent()]
        .iter()
        .fold(DeliveryState::default(), evolve);
    assert!(early.lacks_hand_over_report());
    assert_eq!(early.send_key(), 1);
    given([queued(), sent()])
        .acting_as_system()
        .when(RecordFailedAttempt {
            delivery_id: id(),
            attempt: 1,
            error: "timed out".to_owned(),
            unanswered: true,
        })
        .then_nothing();
}
