//! The router end to end in process (`tower::ServiceExt::oneshot`, in-memory store):
//! status codes and problem documents, idempotency, tenancy, limits, the CSV import,
//! and the operations endpoints. A refused request must leave the log's head unchanged.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use homeroom_api::{router, ApiState, Claims, Limits, TokenKeys};
use homeroom_app::{CommandService, QueryService};
use homeroom_domain::{Command, DistrictId};
use homeroom_eventstore::memory::InMemoryStore;
use homeroom_eventstore::{EventStore, Position};
use homeroom_projections::{models, ProjectionRuntime, ReadDb, RuntimeConfig};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;
use uuid::Uuid;

const SECRET: [u8; 32] = [42; 32];

struct Api {
    router: Router,
    store: Arc<dyn EventStore>,
    keys: TokenKeys,
    /// Holds the read models' file; the projectors follow the log until the test ends.
    _read_models: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
    text: String,
}

impl Reply {
    /// Asserts a problem document with `status` and `code`, and returns its detail.
    #[track_caller]
    fn problem(&self, status: u16, code: &str) -> String {
        assert_eq!(
            (self.status.as_u16(), self.body["code"].as_str()),
            (status, Some(code)),
            "{}",
            self.text
        );
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/problem+json",
            "{}",
            self.text
        );
        assert_eq!(self.body["status"], status);
        assert_eq!(
            self.body["type"],
            format!("urn:homeroom:problem:{code}"),
            "{}",
            self.text
        );
        assert!(self.body["title"].is_string());
        self.body["detail"].as_str().unwrap().to_owned()
    }

    #[track_caller]
    fn ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text);
        &self.body
    }
}

impl Api {
    async fn new() -> Self {
        Self::with_limits(Limits::default()).await
    }

    /// The API over a fresh in-memory store, with the projectors running.
    async fn with_limits(limits: Limits) -> Self {
        Self::over(Arc::new(InMemoryStore::new()), limits).await
    }

    /// The API over `store`, with the projectors running.
    async fn over(store: Arc<dyn EventStore>, limits: Limits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = ReadDb::open(&dir.path().join("read.sqlite")).await.unwrap();
        let runtime =
            ProjectionRuntime::open(store.clone(), db, models::all(), RuntimeConfig::default())
                .await
                .unwrap();
        tokio::spawn({
            let runtime = runtime.clone();
            async move { runtime.run(std::future::pending()).await }
        });
        let commands = Arc::new(CommandService::new(store.clone(), 1_000));
        let queries = Arc::new(QueryService::new(commands.clone(), runtime));
        let mut state = ApiState::new(commands, queries, TokenKeys::from_secret(&SECRET));
        state.limits = limits;
        Self {
            router: router(state),
            store,
            keys: TokenKeys::from_secret(&SECRET),
            _read_models: dir,
        }
    }

    fn token(&self, district: &str, subject: &str, system: bool) -> String {
        let district = DistrictId::parse(district).unwrap();
        self.keys
            .issue(&Claims::new(
                &district,
                subject,
                system,
                Duration::from_secs(600),
            ))
            .unwrap()
    }

    fn system(&self, district: &str) -> String {
        self.token(district, "sis-sync", true)
    }

    fn person(&self, district: &str, id: Uuid) -> String {
        self.token(district, &id.to_string(), false)
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    async fn raw(&self, token: Option<&str>, path: &str, body: impl Into<Body>) -> Reply {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(request.body(body.into()).unwrap()).await
    }

    async fn command(&self, token: &str, name: &str, body: Value) -> Reply {
        self.raw(
            Some(token),
            &format!("/v1/commands/{name}"),
            body.to_string(),
        )
        .await
    }

    async fn keyed(&self, token: &str, key: &str, name: &str, body: Value) -> Reply {
        let request = Request::post(format!("/v1/commands/{name}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header("idempotency-key", key)
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(request).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    async fn head(&self) -> Position {
        self.store.head().await.unwrap()
    }
}

/// A school, a school admin, a 14-year-old and a 12-year-old in `district`.
struct Seeded {
    school: Uuid,
    admin: Uuid,
    teen: Uuid,
    child: Uuid,
}

async fn seed(api: &Api, district: &str) -> Seeded {
    let sys = api.system(district);
    let s = Seeded {
        school: Uuid::now_v7(),
        admin: Uuid::now_v7(),
        teen: Uuid::now_v7(),
        child: Uuid::now_v7(),
    };
    let today = chrono::Utc::now().date_naive();
    api.command(
        &sys,
        "RegisterSchool",
        json!({"school_id": s.school, "name": "Lincoln"}),
    )
    .await
    .ok();
    api.command(
        &sys,
        "RegisterPerson",
        json!({"person_id": s.admin, "kind": "staff", "name": "Skinner", "school_ids": [s.school]}),
    )
    .await
    .ok();
    for (id, years) in [(s.teen, 14), (s.child, 12)] {
        api.command(&sys, "RegisterPerson", json!({"person_id": id, "kind": "student", "name": "Kid", "school_ids": [s.school], "birth_date": today.checked_sub_months(chrono::Months::new(12 * years)).unwrap(), "contact_points": [{"channel": "sms", "address": "+15550002001"}]}))
            .await
            .ok();
    }
    api.command(
        &sys,
        "AssignRole",
        json!({"person_id": s.admin, "role_id": "school_admin", "school_id": s.school}),
    )
    .await
    .ok();
    s
}

#[tokio::test]
async fn a_command_answers_its_result_shape() {
    let api = Api::new().await;
    let sys = api.system("north");
    let school = Uuid::now_v7();
    let reply = api
        .command(
            &sys,
            "RegisterSchool",
            json!({"school_id": school, "name": "Lincoln", "sms_number": "+15550001000"}),
        )
        .await;
    let body = reply.ok();
    assert!(Uuid::parse_str(body["command_id"].as_str().unwrap()).is_ok());
    assert_eq!(
        body["position"],
        json!(1),
        "a SQLite-like position is a number"
    );
    assert_eq!(
        body["events"],
        json!([{"stream": "district-north", "version": 1, "type": "school_registered"}])
    );
}

#[tokio::test]
async fn a_personal_message_answers_the_ids_it_created() {
    let api = Api::new().await;
    let s = seed(&api, "north").await;
    let reply = api
        .command(
            &api.person("north", s.admin),
            "SendPersonalMessage",
            json!({"recipient_id": s.teen, "body": "Hi {student_name}"}),
        )
        .await;
    let body = reply.ok();
    assert!(body["conversation_id"].is_string() && body["message_id"].is_string());
    assert_eq!(body["delivery_ids"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn refusals_answer_problem_documents_with_their_codes_and_record_nothing() {
    let api = Api::new().await;
    let s = seed(&api, "north").await;
    let admin = api.person("north", s.admin);
    let before = api.head().await;

    let detail = api
        .command(
            &admin,
            "SendPersonalMessage",
            json!({"recipient_id": s.child, "body": "Hi"}),
        )
        .await
        .problem(422, "recipient_too_young");
    assert!(!detail.is_empty());
    api.command(
        &admin,
        "SendPersonalMessage",
        json!({"recipient_id": Uuid::now_v7(), "body": "Hi"}),
    )
    .await
    .problem(404, "unknown_person");
    api.command(
        &admin,
        "RegisterSchool",
        json!({"school_id": Uuid::now_v7(), "name": "X"}),
    )
    .await
    .problem(403, "not_permitted");
    api.command(
        &api.system("north"),
        "RegisterSchool",
        json!({"school_id": s.school, "name": "Again"}),
    )
    .await
    .problem(409, "already_exists");
    api.command(
        &admin,
        "StopConversation",
        json!({"conversation_id": Uuid::now_v7()}),
    )
    .await
    .problem(404, "unknown_conversation");
    api.command(
        &api.system("north"),
        "AssignRole",
        json!({"person_id": s.admin, "role_id": "no_such_role"}),
    )
    .await
    .problem(404, "unknown_role");
    api.command(
        &api.system("north"),
        "RegisterPerson",
        json!({"person_id": Uuid::now_v7(), "kind": "staff", "name": "  ", "school_ids": [s.school]}),
    )
    .await
    .problem(400, "validation");
    assert_eq!(api.head().await, before, "a refusal records nothing");
}

#[tokio::test]
async fn malformed_requests_are_400_and_record_nothing() {
    let api = Api::new().await;
    let sys = api.system("north");
    let before = api.head().await;
    let path = "/v1/commands/RegisterSchool";
    let school = Uuid::now_v7();
    for body in [
        String::new(),
        "{not json".to_owned(),
        "[1, 2]".to_owned(),
        json!({"school_id": school, "name": "X", "extra": 1}).to_string(),
        json!({"school_id": school, "name": 7}).to_string(),
        json!({"school_id": "not-a-uuid", "name": "X"}).to_string(),
        json!({"name": "X"}).to_string(),
    ] {
        let detail = api
            .raw(Some(&sys), path, body.clone())
            .await
            .problem(400, "validation");
        assert!(!detail.is_empty(), "{body}");
    }
    let detail = api
        .keyed(
            &sys,
            "not-a-uuid",
            "RegisterSchool",
            json!({"school_id": school, "name": "X"}),
        )
        .await
        .problem(400, "validation");
    assert!(detail.contains("Idempotency-Key"), "{detail}");
    let detail = api
        .raw(
            Some(&sys),
            path,
            json!({"school_id": school, "name": "X", "extra": 1}).to_string(),
        )
        .await
        .problem(400, "validation");
    assert!(
        detail.contains("extra"),
        "the unknown field is named: {detail}"
    );
    assert_eq!(api.head().await, before);
}

#[tokio::test]
async fn oversize_bodies_are_413_and_record_nothing() {
    let api = Api::with_limits(Limits {
        command_body: 1024,
        import_body: 2048,
        ..Limits::default()
    })
    .await;
    let sys = api.system("north");
    let before = api.head().await;
    let big = json!({"school_id": Uuid::now_v7(), "name": "x".repeat(5000)}).to_string();
    api.raw(Some(&sys), "/v1/commands/RegisterSchool", big.clone())
        .await
        .problem(413, "too_large");
    // Without a Content-Length, the limit applies while reading.
    let stream = futures::stream::iter(
        big.into_bytes()
            .chunks(100)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let request = Request::post("/v1/commands/RegisterSchool")
        .header(header::AUTHORIZATION, format!("Bearer {sys}"))
        .body(Body::from_stream(stream))
        .unwrap();
    api.send(request).await.problem(413, "too_large");
    let csv = format!("person_id,role_id,school_id\n{}", "x,y,\n".repeat(1000));
    let request = Request::post("/v1/imports/role-assignments")
        .header(header::AUTHORIZATION, format!("Bearer {sys}"))
        .header(header::CONTENT_TYPE, "text/csv")
        .body(Body::from(csv))
        .unwrap();
    api.send(request).await.problem(413, "too_large");
    assert_eq!(api.head().await, before);
}

#[tokio::test]
async fn an_unknown_command_is_404_listing_every_known_one() {
    let api = Api::new().await;
    let detail = api
        .command(&api.system("north"), "EditMessage", json!({}))
        .await
        .problem(404, "unknown_command");
    for name in Command::API_NAMES {
        assert!(detail.contains(name), "{name} is not listed: {detail}");
    }
    api.command(&api.system("north"), "QueueDelivery", json!({}))
        .await
        .problem(404, "unknown_command");
}

#[tokio::test]
async fn requests_without_a_valid_token_are_401() {
    let api = Api::new().await;
    let body = json!({"school_id": Uuid::now_v7(), "name": "X"}).to_string();
    let path = "/v1/commands/RegisterSchool";
    let reply = api.raw(None, path, body.clone()).await;
    reply.problem(401, "unauthenticated");
    assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
    api.raw(Some("garbage"), path, body.clone())
        .await
        .problem(401, "unauthenticated");
    let foreign = TokenKeys::from_secret(&[1; 32])
        .issue(&Claims::new(
            &DistrictId::parse("north").unwrap(),
            "sis",
            true,
            Duration::from_secs(60),
        ))
        .unwrap();
    api.raw(Some(&foreign), path, body.clone())
        .await
        .problem(401, "unauthenticated");
    // A service name needs scope system; a person's sub must be a UUID.
    api.raw(Some(&api.token("north", "sis", false)), path, body.clone())
        .await
        .problem(401, "unauthenticated");
    assert_eq!(api.head().await, Position::START);
}

#[tokio::test]
async fn the_same_idempotency_key_answers_the_first_result_and_records_once() {
    let api = Api::new().await;
    let sys = api.system("north");
    let key = Uuid::now_v7().to_string();
    let body = json!({"school_id": Uuid::now_v7(), "name": "Lincoln"});
    let first = api.keyed(&sys, &key, "RegisterSchool", body.clone()).await;
    let first_body = first.ok().clone();
    assert_eq!(first_body["command_id"], json!(key));
    assert!(!first.headers.contains_key("idempotent-replayed"));
    let head = api.head().await;
    let again = api.keyed(&sys, &key, "RegisterSchool", body.clone()).await;
    assert_eq!(again.ok(), &first_body, "the first result, unchanged");
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(api.head().await, head, "one event recorded");
    api.keyed(
        &sys,
        &key,
        "RegisterSchool",
        json!({"school_id": Uuid::now_v7(), "name": "Other"}),
    )
    .await
    .problem(409, "idempotency_key_reused");
    assert_eq!(api.head().await, head);
}

#[tokio::test]
async fn another_districts_ids_answer_404() {
    let api = Api::new().await;
    let north = seed(&api, "north").await;
    let sent = api
        .command(
            &api.person("north", north.admin),
            "SendPersonalMessage",
            json!({"recipient_id": north.teen, "body": "Hi"}),
        )
        .await
        .ok()
        .clone();
    let south = seed(&api, "south").await;
    let before = api.head().await;
    let south_sys = api.system("south");
    api.command(
        &south_sys,
        "AssignRole",
        json!({"person_id": north.admin, "role_id": "school_admin"}),
    )
    .await
    .problem(404, "unknown_person");
    api.command(
        &south_sys,
        "StopConversation",
        json!({"conversation_id": sent["conversation_id"]}),
    )
    .await
    .problem(404, "unknown_conversation");
    api.command(
        &api.person("south", south.admin),
        "SendPersonalMessage",
        json!({"recipient_id": north.teen, "body": "Hi"}),
    )
    .await
    .problem(404, "unknown_person");
    // The north admin's token does not reach into south even with south's ids.
    api.command(
        &api.person("north", north.admin),
        "SendPersonalMessage",
        json!({"recipient_id": south.teen, "body": "Hi"}),
    )
    .await
    .problem(404, "unknown_person");
    assert_eq!(api.head().await, before);
}

async fn import(api: &Api, token: &str, key: Option<&str>, csv: String) -> Reply {
    let mut request = Request::post("/v1/imports/role-assignments")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "text/csv");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    api.send(request.body(Body::from(csv)).unwrap()).await
}

#[tokio::test]
async fn a_csv_import_applies_good_rows_and_reports_bad_ones() {
    let api = Api::new().await;
    let s = seed(&api, "north").await;
    let sys = api.system("north");
    let staff: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for id in &staff {
        api.command(
            &sys,
            "RegisterPerson",
            json!({"person_id": id, "kind": "staff", "name": "Nurse", "school_ids": [s.school]}),
        )
        .await
        .ok();
    }
    let csv = format!(
        "person_id,role_id,school_id\n{a},school_admin,{school}\nnot-a-uuid,school_admin,{school}\n{b},no_such_role,{school}\n{c},district_admin,\n{unknown},teacher,{school}\n",
        a = staff[0],
        b = staff[1],
        c = staff[2],
        unknown = Uuid::now_v7(),
        school = s.school,
    );
    // Only a body declared as CSV is read as one.
    let before = api.head().await;
    for media_type in [None, Some("application/json"), Some("text/plain")] {
        let mut request = Request::post("/v1/imports/role-assignments")
            .header(header::AUTHORIZATION, format!("Bearer {sys}"));
        if let Some(media_type) = media_type {
            request = request.header(header::CONTENT_TYPE, media_type);
        }
        api.send(request.body(Body::from(csv.clone())).unwrap())
            .await
            .problem(415, "unsupported_media_type");
    }
    assert_eq!(api.head().await, before, "nothing imported");
    let key = Uuid::now_v7().to_string();
    let reply = import(&api, &sys, Some(&key), csv.clone()).await;
    let report = reply.ok().clone();
    assert_eq!(
        (&report["accepted"], &report["rejected"]),
        (&json!(2), &json!(3))
    );
    let rows = report["rows"].as_array().unwrap();
    let summary: Vec<(u64, &str, Option<&str>)> = rows
        .iter()
        .map(|r| {
            (
                r["row"].as_u64().unwrap(),
                r["status"].as_str().unwrap(),
                r["code"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "accepted", None),
            (2, "rejected", Some("validation")),
            (3, "rejected", Some("unknown_role")),
            (4, "accepted", None),
            (5, "rejected", Some("unknown_person")),
        ]
    );
    assert!(rows[1]["detail"].is_string() && rows[0]["command_id"].is_string());

    let head = api.head().await;
    let again = import(&api, &sys, Some(&key), csv).await;
    assert_eq!(
        again.ok()["rows"],
        report["rows"],
        "the same key answers the same rows"
    );
    assert_eq!(api.head().await, head, "and records nothing twice");

    // A person without roles_admin is refused row by row.
    let reply = import(
        &api,
        &api.person("north", s.teen),
        None,
        format!(
            "person_id,role_id,school_id\n{},school_admin,{}\n",
            staff[1], s.school
        ),
    )
    .await;
    assert_eq!(reply.ok()["rows"][0]["code"], "not_permitted");
    // A wrong header refuses the whole file.
    import(&api, &sys, None, "person,role\n".into())
        .await
        .problem(400, "validation");
    assert_eq!(api.head().await, head);
}

/// An in-memory store whose `head` never answers (a database that accepts connections
/// and then says nothing).
struct SilentHead(InMemoryStore);

#[async_trait::async_trait]
impl homeroom_eventstore::EventAppender for SilentHead {
    async fn append(
        &self,
        stream: &homeroom_eventstore::StreamId,
        expected: homeroom_eventstore::ExpectedVersion,
        events: Vec<homeroom_eventstore::NewEvent>,
    ) -> Result<homeroom_eventstore::AppendResult, homeroom_eventstore::StoreError> {
        self.0.append(stream, expected, events).await
    }
}

#[async_trait::async_trait]
impl homeroom_eventstore::EventReader for SilentHead {
    async fn read_stream(
        &self,
        stream: &homeroom_eventstore::StreamId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<homeroom_eventstore::RecordedEvent>, homeroom_eventstore::StoreError> {
        self.0.read_stream(stream, after_version, limit).await
    }
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<homeroom_eventstore::RecordedEvent>, homeroom_eventstore::StoreError> {
        self.0.read_all(after, limit).await
    }
    async fn stream_versions(
        &self,
        streams: &[homeroom_eventstore::StreamId],
    ) -> Result<Vec<u64>, homeroom_eventstore::StoreError> {
        self.0.stream_versions(streams).await
    }
    async fn find_command(
        &self,
        command_id: Uuid,
    ) -> Result<Vec<homeroom_eventstore::RecordedEvent>, homeroom_eventstore::StoreError> {
        self.0.find_command(command_id).await
    }
    async fn head(&self) -> Result<Position, homeroom_eventstore::StoreError> {
        std::future::pending().await
    }
}

impl homeroom_eventstore::EventSubscriber for SilentHead {
    fn subscribe_all(&self, after: Position) -> homeroom_eventstore::EventStream {
        self.0.subscribe_all(after)
    }
}

#[tokio::test]
async fn readiness_answers_503_promptly_when_the_store_does_not_answer() {
    let api = Api::over(
        Arc::new(SilentHead(InMemoryStore::new())),
        Limits::default(),
    )
    .await;
    // A probe must get its answer, not hang (the store itself would wait for ever).
    let reply = tokio::time::timeout(Duration::from_secs(30), api.get("/readyz"))
        .await
        .expect("/readyz answers although the store does not");
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body["code"], "unavailable");
}

#[tokio::test]
async fn operations_endpoints_answer_without_a_token() {
    let api = Api::new().await;
    assert_eq!(api.get("/healthz").await.ok()["status"], "ok");
    let ready = api.get("/readyz").await;
    assert_eq!(ready.ok()["status"], "ready");
    assert_eq!(ready.body["position"], json!(0));

    let s = seed(&api, "north").await;
    api.command(
        &api.person("north", s.admin),
        "SendPersonalMessage",
        json!({"recipient_id": s.child, "body": "Hi"}),
    )
    .await
    .problem(422, "recipient_too_young");
    let metrics = api.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    for line in [
        r#"homeroom_commands_total{command="RegisterSchool",outcome="ok"} 1"#,
        r#"homeroom_commands_total{command="SendPersonalMessage",outcome="recipient_too_young"} 1"#,
        r#"homeroom_command_duration_seconds_bucket{command="AssignRole",outcome="ok",le="+Inf"} 1"#,
        r#"homeroom_projection_parked{projector="conversations"} 0"#,
    ] {
        assert!(
            metrics.text.contains(line),
            "{line} missing:\n{}",
            metrics.text
        );
    }

    let doc = api.get("/openapi.json").await;
    let doc = doc.ok();
    assert_eq!(doc["openapi"], "3.1.0");
    for name in Command::API_NAMES {
        assert!(
            doc["paths"][format!("/v1/commands/{name}")]["post"]["requestBody"].is_object(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_problem_documents() {
    let api = Api::new().await;
    api.get("/v2/nothing").await.problem(404, "not_found");
    api.get("/v1/commands/RegisterSchool")
        .await
        .problem(405, "method_not_allowed");
}
