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
CREATE SEQUENCE bench.floor_seq;

-- The hot-stream baseline: advisory lock + max(version) + 1, in plain SQL.
CREATE TABLE bench.hot_events (LIKE bench.floor_events INCLUDING ALL);

-- 1,000 events to read.
SELECT event_store.append_events('read-1',
       (SELECT jsonb_agg(jsonb_build_object('type', 'Deposited',
                                            'data', jsonb_build_object('amount', i, 'note', 'benchmark event'))
                         ORDER BY i)
          FROM generate_series(1, 1000) i));
