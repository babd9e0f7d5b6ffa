//! `SmtpEmail` against `FakeSmtp`: what arrives, and what each reply becomes.

use std::time::Duration;

use homeroom_channels::{AttemptKey, ChannelError, EmailSender, Handover, OutboundEmail};
use homeroom_domain::DeliveryId;
use homeroom_email_smtp::fake::FakeSmtp;
use homeroom_email_smtp::{SmtpConfig, SmtpEmail};
use uuid::Uuid;

const FROM: &str = "office@hillside.example";
const TO: &str = "pat.parent@families.example";

fn email(attempt: u32, delivery: Uuid, to: &str) -> OutboundEmail {
    OutboundEmail {
        key: AttemptKey {
            delivery_id: DeliveryId::new(delivery),
            attempt,
        },
        from_name: "Señora Núñez — Hillside".to_owned(),
        to: to.to_owned(),
        subject: "Excursión del viernes ☀".to_owned(),
        body: "Hola Pat 👋\nDennis necesita el permiso firmado.\n.Gracias\n".to_owned(),
    }
}

fn sender(url: String) -> SmtpEmail {
    SmtpEmail::new(&SmtpConfig::new(url, FROM).with_timeout(Duration::from_secs(10)))
        .expect("a sender")
}

fn accepted_id(handover: Handover) -> String {
    match handover {
        Handover::Accepted {
            provider_message_id,
        } => provider_message_id,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

#[tokio::test]
async fn an_email_arrives_with_its_headers_and_utf8_body() {
    let smtp = FakeSmtp::start().await.unwrap();
    let outbound = email(1, Uuid::new_v4(), TO);

    let id = accepted_id(sender(smtp.url()).send_email(&outbound).await.unwrap());

    let received = smtp
        .wait_for_messages(1, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(received.len(), 1);
    let message = &received[0];
    assert_eq!(message.mail_from, FROM);
    assert_eq!(message.rcpt_to, vec![TO.to_owned()]);
    assert_eq!(
        message.from(),
        Some((Some("Señora Núñez — Hillside".to_owned()), FROM.to_owned()))
    );
    assert_eq!(message.header("To"), Some(TO));
    assert_eq!(message.header("Subject"), Some("Excursión del viernes ☀"));
    let expected_id = format!("<{}@hillside.example>", outbound.key.as_header_value());
    assert_eq!(message.header("Message-ID"), Some(expected_id.as_str()));
    assert_eq!(id, expected_id, "the provider message id is the Message-ID");
    assert!(message.header("Date").is_some());
    assert_eq!(
        (message.mimetype.as_str(), message.charset.as_str()),
        ("text/plain", "utf-8")
    );
    // Line ends travel as CRLF, and lettre ends the data with one more; a line that
    // starts with a dot survives dot-stuffing.
    assert_eq!(
        message.body.replace("\r\n", "\n").trim_end(),
        "Hola Pat 👋\nDennis necesita el permiso firmado.\n.Gracias"
    );
}

#[tokio::test]
async fn a_retried_attempt_carries_the_same_message_id_and_a_new_attempt_another() {
    let smtp = FakeSmtp::start().await.unwrap();
    let sender = sender(smtp.url());
    let delivery = Uuid::new_v4();

    let first = accepted_id(sender.send_email(&email(1, delivery, TO)).await.unwrap());
    let retried = accepted_id(sender.send_email(&email(1, delivery, TO)).await.unwrap());
    let next = accepted_id(sender.send_email(&email(2, delivery, TO)).await.unwrap());

    assert_eq!(first, retried);
    assert_ne!(first, next);
    let ids: Vec<String> = smtp
        .wait_for_messages(3, Duration::from_secs(10))
        .await
        .unwrap()
        .iter()
        .map(|m| m.header("Message-ID").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, vec![first.clone(), first, next]);
}

#[tokio::test]
async fn a_rejected_recipient_is_a_permanent_refusal() {
    let smtp = FakeSmtp::start().await.unwrap();
    smtp.reject(TO, 550);

    let refused = sender(smtp.url())
        .send_email(&email(1, Uuid::new_v4(), TO))
        .await;

    match refused {
        Err(ChannelError::Refused {
            code,
            permanent,
            message,
        }) => {
            assert_eq!(code, "550");
            assert!(permanent);
            assert!(
                message.contains("User unknown"),
                "the server's text is kept: {message}"
            );
        }
        other => panic!("expected a permanent refusal, got {other:?}"),
    }
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn a_451_is_a_refusal_worth_retrying() {
    let smtp = FakeSmtp::start().await.unwrap();
    smtp.reject(TO, 451);
    let sender = sender(smtp.url());
    let outbound = email(1, Uuid::new_v4(), TO);

    let refused = sender.send_email(&outbound).await;

    match refused {
        Err(error @ ChannelError::Refused { .. }) => {
            assert!(!error.is_permanent());
            assert!(matches!(error, ChannelError::Refused { ref code, .. } if code == "451"));
        }
        other => panic!("expected a transient refusal, got {other:?}"),
    }
    assert!(smtp.messages().is_empty());

    smtp.accept(TO);
    accepted_id(sender.send_email(&outbound).await.unwrap());
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test]
async fn a_server_that_is_down_is_unavailable() {
    let port = {
        let probe = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        probe.local_addr().unwrap().port()
    };

    let result = sender(format!("smtp://127.0.0.1:{port}"))
        .send_email(&email(1, Uuid::new_v4(), TO))
        .await;

    assert!(
        matches!(result, Err(ChannelError::Unavailable(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_recipient_that_is_no_address_is_refused_before_any_connection() {
    let smtp = FakeSmtp::start().await.unwrap();

    let refused = sender(smtp.url())
        .send_email(&email(1, Uuid::new_v4(), "pat at families"))
        .await;

    match refused {
        Err(ChannelError::Refused {
            code, permanent, ..
        }) => assert_eq!((code.as_str(), permanent), ("invalid_address", true)),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn waiting_for_messages_that_never_come_times_out() {
    let smtp = FakeSmtp::start().await.unwrap();
    assert!(smtp
        .wait_for_messages(1, Duration::from_millis(100))
        .await
        .is_err());
}
