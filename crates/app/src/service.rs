//! The command service: the one path every command takes from request to recorded events.
//!
//! 1. A command id seen before answers with its first result (or `idempotency_key_reused`
//!    when the body differs), found through the store's command index, so it holds
//!    across restarts and processes.
//! 2. The target stream and every fact stream the decision rests on are brought up to the
//!    store's current version through the [`StateCache`].
//! 3. The domain decides; a refusal records nothing.
//! 4. The events are appended with the version the decision saw. A conflict means someone
//!    else wrote first: reload and decide again, a bounded number of times.

use crate::cache::{CachedState, StateCache};
use crate::codec;
use crate::error::CommandError;
use chrono::{DateTime, Utc};
use homeroom_domain::{
    Actor, Command, ConversationId, DeliveryId, DistrictId, DistrictState, Event, Facts, MessageId,
    PersonId, PersonState, State, StreamRef,
};
use homeroom_eventstore::{
    EventMetadata, EventStore, ExpectedVersion, Position, RecordedEvent, StoreError, StreamId,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use uuid::Uuid;

/// How many times a command is decided again after losing an append race (to another
/// process: in this process, commands to one stream take turns).
const MAX_ATTEMPTS: usize = 8;
/// Lock stripes that make commands to one stream take turns in this process.
const STREAM_STRIPES: usize = 4_096;
/// Events read per round trip when catching a cached state up.
const CATCH_UP_PAGE: usize = 1_000;

/// Who sends a command, for whom, and when: everything a command needs besides its body.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// The tenant; every stream the command touches belongs to it.
    pub district: DistrictId,
    /// The acting person or service.
    pub actor: Actor,
    /// The command's id: the caller's idempotency key, or a fresh UUID v7.
    pub command_id: Uuid,
    /// Whether the caller chose `command_id` (an idempotency key), so it may have been
    /// recorded before; a fresh id skips that lookup.
    pub caller_chose_id: bool,
    /// Groups the events of one user action and its reactions (defaults to the command id).
    pub correlation_id: Option<Uuid>,
    /// The event or command that caused this one (defaults to the command id).
    pub causation_id: Option<Uuid>,
    /// The time the command is decided at: the domain has no clock of its own.
    pub now: DateTime<Utc>,
}

impl CommandContext {
    /// A context for a fresh command by `actor` in `district`, decided now.
    pub fn new(district: DistrictId, actor: Actor) -> Self {
        Self {
            district,
            actor,
            command_id: Uuid::now_v7(),
            caller_chose_id: false,
            correlation_id: None,
            causation_id: None,
            now: Utc::now(),
        }
    }

    /// The same context under a caller-chosen command id (an `Idempotency-Key`).
    pub fn with_command_id(mut self, command_id: Uuid) -> Self {
        self.command_id = command_id;
        self.caller_chose_id = true;
        self
    }
}

/// One event a command recorded, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordedRef {
    /// The stream it was appended to.
    pub stream: String,
    /// Its version there.
    pub version: u64,
    /// Its stored type name.
    #[serde(rename = "type")]
    pub event_type: String,
}

/// What a command recorded, and the ids it created.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CommandOutcome {
    /// The command's id.
    pub command_id: Uuid,
    /// The position of the last event recorded (or, for a command that changed nothing,
    /// of the last event of its stream): pass it as `min_position` to read your writes.
    pub position: Position,
    /// The events recorded, in order (empty when the command changed nothing).
    pub events: Vec<RecordedRef>,
    /// The conversation the command started or wrote to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<ConversationId>,
    /// The message the command posted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    /// One delivery per recipient of the posted message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delivery_ids: Vec<DeliveryId>,
    /// Whether this is the first result of an earlier, identical command.
    #[serde(skip)]
    pub replayed: bool,
}

/// What one decision rests on: the target's state, the facts, and the version of every
/// stream read for them.
struct Loaded {
    current: CachedState,
    facts: Facts,
    read: Vec<(StreamId, u64)>,
}

/// Where the service counts what it decided: every command, whoever sent it (the API,
/// an import, the delivery workers and reactor), once, by name and outcome (`ok` or
/// the error's code), with how long it took.
pub trait CommandMetrics: Send + Sync {
    /// Counts one command.
    fn record(&self, command: &'static str, outcome: &'static str, elapsed: std::time::Duration);
}

/// Decides commands and records their events. Cheap to share behind an `Arc`.
pub struct CommandService {
    store: Arc<dyn EventStore>,
    cache: StateCache,
    /// Set once by the composition root ([`CommandService::count_in`]).
    metrics: std::sync::OnceLock<Arc<dyn CommandMetrics>>,
    /// One attempt per caller-chosen command id at a time in this process.
    in_flight: crate::turns::Turns<Uuid>,
    /// Commands to the same stream take turns here instead of racing to the store and
    /// losing on conflict; streams that share a stripe merely wait a little.
    stripes: Vec<tokio::sync::Mutex<()>>,
    hasher: std::hash::RandomState,
}

impl CommandService {
    /// A service over `store`, caching the state of about `cache_capacity` streams.
    pub fn new(store: Arc<dyn EventStore>, cache_capacity: usize) -> Self {
        Self {
            store,
            cache: StateCache::new(cache_capacity),
            metrics: std::sync::OnceLock::new(),
            in_flight: crate::turns::Turns::default(),
            stripes: (0..STREAM_STRIPES).map(|_| Default::default()).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// The store the service writes to.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Counts every command from now on in `metrics`. Only the first call takes effect:
    /// one process has one set of figures.
    pub fn count_in(&self, metrics: Arc<dyn CommandMetrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Decides `command` and records what it decided.
    ///
    /// # Errors
    /// [`CommandError::Rejected`] when a rule refuses it (nothing is recorded);
    /// [`CommandError::IdempotencyKeyReused`] for a reused id with another body or
    /// from another actor;
    /// [`CommandError::Conflict`] when every retry lost the race for its stream;
    /// [`CommandError::Store`] / [`CommandError::Codec`] when the store fails.
    pub async fn execute(
        &self,
        ctx: &CommandContext,
        command: &Command,
    ) -> Result<CommandOutcome, CommandError> {
        let started = std::time::Instant::now();
        let result = self.execute_uncounted(ctx, command).await;
        if let Some(metrics) = self.metrics.get() {
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.code(),
            };
            metrics.record(command.name(), outcome, started.elapsed());
        }
        result
    }

    async fn execute_uncounted(
        &self,
        ctx: &CommandContext,
        command: &Command,
    ) -> Result<CommandOutcome, CommandError> {
        let digest = command_digest(command);
        if !ctx.caller_chose_id {
            return self.decide_and_append(ctx, command, &digest).await;
        }
        // One attempt per command id at a time in this process, so two copies of one
        // retried request cannot both record.
        // Whether it was recorded already is asked after each load (in
        // `decide_and_append`), so a copy recorded by another node meanwhile is found too.
        let _turn = self.in_flight.take(ctx.command_id).await;
        let decided = self.decide_and_append(ctx, command, &digest).await;
        let lost_or_nothing = match &decided {
            Err(CommandError::Rejected(_) | CommandError::Conflict { .. }) => true,
            Ok(outcome) => outcome.events.is_empty(),
            Err(_) => false,
        };
        if lost_or_nothing {
            // Another process may have recorded this very command meanwhile (the
            // same key sent to two nodes at once), which is why this one lost or
            // found nothing left to do: answer its result, as a retry would get it.
            if let Some(earlier) = self.recorded_result(ctx, &digest).await? {
                return earlier;
            }
        }
        decided
    }

    /// What the command with `ctx`'s id already recorded in `ctx`'s district, if it
    /// recorded anything: its result (replayed), or
    /// [`CommandError::IdempotencyKeyReused`] when that id came with another body or
    /// from another actor (a key names one caller's command: another person must not be
    /// told it succeeded for them, nor learn its ids). A key is the district's own:
    /// what another district recorded under the same id is no concern of this one, and
    /// telling it so would tell it that the other used the key.
    async fn recorded_result(
        &self,
        ctx: &CommandContext,
        digest: &str,
    ) -> Result<Option<Result<CommandOutcome, CommandError>>, CommandError> {
        let mut earlier = self.store.find_command(ctx.command_id).await?;
        earlier.retain(|e| e.metadata.district == ctx.district.as_str());
        let Some(first) = earlier.first() else {
            return Ok(None);
        };
        if first.metadata.command_digest.as_deref() != Some(digest)
            || first.metadata.actor != actor_name(&ctx.actor)
        {
            return Ok(Some(Err(CommandError::IdempotencyKeyReused {
                command_id: ctx.command_id,
            })));
        }
        Ok(Some(outcome_of(ctx.command_id, &earlier, true)))
    }

    async fn decide_and_append(
        &self,
        ctx: &CommandContext,
        command: &Command,
        digest: &str,
    ) -> Result<CommandOutcome, CommandError> {
        let target = homeroom_domain::target(command, &ctx.actor);
        let stream = stream_id(&target, &ctx.district)?;
        let stripe = self.hasher.hash_one(stream.as_str()) as usize % self.stripes.len();
        let _turn = self.stripes[stripe].lock().await;
        // Streams found to have moved on: caught up from their cached version next time.
        let mut stale = HashSet::new();
        let mut last_conflict = None;
        for _attempt in 0..MAX_ATTEMPTS {
            let loaded = self.load_for(ctx, command, &target, &stale).await?;
            stale.clear();
            if ctx.caller_chose_id {
                // Looked for after loading: whatever recorded this very command before
                // the load is found here; a node that records it after the load makes
                // the append below conflict, and the next attempt finds it. So a
                // reaction that is not idempotent by itself (`RecordSmsSent`) is never
                // recorded a second time on a state that already holds it.
                if let Some(earlier) = self.recorded_result(ctx, digest).await? {
                    return earlier;
                }
            }
            let decision = homeroom_domain::decide(&loaded.current.state, command, &loaded.facts);
            let events = match decision {
                Ok(events) if !events.is_empty() => events,
                // A refusal or a no-op is a decision too: when the cache was trusted
                // without asking the store, make sure nothing it rests on has moved.
                other => {
                    let moved = self.moved_since(&loaded.read).await?;
                    if !moved.is_empty() {
                        stale.extend(moved);
                        continue;
                    }
                    other?;
                    let position = self
                        .position_of_version(&stream, loaded.current.version)
                        .await?;
                    return Ok(CommandOutcome {
                        command_id: ctx.command_id,
                        position,
                        events: Vec::new(),
                        conversation_id: None,
                        message_id: None,
                        delivery_ids: Vec::new(),
                        replayed: false,
                    });
                }
            };
            let metadata = EventMetadata {
                district: ctx.district.as_str().to_owned(),
                school: homeroom_domain::school_of(&loaded.current.state, command)
                    .map(|s| s.to_string()),
                actor: actor_name(&ctx.actor),
                correlation_id: ctx.correlation_id.unwrap_or(ctx.command_id),
                causation_id: ctx.causation_id.unwrap_or(ctx.command_id),
                command_id: ctx.command_id,
                command_digest: Some(digest.to_owned()),
            };
            let new_events = events
                .iter()
                .map(|e| codec::encode(e, metadata.clone()))
                .collect();
            let expected = ExpectedVersion::from_version(loaded.current.version);
            let facts: Vec<(StreamId, u64)> = loaded
                .read
                .iter()
                .filter(|(s, _)| *s != stream)
                .cloned()
                .collect();
            match self
                .store
                .append_with_facts(&stream, expected, new_events, &facts)
                .await
            {
                Ok(appended) => {
                    let state = events
                        .iter()
                        .fold(loaded.current.state, |state, event| state.evolve(event));
                    self.cache.put(
                        stream.as_str(),
                        CachedState {
                            version: appended.version,
                            state,
                        },
                    );
                    let first_version = appended.version + 1 - events.len() as u64;
                    let mut outcome = CommandOutcome {
                        command_id: ctx.command_id,
                        position: appended.position,
                        events: events
                            .iter()
                            .zip(first_version..)
                            .map(|(e, version)| RecordedRef {
                                stream: stream.to_string(),
                                version,
                                event_type: e.name().to_owned(),
                            })
                            .collect(),
                        conversation_id: None,
                        message_id: None,
                        delivery_ids: Vec::new(),
                        replayed: false,
                    };
                    collect_created_ids(&mut outcome, &events);
                    return Ok(outcome);
                }
                Err(StoreError::Conflict {
                    stream: moved,
                    expected,
                    actual,
                }) => {
                    tracing::debug!(%moved, %expected, actual, "a stream moved on; deciding again");
                    stale.insert(moved.clone());
                    last_conflict = Some(StoreError::Conflict {
                        stream: moved,
                        expected,
                        actual,
                    });
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(last_conflict
            .map(CommandError::from)
            .unwrap_or(CommandError::Store(StoreError::Closed)))
    }

    /// Loads the target and every fact the decision needs.
    ///
    /// With a store that checks facts at append time, cached states are used as they
    /// are (only `stale` streams and misses are read) and their versions travel with the
    /// append. Otherwise every stream's version is asked for first and cached states are
    /// caught up to it.
    async fn load_for(
        &self,
        ctx: &CommandContext,
        command: &Command,
        target: &StreamRef,
        stale: &HashSet<StreamId>,
    ) -> Result<Loaded, CommandError> {
        let mut read = Vec::new();
        // The first round asks for the target, the district, and everyone the rule needs
        // according to the cached target (usually all of them).
        let mut first_round = vec![target.clone(), StreamRef::District];
        let mut guessed_people: Vec<PersonId> = self
            .cache
            .get(stream_id(target, &ctx.district)?.as_str())
            .map(|cached| homeroom_domain::people_needed(command, &cached.state, &ctx.actor))
            .unwrap_or_default();
        guessed_people.extend(ctx.actor.person_id());
        guessed_people.sort();
        guessed_people.dedup();
        first_round.extend(guessed_people.iter().map(|id| StreamRef::Person(*id)));
        let loaded = self
            .load_many(&ctx.district, &first_round, stale, &mut read)
            .await?;
        let mut loaded = loaded.into_iter();
        let current = loaded.next().expect("the target was asked for");
        let district = match loaded.next().map(|c| c.state) {
            Some(State::District(d)) => d,
            _ => unreachable!("the district stream folds to a district state"),
        };
        let mut people = BTreeMap::new();
        for (id, cached) in guessed_people.into_iter().zip(loaded) {
            insert_person(&mut people, id, cached.state);
        }
        if let (StreamRef::Person(id), State::Person(p)) = (target, &current.state) {
            people.insert(*id, p.clone());
        }

        // Everyone the rule names on the loaded target (only those the guess missed are
        // read now), then the people related to them (a guardian's students).
        let wanted = homeroom_domain::people_needed(command, &current.state, &ctx.actor);
        self.load_people(&ctx.district, &mut people, wanted, stale, &mut read)
            .await?;
        let related: Vec<PersonId> = people.values().flat_map(|p| p.related_people()).collect();
        self.load_people(&ctx.district, &mut people, related, stale, &mut read)
            .await?;

        // The SMS numbers the command would take, from their own (district-less) streams.
        let numbers = homeroom_domain::numbers_needed(command, &current.state);
        let number_streams: Vec<StreamRef> =
            numbers.iter().cloned().map(StreamRef::SmsNumber).collect();
        let number_states = if number_streams.is_empty() {
            Vec::new()
        } else {
            self.load_many(&ctx.district, &number_streams, stale, &mut read)
                .await?
        };
        let numbers_of_other_districts = numbers
            .into_iter()
            .zip(number_states)
            .filter(|(_, cached)| match &cached.state {
                State::SmsNumber(n) => n.binding().is_some_and(|(d, _)| *d != ctx.district),
                _ => false,
            })
            .map(|(number, _)| number)
            .collect();

        read.sort();
        read.dedup();
        let facts = Facts {
            now: ctx.now,
            command_id: ctx.command_id,
            actor: ctx.actor.clone(),
            district,
            people,
            numbers_of_other_districts,
        };
        Ok(Loaded {
            current,
            facts,
            read,
        })
    }

    async fn load_people(
        &self,
        district: &DistrictId,
        people: &mut BTreeMap<PersonId, homeroom_domain::PersonState>,
        wanted: Vec<PersonId>,
        stale: &HashSet<StreamId>,
        read: &mut Vec<(StreamId, u64)>,
    ) -> Result<(), CommandError> {
        let mut missing: Vec<PersonId> = wanted
            .into_iter()
            .filter(|id| !people.contains_key(id))
            .collect();
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let refs: Vec<StreamRef> = missing.iter().map(|id| StreamRef::Person(*id)).collect();
        let loaded = self.load_many(district, &refs, stale, read).await?;
        for (id, cached) in missing.into_iter().zip(loaded) {
            insert_person(people, id, cached.state);
        }
        Ok(())
    }

    /// The state of each stream, noting in `read` the version each decision input has.
    ///
    /// Cached states are trusted without asking the store only when the store checks
    /// facts with the append and `always_ask` is false: a read has no append to catch a
    /// stale fact, so it asks.
    async fn load_many_checked(
        &self,
        district: &DistrictId,
        refs: &[StreamRef],
        stale: &HashSet<StreamId>,
        read: &mut Vec<(StreamId, u64)>,
        always_ask: bool,
    ) -> Result<Vec<CachedState>, CommandError> {
        let streams = refs
            .iter()
            .map(|r| stream_id(r, district))
            .collect::<Result<Vec<_>, _>>()?;
        let current_versions = if self.store.checks_facts() && !always_ask {
            None
        } else {
            Some(self.store.stream_versions(&streams).await?)
        };
        let mut states = Vec::with_capacity(refs.len());
        for (i, (r, stream)) in refs.iter().zip(&streams).enumerate() {
            let known = current_versions.as_ref().map(|v| v[i]);
            let cached = match (self.cache.get(stream.as_str()), known) {
                (Some(c), Some(v)) if c.version == v => c,
                (Some(c), None) if !stale.contains(stream) => c,
                (Some(c), Some(v)) if c.version < v => self.catch_up(stream, c).await?,
                (Some(c), None) => self.catch_up(stream, c).await?,
                (_, Some(0)) => CachedState {
                    version: 0,
                    state: r.initial_state(),
                },
                _ => {
                    let fresh = CachedState {
                        version: 0,
                        state: r.initial_state(),
                    };
                    self.catch_up(stream, fresh).await?
                }
            };
            read.push((stream.clone(), cached.version));
            states.push(cached);
        }
        Ok(states)
    }

    async fn load_many(
        &self,
        district: &DistrictId,
        refs: &[StreamRef],
        stale: &HashSet<StreamId>,
        read: &mut Vec<(StreamId, u64)>,
    ) -> Result<Vec<CachedState>, CommandError> {
        self.load_many_checked(district, refs, stale, read, false)
            .await
    }

    /// The district's directory as its streams hold it now: the district (schools,
    /// roles, settings) and each of `people` (unregistered when unknown), caught up to
    /// the store's current version. What a read is allowed to show rests on these, as a
    /// decision does, never on a read model.
    ///
    /// # Errors
    /// [`CommandError::Store`] / [`CommandError::Codec`] when the store fails.
    pub async fn directory(
        &self,
        district: &DistrictId,
        people: &[PersonId],
    ) -> Result<(DistrictState, Vec<PersonState>), CommandError> {
        let mut refs = vec![StreamRef::District];
        refs.extend(people.iter().map(|id| StreamRef::Person(*id)));
        let mut read = Vec::new();
        let mut loaded = self
            .load_many_checked(district, &refs, &HashSet::new(), &mut read, true)
            .await?
            .into_iter()
            .map(|cached| cached.state);
        let Some(State::District(district_state)) = loaded.next() else {
            unreachable!("the district stream folds to a district state")
        };
        let people = loaded
            .map(|state| match state {
                State::Person(p) => p,
                _ => unreachable!("a person stream folds to a person state"),
            })
            .collect();
        Ok((district_state, people))
    }

    /// The current state of one stream, caught up to the store's version (the version
    /// it is at, and its state): what a process manager or a worker reads before it acts.
    ///
    /// # Errors
    /// [`CommandError::Store`] / [`CommandError::Codec`] when the store fails.
    pub async fn load(
        &self,
        district: &DistrictId,
        stream: &StreamRef,
    ) -> Result<(u64, State), CommandError> {
        let mut read = Vec::new();
        let cached = self
            .load_many_checked(
                district,
                std::slice::from_ref(stream),
                &HashSet::new(),
                &mut read,
                true,
            )
            .await?
            .pop()
            .expect("one stream was asked for");
        Ok((cached.version, cached.state))
    }

    /// The streams among `read` whose version in the store is no longer the one read.
    async fn moved_since(&self, read: &[(StreamId, u64)]) -> Result<Vec<StreamId>, CommandError> {
        if !self.store.checks_facts() {
            return Ok(Vec::new()); // every version was just asked for
        }
        let streams: Vec<StreamId> = read.iter().map(|(s, _)| s.clone()).collect();
        let now = self.store.stream_versions(&streams).await?;
        Ok(read
            .iter()
            .zip(now)
            .filter(|((_, seen), now)| *seen != *now)
            .map(|((s, _), _)| s.clone())
            .collect())
    }

    async fn catch_up(
        &self,
        stream: &StreamId,
        mut cached: CachedState,
    ) -> Result<CachedState, CommandError> {
        loop {
            let page = self
                .store
                .read_stream(stream, cached.version, CATCH_UP_PAGE)
                .await?;
            let done = page.len() < CATCH_UP_PAGE;
            for recorded in &page {
                let event = codec::decode(recorded)?;
                cached.state = cached.state.evolve(&event);
                cached.version = recorded.version;
            }
            if done {
                break;
            }
        }
        self.cache.put(stream.as_str(), cached.clone());
        Ok(cached)
    }

    async fn position_of_version(
        &self,
        stream: &StreamId,
        version: u64,
    ) -> Result<Position, CommandError> {
        if version == 0 {
            return Ok(Position::START);
        }
        let last = self.store.read_stream(stream, version - 1, 1).await?;
        Ok(last.first().map_or(Position::START, |e| e.position))
    }
}

fn insert_person(
    people: &mut BTreeMap<PersonId, homeroom_domain::PersonState>,
    id: PersonId,
    state: State,
) {
    if let State::Person(p) = state {
        people.insert(id, p);
    }
}

/// The store's name for a domain stream.
///
/// # Errors
/// Never in practice: domain stream names are always valid; a bad one is a store error.
pub fn stream_id(r: &StreamRef, district: &DistrictId) -> Result<StreamId, CommandError> {
    StreamId::parse(r.stream_name(district)).map_err(|e| {
        CommandError::Store(homeroom_eventstore::StoreError::Corrupt {
            stream: r.stream_name(district),
            version: 0,
            reason: e.to_string(),
        })
    })
}

/// How an actor is named in event metadata.
pub fn actor_name(actor: &Actor) -> String {
    match actor {
        Actor::Person(id) => id.to_string(),
        Actor::System(service) => format!("system:{service}"),
    }
}

/// SHA-256 of a command's name and canonical JSON body.
fn command_digest(command: &Command) -> String {
    let mut h = Sha256::new();
    h.update(command.name().as_bytes());
    h.update([0]);
    h.update(serde_json::to_vec(command).unwrap_or_default());
    hex::encode(h.finalize())
}

/// The outcome of an earlier command, rebuilt from the events it recorded.
fn outcome_of(
    command_id: Uuid,
    recorded: &[RecordedEvent],
    replayed: bool,
) -> Result<CommandOutcome, CommandError> {
    let events = recorded
        .iter()
        .map(codec::decode)
        .collect::<Result<Vec<_>, _>>()?;
    let mut outcome = CommandOutcome {
        command_id,
        position: recorded.last().map_or(Position::START, |e| e.position),
        events: recorded
            .iter()
            .map(|e| RecordedRef {
                stream: e.stream.to_string(),
                version: e.version,
                event_type: e.event_type.clone(),
            })
            .collect(),
        conversation_id: None,
        message_id: None,
        delivery_ids: Vec::new(),
        replayed,
    };
    collect_created_ids(&mut outcome, &events);
    Ok(outcome)
}

fn collect_created_ids(outcome: &mut CommandOutcome, events: &[Event]) {
    for event in events {
        match event {
            Event::ConversationStarted(e) => outcome.conversation_id = Some(e.conversation_id),
            Event::MessagePosted(e) => {
                outcome.conversation_id = Some(e.conversation_id);
                outcome.message_id = Some(e.message_id);
                outcome
                    .delivery_ids
                    .extend(e.deliveries.iter().map(|d| d.delivery_id));
            }
            _ => {}
        }
    }
}
