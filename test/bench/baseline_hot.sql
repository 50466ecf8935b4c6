BEGIN;
SELECT pg_advisory_xact_lock(hashtext('hot-1'));
INSERT INTO bench.hot_events (stream_id, stream_version, event_type, data)
SELECT 'hot-1', coalesce(max(stream_version), 0) + 1, 'Deposited', '{"amount": 1, "note": "benchmark event"}'
  FROM bench.hot_events WHERE stream_id = 'hot-1';
COMMIT;
