//! Homeroom's product rules, as pure functions.
//!
//! A tour:
//!
//! - [`commands`]: what upstream apps ask for, one struct per API command, gathered in
//!   [`Command`]; there is no command that edits or deletes a message.
//! - [`events`]: what happened, gathered in [`Event`] with explicit stored names and
//!   schema versions.
//! - The aggregates, each with a state, `decide(state, cmd, facts)`, `evolve(state,
//!   event)` and one error enum whose variants map to API codes:
//!   [`district`] (schools, custom roles, settings, sender numbers),
//!   [`person`] (directory details, links, teachers, roles, contact points),
//!   [`conversation`] (personal, school and group conversations and their messages),
//!   [`delivery`] (one message to one recipient: queued → sent → delivered / failed,
//!   with retried attempts), [`sms_line`] (one of our numbers and one family number:
//!   where replies go, STOP and START), [`sms_number`] (which district sends from a
//!   number) and [`inbound`] (an inbound SMS as received, then where it went).
//! - [`facts`]: the time, the actor and the directory facts a decision reads from other
//!   streams ([`Facts`], [`Actor`]).
//! - Values with invariants: [`ids`] (ids, phone numbers, email addresses),
//!   [`permissions`] (permissions and built-in roles), [`text`] (bodies, titles, the
//!   content guard), [`merge`] (merge fields), [`plan`] (the delivery plan and channel
//!   choice), [`values`] (small enums), [`validation`] (malformed values).
//! - [`sms`]: the SMS text rules (GSM-7 or UCS-2, segments, the shared-phone label,
//!   STOP/START/HELP).
//! - [`preview`]: the character counter, a message rendered and refused as sending would.
//! - [`visibility`]: who may see what (conversations, school inboxes, oversight, a
//!   student's record, the audit trail): the read side's rules.
//! - This module: the top-level [`State`], [`StreamRef`] (which stream a command appends
//!   to), [`people_needed`] (which facts to load) and [`decide`], which dispatches to
//!   the aggregate.
//!
//! The crate does no I/O, is not async and reads no clock: time arrives in
//! [`Facts::now`], ids in the command or derived from [`Facts::command_id`].
//!
//! A command service uses it like this:
//!
//! ```
//! use homeroom_domain::*;
//! # use homeroom_domain::commands::RegisterSchool;
//! # use homeroom_domain::district::DistrictState;
//! # use homeroom_domain::ids::{DistrictId, SchoolId};
//! # let district = DistrictId::parse("north").unwrap();
//! let actor = Actor::System("sis".to_owned());
//! let cmd = Command::from(RegisterSchool {
//!     school_id: SchoolId::new(uuid::Uuid::from_u128(1)),
//!     name: "Hillside".to_owned(),
//!     sms_number: None,
//! });
//! let stream = target(&cmd, &actor);
//! assert_eq!(stream.stream_name(&district), "district-north");
//! let state = stream.initial_state(); // then evolve with the stream's events
//! let now = "2025-03-10T12:00:00Z".parse().unwrap();
//! let facts = Facts::new(now, uuid::Uuid::from_u128(7), actor.clone(), DistrictState::default());
//! // load people_needed(&cmd, &state, &actor) (and their related_people()) into facts.people
//! let events = decide(&state, &cmd, &facts).unwrap();
//! assert_eq!(events[0].name(), "school_registered");
//! ```

pub mod commands;
pub mod conversation;
pub mod delivery;
pub mod district;
pub mod events;
pub mod facts;
pub mod ids;
pub mod inbound;
pub mod merge;
pub mod permissions;
pub mod person;
pub mod plan;
pub mod preview;
pub mod sms;
pub mod sms_line;
pub mod sms_number;
pub mod text;
pub mod validation;
pub mod values;
pub mod visibility;

#[cfg(test)]
mod testing;

pub use commands::Command;
pub use conversation::{ConversationError, ConversationState};
pub use delivery::{DeliveryError, DeliveryState};
pub use district::{DistrictError, DistrictState};
pub use events::Event;
pub use facts::{Actor, Facts};
pub use ids::{
    delivery_id_for, fallback_delivery_id, inbound_message_id, message_id_for_command,
    personal_conversation_id, ConversationId, DeliveryId, DistrictId, EmailAddress, IdError,
    MessageId, PersonId, PhoneNumber, ProviderMessageId, RoleId, SchoolId,
};
pub use inbound::{InboundError, InboundState};
pub use permissions::{Permission, PermissionSet};
pub use person::{PersonError, PersonState};
pub use plan::{app_reaches, choose_channel, PlannedDelivery};
pub use sms_line::{SmsLineError, SmsLineState};
pub use sms_number::{SmsNumberError, SmsNumberState};
pub use validation::ValidationError;
pub use values::{
    Channel, ContactChannel, ContactPoint, ConversationKind, NumberOwner, OutcomeStatus,
    PersonKind, SendAs,
};

use uuid::Uuid;

/// The state of one stream, whichever aggregate owns it.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// The district stream.
    District(DistrictState),
    /// A person stream.
    Person(PersonState),
    /// A conversation stream.
    Conversation(ConversationState),
    /// A delivery stream.
    Delivery(DeliveryState),
    /// An SMS line stream.
    SmsLine(SmsLineState),
    /// An SMS number's binding.
    SmsNumber(SmsNumberState),
    /// An inbound SMS stream.
    Inbound(InboundState),
}

impl State {
    /// Applies one event of the stream.
    pub fn evolve(self, event: &Event) -> State {
        match self {
            State::District(s) => State::District(district::evolve(s, event)),
            State::Person(s) => State::Person(person::evolve(s, event)),
            State::Conversation(s) => State::Conversation(conversation::evolve(s, event)),
            State::Delivery(s) => State::Delivery(delivery::evolve(s, event)),
            State::SmsLine(s) => State::SmsLine(sms_line::evolve(s, event)),
            State::SmsNumber(s) => State::SmsNumber(sms_number::evolve(s, event)),
            State::Inbound(s) => State::Inbound(inbound::evolve(s, event)),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            State::District(_) => "district",
            State::Person(_) => "person",
            State::Conversation(_) => "conversation",
            State::Delivery(_) => "delivery",
            State::SmsLine(_) => "sms line",
            State::SmsNumber(_) => "sms number",
            State::Inbound(_) => "inbound",
        }
    }
}

/// A stream of a district: the one a command appends to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamRef {
    /// The district's own stream.
    District,
    /// A person's stream.
    Person(PersonId),
    /// A conversation's stream.
    Conversation(ConversationId),
    /// A delivery's stream.
    Delivery(DeliveryId),
    /// The SMS line between one of the district's numbers and a family number.
    SmsLine {
        /// The district's number.
        ours: PhoneNumber,
        /// The family number.
        theirs: PhoneNumber,
    },
    /// An SMS number's binding to its district: the one stream named without one.
    SmsNumber(PhoneNumber),
    /// One inbound SMS.
    Inbound(ProviderMessageId),
}

impl StreamRef {
    /// The category (the part of a stream name before the first `-`) of every kind of
    /// stream the domain writes: what a store that filters by category must know.
    pub const CATEGORIES: &'static [&'static str] = &[
        "district",
        "person",
        "conversation",
        "delivery",
        "smsline",
        "smsnumber",
        "inbound",
    ];

    /// The stream's name in the store: `district-{d}`, `person-{d}:{uuid}`,
    /// `conversation-{d}:{uuid}`, `delivery-{d}:{uuid}`, `smsline-{d}:{ours}:{theirs}`,
    /// `inbound-{d}:{sid}`, and `smsnumber-{number}` (under no district: an inbound SMS
    /// names only the number, and this is how it finds its district).
    pub fn stream_name(&self, district: &DistrictId) -> String {
        match self {
            StreamRef::District => format!("district-{district}"),
            StreamRef::Person(id) => format!("person-{district}:{id}"),
            StreamRef::Conversation(id) => format!("conversation-{district}:{id}"),
            StreamRef::Delivery(id) => format!("delivery-{district}:{id}"),
            StreamRef::SmsLine { ours, theirs } => format!("smsline-{district}:{ours}:{theirs}"),
            StreamRef::SmsNumber(number) => format!("smsnumber-{number}"),
            StreamRef::Inbound(sid) => format!("inbound-{district}:{sid}"),
        }
    }

    /// The state of the stream before its first event.
    pub fn initial_state(&self) -> State {
        match self {
            StreamRef::District => State::District(DistrictState::default()),
            StreamRef::Person(_) => State::Person(PersonState::default()),
            StreamRef::Conversation(_) => State::Conversation(ConversationState::default()),
            StreamRef::Delivery(_) => State::Delivery(DeliveryState::default()),
            StreamRef::SmsLine { .. } => State::SmsLine(SmsLineState::default()),
            StreamRef::SmsNumber(_) => State::SmsNumber(SmsNumberState::default()),
            StreamRef::Inbound(_) => State::Inbound(InboundState::default()),
        }
    }
}

/// Which stream `cmd` appends to. `SendPersonalMessage` goes to the actor's personal
/// conversation with the recipient (for a non-person actor, one derived from the nil id;
/// the decision then refuses with `not_permitted`).
pub fn target(cmd: &Command, actor: &Actor) -> StreamRef {
    match cmd {
        Command::RegisterSchool(_)
        | Command::DefineRole(_)
        | Command::ChangeDistrictSettings(_)
        | Command::AddSenderNumbers(_)
        | Command::AssignSenderNumber(_) => StreamRef::District,
        Command::MarkContactPointFailing(c) => StreamRef::Person(c.person_id),
        Command::RegisterPerson(c) => StreamRef::Person(c.person_id),
        Command::LinkGuardian(c) => StreamRef::Person(c.guardian_id),
        Command::UnlinkGuardian(c) => StreamRef::Person(c.guardian_id),
        Command::SetStudentTeachers(c) => StreamRef::Person(c.student_id),
        Command::AssignRole(c) => StreamRef::Person(c.person_id),
        Command::RevokeRole(c) => StreamRef::Person(c.person_id),
        Command::SetContactPreferences(c) => StreamRef::Person(c.person_id),
        Command::ResetContactPoint(c) => StreamRef::Person(c.person_id),
        Command::SendPersonalMessage(c) => {
            let sender = actor
                .person_id()
                .unwrap_or_else(|| PersonId::new(Uuid::nil()));
            StreamRef::Conversation(personal_conversation_id(sender, c.recipient_id))
        }
        Command::StartConversation(c) => StreamRef::Conversation(c.conversation_id),
        Command::PostMessage(c) => StreamRef::Conversation(c.conversation_id),
        Command::StopConversation(c) => StreamRef::Conversation(c.conversation_id),
        Command::RenameConversation(c) => StreamRef::Conversation(c.conversation_id),
        Command::MuteConversation(c) => StreamRef::Conversation(c.conversation_id),
        Command::UnmuteConversation(c) => StreamRef::Conversation(c.conversation_id),
        Command::ArchiveConversation(c) => StreamRef::Conversation(c.conversation_id),
        Command::UnarchiveConversation(c) => StreamRef::Conversation(c.conversation_id),
        Command::MarkRead(c) => StreamRef::Conversation(c.conversation_id),
        Command::RecordDeliveryOutcome(c) => StreamRef::Delivery(c.delivery_id),
        Command::QueueDelivery(c) => StreamRef::Delivery(c.delivery.delivery_id),
        Command::RecordFailedAttempt(c) => StreamRef::Delivery(c.delivery_id),
        Command::ReceiveReply(c) => StreamRef::Conversation(c.conversation_id),
        Command::RecordSmsSent(c) => StreamRef::SmsLine {
            ours: c.our_number.clone(),
            theirs: c.their_number.clone(),
        },
        Command::SetSmsOptOut(c) => StreamRef::SmsLine {
            ours: c.our_number.clone(),
            theirs: c.their_number.clone(),
        },
        Command::BindSmsNumber(c) => StreamRef::SmsNumber(c.number.clone()),
        Command::ReceiveSms(c) => StreamRef::Inbound(c.message_sid.clone()),
        Command::RouteInboundSms(c) => StreamRef::Inbound(c.message_sid.clone()),
    }
}

/// Every person whose facts deciding `cmd` on `state` needs: the actor, the people the
/// command names (recipient, participants, student, teachers, the person a directory
/// command targets) and a conversation's current participants. Sorted, no duplicates.
///
/// Load each into [`Facts::people`], then also each loaded person's
/// [`PersonState::related_people`] (a guardian's students: their schools, teachers and
/// names). A missing related person can only make a decision refuse, never allow.
pub fn people_needed(cmd: &Command, state: &State, actor: &Actor) -> Vec<PersonId> {
    let mut people: Vec<PersonId> = actor.person_id().into_iter().collect();
    match cmd {
        Command::RegisterPerson(c) => people.push(c.person_id),
        Command::LinkGuardian(c) => people.extend([c.guardian_id, c.student_id]),
        Command::UnlinkGuardian(c) => people.extend([c.guardian_id, c.student_id]),
        Command::SetStudentTeachers(c) => {
            people.push(c.student_id);
            people.extend(&c.teacher_ids);
        }
        Command::AssignRole(c) => people.push(c.person_id),
        Command::RevokeRole(c) => people.push(c.person_id),
        Command::SetContactPreferences(c) => people.push(c.person_id),
        Command::ResetContactPoint(c) => people.push(c.person_id),
        Command::SendPersonalMessage(c) => people.push(c.recipient_id),
        Command::StartConversation(c) => people.extend(&c.participant_ids),
        Command::ReceiveReply(c) => people.push(c.author_id),
        Command::MarkContactPointFailing(c) => people.push(c.person_id),
        Command::AssignSenderNumber(c) => people.push(c.person_id),
        _ => {}
    }
    if let State::Conversation(conversation) = state {
        people.extend(conversation.participants());
    }
    people.sort_unstable();
    people.dedup();
    people
}

/// The SMS numbers whose `smsnumber-` streams a decision on `cmd` needs, given the
/// target's `state`: the numbers a district takes for a school or its pool, and the
/// pool's free numbers a staff member may be given (see
/// [`Facts::numbers_of_other_districts`]).
pub fn numbers_needed(cmd: &Command, state: &State) -> Vec<PhoneNumber> {
    let mut numbers: Vec<PhoneNumber> = match cmd {
        Command::RegisterSchool(c) => c
            .sms_number
            .as_deref()
            .and_then(|n| PhoneNumber::parse(n).ok())
            .into_iter()
            .collect(),
        Command::AddSenderNumbers(c) => c
            .numbers
            .iter()
            .filter_map(|n| PhoneNumber::parse(n).ok())
            .collect(),
        Command::AssignSenderNumber(_) => match state {
            State::District(d) => d.free_sender_numbers().cloned().collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    numbers.sort();
    numbers.dedup();
    numbers
}

/// Decides `cmd` against the state of the stream [`target`] named.
///
/// # Errors
/// [`DomainError`] when a rule refuses the command; [`DomainError::Validation`] with
/// [`ValidationError::WrongStream`] when it was sent to the wrong kind of stream (a bug
/// in the caller).
pub fn decide(state: &State, cmd: &Command, facts: &Facts) -> Result<Vec<Event>, DomainError> {
    let expected = target(cmd, &facts.actor).initial_state();
    if std::mem::discriminant(&expected) != std::mem::discriminant(state) {
        return Err(ValidationError::WrongStream {
            command: cmd.name(),
            state: state.kind(),
        }
        .into());
    }
    Ok(match state {
        State::District(s) => district::decide(s, cmd, facts)?,
        State::Person(s) => person::decide(s, cmd, facts)?,
        State::Conversation(s) => conversation::decide(s, cmd, facts)?,
        State::Delivery(s) => delivery::decide(s, cmd, facts)?,
        State::SmsLine(s) => sms_line::decide(s, cmd, facts)?,
        State::SmsNumber(s) => sms_number::decide(s, cmd, facts)?,
        State::Inbound(s) => inbound::decide(s, cmd, facts)?,
    })
}

/// The school a command concerns, for event metadata and oversight: the one it names,
/// else the conversation's school.
pub fn school_of(state: &State, cmd: &Command) -> Option<SchoolId> {
    match cmd {
        Command::RegisterSchool(c) => Some(c.school_id),
        Command::StartConversation(c) => Some(c.school_id),
        Command::AssignRole(c) => c.school_id,
        Command::RevokeRole(c) => c.school_id,
        Command::RegisterPerson(c) => c.school_ids.first().copied(),
        _ => match state {
            State::Conversation(s) => s.school_id(),
            State::Person(s) => s.school_ids().first().copied(),
            _ => None,
        },
    }
}

/// Why a command was refused, whichever aggregate refused it.
///
/// A malformed value is always [`DomainError::Validation`], whichever decider found it:
/// the conversions from the aggregates' errors lift their `Validation` variants, so
/// callers match one place.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// Refused by the district rules.
    #[error(transparent)]
    District(DistrictError),
    /// Refused by the person rules.
    #[error(transparent)]
    Person(PersonError),
    /// Refused by the conversation rules.
    #[error(transparent)]
    Conversation(ConversationError),
    /// Refused by the delivery rules.
    #[error(transparent)]
    Delivery(DeliveryError),
    /// Refused by the SMS line rules.
    #[error(transparent)]
    SmsLine(SmsLineError),
    /// Refused by the SMS number rules.
    #[error(transparent)]
    SmsNumber(SmsNumberError),
    /// Refused by the inbound SMS rules.
    #[error(transparent)]
    Inbound(InboundError),
    /// A malformed command, or one sent to the wrong kind of stream.
    #[error(transparent)]
    Validation(#[from] ValidationError),
}

macro_rules! lift_validation {
    ($($error:ident => $variant:ident),* $(,)?) => {
        $(
            impl From<$error> for DomainError {
                fn from(error: $error) -> Self {
                    match error {
                        $error::Validation(v) => DomainError::Validation(v),
                        other => DomainError::$variant(other),
                    }
                }
            }
        )*
    };
}

lift_validation! {
    DistrictError => District,
    PersonError => Person,
    ConversationError => Conversation,
    DeliveryError => Delivery,
    SmsLineError => SmsLine,
    SmsNumberError => SmsNumber,
    InboundError => Inbound,
}

impl DomainError {
    /// The stable API error code (`not_permitted`, `recipient_too_young`, …).
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::District(e) => e.code(),
            DomainError::Person(e) => e.code(),
            DomainError::Conversation(e) => e.code(),
            DomainError::Delivery(e) => e.code(),
            DomainError::SmsLine(e) => e.code(),
            DomainError::SmsNumber(e) => e.code(),
            DomainError::Inbound(e) => e.code(),
            DomainError::Validation(e) => e.code(),
        }
    }
}

#[cfg(test)]
mod tests;
