-- Moving from message-db: its schema message_store is refused until
-- renamed; import_messages() appends its messages (stream order, positions,
-- ids, types, data, metadata, times), again harmlessly; translate_position()
-- maps a consumer's stored position.
\set SHOW_CONTEXT never
\pset null '(null)'
CREATE FUNCTION pg_temp.err(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE OPERATOR(pg_catalog.||) ': ' OPERATOR(pg_catalog.||) SQLERRM;
END $$;
SET synchronous_commit = on;

-- a database where message-db is installed: its schema, table and functions
-- (DROP EXTENSION leaves the schema CREATE EXTENSION made)
DROP EXTENSION event_store_message_db;
DROP SCHEMA message_store;
CREATE SCHEMA message_store;
CREATE TABLE message_store.messages (
    global_position bigserial NOT NULL PRIMARY KEY,
    position bigint NOT NULL,
    time timestamp without time zone DEFAULT (now() AT TIME ZONE 'utc') NOT NULL,
    stream_name text NOT NULL,
    type text NOT NULL,
    data jsonb,
    metadata jsonb,
    id uuid NOT NULL
);
CREATE FUNCTION message_store.message_store_version() RETURNS varchar LANGUAGE sql AS $$ SELECT '1.3.0'::varchar $$;
-- its messages: global positions with gaps (rolled-back writes), streams
-- interleaved, NULL data and metadata, a time that goes back along a stream
-- (a transaction that started earlier and wrote later)
INSERT INTO message_store.messages (global_position, position, time, stream_name, type, data, metadata, id) VALUES
  (1,  0, '2024-03-01 10:00:00',     'legacyAccount-1', 'Opened',    '{"owner": "Alice"}', NULL, '00000000-0000-4000-8000-600000000001'),
  (2,  0, '2024-03-01 10:00:01',     'legacyAccount-2', 'Opened',    '{"owner": "Bob"}',   '{"correlationStreamName": "web-1"}', '00000000-0000-4000-8000-600000000002'),
  (4,  1, '2024-03-01 10:00:02',     'legacyAccount-1', 'Deposited', '{"amount": 50}',     '{"causationMessageGlobalPosition": 2}', '00000000-0000-4000-8000-600000000003'),
  (7,  2, '2024-03-01 10:00:01.5',   'legacyAccount-1', 'Deposited', '{"amount": 5}',      NULL, '00000000-0000-4000-8000-600000000004'),
  (8,  0, '2024-03-01 10:00:03',     'legacyCommand',   'Close',     NULL,                 NULL, '00000000-0000-4000-8000-600000000005'),
  (9,  1, '2024-03-01 10:00:04',     'legacyAccount-2', 'Closed',    '{}',                 '{}', '00000000-0000-4000-8000-600000000006'),
  (12, 0, '2024-03-01 10:00:05.123', 'legacyAccount:position-c1', 'Recorded', '{"position": 7}', NULL, '00000000-0000-4000-8000-600000000007');

-- event_store_message_db refuses to share the schema, and says what to do
SELECT pg_temp.err('CREATE EXTENSION event_store_message_db');
ALTER SCHEMA message_store RENAME TO message_db;
CREATE EXTENSION event_store_message_db;
-- another schema message_store, not empty, is refused too
DROP EXTENSION event_store_message_db;
CREATE TABLE message_store.other (i int);
SELECT pg_temp.err('CREATE EXTENSION event_store_message_db');
DROP SCHEMA message_store CASCADE;
-- nor one that others may create objects in
CREATE SCHEMA message_store;
GRANT CREATE ON SCHEMA message_store TO PUBLIC;
SELECT pg_temp.err('CREATE EXTENSION event_store_message_db');
DROP SCHEMA message_store;
CREATE EXTENSION event_store_message_db;

-- the import, as a superuser: times kept
SELECT event_store.wait_for_pipeline('30 s');
SELECT COALESCE(max(global_position), 0) AS base FROM event_store.global_log \gset
SELECT message_store.import_messages('message_db.messages');
SELECT stream_id, stream_version, event_id, event_type, data, metadata, recorded_at AT TIME ZONE 'UTC' AS recorded_utc
  FROM event_store.events WHERE stream_id LIKE 'legacy%' ORDER BY stream_id, stream_version;
SELECT event_store.wait_for_pipeline('30 s');
-- in message-db's global order, dense positions after the log's end
SELECT global_position - :base AS global_position, stream_name, position, type, time
  FROM message_store.get_category_messages('legacyAccount');
-- a stream without id (message-db reads it by category, or its last message)
SELECT stream_name, position, global_position - :base AS global_position, data, metadata
  FROM message_store.get_category_messages('legacyCommand');
SELECT stream_name, position, type FROM message_store.get_last_stream_message('legacyCommand');
SELECT array_agg(o.global_position ORDER BY n.global_position) AS old_positions_in_new_order
  FROM event_store.read_all(:base, 100) n JOIN message_db.messages o ON o.id = n.event_id;
-- streams go on where they were
SELECT message_store.write_message('00000000-0000-4000-8000-600000000011', 'legacyAccount-1', 'Withdrawn', '{"amount": 1}', NULL, 2);
-- again: nothing is appended twice
SELECT message_store.import_messages('message_db.messages');
SELECT count(*) FROM event_store.events WHERE stream_id LIKE 'legacy%';

-- a consumer's stored position, to the same point of the new log
SELECT p AS old, CASE t WHEN 0 THEN 0 ELSE t - :base END AS new
  FROM (SELECT p, message_store.translate_position('message_db.messages', p) AS t
          FROM unnest(ARRAY[0, 1, 2, 3, 4, 7, 11, 12, 100]) p) s;
SELECT pg_temp.err($$SELECT message_store.translate_position('message_db.messages', NULL)$$);

-- what cannot be imported is named before anything is written
CREATE TABLE message_db.not_messages (id uuid, stream_name text);
SELECT pg_temp.err($$SELECT message_store.import_messages('message_db.not_messages')$$);
SELECT pg_temp.err($$SELECT message_store.import_messages('message_db.no_such_table')$$);
SELECT pg_temp.err($$SELECT message_store.import_messages(NULL)$$);
CREATE TABLE message_db.gap (LIKE message_db.messages);
INSERT INTO message_db.gap VALUES (1, 0, now(), 'gapStream-1', 'A', '{}', NULL, gen_random_uuid()),
                                  (2, 2, now(), 'gapStream-1', 'A', '{}', NULL, gen_random_uuid());
SELECT pg_temp.err($$SELECT message_store.import_messages('message_db.gap')$$);
CREATE TABLE message_db.bad_data (LIKE message_db.messages);
INSERT INTO message_db.bad_data VALUES (1, 0, now(), 'badStream-1', 'A', '{}', NULL, gen_random_uuid()),
                                       (5, 1, now(), 'badStream-1', 'A', '[1]', NULL, gen_random_uuid());
SELECT pg_temp.err($$SELECT message_store.import_messages('message_db.bad_data')$$);
CREATE TABLE message_db.bad_name (LIKE message_db.messages);
INSERT INTO message_db.bad_name VALUES (3, 0, now(), '', 'A', '{}', NULL, gen_random_uuid());
SELECT pg_temp.err($$SELECT message_store.import_messages('message_db.bad_name')$$);
SELECT count(*) AS written FROM event_store.events WHERE stream_id LIKE 'gap%' OR stream_id LIKE 'bad%';
-- a stream that exists in the log already with other events: event_store's
-- refusal, and nothing of the import written
CREATE TABLE message_db.clash (LIKE message_db.messages);
INSERT INTO message_db.clash VALUES (1, 0, now(), 'clashStream-1', 'A', '{}', NULL, gen_random_uuid()),
                                    (2, 0, now(), 'legacyAccount-2', 'A', '{}', NULL, gen_random_uuid());
SELECT pg_temp.err($$SELECT message_store.import_messages('message_db.clash')$$);
SELECT count(*) AS written FROM event_store.events WHERE stream_id = 'clashStream-1';

-- as a role that is not a superuser: the import's time, the original kept in the metadata
CREATE ROLE mdb_importer;
GRANT USAGE ON SCHEMA message_db, message_store, event_store TO mdb_importer;
GRANT INSERT ON event_store.events TO mdb_importer;
GRANT EXECUTE ON FUNCTION message_store.import_messages(regclass), message_store._object(jsonb),
                          event_store.current_schema_version(text) TO mdb_importer;
CREATE TABLE message_db.later (LIKE message_db.messages);
INSERT INTO message_db.later VALUES (20, 0, '2024-03-02 08:00:00', 'laterStream-1', 'A', '{"n": 1}', '{"k": "v"}', '00000000-0000-4000-8000-600000000021'),
                                    (21, 1, '2024-03-02 08:00:01', 'laterStream-1', 'B', '{"n": 2}', NULL, '00000000-0000-4000-8000-600000000022');
GRANT SELECT ON message_db.later TO mdb_importer;
SET ROLE mdb_importer;
SELECT message_store.import_messages('message_db.later');
RESET ROLE;
SELECT stream_version, event_type, metadata, recorded_at > now() - interval '1 minute' AS recorded_now
  FROM event_store.events WHERE stream_id = 'laterStream-1' ORDER BY stream_version;
DROP OWNED BY mdb_importer;
DROP ROLE mdb_importer;
