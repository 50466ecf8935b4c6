-- Benchmark schema: the extension, and the baselines it is measured against.
CREATE EXTENSION pgcrypto;
CREATE EXTENSION event_store;
CREATE SCHEMA bench;

-- The floor: a plain table with the same columns and unique indexes as
-- event_store.events, versions from a sequence, ids from gen_random_uuid().
CREATE TABLE bench.floor_events (
    stream_id      text        COLLATE "C" NOT NULL,
    stream_version bigint      NOT NULL,
    event_id       uuid        NOT NULL DEFAULT gen_random_uuid(),
    event_type     text        COLLATE "C" NOT NULL,
    schema_version integer     NOT NULL DEFAULT 1,
    data           jsonb       NOT NULL,
    metadata       jsonb       NOT NULL DEFAULT '{}',
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, stream_version),
    UNIQUE (event_id)
);
-- and the partial index event_store.events has (for protected events)
CREATE INDEX ON bench.floor_events (((metadata -> 'protected') ->> 'key')) WHERE metadata ? 'protected';
CREATE SEQUENCE bench.floor_seq;

-- The hot-stream baseline: advisory lock + max(version) + 1, one round trip
-- as append() is (each statement of the function sees what committed before
-- it: the max is read after the lock).
CREATE TABLE bench.hot_events (LIKE bench.floor_events INCLUDING ALL);
CREATE FUNCTION bench.hot_append(p_stream text, p_type text, p_data jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE v bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext(p_stream));
  -- the newest version through the primary key, whatever the statistics
  -- (max() is planned so only when the planner thinks it cheaper)
  SELECT coalesce((SELECT stream_version FROM bench.hot_events WHERE stream_id = p_stream
                   ORDER BY stream_version DESC LIMIT 1), 0) + 1 INTO v;
  INSERT INTO bench.hot_events (stream_id, stream_version, event_type, data) VALUES (p_stream, v, p_type, p_data);
  RETURN v;
END $$;
-- Other streams in the table, as in any table of events.  Analyzed while
-- empty (the VACUUM ANALYZE before every case), a max(stream_version) was
-- planned as a sequential scan, and with these rows as an aggregate over all
-- the stream's index entries, kept as the function's generic plan while the
-- hot stream grew: a baseline slower with every row (test/bench/instructions:
-- 3.6 million instructions per call after 4,000 appends).
INSERT INTO bench.hot_events (stream_id, stream_version, event_type, data)
SELECT 'other-' || i, 1, 'Deposited', '{"amount": 1, "note": "benchmark event"}' FROM generate_series(1, 10000) i;

-- 1,000 events to read.
SELECT event_store.append_events('read-1',
       (SELECT jsonb_agg(jsonb_build_object('type', 'Deposited',
                                            'data', jsonb_build_object('amount', i, 'note', 'benchmark event'))
                         ORDER BY i)
          FROM generate_series(1, 1000) i));
