//! The query service: every read of API.md, authorised by the domain's
//! [`visibility`](homeroom_domain::visibility) rules and answered from the read models.
//!
//! 1. `?min_position=P` waits until the read models have applied `P` (read your own
//!    writes), or answers [`QueryError::Stale`] after [`QueryService::STALE_AFTER`].
//! 2. The viewer's directory facts (roles, schools) come from the event streams through
//!    the command service's version-checked cache, as a decision's do: a revoked role
//!    stops showing anything the moment its revocation was recorded.
//! 3. The read model answers; what the viewer may not see is refused with
//!    `not_permitted`, and what does not exist in the viewer's district is unknown (the
//!    read models are keyed by district, so another district's ids are unknown too).

use crate::error::CommandError;
use crate::live::Listener;
use crate::service::CommandService;
use homeroom_domain::visibility::{self, ConversationFacts, OversightReach, Viewer};
use homeroom_domain::{
    Actor, ConversationId, ConversationKind, DistrictId, PersonId, PersonKind, SchoolId, SendAs,
};
use homeroom_eventstore::{Position, StoreError};
use homeroom_projections::queries::{
    AuditFilter, AuditPage, Conversation, ConversationExport, Inbox, Oversight, OversightFilter,
    OversightScope, PageRequest, Participant, StudentRecord,
};
use homeroom_projections::{ProjectionRuntime, ReadModels, WaitError};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Which inbox tab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxBox {
    /// The viewer's own conversations.
    Personal,
    /// The shared inboxes of the schools where the viewer holds `school_inbox`.
    School,
}

/// Who reads, in which district.
#[derive(Debug, Clone)]
pub struct Reader {
    /// The tenant.
    pub district: DistrictId,
    /// The person or service reading.
    pub actor: Actor,
}

/// One chain that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BrokenLink {
    /// The stream.
    pub stream: String,
    /// The version of the event that does not verify.
    pub version: u64,
}

/// What `GET /v1/audit/verify` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct VerifyReport {
    /// Whether every hash chain of the district holds.
    pub ok: bool,
    /// How many events were checked.
    pub checked: u64,
    /// Every event that does not verify, in log order.
    pub broken: Vec<BrokenLink>,
}

/// Why a read answered nothing.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The viewer may not see this.
    #[error("not permitted: {0}")]
    NotPermitted(&'static str),
    /// No such conversation in the viewer's district.
    #[error("unknown conversation {0}")]
    UnknownConversation(ConversationId),
    /// No such person (or not a student) in the viewer's district.
    #[error("unknown student {0}")]
    UnknownPerson(PersonId),
    /// No such school in the viewer's district.
    #[error("unknown school {0}")]
    UnknownSchool(SchoolId),
    /// The token's person is not registered in its district: nobody to read as.
    #[error("the token's person {0} is not registered in this district")]
    UnknownViewer(PersonId),
    /// The read models had not applied `min_position` in time.
    #[error("the read models have not caught up with position {position} yet; retry shortly")]
    Stale {
        /// The position asked for.
        position: Position,
    },
    /// A paging cursor not handed out here.
    #[error("malformed paging cursor; pass back the `next` of an earlier page")]
    BadCursor,
    /// A position in the other shape than this event store's (a number on SQLite, a
    /// string on PostgreSQL and KurrentDB): one kept from before a migration, say. It
    /// would read as before or after everything, so it is refused instead.
    #[error(
        "position {position} was not handed out by this event store (positions are numbers on SQLite, strings on PostgreSQL and KurrentDB); pass back one it answered"
    )]
    ForeignPosition {
        /// The position given.
        position: Position,
    },
    /// The directory facts could not be loaded.
    #[error("directory: {0}")]
    Directory(#[source] CommandError),
    /// The read models failed.
    #[error("read models: {0}")]
    ReadModel(#[source] homeroom_projections::QueryError),
    /// The event store failed (verification reads it directly).
    #[error("event store: {0}")]
    Store(#[source] StoreError),
}

impl QueryError {
    /// The stable API error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotPermitted(_) => "not_permitted",
            Self::UnknownConversation(_) => "unknown_conversation",
            Self::UnknownPerson(_) | Self::UnknownViewer(_) => "unknown_person",
            Self::UnknownSchool(_) => "unknown_school",
            Self::Stale { .. } => "stale",
            Self::BadCursor | Self::ForeignPosition { .. } => "validation",
            Self::Directory(e) => e.code(),
            Self::Store(StoreError::Closed | StoreError::Unavailable(_)) => "unavailable",
            Self::ReadModel(e) if e.is_unavailable() => "unavailable",
            Self::ReadModel(_) | Self::Store(_) => "internal",
        }
    }
}

impl From<homeroom_projections::QueryError> for QueryError {
    fn from(err: homeroom_projections::QueryError) -> Self {
        match err {
            homeroom_projections::QueryError::BadCursor => Self::BadCursor,
            other => Self::ReadModel(other),
        }
    }
}

/// Answers the API's reads. Cheap to share behind an `Arc`.
pub struct QueryService {
    commands: Arc<CommandService>,
    runtime: ProjectionRuntime,
    read: ReadModels,
    /// A position of this store's log, once a non-empty log has handed one out: what
    /// every position given must have the shape of ([`Position::same_shape_as`]).
    shape: std::sync::OnceLock<Position>,
}

impl QueryService {
    /// How long a query waits for `min_position` before answering `stale`.
    pub const STALE_AFTER: Duration = Duration::from_secs(5);

    /// Reads over `runtime`'s read models, authorised with `commands`' directory.
    pub fn new(commands: Arc<CommandService>, runtime: ProjectionRuntime) -> Self {
        let read = runtime.read_models();
        Self {
            commands,
            runtime,
            read,
            shape: std::sync::OnceLock::new(),
        }
    }

    /// Refuses a position of the other shape than this store's ([`QueryError::ForeignPosition`]).
    async fn check_shape(&self, position: Position) -> Result<(), QueryError> {
        if position == Position::START {
            return Ok(());
        }
        let shape = match self.shape.get() {
            Some(shape) => *shape,
            None => {
                let head = self
                    .commands
                    .store()
                    .head()
                    .await
                    .map_err(QueryError::Store)?;
                if head == Position::START {
                    // An empty log has handed out no position of either shape yet.
                    return Ok(());
                }
                *self.shape.get_or_init(|| head)
            }
        };
        if position.same_shape_as(shape) {
            Ok(())
        } else {
            Err(QueryError::ForeignPosition { position })
        }
    }

    /// The projection runtime the reads wait on.
    pub fn runtime(&self) -> &ProjectionRuntime {
        &self.runtime
    }

    async fn caught_up(&self, min_position: Option<Position>) -> Result<(), QueryError> {
        let Some(position) = min_position else {
            return Ok(());
        };
        self.check_shape(position).await?;
        self.runtime
            .wait_for(position, Self::STALE_AFTER)
            .await
            .map_err(|e| match e {
                WaitError::Timeout { position, .. } => QueryError::Stale { position },
                WaitError::UnknownProjector(_) => QueryError::Stale { position },
            })
    }

    /// The district and the reading person (if a person reads), from the streams.
    async fn viewer_facts(&self, reader: &Reader, more: &[PersonId]) -> Result<Facts, QueryError> {
        let mut people: Vec<PersonId> = reader.actor.person_id().into_iter().collect();
        people.extend(more);
        let (district, mut states) = self
            .commands
            .directory(&reader.district, &people)
            .await
            .map_err(QueryError::Directory)?;
        let viewer = reader.actor.person_id().map(|id| (id, states.remove(0)));
        if let Some((id, state)) = &viewer {
            if !state.is_registered() {
                return Err(QueryError::UnknownViewer(*id));
            }
        }
        Ok(Facts {
            district,
            viewer,
            others: states,
        })
    }

    /// Whom `GET /v1/stream` is for: the viewer, and the schools whose shared inbox
    /// they hold, as the directory says now.
    ///
    /// # Errors
    /// [`QueryError::NotPermitted`] for a service (no feed of its own);
    /// [`QueryError::UnknownViewer`] for a person not registered.
    pub async fn listener(&self, reader: &Reader) -> Result<Listener, QueryError> {
        // Read before the roles: every role change at or before it is in them.
        let roles_known_at = self
            .commands
            .store()
            .head()
            .await
            .map_err(|e| QueryError::Directory(CommandError::Store(e)))?;
        let facts = self.viewer_facts(reader, &[]).await?;
        let Some((person, state)) = &facts.viewer else {
            return Err(QueryError::NotPermitted(
                "a service has no stream of its own",
            ));
        };
        Ok(Listener {
            district: reader.district.clone(),
            person: *person,
            school_inboxes: visibility::school_inboxes(&facts.district, state),
            taking_part: visibility::taking_part(state),
            hears_every_delivery: visibility::sees_every_recipients_copy(state.kind()),
            sees_who_wrote_for_the_school: visibility::sees_who_wrote_for_the_school(state.kind()),
            roles_known_at,
            roles_held: state
                .role_assignments()
                .iter()
                .map(|(role, _)| role.clone())
                .collect(),
        })
    }

    /// `GET /v1/inbox`: the viewer's own tab, or the school inboxes they hold
    /// `school_inbox` for (narrowed to `school` when given).
    ///
    /// # Errors
    /// [`QueryError::NotPermitted`] for a service (no inbox of its own) or a school
    /// inbox the viewer does not hold; [`QueryError::Stale`], [`QueryError::BadCursor`].
    pub async fn inbox(
        &self,
        reader: &Reader,
        tab: InboxBox,
        school: Option<SchoolId>,
        archived: bool,
        page: &PageRequest,
        min_position: Option<Position>,
    ) -> Result<Inbox, QueryError> {
        self.caught_up(min_position).await?;
        let Some(person) = reader.actor.person_id() else {
            return Err(QueryError::NotPermitted("a service has no inbox"));
        };
        let facts = self.viewer_facts(reader, &[]).await?;
        let Some((_, state)) = &facts.viewer else {
            unreachable!("a person reads")
        };
        match tab {
            InboxBox::Personal => {
                let taking_part = visibility::taking_part(state);
                let school_boxes = visibility::school_inboxes(&facts.district, state);
                let mut inbox = self
                    .read
                    .inbox_personal_at(
                        &reader.district,
                        person,
                        &taking_part,
                        Some(&school_boxes),
                        archived,
                        page,
                    )
                    .await?;
                // As in the thread: what came from the school is the school's.
                if !visibility::sees_who_wrote_for_the_school(state.kind()) {
                    for item in &mut inbox.conversations {
                        if let Some(last) = item.last_message.as_mut() {
                            if last.sent_as == SendAs::School {
                                last.author_id = PersonId::new(item.school_id.as_uuid());
                            }
                        }
                    }
                }
                Ok(inbox)
            }
            InboxBox::School => {
                facts.known_school(school)?;
                let mut schools = visibility::school_inboxes(&facts.district, state);
                if let Some(school) = school {
                    schools.retain(|s| *s == school);
                }
                if schools.is_empty() {
                    return Err(QueryError::NotPermitted(
                        "the school inbox needs the school_inbox permission at that school",
                    ));
                }
                Ok(self
                    .read
                    .inbox_school(&reader.district, &schools, person, archived, page)
                    .await?)
            }
        }
    }

    /// `GET /v1/conversations/{id}`: the whole thread, in the viewer's language where
    /// they received it.
    ///
    /// # Errors
    /// [`QueryError::UnknownConversation`], [`QueryError::NotPermitted`],
    /// [`QueryError::Stale`].
    pub async fn conversation(
        &self,
        reader: &Reader,
        id: ConversationId,
        min_position: Option<Position>,
    ) -> Result<Conversation, QueryError> {
        self.caught_up(min_position).await?;
        let conversation = self
            .read
            .conversation(&reader.district, id, reader.actor.person_id())
            .await?
            .ok_or(QueryError::UnknownConversation(id))?;
        let participants: Vec<PersonId> = conversation
            .participants
            .iter()
            .map(|p| p.person_id)
            .collect();
        let viewer_kind = participant_kind(&conversation.participants, reader);
        self.check_conversation(
            reader,
            viewer_kind,
            ConversationFacts {
                kind: conversation.kind,
                school: conversation.school_id,
                participants: &participants,
            },
        )
        .await?;
        let mut conversation = conversation;
        // A family member or student sees how their own copy went, not how another
        // family was reached (as in their export).
        if let Some(viewer) = reader.actor.person_id() {
            if viewer_kind.is_some() && !visibility::sees_every_recipients_copy(viewer_kind) {
                for message in &mut conversation.messages {
                    message.deliveries.retain(|d| d.recipient_id == viewer);
                }
                conversation
                    .refused_replies
                    .retain(|r| r.may_be_from(viewer));
            }
        }
        if let Some(school) = self
            .school_name_for(reader, viewer_kind, conversation.school_id)
            .await?
        {
            let as_school = SchoolSide::of(
                conversation.kind,
                conversation.school_id,
                &conversation.participants,
                conversation
                    .messages
                    .iter()
                    .filter(|m| m.sent_as == SendAs::Personal)
                    .map(|m| m.author_id),
            );
            for message in &mut conversation.messages {
                if message.sent_as == SendAs::School {
                    message.author_id = as_school.id;
                    message.author_name = Some(school.clone());
                }
                as_school.hide_staff(&mut message.read_by);
            }
            as_school.hide_starter(&mut conversation.started_by);
            as_school.hide_staff_participants(&mut conversation.participants);
        }
        Ok(conversation)
    }

    /// The school's name when `viewer_kind` should see messages sent from the school
    /// under it rather than under the staff member who wrote them, and a school
    /// conversation without its staff among the participants
    /// ([`visibility::sees_who_wrote_for_the_school`]); `None` when they see the staff.
    async fn school_name_for(
        &self,
        reader: &Reader,
        viewer_kind: Option<PersonKind>,
        school: SchoolId,
    ) -> Result<Option<String>, QueryError> {
        if viewer_kind.is_none() || visibility::sees_who_wrote_for_the_school(viewer_kind) {
            return Ok(None);
        }
        let (district, _) = self
            .commands
            .directory(&reader.district, &[])
            .await
            .map_err(QueryError::Directory)?;
        Ok(district.school(school).map(|s| s.name.clone()))
    }

    /// `GET /v1/conversations/{id}/export`: the whole conversation for a records
    /// officer: participants, every message with its time, channel and status.
    ///
    /// # Errors
    /// As [`QueryService::conversation`].
    pub async fn export(
        &self,
        reader: &Reader,
        id: ConversationId,
        min_position: Option<Position>,
    ) -> Result<ConversationExport, QueryError> {
        self.caught_up(min_position).await?;
        let mut export = self
            .read
            .export_conversation(&reader.district, id)
            .await?
            .ok_or(QueryError::UnknownConversation(id))?;
        let participants: Vec<PersonId> = export.participants.iter().map(|p| p.person_id).collect();
        self.check_conversation(
            reader,
            participant_kind(&export.participants, reader),
            ConversationFacts {
                kind: export.kind,
                school: export.school_id,
                participants: &participants,
            },
        )
        .await?;
        // A family member or student gets only their own copies; everyone else who may
        // see the conversation (staff, services) is not a participant of this kind.
        if let Some(viewer) = reader.actor.person_id() {
            let kind = participant_kind(&export.participants, reader);
            if kind.is_some() && !visibility::sees_every_recipients_copy(kind) {
                for message in &mut export.messages {
                    message.deliveries.retain(|d| d.recipient_id == viewer);
                }
                export.refused_replies.retain(|r| r.may_be_from(viewer));
            }
            if let Some(school) = self.school_name_for(reader, kind, export.school_id).await? {
                let as_school = SchoolSide::of(
                    export.kind,
                    export.school_id,
                    &export.participants,
                    export
                        .messages
                        .iter()
                        .filter(|m| m.sent_as == SendAs::Personal)
                        .map(|m| m.author_id),
                );
                for message in &mut export.messages {
                    if message.sent_as == SendAs::School {
                        message.author_id = as_school.id;
                        message.author_name = Some(school.clone());
                    }
                    as_school.hide_staff(&mut message.read_by);
                }
                as_school.hide_starter(&mut export.started_by);
                as_school.hide_staff_participants(&mut export.participants);
            }
        }
        Ok(export)
    }

    /// Whether the reader may see the conversation; `participant_kind` is the reader's
    /// kind when they are one of its participants.
    async fn check_conversation(
        &self,
        reader: &Reader,
        participant_kind: Option<PersonKind>,
        conversation: ConversationFacts<'_>,
    ) -> Result<(), QueryError> {
        // A family member or student taking part needs no directory lookup; staff take
        // part only while their roles at the school last (`visibility::takes_part_at`).
        if participant_kind.is_some_and(|kind| kind != PersonKind::Staff) {
            return Ok(());
        }
        let facts = self.viewer_facts(reader, &[]).await?;
        if visibility::may_see_conversation(&facts.district, facts.as_viewer(), conversation) {
            Ok(())
        } else {
            Err(QueryError::NotPermitted(
                "only its participants, the school inbox (for school conversations) and oversight see this conversation",
            ))
        }
    }

    /// `GET /v1/students/{id}/messages`: the student's message record, the parts of the
    /// schools where the viewer holds `student_record`; inbound replies only where they
    /// hold `inbound_replies` too.
    ///
    /// # Errors
    /// [`QueryError::UnknownPerson`] when `student` is not a student of the district;
    /// [`QueryError::NotPermitted`] without `student_record` at one of their schools.
    pub async fn student_record(
        &self,
        reader: &Reader,
        student: PersonId,
        page: &PageRequest,
        min_position: Option<Position>,
    ) -> Result<StudentRecord, QueryError> {
        self.caught_up(min_position).await?;
        let facts = self.viewer_facts(reader, &[student]).await?;
        let student_state = &facts.others[0];
        if !student_state.is_registered() || student_state.kind() != Some(PersonKind::Student) {
            return Err(QueryError::UnknownPerson(student));
        }
        let access =
            visibility::student_record_access(&facts.district, facts.as_viewer(), student_state)
                .ok_or(QueryError::NotPermitted(
                    "a student's record needs the student_record permission at their school",
                ))?;
        Ok(self
            .read
            .student_record(&reader.district, student, &access, page)
            .await?)
    }

    /// `GET /v1/oversight/conversations`: every conversation the viewer's `oversight`
    /// reaches (narrowed to `school` when given), searchable.
    ///
    /// # Errors
    /// [`QueryError::UnknownSchool`] for a school not of the district (another
    /// district's schools do not exist for it); [`QueryError::NotPermitted`] without
    /// `oversight` (at `school`, when given).
    pub async fn oversight(
        &self,
        reader: &Reader,
        school: Option<SchoolId>,
        filter: &OversightFilter,
        page: &PageRequest,
        min_position: Option<Position>,
    ) -> Result<Oversight, QueryError> {
        self.caught_up(min_position).await?;
        let facts = self.viewer_facts(reader, &[]).await?;
        facts.known_school(school)?;
        let denied = QueryError::NotPermitted("oversight needs the oversight permission");
        let reach =
            visibility::oversight_reach(&facts.district, facts.as_viewer()).ok_or(denied)?;
        let scope = match (reach, school) {
            (OversightReach::District, None) => OversightScope::District,
            (OversightReach::District, Some(school)) => OversightScope::Schools(vec![school]),
            (OversightReach::Schools(schools), None) => OversightScope::Schools(schools),
            (OversightReach::Schools(schools), Some(school)) if schools.contains(&school) => {
                OversightScope::Schools(vec![school])
            }
            (OversightReach::Schools(_), Some(_)) => {
                return Err(QueryError::NotPermitted(
                    "oversight of that school needs the oversight permission there",
                ))
            }
        };
        Ok(self
            .read
            .oversight(&reader.district, &scope, filter, page)
            .await?)
    }

    /// `GET /v1/audit`: every event of the district with its metadata and hash.
    ///
    /// # Errors
    /// [`QueryError::NotPermitted`] unless a service or `oversight` district-wide.
    pub async fn audit(
        &self,
        reader: &Reader,
        filter: &AuditFilter,
        min_position: Option<Position>,
    ) -> Result<AuditPage, QueryError> {
        self.caught_up(min_position).await?;
        if let Some(after) = filter.after {
            self.check_shape(after).await?;
        }
        self.check_audit(reader).await?;
        Ok(self.read.audit(&reader.district, filter).await?)
    }

    async fn check_audit(&self, reader: &Reader) -> Result<(), QueryError> {
        let facts = self.viewer_facts(reader, &[]).await?;
        if visibility::may_read_audit(&facts.district, facts.as_viewer()) {
            Ok(())
        } else {
            Err(QueryError::NotPermitted(
                "the audit trail needs the oversight permission district-wide",
            ))
        }
    }

    /// `GET /v1/audit/verify`: checks every hash chain of the district against the event
    /// store itself (not a read model), from the first event to the head.
    ///
    /// # Errors
    /// As [`QueryService::audit`]; [`QueryError::Store`] when the store fails.
    pub async fn verify(
        &self,
        reader: &Reader,
        min_position: Option<Position>,
    ) -> Result<VerifyReport, QueryError> {
        // The log is read directly, but a position the read models have not reached is
        // answered `stale` as by every read, so clients treat all reads alike.
        self.caught_up(min_position).await?;
        self.check_audit(reader).await?;
        let verified = crate::verification::verify(
            &**self.commands.store(),
            Some(&self.read),
            Some(reader.district.as_str()),
        )
        .await
        .map_err(|e| match e {
            crate::verification::VerifyError::Store(e) => QueryError::Store(e),
            crate::verification::VerifyError::Trail(e) => QueryError::from(e),
        })?;
        let broken: Vec<BrokenLink> = verified
            .broken
            .into_iter()
            .map(|(stream, version)| BrokenLink { stream, version })
            .collect();
        Ok(VerifyReport {
            ok: broken.is_empty(),
            checked: verified.checked,
            broken,
        })
    }
}

/// The directory facts a read rests on.
struct Facts {
    district: homeroom_domain::DistrictState,
    viewer: Option<(PersonId, homeroom_domain::PersonState)>,
    others: Vec<homeroom_domain::PersonState>,
}

impl Facts {
    /// Refuses a school the district does not have (another district's schools do not
    /// exist for it); no school asked for passes.
    fn known_school(&self, school: Option<SchoolId>) -> Result<(), QueryError> {
        match school.filter(|&s| self.district.school(s).is_none()) {
            Some(unknown) => Err(QueryError::UnknownSchool(unknown)),
            None => Ok(()),
        }
    }

    fn as_viewer(&self) -> Viewer<'_> {
        match &self.viewer {
            Some((id, state)) => Viewer::Person { id: *id, state },
            None => Viewer::System,
        }
    }
}

/// The reader's kind as a participant of a conversation (`None` for a service, or a
/// person who sees it without taking part: an inbox holder, oversight).
fn participant_kind(participants: &[Participant], reader: &Reader) -> Option<PersonKind> {
    let viewer = reader.actor.person_id()?;
    participants
        .iter()
        .find(|p| p.person_id == viewer)
        .and_then(|p| p.kind)
}

/// What a family member or student sees of the school's side of a conversation
/// ([`visibility::sees_who_wrote_for_the_school`]): they talk with the school, so in a
/// school conversation its staff are neither among the participants, nor its starter,
/// nor among those who read a message, and a message from the school has the school's
/// id as its `author_id` (beside the school's name), in every view and export of it. A
/// staff member who wrote there as themselves (a teacher brought into a conference,
/// whose text was signed with their name) is one of the people the family talks with,
/// and is shown as such.
struct SchoolSide {
    /// The school's id, where a person's id would name the staff member.
    id: PersonId,
    /// For a school conversation, the people the family sees in it: its family members
    /// and the staff who wrote as themselves; `None` for other kinds, whose staff the
    /// family knows.
    seen: Option<Vec<PersonId>>,
}

impl SchoolSide {
    fn of(
        kind: ConversationKind,
        school: SchoolId,
        participants: &[Participant],
        wrote_as_themselves: impl Iterator<Item = PersonId>,
    ) -> Self {
        let seen = (kind == ConversationKind::School).then(|| {
            let mut seen: Vec<PersonId> = participants
                .iter()
                .filter(|p| p.kind != Some(PersonKind::Staff))
                .map(|p| p.person_id)
                .collect();
            for author in wrote_as_themselves {
                if !seen.contains(&author) {
                    seen.push(author);
                }
            }
            seen
        });
        Self {
            id: PersonId::new(school.as_uuid()),
            seen,
        }
    }

    /// Keeps of `read_by` the people the family sees: in a school conversation everyone
    /// else who read it is the school (a participant, or a holder of its inbox).
    fn hide_staff(&self, read_by: &mut Vec<PersonId>) {
        if let Some(seen) = &self.seen {
            read_by.retain(|p| seen.contains(p));
        }
    }

    fn hide_starter(&self, started_by: &mut PersonId) {
        if self.seen.as_ref().is_some_and(|s| !s.contains(started_by)) {
            *started_by = self.id;
        }
    }

    fn hide_staff_participants(&self, participants: &mut Vec<Participant>) {
        if let Some(seen) = &self.seen {
            participants.retain(|p| seen.contains(&p.person_id));
        }
    }
}
