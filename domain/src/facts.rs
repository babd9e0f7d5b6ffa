//! Facts: what a decision needs from outside its own stream, loaded by the command
//! service from the streams that own them (never from read models), plus the time and
//! the actor.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::district::DistrictState;
use crate::ids::{PersonId, PhoneNumber, SchoolId};
use crate::permissions::Permission;
use crate::person::PersonState;

/// Who issued a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// A person, from the token's `sub`.
    Person(PersonId),
    /// A service with scope `system` (SIS sync, delivery worker), by name.
    System(String),
}

impl Actor {
    /// The acting person, if a person acts.
    pub fn person_id(&self) -> Option<PersonId> {
        match self {
            Actor::Person(id) => Some(*id),
            Actor::System(_) => None,
        }
    }
}

/// Everything a decision may consult besides its own stream's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The time of the command; the domain never reads a clock.
    pub now: DateTime<Utc>,
    /// The command's id; derived ids (e.g. a message id) come from it so retries converge.
    pub command_id: Uuid,
    /// Who issued the command.
    pub actor: Actor,
    /// The district's stream: schools, roles, settings.
    pub district: DistrictState,
    /// Every person the decision needs (see `people_needed` and
    /// `PersonState::related_people`).
    pub people: BTreeMap<PersonId, PersonState>,
    /// Of the SMS numbers the command names (`numbers_needed`), those another district
    /// already sends from, as their `smsnumber-` streams say: a district may not take
    /// them, or its texts would go out from another district's number and the replies
    /// would reach that district.
    pub numbers_of_other_districts: BTreeSet<PhoneNumber>,
}

impl Facts {
    /// Facts with nobody loaded yet.
    pub fn new(
        now: DateTime<Utc>,
        command_id: Uuid,
        actor: Actor,
        district: DistrictState,
    ) -> Self {
        Self {
            now,
            command_id,
            actor,
            district,
            people: BTreeMap::new(),
            numbers_of_other_districts: BTreeSet::new(),
        }
    }

    /// Whether another district already sends from `number`.
    pub fn number_of_another_district(&self, number: &PhoneNumber) -> bool {
        self.numbers_of_other_districts.contains(number)
    }

    /// Adds a person (keyed by their id); unregistered states are ignored.
    pub fn with_person(mut self, person: PersonState) -> Self {
        if let Some(id) = person.id() {
            self.people.insert(id, person);
        }
        self
    }

    /// A registered person; `None` means unknown (missing or never registered).
    pub fn person(&self, id: PersonId) -> Option<&PersonState> {
        self.people.get(&id).filter(|p| p.is_registered())
    }

    /// The acting person's state, if a registered person acts.
    pub fn actor_person(&self) -> Option<(PersonId, &PersonState)> {
        let id = self.actor.person_id()?;
        self.person(id).map(|p| (id, p))
    }

    /// Whether the actor may run a directory command concerning `schools`: a `system`
    /// service, or a person holding `roles_admin` district-wide, or at every one of
    /// `schools` (which must then not be empty).
    pub fn may_administer(&self, schools: &[SchoolId]) -> bool {
        if matches!(self.actor, Actor::System(_)) {
            return true;
        }
        let Some((_, person)) = self.actor_person() else {
            return false;
        };
        if self
            .district
            .district_wide_permissions(person)
            .contains(Permission::RolesAdmin)
        {
            return true;
        }
        !schools.is_empty()
            && schools.iter().all(|school| {
                self.district
                    .permissions_of(person, *school)
                    .contains(Permission::RolesAdmin)
            })
    }
}
