-- Bad input to every function: each is refused with a stable SQLSTATE and writes nothing.
\set SHOW_CONTEXT never

-- NULL in every argument that must not be NULL
SELECT event_store.append(NULL, 'A', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('bad-1', NULL, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('bad-1', 'A', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events(NULL, '[]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_stream(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_stream('bad-1', backwards => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.stream_version(NULL);
\echo :LAST_ERROR_SQLSTATE
-- NULL where it means "not given"
SELECT event_store.append('nulls-1', 'A', '{}', NULL, NULL, NULL, NULL);
SELECT count(*) FROM event_store.read_stream('nulls-1', NULL, NULL, false, NULL);

-- empty and too long stream ids and event types (at most 1024 bytes)
SELECT event_store.append('', 'A', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('bad-1', '', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append(repeat('s', 10240), 'A', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('bad-1', repeat('t', 10240), '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events(repeat('s', 10240), '[{"type": "A", "data": {}}]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append(repeat('s', 1025), 'A', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append(repeat('é', 513), 'A', '{}');
\echo :LAST_ERROR_SQLSTATE
-- the longest allowed works, and reads back
SELECT event_store.append(repeat('s', 1024), repeat('t', 1024), '{}');
SELECT length(stream_id), length(event_type) FROM event_store.read_stream(repeat('s', 1024));
SELECT event_store.stream_version(''), event_store.stream_version(repeat('s', 10240));
-- ids are compared byte for byte: case and unicode forms are distinct streams
SELECT event_store.append('Case-1', 'A', '{}'), event_store.append('case-1', 'A', '{}');

-- invalid JSON never reaches the store
SELECT event_store.append('bad-1', 'A', '{"amount": 5');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"type": "A", "data": {}]');
\echo :LAST_ERROR_SQLSTATE
-- data and metadata must be JSON objects
SELECT event_store.append('bad-1', 'A', '[1, 2]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('bad-1', 'A', '5');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('bad-1', 'A', 'null');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('bad-1', 'A', '{}', '"meta"');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('bad-1', 'A', '{}', '[]');
\echo :LAST_ERROR_SQLSTATE

-- expected versions: negative, beyond the stream, the largest bigint
SELECT event_store.append('bad-1', 'A', '{}', expected_version => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('bad-1', 'A', '{}', expected_version => 1000);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('bad-1', 'A', '{}', expected_version => 9223372036854775807);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"type": "A", "data": {}}]', -5);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"type": "A", "data": {}}, {"type": "A", "data": {}}]', 9223372036854775806);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[]', 9223372036854775807);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[]', -1);
\echo :LAST_ERROR_SQLSTATE

-- schema versions start at 1
SELECT event_store.append('bad-1', 'A', '{}', schema_version => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('bad-1', 'A', '{}', schema_version => -3);
\echo :LAST_ERROR_SQLSTATE

-- read arguments
SELECT * FROM event_store.read_stream('bad-1', from_version => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_stream('bad-1', from_version => -9223372036854775808);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_stream('bad-1', max_count => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM event_store.read_stream('bad-1', from_version => 9223372036854775807);
SELECT count(*) FROM event_store.read_stream('bad-1', max_count => 2147483647);

-- the same checks hold for a plain INSERT
INSERT INTO event_store.events (stream_id, event_type, data) VALUES (NULL, 'A', '{}');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, event_type, data) VALUES ('bad-1', NULL, '{}');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, event_type, data) VALUES ('bad-1', 'A', NULL);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, event_type) VALUES ('bad-1', 'A');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, stream_version, event_type, data) VALUES ('bad-1', 0, 'A', '{}');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, stream_version, event_type, data) VALUES ('bad-1', -5, 'A', '{}');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, event_type, data, schema_version) VALUES ('bad-1', 'A', '{}', 0);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, event_type, data, metadata) VALUES ('bad-1', 'A', '{}', '1');
\echo :LAST_ERROR_SQLSTATE
-- one bad row fails the whole statement
INSERT INTO event_store.events (stream_id, event_type, data) VALUES ('bad-2', 'A', '{}'), ('bad-2', 'B', '[]');
\echo :LAST_ERROR_SQLSTATE

-- nothing above was written
SELECT count(*) FROM event_store.events WHERE stream_id IN ('bad-1', 'bad-2', '');
