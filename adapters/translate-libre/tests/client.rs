//! `LibreTranslate` against `FakeLibreTranslate`: what reaches the service and what the
//! port answers.

use std::time::Duration;

use homeroom_channels::{TranslateError, Translation, Translator};
use homeroom_translate_libre::fake::FakeLibreTranslate;
use homeroom_translate_libre::{LibreTranslate, LibreTranslateConfig, LibreTranslateError};

fn client(config: LibreTranslateConfig) -> LibreTranslate {
    LibreTranslate::new(config).expect("a client")
}

/// The `LibreTranslateError` inside an `Unavailable`.
fn unavailable(result: Result<Translation, TranslateError>) -> LibreTranslateError {
    match result {
        Err(TranslateError::Unavailable(source)) => {
            match source.downcast::<LibreTranslateError>() {
                Ok(error) => *error,
                Err(other) => panic!("expected a LibreTranslateError, got {other:?}"),
            }
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn original(text: &str, language: &str) -> Translation {
    Translation {
        text: text.to_owned(),
        language: language.to_owned(),
        machine_translated: false,
    }
}

#[tokio::test]
async fn a_taught_text_is_machine_translated_into_the_tag_as_asked() {
    let fake = FakeLibreTranslate::start().await.unwrap();
    fake.learn("en", "es", "Field trip", "Excursión");
    let translator = client(fake.config());

    let translated = translator
        .translate("Field trip", "en-US", "es-MX")
        .await
        .unwrap();

    assert_eq!(
        translated,
        Translation {
            text: "Excursión".to_owned(),
            language: "es-MX".to_owned(),
            machine_translated: true,
        }
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.q.as_deref(), Some("Field trip"));
    assert_eq!(request.source.as_deref(), Some("en"));
    assert_eq!(request.target.as_deref(), Some("es"));
    assert_eq!(request.format.as_deref(), Some("text"));
    assert_eq!(request.api_key, None, "no key configured, none sent");
    assert!(
        request
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json")),
        "{request:?}"
    );
    assert_eq!(request.answered, 200);
}

#[tokio::test]
async fn traditional_chinese_is_asked_for_as_zt() {
    let fake = FakeLibreTranslate::start().await.unwrap();
    fake.learn("en", "zt", "No school Friday", "週五停課");
    let translator = client(fake.config());

    let translated = translator
        .translate("No school Friday", "en", "zh-Hant")
        .await
        .unwrap();

    assert_eq!(translated.text, "週五停課");
    assert_eq!(translated.language, "zh-Hant");
    assert!(translated.machine_translated);
    assert_eq!(fake.requests()[0].target.as_deref(), Some("zt"));
}

#[tokio::test]
async fn an_untaught_text_of_a_taught_pair_comes_back_unchanged_from_the_fake() {
    let fake = FakeLibreTranslate::start().await.unwrap();
    fake.learn("en", "es", "Field trip", "Excursión");
    let translator = client(fake.config());

    let translated = translator
        .translate("Ms. Okafor", "en", "es")
        .await
        .unwrap();

    assert_eq!(translated.text, "Ms. Okafor");
    assert!(translated.machine_translated, "the service did answer it");
}

#[tokio::test]
async fn a_same_language_pair_never_calls_the_service() {
    let fake = FakeLibreTranslate::start().await.unwrap();
    fake.learn("en", "en", "Field trip", "never this");
    fake.learn("zt", "zt", "週五停課", "never this");
    let translator = client(fake.config());

    for (text, from, to) in [
        ("Field trip", "en", "en"),
        ("Field trip", "en-US", "EN-gb"),
        ("週五停課", "zh-TW", "zh-Hant"),
    ] {
        let answer = translator.translate(text, from, to).await.unwrap();
        assert_eq!(answer, original(text, from), "{from} → {to}");
    }
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
}

#[tokio::test]
async fn an_empty_text_is_not_sent() {
    let fake = FakeLibreTranslate::start().await.unwrap();
    fake.learn("en", "es", "", "");
    let translator = client(fake.config());

    let answer = translator.translate("  ", "en", "es").await.unwrap();

    assert_eq!(answer, original("  ", "en"));
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn an_unsupported_pair_gives_the_original_untranslated() {
    let fake = FakeLibreTranslate::start().await.unwrap();
    fake.learn("en", "es", "Field trip", "Excursión");
    let translator = client(fake.config());

    let answer = translator
        .translate("Field trip", "en-US", "so")
        .await
        .unwrap();

    assert_eq!(answer, original("Field trip", "en-US"));
    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "the service was asked");
    assert_eq!(requests[0].answered, 400);
}

#[tokio::test]
async fn the_configured_api_key_is_sent() {
    let fake = FakeLibreTranslate::start().await.unwrap();
    fake.expect_api_key("school-key");
    fake.learn("en", "es", "Field trip", "Excursión");
    let translator = client(LibreTranslateConfig::new(fake.base_url()).with_api_key("school-key"));

    let translated = translator
        .translate("Field trip", "en", "es")
        .await
        .unwrap();

    assert_eq!(translated.text, "Excursión");
    assert_eq!(fake.requests()[0].api_key.as_deref(), Some("school-key"));
}

#[tokio::test]
async fn a_wrong_or_missing_api_key_is_unavailable_and_never_echoed() {
    let fake = FakeLibreTranslate::start().await.unwrap();
    fake.expect_api_key("school-key");
    fake.learn("en", "es", "Field trip", "Excursión");
    let wrong = client(LibreTranslateConfig::new(fake.base_url()).with_api_key("wrong-key"));
    let missing = client(LibreTranslateConfig::new(fake.base_url()));

    for translator in [wrong, missing] {
        let error = unavailable(translator.translate("Field trip", "en", "es").await);
        match &error {
            LibreTranslateError::Status { status, message } => {
                assert_eq!(*status, 403);
                assert_eq!(message, "Invalid API key");
            }
            other => panic!("expected a 403, got {other:?}"),
        }
        assert!(!error.to_string().contains("wrong-key"), "{error}");
    }
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].api_key.as_deref(), Some("wrong-key"));
    assert_eq!(requests[1].api_key, None);
}

#[tokio::test]
async fn a_server_error_is_unavailable_and_the_same_text_translates_once_it_recovers() {
    let fake = FakeLibreTranslate::start().await.unwrap();
    fake.learn("en", "es", "Field trip", "Excursión");
    fake.fail_next(1);
    let translator = client(fake.config());

    match unavailable(translator.translate("Field trip", "en", "es").await) {
        LibreTranslateError::Status { status, message } => {
            assert_eq!(status, 500);
            assert!(message.contains("Cannot translate"), "{message}");
        }
        other => panic!("expected a 500, got {other:?}"),
    }

    let translated = translator
        .translate("Field trip", "en", "es")
        .await
        .unwrap();
    assert_eq!(translated.text, "Excursión");
    let answered: Vec<u16> = fake.requests().iter().map(|r| r.answered).collect();
    assert_eq!(answered, [500, 200]);
}

#[tokio::test]
async fn an_unreachable_service_is_unavailable() {
    let port = {
        let probe = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        probe.local_addr().unwrap().port()
    };
    let translator = client(LibreTranslateConfig::new(format!(
        "http://127.0.0.1:{port}"
    )));

    match unavailable(translator.translate("Field trip", "en", "es").await) {
        LibreTranslateError::Http(e) => assert!(e.is_connect(), "{e:?}"),
        other => panic!("expected a connection error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_service_that_never_answers_times_out_as_unavailable() {
    // A listener that is never accepted from: the connection opens, no answer comes.
    let silent = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let base_url = format!("http://{}", silent.local_addr().unwrap());
    let translator =
        client(LibreTranslateConfig::new(base_url).with_timeout(Duration::from_millis(300)));

    match unavailable(translator.translate("Field trip", "en", "es").await) {
        LibreTranslateError::Http(e) => assert!(e.is_timeout(), "{e:?}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    drop(silent);
}
