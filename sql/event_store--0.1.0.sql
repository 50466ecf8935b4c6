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
LANGUAGE c STABLE PARALLEL SAFE ROWS 100
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
