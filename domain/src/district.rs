//! The district aggregate: schools, custom roles, settings and the pool of sender
//! numbers. Every other decision reads it as a fact.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::commands::{
    AddSenderNumbers, AssignSenderNumber, ChangeDistrictSettings, Command, DefineRole,
    RegisterSchool,
};
use crate::events::{
    DistrictSettingsChanged, Event, RoleDefined, SchoolRegistered, SenderNumberAssigned,
    SenderNumbersAdded,
};
use crate::facts::Facts;
use crate::ids::{PersonId, PhoneNumber, RoleId, SchoolId};
use crate::permissions::{builtin_role, PermissionSet, RoleDefinition};
use crate::person::PersonState;
use crate::text::{self, BlockedPattern};
use crate::validation::ValidationError;
use crate::values::ContactChannel;

/// The fewest participants a district may allow in a conversation.
pub const MIN_MAX_PARTICIPANTS: u16 = 2;
/// The most participants a district may allow in a conversation.
pub const MAX_MAX_PARTICIPANTS: u16 = 100;
/// The most content-guard patterns a district may keep: every message is read against
/// each of them before it is recorded, so the list must stay a list of kinds of
/// sensitive data (numbers of a shape), not a dictionary.
pub const MAX_BLOCKED_PATTERNS: usize = 100;
/// The longest school or role name accepted.
pub const MAX_NAME_CHARS: usize = 200;

/// A school of the district.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct School {
    /// Its id.
    pub id: SchoolId,
    /// Its name, the sender name of school messages.
    pub name: String,
    /// Its shared SMS number.
    pub sms_number: Option<PhoneNumber>,
}

/// District-wide settings that shape the conversation and delivery rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistrictSettings {
    /// Whether students may be conversation participants (default off).
    pub students_in_conversations: bool,
    /// Most participants in a conversation, starter included (default 15).
    pub max_participants: u16,
    /// Channel for recipients with both SMS and email and no preference (default SMS).
    pub default_channel: ContactChannel,
    /// Content guard: a body or subject holding one of these is refused.
    pub blocked_patterns: Vec<BlockedPattern>,
}

impl Default for DistrictSettings {
    fn default() -> Self {
        Self {
            students_in_conversations: false,
            max_participants: 15,
            default_channel: ContactChannel::Sms,
            blocked_patterns: Vec::new(),
        }
    }
}

/// The district stream's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DistrictState {
    schools: BTreeMap<SchoolId, School>,
    roles: BTreeMap<RoleId, RoleDefinition>,
    settings: DistrictSettings,
    sender_numbers: Vec<PhoneNumber>,
    assigned: BTreeMap<PersonId, PhoneNumber>,
}

impl DistrictState {
    /// A registered school.
    pub fn school(&self, id: SchoolId) -> Option<&School> {
        self.schools.get(&id)
    }

    /// Every registered school, by id.
    pub fn schools(&self) -> impl Iterator<Item = &School> {
        self.schools.values()
    }

    /// The current settings.
    pub fn settings(&self) -> &DistrictSettings {
        &self.settings
    }

    /// The pool of personal SMS sender numbers.
    pub fn sender_numbers(&self) -> &[PhoneNumber] {
        &self.sender_numbers
    }

    /// The pool's numbers not yet given to anyone, in the order they are handed out.
    pub fn free_sender_numbers(&self) -> impl Iterator<Item = &PhoneNumber> {
        let taken: std::collections::BTreeSet<&PhoneNumber> = self.assigned.values().collect();
        self.sender_numbers
            .iter()
            .filter(move |n| !taken.contains(n))
    }

    /// The personal SMS number given to `person`, if one was.
    pub fn sender_number_of(&self, person: PersonId) -> Option<&PhoneNumber> {
        self.assigned.get(&person)
    }

    /// A role by id: built-in, or defined by the district.
    pub fn role(&self, id: &RoleId) -> Option<RoleDefinition> {
        builtin_role(id).or_else(|| self.roles.get(id).cloned())
    }

    fn role_permissions(&self, id: &RoleId) -> PermissionSet {
        self.role(id).map(|r| r.permissions).unwrap_or_default()
    }

    /// What `person` may do at `school`: the union of their roles assigned for that
    /// school or district-wide.
    pub fn permissions_of(&self, person: &PersonState, school: SchoolId) -> PermissionSet {
        person
            .role_assignments()
            .iter()
            .filter(|(_, at)| at.is_none_or(|s| s == school))
            .fold(PermissionSet::empty(), |set, (role, _)| {
                set.union(self.role_permissions(role))
            })
    }

    /// What `person` may do everywhere: the union of their district-wide roles.
    pub fn district_wide_permissions(&self, person: &PersonState) -> PermissionSet {
        person
            .role_assignments()
            .iter()
            .filter(|(_, at)| at.is_none())
            .fold(PermissionSet::empty(), |set, (role, _)| {
                set.union(self.role_permissions(role))
            })
    }

    /// What `person` holds at one school or another: the union of all their roles.
    pub fn permissions_anywhere(&self, person: &PersonState) -> PermissionSet {
        person
            .role_assignments()
            .iter()
            .fold(PermissionSet::empty(), |set, (role, _)| {
                set.union(self.role_permissions(role))
            })
    }

    fn number_in_use(&self, number: &PhoneNumber) -> bool {
        self.sender_numbers.contains(number)
            || self
                .schools
                .values()
                .any(|s| s.sms_number.as_ref() == Some(number))
    }
}

/// Why a district command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DistrictError {
    /// The actor is neither a `system` service nor a district-wide `roles_admin`.
    #[error("not permitted")]
    NotPermitted,
    /// The school id is taken by a school with other details.
    #[error("school {school_id} is already registered")]
    SchoolAlreadyRegistered {
        /// The school.
        school_id: SchoolId,
    },
    /// Every number of the district's pool is already some staff member's.
    #[error("no sender number is left in the district's pool; add some with AddSenderNumbers")]
    NoSenderNumberAvailable,
    /// Another district already sends from this number (it is bound to that district,
    /// and inbound SMS to it go there): one number belongs to one district.
    #[error("phone number {number} already belongs to another district")]
    NumberOfAnotherDistrict {
        /// The number.
        number: PhoneNumber,
    },
    /// Only Homeroom's own services assign sender numbers.
    #[error("sender numbers are assigned by Homeroom's delivery services")]
    NotAService,
    /// The person to give a number to is not a registered staff member.
    #[error("{person_id} is not a registered staff member")]
    NotStaff {
        /// The person.
        person_id: PersonId,
    },
    /// Custom roles may not reuse a built-in role id.
    #[error("role id {role_id} belongs to a built-in role")]
    BuiltinRoleId {
        /// The id.
        role_id: RoleId,
    },
    /// A malformed value.
    #[error(transparent)]
    Validation(#[from] ValidationError),
}

impl DistrictError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            DistrictError::NotPermitted => "not_permitted",
            DistrictError::SchoolAlreadyRegistered { .. } => "already_exists",
            DistrictError::BuiltinRoleId { .. } => "validation",
            DistrictError::NoSenderNumberAvailable => "no_sender_number",
            DistrictError::NumberOfAnotherDistrict { .. } => "number_in_use",
            DistrictError::NotAService => "not_permitted",
            DistrictError::NotStaff { .. } => "unknown_person",
            DistrictError::Validation(e) => e.code(),
        }
    }
}

/// Decides a district command.
///
/// # Errors
/// [`DistrictError`] when a rule refuses it.
pub fn decide(
    state: &DistrictState,
    cmd: &Command,
    facts: &Facts,
) -> Result<Vec<Event>, DistrictError> {
    if !facts.may_administer(&[]) {
        return Err(DistrictError::NotPermitted);
    }
    match cmd {
        Command::RegisterSchool(c) => register_school(state, c, facts),
        Command::DefineRole(c) => define_role(state, c, facts),
        Command::ChangeDistrictSettings(c) => change_settings(state, c, facts),
        Command::AddSenderNumbers(c) => add_sender_numbers(state, c, facts),
        Command::AssignSenderNumber(c) => assign_sender_number(state, c, facts),
        other => Err(ValidationError::WrongStream {
            command: other.name(),
            state: "district",
        }
        .into()),
    }
}

fn register_school(
    state: &DistrictState,
    c: &RegisterSchool,
    facts: &Facts,
) -> Result<Vec<Event>, DistrictError> {
    let name = text::name("name", &c.name, MAX_NAME_CHARS)?;
    let sms_number = c
        .sms_number
        .as_deref()
        .map(PhoneNumber::parse)
        .transpose()
        .map_err(ValidationError::from)?;
    let school = School {
        id: c.school_id,
        name,
        sms_number,
    };
    if let Some(existing) = state.school(c.school_id) {
        return if *existing == school {
            Ok(vec![])
        } else {
            Err(DistrictError::SchoolAlreadyRegistered {
                school_id: c.school_id,
            })
        };
    }
    if let Some(number) = school
        .sms_number
        .as_ref()
        .filter(|n| state.number_in_use(n))
    {
        return Err(ValidationError::NumberInUse {
            number: number.to_string(),
        }
        .into());
    }
    if let Some(number) = school
        .sms_number
        .as_ref()
        .filter(|n| facts.number_of_another_district(n))
    {
        return Err(DistrictError::NumberOfAnotherDistrict {
            number: number.clone(),
        });
    }
    Ok(vec![SchoolRegistered {
        school_id: school.id,
        name: school.name,
        sms_number: school.sms_number,
        at: facts.now,
        by: facts.actor.clone(),
    }
    .into()])
}

fn define_role(
    state: &DistrictState,
    c: &DefineRole,
    facts: &Facts,
) -> Result<Vec<Event>, DistrictError> {
    if builtin_role(&c.role_id).is_some() {
        return Err(DistrictError::BuiltinRoleId {
            role_id: c.role_id.clone(),
        });
    }
    let role = RoleDefinition {
        id: c.role_id.clone(),
        name: text::name("name", &c.name, MAX_NAME_CHARS)?,
        permissions: c.permissions,
    };
    if state.roles.get(&c.role_id) == Some(&role) {
        return Ok(vec![]);
    }
    Ok(vec![RoleDefined {
        role_id: role.id,
        name: role.name,
        permissions: role.permissions,
        at: facts.now,
        by: facts.actor.clone(),
    }
    .into()])
}

fn change_settings(
    state: &DistrictState,
    c: &ChangeDistrictSettings,
    facts: &Facts,
) -> Result<Vec<Event>, DistrictError> {
    let mut settings = state.settings.clone();
    if let Some(on) = c.students_in_conversations {
        settings.students_in_conversations = on;
    }
    if let Some(max) = c.max_participants {
        if !(MIN_MAX_PARTICIPANTS..=MAX_MAX_PARTICIPANTS).contains(&max) {
            return Err(ValidationError::OutOfRange {
                field: "max_participants",
                min: MIN_MAX_PARTICIPANTS.into(),
                max: MAX_MAX_PARTICIPANTS.into(),
                got: max.into(),
            }
            .into());
        }
        settings.max_participants = max;
    }
    if let Some(channel) = c.default_channel {
        settings.default_channel = channel;
    }
    if let Some(patterns) = &c.blocked_patterns {
        let mut parsed: Vec<BlockedPattern> = Vec::with_capacity(patterns.len());
        for pattern in patterns {
            let pattern = BlockedPattern::parse(pattern)?;
            if !parsed.contains(&pattern) {
                parsed.push(pattern);
            }
        }
        if parsed.len() > MAX_BLOCKED_PATTERNS {
            return Err(ValidationError::TooMany {
                field: "blocked_patterns",
                max: MAX_BLOCKED_PATTERNS,
                got: parsed.len(),
            }
            .into());
        }
        settings.blocked_patterns = parsed;
    }
    if settings == state.settings {
        return Ok(vec![]);
    }
    Ok(vec![DistrictSettingsChanged {
        settings,
        at: facts.now,
        by: facts.actor.clone(),
    }
    .into()])
}

fn add_sender_numbers(
    state: &DistrictState,
    c: &AddSenderNumbers,
    facts: &Facts,
) -> Result<Vec<Event>, DistrictError> {
    if c.numbers.is_empty() {
        return Err(ValidationError::Empty { field: "numbers" }.into());
    }
    let mut new: Vec<PhoneNumber> = Vec::new();
    for raw in &c.numbers {
        let number = PhoneNumber::parse(raw).map_err(ValidationError::from)?;
        if state
            .schools
            .values()
            .any(|s| s.sms_number.as_ref() == Some(&number))
        {
            return Err(ValidationError::NumberInUse {
                number: number.to_string(),
            }
            .into());
        }
        if facts.number_of_another_district(&number) {
            return Err(DistrictError::NumberOfAnotherDistrict { number });
        }
        if !state.sender_numbers.contains(&number) && !new.contains(&number) {
            new.push(number);
        }
    }
    if new.is_empty() {
        return Ok(vec![]);
    }
    Ok(vec![SenderNumbersAdded {
        numbers: new,
        at: facts.now,
        by: facts.actor.clone(),
    }
    .into()])
}

/// A staff member's own number: the one already given, else the first free number of
/// the pool (numbers are never given to two people).
fn assign_sender_number(
    state: &DistrictState,
    c: &AssignSenderNumber,
    facts: &Facts,
) -> Result<Vec<Event>, DistrictError> {
    if facts.actor.person_id().is_some() {
        return Err(DistrictError::NotAService);
    }
    if !facts.person(c.person_id).is_some_and(PersonState::is_staff) {
        return Err(DistrictError::NotStaff {
            person_id: c.person_id,
        });
    }
    if state.assigned.contains_key(&c.person_id) {
        return Ok(vec![]);
    }
    // A pool number another district took meanwhile (it sent from it first) is passed
    // over: texts from it would be answered to that district.
    let number = state
        .free_sender_numbers()
        .find(|n| !facts.number_of_another_district(n))
        .ok_or(DistrictError::NoSenderNumberAvailable)?;
    Ok(vec![SenderNumberAssigned {
        person_id: c.person_id,
        number: number.clone(),
        at: facts.now,
    }
    .into()])
}

/// Applies a district event; other events leave the state as it is.
pub fn evolve(mut state: DistrictState, event: &Event) -> DistrictState {
    match event {
        Event::SchoolRegistered(e) => {
            state.schools.insert(
                e.school_id,
                School {
                    id: e.school_id,
                    name: e.name.clone(),
                    sms_number: e.sms_number.clone(),
                },
            );
        }
        Event::RoleDefined(e) => {
            state.roles.insert(
                e.role_id.clone(),
                RoleDefinition {
                    id: e.role_id.clone(),
                    name: e.name.clone(),
                    permissions: e.permissions,
                },
            );
        }
        Event::DistrictSettingsChanged(e) => state.settings = e.settings.clone(),
        Event::SenderNumberAssigned(e) => {
            state.assigned.insert(e.person_id, e.number.clone());
        }
        Event::SenderNumbersAdded(e) => {
            for number in &e.numbers {
                if !state.sender_numbers.contains(number) {
                    state.sender_numbers.push(number.clone());
                }
            }
        }
        _ => {}
    }
    state
}

#[cfg(test)]
mod tests;
