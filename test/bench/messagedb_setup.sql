-- The messagedb case: message-db's interface (event_store_message_db), and
-- a category to read, mdbread: 20,000 events in 200 streams of 100,
-- interleaved, in one transaction (global positions in this order).
CREATE EXTENSION event_store_message_db;
INSERT INTO event_store.events (stream_id, event_type, data, metadata)
SELECT 'mdbread-' || (i % 200), 'Deposited', jsonb_build_object('amount', i, 'note', 'benchmark event'),
       jsonb_build_object('correlationStreamName', 'web-' || (i % 7))
  FROM generate_series(1, 20000) i ORDER BY i;
