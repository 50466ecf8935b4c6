-- Property (invariant 8): snapshot + later events = full replay, for random
-- streams, random snapshot points and random time-travel versions.
-- setseed makes the random choices the same on every run.
\set SHOW_CONTEXT never
SELECT setseed(0.4242);

-- An order-sensitive reducer: a hash chain over every event it folds, so a
-- skipped, repeated or reordered event changes the state.
CREATE FUNCTION prop_reducer(state jsonb, e event_store.event) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object(
    'n', (state->>'n')::int + 1,
    'sum', (state->>'sum')::numeric + CASE e.event_type WHEN 'Deposited' THEN (e.data->>'amount')::numeric
                                                       WHEN 'Withdrawn' THEN -(e.data->>'amount')::numeric
                                                       ELSE 0 END,
    'h', md5((state->>'h') || ':' || e.stream_version || e.event_type || e.data::text))
$$;

-- The reference: the plain fold, event by event, over read_stream.
CREATE FUNCTION prop_reference(sid text, upto bigint DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
  s jsonb := '{"n": 0, "sum": 0, "h": ""}';
  e event_store.event;
BEGIN
  FOR e IN SELECT * FROM event_store.read_stream(sid) r
            WHERE upto IS NULL OR r.stream_version <= upto LOOP
    s := prop_reducer(s, e);
  END LOOP;
  RETURN s;
END $$;

-- Appends n random events to a stream.
CREATE FUNCTION prop_append(sid text, n int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF n > 0 THEN
    PERFORM event_store.append_events(sid, (
      SELECT jsonb_agg(jsonb_build_object(
               'type', (ARRAY['Deposited', 'Withdrawn', 'Noted'])[1 + floor(random() * 3)::int],
               'data', jsonb_build_object('amount', floor(random() * 1000)::int)) ORDER BY i)
        FROM generate_series(1, n) i));
  END IF;
END $$;

-- 40 streams of 0 to 120 events
SELECT count(prop_append('prop-' || i, floor(random() * 121)::int)) AS streams FROM generate_series(1, 40) i;
CREATE TEMP TABLE prop_streams AS
  SELECT 'prop-' || i AS sid, event_store.stream_version('prop-' || i) AS len FROM generate_series(1, 40) i;
SELECT count(*) AS streams, count(*) FILTER (WHERE len = 0) AS empty, sum(len) AS events FROM prop_streams;

SELECT event_store.define_aggregate('prop', 'prop_reducer(jsonb, event_store.event)',
                                    '{"n": 0, "sum": 0, "h": ""}', snapshot_every => 0);

-- the reference agrees with plain SQL on what it can compute
SELECT count(*) AS reference_wrong FROM prop_streams p
 WHERE (prop_reference(p.sid)->>'n')::bigint <> p.len
    OR (prop_reference(p.sid)->>'sum')::numeric <>
       (SELECT coalesce(sum(CASE event_type WHEN 'Deposited' THEN (data->>'amount')::numeric
                                            WHEN 'Withdrawn' THEN -(data->>'amount')::numeric ELSE 0 END), 0)
          FROM event_store.read_stream(p.sid));

-- 1. no snapshot: the C fold = the reference
SELECT count(*) AS checked, count(*) FILTER (WHERE a.version <> p.len OR a.state <> prop_reference(p.sid)) AS mismatches
  FROM prop_streams p, event_store.load_aggregate(p.sid, 'prop') a;

-- 2. one snapshot at a random point of each stream, then load the newest
--    state and the state at 5 random versions each
CREATE TEMP TABLE prop_points AS
  SELECT sid, len, 1 + floor(random() * len)::bigint AS k FROM prop_streams WHERE len > 0;
SELECT count(*) AS saved FROM prop_points p,
       LATERAL (SELECT event_store.save_snapshot(p.sid, 'prop', p.k, prop_reference(p.sid, p.k))) s;
SELECT count(*) AS checked, count(*) FILTER (WHERE a.version <> p.len OR a.state <> prop_reference(p.sid)) AS mismatches
  FROM prop_streams p, event_store.load_aggregate(p.sid, 'prop') a;
CREATE TEMP TABLE prop_travel AS
  SELECT sid, len, floor(random() * (len + 3))::bigint AS t FROM prop_streams, generate_series(1, 5);
SELECT count(*) AS checked,
       count(*) FILTER (WHERE a.version <> least(p.t, p.len) OR a.state <> prop_reference(p.sid, p.t)) AS mismatches,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM prop_points q WHERE q.sid = p.sid AND q.k <= p.t)) AS from_a_snapshot
  FROM prop_travel p, event_store.load_aggregate(p.sid, 'prop', at_version => p.t) a;

-- 3. several snapshots per stream (up to 4 random points each)
SELECT count(*) AS saved FROM prop_streams p, generate_series(1, 4) g,
       LATERAL (SELECT 1 + floor(random() * p.len)::bigint AS k) r,
       LATERAL (SELECT event_store.save_snapshot(p.sid, 'prop', r.k, prop_reference(p.sid, r.k))) s
 WHERE p.len > 0;
SELECT count(*) AS checked,
       count(*) FILTER (WHERE a.version <> least(p.t, p.len) OR a.state <> prop_reference(p.sid, p.t)) AS mismatches
  FROM prop_travel p, event_store.load_aggregate(p.sid, 'prop', at_version => p.t) a;

-- 4. the automatic cadence (every 7 replayed events), over rounds of random
--    appends and loads: every load equals the reference
SELECT event_store.define_aggregate('prop', 'prop_reducer(jsonb, event_store.event)',
                                    '{"n": 0, "sum": 0, "h": ""}', snapshot_every => 7);
CREATE TEMP TABLE prop_rounds (round int, checked bigint, mismatches bigint);
DO $$
BEGIN
  FOR r IN 1..6 LOOP
    PERFORM prop_append(sid, floor(random() * 25)::int) FROM prop_streams WHERE random() < 0.5;
    INSERT INTO prop_rounds
      SELECT r, count(*), count(*) FILTER (WHERE a.version <> event_store.stream_version(p.sid)
                                             OR a.state <> prop_reference(p.sid))
        FROM prop_streams p, event_store.load_aggregate(p.sid, 'prop') a;
  END LOOP;
END $$;
SELECT * FROM prop_rounds ORDER BY round;
SELECT count(*) > 40 AS snapshots_written, count(DISTINCT generation) AS generations
  FROM event_store.snapshots WHERE aggregate = 'prop';

-- 5. with the snapshots deleted, the same states again (full replays)
SELECT event_store.delete_snapshots(aggregate => 'prop') > 0 AS deleted;
SELECT count(*) AS checked, count(*) FILTER (WHERE a.state <> prop_reference(p.sid)) AS mismatches
  FROM prop_streams p, event_store.load_aggregate(p.sid, 'prop') a;
