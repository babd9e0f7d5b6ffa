//! The conversation aggregate: personal, school and group conversations, their
//! messages (never edited or deleted), and each participant's mute, archive and read
//! position.

mod compose;
mod start;

use std::collections::{BTreeMap, BTreeSet};

use crate::commands::{Command, MarkRead, PostMessage, ReceiveReply, RenameConversation};
use crate::events::{
    ConversationArchived, ConversationMuted, ConversationRenamed, ConversationStopped,
    ConversationUnarchived, ConversationUnmuted, Event, InboundReplyRefused, MessagePosted,
    MessagesRead,
};
use crate::facts::{Actor, Facts};
use crate::ids::{
    inbound_message_id, ConversationId, MessageId, PersonId, PhoneNumber, ProviderMessageId,
    SchoolId,
};
use crate::permissions::Permission;
use crate::person::PersonState;
use crate::text::{self, first_blocked};
use crate::validation::ValidationError;
use crate::values::{Channel, ContactChannel, ConversationKind, SendAs};
use crate::visibility;

use compose::{check_text, compose, CheckedText, Draft};
use start::{send_personal, start};

/// The youngest age (on the day of sending) at which a student may get personal
/// messages.
pub const MIN_PERSONAL_MESSAGE_AGE: u32 = 13;

/// What never changes once a conversation has started.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Header {
    id: ConversationId,
    kind: ConversationKind,
    school_id: SchoolId,
    started_by: PersonId,
}

/// A conversation stream's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationState {
    header: Option<Header>,
    title: Option<String>,
    participants: Vec<PersonId>,
    stopped: bool,
    messages: Vec<MessageId>,
    /// Each message's [`Fingerprint`], beside `messages`.
    fingerprints: Vec<Fingerprint>,
    muted: BTreeSet<PersonId>,
    archived: BTreeSet<PersonId>,
    read: BTreeMap<PersonId, usize>,
    refused_replies: BTreeSet<ProviderMessageId>,
}

impl ConversationState {
    /// Whether `ConversationStarted` was recorded.
    pub fn is_started(&self) -> bool {
        self.header.is_some()
    }

    /// The conversation's id, once started.
    pub fn id(&self) -> Option<ConversationId> {
        self.header.map(|h| h.id)
    }

    /// Personal, school or group, once started.
    pub fn kind(&self) -> Option<ConversationKind> {
        self.header.map(|h| h.kind)
    }

    /// The school it belongs to, once started.
    pub fn school_id(&self) -> Option<SchoolId> {
        self.header.map(|h| h.school_id)
    }

    /// Who started it, once started.
    pub fn started_by(&self) -> Option<PersonId> {
        self.header.map(|h| h.started_by)
    }

    /// The current title, if any.
    pub fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }

    /// Every participant, the starter first.
    pub fn participants(&self) -> &[PersonId] {
        &self.participants
    }

    /// Whether it was stopped (still readable, closed to new messages).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Every message, in order.
    pub fn messages(&self) -> &[MessageId] {
        &self.messages
    }

    /// Whether `person` muted it.
    pub fn is_muted(&self, person: PersonId) -> bool {
        self.muted.contains(&person)
    }

    /// Whether `person` archived it.
    pub fn is_archived(&self, person: PersonId) -> bool {
        self.archived.contains(&person)
    }

    /// The last message `person` has read.
    pub fn read_up_to(&self, person: PersonId) -> Option<MessageId> {
        self.read.get(&person).map(|i| self.messages[*i])
    }
}

/// Why a conversation command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConversationError {
    /// The actor may not do this (not a person, not staff, lacking the permission, …).
    #[error("not permitted")]
    NotPermitted,
    /// A person named (or the actor) is not registered in this district.
    #[error("unknown person {person_id}")]
    UnknownPerson {
        /// The person.
        person_id: PersonId,
    },
    /// The school is not registered.
    #[error("unknown school {school_id}")]
    UnknownSchool {
        /// The school.
        school_id: SchoolId,
    },
    /// No conversation with this id has started.
    #[error("unknown conversation {conversation_id}")]
    UnknownConversation {
        /// The conversation.
        conversation_id: ConversationId,
    },
    /// A conversation with this id has already started.
    #[error("conversation {conversation_id} already exists")]
    AlreadyStarted {
        /// The conversation.
        conversation_id: ConversationId,
    },
    /// The conversation was stopped: readable, but closed to new messages.
    #[error("conversation {conversation_id} is stopped")]
    ConversationStopped {
        /// The conversation.
        conversation_id: ConversationId,
    },
    /// The actor is not a participant (nor a school-inbox holder of a school
    /// conversation).
    #[error("person {person_id} is not a participant")]
    NotAParticipant {
        /// The actor.
        person_id: PersonId,
    },
    /// An SMS reply came from a number that is no longer a phone of the person it was
    /// texted for, nor of anyone else in the conversation (they changed phones).
    #[error("the number a reply came from is no longer a phone of {person_id}")]
    NotTheirNumber {
        /// The person the number was last texted for.
        person_id: PersonId,
    },
    /// The student is under 13 on the day of sending, or has no known birth date.
    #[error("student {recipient_id} is under {min_age} ({})", age_words(*.age))]
    RecipientTooYoung {
        /// The student.
        recipient_id: PersonId,
        /// Their age, if their birth date is known.
        age: Option<u32>,
        /// The minimum age.
        min_age: u32,
    },
    /// The recipient shares no school where the sender holds the permission, or is staff
    /// (staff-to-staff only in group conversations).
    #[error("recipient {recipient_id} cannot be reached from here")]
    RecipientNotReachable {
        /// The recipient.
        recipient_id: PersonId,
    },
    /// Families may only start conversations with their students' current teachers, and
    /// a teacher without `personal_messages` only with their own students' families.
    #[error("{teacher_id} is not a current teacher of {of}'s students")]
    NotACurrentTeacher {
        /// The staff member (or would-be teacher).
        teacher_id: PersonId,
        /// The family member.
        of: PersonId,
    },
    /// More participants (starter included) than the district allows.
    #[error("{got} participants, at most {max} allowed")]
    TooManyParticipants {
        /// The district's `max_participants`.
        max: u16,
        /// Participants asked for, starter included.
        got: usize,
    },
    /// A student participant while the district has students in conversations off.
    #[error("students are not enabled in conversations (student {student_id})")]
    StudentsNotEnabled {
        /// The student.
        student_id: PersonId,
    },
    /// The content guard found a forbidden pattern in the body or subject.
    #[error("the message contains blocked content ({pattern})")]
    BlockedContent {
        /// The pattern found.
        pattern: String,
    },
    /// A malformed value.
    #[error(transparent)]
    Validation(#[from] ValidationError),
}

/// A student's age as a refusal says it: "age 9", or that the birth date is unknown.
fn age_words(age: Option<u32>) -> String {
    age.map_or_else(
        || "no birth date is known".to_owned(),
        |a| format!("age {a}"),
    )
}

impl ConversationError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            ConversationError::NotPermitted => "not_permitted",
            ConversationError::UnknownPerson { .. } => "unknown_person",
            ConversationError::UnknownSchool { .. } => "unknown_school",
            ConversationError::UnknownConversation { .. } => "unknown_conversation",
            ConversationError::AlreadyStarted { .. } => "already_exists",
            ConversationError::ConversationStopped { .. } => "conversation_stopped",
            ConversationError::NotAParticipant { .. } => "not_a_participant",
            ConversationError::NotTheirNumber { .. } => "not_their_number",
            ConversationError::RecipientTooYoung { .. } => "recipient_too_young",
            ConversationError::RecipientNotReachable { .. } => "recipient_not_reachable",
            ConversationError::NotACurrentTeacher { .. } => "not_a_current_teacher",
            ConversationError::TooManyParticipants { .. } => "too_many_participants",
            ConversationError::StudentsNotEnabled { .. } => "students_not_enabled",
            ConversationError::BlockedContent { .. } => "blocked_content",
            ConversationError::Validation(e) => e.code(),
        }
    }
}

type Decision = Result<Vec<Event>, ConversationError>;

/// Decides a messaging command against a conversation's stream.
///
/// # Errors
/// [`ConversationError`] when a rule refuses it.
pub fn decide(state: &ConversationState, cmd: &Command, facts: &Facts) -> Decision {
    match cmd {
        Command::SendPersonalMessage(c) => send_personal(state, c, facts),
        Command::StartConversation(c) => start(state, c, facts),
        Command::PostMessage(c) => post(state, c, facts),
        Command::StopConversation(c) => stop(state, c.conversation_id, facts),
        Command::RenameConversation(c) => rename(state, c, facts),
        Command::MuteConversation(c) => toggle(state, c.conversation_id, facts, Toggle::Mute),
        Command::UnmuteConversation(c) => toggle(state, c.conversation_id, facts, Toggle::Unmute),
        Command::ArchiveConversation(c) => toggle(state, c.conversation_id, facts, Toggle::Archive),
        Command::UnarchiveConversation(c) => {
            toggle(state, c.conversation_id, facts, Toggle::Unarchive)
        }
        Command::MarkRead(c) => mark_read(state, c, facts),
        Command::ReceiveReply(c) => receive_reply(state, c, facts),
        other => Err(ValidationError::WrongStream {
            command: other.name(),
            state: "conversation",
        }
        .into()),
    }
}

/// The acting person: messaging needs a registered person, never a service.
fn acting_person(facts: &Facts) -> Result<(PersonId, &PersonState), ConversationError> {
    let id = facts
        .actor
        .person_id()
        .ok_or(ConversationError::NotPermitted)?;
    let person = facts
        .person(id)
        .ok_or(ConversationError::UnknownPerson { person_id: id })?;
    Ok((id, person))
}

fn known(facts: &Facts, id: PersonId) -> Result<&PersonState, ConversationError> {
    facts
        .person(id)
        .ok_or(ConversationError::UnknownPerson { person_id: id })
}

fn holds(facts: &Facts, person: &PersonState, school: SchoolId, permission: Permission) -> bool {
    person.is_staff()
        && facts
            .district
            .permissions_of(person, school)
            .contains(permission)
}

/// The schools a family member is tied to: a student's own; a guardian's own and their
/// linked students' (students missing from the facts add nothing, which can only
/// refuse). Empty for staff.
fn school_ties(person: &PersonState, facts: &Facts) -> BTreeSet<SchoolId> {
    let mut ties: BTreeSet<SchoolId> = person.school_ids().iter().copied().collect();
    for student in person.related_people() {
        if let Some(s) = facts.person(student) {
            ties.extend(s.school_ids().iter().copied());
        }
    }
    ties
}

/// Whether `teacher` currently teaches, at `school`, one of the students `family` speaks
/// for. A class conversation belongs to the school where the child is taught: a
/// teacher of one child at one school is no teacher of the family at the sibling's.
fn teaches(facts: &Facts, teacher: PersonId, family: &PersonState, school: SchoolId) -> bool {
    family.family_students().iter().any(|student| {
        facts
            .person(*student)
            .is_some_and(|s| s.teachers().contains(&teacher) && s.school_ids().contains(&school))
    })
}

fn started(state: &ConversationState, id: ConversationId) -> Result<Header, ConversationError> {
    state.header.ok_or(ConversationError::UnknownConversation {
        conversation_id: id,
    })
}

fn not_stopped(state: &ConversationState, header: Header) -> Result<(), ConversationError> {
    if state.stopped {
        Err(ConversationError::ConversationStopped {
            conversation_id: header.id,
        })
    } else {
        Ok(())
    }
}

/// Whether `person` holds the school inbox of a school conversation.
fn is_inbox_holder(header: Header, person: &PersonState, facts: &Facts) -> bool {
    header.kind == ConversationKind::School
        && holds(facts, person, header.school_id, Permission::SchoolInbox)
}

/// Participants while they take part ([`visibility::takes_part_at`]), and school-inbox
/// holders for school conversations, may read, mute, archive and mark read.
fn may_view(
    state: &ConversationState,
    header: Header,
    id: PersonId,
    person: &PersonState,
    facts: &Facts,
) -> Result<(), ConversationError> {
    if is_inbox_holder(header, person, facts) {
        return Ok(());
    }
    takes_part(state, header, id, person)
}

/// Whether `id` is a participant who still takes part: `not_a_participant` for someone
/// never in it, `not_permitted` for staff whose roles at its school are gone.
fn takes_part(
    state: &ConversationState,
    header: Header,
    id: PersonId,
    person: &PersonState,
) -> Result<(), ConversationError> {
    if !state.participants.contains(&id) {
        Err(ConversationError::NotAParticipant { person_id: id })
    } else if !visibility::takes_part_at(person, header.school_id) {
        Err(ConversationError::NotPermitted)
    } else {
        Ok(())
    }
}

/// Who gets a delivery: every participant but the author who takes part
/// ([`visibility::takes_part_at`]: staff who left the school's roles are sent nothing);
/// for school conversations only the non-staff ones (staff see the school inbox).
fn recipients(
    participants: &[PersonId],
    kind: ConversationKind,
    school: SchoolId,
    author: PersonId,
    facts: &Facts,
) -> Result<Vec<PersonId>, ConversationError> {
    let mut out = Vec::new();
    for id in participants.iter().copied().filter(|p| *p != author) {
        let person = known(facts, id)?;
        if (kind == ConversationKind::School && person.is_staff())
            || !visibility::takes_part_at(person, school)
        {
            continue;
        }
        out.push(id);
    }
    Ok(out)
}

fn new_message_id(
    state: &ConversationState,
    id: MessageId,
) -> Result<MessageId, ConversationError> {
    if state.messages.contains(&id) {
        Err(ValidationError::DuplicateMessageId { message_id: id }.into())
    } else {
        Ok(id)
    }
}

/// What makes a message the same message: who wrote it, under whose identity, and its
/// text as recorded (trimmed; a blank subject is none). Kept per message so that a
/// caller retrying a command under the ids it chose (API.md: "a retried command is the
/// same command") is answered as done instead of as a clash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint(u64);

impl Fingerprint {
    fn of(author: PersonId, sent_as: SendAs, body: &str, subject: Option<&str>) -> Self {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: the same in every process of one build, and the state
        // holding it is never stored.
        let mut hasher = std::hash::DefaultHasher::new();
        author.hash(&mut hasher);
        sent_as.hash(&mut hasher);
        body.trim().hash(&mut hasher);
        subject
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .hash(&mut hasher);
        Self(hasher.finish())
    }

    fn of_posted(e: &MessagePosted) -> Self {
        Self::of(e.author_id, e.sent_as, &e.body, e.subject.as_deref())
    }
}

/// Whether message `id` was already posted as this very message (`Ok(true)`: the
/// command is a retry and records nothing more); `Ok(false)` when the id is unused.
///
/// # Errors
/// [`ValidationError::DuplicateMessageId`] when another message holds the id.
fn posted_before(
    state: &ConversationState,
    id: MessageId,
    fingerprint: Fingerprint,
) -> Result<bool, ConversationError> {
    match state.messages.iter().position(|m| *m == id) {
        None => Ok(false),
        Some(index) if state.fingerprints.get(index) == Some(&fingerprint) => Ok(true),
        Some(_) => Err(ValidationError::DuplicateMessageId { message_id: id }.into()),
    }
}

fn post(state: &ConversationState, c: &PostMessage, facts: &Facts) -> Decision {
    let header = started(state, c.conversation_id)?;
    let (author_id, author) = acting_person(facts)?;
    let inbox = is_inbox_holder(header, author, facts);
    let from = c.from.unwrap_or(if inbox {
        SendAs::School
    } else {
        SendAs::Personal
    });
    match from {
        SendAs::School if header.kind != ConversationKind::School => {
            return Err(ValidationError::NotApplicable {
                field: "from",
                reason: "only school conversations are sent from the school",
            }
            .into())
        }
        SendAs::School if !inbox => return Err(ConversationError::NotPermitted),
        SendAs::School => {}
        SendAs::Personal => {
            takes_part(state, header, author_id, author)?;
            if header.kind == ConversationKind::Personal
                && author.is_staff()
                && !holds(
                    facts,
                    author,
                    header.school_id,
                    Permission::PersonalMessages,
                )
            {
                return Err(ConversationError::NotPermitted);
            }
        }
    }
    if posted_before(
        state,
        c.message_id,
        Fingerprint::of(author_id, from, &c.body, None),
    )? {
        return Ok(vec![]);
    }
    not_stopped(state, header)?;
    let text = check_text(&c.body, None, author, facts)?;
    let message_id = new_message_id(state, c.message_id)?;
    let recipients = recipients(
        &state.participants,
        header.kind,
        header.school_id,
        author_id,
        facts,
    )?;
    let posted = compose(
        Draft {
            conversation_id: header.id,
            message_id,
            school_id: header.school_id,
            author_id,
            author,
            sent_as: from,
            text,
            channel: None,
            recipients,
            muted: &state.muted,
        },
        facts,
    )?;
    Ok(vec![posted.into()])
}

/// An SMS reply from a family member the conversation sent SMS to: posted as their
/// message, delivered as written to everyone else; in a stopped conversation it is kept
/// (`inbound_reply_refused`), never dropped. The provider retrying its webhook posts
/// it once. Nobody is texted it on the phone it was typed on: whoever shares that phone
/// with the author has it already.
fn receive_reply(state: &ConversationState, c: &ReceiveReply, facts: &Facts) -> Decision {
    if !matches!(facts.actor, Actor::System(_)) {
        return Err(ConversationError::NotPermitted);
    }
    let header = started(state, c.conversation_id)?;
    let message_id = inbound_message_id(&c.message_sid);
    if state.messages.contains(&message_id) || state.refused_replies.contains(&c.message_sid) {
        return Ok(vec![]);
    }
    if !state.participants.contains(&c.author_id) {
        return Err(ConversationError::NotAParticipant {
            person_id: c.author_id,
        });
    }
    let author_id = match &c.from_number {
        Some(number) => whose_phone_a_reply_came_from(state, c.author_id, number, facts)?,
        None => c.author_id,
    };
    let author = known(facts, author_id)?;
    // Kept, never lost, but not posted: a stopped conversation takes no reply, and what
    // the district forbids (a social security number) is relayed to nobody.
    let blocked = first_blocked(&facts.district.settings().blocked_patterns, &[&c.body]);
    let refusal = if state.stopped {
        Some("conversation_stopped")
    } else if blocked.is_some() {
        Some("blocked_content")
    } else {
        None
    };
    let shared_phone_with = c.from_number.as_ref().map_or_else(Vec::new, |number| {
        who_else_has_the_phone_a_reply_came_from(state, author_id, number, facts)
    });
    if let Some(reason) = refusal {
        return Ok(vec![InboundReplyRefused {
            conversation_id: header.id,
            author_id,
            message_sid: c.message_sid.clone(),
            body: c.body.clone(),
            reason: Some(reason.to_owned()),
            shared_phone_with,
            at: facts.now,
        }
        .into()]);
    }
    let body = text::MessageBody::from_outside(&c.body, crate::inbound::MAX_INBOUND_CHARS)?;
    let recipients = recipients(
        &state.participants,
        header.kind,
        header.school_id,
        author_id,
        facts,
    )?;
    let authors_phones: Vec<&str> = author
        .contact_points()
        .iter()
        .filter(|cp| cp.channel == ContactChannel::Sms)
        .map(|cp| cp.address.as_str())
        .collect();
    let mut posted = compose(
        Draft {
            conversation_id: header.id,
            message_id,
            school_id: header.school_id,
            author_id,
            author,
            sent_as: SendAs::Personal,
            text: CheckedText::verbatim(body),
            channel: None,
            recipients,
            muted: &state.muted,
        },
        facts,
    )?;
    posted.deliveries.retain(|d| {
        !(d.channel == Channel::Sms
            && d.address
                .as_deref()
                .is_some_and(|a| authors_phones.contains(&a)))
    });
    posted.shared_phone_with = shared_phone_with;
    Ok(vec![posted.into()])
}

/// A text from a phone two guardians share ("For María: …", "For Ramón: …") is credited
/// to the person that phone was last texted for; nothing tells who of them typed it. So
/// the record names the conversation's other participants with that number too, and
/// never claims more than it knows.
fn who_else_has_the_phone_a_reply_came_from(
    state: &ConversationState,
    author: PersonId,
    number: &PhoneNumber,
    facts: &Facts,
) -> Vec<PersonId> {
    state
        .participants
        .iter()
        .copied()
        .filter(|p| *p != author)
        .filter(|p| has_the_phone(*p, number, facts))
        .collect()
}

/// Who a text from `number` is credited to: `texted`, the person the phone was last
/// texted for on that line, while it is still one of their phones; after they changed
/// phones, another participant who still has it (a shared phone they kept); else
/// nobody: whoever has the old phone now does not write as the family
/// ([`ConversationError::NotTheirNumber`]).
fn whose_phone_a_reply_came_from(
    state: &ConversationState,
    texted: PersonId,
    number: &PhoneNumber,
    facts: &Facts,
) -> Result<PersonId, ConversationError> {
    if has_the_phone(texted, number, facts) {
        return Ok(texted);
    }
    state
        .participants
        .iter()
        .copied()
        .find(|p| *p != texted && has_the_phone(*p, number, facts))
        .ok_or(ConversationError::NotTheirNumber { person_id: texted })
}

/// Whether `person` has `number` among their SMS contact points.
fn has_the_phone(person: PersonId, number: &PhoneNumber, facts: &Facts) -> bool {
    facts.person(person).is_some_and(|p| {
        p.contact_points()
            .iter()
            .any(|cp| cp.channel == ContactChannel::Sms && cp.address == number.as_str())
    })
}

/// Stop and rename: staff participants, or school-inbox holders of a school
/// conversation; never families.
fn may_manage(
    state: &ConversationState,
    id: ConversationId,
    facts: &Facts,
) -> Result<(Header, PersonId), ConversationError> {
    let header = started(state, id)?;
    let (person_id, person) = acting_person(facts)?;
    if !person.is_staff() {
        return Err(ConversationError::NotPermitted);
    }
    may_view(state, header, person_id, person, facts)?;
    Ok((header, person_id))
}

fn stop(state: &ConversationState, id: ConversationId, facts: &Facts) -> Decision {
    let (header, by) = may_manage(state, id, facts)?;
    if state.stopped {
        return Ok(vec![]);
    }
    Ok(vec![ConversationStopped {
        conversation_id: header.id,
        by,
        at: facts.now,
    }
    .into()])
}

fn rename(state: &ConversationState, c: &RenameConversation, facts: &Facts) -> Decision {
    let (header, by) = may_manage(state, c.conversation_id, facts)?;
    let title = compose::check_title(&c.title, facts)?;
    if state.title.as_deref() == Some(title.as_str()) {
        return Ok(vec![]);
    }
    Ok(vec![ConversationRenamed {
        conversation_id: header.id,
        title,
        by,
        at: facts.now,
    }
    .into()])
}

#[derive(Clone, Copy)]
enum Toggle {
    Mute,
    Unmute,
    Archive,
    Unarchive,
}

/// The per-participant switches; setting one to what it already is records nothing.
fn toggle(state: &ConversationState, id: ConversationId, facts: &Facts, t: Toggle) -> Decision {
    let header = started(state, id)?;
    let (person_id, person) = acting_person(facts)?;
    may_view(state, header, person_id, person, facts)?;
    let muted = state.muted.contains(&person_id);
    let archived = state.archived.contains(&person_id);
    let (conversation_id, at) = (header.id, facts.now);
    let event: Event = match t {
        Toggle::Mute if !muted => ConversationMuted {
            conversation_id,
            person_id,
            at,
        }
        .into(),
        Toggle::Unmute if muted => ConversationUnmuted {
            conversation_id,
            person_id,
            at,
        }
        .into(),
        Toggle::Archive if !archived => ConversationArchived {
            conversation_id,
            person_id,
            at,
        }
        .into(),
        Toggle::Unarchive if archived => ConversationUnarchived {
            conversation_id,
            person_id,
            at,
        }
        .into(),
        _ => return Ok(vec![]),
    };
    Ok(vec![event])
}

fn mark_read(state: &ConversationState, c: &MarkRead, facts: &Facts) -> Decision {
    let header = started(state, c.conversation_id)?;
    let (person_id, person) = acting_person(facts)?;
    may_view(state, header, person_id, person, facts)?;
    let Some(index) = state.messages.iter().position(|m| *m == c.up_to_message_id) else {
        return Err(ValidationError::UnknownMessage {
            message_id: c.up_to_message_id,
        }
        .into());
    };
    if state
        .read
        .get(&person_id)
        .is_some_and(|read| *read >= index)
    {
        return Ok(vec![]);
    }
    Ok(vec![MessagesRead {
        conversation_id: header.id,
        person_id,
        up_to_message_id: c.up_to_message_id,
        at: facts.now,
    }
    .into()])
}

/// Applies a conversation event; other events leave the state as it is.
pub fn evolve(mut state: ConversationState, event: &Event) -> ConversationState {
    match event {
        Event::ConversationStarted(e) => {
            state.header = Some(Header {
                id: e.conversation_id,
                kind: e.kind,
                school_id: e.school_id,
                started_by: e.started_by,
            });
            state.title = e.title.clone();
            state.participants = e.participant_ids.clone();
        }
        Event::MessagePosted(e) if !state.messages.contains(&e.message_id) => {
            state.messages.push(e.message_id);
            state.fingerprints.push(Fingerprint::of_posted(e));
            a_new_message_brings_it_back_from_the_archive(&mut state);
        }
        Event::ConversationStopped(_) => state.stopped = true,
        Event::ConversationResumed(_) => state.stopped = false,
        Event::InboundReplyRefused(e) => {
            state.refused_replies.insert(e.message_sid.clone());
        }
        Event::ConversationRenamed(e) => state.title = Some(e.title.clone()),
        Event::ConversationMuted(e) => {
            state.muted.insert(e.person_id);
        }
        Event::ConversationUnmuted(e) => {
            state.muted.remove(&e.person_id);
        }
        Event::ConversationArchived(e) => {
            state.archived.insert(e.person_id);
        }
        Event::ConversationUnarchived(e) => {
            state.archived.remove(&e.person_id);
        }
        Event::MessagesRead(e) => {
            if let Some(index) = state.messages.iter().position(|m| *m == e.up_to_message_id) {
                let read = state.read.entry(e.person_id).or_insert(index);
                *read = (*read).max(index);
            }
        }
        _ => {}
    }
    state
}

/// Archiving puts a conversation away until something new happens in it: a new message
/// brings it back into the inbox of everyone who archived it, so a family's answer to a
/// conversation a teacher had archived is not left unseen. The read models apply the
/// same rule (a person's archive holds only conversations with no message since they
/// archived them).
fn a_new_message_brings_it_back_from_the_archive(state: &mut ConversationState) {
    state.archived.clear();
}

#[cfg(test)]
mod tests;
