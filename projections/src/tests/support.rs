//! Test support: a fresh read database per test (a SQLite file in a temporary
//! directory, or a PostgreSQL schema dropped at the end), an event store (in memory, or
//! PostgreSQL's for positions with transaction ids), builders of domain events appended
//! with metadata the way the command service does, and tests run on both engines.

use crate::db::{query, Engine, Tx};
use crate::error::ProjectionError;
use crate::projector::{render_for, Generation};
use crate::queries::*;
use crate::{
    models, PgReadConfig, ProjectionRuntime, Projector, ReadDb, ReadModels, RuntimeConfig,
};
use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use homeroom_domain::events::*;
use homeroom_domain::visibility::RecordAccess;
use homeroom_domain::{
    Actor, Channel, ConversationId, ConversationKind, DeliveryId, DistrictId, Event, MessageId,
    PersonId, PersonKind, PlannedDelivery, SchoolId, SendAs,
};
use homeroom_eventstore::memory::InMemoryStore;
use homeroom_eventstore::{
    EventMetadata, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId,
};
use homeroom_store_postgres::testing::{self, TestDb};
use rand::rngs::StdRng;
use rand::Rng;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;
use tempfile::TempDir;
use uuid::Uuid;

/// Runs each named test body (`async fn name(w: World)`) twice, as `name::sqlite` and
/// `name::postgres` (which follows the service rule: fails under `CI=true` when
/// PostgreSQL is unreachable, else says it did not run and passes).
macro_rules! on_both_engines {
    ($(#[$attr:meta] $name:ident),* $(,)?) => {
        $(mod $name {
            #[$attr]
            async fn sqlite() {
                super::$name(super::World::sqlite()).await;
            }

            #[$attr]
            async fn postgres() {
                if let Some(w) = super::World::postgres().await {
                    super::$name(w).await;
                }
            }
        })*
    };
}
pub(crate) use on_both_engines;

pub const NORTH: &str = "north";
pub const SOUTH: &str = "south";

pub fn district(name: &str) -> DistrictId {
    DistrictId::parse(name).expect("a valid district id")
}

pub fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

pub fn person(n: u128) -> PersonId {
    PersonId::new(id(n))
}

pub fn school(n: u128) -> SchoolId {
    SchoolId::new(id(0x5c00 + n))
}

pub fn conversation(n: u128) -> ConversationId {
    ConversationId::new(id(0xc000 + n))
}

pub fn message(n: u128) -> MessageId {
    MessageId::new(id(0xe000 + n))
}

/// A PostgreSQL schema of a test's read models, dropped when the test ends (also when
/// it fails).
pub struct PgSchema {
    pub db: Arc<TestDb>,
    pub schema: String,
}

impl Drop for PgSchema {
    /// `Drop` cannot await and may run inside the test's runtime: drop the schema on a
    /// thread of its own with its own runtime (as `TestDb` does for store schemas).
    fn drop(&mut self) {
        let (url, schema) = (self.db.url().to_owned(), self.schema.clone());
        let cleanup = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    // The test's pools may still hold connections (closing them needs
                    // the test's runtime, which this drop blocks): end them first.
                    if let Ok(mut conn) =
                        <sqlx::PgConnection as sqlx::Connection>::connect(&url).await
                    {
                        let ended = sqlx::query(
                            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
                             WHERE application_name = $1 AND pid <> pg_backend_pid()",
                        )
                        .bind(crate::postgres::application_name(&schema))
                        .execute(&mut conn)
                        .await;
                        if let Err(e) = ended {
                            eprintln!("warning: ending the connections of {schema}: {e}");
                        }
                        let _ = sqlx::Connection::close(conn).await;
                    }
                    testing::drop_schema(&url, &schema).await;
                });
            }
        });
        let _ = cleanup.join();
    }
}

/// A test's world: a store, the read databases (a SQLite file in a temporary directory
/// and, on PostgreSQL, a fresh schema), which engine `db` opens, and a clock.
pub struct World {
    pub store: Arc<dyn EventStore>,
    pub engine: Engine,
    pub dir: TempDir,
    pub pg: Option<PgSchema>,
    minutes: AtomicI64,
}

impl World {
    /// The in-memory store and the read models on SQLite.
    pub fn sqlite() -> Self {
        Self {
            store: Arc::new(InMemoryStore::new()),
            engine: Engine::Sqlite,
            dir: tempfile::tempdir().expect("a temporary directory"),
            pg: None,
            minutes: AtomicI64::new(0),
        }
    }

    /// The in-memory store and the read models on PostgreSQL, in a fresh schema;
    /// `None` (having said why) when PostgreSQL is unreachable outside CI.
    pub async fn postgres() -> Option<Self> {
        let db = Arc::new(TestDb::connect_or_skip().await?);
        let mut w = Self::sqlite();
        w.engine = Engine::Postgres;
        w.pg = Some(PgSchema {
            db,
            schema: testing::unique_schema(),
        });
        Some(w)
    }

    /// Like [`World::postgres`], with the events in a PostgreSQL store too (its
    /// positions carry transaction ids).
    pub async fn postgres_with_pg_store() -> Option<Self> {
        let mut w = Self::postgres().await?;
        let store = w.pg().db.store().await;
        w.store = Arc::new(store);
        Some(w)
    }

    /// Another world on the same engine, with a fresh store and read database.
    pub fn fresh(&self) -> Self {
        let mut w = Self::sqlite();
        w.engine = self.engine;
        w.pg = self.pg.as_ref().map(|pg| PgSchema {
            db: pg.db.clone(),
            schema: testing::unique_schema(),
        });
        w
    }

    pub fn pg(&self) -> &PgSchema {
        self.pg.as_ref().expect("a PostgreSQL world")
    }

    /// A new connection to the world's read database (as another process would open).
    pub async fn db(&self) -> ReadDb {
        self.db_with(|_| {}).await
    }

    /// Like [`World::db`], adjusting the PostgreSQL configuration (quick lease timings
    /// are the default here).
    pub async fn db_with(&self, adjust: impl FnOnce(&mut PgReadConfig)) -> ReadDb {
        match self.engine {
            Engine::Sqlite => self.sqlite_db().await,
            Engine::Postgres => {
                let pg = self.pg();
                let mut config = PgReadConfig::new(pg.db.url(), &pg.schema);
                config.max_connections = 4;
                config.lease_retry = StdDuration::from_millis(50);
                config.lease_check = StdDuration::from_millis(50);
                adjust(&mut config);
                ReadDb::connect_postgres_with(config)
                    .await
                    .expect("the PostgreSQL read models connect")
            }
        }
    }

    /// The world's SQLite read database, whichever engine `db` opens.
    pub async fn sqlite_db(&self) -> ReadDb {
        ReadDb::open(&ReadDb::default_path(self.dir.path()))
            .await
            .expect("the read database opens")
    }

    pub fn dyn_store(&self) -> Arc<dyn EventStore> {
        self.store.clone()
    }

    /// A runtime with the built-in projectors and small batches.
    pub async fn runtime(&self) -> (ProjectionRuntime, ReadModels) {
        self.runtime_with(models::all(), fast()).await
    }

    pub async fn runtime_with(
        &self,
        projectors: Vec<Arc<dyn Projector>>,
        config: RuntimeConfig,
    ) -> (ProjectionRuntime, ReadModels) {
        self.runtime_on(self.db().await, projectors, config).await
    }

    pub async fn runtime_on(
        &self,
        db: ReadDb,
        projectors: Vec<Arc<dyn Projector>>,
        config: RuntimeConfig,
    ) -> (ProjectionRuntime, ReadModels) {
        let runtime = ProjectionRuntime::open(self.dyn_store(), db, projectors, config)
            .await
            .expect("the runtime opens");
        let read = runtime.read_models();
        (runtime, read)
    }

    /// Every event in the store.
    pub async fn store_events(&self) -> Vec<homeroom_eventstore::RecordedEvent> {
        self.store
            .read_all(Position::START, 1_000_000)
            .await
            .expect("the store reads")
    }

    /// The next minute of the test clock.
    pub fn now(&self) -> DateTime<Utc> {
        let m = self.minutes.fetch_add(1, Ordering::Relaxed);
        Utc.with_ymd_and_hms(2025, 3, 10, 8, 0, 0)
            .single()
            .expect("a time")
            + Duration::minutes(m)
    }

    /// Appends `events` to `stream` of `district`, as `actor`; returns the position of
    /// the last one.
    pub async fn append(
        &self,
        district: &str,
        stream: &str,
        actor: &str,
        events: Vec<Event>,
    ) -> Position {
        let command = Uuid::now_v7();
        let metadata = EventMetadata {
            district: district.to_owned(),
            school: None,
            actor: actor.to_owned(),
            correlation_id: command,
            causation_id: command,
            command_id: command,
            command_digest: None,
        };
        let events = events
            .into_iter()
            .map(|event| {
                let tagged = serde_json::to_value(&event).expect("events serialise");
                NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: event.name().to_owned(),
                    schema_version: event.schema_version(),
                    data: tagged["data"].clone(),
                    metadata: metadata.clone(),
                }
            })
            .collect();
        let stream = StreamId::parse(stream).expect("a stream id");
        self.store
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .expect("the append succeeds")
            .position
    }

    pub async fn register(
        &self,
        district: &str,
        who: PersonId,
        kind: PersonKind,
        name: &str,
    ) -> Position {
        let at = self.now();
        self.append(
            district,
            &format!("person-{district}:{who}"),
            "sis",
            vec![PersonRegistered {
                person_id: who,
                kind,
                name: name.to_owned(),
                school_ids: vec![school(1)],
                birth_date: None,
                manually_added: false,
                language: if kind == PersonKind::Guardian {
                    "es"
                } else {
                    "en"
                }
                .to_owned(),
                preferred_channel: None,
                contact_points: vec![],
                at,
                by: Actor::System("sis".to_owned()),
            }
            .into()],
        )
        .await
    }

    pub async fn link(&self, district: &str, guardian: PersonId, student: PersonId) -> Position {
        let at = self.now();
        self.append(
            district,
            &format!("person-{district}:{guardian}"),
            "sis",
            vec![GuardianLinked {
                guardian_id: guardian,
                student_id: student,
                at,
                by: Actor::System("sis".to_owned()),
            }
            .into()],
        )
        .await
    }

    pub fn started(
        &self,
        c: ConversationId,
        kind: ConversationKind,
        participants: &[PersonId],
        title: Option<&str>,
    ) -> Event {
        ConversationStarted {
            conversation_id: c,
            kind,
            school_id: school(1),
            title: title.map(str::to_owned),
            started_by: participants[0],
            participant_ids: participants.to_vec(),
            at: self.now(),
        }
        .into()
    }

    pub fn posted(
        &self,
        c: ConversationId,
        m: MessageId,
        author: PersonId,
        body: &str,
        recipients: &[PersonId],
    ) -> Event {
        self.message_posted(c, m, author, body, recipients).into()
    }

    /// [`World::posted`] as the event's own type, for a test to change a field of it
    /// (a subject, `sent_as`) before appending it.
    pub fn message_posted(
        &self,
        c: ConversationId,
        m: MessageId,
        author: PersonId,
        body: &str,
        recipients: &[PersonId],
    ) -> MessagePosted {
        MessagePosted {
            conversation_id: c,
            message_id: m,
            author_id: author,
            sent_as: SendAs::Personal,
            body: body.to_owned(),
            subject: None,
            deliveries: recipients
                .iter()
                .map(|r| planned(m, *r, &format!("{body} (for {})", r.as_uuid().as_u128())))
                .collect(),
            shared_phone_with: vec![],
            at: self.now(),
        }
    }

    /// Starts a conversation with a first message from the first participant to the
    /// others, in one append (as the command service does).
    pub async fn start(
        &self,
        district: &str,
        c: ConversationId,
        kind: ConversationKind,
        participants: &[PersonId],
        m: MessageId,
        body: &str,
    ) -> Position {
        let events = vec![
            self.started(c, kind, participants, None),
            self.posted(c, m, participants[0], body, &participants[1..]),
        ];
        self.append(
            district,
            &conv_stream(district, c),
            &participants[0].to_string(),
            events,
        )
        .await
    }

    pub async fn post(
        &self,
        district: &str,
        c: ConversationId,
        m: MessageId,
        author: PersonId,
        body: &str,
        recipients: &[PersonId],
    ) -> Position {
        let event = self.posted(c, m, author, body, recipients);
        self.append(
            district,
            &conv_stream(district, c),
            &author.to_string(),
            vec![event],
        )
        .await
    }

    pub async fn conv_event(
        &self,
        district: &str,
        c: ConversationId,
        actor: PersonId,
        event: Event,
    ) -> Position {
        self.append(
            district,
            &conv_stream(district, c),
            &actor.to_string(),
            vec![event],
        )
        .await
    }

    pub async fn outcome(&self, district: &str, delivery: DeliveryId, status: &str) -> Position {
        let at = self.now();
        let event: Event = match status {
            "sent" => DeliverySent {
                delivery_id: delivery,
                provider_message_id: Some("SM1".to_owned()),
                sender: None,
                sent_text: None,
                translated_to: None,
                at,
            }
            .into(),
            "delivered" => DeliveryDelivered {
                delivery_id: delivery,
                provider_message_id: None,
                at,
            }
            .into(),
            _ => DeliveryFailed {
                delivery_id: delivery,
                provider_message_id: None,
                error: Some("bounced".to_owned()),
                permanent: true,
                at,
            }
            .into(),
        };
        self.append(
            district,
            &format!("delivery-{district}:{delivery}"),
            "delivery-worker",
            vec![event],
        )
        .await
    }
}

/// The delivery id of message `m` to `recipient` in these synthetic logs: one per
/// message and recipient, as the domain derives it for one conversation (no test here
/// reuses a message id in two conversations, except the one that says so and builds its
/// deliveries itself).
pub fn delivery_id_for(m: MessageId, recipient: PersonId) -> DeliveryId {
    homeroom_domain::delivery_id_for(ConversationId::new(uuid::Uuid::nil()), m, recipient)
}

pub fn conv_stream(district: &str, c: ConversationId) -> String {
    format!("conversation-{district}:{c}")
}

pub fn planned(m: MessageId, recipient: PersonId, text: &str) -> PlannedDelivery {
    PlannedDelivery {
        delivery_id: delivery_id_for(m, recipient),
        recipient_id: recipient,
        channel: if recipient.as_uuid().as_u128().is_multiple_of(2) {
            Channel::Sms
        } else {
            Channel::Email
        },
        address: Some("+15550100001".to_owned()),
        language: "en".to_owned(),
        text: text.to_owned(),
        subject: None,
    }
}

/// Small batches and quick retries, so tests exercise batching and finish fast.
pub fn fast() -> RuntimeConfig {
    RuntimeConfig {
        batch_size: 7,
        retry: crate::RetryPolicy {
            first_backoff: StdDuration::from_millis(1),
            max_backoff: StdDuration::from_millis(5),
            park_after: 3,
        },
    }
}

/// Every row of every table of the serving generations, by base table name.
pub async fn dump(runtime: &ProjectionRuntime, db: &ReadDb) -> Vec<(String, Vec<String>)> {
    let status = runtime.status().await.expect("status");
    let mut out = Vec::new();
    for projector in models::all() {
        let generation = status
            .iter()
            .find(|s| s.name == projector.name())
            .map(|s| Generation::new(s.generation))
            .expect("a serving generation");
        for table in projector.tables() {
            let rows = db
                .dump_table(&format!("{table}{}", generation.suffix()))
                .await;
            out.push(((*table).to_owned(), rows));
        }
    }
    out
}

/// Runs the live loop until the returned sender fires (or is dropped).
pub fn spawn_live(
    runtime: &ProjectionRuntime,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let rt = runtime.clone();
    let task = tokio::spawn(async move {
        rt.run(async {
            let _ = stopped.await;
        })
        .await
        .expect("the live loop runs");
    });
    (stop, task)
}

pub const WAIT: StdDuration = StdDuration::from_secs(10);

/// A conversation of a random history, as the generator remembers it.
pub struct Conv {
    pub district: &'static str,
    pub id: ConversationId,
    pub participants: Vec<PersonId>,
    pub messages: Vec<MessageId>,
}

/// Every person a random history registers (in both districts).
pub fn history_people() -> Vec<PersonId> {
    (1..=4).chain(10..=13).chain(20..=23).map(person).collect()
}

/// Appends a random but well-formed history: people in two districts, guardian links,
/// conversations of every kind, messages, reads, toggles, renames, stops and delivery
/// outcomes (in any order: the read model must cope). Returns the last position.
pub async fn random_history(
    w: &World,
    rng: &mut StdRng,
    ops: usize,
    convs: &mut Vec<Conv>,
) -> Position {
    let mut last = Position::START;
    let staff: Vec<PersonId> = (1..=4).map(person).collect();
    let students: Vec<PersonId> = (10..=13).map(person).collect();
    let guardians: Vec<PersonId> = (20..=23).map(person).collect();
    if convs.is_empty() {
        for d in [NORTH, SOUTH] {
            for (i, p) in staff.iter().enumerate() {
                w.register(d, *p, PersonKind::Staff, &format!("Staff {i}"))
                    .await;
            }
            for (i, p) in students.iter().enumerate() {
                w.register(d, *p, PersonKind::Student, &format!("Student {i}"))
                    .await;
            }
            for (i, p) in guardians.iter().enumerate() {
                w.register(d, *p, PersonKind::Guardian, &format!("Guardian {i}"))
                    .await;
                last = w.link(d, *p, students[i]).await;
            }
        }
    }
    let family: Vec<PersonId> = students.iter().chain(&guardians).copied().collect();
    for _ in 0..ops {
        let choice = if convs.is_empty() {
            0
        } else {
            rng.random_range(0..10)
        };
        if choice == 0 {
            let district = if rng.random_bool(0.8) { NORTH } else { SOUTH };
            let kind = match rng.random_range(0..3) {
                0 => ConversationKind::Personal,
                1 => ConversationKind::School,
                _ => ConversationKind::Group,
            };
            let mut participants = vec![staff[rng.random_range(0..staff.len())]];
            let others = if kind == ConversationKind::Group {
                rng.random_range(1..4)
            } else {
                1
            };
            while participants.len() < 1 + others {
                let pool = if rng.random_bool(0.3) {
                    &staff
                } else {
                    &family
                };
                let p = pool[rng.random_range(0..pool.len())];
                if !participants.contains(&p) {
                    participants.push(p);
                }
            }
            let n = convs.len() as u128;
            let (id, m) = (conversation(n), message(n * 1000));
            last = w
                .start(district, id, kind, &participants, m, &format!("start {n}"))
                .await;
            convs.push(Conv {
                district,
                id,
                participants,
                messages: vec![m],
            });
            continue;
        }
        let i = rng.random_range(0..convs.len());
        let c = &mut convs[i];
        let who = c.participants[rng.random_range(0..c.participants.len())];
        let (d, id) = (c.district, c.id);
        last = match choice {
            1..=3 => {
                let m = message(i as u128 * 1000 + c.messages.len() as u128);
                c.messages.push(m);
                let to: Vec<_> = c
                    .participants
                    .iter()
                    .copied()
                    .filter(|p| *p != who)
                    .collect();
                let body = format!("message {} in {i}", c.messages.len());
                w.post(d, id, m, who, &body, &to).await
            }
            4 => {
                let m = c.messages[rng.random_range(0..c.messages.len())];
                let e = MessagesRead {
                    conversation_id: id,
                    person_id: who,
                    up_to_message_id: m,
                    at: w.now(),
                };
                w.conv_event(d, id, who, e.into()).await
            }
            5 => {
                let at = w.now();
                let e: Event = match rng.random_range(0..4) {
                    0 => ConversationMuted {
                        conversation_id: id,
                        person_id: who,
                        at,
                    }
                    .into(),
                    1 => ConversationUnmuted {
                        conversation_id: id,
                        person_id: who,
                        at,
                    }
                    .into(),
                    2 => ConversationArchived {
                        conversation_id: id,
                        person_id: who,
                        at,
                    }
                    .into(),
                    _ => ConversationUnarchived {
                        conversation_id: id,
                        person_id: who,
                        at,
                    }
                    .into(),
                };
                w.conv_event(d, id, who, e).await
            }
            6 => {
                let e = ConversationRenamed {
                    conversation_id: id,
                    title: format!("Title {}", rng.random_range(0..100)),
                    by: who,
                    at: w.now(),
                };
                w.conv_event(d, id, who, e.into()).await
            }
            7 if rng.random_bool(0.2) => {
                let e = ConversationStopped {
                    conversation_id: id,
                    by: who,
                    at: w.now(),
                };
                w.conv_event(d, id, who, e.into()).await
            }
            _ => {
                let m = c.messages[rng.random_range(0..c.messages.len())];
                let to = c.participants[rng.random_range(0..c.participants.len())];
                let status = ["sent", "delivered", "failed"][rng.random_range(0..3)];
                w.outcome(d, delivery_id_for(m, to), status).await
            }
        };
    }
    last
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("views serialise")
}

/// Every page of a paged view, each page's JSON (with its `next`), following `next`
/// until the last page.
async fn pages<T, F, Fut>(
    size: u32,
    mut fetch: F,
    next: impl Fn(&T) -> Option<String>,
) -> Vec<String>
where
    T: serde::Serialize,
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut out = Vec::new();
    let mut request = PageRequest::of(size);
    for _ in 0..1000 {
        let page = fetch(request).await;
        out.push(json(&page));
        match next(&page) {
            Some(cursor) => request = PageRequest::after(size, cursor),
            None => return out,
        }
    }
    panic!("paging never ended");
}

/// What every query answers for every person and conversation of a random history:
/// both inboxes (whole and paged), students' records (with and without inbound
/// replies, whole and paged), oversight (every scope, text, participant and time
/// filter, paged), the audit trail (every filter, paged by position), threads as each
/// participant sees them, exports, people and deliveries. Compared across builds and
/// engines.
pub async fn answers(read: &ReadModels, convs: &[Conv]) -> Vec<String> {
    let mut out = Vec::new();
    let people = history_people();
    let day = Utc
        .with_ymd_and_hms(2025, 3, 10, 8, 0, 0)
        .single()
        .expect("a time");
    for d in [NORTH, SOUTH] {
        let district = district(d);
        let district = &district;
        for &p in &people {
            for archived in [false, true] {
                let inbox: Inbox = read
                    .inbox_personal(district, p, archived, &PageRequest::of(500))
                    .await
                    .unwrap();
                out.push(json(&inbox));
                let school = read
                    .inbox_school(district, &[school(1)], p, archived, &PageRequest::of(500))
                    .await
                    .unwrap();
                out.push(json(&school));
            }
            out.extend(
                pages(
                    3,
                    |page| async move {
                        read.inbox_personal(district, p, false, &page)
                            .await
                            .unwrap()
                    },
                    |i: &Inbox| i.next.clone(),
                )
                .await,
            );
            out.extend(
                pages(
                    2,
                    |page| async move {
                        read.inbox_school(district, &[school(1), school(2)], p, false, &page)
                            .await
                            .unwrap()
                    },
                    |i: &Inbox| i.next.clone(),
                )
                .await,
            );
            let every_school = vec![school(1), school(2)];
            for inbound in [every_school.clone(), vec![]] {
                let access = RecordAccess {
                    schools: every_school.clone(),
                    inbound_schools: inbound,
                };
                let record = read
                    .student_record(district, p, &access, &PageRequest::of(500))
                    .await
                    .unwrap();
                out.push(json(&record));
            }
            out.extend(
                pages(
                    4,
                    |page| async move {
                        let access = RecordAccess {
                            schools: vec![school(1), school(2)],
                            inbound_schools: vec![school(1), school(2)],
                        };
                        read.student_record(district, p, &access, &page)
                            .await
                            .unwrap()
                    },
                    |r: &StudentRecord| r.next.clone(),
                )
                .await,
            );
            out.push(json(&read.person(district, p).await.unwrap()));
        }
        let text = |q: &str| OversightFilter {
            q: Some(q.into()),
            ..Default::default()
        };
        let filters = [
            OversightFilter::default(),
            // Bodies, titles and participants' names, in other cases than stored.
            text("MESSAGE 2"),
            text("start 1"),
            text("title"),
            text("staff 1"),
            text("GUARDIAN"),
            // Wildcards match literally.
            text("50%_"),
            OversightFilter {
                participant: Some(person(20)),
                ..Default::default()
            },
            OversightFilter {
                since: Some(day + Duration::minutes(60)),
                until: Some(day + Duration::minutes(180)),
                ..Default::default()
            },
        ];
        for scope in [
            OversightScope::District,
            OversightScope::Schools(vec![school(1)]),
            OversightScope::Schools(vec![school(2)]),
        ] {
            for filter in &filters {
                let all = read
                    .oversight(district, &scope, filter, &PageRequest::of(500))
                    .await
                    .unwrap();
                out.push(json(&all));
            }
        }
        let scope = &OversightScope::District;
        out.extend(
            pages(
                3,
                |page| async move {
                    read.oversight(district, scope, &OversightFilter::default(), &page)
                        .await
                        .unwrap()
                },
                |o: &Oversight| o.next.clone(),
            )
            .await,
        );
        let mut audit_filters = vec![
            AuditFilter {
                limit: 1000,
                ..Default::default()
            },
            AuditFilter {
                actor: Some("sis".into()),
                limit: 1000,
                ..Default::default()
            },
            AuditFilter {
                actor: Some(person(1).to_string()),
                ..Default::default()
            },
            AuditFilter {
                since: Some(day + Duration::minutes(30)),
                until: Some(day + Duration::minutes(90)),
                limit: 1000,
                ..Default::default()
            },
        ];
        for c in convs.iter().filter(|c| c.district == d) {
            audit_filters.push(AuditFilter {
                stream: Some(conv_stream(d, c.id)),
                ..Default::default()
            });
        }
        for filter in &audit_filters {
            out.push(json(&read.audit(district, filter).await.unwrap()));
        }
        let mut filter = AuditFilter {
            limit: 7,
            ..Default::default()
        };
        for _ in 0..10_000 {
            let page = read.audit(district, &filter).await.unwrap();
            out.push(json(&page));
            match page.next {
                Some(after) => filter.after = Some(after),
                None => break,
            }
        }
    }
    for c in convs {
        let district = district(c.district);
        for viewer in std::iter::once(None).chain(c.participants.iter().copied().map(Some)) {
            let thread = read.conversation(&district, c.id, viewer).await.unwrap();
            out.push(json(&thread));
        }
        let export = read.export_conversation(&district, c.id).await.unwrap();
        out.push(export.map(|e| e.to_json_lines()).unwrap_or_default());
        for m in &c.messages {
            for p in &c.participants {
                let delivery = read
                    .delivery(&district, delivery_id_for(*m, *p))
                    .await
                    .unwrap();
                out.push(json(&delivery));
            }
        }
    }
    out
}

/// How a [`Counter`] misbehaves.
#[derive(Default)]
pub struct Plan {
    /// The sequence it fails (or hangs) at.
    pub at: Option<u64>,
    /// How many more times it fails there.
    pub failures: u32,
    /// Whether its failure is transient.
    pub transient: bool,
    /// Hang at `at` forever, after notifying this.
    pub hang: Option<Arc<tokio::sync::Notify>>,
}

/// Counts how often each event reaches it: `times` is deliberately incremented, not
/// upserted, so applying an event twice shows.
pub struct Counter {
    name: &'static str,
    tables: &'static [&'static str],
    plan: std::sync::Mutex<Plan>,
}

impl Counter {
    pub fn new(name: &'static str, tables: &'static [&'static str], plan: Plan) -> Arc<Self> {
        Arc::new(Self {
            name,
            tables,
            plan: std::sync::Mutex::new(plan),
        })
    }

    pub fn heal(&self) {
        self.plan.lock().unwrap().failures = 0;
    }

    fn sql(&self, engine: Engine, template: &str, generation: Generation) -> String {
        render_for(
            engine,
            &template.replace("@T", &format!("{}{{{}}}", self.tables[0], self.name)),
            self.name,
            generation,
        )
    }
}

#[async_trait]
impl Projector for Counter {
    fn name(&self) -> &'static str {
        self.name
    }

    fn version(&self) -> u32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        self.tables
    }

    fn schema(&self, engine: Engine, generation: Generation) -> Vec<String> {
        vec![self.sql(
            engine,
            "CREATE TABLE IF NOT EXISTS @T (sequence BIGINT PRIMARY KEY, times BIGINT NOT NULL)",
            generation,
        )]
    }

    async fn apply(
        &self,
        tx: &mut Tx<'_>,
        generation: Generation,
        recorded: &RecordedEvent,
        _event: &Event,
    ) -> Result<(), ProjectionError> {
        let sequence = recorded.position.sequence;
        let (fail, transient, hang) = {
            let mut plan = self.plan.lock().unwrap();
            let here = plan.at == Some(sequence);
            let fail = here && plan.failures > 0;
            if fail {
                plan.failures -= 1;
            }
            (fail, plan.transient, plan.hang.clone().filter(|_| here))
        };
        if let Some(hang) = hang {
            hang.notify_one();
            std::future::pending::<()>().await;
        }
        if fail {
            return Err(if transient {
                ProjectionError::Database(sqlx::Error::PoolTimedOut)
            } else {
                ProjectionError::Inconsistent {
                    projector: self.name,
                    event_type: recorded.event_type.clone(),
                    position: recorded.position,
                    reason: "told to fail",
                }
            });
        }
        let sql = self.sql(
            tx.engine(),
            "INSERT INTO @T (sequence, times) VALUES ($1, 1)
             ON CONFLICT (sequence) DO UPDATE SET times = @T.times + 1",
            generation,
        );
        query(&sql)
            .bind(i64::try_from(sequence).map_err(|_| ProjectionError::OutOfRange)?)
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// `(sequence, times)` rows of a counter's first generation, by sequence.
pub async fn counted(db: &ReadDb, table: &str) -> Vec<(i64, i64)> {
    let mut tx = db.begin_read().await.expect("a read transaction");
    let rows = query(&format!(
        "SELECT sequence, times FROM {table}_g1 ORDER BY sequence"
    ))
    .fetch_all(&mut tx)
    .await
    .expect("counter rows");
    rows.iter()
        .map(|r| (r.get(0).unwrap(), r.get(1).unwrap()))
        .collect()
}

/// Each of the first `n` sequences counted once.
pub fn once(n: i64) -> Vec<(i64, i64)> {
    (1..=n).map(|s| (s, 1)).collect()
}
