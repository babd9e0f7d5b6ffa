//! An SMS number's binding to the district that sends from it (`smsnumber-{number}`, the
//! one stream not under a district: an inbound SMS names only the number it was sent
//! to, and this is how it finds its district). A number belongs to one district.

use crate::commands::{BindSmsNumber, Command};
use crate::events::{Event, SmsNumberBound};
use crate::facts::{Actor, Facts};
use crate::ids::{DistrictId, PhoneNumber};
use crate::validation::ValidationError;
use crate::values::NumberOwner;

/// A number stream's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SmsNumberState {
    binding: Option<(DistrictId, NumberOwner)>,
}

impl SmsNumberState {
    /// The district sending from the number, and the identity it belongs to.
    pub fn binding(&self) -> Option<(&DistrictId, NumberOwner)> {
        self.binding.as_ref().map(|(d, o)| (d, *o))
    }
}

/// Why a binding was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SmsNumberError {
    /// Only Homeroom's own services bind numbers.
    #[error("not permitted")]
    NotPermitted,
    /// Another district already sends from this number.
    #[error("{number} already belongs to another district")]
    NumberTaken {
        /// The number.
        number: PhoneNumber,
    },
    /// A malformed value.
    #[error(transparent)]
    Validation(#[from] ValidationError),
}

impl SmsNumberError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            SmsNumberError::NotPermitted => "not_permitted",
            SmsNumberError::NumberTaken { .. } => "number_in_use",
            SmsNumberError::Validation(e) => e.code(),
        }
    }
}

/// Decides a binding.
///
/// # Errors
/// [`SmsNumberError`] when a rule refuses it.
pub fn decide(
    state: &SmsNumberState,
    cmd: &Command,
    facts: &Facts,
) -> Result<Vec<Event>, SmsNumberError> {
    if !matches!(facts.actor, Actor::System(_)) {
        return Err(SmsNumberError::NotPermitted);
    }
    let Command::BindSmsNumber(c) = cmd else {
        return Err(ValidationError::WrongStream {
            command: cmd.name(),
            state: "sms number",
        }
        .into());
    };
    bind(state, c, facts)
}

/// The same binding again changes nothing; the district may move the number from one
/// of its identities to another (a school number reassigned, a pool number given to a
/// staff member), never back to its pool, and never take another district's.
fn bind(
    state: &SmsNumberState,
    c: &BindSmsNumber,
    facts: &Facts,
) -> Result<Vec<Event>, SmsNumberError> {
    match &state.binding {
        Some((district, owner)) if *district == c.district && *owner == c.owner => Ok(vec![]),
        // A pool number already given to someone (or the school) stays theirs: binding it
        // to the pool again (a redelivered reaction) changes nothing.
        Some((district, _)) if *district == c.district && c.owner == NumberOwner::Pool => {
            Ok(vec![])
        }
        Some((district, _)) if *district != c.district => Err(SmsNumberError::NumberTaken {
            number: c.number.clone(),
        }),
        _ => Ok(vec![SmsNumberBound {
            number: c.number.clone(),
            district: c.district.clone(),
            owner: c.owner,
            at: facts.now,
        }
        .into()]),
    }
}

/// Applies a number event; other events leave the state as it is.
pub fn evolve(mut state: SmsNumberState, event: &Event) -> SmsNumberState {
    if let Event::SmsNumberBound(e) = event {
        state.binding = Some((e.district.clone(), e.owner));
    }
    state
}

#[cfg(test)]
mod tests;
