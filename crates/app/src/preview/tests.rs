//! The preview service over the in-memory store: facts from the streams, nothing
//! recorded, the phone book asked only when an SMS would go.

use super::*;
use crate::{parse_command, CommandContext, CommandOutcome};
use homeroom_domain::sms::SmsEncoding;
use homeroom_domain::Actor;
use homeroom_eventstore::memory::InMemoryStore;
use homeroom_eventstore::EventStore;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// A district with a school admin, a technical admin, a 14-year-old and their guardian
/// (SMS and email), and a 12-year-old.
struct World {
    service: Arc<CommandService>,
    store: Arc<dyn EventStore>,
    district: DistrictId,
    principal: PersonId,
    technician: PersonId,
    teen: PersonId,
    child: PersonId,
    parent: PersonId,
}

impl World {
    async fn build() -> Self {
        let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
        let id = || PersonId::new(Uuid::now_v7());
        let w = Self {
            service: Arc::new(CommandService::new(store.clone(), 1_000)),
            store,
            district: DistrictId::parse("north").unwrap(),
            principal: id(),
            technician: id(),
            teen: id(),
            child: id(),
            parent: id(),
        };
        let school = Uuid::now_v7();
        let today = Utc::now().date_naive();
        let born = |years: u64| (today - chrono::Days::new(years * 366)).to_string();
        w.system(
            "RegisterSchool",
            json!({"school_id": school, "name": "Lincoln"}),
        )
        .await;
        for (person, name, role) in [
            (w.principal, "Principal Skinner", "school_admin"),
            (w.technician, "Tech Admin", "technical_school_admin"),
        ] {
            w.system(
                "RegisterPerson",
                json!({"person_id": person, "kind": "staff", "name": name, "school_ids": [school]}),
            )
            .await;
            w.system(
                "AssignRole",
                json!({"person_id": person, "role_id": role, "school_id": school}),
            )
            .await;
        }
        w.system("RegisterPerson", json!({"person_id": w.teen, "kind": "student", "name": "Dennis", "school_ids": [school], "birth_date": born(14), "contact_points": [{"channel": "sms", "address": "+15550002001"}]})).await;
        w.system("RegisterPerson", json!({"person_id": w.child, "kind": "student", "name": "Lisa", "school_ids": [school], "birth_date": born(12)})).await;
        w.system("RegisterPerson", json!({"person_id": w.parent, "kind": "guardian", "name": "Marge Simpson", "school_ids": [], "contact_points": [{"channel": "sms", "address": "+15550002003"}, {"channel": "email", "address": "marge@example.org"}]})).await;
        w.system(
            "LinkGuardian",
            json!({"guardian_id": w.parent, "student_id": w.teen}),
        )
        .await;
        w
    }

    async fn run(&self, actor: Actor, name: &str, body: serde_json::Value) -> CommandOutcome {
        let ctx = CommandContext::new(self.district.clone(), actor);
        let command = parse_command(name, body).unwrap();
        self.service
            .execute(&ctx, &command)
            .await
            .unwrap_or_else(|e| panic!("{name} refused: {e}"))
    }

    async fn system(&self, name: &str, body: serde_json::Value) -> CommandOutcome {
        self.run(Actor::System("sis".into()), name, body).await
    }

    fn reader(&self, person: PersonId) -> Reader {
        Reader {
            district: self.district.clone(),
            actor: Actor::Person(person),
        }
    }
}

fn to(recipient_id: PersonId, body: &str, channel: Option<Channel>) -> PreviewRequest {
    PreviewRequest {
        recipient_id,
        body: body.to_owned(),
        channel,
    }
}

/// A phone book that knows a fixed list and counts how often it is asked.
#[derive(Default)]
struct Book {
    entries: Mutex<Vec<(String, PersonId)>>,
    asked: AtomicUsize,
    broken: bool,
}

impl Book {
    fn with(entries: &[(&str, PersonId)]) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(entries.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect()),
            ..Self::default()
        })
    }
}

impl PhoneBook for Book {
    fn people_with_number<'a>(
        &'a self,
        _district: &'a DistrictId,
        number: &'a str,
    ) -> PhoneBookLookup<'a> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let found: Vec<PersonId> = self
            .entries
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == number)
            .map(|(_, p)| *p)
            .collect();
        let broken = self.broken;
        Box::pin(async move {
            if broken {
                Err(homeroom_projections::QueryError::Corrupt("phone book"))
            } else {
                Ok(found)
            }
        })
    }
}

#[tokio::test]
async fn a_preview_renders_from_the_streams_and_records_nothing() {
    let w = World::build().await;
    let head = w.store.head().await.unwrap();
    let previews = PreviewService::new(w.service.clone());

    let render = previews
        .preview(
            &w.reader(w.principal),
            &to(
                w.parent,
                "Hi {recipient_name}, {student_name} did well 👍",
                None,
            ),
            Utc::now(),
        )
        .await
        .unwrap();

    assert_eq!(
        (
            render.channel,
            render.address.as_deref(),
            render.text.as_str()
        ),
        (
            Channel::Sms,
            Some("+15550002003"),
            "Hi Marge Simpson, Dennis did well 👍\n- Principal Skinner"
        )
    );
    assert_eq!(render.measure.encoding, SmsEncoding::Ucs2);
    assert_eq!(w.store.head().await.unwrap(), head, "nothing recorded");
}

#[tokio::test]
async fn a_preview_refuses_as_sending_would() {
    let w = World::build().await;
    let previews = PreviewService::new(w.service.clone());
    let stranger = PersonId::new(Uuid::now_v7());
    for (reader, request, code) in [
        (w.principal, to(w.child, "Hi", None), "recipient_too_young"),
        (w.principal, to(stranger, "Hi", None), "unknown_person"),
        (
            w.principal,
            to(w.principal, "Hi", None),
            "recipient_not_reachable",
        ),
        (w.principal, to(w.parent, "Hi {nope}", None), "validation"),
        (w.technician, to(w.parent, "Hi", None), "not_permitted"),
    ] {
        let refused = previews
            .preview(&w.reader(reader), &request, Utc::now())
            .await
            .unwrap_err();
        assert!(
            matches!(refused, PreviewError::Command(CommandError::Rejected(_))),
            "{refused:?}"
        );
        assert_eq!(refused.code(), code, "{request:?}");
    }
}

#[tokio::test]
async fn a_preview_follows_the_conversation_as_it_changes() {
    let w = World::build().await;
    let previews = PreviewService::new(w.service.clone());
    let reader = w.reader(w.principal);
    let request = to(w.parent, "Hi", None);
    // given a preview of the next message in a running conversation
    let sent = w
        .run(
            Actor::Person(w.principal),
            "SendPersonalMessage",
            json!({"recipient_id": w.parent, "body": "First"}),
        )
        .await;
    let before = previews
        .preview(&reader, &request, Utc::now())
        .await
        .unwrap();
    assert_eq!(before.channel, Channel::Sms);
    // when the parent mutes the conversation
    w.run(
        Actor::Person(w.parent),
        "MuteConversation",
        json!({"conversation_id": sent.conversation_id}),
    )
    .await;
    // then the next preview goes to the app only, as sending would
    let after = previews
        .preview(&reader, &request, Utc::now())
        .await
        .unwrap();
    assert_eq!(after.channel, Channel::App);
}

#[tokio::test]
async fn an_sms_to_a_number_someone_else_has_is_labelled() {
    let w = World::build().await;
    let book = Book::with(&[("+15550002003", w.parent), ("+15550002003", w.teen)]);
    let previews = PreviewService::new(w.service.clone()).with_phone_book(book.clone());

    let render = previews
        .preview(
            &w.reader(w.principal),
            &to(w.parent, "No school Friday", None),
            Utc::now(),
        )
        .await
        .unwrap();

    let sent = "For Marge: No school Friday\n- Principal Skinner";
    assert_eq!(render.text, sent);
    assert!(render.labelled);
    assert_eq!(render.measure.units, sent.len());
}

#[tokio::test]
async fn a_number_only_the_recipient_has_is_not_shared() {
    let w = World::build().await;
    let book = Book::with(&[("+15550002003", w.parent)]);
    let previews = PreviewService::new(w.service.clone()).with_phone_book(book.clone());
    let render = previews
        .preview(
            &w.reader(w.principal),
            &to(w.parent, "Hi", None),
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(
        (render.text.as_str(), render.labelled),
        ("Hi\n- Principal Skinner", false)
    );
    assert_eq!(book.asked.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_phone_book_is_asked_only_when_an_sms_would_go() {
    let w = World::build().await;
    let book = Book::with(&[("+15550002003", w.teen)]);
    let previews = PreviewService::new(w.service.clone()).with_phone_book(book.clone());
    let reader = w.reader(w.principal);
    let email = previews
        .preview(
            &reader,
            &to(w.parent, "Hi", Some(Channel::Email)),
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!((email.channel, email.labelled), (Channel::Email, false));
    previews
        .preview(&reader, &to(w.child, "Hi", None), Utc::now())
        .await
        .unwrap_err();
    assert_eq!(book.asked.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_failing_phone_book_is_a_failure_not_a_refusal() {
    let w = World::build().await;
    let book = Arc::new(Book {
        broken: true,
        ..Book::default()
    });
    let previews = PreviewService::new(w.service.clone()).with_phone_book(book);
    let failed = previews
        .preview(
            &w.reader(w.principal),
            &to(w.parent, "Hi", None),
            Utc::now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(failed, PreviewError::PhoneBook(_)), "{failed:?}");
    assert_eq!(failed.code(), "internal");
}
