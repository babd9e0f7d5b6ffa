//! Homeroom's event store on KurrentDB (formerly EventStoreDB), for districts that
//! already run it.
//!
//! [`KurrentStore`] implements the `homeroom-eventstore` ports ([`EventAppender`],
//! [`EventReader`], [`EventSubscriber`]) on the official `kurrentdb` gRPC client and
//! passes the port's conformance kit unchanged (against a real server when
//! `KURRENTDB_URL` is set; see `docs/kurrentdb.md`). A tour:
//!
//! - [`KurrentStore::connect`] takes a `kurrentdb://`, `kurrentdb+discover://`,
//!   `esdb://` or `esdb+discover://` connection string and a [`KurrentConfig`]: a
//!   stream-name prefix (so tests, or several instances, can share one server) and the
//!   stream categories that are Homeroom's ([`HOMEROOM_CATEGORIES`] by default).
//! - `codec`: each Homeroom event is one KurrentDB event in the stream
//!   `{prefix}{stream}`, at revision `version - 1`, with the Homeroom event id as its
//!   id; the data is the event's JSON; the metadata (district, school, actor,
//!   correlation and causation ids, command id and digest), the schema version, the
//!   recorded time and the hash chain (`prev_hash`, `hash`, computed with
//!   [`homeroom_eventstore::hash`]) travel in the event's metadata.
//! - [`position`]: a Homeroom [`Position`] is the `$all` position, `commit` = commit
//!   position and `sequence` = prepare position, ordered the same way; checkpoints are
//!   `$all` positions and go back to the server as such.
//! - `append`: optimistic concurrency on KurrentDB's expected revision. The adapter
//!   reads the stream's head (for the hash chain) and appends expecting exactly that
//!   revision; a refusal is recognised by the client's
//!   [`kurrentdb::Error::WrongExpectedVersion`] *kind* and answered as
//!   [`StoreError::Conflict`] with the actual version.
//! - `index`: KurrentDB has no lookup by event id or command id, so before each append
//!   the adapter writes intents to two small index streams (by the batch's first event
//!   id, and by each command id), believed only when the batch is found where they
//!   point. They make re-appending a stored batch a no-op that returns the original
//!   result, and [`EventReader::find_command`] correct for a command retried right after
//!   its first attempt.
//! - `subscribe`: [`EventSubscriber::subscribe_all`] is a catch-up subscription to
//!   `$all` with a server-side filter on the categories, reopened from the last
//!   delivered position after a dropped connection or "consumer too slow", without a
//!   gap or a duplicate reaching the consumer.
//! - [`simulated`] (feature `testing`): an in-process model of the server's semantics,
//!   on which the same store code runs the conformance kit where no server is reachable;
//!   [`testing`] (feature `testing`): the `KURRENTDB_URL` rule and test harness support.
//!
//! # What the server must allow
//!
//! The store's user reads `$all` (filtered reads, `head`, subscriptions): an admin, or a
//! user granted read on `$all`. Events are appended with the client's size limits: the
//! server's `MaxAppendSize` (1 MiB by default) bounds one batch. KurrentDB 22.10 or later
//! is required (earlier servers do not report `$all` positions on stream reads).
//!
//! [`EventAppender`]: homeroom_eventstore::EventAppender
//! [`EventReader`]: homeroom_eventstore::EventReader
//! [`EventReader::find_command`]: homeroom_eventstore::EventReader::find_command
//! [`EventSubscriber`]: homeroom_eventstore::EventSubscriber
//! [`EventSubscriber::subscribe_all`]: homeroom_eventstore::EventSubscriber::subscribe_all
//! [`Position`]: homeroom_eventstore::Position
//! [`StoreError::Conflict`]: homeroom_eventstore::StoreError::Conflict

mod append;
mod backend;
mod codec;
mod config;
mod error;
mod index;
pub mod position;
mod store;
mod subscribe;

#[cfg(feature = "testing")]
pub mod simulated;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{ConfigError, KurrentConfig, ResubscribePolicy, HOMEROOM_CATEGORIES};
pub use error::{ConnectError, KurrentStoreError};
pub use store::{KurrentStore, SCHEMES};
