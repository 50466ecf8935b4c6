/* event_store--0.1.0--0.2.0.sql: projections (read models) and the fixes of the security review */

\echo Use "ALTER EXTENSION event_store UPDATE TO '0.2.0'" to load this file. \quit

-- CREATE EXTENSION event_store runs event_store--0.1.0.sql and then this
-- script; ALTER EXTENSION event_store UPDATE runs this script alone.  Every
-- name is schema-qualified, as in the install script.

-- ---------------------------------------------------------------------------
-- Review fixes (issue 10)
-- ---------------------------------------------------------------------------

-- ---------------------------------------------------------------------------
-- Projections: read models kept from the global log (src/projection.c)
-- ---------------------------------------------------------------------------

-- The identity of this database's global log: a random id made at install,
-- not dumped.  A projection records the identity of the log its position
-- refers to; a projection restored by pg_dump into another database (whose
-- log numbers the events anew) does not match and is not applied until it
-- is rebuilt.  pg_upgrade and CREATE DATABASE ... TEMPLATE copy the table,
-- and the log with it.
CREATE TABLE event_store.log_identity (
    id uuid NOT NULL
);
INSERT INTO event_store.log_identity (id) VALUES (pg_catalog.gen_random_uuid());
COMMENT ON TABLE event_store.log_identity IS
    'The identity of this database''s global log (projections refer to it); not dumped.';

-- The registry: one row per projection, its definition and its progress.
-- Written only by the projection functions and the projection workers (as
-- the extension's owner).  Handler and reset are stored by their
-- schema-qualified signatures, not OIDs, so that a definition survives
-- pg_dump and pg_upgrade; the owner is a regrole (pg_upgrade keeps role
-- OIDs, pg_dump writes the name).  `position` is the global position up to
-- which the projection has applied the log: it is written in the same
-- transaction as the handler's effects, which makes each event's effect
-- happen once.
CREATE TABLE event_store.projections (
    name                 text        COLLATE "C" NOT NULL,
    handler              text        NOT NULL,
    reset                text,
    event_types          text[]      COLLATE "C",
    categories           text[]      COLLATE "C",
    mode                 text        NOT NULL,
    on_error             text        NOT NULL,
    owner                regrole     NOT NULL,
    search_path          text        NOT NULL,
    state                text        NOT NULL,
    position             bigint,
    events_applied       bigint      NOT NULL DEFAULT 0,
    rebuild_total        bigint,
    retries              integer     NOT NULL DEFAULT 0,
    retry_at             timestamptz,
    last_error           text,
    error_sqlstate       text,
    error_position       bigint,
    error_stream_id      text        COLLATE "C",
    error_stream_version bigint,
    error_at             timestamptz,
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    applied_at           timestamptz,
    log_identity         uuid        NOT NULL,
    incarnation          uuid        NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    CONSTRAINT projections_pkey PRIMARY KEY (name),
    CONSTRAINT projections_mode_check CHECK (mode OPERATOR(pg_catalog.=) ANY ('{async,inline}'::pg_catalog.text[])),
    CONSTRAINT projections_on_error_check CHECK (on_error OPERATOR(pg_catalog.=) ANY ('{stop,park}'::pg_catalog.text[])),
    CONSTRAINT projections_state_check CHECK (state OPERATOR(pg_catalog.=) ANY
        ('{catching up,live,paused,failed,rebuilding}'::pg_catalog.text[]))
);

COMMENT ON TABLE event_store.projections IS
    'Projections (read models): definition and progress. Write with event_store.create_projection() and the other projection functions.';

-- Definitions and positions go into pg_dump with the user's read-model tables.
SELECT pg_catalog.pg_extension_config_dump('event_store.projections', '');

-- Events a projection's handler failed on, set aside (on_error => 'park').
CREATE TABLE event_store.projection_parked (
    projection      text        COLLATE "C" NOT NULL,
    stream_id       text        COLLATE "C" NOT NULL,
    stream_version  bigint      NOT NULL,
    global_position bigint,
    event_type      text        COLLATE "C" NOT NULL,
    error           text        NOT NULL,
    error_sqlstate  text        NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT projection_parked_pkey PRIMARY KEY (projection, stream_id, stream_version),
    CONSTRAINT projection_parked_projection_fkey FOREIGN KEY (projection)
        REFERENCES event_store.projections (name) ON DELETE CASCADE
);

SELECT pg_catalog.pg_extension_config_dump('event_store.projection_parked', '');

CREATE FUNCTION event_store.create_projection(
    name text,
    handler regprocedure,
    event_types text[] DEFAULT NULL,
    categories text[] DEFAULT NULL,
    mode text DEFAULT 'async',
    reset regprocedure DEFAULT NULL,
    on_error text DEFAULT 'stop',
    start text DEFAULT 'beginning')
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_create_projection';

CREATE FUNCTION event_store.drop_projection(name text)
RETURNS boolean
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_drop_projection';

CREATE FUNCTION event_store.pause_projection(name text)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_pause_projection';

CREATE FUNCTION event_store.resume_projection(name text)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_resume_projection';

CREATE FUNCTION event_store.rebuild_projection(name text)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_rebuild_projection';

CREATE FUNCTION event_store.replay_parked(name text)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_replay_parked';

CREATE FUNCTION event_store.discard_parked(
    name text,
    stream_id text DEFAULT NULL,
    stream_version bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_discard_parked';

CREATE FUNCTION event_store.wait_for_projection(name text, timeout interval DEFAULT '5 s')
RETURNS boolean
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_wait_for_projection';

-- Every projection, its state and lag.  lag_events counts the log positions
-- it has not passed yet (events its filters skip included); lag is the age
-- of the oldest of them.  The text of a handler's error (which may quote
-- the data it was handed) is shown to members of the owner's role only.
CREATE VIEW event_store.projection_status AS
SELECT p.name,
       p.mode,
       CASE WHEN r.restored THEN 'failed' ELSE p.state END AS state,
       p.owner,
       p.handler,
       p.event_types,
       p.categories,
       p.on_error,
       p.position,
       p.events_applied,
       CASE WHEN p.mode OPERATOR(pg_catalog.=) 'inline' THEN 0::bigint
            ELSE GREATEST(h.head OPERATOR(pg_catalog.-) COALESCE(p.position, 0), 0) END AS lag_events,
       CASE WHEN p.mode OPERATOR(pg_catalog.=) 'inline'
              OR COALESCE(p.position, 0) OPERATOR(pg_catalog.>=) h.head THEN '0'::pg_catalog.interval
            ELSE GREATEST(pg_catalog.now() OPERATOR(pg_catalog.-)
                          (SELECT e.recorded_at
                             FROM event_store.global_log g
                             JOIN event_store.events e
                               ON e.stream_id OPERATOR(pg_catalog.=) g.stream_id
                              AND e.stream_version OPERATOR(pg_catalog.=) g.stream_version
                            WHERE g.global_position OPERATOR(pg_catalog.>) COALESCE(p.position, 0)
                            ORDER BY g.global_position LIMIT 1),
                          '0'::pg_catalog.interval) END AS lag,
       CASE WHEN r.restored
            THEN 'restored from a dump: its position refers to another database''s global log; run event_store.rebuild_projection()'
            WHEN pg_catalog.pg_has_role(p.owner, 'USAGE') THEN p.last_error
       END AS last_error,
       CASE WHEN r.restored THEN 'VE045' ELSE p.error_sqlstate END AS error_sqlstate,
       p.error_position,
       p.error_stream_id,
       p.error_stream_version,
       p.error_at,
       p.retries,
       CASE WHEN p.state OPERATOR(pg_catalog.=) 'rebuilding' THEN LEAST(p.position, p.rebuild_total) END AS rebuild_done,
       CASE WHEN p.state OPERATOR(pg_catalog.=) 'rebuilding' THEN p.rebuild_total END AS rebuild_total,
       (SELECT pg_catalog.count(*) FROM event_store.projection_parked k
         WHERE k.projection OPERATOR(pg_catalog.=) p.name) AS parked,
       p.applied_at,
       p.created_at
  FROM event_store.projections p,
       LATERAL (SELECT COALESCE(pg_catalog.max(g.global_position), 0) AS head
                  FROM event_store.global_log g) h,
       LATERAL (SELECT p.log_identity OPERATOR(pg_catalog.<>) i.id AS restored
                  FROM event_store.log_identity i) r;

COMMENT ON VIEW event_store.projection_status IS
    'Every projection: mode, state, position, events applied, lag, last error and its event, rebuild progress.';

-- Parked events, with what the handler said (to members of the owner's role).
CREATE VIEW event_store.parked_events AS
SELECT k.projection,
       COALESCE(k.global_position, g.global_position) AS global_position,
       k.stream_id,
       k.stream_version,
       k.event_type,
       CASE WHEN pg_catalog.pg_has_role(p.owner, 'USAGE') THEN k.error END AS error,
       k.error_sqlstate,
       k.parked_at
  FROM event_store.projection_parked k
  JOIN event_store.projections p ON p.name OPERATOR(pg_catalog.=) k.projection
  LEFT JOIN event_store.global_log g
    ON g.stream_id OPERATOR(pg_catalog.=) k.stream_id
   AND g.stream_version OPERATOR(pg_catalog.=) k.stream_version;

COMMENT ON VIEW event_store.parked_events IS
    'Events a projection handler failed on and that were set aside (on_error => ''park''); see replay_parked() and discard_parked().';

REVOKE ALL ON TABLE event_store.log_identity, event_store.projections, event_store.projection_parked,
                    event_store.projection_status, event_store.parked_events FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.create_projection(text, regprocedure, text[], text[], text, regprocedure, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.drop_projection(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.pause_projection(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.resume_projection(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.rebuild_projection(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.replay_parked(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.discard_parked(text, text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.wait_for_projection(text, interval) FROM PUBLIC;
