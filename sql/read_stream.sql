-- read_stream: forwards, backwards, from a version, up to a count, as of a time.
\set SHOW_CONTEXT never

SELECT event_store.append_events('read-1',
       (SELECT jsonb_agg(jsonb_build_object('type', 'Step', 'data', jsonb_build_object('n', n)) ORDER BY n)
          FROM generate_series(1, 10) n));

SELECT string_agg(stream_version::text, ' ') FROM event_store.read_stream('read-1');
SELECT string_agg(stream_version::text, ' ') FROM event_store.read_stream('read-1', from_version => 4);
SELECT string_agg(stream_version::text, ' ') FROM event_store.read_stream('read-1', from_version => 4, max_count => 3);
SELECT string_agg(stream_version::text, ' ') FROM event_store.read_stream('read-1', backwards => true);
SELECT string_agg(stream_version::text, ' ') FROM event_store.read_stream('read-1', backwards => true, max_count => 2);
SELECT string_agg(stream_version::text, ' ') FROM event_store.read_stream('read-1', from_version => 4, backwards => true);
SELECT string_agg(stream_version::text, ' ') FROM event_store.read_stream('read-1', from_version => 11);
SELECT string_agg(stream_version::text, ' ') FROM event_store.read_stream('read-1', from_version => 11, backwards => true, max_count => 1);
SELECT count(*) FROM event_store.read_stream('read-1', max_count => 0);
SELECT count(*) FROM event_store.read_stream('no-such-stream');
-- rows come back in version order without an ORDER BY, and as a composite
SELECT (e).stream_version, (e).data FROM event_store.read_stream('read-1', max_count => 2) e;
SELECT e.stream_version FROM event_store.read_stream('read-1', from_version => 9) AS e ORDER BY e.stream_version DESC;
-- in the select list too
SELECT (event_store.read_stream('read-1', max_count => 1)).event_type;

-- Time travel: the events recorded up to a time.  recorded_at may be given by
-- an INSERT (an import), in stream order.
INSERT INTO event_store.events (stream_id, event_type, data, recorded_at) VALUES
  ('account-501', 'AccountCreated', '{"owner": "Dan"}', '2026-01-01 10:00+00'),
  ('account-501', 'Deposited', '{"amount": 100}', '2026-01-02 10:00+00'),
  ('account-501', 'Withdrawn', '{"amount": 30}', '2026-01-03 10:00+00'),
  ('account-501', 'Withdrawn', '{"amount": 50}', '2026-01-04 10:00+00');
SELECT string_agg(stream_version::text, ' ') FROM event_store.read_stream('account-501', as_of => '2026-01-02 10:00+00');
SELECT string_agg(stream_version::text, ' ') FROM event_store.read_stream('account-501', as_of => '2026-01-03 09:59+00');
SELECT string_agg(stream_version::text, ' ') FROM event_store.read_stream('account-501', as_of => '2025-12-31');
SELECT string_agg(stream_version::text, ' ') FROM event_store.read_stream('account-501', as_of => '2026-01-03 12:00+00', backwards => true);
SELECT string_agg(stream_version::text, ' ') FROM event_store.read_stream('account-501', as_of => '2026-01-03 12:00+00', backwards => true, max_count => 1);
SELECT string_agg(stream_version::text, ' ') FROM event_store.read_stream('account-501', as_of => '2026-01-03 12:00+00', from_version => 2);
-- the balance last Tuesday
SELECT sum(CASE event_type WHEN 'Deposited' THEN (data->>'amount')::int
                           WHEN 'Withdrawn' THEN -(data->>'amount')::int ELSE 0 END) AS balance
  FROM event_store.read_stream('account-501', as_of => '2026-01-03 23:59+00');
-- an earlier recorded_at than the stream's last event is refused
INSERT INTO event_store.events (stream_id, event_type, data, recorded_at) VALUES ('account-501', 'Late', '{}', '2026-01-02 00:00+00');
\echo :LAST_ERROR_SQLSTATE
-- the default never goes backwards either: an event after a future-dated one shares its time
INSERT INTO event_store.events (stream_id, event_type, data, recorded_at) VALUES ('future-1', 'A', '{}', now() + interval '1 day');
SELECT event_store.append('future-1', 'B', '{}');
SELECT count(DISTINCT recorded_at) FROM event_store.read_stream('future-1');
-- all events of one transaction share its time
BEGIN;
SELECT event_store.append('same-1', 'A', '{}');
SELECT pg_sleep(0.01);
SELECT event_store.append('same-1', 'B', '{}');
COMMIT;
SELECT count(DISTINCT recorded_at) FROM event_store.read_stream('same-1');

-- Large events: a 1 MB payload comes back whole.
SELECT event_store.append('large-1', 'Blob', jsonb_build_object('s', repeat('x', 1000000)));
SELECT length(data->>'s') FROM event_store.read_stream('large-1');

-- Each event comes out as stored (its global position NULL) where nothing presents it
-- differently, every column compared: NULL and non-NULL metadata, a compressed and an
-- out-of-line payload, a later schema version; an upcast event among them is the upcaster's.
CREATE FUNCTION public.shape_v1_to_v2(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT data || '{"upcast": true}' $$;
SELECT event_store.add_upcaster('ShapeOld', 1, 'public.shape_v1_to_v2(jsonb)');
SELECT event_store.append('shape-1', 'Plain', '{"a": 1}');
SELECT event_store.append('shape-1', 'Plain', '{"a": 2}', metadata => '{"m": true}');
SELECT event_store.append('shape-1', 'ShapeOld', '{"a": 3}', schema_version => 1);
SELECT event_store.append('shape-1', 'Blob', jsonb_build_object('s', repeat('y', 100000)));
SELECT event_store.append('shape-1', 'Blob', jsonb_build_object('s', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 5000) i)));
SELECT event_store.append('shape-1', 'Plain', '{"a": 4}', schema_version => 2);
SELECT stream_version, event_type, schema_version, pg_column_compression(data) AS compression, pg_column_size(data) < 2000 AS small
  FROM event_store.events WHERE stream_id = 'shape-1' ORDER BY stream_version;
SELECT stream_version, event_type, schema_version, data FROM event_store.read_stream('shape-1') WHERE event_type = 'ShapeOld';
-- every row but the upcast one, both ways, forwards and backwards
SELECT count(*) AS differing FROM (
  (SELECT * FROM event_store.read_stream('shape-1') WHERE event_type <> 'ShapeOld'
   EXCEPT ALL SELECT NULL::bigint, * FROM event_store.events WHERE stream_id = 'shape-1' AND event_type <> 'ShapeOld')
  UNION ALL
  (SELECT NULL::bigint, * FROM event_store.events WHERE stream_id = 'shape-1' AND event_type <> 'ShapeOld'
   EXCEPT ALL SELECT * FROM event_store.read_stream('shape-1', backwards => true) WHERE event_type <> 'ShapeOld')) d;
SELECT count(*) AS events FROM event_store.read_stream('shape-1');
SELECT event_store.drop_upcaster('ShapeOld', 1);
DROP FUNCTION public.shape_v1_to_v2(jsonb);

-- The scan node: FROM read_stream(...) alone is a Custom Scan that hands out each
-- event as it reads it; a whole-row reference, WITH ORDINALITY, ROWS FROM of
-- several functions, or the setting off keep the function scan.
EXPLAIN (COSTS OFF) SELECT * FROM event_store.read_stream('read-1');
EXPLAIN (COSTS OFF, VERBOSE) SELECT stream_version, data FROM event_store.read_stream('read-1') r WHERE r.event_type = 'Step';
EXPLAIN (COSTS OFF) SELECT e FROM event_store.read_stream('read-1') e;
EXPLAIN (COSTS OFF) SELECT stream_version FROM event_store.read_stream('read-1') e WHERE e IS NOT NULL;
EXPLAIN (COSTS OFF) SELECT * FROM event_store.read_stream('read-1') WITH ORDINALITY;
EXPLAIN (COSTS OFF) SELECT * FROM ROWS FROM (event_store.read_stream('read-1'), generate_series(1, 2));
-- volatile arguments: a function scan evaluates them once and reuses its rows on a rescan
EXPLAIN (COSTS OFF) SELECT * FROM event_store.read_stream('read-1', max_count => (random() * 3)::int);
-- each member of a UNION ALL gets its node
EXPLAIN (COSTS OFF) SELECT stream_version FROM event_store.read_stream('read-1')
  UNION ALL SELECT stream_version FROM event_store.read_stream('read-1', backwards => true);
SELECT string_agg(stream_version::text, ' ') FROM (SELECT stream_version FROM event_store.read_stream('read-1', max_count => 3)
  UNION ALL SELECT stream_version FROM event_store.read_stream('read-1', backwards => true, max_count => 3)) u;
-- an UPDATE ... FROM or a locking SELECT copies the row whole for rechecks: function scan
CREATE TABLE public.rs_target (id bigint PRIMARY KEY, x int);
EXPLAIN (COSTS OFF) UPDATE public.rs_target SET x = 1 FROM event_store.read_stream('read-1') r WHERE rs_target.id = r.stream_version;
EXPLAIN (COSTS OFF) SELECT * FROM public.rs_target JOIN event_store.read_stream('read-1') r ON rs_target.id = r.stream_version FOR UPDATE OF rs_target;
DROP TABLE public.rs_target;
SET event_store.read_stream_node = off;
EXPLAIN (COSTS OFF) SELECT * FROM event_store.read_stream('read-1');
-- the same rows in the same order either way, for every kind of argument
CREATE TEMP TABLE rs_args (n int, s text, f bigint, m int, b boolean, t timestamptz);
INSERT INTO rs_args VALUES
  (1, 'read-1', NULL, NULL, false, NULL), (2, 'read-1', 4, 3, false, NULL), (3, 'read-1', NULL, 2, true, NULL),
  (4, 'read-1', 4, NULL, true, NULL), (5, 'read-1', 11, NULL, false, NULL), (6, 'no-such-stream', NULL, NULL, false, NULL),
  (7, 'account-501', NULL, NULL, false, '2026-01-03 09:59+00'), (8, 'account-501', 2, NULL, true, '2026-01-03 12:00+00'),
  (9, 'shape-1', NULL, NULL, false, NULL), (10, 'shape-1', NULL, NULL, true, NULL), (11, 'read-1', NULL, 0, false, NULL);
CREATE TEMP TABLE rs_function AS
  SELECT a.n, r.* FROM rs_args a, LATERAL event_store.read_stream(a.s, a.f, a.m, a.b, a.t) WITH ORDINALITY r;
RESET event_store.read_stream_node;
EXPLAIN (COSTS OFF) SELECT a.n, r.* FROM rs_args a, LATERAL event_store.read_stream(a.s, a.f, a.m, a.b, a.t) r;
CREATE TEMP SEQUENCE rs_order;
CREATE TEMP TABLE rs_node AS
  SELECT a.n, r.*, nextval('rs_order') AS k
    FROM rs_args a, LATERAL event_store.read_stream(a.s, a.f, a.m, a.b, a.t) r;
ALTER TABLE rs_node ADD ordinality bigint;
UPDATE rs_node SET ordinality = k - (SELECT min(k) FROM rs_node o WHERE o.n = rs_node.n) + 1;
SELECT count(*) AS rows, count(DISTINCT n) AS calls FROM rs_node;
SELECT count(*) AS differing FROM (
  (SELECT n, ordinality, global_position, stream_id, stream_version, event_id, event_type, schema_version, data, metadata, recorded_at FROM rs_node
   EXCEPT ALL SELECT n, ordinality, global_position, stream_id, stream_version, event_id, event_type, schema_version, data, metadata, recorded_at FROM rs_function)
  UNION ALL
  (SELECT n, ordinality, global_position, stream_id, stream_version, event_id, event_type, schema_version, data, metadata, recorded_at FROM rs_function
   EXCEPT ALL SELECT n, ordinality, global_position, stream_id, stream_version, event_id, event_type, schema_version, data, metadata, recorded_at FROM rs_node)) d;
-- its arguments are checked as the function checks them
SELECT * FROM event_store.read_stream(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_stream('read-1', backwards => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_stream('read-1', from_version => 0);
SELECT * FROM event_store.read_stream('read-1', max_count => -1);
-- evaluated when the scan starts: parameters, a subquery, again on each rescan
PREPARE rs_count(text, int) AS SELECT count(*) FROM event_store.read_stream($1, max_count => $2);
EXECUTE rs_count('read-1', 5); EXECUTE rs_count('read-1', 5); EXECUTE rs_count('read-1', 5);
EXECUTE rs_count('read-1', 5); EXECUTE rs_count('read-1', 5); EXECUTE rs_count('read-1', 7); EXECUTE rs_count('shape-1', NULL);
EXPLAIN (COSTS OFF) EXECUTE rs_count('read-1', 7);
SELECT string_agg(stream_version::text, ' ') FROM event_store.read_stream((SELECT 'read-1'), max_count => 3);
SELECT v.s, (SELECT count(*) FROM event_store.read_stream(v.s)) FROM (VALUES ('read-1'), ('shape-1'), ('read-1')) v(s);
-- it reads no further than asked: LIMIT 1 never reaches the second event, whose
-- upcaster fails (the function scan reads them all first)
CREATE FUNCTION public.failing_upcast(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT CASE WHEN (data->>'n')::int = 2 THEN (1 / ((data->>'n')::int - 2))::text::jsonb ELSE data END $$;
SELECT event_store.add_upcaster('Flaky', 1, 'public.failing_upcast(jsonb)');
SELECT event_store.append('flaky-1', 'Flaky', '{"n": 1}', schema_version => 1);
SELECT event_store.append('flaky-1', 'Flaky', '{"n": 2}', schema_version => 1);
SELECT stream_version, data FROM event_store.read_stream('flaky-1') LIMIT 1;
SET event_store.read_stream_node = off;
SELECT stream_version, data FROM event_store.read_stream('flaky-1') LIMIT 1;
RESET event_store.read_stream_node;
-- a cursor keeps the function scan, which presents every row at the first fetch
-- (even under a LIMIT): a WITH HOLD cursor's error comes at that fetch, not at
-- COMMIT, where the cursor is run again and the error would lose the work ...
CREATE TABLE public.rs_work (n int);
BEGIN;
INSERT INTO public.rs_work VALUES (1);
DECLARE rs_held CURSOR WITH HOLD FOR SELECT stream_version FROM event_store.read_stream('flaky-1');
FETCH 1 FROM rs_held;
ROLLBACK;
BEGIN;
INSERT INTO public.rs_work VALUES (2);
DECLARE rs_held CURSOR WITH HOLD FOR SELECT stream_version FROM event_store.read_stream('flaky-1') LIMIT 1;
FETCH 1 FROM rs_held;
COMMIT;
SELECT n FROM public.rs_work;
DROP TABLE public.rs_work;
SELECT event_store.drop_upcaster('Flaky', 1);
DROP FUNCTION public.failing_upcast(jsonb);
-- ... and one declared without SCROLL can still go back, as a function scan can
BEGIN;
DECLARE rs_cursor CURSOR FOR SELECT stream_version FROM event_store.read_stream('read-1');
FETCH 3 FROM rs_cursor;
FETCH BACKWARD 2 FROM rs_cursor;
FETCH LAST FROM rs_cursor;
COMMIT;
BEGIN;
DECLARE rs_cursor SCROLL CURSOR FOR SELECT stream_version FROM event_store.read_stream('read-1');
FETCH 3 FROM rs_cursor;
FETCH BACKWARD 2 FROM rs_cursor;
COMMIT;
-- a PL/pgSQL FOR loop is no cursor: it gets the node (EXPLAIN inside the loop's function)
DO $$
DECLARE r record; n int := 0; plan text;
BEGIN
  FOR r IN SELECT * FROM event_store.read_stream('read-1') LOOP n := n + 1; END LOOP;
  EXECUTE 'EXPLAIN (COSTS OFF) SELECT * FROM event_store.read_stream(''read-1'')' INTO plan;
  RAISE NOTICE '% rows; %', n, plan;
END $$;
-- read_stream running as its owner, with settings of its own or made STRICT keeps
-- the function scan; a cached plan follows the change
PREPARE rs_all AS SELECT count(*) FROM event_store.read_stream('read-1');
EXECUTE rs_all;
ALTER FUNCTION event_store.read_stream(text, bigint, integer, boolean, timestamptz) SECURITY DEFINER;
EXPLAIN (COSTS OFF) EXECUTE rs_all;
ALTER FUNCTION event_store.read_stream(text, bigint, integer, boolean, timestamptz) SECURITY INVOKER;
ALTER FUNCTION event_store.read_stream(text, bigint, integer, boolean, timestamptz) SET work_mem = '1MB';
EXPLAIN (COSTS OFF) EXECUTE rs_all;
ALTER FUNCTION event_store.read_stream(text, bigint, integer, boolean, timestamptz) RESET ALL;
ALTER FUNCTION event_store.read_stream(text, bigint, integer, boolean, timestamptz) STRICT;
EXPLAIN (COSTS OFF) EXECUTE rs_all;
ALTER FUNCTION event_store.read_stream(text, bigint, integer, boolean, timestamptz) CALLED ON NULL INPUT;
ALTER FUNCTION event_store.read_stream(text, bigint, integer, boolean, timestamptz) RESET ALL;
EXPLAIN (COSTS OFF) EXECUTE rs_all;
EXECUTE rs_all;
DEALLOCATE rs_all;
DEALLOCATE rs_count;

-- The read functions need SELECT on the event table; row-level security is refused, not ignored.
CREATE ROLE regress_nosel;
GRANT USAGE ON SCHEMA event_store TO regress_nosel;
GRANT EXECUTE ON FUNCTION event_store.read_stream(text, bigint, integer, boolean, timestamptz),
                          event_store.stream_version(text) TO regress_nosel;
SET ROLE regress_nosel;
SELECT count(*) FROM event_store.read_stream('read-1');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.stream_version('read-1');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT SELECT ON event_store.events TO regress_nosel;
ALTER TABLE event_store.events ENABLE ROW LEVEL SECURITY;
SET ROLE regress_nosel;
SELECT count(*) FROM event_store.read_stream('read-1');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
ALTER TABLE event_store.events DISABLE ROW LEVEL SECURITY;
SET ROLE regress_nosel;
SELECT count(*) FROM event_store.read_stream('read-1');
RESET ROLE;
-- without EXECUTE on read_stream, its scan node is refused as its call is
REVOKE EXECUTE ON FUNCTION event_store.read_stream(text, bigint, integer, boolean, timestamptz) FROM regress_nosel;
SET ROLE regress_nosel;
EXPLAIN (COSTS OFF) SELECT count(*) FROM event_store.read_stream('read-1');
SELECT count(*) FROM event_store.read_stream('read-1');
\echo :LAST_ERROR_SQLSTATE
SET event_store.read_stream_node = off;
SELECT count(*) FROM event_store.read_stream('read-1');
\echo :LAST_ERROR_SQLSTATE
RESET event_store.read_stream_node;
RESET ROLE;
REVOKE ALL ON event_store.events FROM regress_nosel;
REVOKE ALL ON FUNCTION event_store.read_stream(text, bigint, integer, boolean, timestamptz),
                       event_store.stream_version(text) FROM regress_nosel;
REVOKE ALL ON SCHEMA event_store FROM regress_nosel;
DROP ROLE regress_nosel;
