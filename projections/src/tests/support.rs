//! Test support: a fresh read database per test, the in-memory event store, and
//! builders of domain events appended with metadata the way the command service does.

use crate::projector::Generation;
use crate::sqlite::dump_table;
use crate::{models, ProjectionRuntime, Projector, ReadDb, ReadModels, RuntimeConfig};
use chrono::{DateTime, Duration, TimeZone, Utc};
use homeroom_domain::events::*;
use homeroom_domain::{
    delivery_id_for, Actor, Channel, ConversationId, ConversationKind, DeliveryId, DistrictId,
    Event, MessageId, PersonId, PersonKind, PlannedDelivery, SchoolId, SendAs,
};
use homeroom_eventstore::memory::InMemoryStore;
use homeroom_eventstore::{
    EventAppender, EventMetadata, EventStore, ExpectedVersion, NewEvent, Position, StreamId,
};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;
use tempfile::TempDir;
use uuid::Uuid;

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

/// A test's world: a store, a read database in a temporary directory, and a clock.
pub struct World {
    pub store: Arc<InMemoryStore>,
    pub dir: TempDir,
    minutes: AtomicI64,
}

impl World {
    pub fn new() -> Self {
        Self {
            store: Arc::new(InMemoryStore::new()),
            dir: tempfile::tempdir().expect("a temporary directory"),
            minutes: AtomicI64::new(0),
        }
    }

    pub fn path(&self) -> std::path::PathBuf {
        ReadDb::default_path(self.dir.path())
    }

    pub async fn db(&self) -> ReadDb {
        ReadDb::open(&self.path())
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
        let runtime =
            ProjectionRuntime::open(self.dyn_store(), self.db().await, projectors, config)
                .await
                .expect("the runtime opens");
        let read = runtime.read_models();
        (runtime, read)
    }

    /// Every event in the store.
    pub async fn store_events(&self) -> Vec<homeroom_eventstore::RecordedEvent> {
        use homeroom_eventstore::EventReader;
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
            at: self.now(),
        }
        .into()
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
            let rows = dump_table(db, &format!("{table}{}", generation.suffix())).await;
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
