use super::*;
use crate::ids::{ConversationId, DeliveryId, PhoneNumber, ProviderMessageId};
use crate::testing::*;

fn ours() -> PhoneNumber {
    PhoneNumber::parse("+15550001000").unwrap()
}

fn theirs() -> PhoneNumber {
    PhoneNumber::parse("+15550100001").unwrap()
}

fn sent(delivery: u128) -> RecordSmsSent {
    RecordSmsSent {
        our_number: ours(),
        their_number: theirs(),
        conversation_id: ConversationId::new(uuid::Uuid::from_u128(delivery + 100)),
        recipient_id: GUARDIAN,
        delivery_id: DeliveryId::new(uuid::Uuid::from_u128(delivery)),
    }
}

fn used(delivery: u128) -> Event {
    SmsLineUsed {
        our_number: ours(),
        their_number: theirs(),
        conversation_id: ConversationId::new(uuid::Uuid::from_u128(delivery + 100)),
        recipient_id: GUARDIAN,
        delivery_id: DeliveryId::new(uuid::Uuid::from_u128(delivery)),
        at: now(),
    }
    .into()
}

fn stop(opted_out: bool) -> SetSmsOptOut {
    SetSmsOptOut {
        our_number: ours(),
        their_number: theirs(),
        opted_out,
        message_sid: ProviderMessageId::parse("SM1").unwrap(),
    }
}

fn opted_out() -> Event {
    SmsOptedOut {
        our_number: ours(),
        their_number: theirs(),
        message_sid: ProviderMessageId::parse("SM1").unwrap(),
        at: now(),
    }
    .into()
}

#[test]
fn an_sms_sent_over_a_line_points_its_replies_at_that_conversation() {
    given([]).acting_as_system().when(sent(1)).then([used(1)]);
    let state = [used(1), used(2)]
        .iter()
        .fold(SmsLineState::default(), evolve);
    assert_eq!(
        state.last_sent().map(|l| l.conversation_id),
        Some(ConversationId::new(uuid::Uuid::from_u128(102))),
        "the most recent conversation on the line gets the reply"
    );
}

#[test]
fn recording_the_same_delivery_twice_changes_nothing() {
    given([used(1)])
        .acting_as_system()
        .when(sent(1))
        .then_nothing();
}

#[test]
fn stop_opts_the_number_out_until_start() {
    given([])
        .acting_as_system()
        .when(stop(true))
        .then([opted_out()]);
    given([opted_out()])
        .acting_as_system()
        .when(stop(true))
        .then_nothing();
    let events = given([opted_out()])
        .acting_as_system()
        .when(stop(false))
        .events();
    assert!(matches!(events.as_slice(), [Event::SmsOptedIn(_)]));
    let state = [opted_out()].iter().fold(SmsLineState::default(), evolve);
    assert!(state.is_opted_out());
    let state = events.iter().fold(state, evolve);
    assert!(!state.is_opted_out());
}

#[test]
fn start_on_an_open_line_is_recorded_so_a_failing_phone_is_trusted_again() {
    let events = given([used(1)])
        .acting_as_system()
        .when(stop(false))
        .events();
    assert!(matches!(events.as_slice(), [Event::SmsOptedIn(_)]));
}

#[test]
fn only_homeroom_services_act_on_sms_lines() {
    given([])
        .acting_as(ADMIN)
        .when(stop(true))
        .then_err(SmsLineError::NotPermitted);
}
