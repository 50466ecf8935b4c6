-- One log, two interfaces: what write_message writes, event_store reads
-- (read_stream, read_all, stream_version), and what event_store appends,
-- message-db's functions read; versions are positions + 1.
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
SELECT event_store.wait_for_pipeline('30 s');
SELECT COALESCE(max(global_position), 0) AS base FROM event_store.global_log \gset

-- written through message-db's interface
SELECT message_store.write_message('00000000-0000-4000-8000-500000000001', 'mdbAccount-1', 'Opened',
                                   '{"owner": "Alice"}', '{"correlationStreamName": "web-1"}', -1);
SELECT message_store.write_message('00000000-0000-4000-8000-500000000002', 'mdbAccount-1', 'Deposited', '{"amount": 50}', NULL, 0);
SELECT message_store.write_message('00000000-0000-4000-8000-500000000003', 'mdbAccount-1', 'Withdrawn', '{"amount": 20}', NULL, 1);
SELECT event_store.wait_for_pipeline('30 s');
-- ... read through event_store's
SELECT stream_id, stream_version, event_id, event_type, schema_version, data, metadata
  FROM event_store.read_stream('mdbAccount-1');
SELECT event_store.stream_version('mdbAccount-1');
SELECT global_position - :base AS global_position, stream_id, stream_version, event_id, event_type
  FROM event_store.read_all(:base, 10, '{mdbAccount}');
-- the same times
SELECT bool_and(m.time = e.recorded_at AT TIME ZONE 'UTC') AS same_time
  FROM message_store.get_stream_messages('mdbAccount-1') m
  JOIN event_store.read_stream('mdbAccount-1') e ON e.event_id::varchar = m.id;
-- and event_store's expected versions line up: 3 events, position 2
SELECT event_store.append('mdbAccount-1', 'Deposited', '{"amount": 5}', expected_version => 3,
                          event_id => '00000000-0000-4000-8000-500000000004');
SELECT pg_temp.err($$SELECT event_store.append('mdbAccount-1', 'Deposited', '{}', expected_version => 3)$$);
SELECT message_store.stream_version('mdbAccount-1');

-- appended through event_store's interface (append, append_events, INSERT)
SELECT event_store.append('esOrder-7', 'OrderPlaced', '{"total": 12}', '{"correlationStreamName": "basket-7"}',
                          event_id => '00000000-0000-4000-8000-500000000011');
SELECT event_store.append_events('esOrder-7', '[
  {"type": "ItemAdded", "data": {"sku": "a"}, "id": "00000000-0000-4000-8000-500000000012"},
  {"type": "ItemAdded", "data": {"sku": "b"}, "id": "00000000-0000-4000-8000-500000000013"}]');
INSERT INTO event_store.events (stream_id, event_id, event_type, data)
VALUES ('esOrder-8', '00000000-0000-4000-8000-500000000014', 'OrderPlaced', '{"total": 1}');
SELECT event_store.wait_for_pipeline('30 s');
-- ... read through message-db's
SELECT id, stream_name, type, position, global_position - :base AS global_position, data, metadata
  FROM message_store.get_stream_messages('esOrder-7');
SELECT stream_name, position, global_position - :base AS global_position, type
  FROM message_store.get_category_messages('esOrder');
SELECT stream_name, position FROM message_store.get_category_messages('esOrder', correlation => 'basket');
SELECT position, type FROM message_store.get_last_stream_message('esOrder-7');
SELECT position, type FROM message_store.get_last_stream_message('esOrder-7', 'OrderPlaced');
SELECT message_store.stream_version('esOrder-7'), message_store.stream_version('esOrder-8');
-- message-db's expected version against event_store's stream
SELECT message_store.write_message('00000000-0000-4000-8000-500000000015', 'esOrder-7', 'OrderPaid', '{}', NULL, 2);
SELECT pg_temp.err($$SELECT message_store.write_message('00000000-0000-4000-8000-500000000016', 'esOrder-7', 'OrderPaid', '{}', NULL, 2)$$);
SELECT stream_version, event_type FROM event_store.read_stream('esOrder-7', backwards => true, max_count => 1);

-- the same rows by both paths: every message of the two categories
SELECT event_store.wait_for_pipeline('30 s');
SELECT count(*) AS messages,
       count(*) FILTER (WHERE (m.id, m.stream_name, m.type, m.position, m.global_position, m.data, m.metadata, m.time)
                              IS NOT DISTINCT FROM
                              (a.event_id::varchar, a.stream_id::varchar, a.event_type::varchar, a.stream_version - 1,
                               a.global_position, a.data::text::varchar, a.metadata::text::varchar,
                               a.recorded_at AT TIME ZONE 'UTC')) AS identical
  FROM event_store.read_all(:base, 100) a
  JOIN (SELECT * FROM message_store.get_category_messages('mdbAccount')
        UNION ALL SELECT * FROM message_store.get_category_messages('esOrder')) m ON m.id = a.event_id::varchar;

-- event_store's features show through: upcasting (what every read path presents)
CREATE FUNCTION public.add_currency(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
    AS $$ SELECT data || '{"currency": "EUR"}' $$;
SELECT event_store.add_upcaster('Withdrawn', 1, 'public.add_currency(jsonb)');
SELECT position, data FROM message_store.get_stream_messages('mdbAccount-1') WHERE type = 'Withdrawn';
SELECT data FROM message_store.get_category_messages('mdbAccount') WHERE type = 'Withdrawn';
SELECT data FROM message_store.get_last_stream_message('mdbAccount-1', 'Withdrawn');
-- a message written now records the type's current schema version, and is not upcast
SELECT message_store.write_message('00000000-0000-4000-8000-500000000017', 'mdbAccount-1', 'Withdrawn', '{"amount": 1, "currency": "CHF"}');
SELECT stream_version, schema_version, data FROM event_store.read_stream('mdbAccount-1', 5);
SELECT position, data FROM message_store.get_last_stream_message('mdbAccount-1');
-- correlation and causation ids from the session, as for event_store's appends
BEGIN;
SET LOCAL event_store.correlation_id = 'req-42';
SELECT message_store.write_message('00000000-0000-4000-8000-500000000018', 'mdbAccount-1', 'Noted', '{}', '{"correlationStreamName": "x-1"}');
COMMIT;
SELECT metadata FROM message_store.get_last_stream_message('mdbAccount-1');
