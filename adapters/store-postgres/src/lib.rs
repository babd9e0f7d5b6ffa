//! Homeroom's event store on PostgreSQL.
//!
//! [`PgStore`] implements the `homeroom-eventstore` ports ([`EventAppender`],
//! [`EventReader`], [`EventSubscriber`]) on one table, `events`, in a schema of its own
//! (one per store instance, so tests and tenants can sit side by side in one database).
//! [`PgStore::connect`] creates the schema if missing and runs the migrations embedded
//! from `migrations/` with `sqlx::migrate!`, on a connection whose `search_path` is that
//! schema (sqlx's `_sqlx_migrations` table lands there too), under an advisory lock of
//! that schema's own rather than sqlx's one-per-database lock.
//!
//! # Delivery order: why a position is `(transaction id, sequence)`
//!
//! A `bigserial` alone is not a safe checkpoint on PostgreSQL: sequence numbers are
//! handed out when rows are inserted, not when they commit, so a transaction holding
//! sequence 7 may commit after one holding 8. A reader that delivered 8 and remembers
//! "after 8" would never see 7.
//!
//! Each row therefore records `tx_id = pg_current_xact_id()` (an `xid8`, which never
//! wraps) next to its identity `seq`, and the log is delivered in `(tx_id, seq)` order.
//! [`EventReader::read_all`] returns only rows whose `tx_id` is below the reading
//! snapshot's `xmin` (`pg_snapshot_xmin(pg_current_snapshot())`): every transaction
//! below `xmin` has ended, so the set of rows below it is final, and nothing can later
//! appear before a row that was returned. `xmin` only moves forward, so a reader resuming
//! "after `(tx_id, seq)`" never skips an event and never sees one twice. Within one
//! stream delivery order is version order, because an append reads the stream's head
//! *before* its transaction gets an id (see [`PgStore::append_in`] for the rule this puts
//! on callers that bring their own transaction).
//!
//! # Lag caused by long-running transactions
//!
//! `xmin` is the oldest transaction id still running **anywhere in the cluster** (every
//! database, not just this schema), among transactions that hold an id, i.e. that wrote
//! something. While such a transaction stays open, events committed after it got its id
//! are stored, readable with [`EventReader::read_stream`] and
//! [`EventReader::stream_versions`] (so commands stay correct), but not yet delivered by
//! `read_all`, `head` or subscriptions. When it ends, they are delivered at once, in
//! order. Delivery lag is thus bounded by the longest writing transaction in the cluster:
//! keep transactions short, and bound them. This store's own connections set
//! `idle_in_transaction_session_timeout` (60 s by default,
//! [`PgStoreConfig::idle_in_transaction_timeout`]); other applications sharing the
//! cluster should do the same. `pg_stat_activity.backend_xid` shows who holds the
//! horizon back. Meanwhile appends also return later: each waits up to
//! [`PgStoreConfig::deliverable_wait`] for its events to become deliverable (see
//! Appends).
//!
//! # Live delivery
//!
//! Commits are announced with `pg_notify` on a channel named after the schema. A pooled
//! append's notification is sent right after its commit by the store's horizon task
//! (below), one statement covering every commit of the process made before it; an
//! append in the caller's transaction ([`PgStore::append_in`]) sends it inside that
//! transaction, so it is delivered exactly when the caller commits. Not inside a pooled
//! append's own transaction: a transaction that has notified holds a database-wide lock
//! from its commit until its commit record is flushed, so every notifying append would
//! commit alone, one WAL flush after another, and PostgreSQL's group commit could no
//! longer batch concurrent appends (`docs/postgres.md` has the probe). One background
//! task per store `LISTEN`s on the channel and raises a
//! [`homeroom_eventstore::subscription::CommitSignal`];
//! [`EventSubscriber::subscribe_all`] is the port's shared `catch_up_then_live` over that
//! signal. A notification can arrive while an older transaction still holds `xmin` back;
//! if that transaction is an append it notifies when it commits. If it is not (an
//! unrelated writer anywhere in the cluster), the task keeps waking subscribers every
//! [`PgStoreConfig::lag_poll`] for as long as committed events wait above `xmin`, so they
//! are delivered within one poll interval of the horizon moving. Otherwise it checks
//! every [`PgStoreConfig::idle_poll`] whether the deliverable head moved without a
//! notification (an appending process that died between its commit and its
//! notification) and wakes subscribers if so. After a lost `LISTEN` connection it
//! reconnects and wakes everyone, as notifications may have been missed.
//!
//! # Appends
//!
//! No global lock: an append reads the stream's head (version, hash), computes the hash
//! chain with [`homeroom_eventstore::hash::chain_batch`], and inserts the whole batch with
//! one `INSERT … SELECT FROM unnest(…)` statement, which is also its transaction.
//! Writers to different streams proceed in parallel; two writers racing for the same
//! version collide on the `UNIQUE (stream, version)` key (SQLSTATE 23505), and the loser
//! reports [`StoreError::Conflict`] with the version it re-reads (or, for
//! [`ExpectedVersion::Any`], simply tries again). Event ids are unique; a batch whose
//! first event id is already stored in that stream records nothing and returns the
//! original result, rebuilt from the stored batch.
//!
//! The store remembers the head each of its appends left (a bounded map), and the next
//! append to that stream whose expectation that head admits inserts without reading the
//! head first: one round trip fewer for a process that keeps writing the streams it
//! owns. The remembered head is only a hint: versions only grow, so a stale one (another
//! process appended meanwhile) collides on a unique key, and the append then reads the
//! head and decides exactly as without it, conflicts and idempotent re-appends included.
//!
//! Such an append (cached head, expectation admitted) does not even insert alone: its
//! rows join a group of concurrent appends to other streams, inserted by one statement
//! and so committed by one transaction (`group.rs`), which is what lets throughput pass
//! one WAL flush per append. A group that fails sends each member back to appending
//! alone the careful way above.
//!
//! Once committed, an append returns its connection to the pool and waits until its
//! transaction is below the horizon, so when it returns, `read_all` and `head` show its
//! events to every reader (the contract the conformance kit checks: "head follows
//! appends"). The waiting is done for every append of the process at once by one
//! horizon task per store, on a connection of its own: each of its statements sends the
//! pending notification and reads the snapshot's `xmin`, which releases every waiting
//! append below it, so under load many appends share one round trip. It re-reads when
//! another append of the process commits, when another process's notification arrives,
//! and otherwise ever less often (behind a long transaction of someone else). The wait
//! is usually the rest of an older concurrent append; behind an older long transaction
//! it gives up after [`PgStoreConfig::deliverable_wait`] (2 s by default) and returns
//! anyway: the events are recorded and will be delivered when the horizon moves. A
//! deployment that never reads its own writes through `read_all` can set it to zero
//! (the notification is sent all the same). [`PgStore::append_in`] does not wait (the
//! caller commits later).
//!
//! # Moving an embedded instance here
//!
//! [`import::import_log`] copies another store's whole log (an embedded instance's
//! SQLite file, through the reader port) into this store verbatim: same event ids,
//! streams, versions, data, metadata, recorded times and hashes, every chain verified on
//! the way, in the source's order, resumable after a kill. It writes through a dedicated
//! insert path of its own (appends compute hashes and times; an import keeps them), under
//! the same visibility rules and commit notifications as appends.
//!
//! # Test support
//!
//! The `testing` feature adds [`testing`]: service discovery for tests (skip, or fail
//! under `CI=true`, when PostgreSQL is unreachable) and throwaway schemas.
//!
//! [`EventAppender`]: homeroom_eventstore::EventAppender
//! [`EventReader`]: homeroom_eventstore::EventReader
//! [`EventReader::read_all`]: homeroom_eventstore::EventReader::read_all
//! [`EventReader::read_stream`]: homeroom_eventstore::EventReader::read_stream
//! [`EventReader::stream_versions`]: homeroom_eventstore::EventReader::stream_versions
//! [`EventSubscriber`]: homeroom_eventstore::EventSubscriber
//! [`EventSubscriber::subscribe_all`]: homeroom_eventstore::EventSubscriber::subscribe_all
//! [`StoreError::Conflict`]: homeroom_eventstore::StoreError::Conflict
//! [`ExpectedVersion::Any`]: homeroom_eventstore::ExpectedVersion::Any

/// The `ins` step that inserts rows of many streams from twelve parallel arrays (`$1`
/// to `$12`, in the order of the column list) in array order, returning `$returning`:
/// one text for the group commit and the import, so their rows cannot differ.
macro_rules! insert_many_streams {
    ($returning:literal) => {
        concat!(
            "WITH ins AS (
    INSERT INTO events (event_id, stream, version, event_type, schema_version, data, metadata,
                        command_id, recorded_at, prev_hash, hash, batch_end)
    SELECT u.event_id, u.stream, u.version, u.event_type, u.schema_version, u.data::json,
           u.metadata::json, u.command_id, u.recorded_at, u.prev_hash, u.hash, u.batch_end
    FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
                $7::text[], $8::uuid[], $9::timestamptz[], $10::text[], $11::text[], $12::bigint[])
         WITH ORDINALITY AS u(event_id, stream, version, event_type, schema_version, data,
                              metadata, command_id, recorded_at, prev_hash, hash, batch_end, ord)
    ORDER BY u.ord
    RETURNING ",
            $returning,
            "
)
"
        )
    };
}

mod append;
mod error;
mod group;
mod horizon;
pub mod import;
mod listen;
mod read;
mod store;

#[cfg(feature = "testing")]
pub mod testing;

pub use error::{ConnectError, DuplicateEventId, OutOfOrderAppend};
pub use store::{PgStore, PgStoreConfig, SchemaLock};
