-- get_category_messages: positions, batches, order, correlation, consumer
-- groups (message-db's hash, streams without id), conditions, errors.
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
SELECT event_store.wait_for_pipeline('30 s');
SELECT COALESCE(max(global_position), 0) AS base FROM event_store.global_log \gset

-- category "cat": 3 streams with ids, interleaved with another category
-- (commit order against write order: specs/category_order.spec)
SELECT write_message('00000000-0000-4000-8000-300000000001', 'cat-1', 'A', '{"n": 1}');
SELECT write_message('00000000-0000-4000-8000-300000000002', 'dog-1', 'A', '{"n": 2}');
SELECT write_message('00000000-0000-4000-8000-300000000003', 'cat-2', 'B', '{"n": 3}', '{"correlationStreamName": "reply-7"}');
SELECT write_message('00000000-0000-4000-8000-300000000004', 'cat-1', 'B', '{"n": 4}', '{"correlationStreamName": "other-1"}');
SELECT write_message('00000000-0000-4000-8000-300000000005', 'cat-3+x', 'A', '{"n": 5}', '{"correlationStreamName": "reply"}');
SELECT write_message('00000000-0000-4000-8000-300000000006', 'cat:command-1', 'A', '{"n": 6}');
SELECT event_store.wait_for_pipeline('30 s');

-- every column; global positions from 1 on, in commit order
SELECT id, stream_name, type, position, global_position - :base AS global_position, data, metadata
  FROM get_category_messages('cat');
-- position is a global position, inclusive (default 1); batch_size as for streams
SELECT array_agg(global_position - :base) FROM get_category_messages('cat', :base + 3);
SELECT array_agg(global_position - :base) FROM get_category_messages('cat', :base + 4, 1);
SELECT array_agg(global_position - :base) FROM get_category_messages('cat', 0, 2);
SELECT array_agg(global_position - :base) FROM get_category_messages('cat', -7, 2);
SELECT array_agg(global_position - :base) FROM get_category_messages('cat', NULL, NULL);
SELECT count(*) FROM get_category_messages('cat', :base + 6);
SELECT count(*) FROM get_category_messages('cat', 1, -1);
SELECT count(*) FROM get_category_messages('cat', 1, 0);
SELECT count(*) FROM get_category_messages('cat', 9223372036854775807, 9223372036854775807);
-- compound categories, unknown ones, names no stream can have: no message
SELECT stream_name FROM get_category_messages('cat:command');
SELECT count(*) FROM get_category_messages('nothing');
SELECT count(*) FROM get_category_messages(NULL);
SELECT count(*) FROM get_category_messages('');
SELECT count(*) FROM get_category_messages(repeat('c', 2000));

-- message-db's errors, in its order and words
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat-1')$$);
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat', correlation => 'reply-7')$$);
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat', 1, 10, NULL, 1, NULL)$$);
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat', 1, 10, NULL, NULL, 2)$$);
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat', 1, 10, NULL, 0, 0)$$);
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat', 1, 10, NULL, -1, 2)$$);
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat', 1, 10, NULL, 2, 2)$$);
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat', 1, 10, NULL, 5000000000, 2)$$);
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat', 1, 10, NULL, 0, 40000)$$);
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat', 1, -2)$$);
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat', 1, 10, condition => 'true')$$);
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat-1', 1, -2, 'x-1', 3, 2, 'true')$$);
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat', 1, -2, 'x-1', 3, 2, 'true')$$);
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat', 1, -2, 'x', 3, 2, 'true')$$);
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat', 1, -2, 'x', 1, 2, 'true')$$);
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat', 1, -2, 'x', 1, 2)$$);

-- correlation: the category of metadata's correlationStreamName
SELECT stream_name, metadata FROM get_category_messages('cat', correlation => 'reply');
SELECT stream_name, metadata FROM get_category_messages('cat', correlation => 'other');
SELECT count(*) FROM get_category_messages('cat', correlation => 'none');
SELECT count(*) FROM get_category_messages('cat', :base + 4, correlation => 'reply');

-- consumer groups: a busier category, streams with and without ids
SELECT count(write_message(gen_random_uuid()::varchar, 'grp-' || (i % 37) || CASE WHEN i % 5 = 0 THEN '+v2' ELSE '' END,
                           'T', jsonb_build_object('n', i),
                           jsonb_build_object('correlationStreamName', CASE WHEN i % 4 = 0 THEN 'corr-' || i ELSE 'else-' || i END)))
  FROM generate_series(1, 600) i;
SELECT count(write_message(gen_random_uuid()::varchar, 'grp', 'T', jsonb_build_object('n', i))) FROM generate_series(1, 30) i;
SELECT count(write_message(gen_random_uuid()::varchar, 'grp-', 'T', jsonb_build_object('n', i))) FROM generate_series(1, 3) i;
SELECT event_store.wait_for_pipeline('30 s');
CREATE TEMP TABLE grp AS SELECT * FROM get_category_messages('grp', 1, -1);
SELECT count(*) AS all_messages, count(*) FILTER (WHERE stream_name = 'grp') AS without_id FROM grp;
-- member k of n gets exactly message-db's share: MOD(@hash_64(cardinal_id(stream_name)), n) = k,
-- which is never true for a stream without id (cardinal_id NULL), and true for "grp-" (cardinal id '')
CREATE TEMP TABLE shares AS
SELECT n, k, m.global_position, m.stream_name
  FROM (VALUES (1), (2), (3), (7)) g(n), generate_series(0, 6) k,
       LATERAL get_category_messages('grp', 1, -1, NULL, k, n) m
 WHERE k < n;
SELECT n, count(*) AS messages, count(DISTINCT global_position) AS distinct_positions,
       count(*) FILTER (WHERE stream_name = 'grp') AS without_id
  FROM shares GROUP BY n ORDER BY n;
SELECT count(*) AS not_message_db_s FROM (
    (SELECT n, k, global_position FROM shares
     EXCEPT
     SELECT g.n, mod(abs(hash_64(cardinal_id(grp.stream_name))), g.n), grp.global_position
       FROM grp, (VALUES (1), (2), (3), (7)) g(n)
      WHERE mod(abs(hash_64(cardinal_id(grp.stream_name))), g.n) IS NOT NULL)
    UNION ALL
    (SELECT g.n, mod(abs(hash_64(cardinal_id(grp.stream_name))), g.n), grp.global_position
       FROM grp, (VALUES (1), (2), (3), (7)) g(n)
      WHERE mod(abs(hash_64(cardinal_id(grp.stream_name))), g.n) IS NOT NULL
     EXCEPT
     SELECT n, k, global_position FROM shares)) d;
-- a stream always to the same member, each member's messages in global order
SELECT count(*) AS streams_in_two_members FROM (
    SELECT n, stream_name FROM shares GROUP BY n, stream_name HAVING count(DISTINCT k) > 1) s;
-- batches: for every member, reading 50 at a time from the last position + 1
-- gets what one unlimited read gets (no batch cut short, not even for the
-- member event_store gives the stream without id)
SELECT mod(abs(hash_64('grp')), 7) AS member_of_grp_natively;
CREATE FUNCTION pg_temp.batches(k bigint, n bigint, size bigint, correlation varchar DEFAULT NULL)
RETURNS TABLE (batches int, messages bigint, positions bigint[]) LANGUAGE plpgsql AS $$
DECLARE
    p bigint := 1;
    got bigint;
    last bigint;
    all_positions bigint[] := '{}';
BEGIN
    batches := 0;
    LOOP
        SELECT count(*), max(m.global_position), array_agg(m.global_position ORDER BY m.global_position)
          INTO got, last, positions
          FROM message_store.get_category_messages('grp', p, size, correlation, k, n) m;
        EXIT WHEN got = 0;
        IF got < size AND EXISTS (SELECT FROM message_store.get_category_messages('grp', last + 1, 1, correlation, k, n)) THEN
            RAISE EXCEPTION 'batch from % cut short: % messages', p, got;
        END IF;
        batches := batches + 1;
        all_positions := all_positions || positions;
        p := last + 1;
    END LOOP;
    messages := cardinality(all_positions);
    positions := all_positions;
    RETURN NEXT;
END $$;
SELECT k, b.batches, b.messages,
       b.positions = (SELECT array_agg(global_position ORDER BY global_position) FROM shares s WHERE s.n = 7 AND s.k = g.k) AS same
  FROM generate_series(0, 6) g(k), LATERAL pg_temp.batches(g.k, 7, 50) b ORDER BY k;
-- groups and correlation together: message-db's share of the correlated messages
SELECT count(*) AS not_message_db_s FROM (
    SELECT unnest(b.positions) FROM generate_series(0, 2) g(k), LATERAL pg_temp.batches(g.k, 3, 20, 'corr') b
    EXCEPT
    SELECT global_position FROM grp WHERE cardinal_id(stream_name) IS NOT NULL AND category(metadata::jsonb->>'correlationStreamName') = 'corr') d;
SELECT count(*) AS correlated FROM generate_series(0, 2) g(k), LATERAL get_category_messages('grp', 1, -1, 'corr', g.k, 3);
SELECT count(*) AS correlated FROM grp WHERE cardinal_id(stream_name) IS NOT NULL AND category(metadata::jsonb->>'correlationStreamName') = 'corr';
-- a group of one: every message but those of the stream without id
SELECT count(*) FROM get_category_messages('grp', 1, -1, NULL, 0, 1);
-- ... also when that stream's messages come first: the batch is not empty
-- (a consumer would take an empty batch for the end of the category)
SELECT count(write_message(gen_random_uuid()::varchar, 'solo', 'T', jsonb_build_object('n', i))) FROM generate_series(1, 25) i;
SELECT count(write_message(gen_random_uuid()::varchar, 'solo-1', 'T', jsonb_build_object('n', i))) FROM generate_series(26, 28) i;
SELECT event_store.wait_for_pipeline('30 s');
SELECT stream_name, position, data FROM get_category_messages('solo', 1, 10, NULL, 0, 1);
SELECT count(*) FROM get_category_messages('solo', 1, 10);

-- conditions, on message-db's columns, with everything else
SET message_store.sql_condition = on;
SELECT stream_name, position, type FROM get_category_messages('cat', 1, 10, condition => $$type = 'B'$$);
SELECT stream_name FROM get_category_messages('cat', 1, 10, 'reply', condition => $$messages.position = 0$$);
SELECT count(*) FROM get_category_messages('grp', 1, 10, NULL, 0, 3, $$(data->>'n')::int > 500$$);
SELECT bool_and((data::jsonb->>'n')::int > 500) AND count(*) = 10 AS filled
  FROM get_category_messages('grp', 1, 10, NULL, 0, 3, $$(data->>'n')::int > 500$$);
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat', 1, 10, condition => 'nonsense(')$$);
SET message_store.sql_condition = 'off';
SELECT pg_temp.err($$SELECT * FROM get_category_messages('cat', 1, 10, condition => 'true')$$);
RESET message_store.sql_condition;

-- the read path: get_category_messages scans the log itself (event_store's
-- C: no call of read_all), the consumer group in that scan; the chunked,
-- filtered read through read_all only for what the scan cannot filter
SET track_functions = 'all';
SELECT mod(abs(hash_64('grp')), 3) AS member_of_grp_natively;
BEGIN;
CREATE TEMP TABLE calls0 AS SELECT funcid, calls FROM pg_stat_xact_user_functions;
SELECT count(*) FROM get_category_messages('cat', 5, 100);
SELECT count(*) FROM get_category_messages('grp', 1, 100, NULL, 0, 3);
SELECT f.schemaname, f.funcname, f.calls - COALESCE(c.calls, 0) AS calls
  FROM pg_stat_xact_user_functions f LEFT JOIN calls0 c USING (funcid)
 WHERE f.calls > COALESCE(c.calls, 0) AND (f.schemaname = 'event_store' OR f.funcname !~ '^_(check|category_start|stream_start)')
 ORDER BY 1, 2;
DROP TABLE calls0;
CREATE TEMP TABLE calls0 AS SELECT funcid, calls FROM pg_stat_xact_user_functions;
SELECT count(*) FROM get_category_messages('grp', 1, 100, 'corr');
SELECT f.schemaname, f.funcname, f.calls - COALESCE(c.calls, 0) AS calls
  FROM pg_stat_xact_user_functions f LEFT JOIN calls0 c USING (funcid)
 WHERE f.calls > COALESCE(c.calls, 0) AND (f.schemaname = 'event_store' OR f.funcname !~ '^_(check|category_start|stream_start)')
 ORDER BY 1, 2;
DROP TABLE calls0;
CREATE TEMP TABLE calls0 AS SELECT funcid, calls FROM pg_stat_xact_user_functions;
SELECT count(*) FROM get_category_messages('grp', 1, 100, NULL, 1, 3);
SELECT f.schemaname, f.funcname, f.calls - COALESCE(c.calls, 0) AS calls
  FROM pg_stat_xact_user_functions f LEFT JOIN calls0 c USING (funcid)
 WHERE f.calls > COALESCE(c.calls, 0) AND (f.schemaname = 'event_store' OR f.funcname !~ '^_(check|category_start|stream_start)')
 ORDER BY 1, 2;
DROP TABLE calls0;
COMMIT;
RESET track_functions;
