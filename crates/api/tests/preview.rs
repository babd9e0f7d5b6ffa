//! `POST /v1/preview` through the router: the render per recipient with the binding
//! field names, the refusals sending would answer, the shared-phone label from a phone
//! book, and nothing recorded by any of it.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use homeroom_app::preview::{PhoneBook, PhoneBookLookup, PreviewService};
use homeroom_domain::{DistrictId, PersonId};
use serde_json::{json, Value};
use std::sync::Arc;
use support::{Server, World};

async fn preview(
    server: &Server,
    w: &World,
    as_person: PersonId,
    body: Value,
) -> (StatusCode, Value) {
    let token = server.person(&w.district, as_person);
    server.post(&token, "/v1/preview", &body.to_string()).await
}

#[track_caller]
fn refused(answer: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(
        (answer.0, answer.1["code"].as_str()),
        (status, Some(code)),
        "{}",
        answer.1
    );
}

#[tokio::test]
async fn a_preview_answers_the_render_for_the_recipient_and_records_nothing() {
    let server = Server::start(|_| {}).await;
    let w = World::build(&server, "north").await;
    let head = server.head().await;

    let (status, body) = preview(&server, &w, w.principal, json!({"recipient_id": w.parent, "body": "Hi {recipient_name}, {student_name} did well 👍"})).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"renders": [{
            "recipient_id": w.parent,
            "channel": "sms",
            "text": "Hi Marge Simpson, Dennis did well 👍\n- Principal Skinner",
            "encoding": "UCS-2",
            "segments": 1,
            "units": 56,
            "too_long_for_sms": false,
            "shared_phone_label": false,
            "language": "en"
        }]})
    );
    let (_, email) = preview(
        &server,
        &w,
        w.principal,
        json!({"recipient_id": w.parent, "body": "Hello", "channel": "email"}),
    )
    .await;
    assert_eq!(email["renders"][0]["channel"], "email");
    assert_eq!(
        (
            &email["renders"][0]["encoding"],
            &email["renders"][0]["segments"]
        ),
        (&json!("GSM-7"), &json!(1))
    );
    assert_eq!(server.head().await, head, "a preview records nothing");
}

#[tokio::test]
async fn a_preview_is_refused_as_sending_would_be() {
    let server = Server::start(|_| {}).await;
    let w = World::build(&server, "north").await;
    let south = World::build(&server, "south").await;
    w.system(
        "ChangeDistrictSettings",
        json!({"blocked_patterns": ["###-##-####"]}),
    )
    .await;
    let head = server.head().await;
    let to = |recipient: PersonId, body: &str| json!({"recipient_id": recipient, "body": body});

    let cases = [
        (
            to(w.child, "Hi"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "recipient_too_young",
        ),
        (
            to(w.counselor, "Hi"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "recipient_not_reachable",
        ),
        (
            to(w.parent, "SSN 123-45-6789"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "blocked_content",
        ),
        (
            to(PersonId::new(uuid::Uuid::now_v7()), "Hi"),
            StatusCode::NOT_FOUND,
            "unknown_person",
        ),
        (
            to(south.parent, "Hi"),
            StatusCode::NOT_FOUND,
            "unknown_person",
        ),
        (to(w.parent, "  "), StatusCode::BAD_REQUEST, "validation"),
        (
            to(w.parent, &"a".repeat(5001)),
            StatusCode::BAD_REQUEST,
            "validation",
        ),
        (
            to(w.parent, "Hi {studnet_name}"),
            StatusCode::BAD_REQUEST,
            "validation",
        ),
        (
            json!({"recipient_id": w.parent}),
            StatusCode::BAD_REQUEST,
            "validation",
        ),
        (
            json!({"recipient_id": w.parent, "body": "Hi", "channel": "fax"}),
            StatusCode::BAD_REQUEST,
            "validation",
        ),
    ];
    for (body, status, code) in cases {
        refused(&preview(&server, &w, w.principal, body).await, status, code);
    }
    let system = server.token(&w.district, "sis", true);
    let answer = server
        .post(&system, "/v1/preview", &to(w.parent, "Hi").to_string())
        .await;
    refused(&answer, StatusCode::FORBIDDEN, "not_permitted");
    let answer = server
        .call(
            Request::post("/v1/preview")
                .body(Body::from(to(w.parent, "Hi").to_string()))
                .unwrap(),
        )
        .await;
    refused(&answer, StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(server.head().await, head, "no refusal records anything");
}

/// Everyone registered with the guardian's number: the guardian and the teen.
struct Household(Vec<PersonId>);

impl PhoneBook for Household {
    fn people_with_number<'a>(
        &'a self,
        _district: &'a DistrictId,
        number: &'a str,
    ) -> PhoneBookLookup<'a> {
        let found = if number == "+15550002003" {
            self.0.clone()
        } else {
            Vec::new()
        };
        Box::pin(async move { Ok(found) })
    }
}

#[tokio::test]
async fn an_sms_to_a_shared_phone_is_previewed_with_its_label() {
    let mut server = Server::start(|_| {}).await;
    let w = World::build(&server, "north").await;
    let book = Arc::new(Household(vec![w.parent, w.teen]));
    server.state.preview =
        Arc::new(PreviewService::new(server.state.commands.clone()).with_phone_book(book));

    let (status, body) = preview(
        &server,
        &w,
        w.principal,
        json!({"recipient_id": w.parent, "body": "a".repeat(130)}),
    )
    .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let render = &body["renders"][0];
    assert_eq!(
        render["text"],
        format!("For Marge: {}\n- Principal Skinner", "a".repeat(130))
    );
    assert_eq!(render["shared_phone_label"], true);
    assert_eq!(
        (&render["units"], &render["segments"]),
        (&json!(161), &json!(2)),
        "the label counts"
    );
    // The teen's own number is theirs alone.
    let (_, teen) = preview(
        &server,
        &w,
        w.principal,
        json!({"recipient_id": w.teen, "body": "Hi"}),
    )
    .await;
    assert_eq!(teen["renders"][0]["text"], "Hi\n- Principal Skinner");
}
