//! `GET /v1/stream` over a real socket on an in-process server: what a client reading
//! the stream is told, what it is not, resuming with `Last-Event-ID`, keep-alives, and
//! the graceful shutdown with streams open.

mod support;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use support::{Server, SseClient, World};

/// Connects `person`'s stream and reads its `ready` event.
async fn connect(
    server: &Server,
    w: &World,
    person: homeroom_domain::PersonId,
    last: Option<&str>,
) -> (SseClient, String) {
    let mut client =
        SseClient::connect(server.addr, &server.person(&w.district, person), last).await;
    assert_eq!(client.status, 200);
    let ready = client.next_event().await;
    assert_eq!(ready.event, "ready", "{ready:?}");
    let id = ready.id.clone().expect("ready has an id");
    (client, id)
}

fn token(position: &homeroom_eventstore::Position) -> String {
    position.to_string()
}

#[tokio::test]
async fn a_client_sees_a_message_posted_after_it_connected_and_its_delivery_changing_status() {
    let server = Server::start(|_| {}).await;
    let w = World::build(&server, "north").await;
    let (mut principal, ready) = connect(&server, &w, w.principal, None).await;
    assert_eq!(principal.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        ready,
        token(&server.head().await),
        "live from the head at connect time"
    );
    let (mut parent, _) = connect(&server, &w, w.parent, None).await;

    let sent = w.send(w.principal, w.parent, "Field trip on Friday").await;
    w.queue(&sent).await;
    let delivery = sent.delivery_ids[0];
    let at_sent = w.outcome(delivery, "sent").await;
    let at_delivered = w.outcome(delivery, "delivered").await;

    for client in [&mut parent, &mut principal] {
        let message = client.next_event().await;
        assert_eq!(message.event, "message");
        assert_eq!(
            message.id,
            Some(token(&sent.position)),
            "the id is the position"
        );
        let data = message.json();
        assert_eq!(data["type"], "message");
        assert_eq!(data["conversation_id"], json!(sent.conversation_id));
        assert_eq!(data["message_id"], json!(sent.message_id));
        assert_eq!(data["author_id"], json!(w.principal));
        assert_eq!(data["position"], sent.position.token());
    }
    for (outcome, status) in [(&at_sent, "sent"), (&at_delivered, "delivered")] {
        let event = principal.next_event().await;
        assert_eq!(event.event, "delivery");
        assert_eq!(event.id, Some(token(&outcome.position)));
        let data = event.json();
        assert_eq!(
            (
                &data["delivery_id"],
                &data["status"],
                &data["message_id"],
                &data["conversation_id"],
                &data["recipient_id"]
            ),
            (
                &json!(delivery),
                &json!(status),
                &json!(sent.message_id),
                &json!(sent.conversation_id),
                &json!(w.parent)
            )
        );
        assert_eq!(data["position"], outcome.position.token());
    }
    // The recipient is told of the message, not of its delivery.
    let next = w.send(w.principal, w.parent, "And one more").await;
    let event = parent.next_event().await;
    assert_eq!(
        (event.event.as_str(), event.json()["message_id"].clone()),
        ("message", json!(next.message_id))
    );
}

#[tokio::test]
async fn nothing_of_another_district_or_of_a_conversation_it_is_not_in() {
    let server = Server::start(|_| {}).await;
    let north = World::build(&server, "north").await;
    let south = World::build(&server, "south").await;
    let (mut teen, _) = connect(&server, &north, north.teen, None).await;

    // given a person in another district with the teen's very id, who is sent a message
    south
        .system("RegisterPerson", json!({"person_id": north.teen, "kind": "guardian", "name": "Namesake", "school_ids": [south.school]}))
        .await;
    south
        .send(south.principal, north.teen, "Other district")
        .await;
    // and a conversation in the teen's district they take no part in
    north
        .send(north.principal, north.parent, "Only for the parent")
        .await;
    let theirs = north
        .send(north.counselor, north.parent, "Also not yours")
        .await;
    north.queue(&theirs).await;
    north.outcome(theirs.delivery_ids[0], "sent").await;
    // when a message is sent to them
    let mine = north.send(north.counselor, north.teen, "Yours").await;
    // then it is the first thing they are told
    let event = teen.next_event().await;
    assert_eq!(event.event, "message");
    assert_eq!(
        event.json()["message_id"],
        json!(mine.message_id),
        "{event:?}"
    );
}

#[tokio::test]
async fn a_client_resumes_from_last_event_id_without_loss() {
    let server = Server::start(|_| {}).await;
    let w = World::build(&server, "north").await;
    let (first, ready) = connect(&server, &w, w.parent, None).await;
    drop(first);

    // given messages posted while the client was away
    let mut sent = Vec::new();
    for body in ["one", "two", "three"] {
        sent.push(w.send(w.principal, w.parent, body).await);
    }
    // when it reconnects with the last id it had
    let (mut back, from) = connect(&server, &w, w.parent, Some(&ready)).await;
    assert_eq!(from, ready);
    // then it is told every one, in order, then what follows live
    let mut ids = Vec::new();
    for expected in &sent {
        let event = back.next_event().await;
        assert_eq!(event.json()["message_id"], json!(expected.message_id));
        ids.push(event.id.unwrap());
    }
    let live = w.send(w.principal, w.parent, "four").await;
    assert_eq!(
        back.next_event().await.json()["message_id"],
        json!(live.message_id)
    );

    // and resuming after the second one gives the third and the fourth only
    let (mut again, _) = connect(&server, &w, w.parent, Some(&ids[1])).await;
    assert_eq!(
        again.next_event().await.json()["message_id"],
        json!(sent[2].message_id)
    );
    assert_eq!(
        again.next_event().await.json()["message_id"],
        json!(live.message_id)
    );
}

#[tokio::test]
async fn an_idle_stream_gets_keep_alive_comments() {
    let server = Server::start(|state| state.stream_keep_alive = Duration::from_millis(50)).await;
    let w = World::build(&server, "north").await;
    let (mut client, _) = connect(&server, &w, w.parent, None).await;
    let block = client.next_block().await.expect("the stream is open");
    assert_eq!(
        (block.event.as_str(), block.comments),
        ("", vec!["keep-alive".to_owned()])
    );
}

#[tokio::test]
async fn the_graceful_shutdown_ends_open_streams() {
    let mut server = Server::start(|_| {}).await;
    let w = World::build(&server, "north").await;
    let (mut client, _) = connect(&server, &w, w.parent, None).await;
    let (mut other, _) = connect(&server, &w, w.principal, None).await;

    server.shut_down().await.expect("serve ends cleanly");

    for client in [&mut client, &mut other] {
        assert_eq!(client.next_block().await, None, "the stream ended");
    }
}

#[tokio::test]
async fn a_stream_needs_a_person_token_and_a_well_formed_last_event_id() {
    let server = Server::start(|_| {}).await;
    let w = World::build(&server, "north").await;
    let get = |token: Option<String>, last: Option<&str>| {
        let mut request = Request::get("/v1/stream");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        request.body(Body::empty()).unwrap()
    };
    let code = |body: Value| body["code"].as_str().map(str::to_owned);
    let (status, body) = server.call(get(None, None)).await;
    assert_eq!(
        (status, code(body)),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated".into()))
    );
    let system = server.token(&w.district, "sis", true);
    let (status, body) = server.call(get(Some(system), None)).await;
    assert_eq!(
        (status, code(body)),
        (StatusCode::FORBIDDEN, Some("not_permitted".into()))
    );
    let person = server.person(&w.district, w.parent);
    let (status, body) = server.call(get(Some(person), Some("yesterday"))).await;
    assert_eq!(
        (status, code(body)),
        (StatusCode::BAD_REQUEST, Some("validation".into()))
    );
}

#[tokio::test]
async fn a_client_too_far_behind_is_reset_to_the_head() {
    use homeroom_app::live::{LiveConfig, LiveHub};
    let server = Server::start(|state| {
        let config = LiveConfig {
            max_catch_up: 1,
            ..LiveConfig::default()
        };
        state.live = LiveHub::new(state.store.clone(), config);
    })
    .await;
    let w = World::build(&server, "north").await;
    let (mut client, _) = connect(&server, &w, w.parent, Some("0")).await;
    let reset = client.next_event().await;
    let head = server.head().await;
    assert_eq!(
        (reset.event.as_str(), reset.id.clone()),
        ("reset", Some(token(&head)))
    );
    assert_eq!(
        reset.json(),
        json!({"type": "reset", "position": head.token()})
    );
    let live = w.send(w.principal, w.parent, "After the reset").await;
    assert_eq!(
        client.next_event().await.json()["message_id"],
        json!(live.message_id)
    );
}

#[tokio::test]
async fn a_client_resuming_from_a_position_this_log_never_gave_is_reset_to_the_head() {
    let server = Server::start(|_| {}).await;
    let w = World::build(&server, "north").await;
    // Beyond the head (another instance's, a restored backup's), or in another
    // engine's shape (from before a migration): live from the head, and reload.
    for beyond in [true, false] {
        let head = server.head().await;
        let last = if beyond {
            (head.sequence + 1_000).to_string()
        } else {
            "00000000000000000001-00000000000000000001".to_owned()
        };
        let (mut client, ready) = connect(&server, &w, w.parent, Some(&last)).await;
        // The head then, or later (the reactor may still be recording).
        let from: u64 = ready.parse().unwrap();
        assert!(
            from >= head.sequence && from < head.sequence + 1_000,
            "{last}: {from}"
        );
        let reset = client.next_event().await;
        assert_eq!(
            (reset.event.as_str(), reset.id.clone()),
            ("reset", Some(ready.clone())),
            "{last}"
        );
        let live = w.send(w.principal, w.parent, "Still heard").await;
        assert_eq!(
            client.next_event().await.json()["message_id"],
            json!(live.message_id),
            "{last}: what comes next is not withheld"
        );
    }
}

#[tokio::test]
async fn a_stream_ends_when_its_token_runs_out() {
    let server = Server::start(|_| {}).await;
    let w = World::build(&server, "north").await;
    let short = server.person_for(&w.district, w.parent, Duration::from_secs(2));
    let mut client = SseClient::connect(server.addr, &short, None).await;
    assert_eq!(client.status, 200);
    assert_eq!(client.next_event().await.event, "ready");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while client.next_block().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token");
}
