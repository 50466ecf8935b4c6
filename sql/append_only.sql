-- The log is append-only: UPDATE, DELETE, TRUNCATE and MERGE are refused for
-- every role, the owner and superusers included, also in replica mode.
\set SHOW_CONTEXT never
SELECT event_store.append('keep-1', 'Kept', '{"n": 1}');

UPDATE event_store.events SET data = '{"n": 2}' WHERE stream_id = 'keep-1';
\echo :LAST_ERROR_SQLSTATE
DELETE FROM event_store.events WHERE stream_id = 'keep-1';
\echo :LAST_ERROR_SQLSTATE
TRUNCATE event_store.events;
\echo :LAST_ERROR_SQLSTATE
-- even when no row matches
UPDATE event_store.events SET data = '{}' WHERE false;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM event_store.events WHERE false;
\echo :LAST_ERROR_SQLSTATE
MERGE INTO event_store.events e USING (VALUES ('keep-1')) v(s) ON e.stream_id = v.s
  WHEN MATCHED THEN DELETE;
\echo :LAST_ERROR_SQLSTATE
MERGE INTO event_store.events e USING (VALUES ('keep-1')) v(s) ON e.stream_id = v.s
  WHEN MATCHED THEN UPDATE SET data = '{}';
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, stream_version, event_type, data) VALUES ('keep-1', 1, 'X', '{}')
  ON CONFLICT (stream_id, stream_version) DO UPDATE SET data = excluded.data;
\echo :LAST_ERROR_SQLSTATE
-- ON CONFLICT DO NOTHING is no way around the version check either
INSERT INTO event_store.events (stream_id, stream_version, event_type, data) VALUES ('keep-1', 1, 'X', '{}')
  ON CONFLICT DO NOTHING;
\echo :LAST_ERROR_SQLSTATE

-- replica mode (what logical replication and pg_restore --disable-triggers use)
SET session_replication_role = replica;
UPDATE event_store.events SET data = '{}';
\echo :LAST_ERROR_SQLSTATE
DELETE FROM event_store.events;
\echo :LAST_ERROR_SQLSTATE
TRUNCATE event_store.events;
\echo :LAST_ERROR_SQLSTATE
-- versioning still applies in replica mode
INSERT INTO event_store.events (stream_id, stream_version, event_type, data) VALUES ('keep-1', 5, 'X', '{}');
\echo :LAST_ERROR_SQLSTATE
RESET session_replication_role;

-- a writer role with every table privilege granted is refused the same way
CREATE ROLE regress_owner_like;
GRANT USAGE ON SCHEMA event_store TO regress_owner_like;
GRANT ALL ON event_store.events TO regress_owner_like;
SET ROLE regress_owner_like;
DELETE FROM event_store.events;
\echo :LAST_ERROR_SQLSTATE
TRUNCATE event_store.events;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
REVOKE ALL ON event_store.events FROM regress_owner_like;
REVOKE ALL ON SCHEMA event_store FROM regress_owner_like;
DROP ROLE regress_owner_like;

-- the triggers are ALWAYS triggers
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'event_store.events'::regclass AND NOT tgisinternal ORDER BY tgname;

SELECT stream_version, event_type, data FROM event_store.read_stream('keep-1');
