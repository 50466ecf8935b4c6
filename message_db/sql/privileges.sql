-- The grants of the README's "Moving from message-db": a client role with
-- exactly them can use every function and view; without message_store's it
-- can use none, without event_store's underneath it can read and write
-- nothing.  And a hostile search_path changes no function's answer.
\set SHOW_CONTEXT never
\pset null '(null)'
CREATE FUNCTION pg_temp.err(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE OPERATOR(pg_catalog.||) ': ' OPERATOR(pg_catalog.||) SQLERRM;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.err(text) TO PUBLIC;
SET synchronous_commit = on;

-- the README's role (message-db calls it message_store)
CREATE ROLE message_store;
GRANT USAGE ON SCHEMA message_store TO message_store;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA message_store TO message_store;
GRANT SELECT ON ALL TABLES IN SCHEMA message_store TO message_store;
GRANT USAGE ON SCHEMA event_store TO message_store;
GRANT SELECT, INSERT ON event_store.events TO message_store;
GRANT SELECT ON event_store.global_log, event_store.streams TO message_store;
GRANT EXECUTE ON FUNCTION event_store.append(text, text, jsonb, jsonb, bigint, uuid, integer),
                          event_store.current_schema_version(text),
                          event_store.read_stream(text, bigint, integer, boolean, timestamptz),
                          event_store.stream_version(text),
                          event_store.read_all(bigint, integer, text[], text[], integer, integer),
                          event_store.wait_for_pipeline(interval) TO message_store;
ALTER ROLE message_store SET search_path = message_store;
-- a role with message_store's rights only, and one with nothing
CREATE ROLE mdb_no_event_store;
GRANT USAGE ON SCHEMA message_store TO mdb_no_event_store;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA message_store TO mdb_no_event_store;
GRANT SELECT ON ALL TABLES IN SCHEMA message_store TO mdb_no_event_store;
CREATE ROLE mdb_stranger;

SET ROLE message_store;
SET search_path = message_store;
SELECT write_message('00000000-0000-4000-8000-700000000001', 'privStream-1', 'Opened', '{}');
SELECT write_message('00000000-0000-4000-8000-700000000002', 'privStream-1', 'Noted', '{}', '{"correlationStreamName": "c-1"}', 0);
SELECT pg_temp.err($$SELECT write_message('00000000-0000-4000-8000-700000000003', 'privStream-1', 'Noted', '{}', NULL, 0)$$);
SELECT event_store.wait_for_pipeline('30 s');
SELECT stream_name, position, global_position IS NOT NULL AS ordered FROM get_stream_messages('privStream-1');
SELECT stream_name, position FROM get_category_messages('privStream');
SELECT stream_name, position FROM get_category_messages('privStream', 1, 10, 'c');
SELECT count(*) FROM get_category_messages('privStream', 1, 10, NULL, 0, 1);
SELECT position FROM get_last_stream_message('privStream-1');
SELECT position FROM get_last_stream_message('privStream-1', 'Opened');
SELECT stream_version('privStream-1'), id('privStream-1'), cardinal_id('privStream-1'), category('privStream-1'),
       is_category('privStream'), hash_64('1') = hash_64('1'), message_store_version();
BEGIN;
SELECT acquire_lock('privStream-1') = hash_64('privStream');
COMMIT;
SET message_store.sql_condition = on;
SELECT count(*) FROM get_stream_messages('privStream-1', 0, 10, $$type = 'Noted'$$);
SELECT count(*) FROM get_category_messages('privStream', 1, 10, condition => $$type = 'Noted'$$);
RESET message_store.sql_condition;
SELECT * FROM stream_summary WHERE stream_name = 'privStream-1';
SELECT count(*) > 0 FROM type_summary;
SELECT count(*) > 0 FROM stream_type_summary;
SELECT count(*) > 0 FROM type_stream_summary;
SELECT count(*) > 0 FROM category_type_summary;
SELECT count(*) > 0 FROM type_category_summary;
RESET ROLE;

-- without event_store's rights: refused by event_store
SET ROLE mdb_no_event_store;
SELECT pg_temp.err($$SELECT message_store.write_message('00000000-0000-4000-8000-700000000004', 'privStream-2', 'Opened', '{}')$$);
SELECT pg_temp.err($$SELECT message_store.write_message('00000000-0000-4000-8000-700000000004', 'privStream-2', 'Opened', '{}', NULL, -1)$$);
SELECT pg_temp.err($$SELECT * FROM message_store.get_stream_messages('privStream-1')$$);
SELECT pg_temp.err($$SELECT * FROM message_store.get_category_messages('privStream')$$);
SELECT pg_temp.err($$SELECT * FROM message_store.get_last_stream_message('privStream-1')$$);
SELECT pg_temp.err($$SELECT message_store.stream_version('privStream-1')$$);
SELECT pg_temp.err($$SELECT * FROM message_store.type_summary$$);
-- the pure functions need nothing more
SELECT message_store.category('privStream-1'), message_store.message_store_version();
RESET ROLE;

-- a stranger: nothing at all
SET ROLE mdb_stranger;
SELECT pg_temp.err($$SELECT message_store.message_store_version()$$);
SELECT pg_temp.err($$SELECT message_store.write_message('00000000-0000-4000-8000-700000000005', 'privStream-3', 'Opened', '{}')$$);
SELECT pg_temp.err($$SELECT * FROM message_store.get_category_messages('privStream')$$);
SELECT pg_temp.err($$SELECT * FROM message_store.stream_summary$$);
RESET ROLE;
SELECT count(*) AS written FROM event_store.events WHERE stream_id IN ('privStream-2', 'privStream-3');

-- a hostile search_path: look-alikes of everything the functions call,
-- found before pg_catalog; every answer stays the same
CREATE SCHEMA evil;
CREATE FUNCTION evil.hijacked() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked'; END $$;
CREATE FUNCTION evil.split_part(text, text, integer) RETURNS text LANGUAGE sql AS $$ SELECT 'evil' WHERE evil.hijacked() $$;
CREATE FUNCTION evil.strpos(text, text) RETURNS integer LANGUAGE sql AS $$ SELECT 0 WHERE evil.hijacked() $$;
CREATE FUNCTION evil.md5(text) RETURNS text LANGUAGE sql AS $$ SELECT '' WHERE evil.hijacked() $$;
CREATE FUNCTION evil.octet_length(text) RETURNS integer LANGUAGE sql AS $$ SELECT 0 WHERE evil.hijacked() $$;
CREATE FUNCTION evil.current_setting(text, boolean) RETURNS text LANGUAGE sql AS $$ SELECT 'on' WHERE evil.hijacked() $$;
CREATE FUNCTION evil.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql AS $$ SELECT 'object' WHERE evil.hijacked() $$;
CREATE FUNCTION evil.pg_advisory_xact_lock(bigint) RETURNS void LANGUAGE sql AS $$ SELECT WHERE evil.hijacked() $$;
CREATE FUNCTION evil.eq(bigint, bigint) RETURNS boolean LANGUAGE sql AS $$ SELECT evil.hijacked() $$;
CREATE FUNCTION evil.eq(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT evil.hijacked() $$;
CREATE FUNCTION evil.eq(integer, integer) RETURNS boolean LANGUAGE sql AS $$ SELECT evil.hijacked() $$;
CREATE FUNCTION evil.minus(bigint, integer) RETURNS bigint LANGUAGE sql AS $$ SELECT 0::bigint WHERE evil.hijacked() $$;
CREATE FUNCTION evil.plus(bigint, integer) RETURNS bigint LANGUAGE sql AS $$ SELECT 0::bigint WHERE evil.hijacked() $$;
CREATE FUNCTION evil.plus(integer, integer) RETURNS integer LANGUAGE sql AS $$ SELECT 0 WHERE evil.hijacked() $$;
CREATE FUNCTION evil.concat(text, text) RETURNS text LANGUAGE sql AS $$ SELECT '' WHERE evil.hijacked() $$;
CREATE OPERATOR evil.= (FUNCTION = evil.eq, LEFTARG = bigint, RIGHTARG = bigint);
CREATE OPERATOR evil.= (FUNCTION = evil.eq, LEFTARG = text, RIGHTARG = text);
CREATE OPERATOR evil.= (FUNCTION = evil.eq, LEFTARG = integer, RIGHTARG = integer);
CREATE OPERATOR evil.< (FUNCTION = evil.eq, LEFTARG = bigint, RIGHTARG = bigint);
CREATE OPERATOR evil.> (FUNCTION = evil.eq, LEFTARG = integer, RIGHTARG = integer);
CREATE OPERATOR evil.>= (FUNCTION = evil.eq, LEFTARG = bigint, RIGHTARG = bigint);
CREATE OPERATOR evil.<> (FUNCTION = evil.eq, LEFTARG = bigint, RIGHTARG = bigint);
CREATE OPERATOR evil.- (FUNCTION = evil.minus, LEFTARG = bigint, RIGHTARG = integer);
CREATE OPERATOR evil.+ (FUNCTION = evil.plus, LEFTARG = bigint, RIGHTARG = integer);
CREATE OPERATOR evil.+ (FUNCTION = evil.plus, LEFTARG = integer, RIGHTARG = integer);
CREATE OPERATOR evil.|| (FUNCTION = evil.concat, LEFTARG = text, RIGHTARG = text);
GRANT USAGE ON SCHEMA evil TO PUBLIC;
SET ROLE message_store;
SET search_path = evil, pg_catalog, message_store;
SELECT message_store.write_message('00000000-0000-4000-8000-700000000006', 'privStream-4', 'Opened', '{"n": 1}');
SELECT message_store.write_message('00000000-0000-4000-8000-700000000007', 'privStream-4', 'Noted', '{"n": 2}', '{"correlationStreamName": "c-9"}', 0);
SELECT pg_temp.err($$SELECT message_store.write_message('00000000-0000-4000-8000-700000000008', 'privStream-4', 'Noted', '{}', NULL, 5)$$);
SELECT pg_temp.err($$SELECT message_store.write_message('00000000-0000-4000-8000-700000000008', 'privStream-4', 'Noted', '{}', NULL, -3)$$);
SELECT pg_temp.err($$SELECT message_store.write_message(NULL, 'privStream-4', 'Noted', '{}')$$);
SELECT event_store.wait_for_pipeline('30 s');
SELECT stream_name, position, data FROM message_store.get_stream_messages('privStream-4');
SELECT stream_name, position FROM message_store.get_category_messages('privStream', 1, 2, 'c');
SELECT stream_name, position FROM message_store.get_category_messages('privStream', 1, 10, NULL, 0, 1);
SELECT position FROM message_store.get_last_stream_message('privStream-4', 'Opened');
SELECT message_store.stream_version('privStream-4'), message_store.id('privStream-4+x'), message_store.cardinal_id('privStream-4+x'),
       message_store.category('privStream-4'), message_store.is_category('privStream'),
       message_store.hash_64('1'), message_store.message_store_version();
BEGIN;
SELECT message_store.acquire_lock('privStream-4') OPERATOR(pg_catalog.=) message_store.hash_64('privStream');
COMMIT;
SELECT pg_temp.err($$SELECT * FROM message_store.get_stream_messages('privStream')$$);
SELECT pg_temp.err($$SELECT * FROM message_store.get_category_messages('privStream-4')$$);
SELECT pg_temp.err($$SELECT * FROM message_store.get_category_messages('privStream', 1, 10, NULL, 1, 1)$$);
SET message_store.sql_condition = off;
SELECT pg_temp.err($$SELECT * FROM message_store.get_stream_messages('privStream-4', 0, 10, 'true')$$);
SELECT pg_temp.err($$SELECT * FROM message_store.get_category_messages('privStream', 1, 10, condition => 'true')$$);
SET message_store.sql_condition = on;
SELECT count(*) FROM message_store.get_stream_messages('privStream-4', 0, 10, 'true');
SELECT count(*) FROM message_store.get_category_messages('privStream', 1, 10, condition => 'true');
RESET message_store.sql_condition;
SELECT * FROM message_store.stream_summary WHERE stream_name OPERATOR(pg_catalog.=) 'privStream-4';
SELECT type, message_count FROM message_store.type_summary WHERE type OPERATOR(pg_catalog.=) 'Opened';
RESET ROLE;
RESET search_path;
DROP SCHEMA evil CASCADE;
