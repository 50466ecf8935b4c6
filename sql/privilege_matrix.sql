-- The privilege matrix (issue 12, item 5).  In a throwaway database the
-- roles are made by running the SQL of README.md's "Security" section as it
-- is written there; then, for PUBLIC and each of those roles, every table,
-- view and function of the extension is tried: the rights as granted
-- (has_*_privilege), every function actually called, and the paths that
-- only documented, privileged ones may take (updating or deleting events,
-- reading keys, forgetting, writing the extension's own streams and
-- tables).  A new object without a documented grant, or a grant the README
-- does not show, changes a matrix and fails the test; so does a function or
-- table missing from the README's reference.
\set SHOW_CONTEXT never
\set VERBOSITY terse
SELECT current_database() AS regression_db \gset
CREATE DATABASE es_matrix;
\c es_matrix
SET synchronous_commit = on;
SET client_min_messages = warning;
CREATE EXTENSION pgcrypto;
CREATE EXTENSION event_store;
RESET client_min_messages;

-- the roles and grants of README.md, "Security", verbatim (every ```sql
-- block of the section)
\set security_sql `test/readme_sql Security`
:security_sql
-- PUBLIC: a role that has been granted nothing
CREATE ROLE app_nobody NOLOGIN;

-- the roles of the matrix, in column order
CREATE TABLE roles (n int, name text);
INSERT INTO roles VALUES (1, 'public'), (2, 'app_writer'), (3, 'app_reader'), (4, 'app_handler'),
  (5, 'app_admin'), (6, 'app_privacy_admin'), (7, 'app_projector');
SELECT string_agg(r.rolname, ', ' ORDER BY r.rolname) AS roles_in_security_section
  FROM pg_roles r WHERE r.rolname LIKE 'app\_%' AND r.rolname <> 'app_nobody';
-- every role the section creates is a column of the matrices below
SELECT r.rolname AS role_missing_from_matrix FROM pg_roles r
 WHERE r.rolname LIKE 'app\_%' AND r.rolname <> 'app_nobody'
   AND r.rolname NOT IN (SELECT name FROM roles);

-- the extension's objects
CREATE VIEW ext_objects AS
SELECT d.classid, d.objid, pg_describe_object(d.classid, d.objid, 0) AS object
  FROM pg_depend d
 WHERE d.deptype = 'e' AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'event_store');

-- 1. the schema
SELECT r.name AS role,
       has_schema_privilege(r.name, 'event_store', 'USAGE') AS usage,
       has_schema_privilege(r.name, 'event_store', 'CREATE') AS "create"
  FROM roles r ORDER BY r.n;

-- 2. tables and views: the rights each role has (r SELECT, a INSERT,
--    w UPDATE, d DELETE, D TRUNCATE, x REFERENCES, t TRIGGER)
CREATE FUNCTION rel_rights(role text, rel oid) RETURNS text LANGUAGE sql AS $$
  SELECT coalesce(nullif(string_agg(CASE WHEN has_table_privilege(role, rel, p.name) THEN p.letter END, '' ORDER BY p.n), ''), '-')
    FROM (VALUES (1, 'SELECT', 'r'), (2, 'INSERT', 'a'), (3, 'UPDATE', 'w'), (4, 'DELETE', 'd'),
                 (5, 'TRUNCATE', 'D'), (6, 'REFERENCES', 'x'), (7, 'TRIGGER', 't')) p(n, name, letter) $$;
SELECT c.relname AS "table / view",
       rel_rights('public', c.oid) AS public, rel_rights('app_writer', c.oid) AS writer,
       rel_rights('app_reader', c.oid) AS reader, rel_rights('app_handler', c.oid) AS handler,
       rel_rights('app_admin', c.oid) AS admin, rel_rights('app_privacy_admin', c.oid) AS privacy,
       rel_rights('app_projector', c.oid) AS projector
  FROM ext_objects o JOIN pg_class c ON o.classid = 'pg_class'::regclass AND c.oid = o.objid
 WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f', 'S')
 ORDER BY 1;
-- column grants are not used
SELECT count(*) AS column_grants FROM pg_attribute a JOIN ext_objects o ON o.classid = 'pg_class'::regclass
   AND a.attrelid = o.objid WHERE a.attacl IS NOT NULL;

-- 3. functions: EXECUTE (x) as granted
CREATE FUNCTION fn_right(role text, fn oid) RETURNS text LANGUAGE sql AS $$
  SELECT CASE WHEN has_function_privilege(role, fn, 'EXECUTE') THEN 'x' ELSE '-' END $$;
SELECT p.oid::regprocedure AS function,
       fn_right('public', p.oid) AS public, fn_right('app_writer', p.oid) AS writer,
       fn_right('app_reader', p.oid) AS reader, fn_right('app_handler', p.oid) AS handler,
       fn_right('app_admin', p.oid) AS admin, fn_right('app_privacy_admin', p.oid) AS privacy,
       fn_right('app_projector', p.oid) AS projector
  FROM ext_objects o JOIN pg_proc p ON o.classid = 'pg_proc'::regclass AND p.oid = o.objid
 ORDER BY 1::text;
-- no function of the extension is SECURITY DEFINER, none is a procedure
SELECT p.oid::regprocedure AS definer_or_procedure FROM ext_objects o JOIN pg_proc p
    ON o.classid = 'pg_proc'::regclass AND p.oid = o.objid
 WHERE p.prosecdef OR p.prokind <> 'f';
-- types: usable by PUBLIC (the default), which gives no access to data
SELECT t.typname AS type, has_type_privilege('public', t.oid, 'USAGE') AS public_usage
  FROM ext_objects o JOIN pg_type t ON o.classid = 'pg_type'::regclass AND t.oid = o.objid ORDER BY 1;

-- 4. every function actually called, as each role, each call rolled back:
--    "ok", or the SQLSTATE it failed with
SET event_store.key_encryption_key = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
SELECT event_store.wait_for_pipeline('30 s');
CREATE FUNCTION pm_up(data jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT data';
CREATE FUNCTION pm_reduce(state jsonb, e event_store.event) RETURNS jsonb LANGUAGE sql AS 'SELECT state';
CREATE FUNCTION pm_decide(state jsonb, command jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT ''[]''::jsonb';
CREATE FUNCTION pm_handle(e event_store.event) RETURNS void LANGUAGE sql AS '';
SELECT event_store.define_aggregate('pm_agg', 'pm_reduce(jsonb, event_store.event)');
SELECT event_store.append('pm-1', 'E', '{}');
SELECT event_store.protect('PmSecret', '$.s', '{$.x}');
SELECT event_store.append('pm-2', 'PmSecret', '{"s": "pm-subject", "x": "secret"}');

-- run a statement as a role in a subtransaction that is always rolled back
CREATE FUNCTION try_as(role text, stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  BEGIN
    IF role = 'public' THEN role := 'app_nobody'; END IF;
    EXECUTE format('SET LOCAL ROLE %I', role);
    EXECUTE stmt;
    RAISE EXCEPTION USING ERRCODE = 'ES999';
  EXCEPTION WHEN OTHERS THEN
    RETURN CASE WHEN SQLSTATE = 'ES999' THEN 'ok' ELSE SQLSTATE END;
  END;
END $$;

CREATE TABLE calls (fn regprocedure, stmt text);
INSERT INTO calls VALUES
  ('event_store.append(text, text, jsonb, jsonb, bigint, uuid, integer)', $$SELECT event_store.append('pm-1', 'E', '{}')$$),
  ('event_store.append_events(text, jsonb, bigint)', $$SELECT event_store.append_events('pm-1', '[{"type": "E", "data": {}}]')$$),
  ('event_store.read_stream(text, bigint, integer, boolean, timestamptz)', $$SELECT count(*) FROM event_store.read_stream('pm-1')$$),
  ('event_store.stream_version(text)', $$SELECT event_store.stream_version('pm-1')$$),
  ('event_store.current_schema_version(text)', $$SELECT event_store.current_schema_version('E')$$),
  ('event_store.add_upcaster(text, integer, regprocedure, text)', $$SELECT event_store.add_upcaster('PmType', 1, 'pm_up(jsonb)')$$),
  ('event_store.drop_upcaster(text, integer)', $$SELECT event_store.drop_upcaster('PmType', 1)$$),
  ('event_store.define_aggregate(text, regprocedure, jsonb, integer)', $$SELECT event_store.define_aggregate('pm_agg2', 'pm_reduce(jsonb, event_store.event)')$$),
  ('event_store.load_aggregate(text, text, timestamptz, bigint)', $$SELECT * FROM event_store.load_aggregate('pm-1', 'pm_agg')$$),
  ('event_store.save_snapshot(text, text, bigint, jsonb)', $$SELECT event_store.save_snapshot('pm-1', 'pm_agg', 1, '{}')$$),
  ('event_store.load_snapshot(text, text)', $$SELECT * FROM event_store.load_snapshot('pm-1', 'pm_agg')$$),
  ('event_store.delete_snapshots(text, text)', $$SELECT event_store.delete_snapshots('pm-1')$$),
  ('event_store.execute(text, text, regprocedure, jsonb)', $$SELECT event_store.execute('pm-1', 'pm_agg', 'pm_decide(jsonb, jsonb)', '{}')$$),
  ('event_store.protect(text, text, text[])', $$SELECT event_store.protect('PmOther', '$.s', '{$.x}')$$),
  ('event_store.forget(text)', $$SELECT event_store.forget('pm-subject')$$),
  ('event_store.rewrap_keys()', $$SELECT event_store.rewrap_keys()$$),
  ('event_store.personal_data_access()', $$SELECT event_store.personal_data_access()$$),
  ('event_store.subject_streams(text)', $$SELECT count(*) FROM event_store.subject_streams('pm-subject')$$),
  ('event_store._subject_hash(text)', $$SELECT event_store._subject_hash('pm-subject')$$),
  ('event_store.read_all(bigint, integer, text[], text[])', $$SELECT count(*) FROM event_store.read_all(0, 10)$$),
  ('event_store.read_all(bigint, integer, text[], text[], integer, integer)', $$SELECT count(*) FROM event_store.read_all(0, 10, NULL, NULL, 0, 2)$$),
  ('event_store.stream_hash(text)', $$SELECT event_store.stream_hash('pm-1')$$),
  ('event_store.save_position(text, bigint)', $$SELECT event_store.save_position('pm-consumer', 0)$$),
  ('event_store.load_position(text)', $$SELECT event_store.load_position('pm-consumer')$$),
  ('event_store.wait_for_pipeline(interval)', $$SELECT event_store.wait_for_pipeline('10 s')$$),
  ('event_store.publish(text, jsonb, text)', $$SELECT event_store.publish('pm.topic', '{}')$$),
  ('event_store._pipeline_state()', $$SELECT state FROM event_store._pipeline_state()$$),
  ('event_store.create_projection(text, regprocedure, text[], text[], text, regprocedure, text, text)', $$SELECT event_store.create_projection('pm_p', 'pm_handle(event_store.event)')$$),
  ('event_store.drop_projection(text)', $$SELECT event_store.drop_projection('pm_none')$$),
  ('event_store.pause_projection(text)', $$SELECT event_store.pause_projection('pm_none')$$),
  ('event_store.resume_projection(text)', $$SELECT event_store.resume_projection('pm_none')$$),
  ('event_store.rebuild_projection(text)', $$SELECT event_store.rebuild_projection('pm_none')$$),
  ('event_store.replay_parked(text)', $$SELECT event_store.replay_parked('pm_none')$$),
  ('event_store.discard_parked(text, text, bigint)', $$SELECT event_store.discard_parked('pm_none')$$),
  ('event_store.wait_for_projection(text, interval)', $$SELECT event_store.wait_for_projection('pm_none', '1 s')$$),
  ('event_store.check(interval)', $$SELECT count(*) FROM event_store.check()$$),
  ('event_store._health()', $$SELECT count(*) FROM event_store._health()$$),
  ('event_store._replace_log_identity()', $$SELECT event_store._replace_log_identity()$$),
  ('event_store._version_events()', $$SELECT event_store._version_events()$$),
  ('event_store._refuse_change()', $$SELECT event_store._refuse_change()$$);
-- every function of the extension has a call here
SELECT p.oid::regprocedure AS function_without_a_call
  FROM ext_objects o JOIN pg_proc p ON o.classid = 'pg_proc'::regclass AND p.oid = o.objid
 WHERE p.oid NOT IN (SELECT fn FROM calls);
SELECT c.fn AS function,
       try_as('public', c.stmt) AS public, try_as('app_writer', c.stmt) AS writer,
       try_as('app_reader', c.stmt) AS reader, try_as('app_handler', c.stmt) AS handler,
       try_as('app_admin', c.stmt) AS admin, try_as('app_privacy_admin', c.stmt) AS privacy,
       try_as('app_projector', c.stmt) AS projector
  FROM calls c ORDER BY c.fn::text;
-- a call the grants allow never fails for want of a right the README did
-- not grant, and a call they refuse is refused (42501)
SELECT c.fn AS function, r.name AS role, fn_right(r.name, c.fn) AS granted, try_as(r.name, c.stmt) AS outcome
  FROM calls c, roles r
 WHERE (fn_right(r.name, c.fn) = 'x') = (try_as(r.name, c.stmt) = '42501')
 ORDER BY 1::text, 2;

-- 5. what nobody but the documented, privileged paths may do
CREATE TABLE attempts (n int, what text, stmt text);
INSERT INTO attempts VALUES
  (1, 'update an event', $$UPDATE event_store.events SET data = '{"forged": true}'$$),
  (2, 'delete an event', $$DELETE FROM event_store.events$$),
  (3, 'truncate the log', $$TRUNCATE event_store.events$$),
  (4, 'merge into the log', $$MERGE INTO event_store.events e USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE$$),
  (5, 'upsert over an event', $$INSERT INTO event_store.events (stream_id, stream_version, event_type, data) VALUES ('pm-1', 1, 'E', '{"forged": true}') ON CONFLICT (stream_id, stream_version) DO UPDATE SET data = EXCLUDED.data$$),
  (6, 'choose recorded_at', $$INSERT INTO event_store.events (stream_id, event_type, data, recorded_at) VALUES ('pm-1', 'E', '{}', now() + interval '1 year')$$),
  (7, 'append to event_store-subjects', $$SELECT event_store.append('event_store-subjects', 'SubjectForgotten', '{}')$$),
  (8, 'insert into event_store stream', $$INSERT INTO event_store.events (stream_id, event_type, data) VALUES ('event_store', 'E', '{}')$$),
  (9, 'disable the append-only guard', $$ALTER TABLE event_store.events DISABLE TRIGGER append_only$$),
  (10, 'drop the log', $$DROP TABLE event_store.events$$),
  (11, 'create in the schema', $$CREATE FUNCTION event_store.forget(text, boolean) RETURNS boolean LANGUAGE sql AS 'SELECT true'$$),
  (12, 'read the wrapped keys', $$SELECT count(*) FROM event_store.subject_keys$$),
  (13, 'write a key', $$UPDATE event_store.subject_keys SET wrapped_key = '\x00'$$),
  (14, 'delete a key', $$DELETE FROM event_store.subject_keys$$),
  (15, 'forget a subject', $$SELECT event_store.forget('pm-subject')$$),
  (16, 'drop a tombstone', $$DELETE FROM event_store.forgotten_subjects$$),
  (17, 'read snapshots', $$SELECT count(*) FROM event_store.snapshots$$),
  (18, 'write a snapshot row', $$INSERT INTO event_store.snapshots (stream_id, aggregate, generation, version, state, recorded_at) VALUES ('pm-1', 'pm_agg', 1, 1, '{}', now())$$),
  (19, 'write the upcaster registry', $$INSERT INTO event_store.upcasters VALUES ('PmType', 1, 'public.pm_up(pg_catalog.jsonb)')$$),
  (20, 'write the aggregate registry', $$UPDATE event_store.aggregates SET generation = generation + 1$$),
  (21, 'write the protection rules', $$DELETE FROM event_store.protected_types$$),
  (22, 'write the global log', $$DELETE FROM event_store.global_log$$),
  (23, 'write the projection registry', $$UPDATE event_store.projections SET position = 0$$),
  (24, 'write parked events', $$DELETE FROM event_store.projection_parked$$),
  (25, 'change the log identity', $$UPDATE event_store.log_identity SET id = gen_random_uuid()$$);
SELECT a.what,
       try_as('public', a.stmt) AS public, try_as('app_writer', a.stmt) AS writer,
       try_as('app_reader', a.stmt) AS reader, try_as('app_handler', a.stmt) AS handler,
       try_as('app_admin', a.stmt) AS admin, try_as('app_privacy_admin', a.stmt) AS privacy,
       try_as('app_projector', a.stmt) AS projector
  FROM attempts a ORDER BY a.n;
-- and none of it left a trace
SELECT count(*) AS events, count(*) FILTER (WHERE data ? 'forged') AS forged,
       (SELECT count(*) FROM event_store.subject_keys) AS keys,
       (SELECT count(*) FROM event_store.forgotten_subjects) AS tombstones
  FROM event_store.events;
-- raw keys: the privacy admin reads keys wrapped (128 bytes: iv, ciphertext
-- and tag of the 64-byte key), never in clear; the table holds ciphertext;
-- read_stream decrypts for a role with personal_data_access only
CREATE FUNCTION value_as(role text, stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v text;
BEGIN
  EXECUTE format('SET LOCAL ROLE %I', role);
  EXECUTE stmt INTO v;
  RESET ROLE;
  RETURN v;
END $$;
SELECT value_as('app_privacy_admin', $$SELECT octet_length(wrapped_key) FROM event_store.subject_keys$$) AS wrapped_key_bytes,
       value_as('app_projector', $$SELECT data->>'x' = 'secret' FROM event_store.events WHERE stream_id = 'pm-2'$$) AS table_holds_clear_text,
       value_as('app_reader', $$SELECT data->>'x' FROM event_store.read_stream('pm-2')$$) AS reader_reads,
       try_as('app_projector', $$SELECT data->>'x' FROM event_store.read_stream('pm-2')$$) AS projector_read_stream;

-- 6. every table, view and function of the extension (but the internal
--    ones, named _…) is in the README's reference
\set reference `awk '/^## Reference/{s=1} /^## Testing/{s=0} s' README.md`
SELECT o.object AS not_in_the_reference
  FROM ext_objects o
  LEFT JOIN pg_proc p ON o.classid = 'pg_proc'::regclass AND p.oid = o.objid
  LEFT JOIN pg_class c ON o.classid = 'pg_class'::regclass AND c.oid = o.objid
 WHERE (p.oid IS NOT NULL AND p.proname NOT LIKE '\_%'
        AND position('`' || p.proname || '(' IN :'reference') = 0)
    OR (c.oid IS NOT NULL AND c.relkind IN ('r', 'v', 'm', 'p')
        AND position('`event_store.' || c.relname || '`' IN :'reference') = 0)
 ORDER BY 1;

\c :regression_db
DROP DATABASE es_matrix;
DROP ROLE app_writer, app_reader, app_handler, app_admin, app_privacy_admin, app_projector, app_nobody;
