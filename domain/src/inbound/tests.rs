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
        media_urls: vec![],
    }
}

fn received() -> Event {
    InboundSmsReceived {
        message_sid: sid(),
        from: "+15550100001".into(),
        to: "+15550001000".into(),
        body: "Thank you!".into(),
        media_urls: vec![],
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

#[test]
fn pictures_sent_with_a_text_are_recorded_with_it() {
    let url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1";
    let mut with_picture = receive();
    with_picture.body = String::new();
    with_picture.media_urls = vec![url.to_owned()];
    let events = given([]).acting_as_system().when(with_picture).events();
    let [Event::InboundSmsReceived(received)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(received.media_urls, vec![url.to_owned()]);
    assert_eq!(received.body, "");
}

#[test]
fn too_many_or_too_long_media_urls_are_refused() {
    let mut many = receive();
    many.media_urls = vec!["https://example.org/m".to_owned(); MAX_INBOUND_MEDIA + 1];
    given([])
        .acting_as_system()
        .when(many)
        .then_code("validation");
    let mut long = receive();
    long.media_urls = vec![format!(
        "https://example.org/{}",
        "m".repeat(MAX_MEDIA_URL_CHARS)
    )];
    given([])
        .acting_as_system()
        .when(long)
        .then_code("validation");
}

#[test]
fn a_reply_shows_its_words_then_one_line_per_attachment() {
    let urls = vec!["https://m/1".to_owned(), "https://m/2".to_owned()];
    assert_eq!(reply_text("Thanks", &[]), "Thanks");
    assert_eq!(
        reply_text("Here it is", &urls),
        "Here it is\nAttachment: https://m/1\nAttachment: https://m/2"
    );
    assert_eq!(reply_text("", &urls[..1]), "Attachment: https://m/1");
}
