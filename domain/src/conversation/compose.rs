//! Turning a command's text into a `MessagePosted`: the text checks (length, merge
//! fields, content guard) and the per-recipient delivery plan.

use std::borrow::Cow;
use std::collections::BTreeSet;

use crate::events::MessagePosted;
use crate::facts::Facts;
use crate::ids::{delivery_id_for, ConversationId, MessageId, PersonId, SchoolId};
use crate::merge::{self, MergeValues};
use crate::person::PersonState;
use crate::plan::{choose_channel, PlannedDelivery};
use crate::text::{self, first_blocked, MessageBody};
use crate::values::{Channel, PersonKind, SendAs};

use super::ConversationError;

/// A body and subject that passed every text rule.
pub(super) struct CheckedText {
    pub body: MessageBody,
    pub subject: Option<String>,
    /// Written outside Homeroom (an SMS reply) or by a family member or student:
    /// delivered as written, braces and all, to every recipient.
    pub verbatim: bool,
}

impl CheckedText {
    /// A reply from outside, as written.
    pub(super) fn verbatim(body: MessageBody) -> Self {
        Self {
            body,
            subject: None,
            verbatim: true,
        }
    }
}

/// Checks length, merge fields and the content guard, before anything is recorded.
/// What a family member or student writes is no template
/// ([`merge::is_template_by`]): it goes out as typed, braces and all.
pub(super) fn check_text(
    body: &str,
    subject: Option<&str>,
    author: &PersonState,
    facts: &Facts,
) -> Result<CheckedText, ConversationError> {
    let body = MessageBody::parse(body)?;
    let subject = text::subject(subject)?;
    let patterns = &facts.district.settings().blocked_patterns;
    let texts: Vec<&str> = std::iter::once(body.as_str())
        .chain(subject.as_deref())
        .collect();
    if let Some(pattern) = first_blocked(patterns, &texts) {
        return Err(ConversationError::BlockedContent {
            pattern: pattern.as_str().to_owned(),
        });
    }
    let template = merge::is_template_by(author);
    if template {
        for text in texts {
            merge::check(text)?;
        }
    }
    Ok(CheckedText {
        body,
        subject,
        verbatim: !template,
    })
}

/// Checks a conversation's title (length, content guard): every participant sees it, so
/// the district's forbidden data is refused there as in a message.
pub(super) fn check_title(title: &str, facts: &Facts) -> Result<String, ConversationError> {
    let title = text::title(title)?;
    let patterns = &facts.district.settings().blocked_patterns;
    if let Some(pattern) = first_blocked(patterns, &[title.as_str()]) {
        return Err(ConversationError::BlockedContent {
            pattern: pattern.as_str().to_owned(),
        });
    }
    Ok(title)
}

/// Everything needed to post one message.
pub(super) struct Draft<'a> {
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
    pub school_id: SchoolId,
    pub author_id: PersonId,
    pub author: &'a PersonState,
    pub sent_as: SendAs,
    pub text: CheckedText,
    pub channel: Option<Channel>,
    pub recipients: Vec<PersonId>,
    /// Recipients who muted the conversation: they get it in the app only (no SMS,
    /// email or push), whatever the sender picked.
    pub muted: &'a BTreeSet<PersonId>,
}

fn person(facts: &Facts, id: PersonId) -> Result<&PersonState, ConversationError> {
    facts
        .person(id)
        .ok_or(ConversationError::UnknownPerson { person_id: id })
}

/// The `{student_name}` of a recipient: a student's own name; for a guardian, the
/// students they speak for who take part in the conversation, else every student of
/// the conversation's school they speak for ("Dennis and Maria": a parent of two is
/// not written to about only the first, nor about a child at another school), else
/// all of them; for anyone else, their own name.
fn student_name<'f>(
    recipient: &'f PersonState,
    facts: &'f Facts,
    participants: &[PersonId],
    school: SchoolId,
) -> Result<Cow<'f, str>, ConversationError> {
    let linked = recipient.linked_students();
    if recipient.kind() != Some(PersonKind::Guardian) || linked.is_empty() {
        return Ok(Cow::Borrowed(recipient.name()));
    }
    let students: Vec<&PersonState> = linked
        .iter()
        .map(|s| person(facts, *s))
        .collect::<Result<_, _>>()?;
    let taking_part: Vec<&PersonState> = students
        .iter()
        .copied()
        .filter(|s| s.id().is_some_and(|id| participants.contains(&id)))
        .collect();
    let at_school: Vec<&PersonState> = students
        .iter()
        .copied()
        .filter(|s| s.school_ids().contains(&school))
        .collect();
    let chosen = [taking_part, at_school]
        .into_iter()
        .find(|group| !group.is_empty())
        .unwrap_or(students);
    let names: Vec<&str> = chosen.iter().map(|s| s.name()).collect();
    Ok(match names.as_slice() {
        [one] => Cow::Borrowed(*one),
        [init @ .., last] => Cow::Owned(format!("{} and {last}", init.join(", "))),
        [] => Cow::Borrowed(recipient.name()),
    })
}

/// Builds the `MessagePosted` event, rendering the text for every recipient.
pub(super) fn compose(draft: Draft<'_>, facts: &Facts) -> Result<MessagePosted, ConversationError> {
    let school_name = facts
        .district
        .school(draft.school_id)
        .map_or("", |s| s.name.as_str());
    let sender_name = match draft.sent_as {
        SendAs::School => school_name,
        SendAs::Personal => draft.author.name(),
    };
    let body = draft.text.body.as_str();
    let subject = draft.text.subject.as_deref();
    let needs_student = !draft.text.verbatim && merge::uses(body, "student_name")
        || subject.is_some_and(|s| merge::uses(s, "student_name"));
    let default_channel = facts.district.settings().default_channel;
    let mut deliveries = Vec::with_capacity(draft.recipients.len());
    for recipient_id in &draft.recipients {
        let recipient = person(facts, *recipient_id)?;
        let student = if needs_student {
            student_name(recipient, facts, &draft.recipients, draft.school_id)?
        } else {
            Cow::Borrowed(recipient.name())
        };
        let values = MergeValues {
            student_name: &student,
            recipient_name: recipient.name(),
            school_name,
            sender_name,
        };
        let (channel, address) = if draft.muted.contains(recipient_id) {
            (Channel::App, None)
        } else {
            choose_channel(draft.channel, recipient, default_channel)
        };
        deliveries.push(PlannedDelivery {
            delivery_id: delivery_id_for(draft.conversation_id, draft.message_id, *recipient_id),
            recipient_id: *recipient_id,
            channel,
            address,
            language: recipient.language().to_owned(),
            text: if draft.text.verbatim {
                body.to_owned()
            } else {
                merge::render(body, &values)?
            },
            subject: if draft.text.verbatim {
                subject.map(str::to_owned)
            } else {
                subject.map(|s| merge::render(s, &values)).transpose()?
            },
        });
    }
    Ok(MessagePosted {
        conversation_id: draft.conversation_id,
        message_id: draft.message_id,
        author_id: draft.author_id,
        sent_as: draft.sent_as,
        body: body.to_owned(),
        subject: draft.text.subject,
        deliveries,
        shared_phone_with: Vec::new(),
        at: facts.now,
    })
}
