//! The given/when/then harness and the fixture district the deciders' tests share.
//!
//! ```text
//! given([started(), stopped()]).when(post("hi")).then_err(ConversationError::ConversationStopped { .. })
//! ```
//!
//! The fixture: a district with two schools (`SCHOOL`, `OTHER_SCHOOL`); at `SCHOOL` a
//! school admin, a technical school admin, a viewer, a teacher (current teacher of a
//! 14-year-old and a 12-year-old student) and a colleague teaching nobody; a guardian of
//! each student; a district admin; at `OTHER_SCHOOL` an admin, a student and their
//! guardian. Time is 2025-03-10 12:00 UTC.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::district::{self, DistrictSettings, DistrictState};
use crate::events::{
    DistrictSettingsChanged, Event, GuardianLinked, PersonRegistered, RoleAssigned,
    SchoolRegistered, StudentTeachersSet,
};
use crate::facts::{Actor, Facts};
use crate::ids::{PersonId, PhoneNumber, RoleId, SchoolId};
use crate::person::{self, PersonState};
use crate::values::{Channel, ContactChannel, ContactPoint, PersonKind};
use crate::{decide, target, Command, DomainError};

/// The fixture's school.
pub const SCHOOL: SchoolId = SchoolId::new(Uuid::from_u128(0x5c01));
/// A second school, where the fixture's staff hold nothing.
pub const OTHER_SCHOOL: SchoolId = SchoolId::new(Uuid::from_u128(0x5c02));

const fn pid(n: u128) -> PersonId {
    PersonId::new(Uuid::from_u128(n))
}

/// `school_admin` at `SCHOOL`.
pub const ADMIN: PersonId = pid(0xa001);
/// `technical_school_admin` at `SCHOOL` (personal messages off, roles admin on).
pub const TECH_ADMIN: PersonId = pid(0xa002);
/// `school_viewer` at `SCHOOL`.
pub const VIEWER: PersonId = pid(0xa003);
/// `teacher` at `SCHOOL`, current teacher of `STUDENT_14` and `STUDENT_12`.
pub const TEACHER: PersonId = pid(0xa004);
/// `teacher` at `SCHOOL`, teaching nobody.
pub const COLLEAGUE: PersonId = pid(0xa005);
/// `district_admin`, district-wide.
pub const DISTRICT_ADMIN: PersonId = pid(0xa006);
/// `school_admin` at `OTHER_SCHOOL`.
pub const OTHER_ADMIN: PersonId = pid(0xa007);
/// Staff with no role at all.
pub const NO_ROLE: PersonId = pid(0xa008);
/// A student at `SCHOOL`, 14 today.
pub const STUDENT_14: PersonId = pid(0xb001);
/// A student at `SCHOOL`, 12 today.
pub const STUDENT_12: PersonId = pid(0xb002);
/// A student at `OTHER_SCHOOL`, 15 today.
pub const OTHER_STUDENT: PersonId = pid(0xb003);
/// Guardian of `STUDENT_14` (SMS and email).
pub const GUARDIAN: PersonId = pid(0xc001);
/// Guardian of `STUDENT_12` (SMS only).
pub const GUARDIAN_12: PersonId = pid(0xc002);
/// Guardian of `OTHER_STUDENT`.
pub const OTHER_GUARDIAN: PersonId = pid(0xc003);

/// The time of every command in the tests.
pub fn now() -> DateTime<Utc> {
    "2025-03-10T12:00:00Z".parse().expect("a valid time")
}

/// A day.
pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a valid date")
}

/// The fixture's command id.
pub fn command_id() -> Uuid {
    Uuid::from_u128(0xc0de)
}

/// The system actor the fixture's directory events are recorded by.
pub fn sis() -> Actor {
    Actor::System("sis".to_owned())
}

/// A role id.
pub fn role(id: &str) -> RoleId {
    RoleId::parse(id).expect("a valid role id")
}

/// The fixture district's events.
pub fn district_events() -> Vec<Event> {
    [
        (SCHOOL, "Hillside", "+15550001000"),
        (OTHER_SCHOOL, "Riverside", "+15550002000"),
    ]
    .into_iter()
    .map(|(school_id, name, number)| {
        SchoolRegistered {
            school_id,
            name: name.to_owned(),
            sms_number: Some(PhoneNumber::parse(number).expect("a valid number")),
            at: now(),
            by: sis(),
        }
        .into()
    })
    .collect()
}

/// The fixture district.
pub fn district() -> DistrictState {
    district_events()
        .iter()
        .fold(DistrictState::default(), district::evolve)
}

/// A `DistrictSettingsChanged` event from the defaults, changed by `change`.
pub fn settings_changed(change: impl FnOnce(&mut DistrictSettings)) -> Event {
    let mut settings = DistrictSettings::default();
    change(&mut settings);
    DistrictSettingsChanged {
        settings,
        at: now(),
        by: sis(),
    }
    .into()
}

/// Builds a person's stream events.
pub struct PersonBuilder {
    registered: PersonRegistered,
    more: Vec<Event>,
}

/// Starts a person: `kind`, `name`, no school, language `en`.
pub fn person(id: PersonId, kind: PersonKind, name: &str) -> PersonBuilder {
    PersonBuilder {
        registered: PersonRegistered {
            person_id: id,
            kind,
            name: name.to_owned(),
            school_ids: vec![],
            birth_date: None,
            manually_added: false,
            language: "en".to_owned(),
            preferred_channel: None,
            contact_points: vec![],
            at: now(),
            by: sis(),
        },
        more: vec![],
    }
}

impl PersonBuilder {
    fn id(&self) -> PersonId {
        self.registered.person_id
    }

    /// Adds a school.
    pub fn at(mut self, school: SchoolId) -> Self {
        self.registered.school_ids.push(school);
        self
    }

    /// Sets the birth date.
    pub fn born(mut self, day: NaiveDate) -> Self {
        self.registered.birth_date = Some(day);
        self
    }

    /// Marks the person as added by hand rather than by the SIS.
    pub fn manually_added(mut self) -> Self {
        self.registered.manually_added = true;
        self
    }

    /// Sets the language.
    pub fn speaks(mut self, language: &str) -> Self {
        self.registered.language = language.to_owned();
        self
    }

    /// Sets the preferred channel.
    pub fn prefers(mut self, channel: Channel) -> Self {
        self.registered.preferred_channel = Some(channel);
        self
    }

    /// Adds a contact point.
    pub fn contact(mut self, channel: ContactChannel, address: &str) -> Self {
        self.registered.contact_points.push(ContactPoint {
            channel,
            address: address.to_owned(),
        });
        self
    }

    /// Assigns a role (at a school, or district-wide).
    pub fn role(mut self, role_id: &str, school_id: Option<SchoolId>) -> Self {
        let event = RoleAssigned {
            person_id: self.id(),
            role_id: role(role_id),
            school_id,
            at: now(),
            by: sis(),
        };
        self.more.push(event.into());
        self
    }

    /// Links a student (for a guardian).
    pub fn guardian_of(mut self, student_id: PersonId) -> Self {
        let event = GuardianLinked {
            guardian_id: self.id(),
            student_id,
            at: now(),
            by: sis(),
        };
        self.more.push(event.into());
        self
    }

    /// Sets current teachers (for a student).
    pub fn taught_by(mut self, teacher_ids: &[PersonId]) -> Self {
        let event = StudentTeachersSet {
            student_id: self.id(),
            teacher_ids: teacher_ids.to_vec(),
            at: now(),
            by: sis(),
        };
        self.more.push(event.into());
        self
    }

    /// The stream's events.
    pub fn events(self) -> Vec<Event> {
        std::iter::once(self.registered.into())
            .chain(self.more)
            .collect()
    }

    /// The person's state.
    pub fn build(self) -> PersonState {
        self.events()
            .iter()
            .fold(PersonState::default(), person::evolve)
    }
}

/// A person with the given contact points, some marked failing.
pub fn person_with_contacts(
    kind: PersonKind,
    preferred: Option<Channel>,
    contacts: Vec<ContactPoint>,
    failing: &[&str],
) -> PersonState {
    let mut builder = person(pid(0xf001), kind, "Pat");
    builder.registered.preferred_channel = preferred;
    builder.registered.contact_points = contacts;
    failing.iter().fold(builder.build(), |state, address| {
        state.mark_failing(address)
    })
}

/// Every fixture person.
pub fn people() -> Vec<PersonState> {
    use ContactChannel::{Email, Sms};
    use PersonKind::{Guardian, Staff, Student};
    vec![
        person(ADMIN, Staff, "Ada Admin")
            .at(SCHOOL)
            .role("school_admin", Some(SCHOOL))
            .build(),
        person(TECH_ADMIN, Staff, "Tess Tech")
            .at(SCHOOL)
            .role("technical_school_admin", Some(SCHOOL))
            .build(),
        person(VIEWER, Staff, "Vic Viewer")
            .at(SCHOOL)
            .role("school_viewer", Some(SCHOOL))
            .build(),
        person(TEACHER, Staff, "Tom Teacher")
            .at(SCHOOL)
            .role("teacher", Some(SCHOOL))
            .build(),
        person(COLLEAGUE, Staff, "Cara Colleague")
            .at(SCHOOL)
            .role("teacher", Some(SCHOOL))
            .build(),
        person(DISTRICT_ADMIN, Staff, "Dora District")
            .role("district_admin", None)
            .build(),
        person(OTHER_ADMIN, Staff, "Otto Other")
            .at(OTHER_SCHOOL)
            .role("school_admin", Some(OTHER_SCHOOL))
            .build(),
        person(NO_ROLE, Staff, "Nora None").at(SCHOOL).build(),
        person(STUDENT_14, Student, "Dennis")
            .at(SCHOOL)
            .born(date(2010, 6, 1))
            .contact(Sms, "+15550100014")
            .taught_by(&[TEACHER])
            .build(),
        person(STUDENT_12, Student, "Mia")
            .at(SCHOOL)
            .born(date(2012, 9, 1))
            .taught_by(&[TEACHER])
            .build(),
        person(OTHER_STUDENT, Student, "Olga")
            .at(OTHER_SCHOOL)
            .born(date(2009, 1, 1))
            .build(),
        person(GUARDIAN, Guardian, "Pat Parent")
            .contact(Sms, "+15550100001")
            .contact(Email, "pat@example.org")
            .speaks("es")
            .guardian_of(STUDENT_14)
            .build(),
        person(GUARDIAN_12, Guardian, "Sam Parent")
            .contact(Sms, "+15550100002")
            .guardian_of(STUDENT_12)
            .build(),
        person(OTHER_GUARDIAN, Guardian, "Gus Other")
            .at(OTHER_SCHOOL)
            .contact(Sms, "+15550100003")
            .guardian_of(OTHER_STUDENT)
            .build(),
    ]
}

/// The fixture facts, acting as `ADMIN`.
pub fn facts() -> Facts {
    people().into_iter().fold(
        Facts::new(now(), command_id(), Actor::Person(ADMIN), district()),
        Facts::with_person,
    )
}

/// A scenario: the stream's past events and the facts of the decision.
pub struct Given {
    events: Vec<Event>,
    facts: Facts,
}

/// Starts a scenario whose stream holds `events`, with the fixture facts.
pub fn given(events: impl IntoIterator<Item = Event>) -> Given {
    Given {
        events: events.into_iter().collect(),
        facts: facts(),
    }
}

impl Given {
    /// Acts as a person.
    pub fn acting_as(mut self, person: PersonId) -> Self {
        self.facts.actor = Actor::Person(person);
        self
    }

    /// Acts as a `system` service.
    pub fn acting_as_system(mut self) -> Self {
        self.facts.actor = sis();
        self
    }

    /// Records more district events in the facts.
    pub fn district(mut self, events: impl IntoIterator<Item = Event>) -> Self {
        self.facts.district = events
            .into_iter()
            .fold(self.facts.district, |d, e| district::evolve(d, &e));
        self
    }

    /// Adds or replaces a person in the facts.
    pub fn with_person(mut self, person: PersonState) -> Self {
        self.facts = self.facts.with_person(person);
        self
    }

    /// Adds or replaces several people in the facts.
    pub fn with_people(self, people: impl IntoIterator<Item = PersonState>) -> Self {
        people.into_iter().fold(self, Given::with_person)
    }

    /// Says another district already sends from each of `numbers` (their
    /// `smsnumber-` streams are bound elsewhere).
    pub fn numbers_of_other_districts(mut self, numbers: &[&str]) -> Self {
        self.facts.numbers_of_other_districts = numbers
            .iter()
            .map(|n| crate::ids::PhoneNumber::parse(n).expect("a test number"))
            .collect();
        self
    }

    /// Removes a person from the facts (the service did not load them).
    pub fn without_person(mut self, id: PersonId) -> Self {
        self.facts.people.remove(&id);
        self
    }

    /// Decides `cmd` against the stream's state folded from the given events.
    pub fn when(self, cmd: impl Into<Command>) -> Outcome {
        let cmd = cmd.into();
        let state = self
            .events
            .iter()
            .fold(target(&cmd, &self.facts.actor).initial_state(), |s, e| {
                s.evolve(e)
            });
        Outcome {
            result: decide(&state, &cmd, &self.facts),
        }
    }
}

/// The result of a decision, to assert on.
pub struct Outcome {
    result: Result<Vec<Event>, DomainError>,
}

impl Outcome {
    /// Asserts exactly these events were decided.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = Event>) {
        let expected: Vec<Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => assert_eq!(events, expected),
            Err(e) => panic!("expected events, got refusal {e:?} ({})", e.code()),
        }
    }

    /// Asserts the command was accepted and recorded nothing (an idempotent no-op).
    #[track_caller]
    pub fn then_nothing(self) {
        self.then([]);
    }

    /// Asserts the command was refused with exactly this error.
    #[track_caller]
    pub fn then_err(self, expected: impl Into<DomainError>) {
        let expected = expected.into();
        match self.result {
            Ok(events) => panic!("expected refusal {expected:?}, got events {events:#?}"),
            Err(e) => assert_eq!(e, expected),
        }
    }

    /// Asserts the command was refused with this API code.
    #[track_caller]
    pub fn then_code(self, code: &str) {
        match self.result {
            Ok(events) => panic!("expected refusal {code}, got events {events:#?}"),
            Err(e) => assert_eq!(e.code(), code, "refused with {e:?}"),
        }
    }

    /// The decided events, for closer inspection.
    #[track_caller]
    pub fn events(self) -> Vec<Event> {
        match self.result {
            Ok(events) => events,
            Err(e) => panic!("expected events, got refusal {e:?} ({})", e.code()),
        }
    }
}
