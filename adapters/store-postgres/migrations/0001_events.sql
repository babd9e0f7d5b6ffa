-- The event log of one Homeroom store. Unqualified names: the store runs its
-- migrations with `search_path` set to its own schema, so every object (and sqlx's
-- `_sqlx_migrations` bookkeeping table) lands there.

CREATE TABLE events (
    -- Global insert sequence. Not in commit order on its own: delivery order is
    -- (tx_id, seq), read only below the snapshot xmin (see the crate docs).
    seq            bigint GENERATED ALWAYS AS IDENTITY,
    -- The writing transaction's top-level id (xid8 never wraps around).
    tx_id          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id       uuid NOT NULL,
    stream         text NOT NULL,
    version        bigint NOT NULL,
    event_type     text NOT NULL,
    schema_version bigint NOT NULL,
    -- `json`, not `jsonb`: the exact text written is read back, so the hash recomputed
    -- from a stored row is the hash computed at append time (jsonb would rewrite
    -- numbers such as 1e19 and refuses \u0000).
    data           json NOT NULL,
    metadata       json NOT NULL,
    -- Copied from metadata.command_id so `find_command` is an index lookup.
    command_id     uuid NOT NULL,
    recorded_at    timestamptz NOT NULL,
    prev_hash      text NOT NULL,
    hash           text NOT NULL,
    -- The last version written by the same append, so an idempotent re-append can
    -- rebuild the original result from the batch's first event.
    batch_end      bigint NOT NULL,
    CONSTRAINT events_delivery_order PRIMARY KEY (tx_id, seq),
    CONSTRAINT events_stream_version UNIQUE (stream, version),
    CONSTRAINT events_event_id UNIQUE (event_id),
    CONSTRAINT events_version_positive CHECK (version > 0 AND batch_end >= version)
);

CREATE INDEX events_command_id ON events (command_id);

-- Events are never updated or deleted by the application. Whoever can disable this
-- trigger can tamper; the hash chain is what detects it.
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();
