-- The event log: append, read, versions, idempotency, plain INSERT.
-- Errors print their SQLSTATE on the next line (LAST_ERROR_SQLSTATE).
\set SHOW_CONTEXT never
CREATE EXTENSION event_store;

-- The seed's example: account-101, balance 30.
SELECT event_store.append('account-101', 'AccountCreated', '{"id": 101, "owner": "Alice"}');
SELECT event_store.append('account-101', 'Deposited', '{"id": 101, "amount": 50}', expected_version => 1);
SELECT event_store.append('account-101', 'Withdrawn', '{"id": 101, "amount": 20}', expected_version => 2);
SELECT stream_version, event_type, data FROM event_store.read_stream('account-101');
SELECT sum(CASE event_type WHEN 'Deposited' THEN (data->>'amount')::int
                           WHEN 'Withdrawn' THEN -(data->>'amount')::int ELSE 0 END) AS balance
  FROM event_store.read_stream('account-101');
SELECT event_store.stream_version('account-101'), event_store.stream_version('account-999');

-- Every field of the returned event; global_position is NULL until the
-- decoding pipeline orders the event.
SELECT global_position IS NULL AS unordered, stream_id, stream_version, event_id IS NOT NULL AS has_id,
       event_type, schema_version, metadata, recorded_at <= now() AS recorded
  FROM event_store.read_stream('account-101', max_count => 1);

-- Expected version: 0 = the stream must not exist yet, n = exactly n, NULL = any.
SELECT event_store.append('account-101', 'AccountCreated', '{}', expected_version => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('account-101', 'Deposited', '{"amount": 1}', expected_version => 2);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('account-101', 'Deposited', '{"amount": 1}', expected_version => 4);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('account-102', 'Deposited', '{"amount": 1}', expected_version => 1);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('account-102', 'AccountCreated', '{"owner": "Bob"}', expected_version => 0);
SELECT event_store.append('account-102', 'Deposited', '{"amount": 5}');
-- a failed append wrote nothing
SELECT event_store.stream_version('account-101'), event_store.stream_version('account-102');

-- Idempotency: the same event re-sent with its id returns its version and adds nothing.
SELECT event_store.append('order-7', 'OrderPlaced', '{"total": 12}', event_id => '00000000-0000-4000-8000-000000000001');
SELECT event_store.append('order-7', 'OrderPaid', '{"total": 12}', event_id => '00000000-0000-4000-8000-000000000002', expected_version => 1);
-- re-sent with the same expected version: a retry after a lost acknowledgement
SELECT event_store.append('order-7', 'OrderPaid', '{"total": 12}', event_id => '00000000-0000-4000-8000-000000000002', expected_version => 1);
SELECT event_store.append('order-7', 'OrderPlaced', '{"total": 12}', event_id => '00000000-0000-4000-8000-000000000001');
-- metadata may differ on a retry; it is not part of the comparison
SELECT event_store.append('order-7', 'OrderPlaced', '{"total": 12}', '{"retry": 1}', event_id => '00000000-0000-4000-8000-000000000001');
SELECT count(*) FROM event_store.events WHERE stream_id = 'order-7';
-- the same id with other content is an error: other data, type, stream or schema version
SELECT event_store.append('order-7', 'OrderPlaced', '{"total": 13}', event_id => '00000000-0000-4000-8000-000000000001');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('order-7', 'OrderCancelled', '{"total": 12}', event_id => '00000000-0000-4000-8000-000000000001');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('order-8', 'OrderPlaced', '{"total": 12}', event_id => '00000000-0000-4000-8000-000000000001');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('order-7', 'OrderPlaced', '{"total": 12}', event_id => '00000000-0000-4000-8000-000000000001', schema_version => 2);
\echo :LAST_ERROR_SQLSTATE
SELECT stream_version, event_type, event_id FROM event_store.read_stream('order-7');

-- Metadata is kept as given; correlation and causation ids can come from settings.
SELECT event_store.append('trace-1', 'Traced', '{}', '{"correlation_id": "c-1", "user": "u"}');
SET event_store.correlation_id = 'c-2';
SET event_store.causation_id = 'cmd-9';
SELECT event_store.append('trace-1', 'Traced', '{}');
SELECT event_store.append('trace-1', 'Traced', '{}', '{"correlation_id": "own"}');
RESET event_store.correlation_id;
SELECT event_store.append('trace-1', 'Traced', '{}');
RESET event_store.causation_id;
SELECT event_store.append('trace-1', 'Traced', '{}');
SELECT stream_version, metadata FROM event_store.read_stream('trace-1');

-- Schema version: given or 1.
SELECT event_store.append('schema-1', 'Moved', '{"street": "Main St", "city": "NY"}', schema_version => 2);
SELECT stream_version, schema_version FROM event_store.read_stream('schema-1');

-- A plain INSERT goes through the same trigger: versions assigned, or checked when given.
INSERT INTO event_store.events (stream_id, event_type, data) VALUES ('cart-1', 'ItemAdded', '{"sku": "a"}');
INSERT INTO event_store.events (stream_id, event_type, data)
VALUES ('cart-1', 'ItemAdded', '{"sku": "b"}'), ('cart-2', 'ItemAdded', '{"sku": "c"}'), ('cart-1', 'ItemAdded', '{"sku": "d"}');
INSERT INTO event_store.events (stream_id, stream_version, event_type, data) VALUES ('cart-1', 4, 'CheckedOut', '{}');
INSERT INTO event_store.events (stream_id, stream_version, event_type, data) VALUES ('cart-1', 4, 'CheckedOut', '{}');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, stream_version, event_type, data) VALUES ('cart-1', 9, 'CheckedOut', '{}');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.events (stream_id, event_type, data) SELECT 'cart-3', 'ItemAdded', jsonb_build_object('n', n) FROM generate_series(1, 5) n;
SELECT stream_id, stream_version, data FROM event_store.events WHERE stream_id LIKE 'cart-%' ORDER BY 1, 2;
-- a re-sent event in a plain INSERT is skipped
INSERT INTO event_store.events (stream_id, event_type, data, event_id) VALUES ('order-7', 'OrderPlaced', '{"total": 12}', '00000000-0000-4000-8000-000000000001');
SELECT count(*) FROM event_store.events WHERE stream_id = 'order-7';
-- COPY too
COPY event_store.events (stream_id, event_type, data) FROM stdin;
copy-1	Copied	{"n": 1}
copy-1	Copied	{"n": 2}
\.
SELECT stream_version, data FROM event_store.read_stream('copy-1');

-- Several appends in one transaction, and a rolled-back savepoint: no gap.
BEGIN;
SELECT event_store.append('tx-1', 'A', '{}');
SAVEPOINT s;
SELECT event_store.append('tx-1', 'B', '{}');
SELECT event_store.append('tx-1', 'C', '{}');
ROLLBACK TO SAVEPOINT s;
SELECT event_store.append('tx-1', 'D', '{}', expected_version => 1);
COMMIT;
BEGIN;
SELECT event_store.append('tx-1', 'E', '{}');
ROLLBACK;
SELECT stream_version, event_type FROM event_store.read_stream('tx-1');
SELECT event_store.append('tx-1', 'F', '{}', expected_version => 2);

-- The streams view: one row per stream, category = the id up to the first '-'.
SELECT stream_id, category, version, created_at <= updated_at AS ordered FROM event_store.streams ORDER BY stream_id;
SELECT category, count(*), sum(version) FROM event_store.streams GROUP BY category ORDER BY category;

-- Event ids the store generates are UUID version 7 and unique.
SELECT count(*) = count(DISTINCT event_id) AS unique_ids,
       bool_and(substr(event_id::text, 15, 1) = '7') AS version_7
  FROM event_store.events WHERE stream_id <> 'order-7';
-- ... also when many are made at once: their random part comes from a pool that
-- pg_strong_random() refills every 51 ids; 300 ids of one statement (five refills)
-- have 300 different random parts, each with the version and the variant set
-- (rolled back: later suites count the events)
BEGIN;
SELECT event_store.append_events('ids-1', (SELECT jsonb_agg(jsonb_build_object('type', 'T', 'data', '{}'::jsonb))
                                             FROM generate_series(1, 300)));
SELECT count(*) AS ids, count(DISTINCT substr(event_id::text, 16)) AS distinct_random_parts,
       bool_and(substr(event_id::text, 15, 1) = '7') AS version_7,
       bool_and(substr(event_id::text, 20, 1) IN ('8', '9', 'a', 'b')) AS variant_rfc_9562
  FROM event_store.events WHERE stream_id = 'ids-1';
ROLLBACK;
