//! Starting conversations: the personal 1:1 (`SendPersonalMessage`) and group or
//! school conversations (`StartConversation`), with the rules on who may write to whom.

use std::collections::BTreeSet;

use crate::commands::{SendPersonalMessage, StartConversation};
use crate::events::{ConversationResumed, ConversationStarted};
use crate::facts::Facts;
use crate::ids::{message_id_for_command, personal_conversation_id, PersonId, SchoolId};
use crate::permissions::Permission;
use crate::person::PersonState;
use crate::validation::ValidationError;
use crate::values::{ConversationKind, PersonKind, SendAs};
use crate::visibility;

use super::compose::{check_text, check_title, compose, Draft};
use super::{
    acting_person, holds, known, new_message_id, posted_before, recipients, school_ties, teaches,
    ConversationError, ConversationState, Decision, Fingerprint, MIN_PERSONAL_MESSAGE_AGE,
};

/// `SendPersonalMessage`: a staff member holding `personal_messages` at a school the
/// recipient is tied to writes 1:1 to a student of 13 or over or to a guardian; the
/// first message starts the personal conversation, later ones continue it (taking it
/// up again when it was stopped).
pub(super) fn send_personal(
    state: &ConversationState,
    c: &SendPersonalMessage,
    facts: &Facts,
) -> Decision {
    let (sender_id, sender) = acting_person(facts)?;
    if let Some(id) = c.message_id {
        let fingerprint =
            Fingerprint::of(sender_id, SendAs::Personal, &c.body, c.subject.as_deref());
        if posted_before(state, id, fingerprint)? {
            return Ok(vec![]);
        }
    }
    let anywhere = facts.district.permissions_anywhere(sender);
    if !sender.is_staff() || !anywhere.contains(Permission::PersonalMessages) {
        return Err(ConversationError::NotPermitted);
    }
    let recipient = known(facts, c.recipient_id)?;
    let unreachable = ConversationError::RecipientNotReachable {
        recipient_id: c.recipient_id,
    };
    // Staff-to-staff direct messages are allowed only inside group conversations.
    if recipient.is_staff() {
        return Err(unreachable);
    }
    let shared: Vec<SchoolId> = school_ties(recipient, facts)
        .into_iter()
        .filter(|s| holds(facts, sender, *s, Permission::PersonalMessages))
        .collect();
    let Some(first_shared) = shared.first().copied() else {
        return Err(unreachable);
    };
    old_enough_for_one_to_one(c.recipient_id, recipient, facts)?;
    let text = check_text(&c.body, c.subject.as_deref(), sender, facts)?;
    let message_id = new_message_id(
        state,
        c.message_id
            .unwrap_or_else(|| message_id_for_command(facts.command_id)),
    )?;
    let conversation_id = personal_conversation_id(sender_id, c.recipient_id);
    let school_id = state.school_id().unwrap_or(first_shared);
    let mut events = Vec::new();
    // Writing anew takes a stopped personal conversation up again: it is the one
    // conversation of the two, and a stop must not bar its staff member from ever
    // writing to that family again. The stop stays in the log and the thread.
    if state.is_stopped() {
        events.push(
            ConversationResumed {
                conversation_id,
                by: sender_id,
                at: facts.now,
            }
            .into(),
        );
    }
    if state.header.is_none() {
        events.push(
            ConversationStarted {
                conversation_id,
                kind: ConversationKind::Personal,
                school_id,
                title: None,
                started_by: sender_id,
                participant_ids: vec![sender_id, c.recipient_id],
                at: facts.now,
            }
            .into(),
        );
    }
    let posted = compose(
        Draft {
            conversation_id,
            message_id,
            school_id,
            author_id: sender_id,
            author: sender,
            sent_as: SendAs::Personal,
            text,
            channel: c.channel,
            recipients: vec![c.recipient_id],
            muted: &state.muted,
        },
        facts,
    )?;
    events.push(posted.into());
    Ok(events)
}

/// Whether `recipient` may be written to 1:1 by a staff member from their own identity:
/// a student only at [`MIN_PERSONAL_MESSAGE_AGE`] or over, on the day of sending (no
/// known birth date counts as under); anyone else always.
fn old_enough_for_one_to_one(
    recipient_id: PersonId,
    recipient: &PersonState,
    facts: &Facts,
) -> Result<(), ConversationError> {
    if recipient.kind() == Some(PersonKind::Student) {
        let age = recipient.age_on(facts.now.date_naive());
        if age.is_none_or(|a| a < MIN_PERSONAL_MESSAGE_AGE) {
            return Err(ConversationError::RecipientTooYoung {
                recipient_id,
                age,
                min_age: MIN_PERSONAL_MESSAGE_AGE,
            });
        }
    }
    Ok(())
}

/// `StartConversation`: a group or school conversation with a first message, within the
/// district's participant limit and the rules on who may start with whom.
pub(super) fn start(state: &ConversationState, c: &StartConversation, facts: &Facts) -> Decision {
    let (starter_id, starter) = acting_person(facts)?;
    if state.is_started() {
        if is_started_by(state, c, starter_id) {
            return Ok(vec![]);
        }
        return Err(ConversationError::AlreadyStarted {
            conversation_id: c.conversation_id,
        });
    }
    if facts.district.school(c.school_id).is_none() {
        return Err(ConversationError::UnknownSchool {
            school_id: c.school_id,
        });
    }
    let mut others: Vec<PersonId> = Vec::with_capacity(c.participant_ids.len());
    for id in &c.participant_ids {
        if *id != starter_id && !others.contains(id) {
            others.push(*id);
        }
    }
    if others.is_empty() {
        return Err(ValidationError::NoParticipants.into());
    }
    let settings = facts.district.settings();
    let got = others.len() + 1;
    if got > usize::from(settings.max_participants) {
        return Err(ConversationError::TooManyParticipants {
            max: settings.max_participants,
            got,
        });
    }
    let mut people = Vec::with_capacity(others.len());
    for id in &others {
        people.push((*id, known(facts, *id)?));
    }
    if !settings.students_in_conversations {
        let everyone = std::iter::once((starter_id, starter)).chain(people.iter().copied());
        if let Some((student_id, _)) = everyone
            .into_iter()
            .find(|(_, p)| p.kind() == Some(PersonKind::Student))
        {
            return Err(ConversationError::StudentsNotEnabled { student_id });
        }
    }
    let from = c.from.unwrap_or_default();
    // A staff member and one student, from the staff member's own identity, is a 1:1
    // whatever it is called: a "group" of two must not reach a child under 13 whom
    // `SendPersonalMessage` may not, whoever of the two starts it (the staff member's
    // answers would go to the child from their own identity). From the school's
    // identity it is the shared inbox's, read by every holder; with a third person it
    // is not private.
    if let ([(only_id, only)], SendAs::Personal) = (people.as_slice(), from) {
        if starter.is_staff() {
            old_enough_for_one_to_one(*only_id, only, facts)?;
        } else if only.is_staff() {
            old_enough_for_one_to_one(starter_id, starter, facts)?;
        }
    }
    let kind = if starter.is_staff() {
        staff_may_start(starter_id, starter, c.school_id, from, &people, facts)?
    } else {
        family_may_start(starter_id, starter, c.school_id, from, &people, facts)?
    };
    let title = c
        .title
        .as_deref()
        .map(|t| check_title(t, facts))
        .transpose()?;
    let text = check_text(&c.body, None, starter, facts)?;
    let message_id = message_id_for_command(facts.command_id);
    let participant_ids: Vec<PersonId> = std::iter::once(starter_id).chain(others).collect();
    let recipients = recipients(&participant_ids, kind, c.school_id, starter_id, facts)?;
    let posted = compose(
        Draft {
            conversation_id: c.conversation_id,
            message_id,
            school_id: c.school_id,
            author_id: starter_id,
            author: starter,
            sent_as: from,
            text,
            channel: c.channel,
            recipients,
            muted: &BTreeSet::new(),
        },
        facts,
    )?;
    Ok(vec![
        ConversationStarted {
            conversation_id: c.conversation_id,
            kind,
            school_id: c.school_id,
            title,
            started_by: starter_id,
            participant_ids,
            at: facts.now,
        }
        .into(),
        posted.into(),
    ])
}

/// Whether the started conversation is the one `c` starts, by the same person: the same
/// school, participants, title and first message. Then `c` is the caller retrying under
/// the conversation id it chose, and is answered as done.
fn is_started_by(state: &ConversationState, c: &StartConversation, starter_id: PersonId) -> bool {
    let Some(first) = state.fingerprints.first() else {
        return false;
    };
    let asked: BTreeSet<PersonId> = std::iter::once(starter_id)
        .chain(c.participant_ids.iter().copied())
        .collect();
    let started: BTreeSet<PersonId> = state.participants.iter().copied().collect();
    state.started_by() == Some(starter_id)
        && state.school_id() == Some(c.school_id)
        && asked == started
        && c.title.as_deref().map(str::trim) == state.title()
        && *first == Fingerprint::of(starter_id, c.from.unwrap_or_default(), &c.body, None)
}

/// Staff holding a role at the school start a school conversation with `school_inbox`,
/// a group one with `personal_messages` at the school or under the teacher rule; family participants
/// must be tied to the school, staff participants hold a role there (or district-wide),
/// or they could not take part ([`visibility::takes_part_at`]).
fn staff_may_start(
    starter_id: PersonId,
    starter: &PersonState,
    school: SchoolId,
    from: SendAs,
    people: &[(PersonId, &PersonState)],
    facts: &Facts,
) -> Result<ConversationKind, ConversationError> {
    // Staff speak for a school through their roles there: with none, no exception
    // (the teacher rule included) lets them start a conversation of that school.
    if !visibility::takes_part_at(starter, school) {
        return Err(ConversationError::NotPermitted);
    }
    let kind = match from {
        SendAs::School if holds(facts, starter, school, Permission::SchoolInbox) => {
            ConversationKind::School
        }
        SendAs::School => return Err(ConversationError::NotPermitted),
        SendAs::Personal => {
            if !holds(facts, starter, school, Permission::PersonalMessages) {
                teacher_rule(starter_id, school, people, facts)?;
            }
            ConversationKind::Group
        }
    };
    for (id, person) in people {
        let reachable = if person.is_family() {
            school_ties(person, facts).contains(&school)
        } else {
            visibility::takes_part_at(person, school)
        };
        if !reachable {
            return Err(ConversationError::RecipientNotReachable { recipient_id: *id });
        }
    }
    Ok(kind)
}

/// A staff member without `personal_messages` may start a conversation only with
/// families of students they currently teach (and other staff alongside them). A family
/// they do not teach is named (`not_a_current_teacher`), whether or not the others are
/// taught, so the refusal says what would allow it; with no family at all there is no
/// exception to claim (`not_permitted`).
fn teacher_rule(
    teacher_id: PersonId,
    school: SchoolId,
    people: &[(PersonId, &PersonState)],
    facts: &Facts,
) -> Result<(), ConversationError> {
    let family: Vec<_> = people.iter().filter(|(_, p)| p.is_family()).collect();
    let uncovered: Vec<PersonId> = family
        .iter()
        .filter(|(_, p)| !teaches(facts, teacher_id, p, school))
        .map(|(id, _)| *id)
        .collect();
    match uncovered.first() {
        None if !family.is_empty() => Ok(()),
        None => Err(ConversationError::NotPermitted),
        Some(of) => Err(ConversationError::NotACurrentTeacher {
            teacher_id,
            of: *of,
        }),
    }
}

/// Guardians and students may start a conversation (from their own identity, at a
/// school they are tied to) only with their students' current teachers.
fn family_may_start(
    starter_id: PersonId,
    starter: &PersonState,
    school: SchoolId,
    from: SendAs,
    people: &[(PersonId, &PersonState)],
    facts: &Facts,
) -> Result<ConversationKind, ConversationError> {
    if from == SendAs::School || !school_ties(starter, facts).contains(&school) {
        return Err(ConversationError::NotPermitted);
    }
    for (id, person) in people {
        if !person.is_staff() || !teaches(facts, *id, starter, school) {
            return Err(ConversationError::NotACurrentTeacher {
                teacher_id: *id,
                of: starter_id,
            });
        }
        if !visibility::takes_part_at(person, school) {
            return Err(ConversationError::RecipientNotReachable { recipient_id: *id });
        }
    }
    Ok(ConversationKind::Group)
}
