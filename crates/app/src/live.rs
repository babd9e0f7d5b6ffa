//! The live feed behind `GET /v1/stream`: what a person is told as it happens.
//!
//! One [`LiveHub`] per process follows the log ([`EventSubscriber::subscribe_all`] from
//! the head at the first subscriber's connect time, resubscribing from where it stopped
//! after a store error) and turns the events people are told about into [`Notice`]s
//! addressed to an audience, broadcast to every subscriber of the process. One store
//! subscription serves every client.
//!
//! - A message posted in a conversation (by anyone: staff, family, an SMS reply routed
//!   in) is a [`Notice::Message`] for every participant, its author included (their other
//!   devices), and, in a school conversation, for everyone who holds that school's
//!   shared inbox ([`Listener::school_inboxes`], as the permissions were when the feed
//!   opened: a role granted or revoked ends the feed, below).
//! - A delivery's status change (`sent`, `delivered`, `failed`) is a
//!   [`Notice::Delivery`] for the author of its message, when the author may know how
//!   every recipient was reached ([`Listener::hears_every_delivery`]: staff).
//! - A role assigned to or revoked from a person is a [`Notice::RolesChanged`] for
//!   them, and so is a redefinition of what a role they hold grants (`role_defined`,
//!   told to every holder: [`Listener::roles_held`]); their feeds end after it: what
//!   they may hear of is decided when a feed opens, so the client reconnects and the
//!   new feed follows the roles as they are.
//! - A person holds at most [`MAX_FEEDS_PER_PERSON`] feeds at once ([`LiveHub::admit`]),
//!   and feeds catching up from the log take turns ([`CATCHING_UP_AT_ONCE`] at a time),
//!   so a crowd of clients resuming from far back cannot starve the store.
//! - Tenancy: a notice carries its district, and a subscriber only gets its own
//!   district's.
//!
//! To address a notice the hub remembers, in bounded LRU maps, which people take part in
//! which conversation (from `conversation_started`), who wrote which message and whose
//! message each delivery carries (from `message_posted` and `delivery_queued`). What it
//! has forgotten, or never saw (before it started), it reads from the streams that own
//! it: a conversation's first event names its participants, a delivery's first event its
//! message, the conversation's `message_posted` its author. The streams are
//! authoritative and never lag behind the event being addressed, as a read model could.
//!
//! A subscriber ([`LiveHub::subscribe`]) starts at the head at its connect time, or
//! after a position it was given (`Last-Event-ID`): it then reads the log from there
//! itself, and joins the broadcast once caught up, so a reconnecting client misses
//! nothing. A subscriber too slow for the broadcast buffer catches up from the log the
//! same way. One too far behind ([`LiveConfig::max_catch_up`]) is reset to the head
//! instead ([`Update::Reset`]). [`LiveHub::close`] ends every subscriber's feed (server
//! shutdown).

use crate::codec;
use crate::error::CommandError;
use crate::service::stream_id;
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use hashlink::LruCache;
use homeroom_domain::visibility::TakingPart;
use homeroom_domain::{
    ConversationId, ConversationKind, DeliveryId, DistrictId, Event, MessageId, PersonId, RoleId,
    SchoolId, StreamRef,
};
use homeroom_eventstore::{EventStore, Position, RecordedEvent, StoreError, StreamId};
use serde::Serialize;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

/// Events read per round trip when catching a subscriber up or looking a fact up.
const PAGE: usize = 512;

/// Feeds one person may have open at once in one process: a phone, a tablet and a
/// few browser tabs, with room to spare. More is a client reconnecting in a loop
/// without closing, or a token used against the server: every feed costs a broadcast
/// slot, and one that resumes a replay of the log.
pub const MAX_FEEDS_PER_PERSON: usize = 16;

/// Feeds of a process that read the log to catch up at the same moment, page by page:
/// a crowd of clients resuming from far back takes turns instead of taking every
/// connection of the store from the reads and commands beside them.
const CATCHING_UP_AT_ONCE: usize = 2;

/// The stored event types the hub reads; every other event is passed over undecoded.
const ADDRESSED: &[&str] = &[
    "role_defined",
    "role_assigned",
    "role_revoked",
    "conversation_started",
    "message_posted",
    "delivery_queued",
    "delivery_sent",
    "delivery_delivered",
    "delivery_failed",
];

/// How a hub buffers and remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveConfig {
    /// Notices the broadcast holds for a slow subscriber before it must catch up from
    /// the log.
    pub buffer: usize,
    /// Entries each memory (participants, message authors, delivery owners) keeps; the
    /// least recently used are forgotten and read again from their streams when needed.
    pub memory: usize,
    /// How long the hub waits before resubscribing after a store error.
    pub retry_after: Duration,
    /// Events a feed reads from the log to catch up (after `Last-Event-ID`, or when too
    /// slow for the broadcast) before it gives up replaying and sends
    /// [`Update::Reset`]: a client far behind reloads instead of replaying the log.
    pub max_catch_up: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            buffer: 4_096,
            memory: 50_000,
            retry_after: Duration::from_secs(1),
            max_catch_up: 100_000,
        }
    }
}

/// A delivery status a message's author is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum LiveStatus {
    /// Handed to the provider.
    Sent,
    /// Arrived.
    Delivered,
    /// Did not arrive.
    Failed,
}

/// A message was posted in a conversation the person takes part in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MessageNotice {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The message (read it with `GET /v1/conversations/{conversation_id}`).
    pub message_id: MessageId,
    /// Who wrote it.
    pub author_id: PersonId,
    /// When it was posted.
    pub sent_at: DateTime<Utc>,
    /// The event's position: the SSE event id, and a `min_position` for the thread.
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "homeroom_projections::queries::position_schema")
    )]
    pub position: Position,
}

/// A delivery of a message the person wrote changed status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeliveryNotice {
    /// The message's conversation.
    pub conversation_id: ConversationId,
    /// The message.
    pub message_id: MessageId,
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// Whom it is for.
    pub recipient_id: PersonId,
    /// Its new status.
    pub status: LiveStatus,
    /// When the status changed.
    pub at: DateTime<Utc>,
    /// The event's position: the SSE event id.
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "homeroom_projections::queries::position_schema")
    )]
    pub position: Position,
}

/// The person's roles changed: what they may hear of changed with them. The feed ends
/// after telling them; the client reconnects (`Last-Event-ID`) and the new feed follows
/// their roles as they are now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RolesNotice {
    /// When.
    pub at: DateTime<Utc>,
    /// The event's position: the SSE event id.
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "homeroom_projections::queries::position_schema")
    )]
    pub position: Position,
}

/// What a person is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Notice {
    /// A new message in one of their conversations.
    Message(MessageNotice),
    /// A status change of a delivery of their message.
    Delivery(DeliveryNotice),
    /// Their roles changed, or what one of them grants; the feed ends after this.
    RolesChanged(RolesNotice),
}

impl Notice {
    /// The position of the event it tells of.
    pub fn position(&self) -> Position {
        match self {
            Notice::Message(n) => n.position,
            Notice::Delivery(n) => n.position,
            Notice::RolesChanged(n) => n.position,
        }
    }

    /// The SSE event name: `message` or `delivery`.
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::Message(_) => "message",
            Notice::Delivery(_) => "delivery",
            Notice::RolesChanged(_) => "roles_changed",
        }
    }
}

/// What a subscriber's feed yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The feed is live from `position` on: nothing after it will be missed. The first
    /// item of every feed; a client that reconnects with it misses nothing.
    Ready {
        /// Where the feed starts (the head at connect time, or the resume position).
        position: Position,
    },
    /// Something to tell.
    Notice(Notice),
    /// The feed was too far behind to replay what it missed ([`LiveConfig::max_catch_up`]):
    /// it is live from `position` (the head) again, and the client reloads what it shows.
    Reset {
        /// Where the feed continues from.
        position: Position,
    },
}

/// Why a feed ended early. The client reconnects with its last event id.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The event store failed.
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    /// A stream could not be named.
    #[error("stream name: {0}")]
    Stream(#[source] CommandError),
}

/// Whom a feed is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Their district (a feed carries nothing of another).
    pub district: DistrictId,
    /// The person.
    pub person: PersonId,
    /// The schools whose shared inbox they hold (`school_inbox`): they hear of every
    /// message in those schools' school conversations, as the inbox shows them.
    pub school_inboxes: Vec<SchoolId>,
    /// Where they take part in the conversations they are in: staff hear nothing of
    /// a school whose roles they no longer hold (`visibility::takes_part_at`).
    pub taking_part: TakingPart,
    /// Whether they may know how every recipient of their messages was reached
    /// (`visibility::sees_every_recipients_copy`): staff are told of each delivery of
    /// their messages; a family member or student writing in a group is not told how
    /// the other families were reached.
    pub hears_every_delivery: bool,
    /// Whether they may know which staff member wrote a message from the school
    /// (`visibility::sees_who_wrote_for_the_school`): a family member or student is
    /// told such a message is the school's, with the school's id as its author.
    pub sees_who_wrote_for_the_school: bool,
    /// The log's head when their roles were read: a role change at or before it is in
    /// `school_inboxes` and `taking_part` already, so catching up past it tells the
    /// client (`roles_changed`) without ending the feed; a later one ends it.
    pub roles_known_at: Position,
    /// The roles they held when their roles were read (any school): a redefinition of
    /// one of them changes what they may hear of as surely as a revocation.
    pub roles_held: Vec<RoleId>,
}

/// A notice and whom it is for.
#[derive(Debug)]
struct Routed {
    district: String,
    audience: Vec<PersonId>,
    /// The conversation's school, when known: the audience hears of it only where they
    /// take part.
    school: Option<SchoolId>,
    /// A school conversation's school: its shared inbox's holders are told too.
    school_inbox: Option<SchoolId>,
    /// The school a message went out from under its shared identity (`from: school`).
    from_school: Option<SchoolId>,
    /// A redefined role: everyone holding it is told.
    role: Option<RoleId>,
    notice: Notice,
}

impl Routed {
    /// The notice as `listener` is told it: a message from the school is the school's
    /// to whoever may not know who wrote it.
    fn notice_for(&self, listener: &Listener) -> Notice {
        match (&self.notice, self.from_school) {
            (Notice::Message(message), Some(school)) if !listener.sees_who_wrote_for_the_school => {
                Notice::Message(MessageNotice {
                    author_id: PersonId::new(school.as_uuid()),
                    ..message.clone()
                })
            }
            (notice, _) => notice.clone(),
        }
    }

    fn is_for(&self, listener: &Listener) -> bool {
        if let Notice::Delivery(delivery) = &self.notice {
            if !listener.hears_every_delivery && delivery.recipient_id != listener.person {
                return false;
            }
        }
        let takes_part = self
            .school
            .is_none_or(|school| listener.taking_part.includes(school));
        self.district == listener.district.as_str()
            && ((self.audience.contains(&listener.person) && takes_part)
                || self
                    .school_inbox
                    .is_some_and(|s| listener.school_inboxes.contains(&s))
                || self
                    .role
                    .as_ref()
                    .is_some_and(|r| listener.roles_held.contains(r)))
    }
}

/// Who hears of a conversation's messages.
#[derive(Debug, Clone)]
struct Audience {
    participants: Arc<[PersonId]>,
    /// The conversation's school.
    school: Option<SchoolId>,
    /// Its school, for a school conversation (shared by the school inbox).
    school_inbox: Option<SchoolId>,
}

impl Audience {
    fn of(started: &homeroom_domain::events::ConversationStarted) -> Self {
        Self {
            participants: started.participant_ids.clone().into(),
            school: Some(started.school_id),
            school_inbox: (started.kind == ConversationKind::School).then_some(started.school_id),
        }
    }
}

/// Whose message a delivery carries.
#[derive(Debug, Clone, Copy)]
struct Owner {
    author: PersonId,
    /// The conversation's school: the author hears of the delivery only where they
    /// still take part, as of its messages.
    school: Option<SchoolId>,
    conversation_id: ConversationId,
    message_id: MessageId,
    recipient_id: PersonId,
}

struct Memory {
    audiences: LruCache<(String, ConversationId), Audience>,
    /// Keyed by conversation too: a message id is unique only within its conversation.
    authors: LruCache<(String, ConversationId, MessageId), PersonId>,
    owners: LruCache<(String, DeliveryId), Owner>,
}

struct Inner {
    store: Arc<dyn EventStore>,
    config: LiveConfig,
    notices: broadcast::Sender<Arc<Routed>>,
    closed: watch::Sender<bool>,
    /// The position the hub's broadcast starts after, once it has read the head: every
    /// addressed event after it is broadcast.
    coverage: watch::Sender<Option<Position>>,
    started: OnceLock<()>,
    memory: Mutex<Memory>,
    /// Open feeds per (district, person), for [`MAX_FEEDS_PER_PERSON`].
    open_feeds: Mutex<std::collections::HashMap<(String, PersonId), usize>>,
    /// Turns at reading the log to catch a feed up ([`CATCHING_UP_AT_ONCE`]).
    catching_up: tokio::sync::Semaphore,
}

/// Why a person may not open another feed now.
#[derive(Debug, thiserror::Error)]
#[error("{max} live streams are open for this person already; close one first")]
pub struct TooManyFeeds {
    /// [`MAX_FEEDS_PER_PERSON`].
    pub max: usize,
}

/// A person's place among their open feeds ([`LiveHub::admit`]), given back when
/// dropped: keep it for as long as the feed is open.
pub struct FeedSlot {
    inner: Arc<Inner>,
    key: (String, PersonId),
}

impl Drop for FeedSlot {
    fn drop(&mut self) {
        let mut open = self.inner.open_feeds();
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The process's live feed: one log subscription, fanned out to every subscriber.
/// Cheap to clone.
#[derive(Clone)]
pub struct LiveHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LiveHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHub")
            .field("config", &self.inner.config)
            .field("subscribers", &self.inner.notices.receiver_count())
            .finish()
    }
}

impl LiveHub {
    /// A hub over `store`. It starts following the log at its first subscriber.
    pub fn new(store: Arc<dyn EventStore>, config: LiveConfig) -> Self {
        let memory = Memory {
            audiences: LruCache::new(config.memory.max(1)),
            authors: LruCache::new(config.memory.max(1)),
            owners: LruCache::new(config.memory.max(1)),
        };
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                notices: broadcast::channel(config.buffer.max(1)).0,
                closed: watch::channel(false).0,
                coverage: watch::channel(None).0,
                started: OnceLock::new(),
                memory: Mutex::new(memory),
                open_feeds: Mutex::default(),
                catching_up: tokio::sync::Semaphore::new(CATCHING_UP_AT_ONCE),
            }),
        }
    }

    /// A place for one more feed of `listener`, unless [`MAX_FEEDS_PER_PERSON`] are open
    /// for them already in this process.
    ///
    /// # Errors
    /// [`TooManyFeeds`].
    pub fn admit(&self, listener: &Listener) -> Result<FeedSlot, TooManyFeeds> {
        let key = (listener.district.as_str().to_owned(), listener.person);
        let mut open = self.inner.open_feeds();
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= MAX_FEEDS_PER_PERSON {
            return Err(TooManyFeeds {
                max: MAX_FEEDS_PER_PERSON,
            });
        }
        *count += 1;
        drop(open);
        Ok(FeedSlot {
            inner: self.inner.clone(),
            key,
        })
    }

    /// How many feeds are open.
    pub fn subscribers(&self) -> usize {
        self.inner.notices.receiver_count()
    }

    /// Ends every feed and the log subscription; later feeds end at once. Call it when
    /// the server shuts down, so open streams do not hold the shutdown up.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// Whether [`LiveHub::close`] was called.
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// The feed of `listener`: [`Update::Ready`] first (then [`Update::Reset`] when
    /// `resume_after` is no position of this log), then every notice for them
    /// after the head at this call (or after `resume_after`, reading the log from there
    /// first), until [`LiveHub::close`]. Ends after yielding an error.
    ///
    /// Must be called within a tokio runtime: the first call starts the hub's task.
    pub fn subscribe(
        &self,
        listener: Listener,
        resume_after: Option<Position>,
    ) -> BoxStream<'static, Result<Update, LiveError>> {
        self.start();
        let inner = self.inner.clone();
        // Joined before the start position is read: nothing broadcast after that
        // position can be missed.
        let mut notices = inner.notices.subscribe();
        let mut closed = inner.closed.subscribe();
        let mut coverage = inner.coverage.subscribe();
        Box::pin(async_stream::stream! {
            if *closed.borrow_and_update() {
                return;
            }
            let head = match inner.store.head().await {
                Ok(head) => head,
                Err(e) => {
                    yield Err(LiveError::from(e));
                    return;
                }
            };
            // A position this log never handed out (beyond its head: a client of
            // another instance, or from before a restore; or in another engine's
            // shape: from before a migration) would read as after or before
            // everything: live from the head instead, and the client reloads.
            let (mut last, unknown) = match resume_after {
                Some(position) if is_foreign(position, head) => (head, true),
                Some(position) => (position, false),
                None => (head, false),
            };
            // What the broadcast never carried (before the hub read its head) is read
            // from the log.
            let covered = tokio::select! {
                _ = closed.wait_for(|closed| *closed) => None,
                covered = coverage.wait_for(Option::is_some) => covered.ok().and_then(|c| *c),
            };
            let Some(covered) = covered else { return };
            yield Ok(Update::Ready { position: last });
            if unknown {
                yield Ok(Update::Reset { position: last });
            }
            let mut behind = (resume_after.is_some() && !unknown) || covered > last;
            loop {
                if behind {
                    let mut read = 0;
                    loop {
                        let limit = PAGE.min(inner.config.max_catch_up.saturating_sub(read)).max(1);
                        let (notices, end, read_now) =
                            match inner.catch_up_page(&listener, last, limit).await {
                                Ok(page) => page,
                                Err(e) => {
                                    yield Err(e);
                                    return;
                                }
                            };
                        let done = read_now < limit;
                        read += read_now;
                        for notice in notices {
                            let ends = matches!(
                                &notice,
                                Notice::RolesChanged(r) if r.position > listener.roles_known_at
                            );
                            yield Ok(Update::Notice(notice));
                            if ends {
                                return;
                            }
                        }
                        if let Some(end) = end {
                            last = end;
                        }
                        if done || *closed.borrow() {
                            break;
                        }
                        if read >= inner.config.max_catch_up {
                            // Too far behind to replay: live from the head again, and
                            // the client is told to reload what it shows.
                            match inner.store.head().await {
                                Ok(head) => {
                                    last = head;
                                    yield Ok(Update::Reset { position: head });
                                }
                                Err(e) => {
                                    yield Err(LiveError::from(e));
                                    return;
                                }
                            }
                            break;
                        }
                    }
                    behind = false;
                }
                let received = tokio::select! {
                    _ = closed.wait_for(|closed| *closed) => None,
                    received = notices.recv() => Some(received),
                };
                match received {
                    None | Some(Err(RecvError::Closed)) => return,
                    Some(Err(RecvError::Lagged(missed))) => {
                        tracing::debug!(missed, "a live feed fell behind; catching up from the log");
                        behind = true;
                    }
                    Some(Ok(routed)) => {
                        let position = routed.notice.position();
                        if position > last && routed.is_for(&listener) {
                            last = position;
                            yield Ok(Update::Notice(routed.notice_for(&listener)));
                            // What they may hear of changed: the client reconnects and
                            // the new feed follows their roles as they are now.
                            if matches!(routed.notice, Notice::RolesChanged(_)) {
                                return;
                            }
                        }
                    }
                }
            }
        })
    }

    /// Starts the hub's task once.
    fn start(&self) {
        self.inner.started.get_or_init(|| {
            let weak = Arc::downgrade(&self.inner);
            let store = self.inner.store.clone();
            let closed = self.inner.closed.subscribe();
            let coverage = self.inner.coverage.clone();
            let retry_after = self.inner.config.retry_after;
            tokio::spawn(follow(weak, store, closed, coverage, retry_after));
        });
    }
}

/// The hub's task: follows the log from the head and broadcasts what it addresses,
/// until the hub is closed or dropped.
async fn follow(
    hub: Weak<Inner>,
    store: Arc<dyn EventStore>,
    mut closed: watch::Receiver<bool>,
    coverage: watch::Sender<Option<Position>>,
    retry_after: Duration,
) {
    let mut after = None;
    loop {
        let from = match after {
            Some(position) => position,
            None => match store.head().await {
                Ok(head) => head,
                Err(e) => {
                    tracing::warn!(error = %e, "the live hub cannot read the log's head; retrying");
                    if pause(&mut closed, retry_after).await {
                        return;
                    }
                    continue;
                }
            },
        };
        after = Some(from);
        // Set once: a resubscription continues from the last event addressed.
        coverage.send_if_modified(|covered| {
            let first = covered.is_none();
            if first {
                *covered = Some(from);
            }
            first
        });
        let mut feed = store.subscribe_all(from);
        loop {
            let next = tokio::select! {
                _ = closed.wait_for(|closed| *closed) => return,
                next = feed.next() => next,
            };
            let recorded = match next {
                Some(Ok(recorded)) => recorded,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the live hub's subscription failed; resubscribing");
                    break;
                }
                None => break,
            };
            let Some(inner) = hub.upgrade() else { return };
            match inner.route(&recorded).await {
                Ok(routed) => {
                    after = Some(recorded.position);
                    if let Some(routed) = routed {
                        // No subscriber is no error: the notice is for nobody now.
                        let _ = inner.notices.send(Arc::new(routed));
                    }
                }
                Err(e) => {
                    // Not skipped: the event is addressed again after resubscribing.
                    tracing::warn!(error = %e, position = %recorded.position, "the live hub could not address an event; retrying");
                    break;
                }
            }
        }
        if pause(&mut closed, retry_after).await {
            return;
        }
    }
}

/// The domain event `recorded` is, or `None` (logged) when it cannot be read back: an
/// unreadable event stays unreadable, so retrying it would stop the feed for good.
fn readable(recorded: &RecordedEvent) -> Option<Event> {
    codec::decode(recorded)
        .map_err(|error| {
            tracing::error!(%error, stream = %recorded.stream, version = recorded.version, "the live hub passes over an unreadable event");
        })
        .ok()
}

/// Waits `duration`, or less when the hub closes; true when it closed.
async fn pause(closed: &mut watch::Receiver<bool>, duration: Duration) -> bool {
    tokio::select! {
        _ = closed.wait_for(|closed| *closed) => true,
        () = tokio::time::sleep(duration) => false,
    }
}

impl Inner {
    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open_feeds(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, PersonId), usize>> {
        self.open_feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The notices for `listener` in the page of the log after `after` (at most `limit`
    /// events), read in a turn of [`CATCHING_UP_AT_ONCE`], and where the page ended:
    /// the turn is given back before the notices are sent, so a slow client never holds
    /// it.
    async fn catch_up_page(
        &self,
        listener: &Listener,
        after: Position,
        limit: usize,
    ) -> Result<(Vec<Notice>, Option<Position>, usize), LiveError> {
        let _turn = self
            .catching_up
            .acquire()
            .await
            .expect("the catch-up turns are never closed");
        let page = self.store.read_all(after, limit).await?;
        let mut notices = Vec::new();
        for recorded in &page {
            if recorded.metadata.district == listener.district.as_str() {
                if let Some(routed) = self.route(recorded).await? {
                    if routed.is_for(listener) {
                        notices.push(routed.notice_for(listener));
                    }
                }
            }
        }
        Ok((notices, page.last().map(|e| e.position), page.len()))
    }

    /// The notice `recorded` makes, and whom it is for; learns what it teaches.
    async fn route(&self, recorded: &RecordedEvent) -> Result<Option<Routed>, LiveError> {
        if !ADDRESSED.contains(&recorded.event_type.as_str()) {
            return Ok(None);
        }
        let district = recorded.metadata.district.clone();
        let position = recorded.position;
        let Some(event) = readable(recorded) else {
            return Ok(None);
        };
        match event {
            Event::RoleDefined(e) => Ok(Some(Routed {
                district,
                audience: vec![],
                school: None,
                school_inbox: None,
                from_school: None,
                role: Some(e.role_id),
                notice: Notice::RolesChanged(RolesNotice { at: e.at, position }),
            })),
            Event::RoleAssigned(homeroom_domain::events::RoleAssigned {
                person_id, at, ..
            })
            | Event::RoleRevoked(homeroom_domain::events::RoleRevoked { person_id, at, .. }) => {
                Ok(Some(Routed {
                    district,
                    audience: vec![person_id],
                    school: None,
                    school_inbox: None,
                    from_school: None,
                    role: None,
                    notice: Notice::RolesChanged(RolesNotice { at, position }),
                }))
            }
            Event::ConversationStarted(e) => {
                self.memory()
                    .audiences
                    .insert((district, e.conversation_id), Audience::of(&e));
                Ok(None)
            }
            Event::MessagePosted(e) => {
                let audience = self
                    .audience(&district, e.conversation_id, &recorded.stream)
                    .await?;
                {
                    let mut memory = self.memory();
                    memory.authors.insert(
                        (district.clone(), e.conversation_id, e.message_id),
                        e.author_id,
                    );
                    for delivery in &e.deliveries {
                        let owner = Owner {
                            author: e.author_id,
                            school: audience.school,
                            conversation_id: e.conversation_id,
                            message_id: e.message_id,
                            recipient_id: delivery.recipient_id,
                        };
                        memory
                            .owners
                            .insert((district.clone(), delivery.delivery_id), owner);
                    }
                }
                Ok(Some(Routed {
                    district,
                    audience: audience.participants.to_vec(),
                    school: audience.school,
                    school_inbox: audience.school_inbox,
                    from_school: audience
                        .school
                        .filter(|_| e.sent_as == homeroom_domain::SendAs::School),
                    role: None,
                    notice: Notice::Message(MessageNotice {
                        conversation_id: e.conversation_id,
                        message_id: e.message_id,
                        author_id: e.author_id,
                        sent_at: e.at,
                        position,
                    }),
                }))
            }
            Event::DeliveryQueued(e) => {
                // A fallback delivery carries the same message under a new id.
                let mut memory = self.memory();
                let key = (district.clone(), e.conversation_id, e.message_id);
                let author = memory.authors.get(&key).copied();
                let school = memory
                    .audiences
                    .get(&(district.clone(), e.conversation_id))
                    .map(|a| a.school);
                // What is not remembered is read from the streams when needed.
                if let (Some(author), Some(school)) = (author, school) {
                    let owner = Owner {
                        author,
                        school,
                        conversation_id: e.conversation_id,
                        message_id: e.message_id,
                        recipient_id: e.delivery.recipient_id,
                    };
                    memory
                        .owners
                        .insert((district, e.delivery.delivery_id), owner);
                }
                Ok(None)
            }
            Event::DeliverySent(e) => {
                self.delivery(district, e.delivery_id, LiveStatus::Sent, e.at, recorded)
                    .await
            }
            Event::DeliveryDelivered(e) => {
                self.delivery(
                    district,
                    e.delivery_id,
                    LiveStatus::Delivered,
                    e.at,
                    recorded,
                )
                .await
            }
            Event::DeliveryFailed(e) => {
                self.delivery(district, e.delivery_id, LiveStatus::Failed, e.at, recorded)
                    .await
            }
            _ => Ok(None),
        }
    }

    async fn delivery(
        &self,
        district: String,
        delivery_id: DeliveryId,
        status: LiveStatus,
        at: DateTime<Utc>,
        recorded: &RecordedEvent,
    ) -> Result<Option<Routed>, LiveError> {
        let Some(owner) = self.owner(&district, delivery_id, &recorded.stream).await? else {
            return Ok(None);
        };
        Ok(Some(Routed {
            district,
            audience: vec![owner.author],
            school: owner.school,
            school_inbox: None,
            from_school: None,
            role: None,
            notice: Notice::Delivery(DeliveryNotice {
                conversation_id: owner.conversation_id,
                message_id: owner.message_id,
                delivery_id,
                recipient_id: owner.recipient_id,
                status,
                at,
                position: recorded.position,
            }),
        }))
    }

    /// Who hears of a conversation's messages: remembered, else from its first event.
    async fn audience(
        &self,
        district: &str,
        conversation_id: ConversationId,
        stream: &StreamId,
    ) -> Result<Audience, LiveError> {
        let key = (district.to_owned(), conversation_id);
        if let Some(known) = self.memory().audiences.get(&key) {
            return Ok(known.clone());
        }
        let first = self.store.read_stream(stream, 0, 1).await?;
        let audience = match first.first().and_then(readable) {
            Some(Event::ConversationStarted(e)) => Audience::of(&e),
            _ => Audience {
                participants: Arc::from(Vec::new()),
                school: None,
                school_inbox: None,
            },
        };
        self.memory().audiences.insert(key, audience.clone());
        Ok(audience)
    }

    /// Whose message a delivery carries: remembered, else from the delivery's first
    /// event and the conversation's `message_posted`. `None` when the streams do not
    /// say (a delivery never queued).
    async fn owner(
        &self,
        district: &str,
        delivery_id: DeliveryId,
        stream: &StreamId,
    ) -> Result<Option<Owner>, LiveError> {
        let key = (district.to_owned(), delivery_id);
        if let Some(known) = self.memory().owners.get(&key) {
            return Ok(Some(*known));
        }
        let first = self.store.read_stream(stream, 0, 1).await?;
        let Some(Event::DeliveryQueued(queued)) = first.first().and_then(readable) else {
            return Ok(None);
        };
        let Some(author) = self
            .author(district, queued.conversation_id, queued.message_id)
            .await?
        else {
            return Ok(None);
        };
        let Ok(tenant) = DistrictId::parse(district) else {
            return Ok(None);
        };
        let conversation = stream_id(&StreamRef::Conversation(queued.conversation_id), &tenant)
            .map_err(LiveError::Stream)?;
        let school = self
            .audience(district, queued.conversation_id, &conversation)
            .await?
            .school;
        let owner = Owner {
            author,
            school,
            conversation_id: queued.conversation_id,
            message_id: queued.message_id,
            recipient_id: queued.delivery.recipient_id,
        };
        self.memory().owners.insert(key, owner);
        Ok(Some(owner))
    }

    /// Who wrote a message: remembered, else from its conversation's stream.
    async fn author(
        &self,
        district: &str,
        conversation_id: ConversationId,
        message_id: MessageId,
    ) -> Result<Option<PersonId>, LiveError> {
        let key = (district.to_owned(), conversation_id, message_id);
        if let Some(known) = self.memory().authors.get(&key) {
            return Ok(Some(*known));
        }
        let Ok(tenant) = DistrictId::parse(district) else {
            return Ok(None);
        };
        let stream = stream_id(&StreamRef::Conversation(conversation_id), &tenant)
            .map_err(LiveError::Stream)?;
        let mut after_version = 0;
        loop {
            let page = self.store.read_stream(&stream, after_version, PAGE).await?;
            for recorded in &page {
                after_version = recorded.version;
                if recorded.event_type != "message_posted" {
                    continue;
                }
                if let Some(Event::MessagePosted(e)) = readable(recorded) {
                    if e.message_id == message_id {
                        self.memory().authors.insert(key, e.author_id);
                        return Ok(Some(e.author_id));
                    }
                }
            }
            if page.len() < PAGE {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// Whether `position` cannot have come from a log whose head is `head`: beyond it, or
/// in the other shape (a commit component where the log has none, or none where it
/// has one).
fn is_foreign(position: Position, head: Position) -> bool {
    !position.same_shape_as(head) || position > head
}
