/* event_store--0.1.0--0.2.0.sql: projections (read models) and the fixes of the security review */

\echo Use "ALTER EXTENSION event_store UPDATE TO '0.2.0'" to load this file. \quit

-- CREATE EXTENSION event_store runs event_store--0.1.0.sql and then this
-- script; ALTER EXTENSION event_store UPDATE runs this script alone.  Every
-- name is schema-qualified, as in the install script.

-- ---------------------------------------------------------------------------
-- Review fixes (issue 10)
-- ---------------------------------------------------------------------------

-- The schema event_store must be the extension owner's own.  CREATE
-- EXTENSION installs into a schema of that name that exists already, and
-- the role owning it (or allowed to create objects in it) could add
-- objects -- an overload of append, a fake forget -- that run with the
-- rights of whoever calls them, a superuser included, or drop the schema
-- and the extension with it.  This runs at CREATE EXTENSION (after the
-- 0.1.0 script) and at ALTER EXTENSION UPDATE from 0.1.0, and aborts either
-- with VE007 unless the schema belongs to the extension's owner, lets no
-- other role create objects in it, and holds only the extension's objects.
-- Only pg_catalog is called (plpgsql's own statements aside).
DO $check$
DECLARE
    ext pg_catalog.oid;
    ext_owner pg_catalog.oid;
    nsp pg_catalog.oid;
    nsp_owner pg_catalog.oid;
    creator pg_catalog.text;
    strangers pg_catalog.text;
BEGIN
    SELECT e.oid, e.extowner, e.extnamespace INTO ext, ext_owner, nsp
      FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'event_store';
    SELECT n.nspowner INTO nsp_owner FROM pg_catalog.pg_namespace n WHERE n.oid OPERATOR(pg_catalog.=) nsp;
    IF nsp_owner OPERATOR(pg_catalog.<>) ext_owner THEN
        RAISE EXCEPTION USING ERRCODE = 'VE007',
            MESSAGE = pg_catalog.format('schema "event_store" belongs to role "%s", not to the extension''s owner "%s"',
                                        pg_catalog.pg_get_userbyid(nsp_owner), pg_catalog.pg_get_userbyid(ext_owner)),
            DETAIL = 'The schema existed before the extension was installed. Its owner could add objects to it that run with the rights of whoever calls them, or drop it with the extension.',
            HINT = pg_catalog.format('Drop the schema (or rename it) and create the extension again, or check what it holds and run ALTER SCHEMA event_store OWNER TO %I.',
                                     pg_catalog.pg_get_userbyid(ext_owner));
    END IF;
    SELECT pg_catalog.string_agg(DISTINCT CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
                                               ELSE pg_catalog.pg_get_userbyid(a.grantee) END, ', ')
      INTO creator
      FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
     WHERE n.oid OPERATOR(pg_catalog.=) nsp AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
       AND a.grantee OPERATOR(pg_catalog.<>) nsp_owner;
    IF creator IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'VE007',
            MESSAGE = pg_catalog.format('schema "event_store" lets role "%s" create objects in it', creator),
            DETAIL = 'A role that may create objects in the extension''s schema could add objects that run with the rights of whoever calls them.',
            HINT = pg_catalog.format('Run REVOKE CREATE ON SCHEMA event_store FROM %s, check what the schema holds, and run the command again.', creator);
    END IF;
    SELECT pg_catalog.string_agg(i.type OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) i.identity, ', '
                                 ORDER BY i.type, i.identity)
      INTO strangers
      FROM (SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass::pg_catalog.oid, p.oid FROM pg_catalog.pg_proc p
             WHERE p.pronamespace OPERATOR(pg_catalog.=) nsp
            UNION ALL
            SELECT 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid, c.oid FROM pg_catalog.pg_class c
             WHERE c.relnamespace OPERATOR(pg_catalog.=) nsp
               AND c.relkind OPERATOR(pg_catalog.<>) ALL ('{i,I,c}'::pg_catalog."char"[])
            UNION ALL
            -- types, but not the row types of tables and views, nor array types
            SELECT 'pg_catalog.pg_type'::pg_catalog.regclass::pg_catalog.oid, t.oid FROM pg_catalog.pg_type t
             WHERE t.typnamespace OPERATOR(pg_catalog.=) nsp
               AND (t.typrelid OPERATOR(pg_catalog.=) 0
                    OR EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) t.typrelid
                                AND c.relkind OPERATOR(pg_catalog.=) 'c'))
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_type e WHERE e.typarray OPERATOR(pg_catalog.=) t.oid)
            UNION ALL
            SELECT 'pg_catalog.pg_operator'::pg_catalog.regclass::pg_catalog.oid, o.oid FROM pg_catalog.pg_operator o
             WHERE o.oprnamespace OPERATOR(pg_catalog.=) nsp
            UNION ALL
            SELECT 'pg_catalog.pg_collation'::pg_catalog.regclass::pg_catalog.oid, c.oid FROM pg_catalog.pg_collation c
             WHERE c.collnamespace OPERATOR(pg_catalog.=) nsp
            UNION ALL
            SELECT 'pg_catalog.pg_conversion'::pg_catalog.regclass::pg_catalog.oid, c.oid FROM pg_catalog.pg_conversion c
             WHERE c.connamespace OPERATOR(pg_catalog.=) nsp
            UNION ALL
            SELECT 'pg_catalog.pg_opfamily'::pg_catalog.regclass::pg_catalog.oid, f.oid FROM pg_catalog.pg_opfamily f
             WHERE f.opfnamespace OPERATOR(pg_catalog.=) nsp
            UNION ALL
            SELECT 'pg_catalog.pg_opclass'::pg_catalog.regclass::pg_catalog.oid, c.oid FROM pg_catalog.pg_opclass c
             WHERE c.opcnamespace OPERATOR(pg_catalog.=) nsp
            UNION ALL
            SELECT 'pg_catalog.pg_ts_config'::pg_catalog.regclass::pg_catalog.oid, c.oid FROM pg_catalog.pg_ts_config c
             WHERE c.cfgnamespace OPERATOR(pg_catalog.=) nsp
            UNION ALL
            SELECT 'pg_catalog.pg_ts_dict'::pg_catalog.regclass::pg_catalog.oid, d.oid FROM pg_catalog.pg_ts_dict d
             WHERE d.dictnamespace OPERATOR(pg_catalog.=) nsp
            UNION ALL
            SELECT 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass::pg_catalog.oid, s.oid FROM pg_catalog.pg_statistic_ext s
             WHERE s.stxnamespace OPERATOR(pg_catalog.=) nsp) o(classid, objid),
           LATERAL pg_catalog.pg_identify_object(o.classid, o.objid, 0) i
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                        WHERE d.classid OPERATOR(pg_catalog.=) o.classid AND d.objid OPERATOR(pg_catalog.=) o.objid
                          AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
                          AND d.refobjid OPERATOR(pg_catalog.=) ext AND d.deptype OPERATOR(pg_catalog.=) 'e');
    IF strangers IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'VE007',
            MESSAGE = 'schema "event_store" holds objects that are not the extension''s',
            DETAIL = pg_catalog.format('Found: %s.', strangers),
            HINT = 'Drop them, or move them to another schema, and run the command again.';
    END IF;
END
$check$;

-- Append-only on a logical replica too: the logical-replication apply
-- worker fires row triggers only, never statement triggers, so a replicated
-- UPDATE or DELETE passed the statement-level guard append_only.  This row
-- guard fires for every row changed, whatever the path, also under
-- session_replication_role = replica.
CREATE TRIGGER append_only_rows BEFORE UPDATE OR DELETE ON event_store.events
    FOR EACH ROW EXECUTE FUNCTION event_store._refuse_change();
ALTER TABLE event_store.events ENABLE ALWAYS TRIGGER append_only_rows;

-- Subject keys are found by the SHA-256 of the subject (the tombstone's
-- key), not by the subject: a btree's freed space kept a forgotten subject in
-- clear in the index file after forget, VACUUM and CHECKPOINT.  The new
-- unique index holds hashes only; dropping the old one removes its file.
-- (The heap's subject is overwritten in place when forget commits.)
CREATE FUNCTION event_store._subject_hash(subject text)
RETURNS bytea
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'event_store_subject_hash';
REVOKE ALL ON FUNCTION event_store._subject_hash(text) FROM PUBLIC;

CREATE UNIQUE INDEX subject_keys_subject_hash ON event_store.subject_keys
    (event_store._subject_hash(subject));
ALTER TABLE event_store.subject_keys DROP CONSTRAINT subject_keys_subject_key;

-- subject_streams reads the key and the events as the extension's owner, so
-- that EXECUTE is the whole right: the README's admin of personal data,
-- who does not read events, got 42501 from the SQL version.
CREATE OR REPLACE FUNCTION event_store.subject_streams(subject text)
RETURNS SETOF text
LANGUAGE c STABLE PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'event_store_subject_streams';

-- The registries are written by their functions only, and snapshots read
-- by them only (a state may hold a protected field in clear).  The README
-- of 0.1.0 granted direct writes of the registries to admins and SELECT on
-- snapshots to readers: an update takes every such grant back (INSERT on
-- snapshots, the right of a load to write one, stays).
DO $revoke$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT c.relname, a.privilege_type, a.grantee
          FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'event_store'::pg_catalog.regnamespace
           AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
           AND ((c.relname OPERATOR(pg_catalog.=) ANY ('{upcasters,aggregates,protected_types}'::pg_catalog.name[])
                 AND a.privilege_type OPERATOR(pg_catalog.<>) 'SELECT')
                OR (c.relname OPERATOR(pg_catalog.=) 'snapshots'
                    AND a.privilege_type OPERATOR(pg_catalog.<>) 'INSERT'))
    LOOP
        EXECUTE pg_catalog.format('REVOKE %s ON event_store.%I FROM %s CASCADE', g.privilege_type, g.relname,
                                  CASE WHEN g.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
                                       ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END);
    END LOOP;
END
$revoke$;

-- The registries are written by their functions only (as the extension's
-- owner, src/event_store.c es_owner_begin): a row of upcasters written by
-- hand may hold anything, so the view resolves only text that is a signature
-- as add_upcaster() writes it ("schema.name(pg_catalog.jsonb)"), which
-- to_regprocedure() cannot fail on; anything else shows as missing.
CREATE OR REPLACE VIEW event_store.event_schemas WITH (security_invoker = true) AS
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
                                      coalesce(CASE WHEN u.upcaster OPERATOR(pg_catalog.~)
                                                         '^("([^"]|"")+"|[a-z_][a-z0-9_$]*)\.("([^"]|"")+"|[a-z_][a-z0-9_$]*)\(pg_catalog\.jsonb\)$'
                                                    THEN pg_catalog.to_regprocedure(u.upcaster)::pg_catalog.text END,
                                               u.upcaster OPERATOR(pg_catalog.||) ' (missing)'))
               FROM event_store.upcasters u
              WHERE u.event_type OPERATOR(pg_catalog.=) t.event_type
              ORDER BY u.from_schema_version) AS steps
  FROM types t;

-- The key rows forget() deleted, to be overwritten in the table's file once
-- the forget has committed (by the database's pipeline worker): a forget
-- that aborts must destroy nothing.  Not dumped (a restore has no dead rows).
CREATE TABLE event_store.key_scrubs (
    tid       tid         NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
REVOKE ALL ON TABLE event_store.key_scrubs FROM PUBLIC;

-- publish() signs its messages, so that the output plugin delivers only
-- those (pg_logical_emit_message is executable by PUBLIC): an HMAC-SHA256,
-- with this database's key, of the publishing transaction's id and the
-- message.  The key is read by the plugin inside logical decoding, hence a
-- user_catalog_table; made at install, not dumped, readable by the owner only.
CREATE TABLE event_store.publish_key (
    key bytea NOT NULL
) WITH (user_catalog_table = true);
INSERT INTO event_store.publish_key (key)
SELECT pg_catalog.decode(pg_catalog.replace(pg_catalog.gen_random_uuid()::pg_catalog.text
                                            OPERATOR(pg_catalog.||) pg_catalog.gen_random_uuid()::pg_catalog.text,
                                            '-', ''), 'hex');
REVOKE ALL ON TABLE event_store.publish_key FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- The global log's key is the event's id, covering global_position.  Ids
-- are time-ordered (UUIDv7, unless the application chose them), so the
-- pipeline worker adds each key at the index's right edge, as it does the
-- positions; a key on (stream_id, stream_version) put each event on its
-- stream's page: a page written per event and, after every checkpoint,
-- copied whole into the WAL, which doubled the WAL of an append.  An
-- event's position is read from the key alone (an index-only scan, once the
-- log is vacuumed): the event table's keys lead from a stream to its ids.
-- The log is rewritten here with the ids of its events: on a large log this
-- takes a while, with the log locked.
-- The index on (event_type, global_position) is not made again: each of the
-- log's indexes costs the worker an insertion per event (the four took
-- 65 % of its time during 10-event batches), and a read filtered by type only scans the log in position order
-- and checks the types on its rows (a filter with categories reads the
-- category index).  Where rare types are read from far back, an index of
-- that name and shape, made by the owner, is used again (src/scan.c).
-- ---------------------------------------------------------------------------

-- Each entry with its event's id (a join of the two tables), then the log
-- again from it, its indexes built after the rows.  Locked first, so that
-- no position the pipeline worker commits meanwhile is left out.
LOCK TABLE event_store.global_log IN ACCESS EXCLUSIVE MODE;
-- (with the lock held, every committed row is in the file: an empty file is an empty log)
DO $$
BEGIN
    IF pg_catalog.current_setting('transaction_isolation') OPERATOR(pg_catalog.<>) 'read committed'
       AND pg_catalog.pg_relation_size('event_store.global_log'::pg_catalog.regclass) OPERATOR(pg_catalog.>) 0 THEN
        RAISE EXCEPTION 'the update of extension "event_store" to 0.2.0 must run in a READ COMMITTED transaction'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'It rewrites the global log, and must see every position the pipeline worker committed before it locked the log.',
                  HINT = 'Run ALTER EXTENSION event_store UPDATE outside a REPEATABLE READ or SERIALIZABLE transaction.';
    END IF;
END
$$;
CREATE UNLOGGED TABLE event_store._log_rewrite AS
SELECT g.global_position, g.stream_id, g.stream_version, g.category, g.event_type, g.commit_lsn, e.event_id
  FROM event_store.global_log g
  LEFT JOIN event_store.events e
    ON e.stream_id OPERATOR(pg_catalog.=) g.stream_id
   AND e.stream_version OPERATOR(pg_catalog.=) g.stream_version;

DO $$
DECLARE
    r record;
BEGIN
    SELECT l.stream_id, l.stream_version INTO r FROM event_store._log_rewrite l WHERE l.event_id IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'event_store.global_log has an entry for stream % version %, which has no event',
                        pg_catalog.quote_literal(r.stream_id), r.stream_version
            USING ERRCODE = 'data_corrupted',
                  DETAIL = 'The update gives every entry of the global log the id of its event.',
                  HINT = 'Delete the entries of event_store.global_log whose event is not in event_store.events (or restore the events), then update.';
    END IF;
END
$$;

TRUNCATE event_store.global_log;
ALTER TABLE event_store.global_log
    DROP CONSTRAINT global_log_pkey,
    DROP CONSTRAINT global_log_event_key,
    ADD COLUMN event_id uuid NOT NULL;
DROP INDEX event_store.global_log_category_idx, event_store.global_log_event_type_idx;
INSERT INTO event_store.global_log
SELECT * FROM event_store._log_rewrite ORDER BY global_position;
DROP TABLE event_store._log_rewrite;
ALTER TABLE event_store.global_log
    ADD CONSTRAINT global_log_pkey PRIMARY KEY (global_position),
    ADD CONSTRAINT global_log_event_key UNIQUE (event_id) INCLUDE (global_position);
CREATE INDEX global_log_category_idx ON event_store.global_log (category, global_position);

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
    CONSTRAINT projection_parked_pkey PRIMARY KEY (projection, stream_id, stream_version)
    -- no foreign key to projections: pg_restore -j loads the two tables in any
    -- order (drop_projection deletes a projection's parked events itself)
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
  LEFT JOIN event_store.events e
    ON e.stream_id OPERATOR(pg_catalog.=) k.stream_id
   AND e.stream_version OPERATOR(pg_catalog.=) k.stream_version
  LEFT JOIN event_store.global_log g ON g.event_id OPERATOR(pg_catalog.=) e.event_id;

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

-- ---------------------------------------------------------------------------
-- Consistency check (issue 12)
-- ---------------------------------------------------------------------------

-- What disagrees between the event table and what is derived from it:
-- stream versions, the global log, snapshots (folded again by their
-- reducers, as the caller) and projection positions (src/check.c).  No row
-- means consistent.  An operator's tool: revoked from PUBLIC; the caller
-- also needs SELECT on events, global_log and aggregates.
CREATE FUNCTION event_store.check(timeout interval DEFAULT '5 s')
RETURNS TABLE(kind text, object text, detail text)
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_check';

COMMENT ON FUNCTION event_store.check(interval) IS
    'Consistency check: one row per disagreement between the events and the global log, snapshots and projections; no row means consistent.';

REVOKE ALL ON FUNCTION event_store.check(interval) FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Health (issue 12, item 7; src/health.c): the server settings an event store
-- depends on, checked.  The launcher logs the warnings when it starts.
-- ---------------------------------------------------------------------------

CREATE FUNCTION event_store._health(
    OUT "check" text, OUT status text, OUT value text, OUT detail text)
RETURNS SETOF record
LANGUAGE c STABLE PARALLEL RESTRICTED ROWS 8
AS 'MODULE_PATHNAME', 'event_store_health';

CREATE VIEW event_store.health AS
SELECT h."check", h.status, h.value, h.detail FROM event_store._health() h;

COMMENT ON VIEW event_store.health IS
    'The server settings event_store depends on (durability, the pipeline, capacity): ok or warning, and why.';

REVOKE ALL ON TABLE event_store.health FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store._health() FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Restores keep the global log's positions (issue 12, item 6; src/restore.c).
-- pg_dump dumps the log and its identity, so that a restored database has
-- the same position for every event and the projections and consumers
-- restored with it resume where they were; while a session restores, the
-- pipeline and the projections of its database wait for it to end.
-- ---------------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('event_store.global_log', '');
SELECT pg_catalog.pg_extension_config_dump('event_store.log_identity', '');

-- The restored identity replaces the one CREATE EXTENSION made: the log is
-- the dumped one.
CREATE FUNCTION event_store._replace_log_identity() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  DELETE FROM event_store.log_identity i WHERE i.id OPERATOR(pg_catalog.<>) NEW.id;
  RETURN NEW;
END
$$;
CREATE TRIGGER replace_log_identity BEFORE INSERT ON event_store.log_identity
  FOR EACH ROW EXECUTE FUNCTION event_store._replace_log_identity();
ALTER TABLE event_store.log_identity ENABLE ALWAYS TRIGGER replace_log_identity;
REVOKE ALL ON FUNCTION event_store._replace_log_identity() FROM PUBLIC;

COMMENT ON TABLE event_store.global_log IS
    'The global log: the position of every event in commit order, written by the event_store pipeline worker (and restores). Read with event_store.read_all().';
COMMENT ON TABLE event_store.log_identity IS
    'The identity of this database''s global log (projections refer to it); dumped with the log.';

-- ---------------------------------------------------------------------------
-- Consumer groups on the global log (issue 14; src/scan.c, src/read.c).
-- Member k of a group of n reads the events of the streams whose hash
-- (stream_hash) is k modulo n: every event once among the members, each
-- stream's events to one member, in order.  An overload, not new defaults on
-- read_all: with defaults, every four-argument call would be ambiguous, and
-- replacing the function would drop the grants users made on it.
-- ---------------------------------------------------------------------------

CREATE FUNCTION event_store.read_all(
    after_position bigint,
    max_count integer,
    categories text[],
    event_types text[],
    consumer_group_member integer,
    consumer_group_size integer)
RETURNS SETOF event_store.event
LANGUAGE c STABLE PARALLEL RESTRICTED ROWS 1000
AS 'MODULE_PATHNAME', 'event_store_read_all';

COMMENT ON FUNCTION event_store.read_all(bigint, integer, text[], text[], integer, integer) IS
    'The global log after a position, in commit order: the share of one member of a consumer group (streams by stream_hash modulo the group size).';

-- message-db's hash_64 of the stream's cardinal id (after the first '-', up
-- to the first '+'; the whole id without '-'): what assigns a stream to a
-- member, for tools that need to know which member has a stream.
CREATE FUNCTION event_store.stream_hash(stream_id text)
RETURNS bigint
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'event_store_stream_hash';

COMMENT ON FUNCTION event_store.stream_hash(text) IS
    'The consumer-group hash of a stream: the first 64 bits of the MD5 of its cardinal id, as message-db''s hash_64.';

REVOKE ALL ON FUNCTION event_store.read_all(bigint, integer, text[], text[], integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.stream_hash(text) FROM PUBLIC;

-- Positions of named consumers (src/positions.c): a consumer whose effects
-- are in this database saves its position in the same transaction as them.
-- Dumped: a restore keeps the global log's positions, so these stay true.
CREATE TABLE event_store.consumer_positions (
    consumer text PRIMARY KEY,
    global_position bigint NOT NULL CHECK (global_position OPERATOR(pg_catalog.>=) 0),
    owner regrole NOT NULL,           -- who saved it first: only it and its members move it
    saved_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE event_store.consumer_positions IS
    'The global-log position each named consumer has handled, written by save_position().';
SELECT pg_catalog.pg_extension_config_dump('event_store.consumer_positions', '');

CREATE FUNCTION event_store.save_position(consumer text, global_position bigint)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'event_store_save_position';
COMMENT ON FUNCTION event_store.save_position(text, bigint) IS
    'Saves the global-log position a consumer has handled (in the caller''s transaction).';

CREATE FUNCTION event_store.load_position(consumer text)
RETURNS bigint
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'event_store_load_position';
COMMENT ON FUNCTION event_store.load_position(text) IS
    'The global-log position a consumer saved; 0 if it saved none.';

REVOKE ALL ON TABLE event_store.consumer_positions FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.save_position(text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.load_position(text) FROM PUBLIC;
