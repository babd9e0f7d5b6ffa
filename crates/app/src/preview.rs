//! The character counter behind `POST /v1/preview`: a personal message rendered for its
//! recipient before it is sent, by the domain's [`homeroom_domain::preview`] rule.
//!
//! 1. The facts are the ones sending would rest on, from the same streams: the sender's
//!    personal conversation with the recipient (caught up through a small cache of its
//!    own), the district, and everyone [`homeroom_domain::people_needed`] names and their
//!    related people (a guardian's students), through [`CommandService::directory`].
//! 2. The domain renders, picks the channel and measures; a refusal is the one sending
//!    would answer, as [`CommandError::Rejected`]. Nothing is appended.
//! 3. Whether other people of the district share the phone number the SMS would go to is
//!    no fact of any one stream. A [`PhoneBook`] answers it (who has this number): a
//!    read model of the directory's contact points is good enough for a preview, since
//!    nothing is recorded from it. When the render goes by SMS and someone else has its
//!    number, it is rendered again with the shared-phone label. Without a phone book no
//!    number counts as shared.

use crate::cache::{CachedState, StateCache};
use crate::codec;
use crate::error::CommandError;
use crate::queries::Reader;
use crate::service::{stream_id, CommandService};
use chrono::{DateTime, Utc};
use homeroom_domain::commands::SendPersonalMessage;
use homeroom_domain::preview::{self, PreviewRequest, Render};
use homeroom_domain::{
    Channel, Command, ConversationState, DistrictId, DomainError, Facts, PersonId, State,
};
use homeroom_eventstore::StreamId;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use uuid::Uuid;

/// Events read per round trip when catching a conversation up.
const PAGE: usize = 1_000;

/// What a [`PhoneBook`] lookup returns.
pub type PhoneBookLookup<'a> = Pin<
    Box<dyn Future<Output = Result<Vec<PersonId>, homeroom_projections::QueryError>> + Send + 'a>,
>;

/// Who in a district has a phone number: the fact behind the shared-phone label, which
/// no single person's stream holds.
pub trait PhoneBook: Send + Sync {
    /// The people of `district` with `number` among their SMS contact points.
    fn people_with_number<'a>(
        &'a self,
        district: &'a DistrictId,
        number: &'a str,
    ) -> PhoneBookLookup<'a>;
}

/// The directory read model answers (eventually consistent: a label is a courtesy, not
/// a rule, so a number registered a moment ago may go unlabelled once).
impl PhoneBook for homeroom_projections::ReadModels {
    fn people_with_number<'a>(
        &'a self,
        district: &'a DistrictId,
        number: &'a str,
    ) -> PhoneBookLookup<'a> {
        Box::pin(self.people_at_address(district, number))
    }
}

/// Why a preview answered nothing.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// Sending would be refused ([`CommandError::Rejected`]), or the store failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The phone book failed.
    #[error("phone book: {0}")]
    PhoneBook(#[source] homeroom_projections::QueryError),
}

impl PreviewError {
    /// The stable API error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Command(e) => e.code(),
            Self::PhoneBook(_) => "internal",
        }
    }
}

/// Renders personal messages before they are sent. Cheap to share behind an `Arc`.
pub struct PreviewService {
    commands: Arc<CommandService>,
    phones: Option<Arc<dyn PhoneBook>>,
    conversations: StateCache,
}

impl PreviewService {
    /// About how many personal conversations the service keeps folded.
    pub const CONVERSATIONS_CACHED: usize = 4_096;

    /// Previews on the facts `commands` loads; no number counts as shared until
    /// [`PreviewService::with_phone_book`].
    pub fn new(commands: Arc<CommandService>) -> Self {
        Self {
            commands,
            phones: None,
            conversations: StateCache::new(Self::CONVERSATIONS_CACHED),
        }
    }

    /// The same service, asking `phones` whether an SMS number is shared.
    pub fn with_phone_book(mut self, phones: Arc<dyn PhoneBook>) -> Self {
        self.phones = Some(phones);
        self
    }

    /// `request` as its recipient would get it if `reader` sent it at `now`.
    ///
    /// # Errors
    /// [`CommandError::Rejected`] (inside [`PreviewError::Command`]) with the refusal
    /// sending would answer; [`CommandError::Store`] / [`CommandError::Codec`] when the
    /// store fails; [`PreviewError::PhoneBook`].
    pub async fn preview(
        &self,
        reader: &Reader,
        request: &PreviewRequest,
        now: DateTime<Utc>,
    ) -> Result<Render, PreviewError> {
        let command = Command::SendPersonalMessage(SendPersonalMessage {
            recipient_id: request.recipient_id,
            body: request.body.clone(),
            subject: None,
            channel: request.channel,
            message_id: None,
        });
        let target = homeroom_domain::target(&command, &reader.actor);
        let stream = stream_id(&target, &reader.district)?;
        let state = self.conversation(&stream, target.initial_state()).await?;
        let conversation = match &state {
            State::Conversation(conversation) => conversation.clone(),
            _ => ConversationState::default(),
        };
        let facts = self.facts(reader, &command, &state, now).await?;
        let refused = |e| CommandError::Rejected(DomainError::from(e));
        let render = preview::preview(&conversation, request, &facts, &[]).map_err(refused)?;
        let Some(number) = render
            .address
            .clone()
            .filter(|_| render.channel == Channel::Sms)
        else {
            return Ok(render);
        };
        if !self
            .is_shared(&reader.district, &number, request.recipient_id)
            .await?
        {
            return Ok(render);
        }
        Ok(preview::preview(&conversation, request, &facts, &[number]).map_err(refused)?)
    }

    /// Whether someone besides `recipient` has `number`.
    async fn is_shared(
        &self,
        district: &DistrictId,
        number: &str,
        recipient: PersonId,
    ) -> Result<bool, PreviewError> {
        let Some(phones) = &self.phones else {
            return Ok(false);
        };
        let people = phones
            .people_with_number(district, number)
            .await
            .map_err(PreviewError::PhoneBook)?;
        Ok(people.iter().any(|p| *p != recipient))
    }

    /// The facts sending `command` would load: the district, everyone it names, and
    /// their related people.
    async fn facts(
        &self,
        reader: &Reader,
        command: &Command,
        state: &State,
        now: DateTime<Utc>,
    ) -> Result<Facts, CommandError> {
        let named = homeroom_domain::people_needed(command, state, &reader.actor);
        let (district, people) = self.commands.directory(&reader.district, &named).await?;
        let mut related: Vec<PersonId> = people
            .iter()
            .flat_map(|p| p.related_people())
            .filter(|id| !named.contains(id))
            .collect();
        related.sort_unstable();
        related.dedup();
        let more = if related.is_empty() {
            Vec::new()
        } else {
            self.commands.directory(&reader.district, &related).await?.1
        };
        Ok(people.into_iter().chain(more).fold(
            Facts::new(now, Uuid::now_v7(), reader.actor.clone(), district),
            Facts::with_person,
        ))
    }

    /// The conversation's state as its stream holds it now.
    async fn conversation(&self, stream: &StreamId, initial: State) -> Result<State, CommandError> {
        let mut cached = self
            .conversations
            .get(stream.as_str())
            .unwrap_or(CachedState {
                version: 0,
                state: initial,
            });
        let before = cached.version;
        loop {
            let page = self
                .commands
                .store()
                .read_stream(stream, cached.version, PAGE)
                .await?;
            for recorded in &page {
                cached.state = cached.state.evolve(&codec::decode(recorded)?);
                cached.version = recorded.version;
            }
            if page.len() < PAGE {
                break;
            }
        }
        if cached.version > before {
            self.conversations.put(stream.as_str(), cached.clone());
        }
        Ok(cached.state)
    }
}

#[cfg(test)]
mod tests;
