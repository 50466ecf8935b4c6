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
SELECT count(*) FROM pg_logical_slot_get_changes('regress_pub', NULL, NULL);
SELECT pg_drop_replication_slot('regress_pub');
