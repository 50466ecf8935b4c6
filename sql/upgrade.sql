-- The upgrade chain: a database at 0.1.0 with events in it, ALTER EXTENSION
-- event_store UPDATE, then a projection that catches up over the events
-- written before the upgrade.
\set SHOW_CONTEXT never
SELECT current_database() AS regression_db \gset
-- what a fresh install at the default version has
SELECT pg_catalog.md5(string_agg(pg_describe_object(classid, objid, objsubid), ', ' ORDER BY 1)) AS fresh_objects,
       count(*) AS fresh_count
  FROM pg_depend WHERE deptype = 'e' AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'event_store') \gset
SELECT extversion FROM pg_extension WHERE extname = 'event_store';

CREATE DATABASE es_upgrade;
\c es_upgrade
SET synchronous_commit = on;
CREATE EXTENSION event_store VERSION '0.1.0' CASCADE;
SELECT extversion FROM pg_extension WHERE extname = 'event_store';
SELECT to_regclass('event_store.projections') AS projections_table;
SELECT event_store.append('account-1', 'Deposited', '{"amount": 10}');
SELECT event_store.append('account-1', 'Deposited', '{"amount": 5}');
SELECT event_store.append('account-2', 'Deposited', '{"amount": 7}');
SELECT event_store.wait_for_pipeline('30 s');
SELECT count(*) FROM event_store.read_all();

CREATE TEMP TABLE members_010 AS
SELECT pg_describe_object(classid, objid, objsubid) AS object
  FROM pg_depend WHERE deptype = 'e' AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'event_store');

ALTER EXTENSION event_store UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'event_store';
-- what the update added, and what it removed
SELECT pg_describe_object(classid, objid, objsubid) AS added
  FROM pg_depend WHERE deptype = 'e' AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'event_store')
EXCEPT SELECT object FROM members_010 ORDER BY 1;
SELECT object AS removed FROM members_010
EXCEPT SELECT pg_describe_object(classid, objid, objsubid)
  FROM pg_depend WHERE deptype = 'e' AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'event_store')
 ORDER BY 1;
-- the updated extension has exactly the objects of a fresh install (which is
-- 0.1.0 and the same chain today; the check holds the day a full script ships)
SELECT pg_catalog.md5(string_agg(pg_describe_object(classid, objid, objsubid), ', ' ORDER BY 1)) = :'fresh_objects' AS same_objects,
       count(*) = :fresh_count AS same_count
  FROM pg_depend WHERE deptype = 'e' AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'event_store');
-- the events written before the update are still there, in the same order
SELECT global_position, stream_id, stream_version, data FROM event_store.read_all();
-- the log now records each event's id, and is keyed by it
SELECT count(*) AS entries, count(*) FILTER (WHERE g.event_id = e.event_id) AS with_their_id
  FROM event_store.global_log g JOIN event_store.events e USING (stream_id, stream_version);
SELECT pg_get_indexdef('event_store.global_log_event_key'::regclass);

-- a projection created after the update catches up over them
CREATE TABLE totals (account text PRIMARY KEY, total numeric NOT NULL);
CREATE FUNCTION add_to_total(e event_store.event) RETURNS void LANGUAGE sql AS $$
  INSERT INTO totals VALUES (e.stream_id, (e.data->>'amount')::numeric)
  ON CONFLICT (account) DO UPDATE SET total = totals.total + EXCLUDED.total
$$;
SELECT event_store.create_projection('totals', 'add_to_total(event_store.event)');
SELECT event_store.append('account-2', 'Deposited', '{"amount": 1}');
SELECT event_store.wait_for_projection('totals', '30 s');
SELECT * FROM totals ORDER BY account;
SELECT name, state, position, events_applied, lag_events FROM event_store.projection_status;
-- and an inline one
CREATE TABLE counts (account text PRIMARY KEY, n int NOT NULL);
CREATE FUNCTION count_event(e event_store.event) RETURNS void LANGUAGE sql AS $$
  INSERT INTO counts VALUES (e.stream_id, 1) ON CONFLICT (account) DO UPDATE SET n = counts.n + 1
$$;
SELECT event_store.create_projection('counts', 'count_event(event_store.event)', mode => 'inline');
SELECT event_store.append('account-1', 'Deposited', '{"amount": 2}');
SELECT * FROM counts ORDER BY account;

-- A library serves the installed versions up to its own: one older than the
-- installed scripts (a server not restarted after the package was upgraded)
-- refuses, rather than run an old library against tables it does not know.
SELECT extversion AS current_version FROM pg_extension WHERE extname = 'event_store' \gset
UPDATE pg_extension SET extversion = '9.0.0' WHERE extname = 'event_store';
\c es_upgrade
SELECT event_store.stream_version('account-1');
\echo :LAST_ERROR_SQLSTATE
UPDATE pg_extension SET extversion = :'current_version' WHERE extname = 'event_store';
\c es_upgrade
SELECT event_store.stream_version('account-1');

\c :regression_db
DROP DATABASE es_upgrade;
SELECT count(*) FROM pg_database WHERE datname = 'es_upgrade';

-- The update refuses a global log with an entry whose event is missing (it
-- could not give that entry its event's id), and leaves 0.1.0 in place.
CREATE DATABASE es_upgrade_ghost;
\c es_upgrade_ghost
SET synchronous_commit = on;
CREATE EXTENSION event_store VERSION '0.1.0' CASCADE;
SELECT event_store.append('account-1', 'Deposited', '{"amount": 10}');
SELECT event_store.wait_for_pipeline('30 s');
INSERT INTO event_store.global_log VALUES (2, 'ghost-1', 1, 'ghost', 'Boo', '0/0');
ALTER EXTENSION event_store UPDATE;
\echo :LAST_ERROR_SQLSTATE
SELECT extversion FROM pg_extension WHERE extname = 'event_store';
DELETE FROM event_store.global_log WHERE stream_id = 'ghost-1';
-- nor in a REPEATABLE READ transaction (its snapshot could miss positions)
BEGIN ISOLATION LEVEL REPEATABLE READ;
ALTER EXTENSION event_store UPDATE;
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
ALTER EXTENSION event_store UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'event_store';
SELECT global_position, stream_id, event_id IS NOT NULL AS has_id FROM event_store.global_log;
\c :regression_db
DROP DATABASE es_upgrade_ghost;
