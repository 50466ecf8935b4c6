-- publish(): integration events through the WAL, delivered at commit, never
-- when the transaction rolls back.
\set SHOW_CONTEXT never
SET synchronous_commit = on;
-- servers that restrict output plugins (output_plugin_libraries, where it exists) must allow ours
SELECT count(set_config('output_plugin_libraries', setting || ', event_store', false)) >= 0 AS allowed
  FROM pg_settings WHERE name = 'output_plugin_libraries';
SELECT 'init' FROM pg_create_logical_replication_slot('regress_pub', 'event_store');

BEGIN;
SELECT event_store.append('pub-1', 'Opened', '{}') AS version;
SELECT event_store.publish('accounts.opened', '{"account": "pub-1"}', 'pub-1') IS NOT NULL AS published;
COMMIT;
BEGIN;
SELECT event_store.publish('accounts.opened', '{"account": "never"}') IS NOT NULL AS published;
ROLLBACK;
SELECT event_store.publish('plain', '"a string payload"') IS NOT NULL AS published;
SELECT event_store.publish('unicode', '{"name": "Zoë \"quoted\""}', 'ключ') IS NOT NULL AS published;

SELECT data::jsonb - 'xid' - 'commit_lsn' - 'commit_time' - 'message_lsn' - 'event_id' - 'recorded_at' AS doc
  FROM pg_logical_slot_peek_changes('regress_pub', NULL, NULL);
-- a message and the event of its transaction share the commit LSN
SELECT count(DISTINCT data::jsonb->>'commit_lsn') AS commits
  FROM pg_logical_slot_peek_changes('regress_pub', NULL, NULL)
 WHERE data::jsonb->>'stream_id' = 'pub-1' OR data::jsonb->>'topic' = 'accounts.opened';
SELECT data::jsonb->>'topic' AS topic
  FROM pg_logical_slot_peek_changes('regress_pub', NULL, NULL, 'topics', 'plain,unicode', 'include-events', 'no');

-- only publish() can publish: anyone may emit a message with our prefix, but
-- the plugin delivers only those publish() signed in their own transaction;
-- a forged, malformed or replayed one is skipped with a WARNING (VE023) and
-- never stops the slot
CREATE ROLE regress_forger;
SET ROLE regress_forger;
SELECT pg_logical_emit_message(true, 'event_store', '{"topic": "payments.settled", "key": null, "payload": {"amount": 1000000}}') IS NOT NULL AS forged;
SELECT pg_logical_emit_message(true, 'event_store', '{') IS NOT NULL AS malformed;
RESET ROLE;
-- a genuine message's bytes, emitted again in another transaction (a replay), are refused too
SELECT 'init' FROM pg_create_logical_replication_slot('regress_pub_raw', 'test_decoding');
SELECT event_store.publish('genuine', '{"n": 1}') IS NOT NULL AS published;
SELECT substring(data from 'content:(.*)$') AS raw
  FROM pg_logical_slot_get_changes('regress_pub_raw', NULL, NULL) WHERE data LIKE 'message:%' \gset
SELECT pg_drop_replication_slot('regress_pub_raw');
SET ROLE regress_forger;
SELECT pg_logical_emit_message(true, 'event_store', :'raw') IS NOT NULL AS replayed;
RESET ROLE;
SELECT event_store.publish('after', '{"n": 2}') IS NOT NULL AS published;
\set VERBOSITY terse
SELECT data::jsonb->>'topic' AS topic, data::jsonb->'payload' AS payload
  FROM pg_logical_slot_peek_changes('regress_pub', NULL, NULL, 'include-events', 'false')
 WHERE data::jsonb->>'topic' IN ('payments.settled', 'genuine', 'after');
\set VERBOSITY default
DROP ROLE regress_forger;

-- bad input
SELECT event_store.publish(NULL, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.publish('t', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.publish('', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.publish('t', '{}', '');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.publish(repeat('t', 1025), '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.publish('t', '{bad json');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
SELECT count(*) FROM pg_logical_slot_get_changes('regress_pub', NULL, NULL);
\set VERBOSITY default
SELECT pg_drop_replication_slot('regress_pub');
