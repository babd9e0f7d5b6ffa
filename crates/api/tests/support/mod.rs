//! What the preview and stream tests share: an in-process server on 127.0.0.1:0 over a
//! fresh in-memory store with the projectors running, a small district written through
//! the command service, and a minimal server-sent-events client over a real socket.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use homeroom_api::{router, ApiState, Claims, TokenKeys};
use homeroom_app::{parse_command, CommandContext, CommandOutcome, CommandService, QueryService};
use homeroom_domain::commands::QueueDelivery;
use homeroom_domain::{Actor, Command, DistrictId, Event, PersonId};
use homeroom_eventstore::memory::InMemoryStore;
use homeroom_eventstore::{EventStore, StreamId};
use homeroom_projections::{models, ProjectionRuntime, ReadDb, RuntimeConfig};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tower::ServiceExt;
use uuid::Uuid;

/// How long anything may take before a test gives up.
pub const WAIT: Duration = Duration::from_secs(10);

const SECRET: [u8; 32] = [7; 32];

/// A running server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it serves (the same hub, services and store).
    pub state: ApiState,
    keys: TokenKeys,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _read_models: tempfile::TempDir,
}

impl Server {
    /// Serves a fresh store with `configure` applied to the state.
    pub async fn start(configure: impl FnOnce(&mut ApiState)) -> Self {
        let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
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
        let commands = Arc::new(CommandService::new(store, 1_000));
        let queries = Arc::new(QueryService::new(commands.clone(), runtime));
        let mut state = ApiState::new(commands, queries, TokenKeys::from_secret(&SECRET));
        configure(&mut state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(homeroom_api::serve(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            state,
            keys: TokenKeys::from_secret(&SECRET),
            stop: Some(stop),
            served: Some(served),
            _read_models: dir,
        }
    }

    /// A token for `subject` in `district`.
    pub fn token(&self, district: &DistrictId, subject: &str, system: bool) -> String {
        self.keys
            .issue(&Claims::new(
                district,
                subject,
                system,
                Duration::from_secs(600),
            ))
            .unwrap()
    }

    /// A token for `person` in `district`.
    pub fn person(&self, district: &DistrictId, person: PersonId) -> String {
        self.token(district, &person.to_string(), false)
    }

    /// A token for `person` in `district` that runs out after `ttl`.
    pub fn person_for(&self, district: &DistrictId, person: PersonId, ttl: Duration) -> String {
        self.keys
            .issue(&Claims::new(district, &person.to_string(), false, ttl))
            .unwrap()
    }

    /// Asks the server to shut down and waits until `serve` returns.
    pub async fn shut_down(&mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = self.served.take().expect("served once");
        tokio::time::timeout(WAIT, served)
            .await
            .expect("the graceful shutdown finishes in time")
            .expect("serve did not panic")
    }

    /// Sends `request` to the router in process; answers the status and JSON body.
    pub async fn call(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// `POST path` with a JSON `body` as the holder of `token`.
    pub async fn post(&self, token: &str, path: &str, body: &str) -> (StatusCode, Value) {
        let request = Request::post(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        self.call(request).await
    }

    /// The log's head.
    pub async fn head(&self) -> homeroom_eventstore::Position {
        self.state.store.head().await.unwrap()
    }
}

/// A district with a school, two school admins, a 14-year-old, a 12-year-old and a
/// guardian (SMS), written through the command service.
pub struct World {
    service: Arc<CommandService>,
    store: Arc<dyn EventStore>,
    /// The tenant.
    pub district: DistrictId,
    /// The school.
    pub school: Uuid,
    /// A school admin.
    pub principal: PersonId,
    /// Another school admin.
    pub counselor: PersonId,
    /// A student of 14.
    pub teen: PersonId,
    /// A student of 12.
    pub child: PersonId,
    /// The teen's guardian.
    pub parent: PersonId,
}

impl World {
    /// Builds the district `name` on `server`'s store.
    pub async fn build(server: &Server, name: &str) -> Self {
        let id = || PersonId::new(Uuid::now_v7());
        let w = Self {
            service: server.state.commands.clone(),
            store: server.state.store.clone(),
            district: DistrictId::parse(name).unwrap(),
            school: Uuid::now_v7(),
            principal: id(),
            counselor: id(),
            teen: id(),
            child: id(),
            parent: id(),
        };
        let today = chrono::Utc::now().date_naive();
        let born = |years: u64| (today - chrono::Days::new(years * 366)).to_string();
        w.system(
            "RegisterSchool",
            json!({"school_id": w.school, "name": "Lincoln Middle School"}),
        )
        .await;
        for (person, name) in [
            (w.principal, "Principal Skinner"),
            (w.counselor, "Counselor Troi"),
        ] {
            w.system("RegisterPerson", json!({"person_id": person, "kind": "staff", "name": name, "school_ids": [w.school]})).await;
            w.system(
                "AssignRole",
                json!({"person_id": person, "role_id": "school_admin", "school_id": w.school}),
            )
            .await;
        }
        w.system("RegisterPerson", json!({"person_id": w.teen, "kind": "student", "name": "Dennis", "school_ids": [w.school], "birth_date": born(14), "contact_points": [{"channel": "sms", "address": "+15550002001"}]})).await;
        w.system("RegisterPerson", json!({"person_id": w.child, "kind": "student", "name": "Lisa", "school_ids": [w.school], "birth_date": born(12)})).await;
        w.system("RegisterPerson", json!({"person_id": w.parent, "kind": "guardian", "name": "Marge Simpson", "school_ids": [w.school], "contact_points": [{"channel": "sms", "address": "+15550002003"}, {"channel": "email", "address": "marge@example.org"}]})).await;
        w.system(
            "LinkGuardian",
            json!({"guardian_id": w.parent, "student_id": w.teen}),
        )
        .await;
        w
    }

    async fn run(&self, actor: Actor, command: Command) -> CommandOutcome {
        let ctx = CommandContext::new(self.district.clone(), actor);
        self.service
            .execute(&ctx, &command)
            .await
            .unwrap_or_else(|e| panic!("{} refused: {e}", command.name()))
    }

    /// Runs a command as the SIS sync.
    pub async fn system(&self, name: &str, body: Value) -> CommandOutcome {
        self.run(
            Actor::System("sis".into()),
            parse_command(name, body).unwrap(),
        )
        .await
    }

    /// `from` sends `to` a personal message.
    pub async fn send(&self, from: PersonId, to: PersonId, body: &str) -> CommandOutcome {
        let command = parse_command(
            "SendPersonalMessage",
            json!({"recipient_id": to, "body": body}),
        )
        .unwrap();
        self.run(Actor::Person(from), command).await
    }

    /// Queues every delivery of the message `sent` posted, as the delivery process does.
    pub async fn queue(&self, sent: &CommandOutcome) {
        let posted = sent.events.last().unwrap();
        let stream = StreamId::parse(posted.stream.clone()).unwrap();
        let recorded = self
            .store
            .read_stream(&stream, posted.version - 1, 1)
            .await
            .unwrap();
        let Event::MessagePosted(m) = homeroom_app::codec::decode(&recorded[0]).unwrap() else {
            panic!("not a message")
        };
        for delivery in m.deliveries {
            let command = Command::QueueDelivery(QueueDelivery {
                delivery,
                message_id: m.message_id,
                conversation_id: m.conversation_id,
                fallback_of: None,
                sender: None,
            });
            self.run(Actor::System("delivery".into()), command).await;
        }
    }

    /// A delivery worker reports `status` for `delivery`.
    pub async fn outcome(
        &self,
        delivery: homeroom_domain::DeliveryId,
        status: &str,
    ) -> CommandOutcome {
        self.system(
            "RecordDeliveryOutcome",
            json!({"delivery_id": delivery, "status": status}),
        )
        .await
    }
}

/// One block of a server-sent event stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseEvent {
    /// `event:`.
    pub event: String,
    /// `id:`.
    pub id: Option<String>,
    /// `data:` lines, joined.
    pub data: String,
    /// Comment lines (`:…`), without the colon.
    pub comments: Vec<String>,
}

impl SseEvent {
    /// The data as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// A client reading `GET /v1/stream` over a socket, as an SSE client does.
pub struct SseClient {
    reader: BufReader<TcpStream>,
    /// The status code.
    pub status: u16,
    /// The response headers, names lowercased.
    pub headers: Vec<(String, String)>,
    text: String,
    ended: bool,
}

impl SseClient {
    /// Connects with `token`, sending `Last-Event-ID` when given.
    pub async fn connect(addr: SocketAddr, token: &str, last_event_id: Option<&str>) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut request = format!(
            "GET /v1/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
        );
        if let Some(id) = last_event_id {
            request.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        tokio::time::timeout(WAIT, reader.read_line(&mut line))
            .await
            .expect("a status line in time")
            .unwrap();
        let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap();
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        Self {
            reader,
            status,
            headers,
            text: String::new(),
            ended: false,
        }
    }

    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Reads one chunk of the chunked body into the text; false at its end.
    async fn read_chunk(&mut self) -> bool {
        let mut size = String::new();
        if self.reader.read_line(&mut size).await.unwrap_or(0) == 0 {
            return false;
        }
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            return false;
        }
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).await.unwrap();
        self.text.push_str(&String::from_utf8_lossy(&chunk[..size]));
        true
    }

    /// The next block (event or comment), or `None` when the stream ended.
    pub async fn next_block(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                for line in block.lines() {
                    if let Some(comment) = line.strip_prefix(':') {
                        event.comments.push(comment.trim().to_owned());
                    } else if let Some((field, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match field {
                            "event" => event.event = value.to_owned(),
                            "id" => event.id = Some(value.to_owned()),
                            "data" => event.data.push_str(value),
                            _ => {}
                        }
                    }
                }
                return Some(event);
            }
            if self.ended {
                return None;
            }
            let more = tokio::time::timeout(WAIT, self.read_chunk())
                .await
                .expect("the stream sends something in time");
            if !more {
                self.ended = true;
            }
        }
    }

    /// The next event, skipping keep-alive comments.
    pub async fn next_event(&mut self) -> SseEvent {
        loop {
            let block = self.next_block().await.expect("the stream is open");
            if !block.event.is_empty() {
                return block;
            }
        }
    }
}
