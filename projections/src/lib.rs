//! Homeroom's read side: the projector runtime and every read model.
//!
//! A tour:
//!
//! - [`Projector`] ([`projector`]): a read model's builder, a pure fold over the log
//!   written as idempotent SQL into one [`Generation`] of its tables. [`models::all`]
//!   gives the built-in ones: `directory` (people, guardian links), `conversations`
//!   (conversations, participants and per-person state, messages), `deliveries`
//!   (per-recipient channel and status) and `audit` (every event with its metadata and
//!   hash). Every table is keyed by district.
//! - [`ProjectionRuntime`] ([`runtime`]): follows [`EventSubscriber::subscribe_all`]
//!   from each projector's checkpoint, applies events in batches, and commits each
//!   batch together with the checkpoint it reached in one read-model transaction: a
//!   crash never applies an event twice or skips one. Catch-up then live;
//!   [`ProjectionRuntime::wait_for`] for `?min_position`; [`ProjectionRuntime::status`]
//!   for lag and health; failures are retried with backoff or park one projector at
//!   the event it cannot apply.
//! - Blue/green [`ProjectionRuntime::rebuild`]: builds new generations (tables
//!   `…_g{n}`) while the old ones keep answering, then switches in one transaction;
//!   bumping a projector's [`Projector::version`] rebuilds it on start.
//! - [`ReadModels`] ([`queries`]): the queries behind API.md's views, parameterised by
//!   what to show (inboxes, threads, exports, a student's record, oversight, audit,
//!   deliveries), returning serde structs with API.md's field names. Who may see what
//!   is decided by the query layer in `crates/app`.
//! - [`ReadDb`] ([`db`]): the read-model database on SQLite (WAL, its own file,
//!   `<data-dir>/read.sqlite`, [`ReadDb::open`]) or PostgreSQL (a schema per instance,
//!   [`ReadDb::connect_postgres`]). Projectors and queries are written once against
//!   [`db`]'s engine-neutral statements, rows and templates; what only one engine needs
//!   lives in [`sqlite`] and [`postgres`] (write locks, snapshots, types, and on
//!   PostgreSQL the lease that lets one process of many apply the log:
//!   [`ProjectionRuntime::lease`], [`LeaseState`]).
//! - [`codec::decode`]: stored events into domain events, as the app's codec does.
//!
//! Wiring it up:
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn homeroom_eventstore::EventStore>) -> Result<(), Box<dyn std::error::Error>> {
//! use homeroom_projections::{models, ProjectionRuntime, ReadDb, RuntimeConfig};
//! let db = ReadDb::open(&ReadDb::default_path("./homeroom-data".as_ref())).await?;
//! // or, for a server deployment: ReadDb::connect_postgres("postgres://…", "homeroom_read").await?
//! let runtime = ProjectionRuntime::open(store, db, models::all(), RuntimeConfig::default()).await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let live = tokio::spawn({
//!     let runtime = runtime.clone();
//!     async move { runtime.run(async { let _ = stopped.await; }).await }
//! });
//! let read_models = runtime.read_models();
//! // … serve queries with `read_models`, `runtime.wait_for(position, timeout)` …
//! let _ = stop.send(());
//! live.await??;
//! # Ok(()) }
//! ```
//!
//! [`EventSubscriber::subscribe_all`]: homeroom_eventstore::EventSubscriber::subscribe_all

pub mod codec;
pub mod db;
mod error;
pub mod models;
pub mod postgres;
pub mod projector;
pub mod queries;
pub mod runtime;
pub mod search;
pub mod sqlite;

#[cfg(test)]
mod tests;

pub use db::{Engine, ReadDb};
pub use error::{ProjectionError, QueryError, WaitError};
pub use postgres::PgReadConfig;
pub use projector::{Bridge, Envelope, Generation, Projector};
pub use queries::ReadModels;
pub use runtime::{
    BuildingStatus, Health, LeaseState, ProjectionRuntime, ProjectorStatus, RebuildPhase,
    RebuildProgress, RebuildReport, RebuildTarget, RebuiltProjector, RetryPolicy, RuntimeConfig,
    DEFAULT_BATCH, SQLITE_BATCH,
};
