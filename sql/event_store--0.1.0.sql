/* event_store--0.1.0.sql: the event log */

\echo Use "CREATE EXTENSION event_store" to load this file. \quit

-- Every name below is schema-qualified; the script creates nothing outside
-- the schema event_store, which CREATE EXTENSION creates and the extension owns.

-- The event log.  One row per event, never updated, deleted or truncated.
-- Identifiers use the "C" collation: byte order, fast, the same everywhere.
CREATE TABLE event_store.events (
    stream_id      text        COLLATE "C" NOT NULL,
    stream_version bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    event_type     text        COLLATE "C" NOT NULL,
    schema_version integer     NOT NULL,
    data           jsonb       NOT NULL,
    metadata       jsonb       NOT NULL,
    recorded_at    timestamptz NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

COMMENT ON TABLE event_store.events IS
    'The event log: one row per event, append-only. Write with event_store.append(), event_store.append_events() or INSERT.';

-- pg_dump keeps the events.  The filter orders the dump by stream and
-- version, so that a restore replays every stream in order through the
-- versioning trigger (physical order is not version order once vacuum has
-- reused the space of rolled-back appends).
SELECT pg_catalog.pg_extension_config_dump('event_store.events',
                                           'WHERE true ORDER BY stream_id, stream_version');

-- What every read function returns and every handler gets.
CREATE TYPE event_store.event AS (
    global_position bigint,
    stream_id       text COLLATE "C",
    stream_version  bigint,
    event_id        uuid,
    event_type      text COLLATE "C",
    schema_version  integer,
    data            jsonb,
    metadata        jsonb,
    recorded_at     timestamptz
);

-- Stream versioning, expected-version check and idempotency (src/versioning.c).
CREATE FUNCTION event_store._version_events() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'event_store_version_events';

CREATE TRIGGER version_events BEFORE INSERT ON event_store.events
    FOR EACH ROW EXECUTE FUNCTION event_store._version_events();

-- The append-only guard: statement-level, so it refuses even a statement that matches no row.
CREATE FUNCTION event_store._refuse_change() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'event_store_refuse_change';

CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON event_store.events
    FOR EACH STATEMENT EXECUTE FUNCTION event_store._refuse_change();

CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON event_store.events
    FOR EACH STATEMENT EXECUTE FUNCTION event_store._refuse_change();

-- Fire also under session_replication_role = replica.
ALTER TABLE event_store.events ENABLE ALWAYS TRIGGER version_events;
ALTER TABLE event_store.events ENABLE ALWAYS TRIGGER append_only;
ALTER TABLE event_store.events ENABLE ALWAYS TRIGGER append_only_truncate;

-- Streams: one row per stream, derived from the log (no write on the append path).
-- A loose index scan over the primary key visits each stream once.
CREATE VIEW event_store.streams WITH (security_invoker = true) AS
WITH RECURSIVE ids(stream_id) AS (
    (SELECT e.stream_id FROM event_store.events e ORDER BY e.stream_id LIMIT 1)
    UNION ALL
    SELECT (SELECT e.stream_id FROM event_store.events e
             WHERE e.stream_id OPERATOR(pg_catalog.>) ids.stream_id
             ORDER BY e.stream_id LIMIT 1)
      FROM ids
     WHERE ids.stream_id IS NOT NULL
)
SELECT ids.stream_id,
       pg_catalog.split_part(ids.stream_id, '-', 1) AS category,
       head.stream_version AS version,
       first.recorded_at AS created_at,
       head.recorded_at AS updated_at
  FROM ids
  CROSS JOIN LATERAL (SELECT e.stream_version, e.recorded_at FROM event_store.events e
                       WHERE e.stream_id OPERATOR(pg_catalog.=) ids.stream_id
                       ORDER BY e.stream_version DESC LIMIT 1) head
  CROSS JOIN LATERAL (SELECT e.recorded_at FROM event_store.events e
                       WHERE e.stream_id OPERATOR(pg_catalog.=) ids.stream_id
                         AND e.stream_version OPERATOR(pg_catalog.=) 1) first
 WHERE ids.stream_id IS NOT NULL;

COMMENT ON VIEW event_store.streams IS
    'One row per stream: its category (the part of the id before the first "-"), version and times.';

-- Write side
CREATE FUNCTION event_store.append(
    stream_id text,
    event_type text,
    data jsonb,
    metadata jsonb DEFAULT NULL,
    expected_version bigint DEFAULT NULL,
    event_id uuid DEFAULT NULL,
    schema_version integer DEFAULT NULL)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_append';

CREATE FUNCTION event_store.append_events(
    stream_id text,
    events jsonb,
    expected_version bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_append_events';

-- Read side
CREATE FUNCTION event_store.read_stream(
    stream_id text,
    from_version bigint DEFAULT NULL,
    max_count integer DEFAULT NULL,
    backwards boolean DEFAULT false,
    as_of timestamptz DEFAULT NULL)
RETURNS SETOF event_store.event
LANGUAGE c STABLE PARALLEL RESTRICTED ROWS 100
AS 'MODULE_PATHNAME', 'event_store_read_stream';

CREATE FUNCTION event_store.stream_version(stream_id text)
RETURNS bigint
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'event_store_stream_version';

-- Least privilege: nobody but the owner may call anything until granted
-- (README.md, "Security" shows the writer, reader and admin roles).
REVOKE ALL ON FUNCTION event_store.append(text, text, jsonb, jsonb, bigint, uuid, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.append_events(text, jsonb, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.read_stream(text, bigint, integer, boolean, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.stream_version(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store._version_events() FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store._refuse_change() FROM PUBLIC;

-- Schema evolution (src/upcast.c) -------------------------------------------

-- The upcaster registry: the step from schema_version n to n + 1 of an event
-- type, optionally renaming it.  Read like a catalog (also from inside logical
-- decoding, hence user_catalog_table); change it only with add_upcaster() and
-- drop_upcaster(), which keep chains free of holes and tell every backend.
-- The upcaster is stored by its schema-qualified signature, not its OID, so
-- that the registry survives pg_dump and pg_upgrade (which refuses reg*
-- columns in user tables).
CREATE TABLE event_store.upcasters (
    event_type          text COLLATE "C" NOT NULL,
    from_schema_version integer NOT NULL CHECK (from_schema_version OPERATOR(pg_catalog.>=) 1),
    upcaster            text NOT NULL,
    to_event_type       text COLLATE "C",
    PRIMARY KEY (event_type, from_schema_version)
) WITH (user_catalog_table = true);

SELECT pg_catalog.pg_extension_config_dump('event_store.upcasters', '');

CREATE FUNCTION event_store.add_upcaster(
    event_type text,
    from_schema_version integer,
    upcaster regprocedure,
    to_event_type text DEFAULT NULL)
RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'event_store_add_upcaster';

CREATE FUNCTION event_store.drop_upcaster(event_type text, from_schema_version integer)
RETURNS boolean
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'event_store_drop_upcaster';

CREATE FUNCTION event_store.current_schema_version(event_type text)
RETURNS integer
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'event_store_current_schema_version';

-- Every type that has upcasters (or is renamed into), its current version and its chain.
CREATE VIEW event_store.event_schemas WITH (security_invoker = true) AS
WITH types(event_type) AS (
    SELECT u.event_type FROM event_store.upcasters u
    UNION
    SELECT u.to_event_type FROM event_store.upcasters u WHERE u.to_event_type IS NOT NULL
)
SELECT t.event_type,
       event_store.current_schema_version(t.event_type) AS current_version,
       ARRAY(SELECT pg_catalog.format('%s -> %s%s: %s', u.from_schema_version,
                                      u.from_schema_version OPERATOR(pg_catalog.+) 1,
                                      CASE WHEN u.to_event_type IS NOT NULL
                                           THEN pg_catalog.format(' as %s', u.to_event_type) ELSE '' END,
                                      coalesce(pg_catalog.to_regprocedure(u.upcaster)::pg_catalog.text,
                                               u.upcaster OPERATOR(pg_catalog.||) ' (missing)'))
               FROM event_store.upcasters u
              WHERE u.event_type OPERATOR(pg_catalog.=) t.event_type
              ORDER BY u.from_schema_version) AS steps
  FROM types t;

REVOKE ALL ON FUNCTION event_store.add_upcaster(text, integer, regprocedure, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.drop_upcaster(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.current_schema_version(text) FROM PUBLIC;

-- Aggregates and snapshots (src/aggregate.c, src/snapshot.c) and command
-- handling (src/command.c).

-- The registry.  The reducer is stored by its schema-qualified signature, not
-- its OID, so that a definition survives pg_dump and pg_upgrade (which
-- refuses reg* columns in user tables).  Every redefinition bumps the
-- generation; only snapshots of the current generation are used.
CREATE TABLE event_store.aggregates (
    name           text        COLLATE "C" NOT NULL,
    reducer        text        NOT NULL,
    initial_state  jsonb       NOT NULL,
    snapshot_every integer,
    generation     bigint      NOT NULL,
    defined_at     timestamptz NOT NULL,
    CONSTRAINT aggregates_pkey PRIMARY KEY (name),
    CONSTRAINT aggregates_snapshot_every_check CHECK (snapshot_every OPERATOR(pg_catalog.>=) 0),
    CONSTRAINT aggregates_generation_check CHECK (generation OPERATOR(pg_catalog.>=) 1)
);

COMMENT ON TABLE event_store.aggregates IS
    'Aggregates: a reducer folded over a stream''s events. Write with event_store.define_aggregate().';

-- Definitions are configuration: pg_dump keeps them.
SELECT pg_catalog.pg_extension_config_dump('event_store.aggregates', '');

-- Snapshots: an aggregate's state after the first `version` events of a
-- stream, computed under `generation` from events upcast by the registry
-- whose fingerprint is `upcasters` (0: no upcasters).  Only snapshots of the
-- current generation and registry are used, so neither a redefinition nor a
-- new upcaster can mix with state built from older code or shapes.  Derived
-- data, deletable at any time, and not dumped (a restore rebuilds them on the
-- first loads).  One backward probe of either index finds the newest valid
-- snapshot at or before a version (the primary key) or a time
-- (snapshots_time_idx).
CREATE TABLE event_store.snapshots (
    stream_id   text        COLLATE "C" NOT NULL,
    aggregate   text        COLLATE "C" NOT NULL,
    generation  bigint      NOT NULL,
    upcasters   bigint      NOT NULL DEFAULT 0,
    version     bigint      NOT NULL,
    state       jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT snapshots_pkey PRIMARY KEY (stream_id, aggregate, generation, upcasters, version),
    CONSTRAINT snapshots_aggregate_fkey FOREIGN KEY (aggregate)
        REFERENCES event_store.aggregates (name) ON DELETE CASCADE,
    CONSTRAINT snapshots_version_check CHECK (version OPERATOR(pg_catalog.>=) 1)
);

CREATE INDEX snapshots_time_idx ON event_store.snapshots
    (stream_id, aggregate, generation, upcasters, recorded_at, version);

COMMENT ON TABLE event_store.snapshots IS
    'Snapshots of aggregates (derived data: deleting rows changes no result). Written by event_store.load_aggregate() and event_store.save_snapshot().';

CREATE FUNCTION event_store.define_aggregate(
    name text,
    reducer regprocedure,
    initial_state jsonb DEFAULT '{}',
    snapshot_every integer DEFAULT NULL)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_define_aggregate';

CREATE FUNCTION event_store.load_aggregate(
    stream_id text,
    aggregate text,
    as_of timestamptz DEFAULT NULL,
    at_version bigint DEFAULT NULL)
RETURNS TABLE(version bigint, state jsonb)
LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 1
AS 'MODULE_PATHNAME', 'event_store_load_aggregate';

CREATE FUNCTION event_store.save_snapshot(
    stream_id text,
    aggregate text,
    version bigint,
    state jsonb)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_save_snapshot';

CREATE FUNCTION event_store.load_snapshot(
    stream_id text,
    aggregate text)
RETURNS TABLE(version bigint, state jsonb)
LANGUAGE c STABLE PARALLEL SAFE ROWS 1
AS 'MODULE_PATHNAME', 'event_store_load_snapshot';

CREATE FUNCTION event_store.delete_snapshots(
    stream_id text DEFAULT NULL,
    aggregate text DEFAULT NULL)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_delete_snapshots';

CREATE FUNCTION event_store.execute(
    stream_id text,
    aggregate text,
    decider regprocedure,
    command jsonb)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_execute';

REVOKE ALL ON FUNCTION event_store.define_aggregate(text, regprocedure, jsonb, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.load_aggregate(text, text, timestamptz, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.save_snapshot(text, text, bigint, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.load_snapshot(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.delete_snapshots(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.execute(text, text, regprocedure, jsonb) FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Personal data: per-subject encryption and crypto-shredding (src/crypto.c)
-- ---------------------------------------------------------------------------

-- Rules: for an event type, where the subject is and which fields are encrypted.
CREATE TABLE event_store.protected_types (
    event_type text        COLLATE "C" PRIMARY KEY,
    subject    text        NOT NULL,
    fields     text[]      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE event_store.protected_types IS
    'Personal-data rules set by event_store.protect(): subject path and encrypted fields per event type.';

-- Subject keys: 64 random bytes each, wrapped by the key-encryption key
-- (event_store.key_encryption_key); forget() deletes the row.  Vacuumed
-- promptly so that a forgotten key's dead tuple leaves the heap soon.
CREATE TABLE event_store.subject_keys (
    key_id      uuid        PRIMARY KEY,
    subject     text        COLLATE "C" NOT NULL UNIQUE,
    wrapped_key bytea       NOT NULL,
    kek_id      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
) WITH (autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0,
        autovacuum_vacuum_cost_delay = 0, toast.autovacuum_vacuum_threshold = 0,
        toast.autovacuum_vacuum_scale_factor = 0);
COMMENT ON TABLE event_store.subject_keys IS
    'One key per data subject, wrapped by the key-encryption key. Deleted by event_store.forget().';

-- Tombstones: the SHA-256 of every forgotten subject, so that no new key is made for it.
CREATE TABLE event_store.forgotten_subjects (
    subject_hash bytea       PRIMARY KEY,
    forgotten_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE event_store.forgotten_subjects IS
    'SHA-256 of each subject erased by event_store.forget(); appends about them are refused.';

SELECT pg_catalog.pg_extension_config_dump('event_store.protected_types', '');
SELECT pg_catalog.pg_extension_config_dump('event_store.subject_keys', '');
SELECT pg_catalog.pg_extension_config_dump('event_store.forgotten_subjects', '');

-- Which streams hold a subject's protected events: the key id of each
-- protected event, indexed (only protected events have an entry).
CREATE INDEX events_protected_key ON event_store.events
    (((metadata OPERATOR(pg_catalog.->) 'protected') OPERATOR(pg_catalog.->>) 'key'))
    WHERE metadata OPERATOR(pg_catalog.?) 'protected';

CREATE FUNCTION event_store.protect(event_type text, subject text, fields text[])
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_protect';

CREATE FUNCTION event_store.forget(subject text)
RETURNS boolean
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_forget';

CREATE FUNCTION event_store.rewrap_keys()
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_rewrap_keys';

-- EXECUTE on this function is the right to read protected fields in clear.
CREATE FUNCTION event_store.personal_data_access()
RETURNS boolean
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'event_store_personal_data_access';

-- The streams holding the subject's protected events (while it has a key).
CREATE FUNCTION event_store.subject_streams(subject text)
RETURNS SETOF text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT DISTINCT e.stream_id
      FROM event_store.subject_keys k
      JOIN event_store.events e
        ON e.metadata OPERATOR(pg_catalog.?) 'protected'
       AND ((e.metadata OPERATOR(pg_catalog.->) 'protected') OPERATOR(pg_catalog.->>) 'key')
           OPERATOR(pg_catalog.=) k.key_id::pg_catalog.text
     WHERE k.subject OPERATOR(pg_catalog.=) $1
     ORDER BY 1
$$;

REVOKE ALL ON TABLE event_store.protected_types, event_store.subject_keys,
                    event_store.forgotten_subjects FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.protect(text, text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.forget(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.rewrap_keys() FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.personal_data_access() FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.subject_streams(text) FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- The decoding pipeline: the commit-ordered global log, publish, health
-- (src/decoder.c, publish.c, shmem.c, launcher.c, worker.c, read_all.c).
-- ---------------------------------------------------------------------------

-- The global log: one row per event, in commit order, written only by the
-- pipeline worker (dense positions 1, 2, 3, ...).  Not dumped: a restored
-- database orders its events again.
CREATE TABLE event_store.global_log (
    global_position bigint      NOT NULL,
    stream_id       text        COLLATE "C" NOT NULL,
    stream_version  bigint      NOT NULL,
    category        text        COLLATE "C" NOT NULL,
    event_type      text        COLLATE "C" NOT NULL,
    commit_lsn      pg_lsn      NOT NULL,
    CONSTRAINT global_log_pkey PRIMARY KEY (global_position),
    CONSTRAINT global_log_event_key UNIQUE (stream_id, stream_version)
);
CREATE INDEX global_log_category_idx ON event_store.global_log (category, global_position);
CREATE INDEX global_log_event_type_idx ON event_store.global_log (event_type, global_position);

COMMENT ON TABLE event_store.global_log IS
    'The global log: the position of every event in commit order, written by the event_store pipeline worker. Read with event_store.read_all().';

CREATE FUNCTION event_store.read_all(
    after_position bigint DEFAULT 0,
    max_count integer DEFAULT 1000,
    categories text[] DEFAULT NULL,
    event_types text[] DEFAULT NULL)
RETURNS SETOF event_store.event
LANGUAGE c STABLE PARALLEL RESTRICTED ROWS 1000
AS 'MODULE_PATHNAME', 'event_store_read_all';

CREATE FUNCTION event_store.wait_for_pipeline(timeout interval DEFAULT '5 s')
RETURNS boolean
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_wait_for_pipeline';

CREATE FUNCTION event_store.publish(topic text, payload jsonb, key text DEFAULT NULL)
RETURNS pg_lsn
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_publish';

CREATE FUNCTION event_store._pipeline_state(
    OUT slot_name text, OUT state text, OUT worker_pid integer, OUT worker_running boolean,
    OUT decoded_lsn pg_lsn, OUT applied_lsn pg_lsn, OUT last_position bigint,
    OUT last_commit_time timestamptz, OUT last_apply_time timestamptz,
    OUT rebuilds bigint, OUT last_error text, OUT caught_up_time timestamptz)
RETURNS record
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_pipeline_state';

-- The pipeline's health, for this database.
CREATE VIEW event_store.pipeline_status AS
SELECT p.slot_name,
       p.state,
       p.worker_running,
       p.worker_pid,
       s.active AS slot_active,
       s.wal_status AS slot_wal_status,
       p.decoded_lsn,
       s.confirmed_flush_lsn AS confirmed_lsn,
       pg_catalog.pg_current_wal_flush_lsn() AS flushed_lsn,
       GREATEST(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_flush_lsn(),
                                                      p.applied_lsn), 0::numeric)::bigint AS backlog_bytes,
       CASE WHEN p.applied_lsn OPERATOR(pg_catalog.>=) pg_catalog.pg_current_wal_flush_lsn()
            THEN '0'::pg_catalog.interval
            ELSE GREATEST(pg_catalog.now() OPERATOR(pg_catalog.-) p.caught_up_time,
                                     '0'::pg_catalog.interval)
       END AS backlog_time,
       p.last_position,
       p.last_commit_time,
       p.last_apply_time,
       p.last_apply_time OPERATOR(pg_catalog.-) p.last_commit_time AS last_lag,
       p.rebuilds,
       p.last_error
  FROM event_store._pipeline_state() p
  LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name OPERATOR(pg_catalog.=) p.slot_name;

COMMENT ON VIEW event_store.pipeline_status IS
    'Health of the decoding pipeline of this database: worker, slot, decoded and confirmed LSN, backlog.';

REVOKE ALL ON TABLE event_store.global_log FROM PUBLIC;
REVOKE ALL ON TABLE event_store.pipeline_status FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.read_all(bigint, integer, text[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.wait_for_pipeline(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.publish(text, jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store._pipeline_state() FROM PUBLIC;
