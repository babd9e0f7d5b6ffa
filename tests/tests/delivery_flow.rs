//! Delivery end to end in one process: the reactor and a worker on in-process queues
//! over a real store, with scripted providers, so every promise of the delivery rules is
//! checked against the events it records: queued → sent → delivered, the sending number,
//! fallback from a failed email to SMS and back after a reset, STOP and START, retried
//! attempts with stable idempotency keys, the shared-phone label, and inbound replies
//! routed, refused or kept as unroutable.

use async_trait::async_trait;
use futures::StreamExt;
use homeroom_app::codec;
use homeroom_app::preview::{PhoneBook, PhoneBookLookup};
use homeroom_app::CommandContext;
use homeroom_bus::inprocess::{InProcessConfig, InProcessQueue};
use homeroom_bus::WorkQueue;
use homeroom_channels::sandbox::Untranslated;
use homeroom_channels::{
    AttemptKey, ChannelError, EmailSender, Handover, OutboundEmail, OutboundSms, SmsSender,
};
use homeroom_delivery::inbound::{reply_command_id, InboundSms, IncomingSms};
use homeroom_delivery::reactor::{Reactor, ReactorConfig, REACTS_TO};
use homeroom_delivery::worker::{Channels, Worker, WorkerConfig, WORKS_ON};
use homeroom_domain::commands::{ReceiveReply, ReceiveSms};
use homeroom_domain::inbound::{InboundRoute, UnroutableReason};
use homeroom_domain::{Actor, ConversationId, DistrictId, Event, PersonId, ProviderMessageId};
use homeroom_eventstore::memory::InMemoryStore;
use homeroom_eventstore::{EventReader, EventStore, EventSubscriber, Position, RecordedEvent};
use homeroom_tests::District;
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(20);

/// One hand-over a provider saw.
#[derive(Debug, Clone)]
struct Sent {
    from: String,
    to: String,
    body: String,
    /// An email's subject.
    subject: Option<String>,
    key: AttemptKey,
}

/// One scripted answer of a provider.
type Answer = fn() -> Result<Handover, ChannelError>;

/// A provider that answers from a script per address (default: delivered) and
/// remembers what it was handed.
#[derive(Default)]
struct Provider {
    sent: Mutex<Vec<Sent>>,
    script: Mutex<HashMap<String, VecDeque<Answer>>>,
    /// Addresses whose next hand-over takes this long (a provider hanging on one
    /// request).
    slow: Mutex<HashMap<String, Duration>>,
}

impl Provider {
    fn hang_once(&self, to: &str, wait: Duration) {
        self.slow.lock().unwrap().insert(to.to_owned(), wait);
    }

    async fn hang_if_slow(&self, to: &str) {
        let wait = self.slow.lock().unwrap().remove(to);
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }

    fn answer(&self, to: &str, answer: Answer) {
        self.script
            .lock()
            .unwrap()
            .entry(to.to_owned())
            .or_default()
            .push_back(answer);
    }

    fn hand_over(&self, sent: Sent) -> Result<Handover, ChannelError> {
        let next = self
            .script
            .lock()
            .unwrap()
            .get_mut(&sent.to)
            .and_then(VecDeque::pop_front);
        let id = sent.key.as_header_value();
        self.sent.lock().unwrap().push(sent);
        match next {
            Some(answer) => answer(),
            None => Ok(Handover::Delivered {
                provider_message_id: Some(format!("P-{id}")),
            }),
        }
    }

    fn to(&self, address: &str) -> Vec<Sent> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.to == address)
            .cloned()
            .collect()
    }
}

#[async_trait]
impl SmsSender for Provider {
    async fn send_sms(&self, sms: &OutboundSms) -> Result<Handover, ChannelError> {
        self.hang_if_slow(&sms.to).await;
        self.hand_over(Sent {
            from: sms.from.clone(),
            to: sms.to.clone(),
            body: sms.body.clone(),
            subject: None,
            key: sms.key,
        })
    }
}

#[async_trait]
impl EmailSender for Provider {
    async fn send_email(&self, email: &OutboundEmail) -> Result<Handover, ChannelError> {
        self.hang_if_slow(&email.to).await;
        self.hand_over(Sent {
            from: email.from_name.clone(),
            to: email.to.clone(),
            body: email.body.clone(),
            subject: Some(email.subject.clone()),
            key: email.key,
        })
    }
}

/// A phone book where every number is also someone else's, or nobody's.
struct Book {
    shared: bool,
}

impl PhoneBook for Book {
    fn people_with_number<'a>(
        &'a self,
        _district: &'a DistrictId,
        _number: &'a str,
    ) -> PhoneBookLookup<'a> {
        let someone_else = PersonId::new(Uuid::from_u128(0x5a4ed));
        let found = if self.shared {
            vec![someone_else]
        } else {
            vec![]
        };
        Box::pin(async move { Ok(found) })
    }
}

const NOBODY_SHARES: Book = Book { shared: false };

/// A phone book listing the people a test registered on one phone, once it has.
#[derive(Default)]
struct OnePhone {
    holders: std::sync::Mutex<Vec<PersonId>>,
}

impl PhoneBook for OnePhone {
    fn people_with_number<'a>(
        &'a self,
        _district: &'a DistrictId,
        _number: &'a str,
    ) -> PhoneBookLookup<'a> {
        let found = self.holders.lock().unwrap().clone();
        Box::pin(async move { Ok(found) })
    }
}

fn bounce() -> Result<Handover, ChannelError> {
    Err(ChannelError::Refused {
        code: "550".into(),
        message: "mailbox unavailable".into(),
        permanent: true,
    })
}

fn unknown_destination() -> Result<Handover, ChannelError> {
    Err(ChannelError::Refused {
        code: "30005".into(),
        message: "unknown destination handset".into(),
        permanent: true,
    })
}

fn down() -> Result<Handover, ChannelError> {
    Err(ChannelError::Unavailable("503 from the provider".into()))
}

/// A district with the delivery runtime running on in-process queues.
struct Flow {
    d: District,
    store: Arc<InMemoryStore>,
    provider: Arc<Provider>,
    inbound: InboundSms,
    queues: Vec<InProcessQueue>,
    _dir: tempfile::TempDir,
}

impl Flow {
    async fn start(phones: Arc<dyn PhoneBook>) -> Self {
        Self::start_translating(phones, Arc::new(Untranslated)).await
    }

    async fn start_translating(
        phones: Arc<dyn PhoneBook>,
        translator: Arc<dyn homeroom_channels::Translator>,
    ) -> Self {
        Self::start_with_backoff(phones, translator, Duration::from_millis(20)).await
    }

    /// A flow whose worker waits `first_backoff` before its first retry.
    async fn start_with_backoff(
        phones: Arc<dyn PhoneBook>,
        translator: Arc<dyn homeroom_channels::Translator>,
        first_backoff: Duration,
    ) -> Self {
        Self::start_with(phones, translator, first_backoff, Duration::from_secs(5), 1).await
    }

    /// A flow with `workers` workers sharing one delivery queue that hands an item out
    /// again after `ack_wait` unsettled.
    async fn start_with(
        phones: Arc<dyn PhoneBook>,
        translator: Arc<dyn homeroom_channels::Translator>,
        first_backoff: Duration,
        ack_wait: Duration,
        workers: usize,
    ) -> Self {
        let store = Arc::new(InMemoryStore::new());
        let shared: Arc<dyn EventStore> = store.clone();
        let d = District::build(shared.clone(), "flowtown").await;
        let dir = tempfile::tempdir().unwrap();
        let config = InProcessConfig {
            ack_wait,
            ..InProcessConfig::default()
        };
        let reactions = InProcessQueue::open(
            shared.clone(),
            &dir.path().join("reactions.checkpoint"),
            REACTS_TO,
            config.clone(),
        )
        .unwrap();
        let deliveries = InProcessQueue::open(
            shared,
            &dir.path().join("deliveries.checkpoint"),
            WORKS_ON,
            config,
        )
        .unwrap();
        let provider = Arc::new(Provider::default());
        let reactor = Reactor::new(d.service.clone(), phones.clone(), ReactorConfig::default());
        let q: Arc<dyn WorkQueue> = Arc::new(reactions.clone());
        tokio::spawn(async move { reactor.run(q, std::future::pending()).await });
        // Each worker on its own, as in separate processes: nothing shared but the queue.
        for _ in 0..workers {
            let worker = Worker::new(
                d.service.clone(),
                Channels {
                    sms: provider.clone(),
                    email: provider.clone(),
                    translator: translator.clone(),
                    phones: phones.clone(),
                },
                WorkerConfig {
                    first_backoff,
                    max_backoff: first_backoff.max(Duration::from_millis(100)),
                    ..WorkerConfig::default()
                },
            );
            let q: Arc<dyn WorkQueue> = Arc::new(deliveries.clone());
            tokio::spawn(async move { worker.run(q, std::future::pending()).await });
        }
        Self {
            inbound: InboundSms::new(d.service.clone(), translator),
            d,
            store,
            provider,
            queues: vec![reactions, deliveries],
            _dir: dir,
        }
    }

    /// Waits for the first recorded event (from the start of the log) that `matches`.
    async fn until(&self, what: &str, matches: impl Fn(&Event) -> bool) -> RecordedEvent {
        let mut events = self.store.subscribe_all(Position::START);
        tokio::time::timeout(PATIENCE, async {
            while let Some(Ok(recorded)) = events.next().await {
                if codec::decode(&recorded).is_ok_and(|e| matches(&e)) {
                    return recorded;
                }
            }
            panic!("the log ended before {what}");
        })
        .await
        .unwrap_or_else(|_| panic!("no {what} within {PATIENCE:?}"))
    }

    async fn message(&self, author: Uuid, recipient: Uuid, body: &str) -> Uuid {
        self.d
            .by(
                author,
                "SendPersonalMessage",
                json!({"recipient_id": recipient, "body": body}),
            )
            .await
            .unwrap()
            .delivery_ids[0]
            .as_uuid()
    }

    /// Homer, a guardian who prefers email (homer@example.org) and also has a phone
    /// (+15550003001).
    async fn homer_by_email_with_a_phone(&self) -> Uuid {
        let guardian = Uuid::now_v7();
        self.d
            .system(
                "RegisterPerson",
                json!({"person_id": guardian, "kind": "guardian", "name": "Homer", "school_ids": [self.d.school],
                       "preferred_channel": "email",
                       "contact_points": [{"channel": "email", "address": "homer@example.org"},
                                          {"channel": "sms", "address": "+15550003001"}]}),
            )
            .await;
        guardian
    }

    /// Homer, a guardian texted at `phone` (guardians default to SMS) who also has an
    /// email address (homer@example.org).
    async fn homer_by_sms_with_an_email(&self, phone: &str) -> Uuid {
        let guardian = Uuid::now_v7();
        self.d
            .system(
                "RegisterPerson",
                json!({"person_id": guardian, "kind": "guardian", "name": "Homer", "school_ids": [self.d.school],
                       "contact_points": [{"channel": "sms", "address": phone},
                                          {"channel": "email", "address": "homer@example.org"}]}),
            )
            .await;
        guardian
    }

    async fn delivered(&self, delivery: Uuid) -> RecordedEvent {
        self.until(
            "the delivery arriving",
            |e| matches!(e, Event::DeliveryDelivered(d) if d.delivery_id.as_uuid() == delivery),
        )
        .await
    }

    async fn reply(
        &self,
        from: &str,
        to: &str,
        body: &str,
    ) -> homeroom_delivery::inbound::Received {
        self.reply_with_media(from, to, body, &[]).await
    }

    /// An MMS: `body` (perhaps empty) with pictures at `media_urls`.
    async fn reply_with_media(
        &self,
        from: &str,
        to: &str,
        body: &str,
        media_urls: &[&str],
    ) -> homeroom_delivery::inbound::Received {
        self.inbound
            .receive(IncomingSms {
                message_sid: ProviderMessageId::parse(&format!("SM{}", Uuid::now_v7().simple()))
                    .unwrap(),
                from: from.into(),
                to: to.into(),
                body: body.into(),
                media_urls: media_urls.iter().map(|&u| u.to_owned()).collect(),
            })
            .await
            .unwrap()
    }

    /// A conversation the teacher started with the parent, texted to them (so their
    /// SMS line points at it), then stopped.
    async fn stopped_conversation_with_the_parent(&self) -> Uuid {
        let conversation = self.conversation_texted_to_the_parent().await;
        self.d
            .by(
                self.d.teacher,
                "StopConversation",
                json!({"conversation_id": conversation}),
            )
            .await
            .unwrap();
        conversation
    }

    /// A conversation the teacher started with the parent, texted to them: their SMS
    /// line points at it.
    async fn conversation_texted_to_the_parent(&self) -> Uuid {
        let conversation = Uuid::now_v7();
        let started = self
            .d
            .by(
                self.d.teacher,
                "StartConversation",
                json!({"conversation_id": conversation, "school_id": self.d.school,
                       "participant_ids": [self.d.parent], "body": "Field trip Friday"}),
            )
            .await
            .unwrap();
        self.delivered(started.delivery_ids[0].as_uuid()).await;
        self.until(
            "the SMS line",
            |e| matches!(e, Event::SmsLineUsed(l) if l.conversation_id.as_uuid() == conversation),
        )
        .await;
        conversation
    }

    fn stop(self) {
        for q in &self.queues {
            q.close();
        }
    }
}

/// The school number of the district the flow builds.
fn school_number() -> String {
    homeroom_tests::school_number_of("flowtown")
}
const PARENT_NUMBER: &str = "+15550002003";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_personal_sms_goes_out_and_its_reply_lands_in_the_conversation() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    let delivery = f
        .message(f.d.principal, f.d.parent, "Hi {student_name}'s family")
        .await;
    let sent = f
        .until(
            "the sent SMS",
            |e| matches!(e, Event::DeliverySent(s) if s.delivery_id.as_uuid() == delivery),
        )
        .await;
    f.delivered(delivery).await;
    let Ok(Event::DeliverySent(sent)) = codec::decode(&sent) else {
        unreachable!()
    };
    assert_eq!(
        sent.sender.as_deref(),
        Some(school_number().as_str()),
        "no pool: the school's number"
    );
    assert_eq!(
        sent.sent_text.as_deref(),
        Some("Hi Dennis's family\n- Principal Skinner"),
        "a personal text says who sent it"
    );
    let handed = f.provider.to(PARENT_NUMBER);
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].key.attempt, 1);

    // The line is recorded, and the family's reply lands in the conversation.
    f.until("the SMS line", |e| matches!(e, Event::SmsLineUsed(_)))
        .await;
    let received = f
        .reply(
            PARENT_NUMBER,
            school_number().as_str(),
            "Thanks, see you Friday",
        )
        .await;
    let InboundRoute::Conversation { message_id, .. } = received.route else {
        panic!("routed elsewhere: {:?}", received.route)
    };
    let posted = f
        .until(
            "the reply",
            |e| matches!(e, Event::MessagePosted(m) if m.message_id == message_id),
        )
        .await;
    let Ok(Event::MessagePosted(posted)) = codec::decode(&posted) else {
        unreachable!()
    };
    assert_eq!(posted.author_id.as_uuid(), f.d.parent);
    assert_eq!(posted.body, "Thanks, see you Friday");
    assert_eq!(
        posted.deliveries[0].recipient_id.as_uuid(),
        f.d.principal,
        "the staff member gets the reply"
    );
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_picture_sent_without_words_reaches_the_conversation_and_is_kept() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    let delivery = f.message(f.d.principal, f.d.parent, "Send the form?").await;
    f.delivered(delivery).await;
    f.until("the SMS line", |e| matches!(e, Event::SmsLineUsed(_)))
        .await;
    let picture = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1";
    let received = f
        .reply_with_media(PARENT_NUMBER, school_number().as_str(), "", &[picture])
        .await;
    let InboundRoute::Conversation { message_id, .. } = received.route else {
        panic!("a picture is a reply like any other: {:?}", received.route)
    };
    let posted = f
        .until(
            "the reply",
            |e| matches!(e, Event::MessagePosted(m) if m.message_id == message_id),
        )
        .await;
    let Ok(Event::MessagePosted(posted)) = codec::decode(&posted) else {
        unreachable!()
    };
    assert_eq!(posted.body, format!("Attachment: {picture}"));
    let kept = f
        .until(
            "the SMS as received",
            |e| matches!(e, Event::InboundSmsReceived(r) if r.body.is_empty()),
        )
        .await;
    let Ok(Event::InboundSmsReceived(kept)) = codec::decode(&kept) else {
        unreachable!()
    };
    assert_eq!(kept.media_urls, vec![picture.to_owned()]);
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guardians_message_in_a_group_texts_the_others_from_the_schools_number() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    // A pool exists, but only staff get numbers of their own.
    f.d.system("AddSenderNumbers", json!({"numbers": ["+15550009001"]}))
        .await;
    let other = Uuid::now_v7();
    f.d.system(
        "RegisterPerson",
        json!({"person_id": other, "kind": "guardian", "name": "Ned", "school_ids": [f.d.school],
               "contact_points": [{"channel": "sms", "address": "+15550003003"}]}),
    )
    .await;
    let conversation = Uuid::now_v7();
    let started =
        f.d.by(
            f.d.principal,
            "StartConversation",
            json!({"conversation_id": conversation, "school_id": f.d.school, "title": "Bake sale",
                   "participant_ids": [f.d.parent, other], "body": "Who can help?"}),
        )
        .await
        .unwrap();
    for delivery in &started.delivery_ids {
        f.delivered(delivery.as_uuid()).await;
    }
    let posted =
        f.d.by(
            f.d.parent,
            "PostMessage",
            json!({"conversation_id": conversation, "message_id": Uuid::now_v7(),
                   "body": "I can bring cookies"}),
        )
        .await
        .unwrap();
    for delivery in &posted.delivery_ids {
        f.delivered(delivery.as_uuid()).await;
    }
    let to_ned = f.provider.to("+15550003003");
    let cookies = to_ned
        .iter()
        .find(|s| s.body.contains("cookies"))
        .expect("Ned got Marge's message");
    assert_eq!(cookies.from, school_number().as_str());
    assert_eq!(
        cookies.body, "I can bring cookies\n- Marge",
        "relayed from the school's number, a parent's words say whose they are"
    );
    let who_can_help = to_ned
        .iter()
        .find(|s| s.body.contains("Who can help?"))
        .expect("Ned got the principal's message");
    assert_eq!(
        who_can_help.body, "Who can help?\n- Principal Skinner",
        "from the principal's own identity, signed with the principal's name"
    );
    let log = f.store.read_all(Position::START, 10_000).await.unwrap();
    assert!(
        !log.iter()
            .any(|e| e.event_type == "delivery_attempt_failed"),
        "nothing had to be retried"
    );
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaction_a_rule_refuses_every_time_is_given_up_not_retried_for_ever() {
    use homeroom_domain::events::{DeliveryFailed, DeliveryQueued};
    use homeroom_domain::{Channel, DeliveryId, MessageId, PlannedDelivery};
    use homeroom_eventstore::{EventAppender, EventMetadata, ExpectedVersion, StreamId};
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    // A delivery to somebody the directory never heard of fails for good: marking their
    // phone failing is refused (`unknown_person`), on every try.
    let delivery = DeliveryId::new(Uuid::now_v7());
    let at = chrono::Utc::now();
    let events: Vec<Event> = vec![
        DeliveryQueued {
            delivery: PlannedDelivery {
                delivery_id: delivery,
                recipient_id: PersonId::new(Uuid::now_v7()),
                channel: Channel::Sms,
                address: Some("+15550007007".into()),
                language: "en".into(),
                text: "Hello".into(),
                subject: None,
            },
            message_id: MessageId::new(Uuid::now_v7()),
            conversation_id: homeroom_domain::ConversationId::new(Uuid::now_v7()),
            fallback_of: None,
            sender: None,
            at,
        }
        .into(),
        DeliveryFailed {
            delivery_id: delivery,
            provider_message_id: None,
            error: Some("bounced".into()),
            permanent: true,
            at,
        }
        .into(),
    ];
    let metadata = EventMetadata {
        district: f.d.district.as_str().to_owned(),
        school: None,
        actor: "delivery-worker".into(),
        correlation_id: Uuid::now_v7(),
        causation_id: Uuid::now_v7(),
        command_id: Uuid::now_v7(),
        command_digest: None,
    };
    let stream = StreamId::parse(format!("delivery-{}:{delivery}", f.d.district)).unwrap();
    let appended = f
        .store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            events
                .iter()
                .map(|e| codec::encode(e, metadata.clone()))
                .collect(),
        )
        .await
        .unwrap();
    // The reactor gives the reaction up and moves on: its queue's checkpoint passes it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while f.queues[0].checkpoint() < appended.position {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refused reaction still holds the reactions queue at {:?}",
            f.queues[0].checkpoint()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the pipeline still works.
    let next = f.message(f.d.principal, f.d.parent, "Still here").await;
    f.delivered(next).await;
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_personal_sender_gets_their_own_number_from_the_pool() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    f.d.system(
        "AddSenderNumbers",
        json!({"numbers": ["+15550009001", "+15550009002"]}),
    )
    .await;
    let delivery = f
        .message(f.d.principal, f.d.parent, "From my own number")
        .await;
    f.delivered(delivery).await;
    assert_eq!(f.provider.to(PARENT_NUMBER)[0].from, "+15550009001");
    let bound = f
        .until("the number bound to its sender", |e| {
            matches!(e, Event::SmsNumberBound(b) if b.number.as_str() == "+15550009001"
                && matches!(b.owner, homeroom_domain::NumberOwner::Person(_)))
        })
        .await;
    assert_eq!(bound.stream.as_str(), "smsnumber-+15550009001");
    // The number nobody has yet is held for the district, so no other district can
    // take it before it is used.
    f.until("the unused pool number held", |e| {
        matches!(e, Event::SmsNumberBound(b) if b.number.as_str() == "+15550009002"
            && b.owner == homeroom_domain::NumberOwner::Pool)
    })
    .await;
    // A reply to the personal number reaches the personal conversation.
    f.until("the SMS line", |e| matches!(e, Event::SmsLineUsed(_)))
        .await;
    let received = f.reply(PARENT_NUMBER, "+15550009001", "Got it").await;
    assert!(
        matches!(received.route, InboundRoute::Conversation { .. }),
        "{:?}",
        received.route
    );
    // A school message still goes from the school's number.
    let school_conversation = Uuid::now_v7();
    let started =
        f.d.by(
            f.d.principal,
            "StartConversation",
            json!({"conversation_id": school_conversation, "school_id": f.d.school,
                   "participant_ids": [f.d.parent], "body": "From the office", "from": "school"}),
        )
        .await
        .unwrap();
    f.delivered(started.delivery_ids[0].as_uuid()).await;
    assert_eq!(
        f.provider.to(PARENT_NUMBER)[1].from,
        school_number().as_str()
    );
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_email_goes_by_sms_and_later_messages_follow_until_the_reset() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    let guardian = f.homer_by_email_with_a_phone().await;
    f.provider.answer("homer@example.org", bounce);
    let first = f
        .message(f.d.principal, guardian, "Report cards are out")
        .await;
    let failed = f
        .until(
            "the bounce",
            |e| matches!(e, Event::DeliveryFailed(d) if d.delivery_id.as_uuid() == first),
        )
        .await;
    assert_eq!(failed.stream.category(), "delivery");
    let fallback = homeroom_domain::fallback_delivery_id(homeroom_domain::DeliveryId::new(first));
    f.delivered(fallback.as_uuid()).await;
    let by_sms = f.provider.to("+15550003001");
    assert_eq!(by_sms.len(), 1);
    assert_eq!(by_sms[0].body, "Report cards are out\n- Principal Skinner");
    f.until(
        "the address marked failing",
        |e| matches!(e, Event::ContactPointFailing(c) if c.address == "homer@example.org"),
    )
    .await;

    // The next message goes by SMS straight away.
    let second = f.message(f.d.principal, guardian, "Picture day").await;
    f.delivered(second).await;
    assert_eq!(f.provider.to("+15550003001").len(), 2);
    assert_eq!(f.provider.to("homer@example.org").len(), 1);

    // Reset: email again.
    f.d.system(
        "ResetContactPoint",
        json!({"person_id": guardian, "address": "homer@example.org"}),
    )
    .await;
    let third = f.message(f.d.principal, guardian, "Back to email").await;
    f.delivered(third).await;
    assert_eq!(f.provider.to("homer@example.org").len(), 2);
    f.stop();
}

fn panics() -> Result<Handover, ChannelError> {
    panic!("a Display implementation returned an error unexpectedly")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_adapter_that_panics_fails_that_delivery_and_the_worker_goes_on() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    let guardian = f.homer_by_email_with_a_phone().await;
    f.provider.answer("homer@example.org", panics);
    let first = f.message(f.d.principal, guardian, "Report cards").await;
    let failed = f
        .until(
            "the failed email",
            |e| matches!(e, Event::DeliveryFailed(d) if d.delivery_id.as_uuid() == first),
        )
        .await;
    let Ok(Event::DeliveryFailed(failed)) = homeroom_app::codec::decode(&failed) else {
        panic!("a delivery_failed event");
    };
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("adapter_failed")),
        "{failed:?}"
    );
    // It falls back by SMS, and the worker goes on with what comes next.
    let fallback = homeroom_domain::fallback_delivery_id(homeroom_domain::DeliveryId::new(first));
    f.delivered(fallback.as_uuid()).await;
    let second = f.message(f.d.principal, guardian, "Picture day").await;
    f.delivered(second).await;
    assert_eq!(f.provider.to("homer@example.org").len(), 2, "email again");
    // Our adapter failed, not the family's address.
    let log = f.store.read_all(Position::START, 10_000).await.unwrap();
    assert!(!log.iter().any(|e| e.event_type == "contact_point_failing"));
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_that_bounces_after_it_was_accepted_goes_by_sms() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    let guardian = f.homer_by_email_with_a_phone().await;
    let first = f
        .message(f.d.principal, guardian, "Report cards are out")
        .await;
    f.delivered(first).await;
    // Later, the mailbox's server sends the bounce back (reported by whoever reads it).
    let bounce = f
        .d
        .system(
            "RecordDeliveryOutcome",
            json!({"delivery_id": first, "status": "failed", "error": "550 mailbox full", "permanent": true}),
        )
        .await;
    assert_eq!(bounce.events.len(), 1, "the bounce is recorded");
    let fallback = homeroom_domain::fallback_delivery_id(homeroom_domain::DeliveryId::new(first));
    f.delivered(fallback.as_uuid()).await;
    let by_sms = f.provider.to("+15550003001");
    assert_eq!(by_sms.len(), 1);
    assert_eq!(by_sms[0].body, "Report cards are out\n- Principal Skinner");
    f.until(
        "the address marked failing",
        |e| matches!(e, Event::ContactPointFailing(c) if c.address == "homer@example.org"),
    )
    .await;
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_blocks_texts_from_that_number_until_start() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    let first = f.message(f.d.principal, f.d.parent, "Hello").await;
    f.delivered(first).await;
    let stop = f
        .reply(PARENT_NUMBER, school_number().as_str(), " stop ")
        .await;
    assert!(matches!(stop.route, InboundRoute::Keyword { .. }));
    assert!(stop.reply.unwrap().contains("START"));
    let blocked = f.message(f.d.principal, f.d.parent, "Are you there?").await;
    let failed = f
        .until(
            "the refusal",
            |e| matches!(e, Event::DeliveryFailed(d) if d.delivery_id.as_uuid() == blocked),
        )
        .await;
    let Ok(Event::DeliveryFailed(failed)) = codec::decode(&failed) else {
        unreachable!()
    };
    assert!(
        !failed.permanent,
        "an opt-out bars the number it was sent to, not the parent's phone"
    );
    assert!(failed.error.unwrap().contains("STOP"));
    assert_eq!(
        f.provider.to(PARENT_NUMBER).len(),
        1,
        "nothing more went to the number"
    );
    f.reply(PARENT_NUMBER, school_number().as_str(), "START")
        .await;
    f.until("the opt-in", |e| matches!(e, Event::SmsOptedIn(_)))
        .await;
    let again = f.message(f.d.principal, f.d.parent, "Welcome back").await;
    f.delivered(again).await;
    assert_eq!(f.provider.to(PARENT_NUMBER).len(), 2);
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_from_a_phone_a_carrier_marked_failing_brings_texts_back() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    let guardian = f.homer_by_sms_with_an_email("+15550003003").await;
    // The first text is sent; the carrier refuses the next one for good: the phone is
    // marked failing and that text goes by email.
    let first = f.message(f.d.principal, guardian, "Hello").await;
    f.delivered(first).await;
    f.provider.answer("+15550003003", unknown_destination);
    let refused = f.message(f.d.principal, guardian, "Bus times").await;
    f.until(
        "the carrier's refusal",
        |e| matches!(e, Event::DeliveryFailed(d) if d.delivery_id.as_uuid() == refused),
    )
    .await;
    f.until(
        "the phone marked failing",
        |e| matches!(e, Event::ContactPointFailing(c) if c.address == "+15550003003"),
    )
    .await;
    let by_email = f.message(f.d.principal, guardian, "Picture day").await;
    f.delivered(by_email).await;
    assert_eq!(
        f.provider.to("homer@example.org").len(),
        2,
        "the refused text and the next"
    );

    // Homer texts START without ever having sent STOP: the phone works, texts come back.
    let start = f
        .reply("+15550003003", school_number().as_str(), "START")
        .await;
    assert!(matches!(start.route, InboundRoute::Keyword { .. }));
    f.until(
        "the phone trusted again",
        |e| matches!(e, Event::ContactPointReset(c) if c.address == "+15550003003"),
    )
    .await;
    let by_sms = f.message(f.d.principal, guardian, "Welcome back").await;
    f.delivered(by_sms).await;
    assert_eq!(
        f.provider.to("+15550003003").last().unwrap().body,
        "Welcome back\n- Principal Skinner"
    );
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_from_a_shared_phone_brings_texts_back_to_everyone_on_it() {
    let book = Arc::new(OnePhone::default());
    let f = Flow::start(book.clone()).await;
    let homer = f.homer_by_sms_with_an_email("+15550003003").await;
    let marge = Uuid::now_v7();
    f.d.system(
        "RegisterPerson",
        json!({"person_id": marge, "kind": "guardian", "name": "Marge", "school_ids": [f.d.school],
               "contact_points": [{"channel": "sms", "address": "+15550003003"}]}),
    )
    .await;
    *book.holders.lock().unwrap() = vec![PersonId::new(homer), PersonId::new(marge)];
    // The carrier refuses a text for Homer: his copy of the phone is marked failing,
    // and his texts go by email. Marge is texted on it after.
    f.provider.answer("+15550003003", unknown_destination);
    let refused = f.message(f.d.principal, homer, "Bus times").await;
    f.until(
        "the phone marked failing for Homer",
        |e| matches!(e, Event::ContactPointFailing(c) if c.address == "+15550003003"),
    )
    .await;
    f.until(
        "the refused text by email",
        |e| matches!(e, Event::DeliveryQueued(q) if q.fallback_of.map(|d| d.as_uuid()) == Some(refused)),
    )
    .await;
    let to_marge = f.message(f.d.principal, marge, "Hello Marge").await;
    f.delivered(to_marge).await;
    f.until(
        "the SMS line",
        |e| matches!(e, Event::SmsLineUsed(l) if l.recipient_id == PersonId::new(marge)),
    )
    .await;

    // START from the phone: the line was last texted for Marge, and Homer's mark goes too.
    f.reply("+15550003003", school_number().as_str(), "START")
        .await;
    f.until(
        "Homer's phone trusted again",
        |e| matches!(e, Event::ContactPointReset(c) if c.person_id == PersonId::new(homer)),
    )
    .await;
    let by_sms = f.message(f.d.principal, homer, "Welcome back").await;
    f.delivered(by_sms).await;
    assert_eq!(
        f.provider.to("+15550003003").last().unwrap().body,
        "For Homer: Welcome back\n- Principal Skinner"
    );
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_to_one_number_leaves_texts_from_other_numbers_and_falls_back_to_email() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    f.d.system("AddSenderNumbers", json!({"numbers": ["+15550009001"]}))
        .await;
    let guardian = f.homer_by_sms_with_an_email("+15550003002").await;
    let first = f.message(f.d.principal, guardian, "From my number").await;
    f.delivered(first).await;
    assert_eq!(f.provider.to("+15550003002")[0].from, "+15550009001");
    f.until("the SMS line", |e| matches!(e, Event::SmsLineUsed(_)))
        .await;
    f.reply("+15550003002", "+15550009001", "STOP").await;

    // The principal's own number may not text Homer: this message goes by email.
    let blocked = f.message(f.d.principal, guardian, "Field trip").await;
    let fallback = homeroom_domain::fallback_delivery_id(homeroom_domain::DeliveryId::new(blocked));
    f.delivered(fallback.as_uuid()).await;
    let emails = f.provider.to("homer@example.org");
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].body, "Field trip");

    // The school's number still texts him, and nothing marked his phone failing.
    let started =
        f.d.by(
            f.d.principal,
            "StartConversation",
            json!({"conversation_id": Uuid::now_v7(), "school_id": f.d.school,
                   "participant_ids": [guardian], "body": "From the office", "from": "school"}),
        )
        .await
        .unwrap();
    f.delivered(started.delivery_ids[0].as_uuid()).await;
    let texts = f.provider.to("+15550003002");
    assert_eq!(texts.len(), 2, "one text before STOP, one from the school");
    assert_eq!(texts[1].from, school_number().as_str());
    let log = f.store.read_all(Position::START, 10_000).await.unwrap();
    assert!(
        !log.iter().any(|e| e.event_type == "contact_point_failing"),
        "an opt-out is not a failing contact point"
    );
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_does_not_answer_is_retried_with_the_same_key() {
    // It may have taken the message each time: the same idempotency key lets it send
    // the text at most once.
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    f.provider.answer(PARENT_NUMBER, down);
    f.provider.answer(PARENT_NUMBER, down);
    let delivery = f.message(f.d.principal, f.d.parent, "Try again").await;
    f.delivered(delivery).await;
    let keys: Vec<u32> = f
        .provider
        .to(PARENT_NUMBER)
        .iter()
        .map(|s| s.key.attempt)
        .collect();
    assert_eq!(keys, vec![1, 1, 1], "three tries, one key");
    f.until(
        "the second failed attempt",
        |e| matches!(e, Event::DeliveryAttemptFailed(a) if a.attempt == 2 && a.unanswered),
    )
    .await;
    f.stop();
}

fn taken() -> Result<Handover, ChannelError> {
    Ok(Handover::Accepted {
        provider_message_id: "SMtaken".into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_the_provider_reported_sent_before_the_worker_heard_back_still_routes_replies() {
    // The request timed out, yet the provider took the text and its status callback
    // said `sent` before the retry: the worker asks again under the same key (the
    // provider answers with the message it took), so the number it went from is
    // recorded and the family's reply finds the conversation.
    let f = Flow::start_with_backoff(
        Arc::new(NOBODY_SHARES),
        Arc::new(Untranslated),
        Duration::from_millis(500),
    )
    .await;
    f.provider.answer(PARENT_NUMBER, down);
    f.provider.answer(PARENT_NUMBER, taken);
    let delivery = f.message(f.d.principal, f.d.parent, "Picture day").await;
    f.until(
        "the unanswered attempt",
        |e| matches!(e, Event::DeliveryAttemptFailed(a) if a.delivery_id.as_uuid() == delivery && a.unanswered),
    )
    .await;
    f.d.system(
        "RecordDeliveryOutcome",
        json!({"delivery_id": delivery, "status": "sent", "provider_message_id": "SMtaken"}),
    )
    .await;
    let reported = f
        .until(
            "the worker's report of the hand-over",
            |e| matches!(e, Event::DeliverySent(s) if s.delivery_id.as_uuid() == delivery && s.sender.is_some()),
        )
        .await;
    let Ok(Event::DeliverySent(reported)) = codec::decode(&reported) else {
        unreachable!()
    };
    assert_eq!(reported.sender.as_deref(), Some(school_number().as_str()));
    assert_eq!(
        f.provider
            .to(PARENT_NUMBER)
            .iter()
            .map(|s| s.key.attempt)
            .collect::<Vec<_>>(),
        vec![1, 1],
        "asked again under the unanswered attempt's key"
    );
    f.until("the SMS line", |e| matches!(e, Event::SmsLineUsed(_)))
        .await;
    let received = f
        .reply(PARENT_NUMBER, &school_number(), "We will be there")
        .await;
    assert!(
        matches!(received.route, InboundRoute::Conversation { .. }),
        "{:?}",
        received.route
    );
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_nothing_reaches_is_failed_for_the_record_not_delivered() {
    // No phone, no email, not an app user: the app is only the last place left, and
    // nobody would see it there, so the record says it did not arrive.
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    let unreachable = Uuid::now_v7();
    f.d.system(
        "RegisterPerson",
        json!({"person_id": unreachable, "kind": "guardian", "name": "Nobody Home", "school_ids": [f.d.school]}),
    )
    .await;
    let delivery = f
        .message(f.d.principal, unreachable, "Are you there?")
        .await;
    let failed = f
        .until(
            "the delivery failing",
            |e| matches!(e, Event::DeliveryFailed(x) if x.delivery_id.as_uuid() == delivery),
        )
        .await;
    let Ok(Event::DeliveryFailed(failed)) = codec::decode(&failed) else {
        unreachable!()
    };
    assert!(!failed.permanent, "no address to blame");
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no_contact_point")),
        "{failed:?}"
    );
    // An app user, by contrast, has it delivered in the app.
    let app_user = Uuid::now_v7();
    f.d.system(
        "RegisterPerson",
        json!({"person_id": app_user, "kind": "guardian", "name": "Appy", "school_ids": [f.d.school], "preferred_channel": "app"}),
    )
    .await;
    let delivery = f.message(f.d.principal, app_user, "In the app").await;
    f.delivered(delivery).await;
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hanging_hand_over_does_not_hold_up_the_deliveries_behind_it() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    f.provider.hang_once(PARENT_NUMBER, Duration::from_secs(4));
    let slow = f.message(f.d.principal, f.d.parent, "This one hangs").await;
    // Let the worker take the slow one before the next is queued.
    f.until(
        "the slow delivery queued",
        |e| matches!(e, Event::DeliveryQueued(q) if q.delivery.delivery_id.as_uuid() == slow),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let homer = f.homer_by_email_with_a_phone().await;
    let quick = f.message(f.d.principal, homer, "This one does not").await;
    let arrived = f.delivered(quick).await;
    let log = f.store.read_all(Position::START, 10_000).await.unwrap();
    let slow_done = log.iter().position(|e| {
        codec::decode(e).is_ok_and(
            |e| matches!(e, Event::DeliveryDelivered(d) if d.delivery_id.as_uuid() == slow),
        )
    });
    assert!(
        slow_done.is_none_or(|i| log[i].position > arrived.position),
        "the quick delivery waited for the hanging one"
    );
    f.delivered(slow).await;
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_slower_than_the_queues_wait_goes_out_once_with_two_workers() {
    let f = Flow::start_with(
        Arc::new(NOBODY_SHARES),
        Arc::new(Untranslated),
        Duration::from_millis(20),
        Duration::from_millis(300),
        2,
    )
    .await;
    // The provider holds this send for four times the queue's wait.
    f.provider
        .hang_once(PARENT_NUMBER, Duration::from_millis(1200));
    let slow = f.message(f.d.principal, f.d.parent, "Slow to send").await;
    f.delivered(slow).await;
    // Past the end of the held send, and long enough for a second worker to have sent
    // it too, had the queue handed it out again.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(
        f.provider.to(PARENT_NUMBER).len(),
        1,
        "the worker kept the item while the provider held the send"
    );
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reacting_to_the_whole_log_again_records_no_reaction_twice() {
    // A reactor whose queue lost its checkpoint reacts to every event from the start:
    // the SMS lines must not point back at the conversations that texted first.
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    let first = f.message(f.d.principal, f.d.parent, "First").await;
    f.delivered(first).await;
    let later = Uuid::now_v7();
    let started =
        f.d.by(
            f.d.principal,
            "StartConversation",
            json!({"conversation_id": later, "school_id": f.d.school, "participant_ids": [f.d.parent],
                   "body": "Later", "from": "school"}),
        )
        .await
        .unwrap();
    f.delivered(started.delivery_ids[0].as_uuid()).await;
    let lines = |log: &[RecordedEvent]| {
        log.iter()
            .filter(|e| e.event_type == "sms_line_used")
            .count()
    };
    // Wait for both lines, then replay every reaction on a fresh queue.
    f.until(
        "the second SMS line",
        |e| matches!(e, Event::SmsLineUsed(l) if l.conversation_id.as_uuid() == later),
    )
    .await;
    let before = f.store.read_all(Position::START, 100_000).await.unwrap();
    let before_lines = lines(&before);
    assert!(before_lines >= 2, "{before_lines} lines");
    let dir = tempfile::tempdir().unwrap();
    let shared: Arc<dyn EventStore> = f.store.clone();
    let again = InProcessQueue::open(
        shared,
        &dir.path().join("lost.checkpoint"),
        REACTS_TO,
        InProcessConfig::default(),
    )
    .unwrap();
    let reactor = Reactor::new(
        f.d.service.clone(),
        Arc::new(NOBODY_SHARES),
        ReactorConfig::default(),
    );
    let q: Arc<dyn WorkQueue> = Arc::new(again.clone());
    tokio::spawn(async move { reactor.run(q, std::future::pending()).await });
    let head = before.last().unwrap().position;
    tokio::time::timeout(PATIENCE, async {
        while again.checkpoint() < head {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the replaying reactor caught up");
    again.close();
    let after = f.store.read_all(Position::START, 100_000).await.unwrap();
    assert_eq!(lines(&after), before_lines, "no line recorded twice");
    let received = f
        .reply(PARENT_NUMBER, school_number().as_str(), "Which one?")
        .await;
    assert!(
        matches!(received.route, InboundRoute::Conversation { conversation_id, .. } if conversation_id.as_uuid() == later),
        "the reply goes to the conversation that texted last: {:?}",
        received.route
    );
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_to_one_family_go_out_in_the_order_they_were_written() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    // The first text's hand-over hangs a little; the second must not overtake it.
    f.provider
        .hang_once(PARENT_NUMBER, Duration::from_millis(600));
    let conversation = Uuid::now_v7();
    let started =
        f.d.by(
            f.d.principal,
            "StartConversation",
            json!({"conversation_id": conversation, "school_id": f.d.school,
                   "participant_ids": [f.d.parent], "body": "First: the trip is on Friday"}),
        )
        .await
        .unwrap();
    let second =
        f.d.by(
            f.d.principal,
            "PostMessage",
            json!({"conversation_id": conversation, "message_id": Uuid::now_v7(),
                   "body": "Second: bring a packed lunch"}),
        )
        .await
        .unwrap();
    f.delivered(started.delivery_ids[0].as_uuid()).await;
    f.delivered(second.delivery_ids[0].as_uuid()).await;
    let bodies: Vec<String> = f
        .provider
        .to(PARENT_NUMBER)
        .into_iter()
        .map(|s| s.body)
        .collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert!(
        bodies[0].contains("First") && bodies[1].contains("Second"),
        "{bodies:?}"
    );
    f.stop();
}

fn rate_limited() -> Result<Handover, ChannelError> {
    Err(ChannelError::Refused {
        code: "20429".into(),
        message: "Too Many Requests".into(),
        permanent: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_refuses_for_now_is_retried_with_a_new_key() {
    // It answered: nothing was taken under that key, so the next attempt is new.
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    f.provider.answer(PARENT_NUMBER, rate_limited);
    f.provider.answer(PARENT_NUMBER, down);
    f.provider.answer(PARENT_NUMBER, rate_limited);
    let delivery = f.message(f.d.principal, f.d.parent, "Try later").await;
    f.delivered(delivery).await;
    let keys: Vec<u32> = f
        .provider
        .to(PARENT_NUMBER)
        .iter()
        .map(|s| s.key.attempt)
        .collect();
    assert_eq!(
        keys,
        vec![1, 2, 2, 4],
        "refused: new; unanswered: same; refused: new"
    );
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_stays_down_ends_failed_for_the_record_without_blaming_the_phone() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    for _ in 0..homeroom_domain::delivery::MAX_DELIVERY_ATTEMPTS {
        f.provider.answer(PARENT_NUMBER, down);
    }
    let delivery = f.message(f.d.principal, f.d.parent, "Anyone?").await;
    let failed = f
        .until(
            "the permanent failure",
            |e| matches!(e, Event::DeliveryFailed(d) if d.delivery_id.as_uuid() == delivery),
        )
        .await;
    let Ok(Event::DeliveryFailed(failed)) = codec::decode(&failed) else {
        unreachable!()
    };
    assert!(!failed.permanent && failed.error.unwrap().contains("gave up"));
    assert_eq!(f.provider.to(PARENT_NUMBER).len(), 5);
    // The next message tries the phone again: an outage is not a bad number.
    let next = f.message(f.d.principal, f.d.parent, "Back up?").await;
    f.delivered(next).await;
    let log = f.store.read_all(Position::START, 10_000).await.unwrap();
    assert!(!log.iter().any(|e| e.event_type == "contact_point_failing"));
    f.stop();
}

/// A translation service that is always down.
struct TranslatorDown;

#[async_trait]
impl homeroom_channels::Translator for TranslatorDown {
    async fn translate(
        &self,
        _text: &str,
        _from: &str,
        _to: &str,
    ) -> Result<homeroom_channels::Translation, homeroom_channels::TranslateError> {
        Err(homeroom_channels::TranslateError::Unavailable(
            "503 from the translator".into(),
        ))
    }
}

/// A translator that knows a few English phrases in Spanish.
struct Phrasebook;

#[async_trait]
impl homeroom_channels::Translator for Phrasebook {
    async fn translate(
        &self,
        text: &str,
        from: &str,
        to: &str,
    ) -> Result<homeroom_channels::Translation, homeroom_channels::TranslateError> {
        let known = match (from, to, text) {
            ("en", "es", "Field trip on Friday") => Some("Excursión el viernes"),
            ("en", "es", "Permission slip") => Some("Autorización"),
            (
                "en",
                "es",
                "this conversation has been closed, so your reply was not delivered. Please contact the school directly.",
            ) => Some("esta conversación está cerrada: su respuesta no se entregó. Comuníquese con la escuela."),
            _ => None,
        };
        Ok(match known {
            Some(spanish) => homeroom_channels::Translation {
                text: spanish.to_owned(),
                language: to.to_owned(),
                machine_translated: true,
            },
            None => homeroom_channels::Translation {
                text: text.to_owned(),
                language: from.to_owned(),
                machine_translated: false,
            },
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_goes_out_translated_subject_and_body() {
    let f = Flow::start_translating(Arc::new(NOBODY_SHARES), Arc::new(Phrasebook)).await;
    let rosa = Uuid::now_v7();
    f.d.system(
        "RegisterPerson",
        json!({"person_id": rosa, "kind": "guardian", "name": "Rosa", "school_ids": [f.d.school],
               "language": "es", "preferred_channel": "email",
               "contact_points": [{"channel": "email", "address": "rosa@example.org"}]}),
    )
    .await;
    let sent =
        f.d.by(
            f.d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": rosa, "body": "Field trip on Friday", "subject": "Permission slip"}),
        )
        .await
        .unwrap();
    f.delivered(sent.delivery_ids[0].as_uuid()).await;
    let email = &f.provider.to("rosa@example.org")[0];
    assert_eq!(email.body, "Excursión el viernes");
    assert_eq!(email.subject.as_deref(), Some("Autorización"));
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_translator_down_the_last_attempt_sends_the_original() {
    let f = Flow::start_translating(Arc::new(NOBODY_SHARES), Arc::new(TranslatorDown)).await;
    let rosa = Uuid::now_v7();
    f.d.system(
        "RegisterPerson",
        json!({"person_id": rosa, "kind": "guardian", "name": "Rosa", "school_ids": [f.d.school],
               "language": "es", "contact_points": [{"channel": "sms", "address": "+15550004004"}]}),
    )
    .await;
    let delivery = f.message(f.d.principal, rosa, "Field trip").await;
    f.delivered(delivery).await;
    let sent = f.provider.to("+15550004004");
    assert_eq!(sent.len(), 1, "one text, on the last attempt");
    assert_eq!(sent[0].body, "Field trip\n- Principal Skinner");
    let log = f.store.read_all(Position::START, 10_000).await.unwrap();
    let failed_attempts = log
        .iter()
        .filter(|e| e.event_type == "delivery_attempt_failed")
        .count() as u32;
    assert_eq!(
        failed_attempts,
        homeroom_domain::delivery::MAX_DELIVERY_ATTEMPTS - 1
    );
    let recorded_sent = log
        .iter()
        .filter_map(|e| match codec::decode(e) {
            Ok(Event::DeliverySent(s)) if s.delivery_id.as_uuid() == delivery => Some(s),
            _ => None,
        })
        .next()
        .unwrap();
    assert_eq!(
        recorded_sent.translated_to, None,
        "recorded as untranslated"
    );
    assert!(!log.iter().any(|e| e.event_type == "contact_point_failing"));
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_school_without_a_number_a_guardians_reply_goes_out_from_the_starters_number() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    f.d.system("AddSenderNumbers", json!({"numbers": ["+15550009001"]}))
        .await;
    let annex = Uuid::now_v7();
    f.d.system(
        "RegisterSchool",
        json!({"school_id": annex, "name": "Annex"}),
    )
    .await;
    f.d.system(
        "AssignRole",
        json!({"person_id": f.d.principal, "role_id": "school_admin", "school_id": annex}),
    )
    .await;
    let (kirk, luann) = (Uuid::now_v7(), Uuid::now_v7());
    for (id, name, number) in [
        (kirk, "Kirk", "+15550012001"),
        (luann, "Luann", "+15550012000"),
    ] {
        f.d.system(
            "RegisterPerson",
            json!({"person_id": id, "kind": "guardian", "name": name, "school_ids": [annex],
                   "contact_points": [{"channel": "sms", "address": number}]}),
        )
        .await;
    }
    let conversation = Uuid::now_v7();
    let started =
        f.d.by(
            f.d.principal,
            "StartConversation",
            json!({"conversation_id": conversation, "school_id": annex, "title": "Carpool",
                   "participant_ids": [kirk, luann], "body": "Who drives Monday?"}),
        )
        .await
        .unwrap();
    for delivery in &started.delivery_ids {
        f.delivered(delivery.as_uuid()).await;
    }
    let reply =
        f.d.by(
            kirk,
            "PostMessage",
            json!({"conversation_id": conversation, "message_id": Uuid::now_v7(), "body": "I can"}),
        )
        .await
        .unwrap();
    for delivery in &reply.delivery_ids {
        f.delivered(delivery.as_uuid()).await;
    }
    let to_luann = f.provider.to("+15550012000");
    assert_eq!(to_luann.len(), 2);
    assert!(
        to_luann.iter().all(|s| s.from == "+15550009001"),
        "{to_luann:?}"
    );
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_family_that_changed_phones_is_texted_at_the_new_number() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    let before = f.message(f.d.principal, f.d.parent, "Before").await;
    f.delivered(before).await;
    f.until("the SMS line", |e| matches!(e, Event::SmsLineUsed(_)))
        .await;
    let principals_number = f.provider.to(PARENT_NUMBER)[0].from.clone();
    f.d.system(
        "SetContactPreferences",
        json!({"person_id": f.d.parent,
               "contact_points": [{"channel": "sms", "address": "+1 (555) 000-2999"}]}),
    )
    .await;
    // Whoever has the old phone now does not write as the family.
    let from_the_old_phone = f
        .reply(PARENT_NUMBER, &principals_number, "Who is this?")
        .await;
    assert_eq!(
        from_the_old_phone.route,
        InboundRoute::Unroutable {
            reason: UnroutableReason::NotTheirNumber
        }
    );
    let after = f.message(f.d.principal, f.d.parent, "After").await;
    f.delivered(after).await;
    let bodies =
        |to: &str| -> Vec<String> { f.provider.to(to).into_iter().map(|s| s.body).collect() };
    assert_eq!(bodies(PARENT_NUMBER), vec!["Before\n- Principal Skinner"]);
    assert_eq!(bodies("+15550002999"), vec!["After\n- Principal Skinner"]);
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_to_a_shared_phone_say_who_they_are_for() {
    let f = Flow::start(Arc::new(Book { shared: true })).await;
    let delivery = f.message(f.d.principal, f.d.parent, "Lunch money").await;
    f.delivered(delivery).await;
    assert_eq!(
        f.provider.to(PARENT_NUMBER)[0].body,
        "For Marge: Lunch money\n- Principal Skinner"
    );
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_from_a_phone_two_guardians_share_names_them_both() {
    let f = Flow::start(Arc::new(Book { shared: true })).await;
    let ned = Uuid::now_v7();
    f.d.system(
        "RegisterPerson",
        json!({"person_id": ned, "kind": "guardian", "name": "Ned", "school_ids": [f.d.school],
               "contact_points": [{"channel": "sms", "address": PARENT_NUMBER}]}),
    )
    .await;
    let started =
        f.d.by(
            f.d.principal,
            "StartConversation",
            json!({"conversation_id": Uuid::now_v7(), "school_id": f.d.school,
                   "participant_ids": [f.d.parent, ned], "body": "Conference at 4?"}),
        )
        .await
        .unwrap();
    for delivery in &started.delivery_ids {
        f.delivered(delivery.as_uuid()).await;
    }
    // Replies find the conversation once the line records both texts.
    let conversation = started.conversation_id.map(|c| c.as_uuid());
    for guardian in [f.d.parent, ned] {
        f.until("the SMS line", |e| {
            matches!(e, Event::SmsLineUsed(l)
                if Some(l.conversation_id.as_uuid()) == conversation
                    && l.recipient_id.as_uuid() == guardian)
        })
        .await;
    }
    f.reply(PARENT_NUMBER, school_number().as_str(), "We will both come")
        .await;
    let posted = f
        .until(
            "the reply",
            |e| matches!(e, Event::MessagePosted(m) if m.body == "We will both come"),
        )
        .await;
    let Ok(Event::MessagePosted(posted)) = homeroom_app::codec::decode(&posted) else {
        panic!("a message_posted event");
    };
    let mut who = vec![posted.author_id.as_uuid()];
    who.extend(posted.shared_phone_with.iter().map(|p| p.as_uuid()));
    who.sort();
    let mut both = vec![f.d.parent, ned];
    both.sort();
    assert_eq!(who, both, "either of them may have typed it");
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_to_a_stopped_conversation_or_from_strangers_are_kept_never_lost() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    f.stopped_conversation_with_the_parent().await;
    let late = f
        .reply(PARENT_NUMBER, school_number().as_str(), "One more thing")
        .await;
    assert!(
        matches!(late.route, InboundRoute::Refused { .. }),
        "{:?}",
        late.route
    );
    f.until(
        "the refused reply",
        |e| matches!(e, Event::InboundReplyRefused(r) if r.body == "One more thing"),
    )
    .await;

    let stranger = f
        .reply("+15550007777", school_number().as_str(), "Who is this?")
        .await;
    assert_eq!(
        stranger.route,
        InboundRoute::Unroutable {
            reason: UnroutableReason::NoConversation
        }
    );
    let nobodys = f.reply(PARENT_NUMBER, "+15550008888", "Hello?").await;
    assert_eq!(nobodys.district.as_str(), DistrictId::UNROUTED);
    assert_eq!(
        nobodys.route,
        InboundRoute::Unroutable {
            reason: UnroutableReason::UnknownNumber
        }
    );
    let kept = f
        .until(
            "the unknown number's SMS",
            |e| matches!(e, Event::InboundSmsReceived(r) if r.body == "Hello?"),
        )
        .await;
    assert_eq!(kept.metadata.district, DistrictId::UNROUTED);
    f.stop();
}

/// A text with a fixed `MessageSid`, to send twice as a provider retrying its webhook.
fn text_with_sid(sid: &str, body: &str) -> IncomingSms {
    IncomingSms {
        message_sid: ProviderMessageId::parse(sid).unwrap(),
        from: PARENT_NUMBER.into(),
        to: school_number().as_str().into(),
        body: body.into(),
        media_urls: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_webhook_is_answered_as_before_though_its_line_moved_on() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    let stopped = f.stopped_conversation_with_the_parent().await;
    let late = text_with_sid("SMlatereply", "Is the bus here?");
    let first = f.inbound.receive(late.clone()).await.unwrap();
    assert!(
        matches!(first.route, InboundRoute::Refused { .. }),
        "{first:?}"
    );
    assert!(first
        .reply
        .as_deref()
        .unwrap_or_default()
        .contains("closed"));
    // Another conversation texts the family from the same number: the line moves.
    let moved = f.message(f.d.principal, f.d.parent, "Picture day").await;
    f.delivered(moved).await;
    f.until(
        "the line moving",
        |e| matches!(e, Event::SmsLineUsed(l) if l.conversation_id.as_uuid() != stopped),
    )
    .await;
    // The provider retries the first webhook: the same answer, and nothing posted.
    let again = f.inbound.receive(late).await.unwrap();
    assert_eq!(again, first);
    let head = f.store.head().await.unwrap();
    let posted = f
        .store
        .read_all(Position::START, 100_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.position <= head)
        .filter(|e| {
            matches!(codec::decode(e), Ok(Event::MessagePosted(m)) if m.body.contains("Is the bus here?"))
        })
        .count();
    assert_eq!(
        posted, 0,
        "a refused text is relayed to nobody, retried or not"
    );

    // A STOP retried after the family's START leaves them opted in.
    let stop = text_with_sid("SMstopfirst", "STOP");
    f.inbound.receive(stop.clone()).await.unwrap();
    f.reply(PARENT_NUMBER, school_number().as_str(), "START")
        .await;
    f.until("the opt-in", |e| matches!(e, Event::SmsOptedIn(_)))
        .await;
    let retried = f.inbound.receive(stop).await.unwrap();
    assert!(
        retried.reply.unwrap().contains("no more texts"),
        "answered as before"
    );
    let welcome = f.message(f.d.principal, f.d.parent, "Welcome back").await;
    f.delivered(welcome).await;
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_retried_after_a_crash_keeps_the_reply_where_the_first_try_posted_it() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    let first_conversation = f.conversation_texted_to_the_parent().await;
    let sms = text_with_sid("SMcutshort", "Who is driving?");
    // The first try recorded the SMS and posted the reply, then the process was killed
    // before it recorded the route.
    let ctx = CommandContext::new(
        f.d.district.clone(),
        Actor::System(homeroom_delivery::SERVICE.into()),
    );
    f.d.service
        .execute(
            &ctx,
            &ReceiveSms {
                message_sid: sms.message_sid.clone(),
                from: sms.from.clone(),
                to: sms.to.clone(),
                body: sms.body.clone(),
                media_urls: vec![],
            }
            .into(),
        )
        .await
        .unwrap();
    let posted =
        f.d.service
            .execute(
                &ctx.clone()
                    .with_command_id(reply_command_id(&f.d.district, &sms.message_sid)),
                &ReceiveReply {
                    conversation_id: ConversationId::new(first_conversation),
                    author_id: PersonId::new(f.d.parent),
                    message_sid: sms.message_sid.clone(),
                    body: sms.body.clone(),
                    from_number: Some(homeroom_domain::PhoneNumber::parse(&sms.from).unwrap()),
                }
                .into(),
            )
            .await
            .unwrap();
    // Meanwhile the school texts the family about something else: the line moves.
    let moved = f.message(f.d.principal, f.d.parent, "Picture day").await;
    f.delivered(moved).await;
    f.until(
        "the line moving",
        |e| matches!(e, Event::SmsLineUsed(l) if l.conversation_id.as_uuid() != first_conversation),
    )
    .await;

    let retried = f.inbound.receive(sms).await.unwrap();
    assert_eq!(
        retried.route,
        InboundRoute::Conversation {
            conversation_id: ConversationId::new(first_conversation),
            message_id: posted.message_id.unwrap(),
        }
    );
    let head = f.store.head().await.unwrap();
    let copies: Vec<_> = f
        .store
        .read_all(Position::START, 100_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.position <= head)
        .filter_map(|e| match codec::decode(e) {
            Ok(Event::MessagePosted(m)) if m.body == "Who is driving?" => Some(m.conversation_id),
            _ => None,
        })
        .collect();
    assert_eq!(
        copies,
        vec![ConversationId::new(first_conversation)],
        "posted once, where the first try put it"
    );
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_retried_by_the_provider_posts_the_reply_once() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    let delivery = f.message(f.d.principal, f.d.parent, "Hi").await;
    f.delivered(delivery).await;
    f.until("the SMS line", |e| matches!(e, Event::SmsLineUsed(_)))
        .await;
    let sms = text_with_sid("SMretried", "Once");
    let first = f.inbound.receive(sms.clone()).await.unwrap();
    let second = f.inbound.receive(sms).await.unwrap();
    assert_eq!(first, second);
    let head = f.store.head().await.unwrap();
    let posted = f
        .store
        .read_all(Position::START, 100_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.position <= head)
        .filter(|e| matches!(codec::decode(e), Ok(Event::MessagePosted(m)) if m.body == "Once"))
        .count();
    assert_eq!(posted, 1);
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_nobody_is_left_to_read_is_kept_and_the_family_is_told() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    let sent = f.message(f.d.principal, f.d.parent, "Call me").await;
    f.delivered(sent).await;
    f.until("the SMS line", |e| matches!(e, Event::SmsLineUsed(_)))
        .await;
    // A reply the principal reads is answered with nothing.
    let read = f
        .reply(PARENT_NUMBER, school_number().as_str(), "Will do")
        .await;
    assert!(
        matches!(read.route, InboundRoute::Conversation { .. }) && read.reply.is_none(),
        "{read:?}"
    );
    // The principal leaves the school: their last role there is revoked.
    f.d.system(
        "RevokeRole",
        json!({"person_id": f.d.principal, "role_id": "school_admin", "school_id": f.d.school}),
    )
    .await;
    let text = text_with_sid("SMnobodyleft", "Hello?");
    let late = f.inbound.receive(text.clone()).await.unwrap();
    assert!(
        matches!(late.route, InboundRoute::Conversation { .. }),
        "kept in the conversation, where oversight reads it: {:?}",
        late.route
    );
    let answer = late.reply.expect("the family is told");
    assert!(answer.contains("not delivered"), "{answer}");
    // A retried webhook is answered the same.
    let again = f.inbound.receive(text).await.unwrap();
    assert_eq!(again.reply.as_deref(), Some(answer.as_str()));

    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_too_long_for_one_sms_goes_by_email_without_reaching_the_provider() {
    let f = Flow::start(Arc::new(NOBODY_SHARES)).await;
    let homer = f.homer_by_sms_with_an_email("+15550003003").await;
    // 1,590 characters, and the principal's signature takes it past 1,600.
    let long = "a".repeat(1590);
    let sent = f.message(f.d.principal, homer, &long).await;
    let failed = f
        .until(
            "the SMS refused before the provider",
            |e| matches!(e, Event::DeliveryFailed(d) if d.delivery_id.as_uuid() == sent),
        )
        .await;
    let Ok(Event::DeliveryFailed(failed)) = codec::decode(&failed) else {
        panic!("{failed:?}")
    };
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("too_long_for_sms")),
        "{failed:?}"
    );
    assert!(!failed.permanent, "the phone is not to blame");
    f.until(
        "the email",
        |e| matches!(e, Event::DeliveryQueued(q) if q.fallback_of.map(|d| d.as_uuid()) == Some(sent)),
    )
    .await;
    assert!(f.provider.to("+15550003003").is_empty());
    tokio::time::timeout(PATIENCE, async {
        while f.provider.to("homer@example.org").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the email goes out");
    assert_eq!(f.provider.to("homer@example.org")[0].body, long);
    f.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_family_is_told_in_their_language_that_their_reply_was_not_delivered() {
    let f = Flow::start_translating(Arc::new(NOBODY_SHARES), Arc::new(Phrasebook)).await;
    let rosa = Uuid::now_v7();
    f.d.system(
        "RegisterPerson",
        json!({"person_id": rosa, "kind": "guardian", "name": "Rosa", "school_ids": [f.d.school],
               "language": "es", "contact_points": [{"channel": "sms", "address": "+15550014001"}]}),
    )
    .await;
    let sent =
        f.d.by(
            f.d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": rosa, "body": "Field trip on Friday"}),
        )
        .await
        .unwrap();
    f.delivered(sent.delivery_ids[0].as_uuid()).await;
    f.until("the SMS line", |e| matches!(e, Event::SmsLineUsed(_)))
        .await;
    f.d.by(
        f.d.principal,
        "StopConversation",
        json!({"conversation_id": sent.conversation_id}),
    )
    .await
    .unwrap();
    let late = f
        .reply("+15550014001", school_number().as_str(), "Una pregunta")
        .await;
    assert!(
        matches!(late.route, InboundRoute::Refused { .. }),
        "{late:?}"
    );
    let answer = late.reply.expect("an answer");
    assert!(
        answer.ends_with(": esta conversación está cerrada: su respuesta no se entregó. Comuníquese con la escuela."),
        "{answer}"
    );
    // The keywords' answers stay as written: they name STOP and START.
    let help = f
        .reply("+15550014001", school_number().as_str(), "HELP")
        .await;
    assert!(help.reply.unwrap().contains("STOP to stop texts"));
    f.stop();
}
