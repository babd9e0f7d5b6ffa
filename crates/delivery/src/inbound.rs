//! An SMS from the provider's webhook, from receipt to its conversation.
//!
//! 1. The number it was sent to names the district ([`StreamRef::SmsNumber`]); an SMS
//!    to a number no district owns is kept under the reserved district `_unrouted`.
//! 2. The SMS is recorded exactly as received, before anything is decided about it, in
//!    its own stream: nothing inbound is ever lost.
//! 3. STOP, START and HELP are honoured on the line (our number, their number) and
//!    answered.
//! 4. Otherwise the line says which conversation last sent an SMS from that number to
//!    that number, and for whom: the reply is posted there as that person's message, or
//!    kept and refused when the conversation was stopped. A line that never carried an
//!    SMS makes the SMS unroutable ("accepted only from a number that was sent an SMS
//!    from the number it replies to").
//! 5. Where it went is recorded on the SMS's stream.
//!
//! A provider retrying its webhook runs this again: every step is a no-op the second
//! time, and the answer is the same.

use crate::{last_sent_on, react, reaction_context};
use homeroom_app::{codec, CommandError, CommandService};
use homeroom_channels::Translator;
use homeroom_domain::commands::{ReceiveReply, ReceiveSms, RouteInboundSms, SetSmsOptOut};
use homeroom_domain::inbound::{reply_text, InboundKeyword, InboundRoute, UnroutableReason};
use homeroom_domain::{
    inbound_message_id, sms, ConversationError, ConversationId, DistrictId, DomainError, Event,
    NumberOwner, PersonId, PhoneNumber, ProviderMessageId, State, StreamRef,
};
use std::sync::Arc;

/// One SMS as the provider's webhook posts it (already authenticated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingSms {
    /// The provider's id of the SMS (`MessageSid`).
    pub message_sid: ProviderMessageId,
    /// The sender (`From`).
    pub from: String,
    /// The number it was sent to (`To`).
    pub to: String,
    /// The text (`Body`).
    pub body: String,
    /// The pictures or files sent with it (`MediaUrl0`, …).
    pub media_urls: Vec<String>,
}

/// What became of an inbound SMS, and what to answer the sender, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The district it was recorded under (`_unrouted` when no district owns the number).
    pub district: DistrictId,
    /// Where it went.
    pub route: InboundRoute,
    /// A text to send back: the answer to STOP, START or HELP, or that a reply kept
    /// reaches nobody (the conversation stopped, blocked content, nobody left to read).
    pub reply: Option<String>,
}

/// Routes inbound SMS through the command service.
#[derive(Clone)]
pub struct InboundSms {
    commands: Arc<CommandService>,
    translator: Arc<dyn Translator>,
}

impl InboundSms {
    /// Inbound SMS recorded through `commands`; the answers that tell a family their
    /// reply was not delivered go out in their language through `translator`.
    pub fn new(commands: Arc<CommandService>, translator: Arc<dyn Translator>) -> Self {
        Self {
            commands,
            translator,
        }
    }

    /// Records `sms`, routes it, and records the route.
    ///
    /// # Errors
    /// [`CommandError`] when the store fails (the provider retries the webhook; every
    /// step is idempotent).
    pub async fn receive(&self, sms: IncomingSms) -> Result<Received, CommandError> {
        let (ours, theirs) = (
            PhoneNumber::parse(&sms.to).ok(),
            PhoneNumber::parse(&sms.from).ok(),
        );
        let owner = match &ours {
            Some(number) => self.owner_of(number).await?,
            None => None,
        };
        let district = owner
            .as_ref()
            .map_or_else(DistrictId::unrouted, |(d, _)| d.clone());
        react(
            &self.commands,
            &district,
            None,
            ReceiveSms {
                message_sid: sms.message_sid.clone(),
                from: sms.from.clone(),
                to: sms.to.clone(),
                body: sms.body.clone(),
                media_urls: sms.media_urls.clone(),
            },
        )
        .await?;
        // A retried webhook (the same MessageSid) whose text was routed already is
        // answered as the first time, and routed nowhere again: meanwhile its SMS line
        // may have moved to another conversation (which would post a refused text
        // there), or the family may have sent START after this STOP.
        if let Some(route) = self.recorded_route(&district, &sms.message_sid).await? {
            let reply = match &owner {
                Some((district, owner)) => {
                    self.answer_again(district, *owner, &route, &sms).await?
                }
                None => None,
            };
            return Ok(Received {
                district,
                route,
                reply,
            });
        }
        let (route, reply) = match (ours, theirs, owner) {
            (Some(ours), Some(theirs), Some((district, owner))) => {
                self.route(&district, &sms, ours, theirs, owner).await?
            }
            (Some(_), Some(_), None) => (unroutable(UnroutableReason::UnknownNumber), None),
            _ => (unroutable(UnroutableReason::MalformedNumber), None),
        };
        react(
            &self.commands,
            &district,
            None,
            RouteInboundSms {
                message_sid: sms.message_sid.clone(),
                route: route.clone(),
            },
        )
        .await?;
        // A retried webhook answers with the route recorded the first time.
        let route = self
            .recorded_route(&district, &sms.message_sid)
            .await?
            .unwrap_or(route);
        Ok(Received {
            district,
            route,
            reply,
        })
    }

    async fn owner_of(
        &self,
        number: &PhoneNumber,
    ) -> Result<Option<(DistrictId, NumberOwner)>, CommandError> {
        let (_, state) = self
            .commands
            .load(
                &DistrictId::unrouted(),
                &StreamRef::SmsNumber(number.clone()),
            )
            .await?;
        Ok(match state {
            State::SmsNumber(n) => n.binding().map(|(d, o)| (d.clone(), o)),
            _ => None,
        })
    }

    async fn recorded_route(
        &self,
        district: &DistrictId,
        sid: &ProviderMessageId,
    ) -> Result<Option<InboundRoute>, CommandError> {
        let (_, state) = self
            .commands
            .load(district, &StreamRef::Inbound(sid.clone()))
            .await?;
        Ok(match state {
            State::Inbound(i) => i.route().cloned(),
            _ => None,
        })
    }

    async fn route(
        &self,
        district: &DistrictId,
        sms: &IncomingSms,
        ours: PhoneNumber,
        theirs: PhoneNumber,
        owner: NumberOwner,
    ) -> Result<(InboundRoute, Option<String>), CommandError> {
        if let Some(keyword) = sms::keyword(&sms.body) {
            let reply = self
                .keyword(district, sms, &ours, &theirs, owner, keyword)
                .await?;
            return Ok((InboundRoute::Keyword { keyword }, Some(reply)));
        }
        let Some(last) = last_sent_on(&self.commands, district, ours, theirs.clone()).await? else {
            return Ok((unroutable(UnroutableReason::NoConversation), None));
        };
        let reader = Some(last.recipient_id);
        let ctx = reaction_context(district, None)
            .with_command_id(reply_command_id(district, &sms.message_sid));
        let replied = self
            .commands
            .execute(
                &ctx,
                &ReceiveReply {
                    conversation_id: last.conversation_id,
                    author_id: last.recipient_id,
                    message_sid: sms.message_sid.clone(),
                    body: reply_text(&sms.body, &sms.media_urls),
                    from_number: Some(theirs),
                }
                .into(),
            )
            .await;
        let conversation_id = last.conversation_id;
        match replied {
            Ok(outcome)
                if outcome
                    .events
                    .iter()
                    .any(|e| e.event_type == "inbound_reply_refused") =>
            {
                let reply = self
                    .refusal_reply(district, owner, conversation_id, reader)
                    .await?;
                Ok((InboundRoute::Refused { conversation_id }, Some(reply)))
            }
            Ok(outcome) if !outcome.events.is_empty() => {
                let reply = if outcome.delivery_ids.is_empty() {
                    Some(self.unread_reply(district, owner, reader).await?)
                } else {
                    None
                };
                Ok((
                    InboundRoute::Conversation {
                        conversation_id,
                        message_id: inbound_message_id(&sms.message_sid),
                    },
                    reply,
                ))
            }
            // Recorded by an earlier try of this webhook: posted, or kept refused.
            Ok(_) => {
                let message_id = inbound_message_id(&sms.message_sid);
                let (_, state) = self
                    .commands
                    .load(district, &StreamRef::Conversation(conversation_id))
                    .await?;
                let posted =
                    matches!(&state, State::Conversation(c) if c.messages().contains(&message_id));
                if posted {
                    let route = InboundRoute::Conversation {
                        conversation_id,
                        message_id,
                    };
                    let reply = self.answer_again(district, owner, &route, sms).await?;
                    return Ok((route, reply));
                }
                // The same answer as the first time the provider asked.
                let reply = self
                    .refusal_reply(district, owner, conversation_id, reader)
                    .await?;
                Ok((InboundRoute::Refused { conversation_id }, Some(reply)))
            }
            // An earlier try of this webhook posted the reply (or kept it refused) where
            // the line pointed then, and was cut short before it recorded the route (the
            // process killed): the line moved on since, and the reply, recorded under the
            // same command id, must not be posted twice. It went where that try put it.
            Err(error @ CommandError::IdempotencyKeyReused { .. }) => {
                match self.earlier_reply(district, &sms.message_sid).await? {
                    Some(route @ InboundRoute::Refused { conversation_id }) => {
                        let reply = self
                            .refusal_reply(district, owner, conversation_id, reader)
                            .await?;
                        Ok((route, Some(reply)))
                    }
                    Some(route) => {
                        let reply = self.answer_again(district, owner, &route, sms).await?;
                        Ok((route, reply))
                    }
                    None => Err(error),
                }
            }
            Err(CommandError::Rejected(refusal)) => {
                tracing::info!(sid = %sms.message_sid, code = refusal.code(), "an inbound SMS cannot be posted in its conversation; kept as unroutable");
                let reason = match refusal {
                    DomainError::Validation(_) => UnroutableReason::Unreadable,
                    DomainError::Conversation(ConversationError::NotTheirNumber { .. }) => {
                        UnroutableReason::NotTheirNumber
                    }
                    _ => UnroutableReason::NoConversation,
                };
                Ok((unroutable(reason), None))
            }
            Err(error) => Err(error),
        }
    }

    /// Where the reply of the SMS `sid` went when an earlier try of its webhook posted
    /// it (or kept it refused), from the events that try recorded.
    async fn earlier_reply(
        &self,
        district: &DistrictId,
        sid: &ProviderMessageId,
    ) -> Result<Option<InboundRoute>, CommandError> {
        for event in self.reply_events(district, sid).await? {
            match event {
                Event::MessagePosted(m) => {
                    return Ok(Some(InboundRoute::Conversation {
                        conversation_id: m.conversation_id,
                        message_id: m.message_id,
                    }))
                }
                Event::InboundReplyRefused(r) => {
                    return Ok(Some(InboundRoute::Refused {
                        conversation_id: r.conversation_id,
                    }))
                }
                _ => {}
            }
        }
        Ok(None)
    }

    async fn keyword(
        &self,
        district: &DistrictId,
        sms: &IncomingSms,
        ours: &PhoneNumber,
        theirs: &PhoneNumber,
        owner: NumberOwner,
        keyword: InboundKeyword,
    ) -> Result<String, CommandError> {
        let opt = |opted_out| SetSmsOptOut {
            our_number: ours.clone(),
            their_number: theirs.clone(),
            opted_out,
            message_sid: sms.message_sid.clone(),
        };
        // Under the SMS's own command id: a webhook retried after a crash records the
        // keyword once (START is recorded even on an open line).
        let ctx = reaction_context(district, None).with_command_id(inbound_command_id(
            district,
            &sms.message_sid,
            "SetSmsOptOut",
        ));
        match keyword {
            InboundKeyword::Stop => {
                self.commands.execute(&ctx, &opt(true).into()).await?;
            }
            InboundKeyword::Start => {
                self.commands.execute(&ctx, &opt(false).into()).await?;
            }
            InboundKeyword::Help => {}
        }
        let name = self.sender_name(district, owner).await?;
        Ok(keyword_answer(&name, keyword))
    }

    /// What a retried webhook is answered, from the route its text was given the first
    /// time; nothing is recorded again.
    async fn answer_again(
        &self,
        district: &DistrictId,
        owner: NumberOwner,
        route: &InboundRoute,
        sms: &IncomingSms,
    ) -> Result<Option<String>, CommandError> {
        Ok(match route {
            InboundRoute::Keyword { keyword } => {
                let name = self.sender_name(district, owner).await?;
                Some(keyword_answer(&name, *keyword))
            }
            InboundRoute::Refused { conversation_id } => {
                let reader = self.texted_on_the_line(district, sms).await?;
                Some(
                    self.refusal_reply(district, owner, *conversation_id, reader)
                        .await?,
                )
            }
            InboundRoute::Conversation { .. } => {
                if self.reached_nobody(district, &sms.message_sid).await? {
                    let reader = self.texted_on_the_line(district, sms).await?;
                    Some(self.unread_reply(district, owner, reader).await?)
                } else {
                    None
                }
            }
            InboundRoute::Unroutable { .. } => None,
        })
    }

    /// Whether the reply the SMS `sid` became was posted to nobody: everyone else in its
    /// conversation had left it (staff whose roles at the school were revoked).
    async fn reached_nobody(
        &self,
        district: &DistrictId,
        sid: &ProviderMessageId,
    ) -> Result<bool, CommandError> {
        for event in self.reply_events(district, sid).await? {
            if let Event::MessagePosted(m) = event {
                return Ok(m.deliveries.is_empty());
            }
        }
        Ok(false)
    }

    /// What the reply of the SMS `sid` recorded in `district` (under
    /// [`reply_command_id`]): the message it was posted as, or its refusal; nothing
    /// before it was tried.
    async fn reply_events(
        &self,
        district: &DistrictId,
        sid: &ProviderMessageId,
    ) -> Result<Vec<Event>, CommandError> {
        let recorded = self
            .commands
            .store()
            .find_command(reply_command_id(district, sid))
            .await?;
        recorded
            .iter()
            .filter(|e| e.metadata.district == district.as_str())
            .map(|e| codec::decode(e).map_err(CommandError::from))
            .collect()
    }

    /// What the family is texted back when their reply was posted but reaches nobody
    /// (the staff member they wrote to no longer works there): it is kept, oversight
    /// sees it, but they must not wait for an answer.
    async fn unread_reply(
        &self,
        district: &DistrictId,
        owner: NumberOwner,
        reader: Option<PersonId>,
    ) -> Result<String, CommandError> {
        self.answer(
            district,
            owner,
            reader,
            "nobody at the school reads this conversation any more, so your reply was not delivered. Please contact the school directly.",
        )
        .await
    }

    /// `text` (written in English) signed with the sending number's name, in the
    /// language of `reader` (the person the line last texted) when the translator has
    /// it; as written otherwise, or when the translator fails now: an answer is never
    /// held up for its translation. The name stays as it is.
    async fn answer(
        &self,
        district: &DistrictId,
        owner: NumberOwner,
        reader: Option<PersonId>,
        text: &str,
    ) -> Result<String, CommandError> {
        let name = self.sender_name(district, owner).await?;
        let language = match reader {
            Some(person) => match self
                .commands
                .load(district, &StreamRef::Person(person))
                .await?
                .1
            {
                State::Person(p) => Some(p.language().to_owned()),
                _ => None,
            },
            None => None,
        };
        let text = match language {
            Some(to) if !to.is_empty() && !to.eq_ignore_ascii_case(ANSWERS_WRITTEN_IN) => {
                match self
                    .translator
                    .translate(text, ANSWERS_WRITTEN_IN, &to)
                    .await
                {
                    Ok(t) if t.machine_translated => t.text,
                    Ok(_) => text.to_owned(),
                    Err(error) => {
                        tracing::warn!(%error, "an answer to an inbound text could not be translated; it goes as written");
                        text.to_owned()
                    }
                }
            }
            _ => text.to_owned(),
        };
        Ok(format!("{name}: {text}"))
    }

    /// The person the SMS line `sms` came in on last texted, if any.
    async fn texted_on_the_line(
        &self,
        district: &DistrictId,
        sms: &IncomingSms,
    ) -> Result<Option<PersonId>, CommandError> {
        let (Ok(ours), Ok(theirs)) = (PhoneNumber::parse(&sms.to), PhoneNumber::parse(&sms.from))
        else {
            return Ok(None);
        };
        Ok(last_sent_on(&self.commands, district, ours, theirs)
            .await?
            .map(|last| last.recipient_id))
    }

    /// What the family is texted back when their reply is kept but not posted, so they
    /// know nobody will read it there: the conversation was stopped, or the text holds
    /// what the district forbids sending by text.
    async fn refusal_reply(
        &self,
        district: &DistrictId,
        owner: NumberOwner,
        conversation: ConversationId,
        reader: Option<PersonId>,
    ) -> Result<String, CommandError> {
        let (_, state) = self
            .commands
            .load(district, &StreamRef::Conversation(conversation))
            .await?;
        // The domain refuses a stopped conversation's replies first, whatever they say.
        let stopped = matches!(&state, State::Conversation(c) if c.is_stopped());
        let text = if stopped {
            "this conversation has been closed, so your reply was not delivered. Please contact the school directly."
        } else {
            "your reply was not delivered because it holds information that may not be sent by text. Please contact the school directly."
        };
        self.answer(district, owner, reader, text).await
    }

    async fn sender_name(
        &self,
        district: &DistrictId,
        owner: NumberOwner,
    ) -> Result<String, CommandError> {
        let person = match owner {
            NumberOwner::Person(p) => Some(p),
            NumberOwner::School(_) | NumberOwner::Pool => None,
        };
        let (district_state, people) = self
            .commands
            .directory(district, &person.into_iter().collect::<Vec<_>>())
            .await?;
        Ok(match owner {
            NumberOwner::School(school) => district_state
                .school(school)
                .map_or_else(|| "Your school".to_owned(), |s| s.name.clone()),
            NumberOwner::Person(_) => people
                .first()
                .filter(|p| p.is_registered())
                .map_or_else(|| "Your school".to_owned(), |p| p.name().to_owned()),
            NumberOwner::Pool => "Your school".to_owned(),
        })
    }
}

/// The text answering a keyword, sent as `name` (the school or the staff member whose
/// number it went to).
/// The language the answers to inbound texts are written in. The answers to STOP,
/// START and HELP stay in it: they name the keywords, which a translation would change.
const ANSWERS_WRITTEN_IN: &str = "en";

fn keyword_answer(name: &str, keyword: InboundKeyword) -> String {
    match keyword {
        InboundKeyword::Stop => format!(
            "{name}: you will get no more texts from this number. Reply START to get them again."
        ),
        InboundKeyword::Start => format!(
            "{name}: you will get texts from this number again. Reply STOP to stop them."
        ),
        InboundKeyword::Help => format!(
            "{name}: messages from your school. Reply to answer, STOP to stop texts from this number, START to get them again."
        ),
    }
}

/// The command id under which the reply of the SMS `sid` is posted in `district`: one
/// per SMS, whichever conversation its line pointed at, so a webhook retried after a
/// crash finds where the first try put it.
pub fn reply_command_id(district: &DistrictId, sid: &ProviderMessageId) -> uuid::Uuid {
    inbound_command_id(district, sid, "ReceiveReply")
}

/// The id of the command `name` that the SMS `sid` causes in `district`: one per SMS
/// and command, so a retried webhook's command is the same command.
fn inbound_command_id(district: &DistrictId, sid: &ProviderMessageId, name: &str) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &inbound_message_id(sid).as_uuid(),
        format!("{name}/{}", district.as_str()).as_bytes(),
    )
}

fn unroutable(reason: UnroutableReason) -> InboundRoute {
    InboundRoute::Unroutable { reason }
}
