//! The projector contract: a pure fold over the log, written as idempotent SQL into one
//! generation of its own tables.

use crate::db::{Engine, Tx};
use crate::error::ProjectionError;
use async_trait::async_trait;
use homeroom_domain::events::MessagePosted;
use homeroom_domain::Event;
use homeroom_eventstore::RecordedEvent;
use std::sync::{Arc, Mutex};

/// One build of a projector's tables. Generation `n` of table `messages` is
/// `messages_g{n}`: a rebuild fills a new generation while the old one keeps answering
/// queries, then the runtime switches which generation is served in one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(u64);

impl Generation {
    /// The generation numbered `n` (the first build of a projector is 1).
    pub const fn new(n: u64) -> Self {
        Self(n)
    }

    /// Its number, as stored in `projection_generations`.
    pub fn number(self) -> u64 {
        self.0
    }

    /// What its tables' names end with (`_g3`).
    pub fn suffix(self) -> String {
        format!("_g{}", self.0)
    }
}

/// A recorded event with its decoded domain event: decoded once per batch and shared
/// by every projector.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The event as stored (position, metadata, hash).
    pub recorded: RecordedEvent,
    /// What it says.
    pub event: Event,
    /// `recorded.data` as JSON text, as the audit trail stores it. Written where the
    /// event is decoded, which in catch-up is the read-ahead task, so the batch being
    /// written does not wait for it.
    pub data_json: String,
}

impl Envelope {
    /// `recorded` and the event it decoded to.
    pub fn new(recorded: RecordedEvent, event: Event) -> Self {
        let data_json = recorded.data.to_string();
        Self {
            recorded,
            event,
            data_json,
        }
    }
}

/// A piece of a batch, as projectors that write messages in bulk take it.
pub(crate) enum Run<'a> {
    /// Consecutive `MessagePosted` events (never empty), each with its record.
    Messages(Vec<(&'a RecordedEvent, &'a MessagePosted)>),
    /// Any other event, folded on its own.
    Other(&'a Envelope),
}

/// Cuts `events` into the longest runs of consecutive `MessagePosted` events and single
/// other events, in log order, so a message is never folded before the event that
/// started its conversation, nor an outcome before its plan.
pub(crate) fn message_runs(events: &[Envelope]) -> impl Iterator<Item = Run<'_>> {
    let mut rest = events;
    std::iter::from_fn(move || {
        let first = rest.first()?;
        let posts: Vec<_> = rest
            .iter()
            .map_while(|e| match &e.event {
                Event::MessagePosted(posted) => Some((&e.recorded, posted)),
                _ => None,
            })
            .collect();
        if posts.is_empty() {
            rest = &rest[1..];
            Some(Run::Other(first))
        } else {
            rest = &rest[posts.len()..];
            Some(Run::Messages(posts))
        }
    })
}

/// One step of [`Projector::bridge_from`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bridge {
    /// `ALTER TABLE table ADD COLUMN column definition`, unless the column is there.
    AddColumn {
        /// The rendered table name.
        table: String,
        /// The column.
        column: &'static str,
        /// Its type and default, rendered (`BIGINT NOT NULL DEFAULT 0`).
        definition: String,
    },
    /// A statement safe to run again (`CREATE TABLE IF NOT EXISTS …`, an `UPDATE`).
    Run(String),
}

/// A read model's builder.
///
/// A projector owns a few tables (named in [`Projector::tables`], created per
/// generation by [`Projector::schema`]) and folds events into them. It is written once
/// for both engines against [`crate::db`]: statements from [`crate::db::query`],
/// rendered for [`Tx::engine`] with [`render_for`]. The runtime calls
/// [`Projector::apply_batch`] inside a transaction that also moves the projector's
/// checkpoint, so a batch is applied exactly once or not at all. Writes should still be
/// idempotent upserts, so that a projector is easy to reason about and to test.
///
/// Bump [`Projector::version`] whenever the fold or the tables change: on start the
/// runtime rebuilds every projector whose serving generation was built by another
/// version, blue/green, while the old generation keeps answering queries.
#[async_trait]
pub trait Projector: Send + Sync + 'static {
    /// Unique, stable name: it keys checkpoints and generations, and queries refer to
    /// table suffixes by it (`messages{conversations}`).
    fn name(&self) -> &'static str;

    /// The version of the fold and of the tables.
    fn version(&self) -> u32;

    /// Base names of the tables it owns, so a retired generation can be dropped.
    fn tables(&self) -> &'static [&'static str];

    /// The statements creating one generation of its tables and indexes on `engine`.
    fn schema(&self, engine: Engine, generation: Generation) -> Vec<String>;

    /// What lets this version's queries read `generation`, which version `built_by`
    /// (older) built, while the rebuild on start replaces it: the columns and tables
    /// added since, with values that keep what that generation meant. Without it the
    /// old generation answers queries no better than nothing (a missing column) until
    /// the switch. Run on every start until the switch; each step is safe to run again.
    /// None by default.
    fn bridge_from(&self, _engine: Engine, _generation: Generation, _built_by: u32) -> Vec<Bridge> {
        Vec::new()
    }

    /// Folds one event into `generation` of its tables. Events it does not care about
    /// are `Ok(())`.
    ///
    /// # Errors
    /// [`ProjectionError`] when the database fails or the event does not fit what the
    /// tables hold; the runtime rolls the batch back, retries, and eventually parks the
    /// projector at this event. Never `unwrap()` here.
    async fn apply(
        &self,
        tx: &mut Tx<'_>,
        generation: Generation,
        recorded: &RecordedEvent,
        event: &Event,
    ) -> Result<(), ProjectionError>;

    /// Folds a run of consecutive events. The default applies them one by one;
    /// projectors that can write many rows per statement override it.
    ///
    /// # Errors
    /// As [`Projector::apply`].
    async fn apply_batch(
        &self,
        tx: &mut Tx<'_>,
        generation: Generation,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        for envelope in events {
            self.apply(tx, generation, &envelope.recorded, &envelope.event)
                .await?;
        }
        Ok(())
    }
}

/// A projector's SQL statements rendered for one engine and generation, kept so the
/// apply path formats no strings per event (and the engines reuse their prepared
/// statements, which are cached by text). Holds the last few generations: during a
/// rebuild two are written.
#[derive(Debug)]
pub struct PerGeneration<T> {
    slots: Mutex<Vec<Slot<T>>>,
}

/// One cached value and what it was rendered for.
type Slot<T> = ((Engine, Generation), Arc<T>);

impl<T> Default for PerGeneration<T> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(Vec::new()),
        }
    }
}

impl<T> PerGeneration<T> {
    const KEEP: usize = 4;

    /// The value for `engine` and `generation`, made by `make` the first time.
    pub fn get(
        &self,
        engine: Engine,
        generation: Generation,
        make: impl FnOnce(Engine, Generation) -> T,
    ) -> Arc<T> {
        let key = (engine, generation);
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, value)) = slots.iter().find(|(k, _)| *k == key) {
            return value.clone();
        }
        let value = Arc::new(make(engine, generation));
        if slots.len() >= Self::KEEP {
            slots.remove(0);
        }
        slots.push((key, value.clone()));
        value
    }
}

/// Renders a projector's own SQL template for `engine` and `generation`: `{name}` (the
/// projector's name) becomes the generation's table suffix, engine spellings are
/// filled in ([`Engine::render`]).
pub fn render_for(engine: Engine, template: &str, name: &str, generation: Generation) -> String {
    engine.render(template, |n| (n == name).then_some(generation))
}
