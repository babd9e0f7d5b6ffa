//! The read models: four projectors, each owning its tables.
//!
//! | projector | tables | serves |
//! |---|---|---|
//! | [`directory`] | `people`, `guardian_links` | names, kinds, a student's guardians |
//! | [`conversations`] | `conversations`, `conversation_people`, `messages` | inboxes, threads, oversight, student records, exports |
//! | [`deliveries`] | `deliveries` | per-recipient channel and status |
//! | [`audit`] | `audit_events` | the audit trail |
//!
//! Every table is keyed by district first (tenancy), and named per generation
//! (`messages_g2`). Queries join them at read time inside one snapshot.

pub mod audit;
pub mod conversations;
pub mod deliveries;
pub mod directory;

use crate::projector::Projector;
use homeroom_domain::{Channel, ConversationKind, PersonKind, SendAs};
use std::sync::Arc;

/// Every built-in projector, in the order the runtime applies a batch to them.
pub fn all() -> Vec<Arc<dyn Projector>> {
    vec![
        Arc::new(directory::Directory::default()),
        Arc::new(conversations::Conversations::default()),
        Arc::new(deliveries::Deliveries::default()),
        Arc::new(audit::Audit),
    ]
}

/// Stored spellings of the domain's small enums: the same words the API uses, so rows
/// read the same as responses.
pub(crate) mod names {
    use super::*;

    pub fn person_kind(kind: PersonKind) -> &'static str {
        match kind {
            PersonKind::Staff => "staff",
            PersonKind::Student => "student",
            PersonKind::Guardian => "guardian",
        }
    }

    pub fn parse_person_kind(text: &str) -> Option<PersonKind> {
        match text {
            "staff" => Some(PersonKind::Staff),
            "student" => Some(PersonKind::Student),
            "guardian" => Some(PersonKind::Guardian),
            _ => None,
        }
    }

    pub fn conversation_kind(kind: ConversationKind) -> &'static str {
        match kind {
            ConversationKind::Personal => "personal",
            ConversationKind::School => "school",
            ConversationKind::Group => "group",
        }
    }

    pub fn parse_conversation_kind(text: &str) -> Option<ConversationKind> {
        match text {
            "personal" => Some(ConversationKind::Personal),
            "school" => Some(ConversationKind::School),
            "group" => Some(ConversationKind::Group),
            _ => None,
        }
    }

    pub fn channel(channel: Channel) -> &'static str {
        match channel {
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::App => "app",
        }
    }

    pub fn parse_channel(text: &str) -> Option<Channel> {
        match text {
            "sms" => Some(Channel::Sms),
            "email" => Some(Channel::Email),
            "app" => Some(Channel::App),
            _ => None,
        }
    }

    pub fn sent_as(sent_as: SendAs) -> &'static str {
        match sent_as {
            SendAs::Personal => "personal",
            SendAs::School => "school",
        }
    }

    pub fn parse_sent_as(text: &str) -> Option<SendAs> {
        match text {
            "personal" => Some(SendAs::Personal),
            "school" => Some(SendAs::School),
            _ => None,
        }
    }
}
