use super::*;
use crate::ids::ConversationId;
use crate::testing::*;

fn sid() -> ProviderMessageId {
    ProviderMessageId::parse("SM0123456789abcdef").unwrap()
}

fn receive() -> ReceiveSms {
    ReceiveSms {
        message_sid: sid(),
        from: "+15550100001".into(),
        to: "+15550001000".into(),
        body: "Thank you!".into(),
    }
}

fn received() -> Event {
    InboundSmsReceived {
        message_sid: sid(),
        from: "+15550100001".into(),
        to: "+15550001000".into(),
        body: "Thank you!".into(),
        at: now(),
    }
    .into()
}

fn route(to: InboundRoute) -> RouteInboundSms {
    RouteInboundSms {
        message_sid: sid(),
        route: to,
    }
}

#[test]
fn an_inbound_sms_is_recorded_exactly_as_received() {
    given([])
        .acting_as_system()
        .when(receive())
        .then([received()]);
}

#[test]
fn a_webhook_retried_by_the_provider_records_the_sms_once() {
    given([received()])
        .acting_as_system()
        .when(receive())
        .then_nothing();
}

#[test]
fn only_homeroom_services_record_inbound_sms() {
    given([])
        .acting_as(ADMIN)
        .when(receive())
        .then_err(InboundError::NotPermitted);
}

#[test]
fn an_sms_is_routed_once_and_the_first_route_stands() {
    let to_conversation = InboundRoute::Conversation {
        conversation_id: ConversationId::new(uuid::Uuid::from_u128(9)),
        message_id: crate::inbound_message_id(&sid()),
    };
    let routed: Event = InboundSmsRouted {
        message_sid: sid(),
        route: to_conversation.clone(),
        at: now(),
    }
    .into();
    given([received()])
        .acting_as_system()
        .when(route(to_conversation))
        .then([routed.clone()]);
    given([received(), routed])
        .acting_as_system()
        .when(route(InboundRoute::Unroutable {
            reason: UnroutableReason::NoConversation,
        }))
        .then_nothing();
}

#[test]
fn an_sms_never_recorded_cannot_be_routed() {
    given([])
        .acting_as_system()
        .when(route(InboundRoute::Keyword {
            keyword: InboundKeyword::Stop,
        }))
        .then_err(InboundError::NotReceived { message_sid: sid() });
}

#[test]
fn routes_are_stored_with_readable_tags() {
    let json = serde_json::to_value(InboundRoute::Unroutable {
        reason: UnroutableReason::UnknownNumber,
    })
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!({"to": "unroutable", "reason": "unknown_number"})
    );
}
