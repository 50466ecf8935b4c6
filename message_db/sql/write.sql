-- write_message: positions, expected versions, message-db's errors, JSON
-- and ids; stream_version.
\set SHOW_CONTEXT never
\pset null '(null)'
CREATE FUNCTION pg_temp.err(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE OPERATOR(pg_catalog.||) ': ' OPERATOR(pg_catalog.||) SQLERRM;
END $$;
SET search_path = message_store;

-- an empty stream has no version; positions are 0, 1, 2, ...
SELECT stream_version('writeStream-1') IS NULL AS no_version;
SELECT write_message('00000000-0000-4000-8000-000000000001', 'writeStream-1', 'Opened', '{"n": 1}');
SELECT write_message('00000000-0000-4000-8000-000000000002', 'writeStream-1', 'Deposited', '{"n": 2}', '{"m": 2}');
SELECT stream_version('writeStream-1');

-- expected versions: the stream's newest position, -1 for no stream
SELECT write_message('00000000-0000-4000-8000-000000000003', 'writeStream-1', 'Deposited', '{"n": 3}', NULL, 1);
SELECT write_message('00000000-0000-4000-8000-000000000004', 'writeStream-2', 'Opened', '{"n": 4}', NULL, -1);
SELECT write_message('00000000-0000-4000-8000-000000000005', 'writeStream-2', 'Deposited', '{"n": 5}', expected_version => 0);
SELECT stream_version('writeStream-1') AS one, stream_version('writeStream-2') AS two;
-- a mismatch: message-db's exception, its words (clients match on them), nothing written
SELECT pg_temp.err($$SELECT write_message('00000000-0000-4000-8000-000000000006', 'writeStream-1', 'Deposited', '{}', NULL, 1)$$);
SELECT pg_temp.err($$SELECT write_message('00000000-0000-4000-8000-000000000006', 'writeStream-1', 'Deposited', '{}', NULL, 3)$$);
SELECT pg_temp.err($$SELECT write_message('00000000-0000-4000-8000-000000000006', 'writeStream-1', 'Deposited', '{}', NULL, -1)$$);
SELECT pg_temp.err($$SELECT write_message('00000000-0000-4000-8000-000000000006', 'writeStream-3', 'Opened', '{}', NULL, 0)$$);
SELECT pg_temp.err($$SELECT write_message('00000000-0000-4000-8000-000000000006', 'writeStream-3', 'Opened', '{}', NULL, -2)$$);
SELECT pg_temp.err($$SELECT write_message('00000000-0000-4000-8000-000000000006', 'writeStream-1', 'Deposited', '{}', NULL, -2)$$);
SELECT stream_version('writeStream-1') AS still_2, stream_version('writeStream-3') IS NULL AS still_none,
       (SELECT count(*) FROM event_store.events WHERE event_id = '00000000-0000-4000-8000-000000000006') AS written;
-- inside a transaction the error aborts it like message-db's
BEGIN;
SELECT write_message('00000000-0000-4000-8000-000000000007', 'writeStream-4', 'Opened', '{}', NULL, -1);
SELECT write_message('00000000-0000-4000-8000-000000000008', 'writeStream-4', 'Opened', '{}', NULL, -1);
ROLLBACK;
SELECT stream_version('writeStream-4') IS NULL AS rolled_back;

-- event_store's versions are message-db's positions + 1
SELECT stream_id, stream_version, event_id, event_type, data, metadata
  FROM event_store.read_stream('writeStream-1');

-- ids: message-db's id argument is text, cast to a UUID; NULL is its NOT NULL error
SELECT write_message('{00000000-0000-4000-8000-000000000009}', 'writeStream-5', 'Opened', '{}');
SELECT write_message('00000000000040008000A0000000000A', 'writeStream-5', 'Opened', '{}');
SELECT event_id FROM event_store.read_stream('writeStream-5');
SELECT pg_temp.err($$SELECT write_message('not-a-uuid', 'writeStream-5', 'Opened', '{}')$$);
SELECT pg_temp.err($$SELECT write_message(NULL, 'writeStream-5', 'Opened', '{}')$$);
SELECT pg_temp.err($$SELECT write_message('00000000-0000-4000-8000-00000000000b', NULL, 'Opened', '{}')$$);
SELECT pg_temp.err($$SELECT write_message('00000000-0000-4000-8000-00000000000b', 'writeStream-5', NULL, '{}')$$);
SELECT pg_temp.err($$SELECT write_message(NULL, 'writeStream-5', 'Opened', '{}', NULL, 1)$$);
-- the same id again: a retried write is not written twice and returns the
-- message's position (message-db: a unique violation); with an expected
-- version it must be the one the message was written at; another message
-- with the id is refused (event_store's VE002)
SELECT write_message('00000000-0000-4000-8000-000000000001', 'writeStream-1', 'Opened', '{"n": 1}');
SELECT write_message('00000000-0000-4000-8000-000000000003', 'writeStream-1', 'Deposited', '{"n": 3}', NULL, 1);
SELECT write_message('00000000-0000-4000-8000-000000000004', 'writeStream-2', 'Opened', '{"n": 4}', NULL, -1);
SELECT pg_temp.err($$SELECT write_message('00000000-0000-4000-8000-000000000001', 'writeStream-1', 'Opened', '{"n": 1}', NULL, 0)$$);
SELECT pg_temp.err($$SELECT write_message('00000000-0000-4000-8000-000000000001', 'writeStream-1', 'Opened', '{"n": 99}')$$);
SELECT stream_version('writeStream-1') AS still_2;

-- JSON: data and metadata are jsonb arguments (bad JSON text fails as in
-- message-db); NULL and JSON null are stored as {}; other non-objects are refused
SELECT pg_temp.err($$SELECT write_message('00000000-0000-4000-8000-00000000000c', 'writeStream-6', 'Opened', '{"a": ')$$);
SELECT pg_temp.err($$SELECT write_message('00000000-0000-4000-8000-00000000000c', 'writeStream-6', 'Opened', '{}', 'nope')$$);
SELECT write_message('00000000-0000-4000-8000-00000000000c', 'writeStream-6', 'Opened', NULL);
SELECT write_message('00000000-0000-4000-8000-00000000000d', 'writeStream-6', 'Opened', 'null', 'null');
SELECT pg_temp.err($$SELECT write_message('00000000-0000-4000-8000-00000000000e', 'writeStream-6', 'Opened', '[1, 2]')$$);
SELECT pg_temp.err($$SELECT write_message('00000000-0000-4000-8000-00000000000e', 'writeStream-6', 'Opened', '{}', '"text"')$$);
SELECT position, data, metadata FROM get_stream_messages('writeStream-6');
-- text arguments, as clients send them
PREPARE w(text, text, text, text, text, bigint) AS SELECT write_message($1, $2, $3, $4::jsonb, $5::jsonb, $6);
EXECUTE w('00000000-0000-4000-8000-00000000000f', 'writeStream-6', 'Noted', '{"k": "v"}', '{"correlationStreamName": "x-1"}', 1);
EXECUTE w('00000000-0000-4000-8000-000000000010', 'writeStream-6', 'Noted', '{"k": "v"}', NULL, NULL);
SELECT pg_temp.err($$EXECUTE w('00000000-0000-4000-8000-000000000011', 'writeStream-6', 'Noted', '{}', NULL, 1)$$);

-- names event_store refuses: empty, longer than 1024 bytes
SELECT pg_temp.err($$SELECT write_message('00000000-0000-4000-8000-000000000012', '', 'Opened', '{}')$$);
SELECT pg_temp.err($$SELECT write_message('00000000-0000-4000-8000-000000000012', 'writeStream-7', repeat('t', 1025), '{}')$$);
-- stream_version of names no stream can have
SELECT stream_version(NULL) IS NULL AS null_name, stream_version('') IS NULL AS empty_name,
       stream_version(repeat('s', 2000)) IS NULL AS long_name, stream_version('writeStream') IS NULL AS category;

-- the write path: one event_store.append, with or without an expected version
SET track_functions = 'all';
BEGIN;
CREATE TEMP TABLE calls0 AS SELECT funcid, calls FROM pg_stat_xact_user_functions;
SELECT write_message('00000000-0000-4000-8000-000000000013', 'writeStream-8', 'Opened', '{}');
SELECT write_message('00000000-0000-4000-8000-000000000014', 'writeStream-8', 'Opened', '{}', NULL, 0);
SELECT f.schemaname, f.funcname, f.calls - COALESCE(c.calls, 0) AS calls
  FROM pg_stat_xact_user_functions f LEFT JOIN calls0 c USING (funcid)
 WHERE f.calls > COALESCE(c.calls, 0) AND (f.schemaname = 'event_store' OR f.funcname !~ '^_(check|category_start|stream_start)')
 ORDER BY 1, 2;
DROP TABLE calls0;
COMMIT;
RESET track_functions;
