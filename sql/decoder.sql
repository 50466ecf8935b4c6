-- The output plugin "event_store": one JSON document per inserted event and
-- per published message, in commit order; nothing else.
\set SHOW_CONTEXT never
SET synchronous_commit = on;
-- servers that restrict output plugins (output_plugin_libraries, where it exists) must allow ours
SELECT count(set_config('output_plugin_libraries', setting || ', event_store', false)) >= 0 AS allowed
  FROM pg_settings WHERE name = 'output_plugin_libraries';

SELECT 'init' FROM pg_create_logical_replication_slot('regress_es', 'event_store');

CREATE TABLE regress_other (x int);
INSERT INTO regress_other VALUES (1);                       -- another table: not emitted
SELECT event_store.append('dec-1', 'Opened', '{"n": 1}', '{"m": 1}',
                          event_id => '00000000-0000-0000-0000-00000000d001');
BEGIN;
SELECT event_store.append('dec-1', 'Deposited', '{"n": 2}');  -- rolled back: not emitted
ROLLBACK;
BEGIN;                                                      -- one transaction, three events
SELECT event_store.append('dec-2', 'A', '{}');
SAVEPOINT s;
SELECT event_store.append('dec-2', 'Gone', '{}');           -- rolled back subtransaction
ROLLBACK TO s;
SELECT event_store.append_events('dec-3', '[{"type": "B", "data": {"k": "v"}}, {"type": "C", "data": {"k": [1, 2]}, "schema_version": 2}]');
COMMIT;
UPDATE regress_other SET x = 2;                             -- not emitted
SELECT event_store.publish('orders', '{"id": 7}', 'key-7') IS NOT NULL AS published;

-- every event, in commit order, with what varies (ids, times, LSNs) left out
SELECT data::jsonb - 'xid' - 'commit_lsn' - 'commit_time' - 'event_id' - 'recorded_at' - 'message_lsn' AS doc
  FROM pg_logical_slot_peek_changes('regress_es', NULL, NULL);

-- and what varies is what the table holds
SELECT count(*) AS matching
  FROM pg_logical_slot_peek_changes('regress_es', NULL, NULL) c,
       LATERAL (SELECT c.data::jsonb AS d) j
  JOIN event_store.events e ON e.stream_id = j.d->>'stream_id'
                           AND e.stream_version = (j.d->>'stream_version')::bigint
 WHERE e.event_id = (j.d->>'event_id')::uuid
   AND e.recorded_at = (j.d->>'recorded_at')::timestamptz
   AND e.event_type = j.d->>'event_type'
   AND e.data = j.d->'data' AND e.metadata = j.d->'metadata'
   AND e.schema_version = (j.d->>'schema_version')::int;

-- the position: commit LSN and index within the transaction, increasing
SELECT count(DISTINCT data::jsonb->>'commit_lsn') AS transactions,
       array_agg((data::jsonb->>'index')::int ORDER BY lsn) AS indexes
  FROM pg_logical_slot_peek_changes('regress_es', NULL, NULL);

-- filters
SELECT data::jsonb->>'stream_id' AS stream, data::jsonb->>'event_type' AS type
  FROM pg_logical_slot_peek_changes('regress_es', NULL, NULL, 'categories', 'dec', 'include-messages', 'false');
SELECT data::jsonb->>'kind' AS kind, data::jsonb->>'event_type' AS type
  FROM pg_logical_slot_peek_changes('regress_es', NULL, NULL, 'event-types', 'B, Opened');
SELECT data::jsonb->>'kind' AS kind
  FROM pg_logical_slot_peek_changes('regress_es', NULL, NULL, 'include-events', 'false');
SELECT count(*) FROM pg_logical_slot_peek_changes('regress_es', NULL, NULL, 'topics', 'other', 'event-types', 'none');
SELECT count(*) FROM pg_logical_slot_peek_changes('regress_es', NULL, NULL, 'categories', 'nope', 'include-messages', 'off');

-- bad options
SELECT count(*) FROM pg_logical_slot_peek_changes('regress_es', NULL, NULL, 'format', 'xml');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM pg_logical_slot_peek_changes('regress_es', NULL, NULL, 'categories', '');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM pg_logical_slot_peek_changes('regress_es', NULL, NULL, 'categories', 'a,,b');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM pg_logical_slot_peek_changes('regress_es', NULL, NULL, 'include-events', 'maybe');
\echo :LAST_ERROR_SQLSTATE

-- consumed: nothing the second time
SELECT count(*) > 0 AS consumed FROM pg_logical_slot_get_changes('regress_es', NULL, NULL);
SELECT count(*) FROM pg_logical_slot_get_changes('regress_es', NULL, NULL);

-- an event a presentation step fails on (here an upcaster that raises) is
-- streamed as stored, with the error, and the slot goes on to the next
CREATE FUNCTION dec_bad_upcaster(data jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN RAISE EXCEPTION 'cannot upcast %', data USING ERRCODE = 'P0001'; END $$;
-- (the plugin sees the upcasters as they were when each event was written)
SELECT event_store.add_upcaster('DecBroken', 1, 'dec_bad_upcaster(jsonb)');
SELECT event_store.append('dec-9', 'DecBroken', '{"v": 1}', schema_version => 1);
SELECT event_store.append('dec-9', 'DecFine', '{"v": 1}');
SELECT d->>'event_type' AS type, d->'schema_version' AS version, d->'data' AS data,
       d->'presentation_error'->>'sqlstate' AS sqlstate,
       left(d->'presentation_error'->>'message', 40) AS message
  FROM (SELECT data::jsonb AS d FROM pg_logical_slot_get_changes('regress_es', NULL, NULL)) c
 WHERE d->>'stream_id' = 'dec-9';
SELECT event_store.drop_upcaster('DecBroken', 1);
DROP FUNCTION dec_bad_upcaster(jsonb);

SELECT pg_drop_replication_slot('regress_es');
DROP TABLE regress_other;
