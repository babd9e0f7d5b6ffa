-- The event log of one Homeroom store: the whole log in one table.

CREATE TABLE events (
    -- The global sequence, and the delivery order: the store has one writer, so rows
    -- are inserted in commit order and `read_all` by position never skips one.
    -- AUTOINCREMENT: a position is never reused, even by an aborted transaction.
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT    NOT NULL,
    stream         TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    -- The JSON text serde_json wrote: read back, it is the value that was hashed.
    data           TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    -- Copied from metadata.command_id so `find_command` is an index lookup.
    command_id     TEXT    NOT NULL,
    -- RFC 3339, UTC, microseconds: exactly what the hash covers.
    recorded_at    TEXT    NOT NULL,
    prev_hash      TEXT    NOT NULL,
    hash           TEXT    NOT NULL,
    -- The last version written by the same append, so an idempotent re-append can
    -- rebuild the original result from the batch's first event.
    batch_end      INTEGER NOT NULL,
    CONSTRAINT events_event_id UNIQUE (event_id),
    CONSTRAINT events_stream_version UNIQUE (stream, version),
    CONSTRAINT events_version_positive CHECK (version > 0 AND batch_end >= version)
);

CREATE INDEX events_command_id ON events (command_id);

-- Events are never updated or deleted by the application. Whoever can drop these
-- triggers can tamper; the hash chain is what detects it.
CREATE TRIGGER events_are_never_updated BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: UPDATE refused');
END;

CREATE TRIGGER events_are_never_deleted BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: DELETE refused');
END;
