-- Least privilege: a stranger can do nothing; the README's writer, reader,
-- handler and admin roles can do exactly what they are for.
\set SHOW_CONTEXT never
SELECT event_store.append('priv-1', 'Secret', '{"n": 1}');

-- nothing is granted to PUBLIC
SELECT count(*) > 5 AS has_functions,
       coalesce(string_agg(p.proname, ', ') FILTER (WHERE has_function_privilege('public', p.oid, 'EXECUTE')),
                'none') AS executable_by_public
  FROM pg_proc p WHERE p.pronamespace = 'event_store'::regnamespace;
SELECT coalesce(string_agg(c.relname, ', '), 'none') AS granted_to_public
  FROM pg_class c, aclexplode(c.relacl) a
 WHERE c.relnamespace = 'event_store'::regnamespace AND a.grantee = 0;
SELECT has_schema_privilege('public', 'event_store', 'USAGE') AS public_usage,
       has_schema_privilege('public', 'event_store', 'CREATE') AS public_create;

-- an aggregate for the roles below (functions are executable by PUBLIC by default)
CREATE FUNCTION priv_count(state jsonb, e event_store.event) RETURNS jsonb
LANGUAGE sql AS $$ SELECT jsonb_build_object('n', (state->>'n')::int + 1) $$;
CREATE FUNCTION priv_decide(state jsonb, command jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT '[{"type": "Counted", "data": {}}]'::jsonb $$;
SELECT event_store.define_aggregate('priv_counter', 'priv_count(jsonb, event_store.event)', '{"n": 0}', 1);

-- a stranger
CREATE ROLE regress_stranger;
SET ROLE regress_stranger;
SELECT event_store.append('priv-1', 'Forged', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_stream('priv-1');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.events;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT USAGE ON SCHEMA event_store TO regress_stranger;
SET ROLE regress_stranger;
SELECT event_store.append('priv-1', 'Forged', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('priv-1', '[]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_stream('priv-1');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.stream_version('priv-1');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.load_aggregate('priv-1', 'priv_counter');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('priv-1', 'priv_counter', 'priv_decide(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.events;
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.streams;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, event_type, data) VALUES ('priv-1', 'Forged', '{}');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
REVOKE USAGE ON SCHEMA event_store FROM regress_stranger;
DROP ROLE regress_stranger;

-- The roles of README.md, "Security", granted exactly as written there.
CREATE ROLE regress_writer NOLOGIN;
GRANT USAGE ON SCHEMA event_store TO regress_writer;
GRANT INSERT ON event_store.events TO regress_writer;
GRANT EXECUTE ON FUNCTION event_store.append(text, text, jsonb, jsonb, bigint, uuid, integer),
                          event_store.append_events(text, jsonb, bigint),
                          event_store.current_schema_version(text) TO regress_writer;

CREATE ROLE regress_reader NOLOGIN;
GRANT USAGE ON SCHEMA event_store TO regress_reader;
GRANT SELECT ON event_store.events, event_store.streams TO regress_reader;
GRANT SELECT ON event_store.aggregates TO regress_reader;
GRANT EXECUTE ON FUNCTION event_store.read_stream(text, bigint, integer, boolean, timestamptz),
                          event_store.stream_version(text),
                          event_store.current_schema_version(text),
                          event_store.load_aggregate(text, text, timestamptz, bigint),
                          event_store.load_snapshot(text, text) TO regress_reader;

CREATE ROLE regress_handler NOLOGIN;
GRANT regress_writer, regress_reader TO regress_handler;
GRANT INSERT ON event_store.snapshots TO regress_handler;
GRANT EXECUTE ON FUNCTION event_store.execute(text, text, regprocedure, jsonb) TO regress_handler;

CREATE ROLE regress_admin NOLOGIN;
GRANT regress_handler TO regress_admin;
GRANT SELECT ON event_store.upcasters, event_store.event_schemas TO regress_admin;
GRANT EXECUTE ON FUNCTION event_store.define_aggregate(text, regprocedure, jsonb, integer),
                          event_store.save_snapshot(text, text, bigint, jsonb),
                          event_store.delete_snapshots(text, text),
                          event_store.add_upcaster(text, integer, regprocedure, text),
                          event_store.drop_upcaster(text, integer) TO regress_admin;

-- the writer appends by every path, and reads nothing
SET ROLE regress_writer;
SELECT event_store.current_schema_version('Written');
SELECT event_store.append('priv-2', 'Written', '{}');
SELECT event_store.append('priv-2', 'Written', '{}', expected_version => 1, event_id => '00000000-0000-4000-8000-00000000d001');
SELECT event_store.append('priv-2', 'Written', '{}', expected_version => 1, event_id => '00000000-0000-4000-8000-00000000d001');
SELECT event_store.append_events('priv-2', '[{"type": "Written", "data": {}}]', expected_version => 2);
INSERT INTO event_store.events (stream_id, event_type, data) VALUES ('priv-2', 'Written', '{}');
SELECT event_store.append('priv-2', 'Written', '{}', expected_version => 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_stream('priv-2');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM event_store.events;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM event_store.events;
\echo :LAST_ERROR_SQLSTATE

-- the reader reads, and writes nothing
SET ROLE regress_reader;
SELECT stream_version, event_type FROM event_store.read_stream('priv-2');
SELECT event_store.stream_version('priv-2');
SELECT stream_id, version FROM event_store.streams WHERE stream_id = 'priv-2';
SELECT event_store.append('priv-2', 'Read', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.add_upcaster('Read', 1, 'pg_catalog.jsonb_strip_nulls(jsonb)');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, event_type, data) VALUES ('priv-2', 'Read', '{}');
\echo :LAST_ERROR_SQLSTATE

-- the admin does both, manages upcasters, and still cannot rewrite history
SET ROLE regress_admin;
SELECT event_store.append('priv-2', 'Administered', '{}', expected_version => 4);
SELECT count(*) FROM event_store.read_stream('priv-2');
SELECT event_store.add_upcaster('Administered', 1, 'pg_catalog.jsonb_strip_nulls(jsonb)');
SELECT event_type, current_version FROM event_store.event_schemas WHERE event_type = 'Administered';
SELECT event_store.drop_upcaster('Administered', 1);
-- the registries are written by their functions only, not even by the admin
INSERT INTO event_store.upcasters VALUES ('Administered', 1, 'pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb)');
\echo :LAST_ERROR_SQLSTATE
DELETE FROM event_store.upcasters;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.aggregates VALUES ('forged', 'public.priv_count(jsonb,event_store.event)', '{}', NULL, 1, now());
\echo :LAST_ERROR_SQLSTATE
UPDATE event_store.aggregates SET generation = 1;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM event_store.snapshots;
\echo :LAST_ERROR_SQLSTATE
UPDATE event_store.events SET data = '{}';
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE event_store.events DISABLE TRIGGER append_only;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- aggregates: the writer loads nothing; the reader loads but writes no
-- snapshot and handles no command
SET ROLE regress_writer;
SELECT * FROM event_store.load_aggregate('priv-2', 'priv_counter');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('priv-2', 'priv_counter', 'priv_decide(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE
SET ROLE regress_reader;
SELECT * FROM event_store.load_aggregate('priv-2', 'priv_counter');
SELECT count(*) AS snapshots FROM event_store.snapshots WHERE stream_id = 'priv-2';
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.load_snapshot('priv-2', 'priv_counter');
SELECT event_store.execute('priv-2', 'priv_counter', 'priv_decide(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_snapshot('priv-2', 'priv_counter', 1, '{"n": 99}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.delete_snapshots();
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.define_aggregate('priv_counter', 'priv_count(jsonb, event_store.event)');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.snapshots (stream_id, aggregate, generation, version, state, recorded_at)
  VALUES ('priv-2', 'priv_counter', 1, 1, '{"n": 99}', now());
\echo :LAST_ERROR_SQLSTATE
-- the handler executes commands, and its loads write snapshots
SET ROLE regress_handler;
SELECT event_store.execute('priv-2', 'priv_counter', 'priv_decide(jsonb, jsonb)', '{}');
SELECT * FROM event_store.load_aggregate('priv-2', 'priv_counter');
SELECT * FROM event_store.load_snapshot('priv-2', 'priv_counter');
SELECT version, state FROM event_store.snapshots WHERE stream_id = 'priv-2' ORDER BY version;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT version, state FROM event_store.snapshots WHERE stream_id = 'priv-2' ORDER BY version;
SET ROLE regress_handler;
SELECT event_store.save_snapshot('priv-2', 'priv_counter', 1, '{"n": 99}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.delete_snapshots('priv-2');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.define_aggregate('priv_counter', 'priv_count(jsonb, event_store.event)');
\echo :LAST_ERROR_SQLSTATE
-- the admin defines aggregates and manages snapshots
SET ROLE regress_admin;
SELECT event_store.save_snapshot('priv-2', 'priv_counter', 1, '{"n": 1}');
SELECT event_store.delete_snapshots('priv-2');
SELECT event_store.define_aggregate('priv_counter', 'priv_count(jsonb, event_store.event)', '{"n": 0}', 1);
SELECT generation FROM event_store.aggregates WHERE name = 'priv_counter';
-- nobody may call a reducer or decider they may not execute
RESET ROLE;
REVOKE EXECUTE ON FUNCTION priv_count(jsonb, event_store.event), priv_decide(jsonb, jsonb) FROM PUBLIC;
SET ROLE regress_reader;
SELECT * FROM event_store.load_aggregate('priv-2', 'priv_counter');
\echo :LAST_ERROR_SQLSTATE
SET ROLE regress_handler;
SELECT event_store.execute('priv-2', 'priv_counter', 'priv_decide(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- no role but the owner may write a registry directly
SELECT c.relname, a.privilege_type, a.grantee::regrole
  FROM pg_class c, aclexplode(c.relacl) a
 WHERE c.relnamespace = 'event_store'::regnamespace AND a.grantee <> c.relowner
   AND c.relname IN ('upcasters', 'aggregates', 'protected_types')
   AND a.privilege_type <> 'SELECT'
 ORDER BY 1, 2, 3;

DROP OWNED BY regress_writer, regress_reader, regress_handler, regress_admin;
DROP ROLE regress_admin, regress_handler, regress_writer, regress_reader;
DELETE FROM event_store.aggregates WHERE name = 'priv_counter';
DROP FUNCTION priv_count(jsonb, event_store.event), priv_decide(jsonb, jsonb);
