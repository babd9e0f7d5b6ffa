//! The event-store port of Homeroom.
//!
//! Every fact Homeroom knows is an immutable event in an append-only log. This crate
//! owns the vocabulary of that log and the contract every backend keeps:
//!
//! - [`StreamId`], [`ExpectedVersion`], [`Position`]: where an event lives and in which
//!   order the whole log is delivered;
//! - [`NewEvent`], [`RecordedEvent`], [`EventMetadata`]: what is written and what comes back;
//! - [`hash`]: the SHA-256 chain that links each event to the previous one of its stream,
//!   so tampering is detectable years later;
//! - the ports, split by role: [`EventAppender`], [`EventReader`], [`EventSubscriber`],
//!   bundled as [`EventStore`];
//! - [`subscription`]: catch-up-then-live subscriptions built once on top of a reader and
//!   a commit signal, so every backend delivers the log the same way;
//! - [`memory::InMemoryStore`]: the reference backend, used by unit tests;
//! - `conformance` (feature `conformance`): the test kit every backend runs unchanged.

mod error;
mod event;
pub mod hash;
pub mod memory;
mod port;
mod position;
mod stream;
pub mod subscription;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::StoreError;
pub use event::{EventMetadata, NewEvent, RecordedEvent};
pub use port::{
    AppendResult, EventAppender, EventReader, EventStore, EventStream, EventSubscriber,
};
pub use position::{BadPositionToken, Position};
pub use stream::{ExpectedVersion, StreamId, StreamIdError};
