-- get_stream_messages and get_last_stream_message: positions, batches,
-- message-db's errors, global positions, SQL conditions.
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
SET synchronous_commit = on;

-- 12 messages in readStream-1, 3 types; one in readStream-2
SELECT count(write_message(('00000000-0000-4000-8000-1000000000' || lpad(i::text, 2, '0'))::varchar, 'readStream-1',
                           (ARRAY['Opened', 'Deposited', 'Withdrawn'])[1 + i % 3], jsonb_build_object('n', i),
                           jsonb_build_object('i', i)))
  FROM generate_series(0, 11) i;
SELECT write_message('00000000-0000-4000-8000-200000000000', 'readStream-2', 'Opened', '{"n": 0}');
SELECT event_store.wait_for_pipeline('30 s');
SELECT COALESCE(min(global_position), 1) - 1 AS base FROM event_store.read_all(0, 1000000, '{readStream}') \gset

-- every column: the message type, as message-db returns it
SELECT id, stream_name, type, position, global_position - :base AS global_position, data, metadata,
       pg_typeof(time) AS time_type, abs(extract(epoch FROM time - (now() AT TIME ZONE 'UTC'))) < 60 AS time_is_utc
  FROM get_stream_messages('readStream-1', 0, 2);
-- position (>=, default 0), batch_size (default 1000, -1 all, 0 none)
SELECT array_agg(position) FROM get_stream_messages('readStream-1');
SELECT array_agg(position) FROM get_stream_messages('readStream-1', 5);
SELECT array_agg(position) FROM get_stream_messages('readStream-1', 5, 3);
SELECT array_agg(position) FROM get_stream_messages('readStream-1', 10, 5);
SELECT count(*) FROM get_stream_messages('readStream-1', 12);
SELECT array_agg(position) FROM get_stream_messages('readStream-1', -5, 2);
SELECT count(*) FROM get_stream_messages('readStream-1', 0, -1);
SELECT count(*) FROM get_stream_messages('readStream-1', 0, 0);
SELECT count(*) FROM get_stream_messages('readStream-1', NULL, NULL);
SELECT count(*) FROM get_stream_messages('readStream-1', 9223372036854775807);
SELECT count(*) FROM get_stream_messages('readStream-1', 0, 9223372036854775807);
-- global positions: in stream order, those of the log
SELECT bool_and(m.global_position = a.global_position) AS same_as_read_all, count(*)
  FROM get_stream_messages('readStream-1') m
  JOIN event_store.read_all(0, 1000000, '{readStream}') a ON a.event_id::varchar = m.id;
-- messages the pipeline has not ordered yet (here: not committed) have no global position
BEGIN;
SELECT write_message('00000000-0000-4000-8000-1000000000f0', 'readStream-1', 'Late', '{}');
SELECT write_message('00000000-0000-4000-8000-1000000000f1', 'readStream-1', 'Late', '{}');
SELECT position, type, global_position IS NOT NULL AS has_global_position FROM get_stream_messages('readStream-1', 10);
ROLLBACK;
-- empty and unknown streams, names no stream can have
SELECT count(*) FROM get_stream_messages('readStream-99');
SELECT count(*) FROM get_stream_messages('readStream-' || repeat('x', 2000));
-- message-db's errors: a category is not a stream (NULL and '' are categories)
SELECT pg_temp.err($$SELECT * FROM get_stream_messages('readStream')$$);
SELECT pg_temp.err($$SELECT * FROM get_stream_messages(NULL)$$);
SELECT pg_temp.err($$SELECT * FROM get_stream_messages('')$$);
SELECT pg_temp.err($$SELECT * FROM get_stream_messages('readStream-1', 0, -2)$$);

-- conditions: only with message_store.sql_condition on (message-db's setting)
SELECT pg_temp.err($$SELECT * FROM get_stream_messages('readStream-1', condition => 'true')$$);
SET message_store.sql_condition = off;
SELECT pg_temp.err($$SELECT * FROM get_stream_messages('readStream-1', condition => 'true')$$);
SET message_store.sql_condition = on;
-- over message-db's columns (messages.*): the batch is the first 2 that match
SELECT position, type FROM get_stream_messages('readStream-1', 0, 2, $$messages.type = 'Withdrawn'$$);
SELECT position, type FROM get_stream_messages('readStream-1', 3, 2, $$type = 'Withdrawn' AND (data->>'n')::int > 3$$);
SELECT array_agg(position) FROM get_stream_messages('readStream-1', 0, -1, $$messages.id::text LIKE '%1_'$$);
SELECT count(*) FROM get_stream_messages('readStream-1', 0, 1000,
        $$messages.time <= now() AT TIME ZONE 'UTC' AND messages.global_position > 0 AND metadata->>'i' IS NOT NULL AND stream_name = 'readStream-1'$$);
SELECT array_agg(position) FROM get_stream_messages('readStream-1', 0, 1000, $$position % 5 = 0$$);
SELECT pg_temp.err($$SELECT * FROM get_stream_messages('readStream-1', 0, 1000, 'no_such_column')$$);
SELECT pg_temp.err($$SELECT * FROM get_stream_messages('readStream', 0, 1000, 'true')$$);
-- a batch is filled across event_store's chunks (100 events)
SELECT count(write_message(gen_random_uuid()::varchar, 'readStream-3', 'Tick', jsonb_build_object('n', i)))
  FROM generate_series(0, 349) i;
SELECT count(*), min(position), max(position)
  FROM get_stream_messages('readStream-3', 0, 3, $$(data->>'n')::int % 100 = 99$$);
SELECT count(*) FROM get_stream_messages('readStream-3', 0, -1, $$(data->>'n')::int % 2 = 0$$);
-- message-db's test is "unset or off": any other value turns it on, even
-- the empty one a RESET leaves in a session that set it
RESET message_store.sql_condition;
SELECT current_setting('message_store.sql_condition') AS after_reset,
       pg_temp.err($$SELECT * FROM get_stream_messages('readStream-1', condition => 'true')$$);
SET message_store.sql_condition = off;

-- get_last_stream_message: the newest, or the newest of a type (1.3)
SELECT position, type, data FROM get_last_stream_message('readStream-1');
SELECT position, type, data FROM get_last_stream_message('readStream-1', 'Opened');
SELECT position, type, data FROM get_last_stream_message('readStream-1', 'Deposited');
SELECT position, type FROM get_last_stream_message('readStream-3', 'Tick');
SELECT count(*) FROM get_last_stream_message('readStream-1', 'Unknown');
SELECT count(*) FROM get_last_stream_message('readStream-99');
SELECT count(*) FROM get_last_stream_message('readStream-99', 'Opened');
SELECT count(*) FROM get_last_stream_message(NULL);
SELECT count(*) FROM get_last_stream_message('');
SELECT count(*) FROM get_last_stream_message(NULL, 'Opened');
-- the type's newest message far from the stream's head: backwards in chunks
SELECT write_message(gen_random_uuid()::varchar, 'readStream-4', 'Opened', '{"n": 0}');
SELECT count(write_message(gen_random_uuid()::varchar, 'readStream-4', 'Tick', jsonb_build_object('n', i)))
  FROM generate_series(1, 250) i;
SELECT position, type FROM get_last_stream_message('readStream-4', 'Opened');
SELECT event_store.wait_for_pipeline('30 s');
SELECT global_position IS NOT NULL AS has_global_position FROM get_last_stream_message('readStream-4', 'Opened');

-- the read path: one read_stream (and one range scan of the global log).
-- Counted as calls with read_stream's function scan: its scan node (on by
-- default) runs the same scan without calling the function; the setting is
-- read when a statement is planned, hence the cached plans discarded.
SET track_functions = 'all';
SET event_store.read_stream_node = off;
DISCARD PLANS;
BEGIN;
CREATE TEMP TABLE calls0 AS SELECT funcid, calls FROM pg_stat_xact_user_functions;
SELECT count(*) FROM get_stream_messages('readStream-1', 3, 10);
SELECT count(*) FROM get_last_stream_message('readStream-1');
SELECT f.schemaname, f.funcname, f.calls - COALESCE(c.calls, 0) AS calls
  FROM pg_stat_xact_user_functions f LEFT JOIN calls0 c USING (funcid)
 WHERE f.calls > COALESCE(c.calls, 0) AND (f.schemaname = 'event_store' OR f.funcname !~ '^_(check|category_start|stream_start)')
 ORDER BY 1, 2;
DROP TABLE calls0;
COMMIT;
RESET track_functions;
RESET event_store.read_stream_node;
