-- The aggregate benchmark: streams of 1,000, 100,000 and 1,000,000 events
-- whose newest snapshot is 50 events behind the head (with a snapshot every
-- 100 events, a stream is on average that far behind its snapshot), so that
-- every timed load is one snapshot probe plus 50 events, whatever the
-- stream's length.  An aggregate without snapshots measures the full replay.
CREATE FUNCTION bench.account_reducer(state jsonb, e event_store.event) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
  IF e.event_type = 'Deposited' THEN
    RETURN jsonb_build_object('balance', (state->>'balance')::bigint + (e.data->>'amount')::bigint);
  ELSIF e.event_type = 'Withdrawn' THEN
    RETURN jsonb_build_object('balance', (state->>'balance')::bigint - (e.data->>'amount')::bigint);
  END IF;
  RETURN state;
END $$;
SELECT event_store.define_aggregate('bench_account', 'bench.account_reducer(jsonb, event_store.event)',
                                    '{"balance": 0}', 100);
SELECT event_store.define_aggregate('bench_replay', 'bench.account_reducer(jsonb, event_store.event)',
                                    '{"balance": 0}', 0);

-- Append n events to a stream in batches of 10,000, one transaction each.
CREATE PROCEDURE bench.build_stream(sid text, n int) LANGUAGE plpgsql AS $$
DECLARE
  done int := 0;
  b int;
BEGIN
  WHILE done < n LOOP
    b := least(10000, n - done);
    PERFORM event_store.append_events(sid, (
      SELECT jsonb_agg(jsonb_build_object('type', CASE WHEN i % 3 = 0 THEN 'Withdrawn' ELSE 'Deposited' END,
                                          'data', jsonb_build_object('amount', i % 100)) ORDER BY i)
        FROM generate_series(done + 1, done + b) i));
    done := done + b;
    COMMIT;
  END LOOP;
END $$;

CALL bench.build_stream('agg-1k', 950);
CALL bench.build_stream('agg-100k', 99950);
CALL bench.build_stream('agg-1m', 999950);
-- the first loads replay everything and write a snapshot at the head
\timing on
SELECT version FROM event_store.load_aggregate('agg-1k', 'bench_account');
SELECT version FROM event_store.load_aggregate('agg-100k', 'bench_account');
SELECT version FROM event_store.load_aggregate('agg-1m', 'bench_account');
\timing off
CALL bench.build_stream('agg-1k', 50);
CALL bench.build_stream('agg-100k', 50);
CALL bench.build_stream('agg-1m', 50);
VACUUM ANALYZE event_store.events;
VACUUM ANALYZE event_store.snapshots;
SELECT stream_id, version FROM event_store.streams WHERE stream_id LIKE 'agg-%' ORDER BY version;
SELECT stream_id, version FROM event_store.snapshots ORDER BY version;
