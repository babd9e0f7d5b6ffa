//! The person aggregate: one stream per staff member, student or guardian, holding
//! their directory details, links, current teachers, roles and contact points.

use chrono::NaiveDate;

use crate::commands::{
    AssignRole, Command, LinkGuardian, MarkContactPointFailing, RegisterPerson, ResetContactPoint,
    RevokeRole, SetContactPreferences, SetStudentTeachers, UnlinkGuardian,
};
use crate::district::MAX_NAME_CHARS;
use crate::events::{
    ContactPointFailing, ContactPointReset, ContactPointsChanged, ContactPreferencesSet, Event,
    GuardianLinked, GuardianUnlinked, PersonRegistered, RoleAssigned, RoleRevoked,
    StudentTeachersSet,
};
use crate::facts::Facts;
use crate::ids::{EmailAddress, PersonId, PhoneNumber, RoleId, SchoolId};
use crate::permissions::Permission;
use crate::text;
use crate::validation::{language, ValidationError};
use crate::values::{Channel, ContactChannel, ContactPoint, PersonKind};

/// The language of people registered without one.
pub const DEFAULT_LANGUAGE: &str = "en";

/// A contact point as Homeroom knows it: the address and whether it is failing (a
/// failing one is skipped until `ResetContactPoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactPointState {
    /// SMS or email.
    pub channel: ContactChannel,
    /// The normalised address.
    pub address: String,
    /// Marked failing after a permanent delivery failure.
    pub failing: bool,
}

/// A person stream's state; also what `Facts::people` holds about each person.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonState {
    id: Option<PersonId>,
    kind: Option<PersonKind>,
    name: String,
    school_ids: Vec<SchoolId>,
    birth_date: Option<NaiveDate>,
    manually_added: bool,
    language: String,
    preferred_channel: Option<Channel>,
    contact_points: Vec<ContactPointState>,
    linked_students: Vec<PersonId>,
    teachers: Vec<PersonId>,
    roles: Vec<(RoleId, Option<SchoolId>)>,
}

impl Default for PersonState {
    fn default() -> Self {
        Self {
            id: None,
            kind: None,
            name: String::new(),
            school_ids: Vec::new(),
            birth_date: None,
            manually_added: false,
            language: DEFAULT_LANGUAGE.to_owned(),
            preferred_channel: None,
            contact_points: Vec::new(),
            linked_students: Vec::new(),
            teachers: Vec::new(),
            roles: Vec::new(),
        }
    }
}

impl PersonState {
    /// Whether `PersonRegistered` was recorded; an unregistered person is unknown.
    pub fn is_registered(&self) -> bool {
        self.id.is_some()
    }

    /// The person's id, once registered.
    pub fn id(&self) -> Option<PersonId> {
        self.id
    }

    /// Staff, student or guardian, once registered.
    pub fn kind(&self) -> Option<PersonKind> {
        self.kind
    }

    /// Whether the person is a student or a guardian.
    pub fn is_family(&self) -> bool {
        self.kind.is_some_and(PersonKind::is_family)
    }

    /// Whether the person is staff.
    pub fn is_staff(&self) -> bool {
        self.kind == Some(PersonKind::Staff)
    }

    /// Full name (empty until registered).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schools the person belongs to directly.
    pub fn school_ids(&self) -> &[SchoolId] {
        &self.school_ids
    }

    /// Birth date, if known.
    pub fn birth_date(&self) -> Option<NaiveDate> {
        self.birth_date
    }

    /// Whether the person was added by hand rather than by the SIS.
    pub fn manually_added(&self) -> bool {
        self.manually_added
    }

    /// Preferred language (default `en`).
    pub fn language(&self) -> &str {
        &self.language
    }

    /// Preferred channel, if any.
    pub fn preferred_channel(&self) -> Option<Channel> {
        self.preferred_channel
    }

    /// Phone numbers and email addresses with their failing marks.
    pub fn contact_points(&self) -> &[ContactPointState] {
        &self.contact_points
    }

    /// A guardian's students.
    pub fn linked_students(&self) -> &[PersonId] {
        &self.linked_students
    }

    /// A student's current teachers.
    pub fn teachers(&self) -> &[PersonId] {
        &self.teachers
    }

    /// Role assignments: the role and the school it applies to (`None` = district-wide).
    pub fn role_assignments(&self) -> &[(RoleId, Option<SchoolId>)] {
        &self.roles
    }

    /// Age in whole years on `date` (a birthday counts on the day); `None` without a
    /// birth date.
    pub fn age_on(&self, date: NaiveDate) -> Option<u32> {
        date.years_since(self.birth_date?)
    }

    /// The people whose facts a decision about this person also needs: a guardian's
    /// linked students (their schools and teachers); empty otherwise.
    pub fn related_people(&self) -> Vec<PersonId> {
        match self.kind {
            Some(PersonKind::Guardian) => self.linked_students.clone(),
            _ => Vec::new(),
        }
    }

    /// The students a family member speaks for: a guardian's linked students, a student
    /// itself; empty for staff.
    pub fn family_students(&self) -> Vec<PersonId> {
        match self.kind {
            Some(PersonKind::Guardian) => self.linked_students.clone(),
            Some(PersonKind::Student) => self.id.into_iter().collect(),
            _ => Vec::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn mark_failing(mut self, address: &str) -> Self {
        for cp in &mut self.contact_points {
            if cp.address == address {
                cp.failing = true;
            }
        }
        self
    }
}

/// Why a person command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PersonError {
    /// The actor is neither a `system` service nor a `roles_admin` for the schools
    /// concerned.
    #[error("not permitted")]
    NotPermitted,
    /// The person (or a person named) is not registered.
    #[error("unknown person {person_id}")]
    UnknownPerson {
        /// The person.
        person_id: PersonId,
    },
    /// A school named is not registered.
    #[error("unknown school {school_id}")]
    UnknownSchool {
        /// The school.
        school_id: SchoolId,
    },
    /// The role is neither built-in nor defined by the district.
    #[error("unknown role {role_id}")]
    UnknownRole {
        /// The role.
        role_id: RoleId,
    },
    /// The role grants a permission its granter does not hold where it would apply:
    /// a role administrator hands out (or takes back) no more than they have, so a
    /// Technical School Admin cannot make themself a School Admin.
    #[error("role {role_id} grants {}, which you do not hold there; only someone who holds it may assign or revoke the role", permission.as_str())]
    BeyondOwnPermissions {
        /// The role.
        role_id: RoleId,
        /// The first of its permissions the granter lacks.
        permission: crate::permissions::Permission,
    },
    /// The person is already registered with other details.
    #[error("person {person_id} is already registered")]
    AlreadyRegistered {
        /// The person.
        person_id: PersonId,
    },
    /// A malformed value.
    #[error(transparent)]
    Validation(#[from] ValidationError),
}

impl PersonError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            PersonError::NotPermitted | PersonError::BeyondOwnPermissions { .. } => "not_permitted",
            PersonError::UnknownPerson { .. } => "unknown_person",
            PersonError::UnknownSchool { .. } => "unknown_school",
            PersonError::UnknownRole { .. } => "unknown_role",
            PersonError::AlreadyRegistered { .. } => "already_exists",
            PersonError::Validation(e) => e.code(),
        }
    }
}

/// Decides a person command against that person's stream.
///
/// # Errors
/// [`PersonError`] when a rule refuses it.
pub fn decide(
    state: &PersonState,
    cmd: &Command,
    facts: &Facts,
) -> Result<Vec<Event>, PersonError> {
    if !may_administer_somewhere(facts) {
        return Err(PersonError::NotPermitted);
    }
    match cmd {
        Command::RegisterPerson(c) => register(state, c, facts),
        Command::LinkGuardian(c) => link_guardian(state, c, facts),
        Command::UnlinkGuardian(c) => unlink_guardian(state, c, facts),
        Command::SetStudentTeachers(c) => set_teachers(state, c, facts),
        Command::AssignRole(c) => assign_role(state, c, facts),
        Command::RevokeRole(c) => revoke_role(state, c, facts),
        Command::SetContactPreferences(c) => set_preferences(state, c, facts),
        Command::ResetContactPoint(c) => reset_contact_point(state, c, facts),
        Command::MarkContactPointFailing(c) => mark_failing(state, c, facts),
        other => Err(ValidationError::WrongStream {
            command: other.name(),
            state: "person",
        }
        .into()),
    }
}

/// A cheap first gate, so people with no admin rights anywhere learn nothing else.
fn may_administer_somewhere(facts: &Facts) -> bool {
    facts.actor.person_id().is_none()
        || facts.actor_person().is_some_and(|(_, p)| {
            facts
                .district
                .permissions_anywhere(p)
                .contains(Permission::RolesAdmin)
        })
}

fn authorise(facts: &Facts, schools: &[SchoolId]) -> Result<(), PersonError> {
    if facts.may_administer(schools) {
        Ok(())
    } else {
        Err(PersonError::NotPermitted)
    }
}

fn registered(state: &PersonState, id: PersonId) -> Result<&PersonState, PersonError> {
    if state.is_registered() {
        Ok(state)
    } else {
        Err(PersonError::UnknownPerson { person_id: id })
    }
}

fn known(facts: &Facts, id: PersonId) -> Result<&PersonState, PersonError> {
    facts
        .person(id)
        .ok_or(PersonError::UnknownPerson { person_id: id })
}

fn expect_kind(
    person: &PersonState,
    id: PersonId,
    expected: PersonKind,
) -> Result<(), PersonError> {
    if person.kind == Some(expected) {
        Ok(())
    } else {
        Err(ValidationError::WrongKind {
            person_id: id,
            expected,
        }
        .into())
    }
}

fn dedup<T: PartialEq + Copy>(items: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(item) {
            out.push(*item);
        }
    }
    out
}

fn normalise_contact_point(cp: &ContactPoint) -> Result<ContactPoint, ValidationError> {
    let address = match cp.channel {
        ContactChannel::Sms => PhoneNumber::parse(&cp.address)?.to_string(),
        ContactChannel::Email => EmailAddress::parse(&cp.address)?.to_string(),
    };
    Ok(ContactPoint {
        channel: cp.channel,
        address,
    })
}

fn register(
    state: &PersonState,
    c: &RegisterPerson,
    facts: &Facts,
) -> Result<Vec<Event>, PersonError> {
    let school_ids = dedup(&c.school_ids);
    authorise(facts, &school_ids)?;
    if let Some(unknown) = school_ids
        .iter()
        .find(|s| facts.district.school(**s).is_none())
    {
        return Err(PersonError::UnknownSchool {
            school_id: *unknown,
        });
    }
    let name = text::name("name", &c.name, MAX_NAME_CHARS)?;
    if c.birth_date.is_some_and(|d| d > facts.now.date_naive()) {
        return Err(ValidationError::BirthDateInFuture.into());
    }
    let manually_added = c.manually_added.unwrap_or(false);
    let stated_language = c.language.as_deref().map(language).transpose()?;
    let contact_points =
        normalised_contact_points(c.contact_points.as_deref().unwrap_or_default())?;
    if state.is_registered() {
        // Registering again with the same details is nothing new (an SIS sync sends
        // every person every night); with other details it is refused, so a sync that
        // believes it changed a phone number learns it did not (`SetContactPreferences`
        // does). What the command leaves out is not compared.
        let same = state.kind == Some(c.kind)
            && state.name == name
            && state.school_ids == school_ids
            && state.birth_date == c.birth_date
            && c.manually_added
                .is_none_or(|added| added == state.manually_added)
            && stated_language
                .as_ref()
                .is_none_or(|tag| tag.eq_ignore_ascii_case(&state.language))
            && c.preferred_channel
                .is_none_or(|channel| Some(channel) == state.preferred_channel)
            && (c.contact_points.is_none()
                || same_contact_points(&contact_points, &state.contact_points));
        return if same {
            Ok(vec![])
        } else {
            Err(PersonError::AlreadyRegistered {
                person_id: c.person_id,
            })
        };
    }
    let language = stated_language.unwrap_or_else(|| DEFAULT_LANGUAGE.to_owned());
    Ok(vec![PersonRegistered {
        person_id: c.person_id,
        kind: c.kind,
        name,
        school_ids,
        birth_date: c.birth_date,
        manually_added,
        language,
        preferred_channel: c.preferred_channel,
        contact_points,
        at: facts.now,
        by: facts.actor.clone(),
    }
    .into()])
}

/// Whether `stated` names exactly the addresses a person has, in any order (email
/// addresses ignoring case, as [`find_contact_point`] finds them).
fn same_contact_points(stated: &[ContactPoint], held: &[ContactPointState]) -> bool {
    stated.len() == held.len()
        && stated.iter().all(|cp| {
            held.iter().any(|h| {
                h.channel == cp.channel
                    && match cp.channel {
                        ContactChannel::Sms => h.address == cp.address,
                        ContactChannel::Email => h.address.eq_ignore_ascii_case(&cp.address),
                    }
            })
        })
}

/// The guardian of a link between `guardian_id` and `student_id`, both who the command
/// says they are, when the actor may manage the student's school (to link or unlink).
fn guardian_and_student<'s>(
    state: &'s PersonState,
    guardian_id: PersonId,
    student_id: PersonId,
    facts: &Facts,
) -> Result<&'s PersonState, PersonError> {
    let guardian = registered(state, guardian_id)?;
    let student = known(facts, student_id)?;
    authorise(facts, student.school_ids())?;
    expect_kind(guardian, guardian_id, PersonKind::Guardian)?;
    expect_kind(student, student_id, PersonKind::Student)?;
    Ok(guardian)
}

/// Ending a link that is not there changes nothing, as linking twice does; the guardian
/// and the student must still be who the command says, so a typo is refused.
fn unlink_guardian(
    state: &PersonState,
    c: &UnlinkGuardian,
    facts: &Facts,
) -> Result<Vec<Event>, PersonError> {
    let guardian = guardian_and_student(state, c.guardian_id, c.student_id, facts)?;
    if !guardian.linked_students.contains(&c.student_id) {
        return Ok(vec![]);
    }
    Ok(vec![GuardianUnlinked {
        guardian_id: c.guardian_id,
        student_id: c.student_id,
        at: facts.now,
        by: facts.actor.clone(),
    }
    .into()])
}

fn link_guardian(
    state: &PersonState,
    c: &LinkGuardian,
    facts: &Facts,
) -> Result<Vec<Event>, PersonError> {
    let guardian = guardian_and_student(state, c.guardian_id, c.student_id, facts)?;
    if guardian.linked_students.contains(&c.student_id) {
        return Ok(vec![]);
    }
    Ok(vec![GuardianLinked {
        guardian_id: c.guardian_id,
        student_id: c.student_id,
        at: facts.now,
        by: facts.actor.clone(),
    }
    .into()])
}

fn set_teachers(
    state: &PersonState,
    c: &SetStudentTeachers,
    facts: &Facts,
) -> Result<Vec<Event>, PersonError> {
    let student = registered(state, c.student_id)?;
    authorise(facts, student.school_ids())?;
    expect_kind(student, c.student_id, PersonKind::Student)?;
    let teacher_ids = dedup(&c.teacher_ids);
    for id in &teacher_ids {
        expect_kind(known(facts, *id)?, *id, PersonKind::Staff)?;
    }
    if student.teachers == teacher_ids {
        return Ok(vec![]);
    }
    Ok(vec![StudentTeachersSet {
        student_id: c.student_id,
        teacher_ids,
        at: facts.now,
        by: facts.actor.clone(),
    }
    .into()])
}

fn check_role_target(
    state: &PersonState,
    person_id: PersonId,
    school_id: Option<SchoolId>,
    facts: &Facts,
) -> Result<(), PersonError> {
    let person = registered(state, person_id)?;
    let schools: Vec<SchoolId> = school_id.into_iter().collect();
    authorise(facts, &schools)?;
    if let Some(school_id) = school_id.filter(|s| facts.district.school(*s).is_none()) {
        return Err(PersonError::UnknownSchool { school_id });
    }
    expect_kind(person, person_id, PersonKind::Staff)
}

/// A person assigns or revokes only a role whose every permission they hold themself at
/// the assignment's school (district-wide for a district-wide one); services (the SIS
/// sync) are not limited.
fn may_hand_out(
    role: &crate::permissions::RoleDefinition,
    school_id: Option<SchoolId>,
    facts: &Facts,
) -> Result<(), PersonError> {
    let Some((_, granter)) = facts.actor_person() else {
        return Ok(());
    };
    let held = match school_id {
        Some(school) => facts.district.permissions_of(granter, school),
        None => facts.district.district_wide_permissions(granter),
    };
    match role.permissions.iter().find(|p| !held.contains(*p)) {
        None => Ok(()),
        Some(permission) => Err(PersonError::BeyondOwnPermissions {
            role_id: role.id.clone(),
            permission,
        }),
    }
}

fn assign_role(
    state: &PersonState,
    c: &AssignRole,
    facts: &Facts,
) -> Result<Vec<Event>, PersonError> {
    check_role_target(state, c.person_id, c.school_id, facts)?;
    let Some(role) = facts.district.role(&c.role_id) else {
        return Err(PersonError::UnknownRole {
            role_id: c.role_id.clone(),
        });
    };
    may_hand_out(&role, c.school_id, facts)?;
    let assignment = (c.role_id.clone(), c.school_id);
    if state.roles.contains(&assignment) {
        return Ok(vec![]);
    }
    Ok(vec![RoleAssigned {
        person_id: c.person_id,
        role_id: c.role_id.clone(),
        school_id: c.school_id,
        at: facts.now,
        by: facts.actor.clone(),
    }
    .into()])
}

fn revoke_role(
    state: &PersonState,
    c: &RevokeRole,
    facts: &Facts,
) -> Result<Vec<Event>, PersonError> {
    check_role_target(state, c.person_id, c.school_id, facts)?;
    let assignment = (c.role_id.clone(), c.school_id);
    let role = facts.district.role(&c.role_id);
    if !state.roles.contains(&assignment) {
        // Revoking what is not held is done already; revoking a role that does not
        // exist is a typo, and must not look like a revocation that worked.
        return match role {
            Some(_) => Ok(vec![]),
            None => Err(PersonError::UnknownRole {
                role_id: c.role_id.clone(),
            }),
        };
    }
    if let Some(role) = role {
        may_hand_out(&role, c.school_id, facts)?;
    }
    Ok(vec![RoleRevoked {
        person_id: c.person_id,
        role_id: c.role_id.clone(),
        school_id: c.school_id,
        at: facts.now,
        by: facts.actor.clone(),
    }
    .into()])
}

fn set_preferences(
    state: &PersonState,
    c: &SetContactPreferences,
    facts: &Facts,
) -> Result<Vec<Event>, PersonError> {
    let person = registered(state, c.person_id)?;
    authorise(facts, person.school_ids())?;
    let preferred_channel = c.preferred_channel.or(person.preferred_channel);
    let language = match &c.language {
        Some(tag) => language(tag)?,
        None => person.language.clone(),
    };
    let contact_points = c
        .contact_points
        .as_deref()
        .map(normalised_contact_points)
        .transpose()?;
    let mut events = Vec::new();
    if preferred_channel != person.preferred_channel || language != person.language {
        events.push(
            ContactPreferencesSet {
                person_id: c.person_id,
                preferred_channel,
                language,
                at: facts.now,
                by: facts.actor.clone(),
            }
            .into(),
        );
    }
    if let Some(contact_points) =
        contact_points.filter(|points| !same_contact_points(points, &person.contact_points))
    {
        events.push(
            ContactPointsChanged {
                person_id: c.person_id,
                contact_points,
                at: facts.now,
                by: facts.actor.clone(),
            }
            .into(),
        );
    }
    Ok(events)
}

/// `points` normalised (phone numbers in E.164, emails checked) without repeats, in the
/// order given.
fn normalised_contact_points(points: &[ContactPoint]) -> Result<Vec<ContactPoint>, PersonError> {
    let mut out: Vec<ContactPoint> = Vec::new();
    for cp in points {
        let cp = normalise_contact_point(cp)?;
        if !out.contains(&cp) {
            out.push(cp);
        }
    }
    Ok(out)
}

/// Finds a contact point by address, comparing phone numbers in E.164 form and email
/// addresses ignoring case.
fn find_contact_point<'p>(person: &'p PersonState, address: &str) -> Option<&'p ContactPointState> {
    let phone = PhoneNumber::parse(address).ok();
    let email = EmailAddress::parse(address).ok();
    person.contact_points.iter().find(|cp| match cp.channel {
        ContactChannel::Sms => phone.as_ref().is_some_and(|p| p.as_str() == cp.address),
        ContactChannel::Email => email
            .as_ref()
            .is_some_and(|e| e.as_str().eq_ignore_ascii_case(&cp.address)),
    })
}

fn reset_contact_point(
    state: &PersonState,
    c: &ResetContactPoint,
    facts: &Facts,
) -> Result<Vec<Event>, PersonError> {
    let person = registered(state, c.person_id)?;
    authorise(facts, person.school_ids())?;
    let Some(cp) = find_contact_point(person, &c.address) else {
        return Err(ValidationError::UnknownAddress {
            address: c.address.clone(),
        }
        .into());
    };
    if !cp.failing {
        return Ok(vec![]);
    }
    Ok(vec![ContactPointReset {
        person_id: c.person_id,
        address: cp.address.clone(),
        at: facts.now,
        by: facts.actor.clone(),
    }
    .into()])
}

/// A permanent delivery failure marks the address failing (Homeroom's own delivery
/// services only); an address already failing, or no longer the person's, changes
/// nothing.
fn mark_failing(
    state: &PersonState,
    c: &MarkContactPointFailing,
    facts: &Facts,
) -> Result<Vec<Event>, PersonError> {
    if facts.actor.person_id().is_some() {
        return Err(PersonError::NotPermitted);
    }
    let person = registered(state, c.person_id)?;
    let Some(cp) = find_contact_point(person, &c.address) else {
        return Ok(vec![]);
    };
    if cp.failing {
        return Ok(vec![]);
    }
    Ok(vec![ContactPointFailing {
        person_id: c.person_id,
        address: cp.address.clone(),
        delivery_id: c.delivery_id,
        at: facts.now,
    }
    .into()])
}

/// Applies a person event; other events leave the state as it is.
pub fn evolve(mut state: PersonState, event: &Event) -> PersonState {
    match event {
        Event::PersonRegistered(e) => {
            state.id = Some(e.person_id);
            state.kind = Some(e.kind);
            state.name = e.name.clone();
            state.school_ids = e.school_ids.clone();
            state.birth_date = e.birth_date;
            state.manually_added = e.manually_added;
            state.language = e.language.clone();
            state.preferred_channel = e.preferred_channel;
            state.contact_points = e
                .contact_points
                .iter()
                .map(|cp| ContactPointState {
                    channel: cp.channel,
                    address: cp.address.clone(),
                    failing: false,
                })
                .collect();
        }
        Event::GuardianLinked(e) if !state.linked_students.contains(&e.student_id) => {
            state.linked_students.push(e.student_id);
        }
        Event::GuardianUnlinked(e) => state.linked_students.retain(|s| *s != e.student_id),
        Event::StudentTeachersSet(e) => state.teachers = e.teacher_ids.clone(),
        Event::RoleAssigned(e) => {
            let assignment = (e.role_id.clone(), e.school_id);
            if !state.roles.contains(&assignment) {
                state.roles.push(assignment);
            }
        }
        Event::RoleRevoked(e) => state
            .roles
            .retain(|(role, school)| !(role == &e.role_id && *school == e.school_id)),
        Event::ContactPreferencesSet(e) => {
            state.preferred_channel = e.preferred_channel;
            state.language = e.language.clone();
        }
        Event::ContactPointsChanged(e) => {
            let failing = |address: &str| {
                state
                    .contact_points
                    .iter()
                    .any(|cp| cp.address == address && cp.failing)
            };
            state.contact_points = e
                .contact_points
                .iter()
                .map(|cp| ContactPointState {
                    channel: cp.channel,
                    address: cp.address.clone(),
                    failing: failing(&cp.address),
                })
                .collect();
        }
        Event::ContactPointReset(e) => {
            for cp in &mut state.contact_points {
                if cp.address == e.address {
                    cp.failing = false;
                }
            }
        }
        Event::ContactPointFailing(e) => {
            for cp in &mut state.contact_points {
                if cp.address == e.address {
                    cp.failing = true;
                }
            }
        }
        _ => {}
    }
    state
}

#[cfg(test)]
mod tests;
