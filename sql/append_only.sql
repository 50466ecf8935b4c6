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

-- the row-level guard refuses on its own: the logical-replication apply
-- worker fires row triggers only (TAP test 006_replication shows it)
ALTER TABLE event_store.events DISABLE TRIGGER append_only;
UPDATE event_store.events SET data = '{"n": 2}' WHERE stream_id = 'keep-1';
\echo :LAST_ERROR_SQLSTATE
DELETE FROM event_store.events WHERE stream_id = 'keep-1';
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE event_store.events ENABLE ALWAYS TRIGGER append_only;

-- the triggers are ALWAYS triggers
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'event_store.events'::regclass AND NOT tgisinternal ORDER BY tgname;

-- A superuser who turns the guards off and deletes a stream's newest event: the next
-- append sees the stream as it is (the shared cache of heads is not read while an update
-- or a delete can pass), for an id the cache holds as for one too long for it.
-- (no statistics meanwhile: a new set empties the cache, which would hide what this shows)
ALTER TABLE event_store.events SET (autovacuum_enabled = off);
ALTER TABLE event_store.events DISABLE TRIGGER append_only, DISABLE TRIGGER append_only_rows;
-- (the pipeline worker empties the cache once more when it takes in the ALTER: let it first)
SELECT event_store.append('trim-0', 'T', '{}');
SELECT event_store.wait_for_pipeline('30 s');
SELECT event_store.append('trim-1', 'T', '{}'), event_store.append('trim-1', 'T', '{}');
SELECT event_store.append('trim-1', 'T', '{}');
SELECT event_store.append(repeat('t', 65), 'T', '{}'), event_store.append(repeat('t', 65), 'T', '{}');
SELECT event_store.append(repeat('t', 65), 'T', '{}');
DELETE FROM event_store.events WHERE stream_id IN ('trim-1', repeat('t', 65)) AND stream_version = 3;
SELECT event_store.append('trim-1', 'T', '{}', expected_version => 3);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append(repeat('t', 65), 'T', '{}', expected_version => 3);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('trim-1', 'T', '{}'), event_store.append(repeat('t', 65), 'T', '{}');
ALTER TABLE event_store.events ENABLE ALWAYS TRIGGER append_only, ENABLE ALWAYS TRIGGER append_only_rows;
-- with the guards back, appends go on from the stream as it is
SELECT event_store.append('trim-1', 'T', '{}');
SELECT event_store.append('trim-1', 'T', '{}', expected_version => 4);
SELECT string_agg(stream_version::text, ' ' ORDER BY stream_version) FROM event_store.events WHERE stream_id = 'trim-1';
ALTER TABLE event_store.events RESET (autovacuum_enabled);

-- Writers do not set recorded_at: a time in the future, 'infinity' above all,
-- would pin every later event of the stream there (as_of would never return
-- them).  Only a superuser (a restore, an import, a logical replica) supplies
-- one, and it must be finite.
CREATE ROLE regress_writer_rec;
GRANT USAGE ON SCHEMA event_store TO regress_writer_rec;
GRANT INSERT ON event_store.events TO regress_writer_rec;
GRANT EXECUTE ON FUNCTION event_store.append(text, text, jsonb, jsonb, bigint, uuid, integer) TO regress_writer_rec;
SET ROLE regress_writer_rec;
INSERT INTO event_store.events (stream_id, event_type, data, recorded_at) VALUES ('pin-1', 'Pinned', '{}', 'infinity');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, event_type, data, recorded_at) VALUES ('pin-1', 'Pinned', '{}', now() + interval '1 year');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, event_type, data, recorded_at) VALUES ('pin-1', 'Pinned', '{}', now() - interval '1 year');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('pin-1', 'Appended', '{}');
RESET ROLE;
SELECT stream_version, event_type, recorded_at <= now() AS recorded_now,
       (SELECT count(*) FROM event_store.read_stream('pin-1', as_of => now())) AS visible_as_of_now
  FROM event_store.read_stream('pin-1');
INSERT INTO event_store.events (stream_id, event_type, data, recorded_at) VALUES ('pin-2', 'Pinned', '{}', 'infinity');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, event_type, data, recorded_at) VALUES ('pin-2', 'Pinned', '{}', '-infinity');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, event_type, data, recorded_at) VALUES ('pin-2', 'Imported', '{}', '2020-01-01 00:00+00');
SELECT stream_version, event_type, recorded_at FROM event_store.read_stream('pin-2');

-- Nor do writers write the extension's own streams (the category
-- "event_store", where forget() records SubjectForgotten).
SET ROLE regress_writer_rec;
SELECT event_store.append('event_store-subjects', 'SubjectForgotten', '{"subject_sha256": "00"}');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, event_type, data) VALUES ('event_store-other', 'X', '{}');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, event_type, data) VALUES ('event_store', 'X', '{}');
\echo :LAST_ERROR_SQLSTATE
-- a stream merely starting with those letters is another category
SELECT event_store.append('event_stores-1', 'X', '{}'), event_store.append('event_store_x-1', 'X', '{}');
RESET ROLE;
SELECT count(*) FROM event_store.events WHERE stream_id LIKE 'event\_store-%' OR stream_id = 'event_store';
REVOKE ALL ON event_store.events FROM regress_writer_rec;
REVOKE ALL ON FUNCTION event_store.append(text, text, jsonb, jsonb, bigint, uuid, integer) FROM regress_writer_rec;
REVOKE ALL ON SCHEMA event_store FROM regress_writer_rec;
DROP ROLE regress_writer_rec;

SELECT stream_version, event_type, data FROM event_store.read_stream('keep-1');
