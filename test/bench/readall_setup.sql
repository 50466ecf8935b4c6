-- The readall case's second row: a category of interleaved streams, as most
-- logs are (200 streams of 100 events, in one transaction: each event's
-- neighbours in the log are of other streams), read 100 events at a time.
INSERT INTO event_store.events (stream_id, event_type, data)
SELECT 'mix-' || (i % 200), 'Deposited', jsonb_build_object('amount', i, 'note', 'benchmark event')
  FROM generate_series(1, 20000) i ORDER BY i;
SELECT event_store.wait_for_pipeline('120 s');
