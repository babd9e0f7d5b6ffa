//! `TwilioSms` against `FakeTwilio`: what each answer of the Messages API becomes, and
//! that the webhooks the fake posts carry signatures `verify` accepts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Form, Router};
use homeroom_channels::{AttemptKey, ChannelError, Handover, OutboundSms, SmsSender};
use homeroom_domain::{DeliveryId, OutcomeStatus};
use homeroom_sms_twilio::fake::FakeTwilio;
use homeroom_sms_twilio::status::STATUS_WEBHOOK_PATH;
use homeroom_sms_twilio::{
    is_permanent_error, status_of, verify, MessageStatus, StatusCallback, TwilioConfig,
    TwilioError, TwilioSms, IDEMPOTENCY_HEADER, SIGNATURE_HEADER,
};
use uuid::Uuid;

const FROM: &str = "+15550001111";
const TO: &str = "+15550002222";

fn sms(attempt: u32, delivery: Uuid) -> OutboundSms {
    OutboundSms {
        key: AttemptKey {
            delivery_id: DeliveryId::new(delivery),
            attempt,
        },
        from: FROM.to_owned(),
        to: TO.to_owned(),
        body: "For Dennis: No school Friday 🎉".to_owned(),
        status_callback: None,
    }
}

fn client(config: TwilioConfig) -> TwilioSms {
    TwilioSms::new(config).expect("a client")
}

fn sid_of(handover: Handover) -> String {
    match handover {
        Handover::Accepted {
            provider_message_id,
        } => provider_message_id,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

/// The `TwilioError` inside an `Unavailable`.
fn unavailable(result: Result<Handover, ChannelError>) -> Box<dyn std::error::Error + Send + Sync> {
    match result {
        Err(ChannelError::Unavailable(source)) => source,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

// ---- a webhook receiver standing in for Homeroom's API --------------------------------

#[derive(Clone, Debug)]
struct Received {
    signature: Option<String>,
    form: Vec<(String, String)>,
}

impl Received {
    fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
struct Receiver {
    url: String,
    auth_token: String,
    received: Arc<Mutex<Vec<Received>>>,
}

/// Listens on loopback at `path`; answers 204 to a request `verify` accepts, 403 else.
async fn receiver(path: &str, auth_token: &str) -> Receiver {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    let receiver = Receiver {
        url,
        auth_token: auth_token.to_owned(),
        received: Arc::default(),
    };
    let app = Router::new()
        .route(path, post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    receiver
}

async fn receive(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> StatusCode {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let valid = signature
        .as_deref()
        .is_some_and(|s| verify(&receiver.auth_token, &receiver.url, &form, s));
    receiver
        .received
        .lock()
        .unwrap()
        .push(Received { signature, form });
    if valid {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::FORBIDDEN
    }
}

impl Receiver {
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

// ---- sending ----------------------------------------------------------------------------

#[tokio::test]
async fn a_text_twilio_takes_is_accepted_with_its_message_sid() {
    let twilio = FakeTwilio::start().await.unwrap();
    let callback = "http://127.0.0.1:1/v1/webhooks/twilio/status";
    let sender = client(twilio.config().with_status_callback(callback));

    let handover = sender.send_sms(&sms(1, Uuid::new_v4())).await.unwrap();

    let sid = sid_of(handover);
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    let messages = twilio.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.sid, sid);
    assert_eq!((message.to.as_str(), message.from.as_str()), (TO, FROM));
    assert_eq!(message.body, "For Dennis: No school Friday 🎉");
    assert_eq!(message.status_callback.as_deref(), Some(callback));
    assert_eq!(message.status, MessageStatus::Queued);
}

#[tokio::test]
async fn every_request_carries_the_attempt_key_as_twilios_idempotency_token() {
    let twilio = FakeTwilio::start().await.unwrap();
    let sender = client(twilio.config());
    let attempt = sms(3, Uuid::new_v4());

    sender.send_sms(&attempt).await.unwrap();

    let requests = twilio.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].idempotency_token.as_deref(),
        Some(attempt.key.as_header_value().as_str())
    );
    assert_eq!(requests[0].field("StatusCallback"), None, "none configured");
    assert_eq!(IDEMPOTENCY_HEADER, "I-Twilio-Idempotency-Token");
}

#[tokio::test]
async fn a_retried_attempt_is_the_same_message_and_never_a_second_text() {
    let twilio = FakeTwilio::start().await.unwrap();
    let sender = client(twilio.config());
    let attempt = sms(1, Uuid::new_v4());

    let first = sid_of(sender.send_sms(&attempt).await.unwrap());
    let retried = sid_of(sender.send_sms(&attempt).await.unwrap());

    assert_eq!(first, retried);
    assert_eq!(twilio.requests().len(), 2, "both requests reached Twilio");
    assert_eq!(twilio.messages().len(), 1, "but only one text exists");
}

#[tokio::test]
async fn a_new_attempt_is_a_new_message() {
    let twilio = FakeTwilio::start().await.unwrap();
    let sender = client(twilio.config());
    let delivery = Uuid::new_v4();

    let first = sid_of(sender.send_sms(&sms(1, delivery)).await.unwrap());
    let second = sid_of(sender.send_sms(&sms(2, delivery)).await.unwrap());

    assert_ne!(first, second);
    assert_eq!(twilio.messages().len(), 2);
}

#[tokio::test]
async fn a_number_that_can_never_receive_is_a_permanent_refusal() {
    for code in [21211, 21614] {
        let twilio = FakeTwilio::start().await.unwrap();
        twilio.refuse(TO, code);
        let sender = client(twilio.config());

        let refused = sender.send_sms(&sms(1, Uuid::new_v4())).await;

        match refused {
            Err(ChannelError::Refused {
                code: got,
                permanent,
                message,
            }) => {
                assert_eq!(got, code.to_string());
                assert!(permanent, "{code} is permanent");
                assert!(message.contains(TO), "Twilio's message is kept: {message}");
            }
            other => panic!("expected a refusal for {code}, got {other:?}"),
        }
        assert!(twilio.messages().is_empty());
    }
}

#[tokio::test]
async fn an_unsubscribed_recipient_is_an_opt_out_not_a_bad_number() {
    let twilio = FakeTwilio::start().await.unwrap();
    twilio.refuse(TO, 21610);
    let sender = client(twilio.config());

    match sender.send_sms(&sms(1, Uuid::new_v4())).await {
        Err(error @ ChannelError::OptedOut { .. }) => {
            assert!(error.is_permanent(), "never retried");
            assert!(!error.condemns_address(), "the phone stays usable");
            assert!(error.to_string().contains("21610"), "{error}");
        }
        other => panic!("expected an opt-out, got {other:?}"),
    }
    assert!(twilio.messages().is_empty());
}

#[tokio::test]
async fn wrong_credentials_are_a_refusal_worth_retrying_once_fixed() {
    let twilio = FakeTwilio::start().await.unwrap();
    let mut config = twilio.config();
    config.auth_token = "not-the-token".to_owned();
    let sender = client(config);

    let refused = sender.send_sms(&sms(1, Uuid::new_v4())).await;

    match refused {
        Err(ChannelError::Refused {
            code, permanent, ..
        }) => assert_eq!((code.as_str(), permanent), ("20003", false)),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(twilio.messages().is_empty());
}

#[tokio::test]
async fn a_503_is_unavailable_and_the_same_attempt_succeeds_later() {
    let twilio = FakeTwilio::start().await.unwrap();
    twilio.set_unavailable(true);
    let sender = client(twilio.config());
    let attempt = sms(1, Uuid::new_v4());

    let source = unavailable(sender.send_sms(&attempt).await);
    match source.downcast_ref::<TwilioError>() {
        Some(TwilioError::Server { status, code, .. }) => {
            assert_eq!((*status, *code), (503, Some(20503)));
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    assert!(twilio.messages().is_empty());

    twilio.set_unavailable(false);
    sid_of(sender.send_sms(&attempt).await.unwrap());
    assert_eq!(twilio.messages().len(), 1);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_as_unavailable() {
    // A listener that is never accepted from: the connection opens, no answer comes.
    let silent = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let base_url = format!("http://{}", silent.local_addr().unwrap());
    let sender = client(
        TwilioConfig::new("AC1", "token")
            .with_base_url(base_url)
            .with_timeout(Duration::from_millis(300)),
    );

    let source = unavailable(sender.send_sms(&sms(1, Uuid::new_v4())).await);

    match source.downcast_ref::<TwilioError>() {
        Some(TwilioError::Http(e)) => assert!(e.is_timeout(), "{e:?}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    drop(silent);
}

#[tokio::test]
async fn a_server_that_is_down_is_unavailable() {
    let port = {
        let probe = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        probe.local_addr().unwrap().port()
    };
    let sender =
        client(TwilioConfig::new("AC1", "token").with_base_url(format!("http://127.0.0.1:{port}")));

    let source = unavailable(sender.send_sms(&sms(1, Uuid::new_v4())).await);

    match source.downcast_ref::<TwilioError>() {
        Some(TwilioError::Http(e)) => assert!(e.is_connect(), "{e:?}"),
        other => panic!("expected a connection error, got {other:?}"),
    }
}

// ---- webhooks ---------------------------------------------------------------------------

#[tokio::test]
async fn a_delivered_callback_is_signed_over_the_callback_url() {
    let twilio = FakeTwilio::start().await.unwrap();
    let homeroom = receiver(STATUS_WEBHOOK_PATH, twilio.auth_token()).await;
    let sender = client(twilio.config().with_status_callback(&homeroom.url));
    let sid = sid_of(sender.send_sms(&sms(1, Uuid::new_v4())).await.unwrap());

    let answer = twilio.deliver(&sid).await.unwrap();

    assert_eq!(answer.status, 204, "the receiver verified the signature");
    let received = homeroom.received();
    assert_eq!(received.len(), 1);
    let callback = &received[0];
    assert_eq!(callback.field("MessageSid"), Some(sid.as_str()));
    assert_eq!(callback.field("AccountSid"), Some(twilio.account_sid()));
    assert_eq!(
        (callback.field("From"), callback.field("To")),
        (Some(FROM), Some(TO))
    );
    let status = MessageStatus::parse(callback.field("MessageStatus").unwrap()).unwrap();
    assert_eq!(status_of(status), Some(OutcomeStatus::Delivered));
    assert_eq!(callback.field("ErrorCode"), None);
    let header = callback.signature.as_deref().unwrap();
    assert!(!verify(
        "another-token",
        &homeroom.url,
        &callback.form,
        header
    ));
    assert_eq!(
        twilio.message(&sid).unwrap().status,
        MessageStatus::Delivered
    );
}

#[tokio::test]
async fn a_failed_callback_carries_twilios_error_code() {
    let twilio = FakeTwilio::start().await.unwrap();
    let homeroom = receiver(STATUS_WEBHOOK_PATH, twilio.auth_token()).await;
    let sender = client(twilio.config().with_status_callback(&homeroom.url));
    let sid = sid_of(sender.send_sms(&sms(1, Uuid::new_v4())).await.unwrap());

    let answer = twilio.fail(&sid, 30005).await.unwrap();

    assert_eq!(answer.status, 204);
    let callback = &homeroom.received()[0];
    let status = MessageStatus::parse(callback.field("MessageStatus").unwrap()).unwrap();
    assert_eq!(status_of(status), Some(OutcomeStatus::Failed));
    let code: u32 = callback.field("ErrorCode").unwrap().parse().unwrap();
    assert!(is_permanent_error(code));
    let read = StatusCallback::from_form(&callback.form).unwrap();
    assert_eq!(read.message_sid, sid);
    assert_eq!(
        (read.outcome(), read.error_code),
        (Some(OutcomeStatus::Failed), Some(30005))
    );
    assert!(read.permanent());
}

#[tokio::test]
async fn a_status_for_a_message_without_a_callback_url_is_an_error() {
    let twilio = FakeTwilio::start().await.unwrap();
    let sender = client(twilio.config());
    let sid = sid_of(sender.send_sms(&sms(1, Uuid::new_v4())).await.unwrap());

    assert!(twilio.deliver(&sid).await.is_err());
    assert!(twilio.deliver("SMnope").await.is_err());
}

#[tokio::test]
async fn an_inbound_text_is_posted_signed_with_twilios_fields() {
    let twilio = FakeTwilio::start().await.unwrap();
    let homeroom = receiver("/v1/webhooks/twilio/inbound", twilio.auth_token()).await;

    let answer = twilio
        .send_inbound(&homeroom.url, TO, FROM, "Stop")
        .await
        .unwrap();

    assert_eq!(answer.status, 204, "the receiver verified the signature");
    let inbound = &homeroom.received()[0];
    assert_eq!(inbound.field("From"), Some(TO));
    assert_eq!(inbound.field("To"), Some(FROM));
    assert_eq!(inbound.field("Body"), Some("Stop"));
    assert_eq!(
        inbound.field("MessageSid"),
        Some(answer.message_sid.as_str())
    );
    assert!(answer.message_sid.starts_with("SM"));
    for name in [
        "AccountSid",
        "SmsSid",
        "NumMedia",
        "NumSegments",
        "SmsStatus",
        "ApiVersion",
    ] {
        assert!(inbound.field(name).is_some(), "{name} is sent");
    }
}

#[tokio::test]
async fn a_webhook_signed_with_another_token_is_refused_by_the_receiver() {
    let twilio = FakeTwilio::start().await.unwrap();
    let homeroom = receiver("/v1/webhooks/twilio/inbound", "the-real-token").await;

    let answer = twilio
        .send_inbound(&homeroom.url, TO, FROM, "hello")
        .await
        .unwrap();

    assert_eq!(answer.status, 403);
}

#[tokio::test]
async fn waiting_for_messages_answers_once_they_arrive_and_times_out_otherwise() {
    let twilio = FakeTwilio::start().await.unwrap();
    let sender = client(twilio.config());
    let attempt = sms(1, Uuid::new_v4());
    let send = tokio::spawn(async move { sender.send_sms(&attempt).await });

    let arrived = twilio
        .wait_for_messages(1, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(arrived.len(), 1);
    send.await.unwrap().unwrap();

    assert!(twilio
        .wait_for_messages(2, Duration::from_millis(100))
        .await
        .is_err());
}
