-- read_all(): the global log in commit order, filtered and paged.
\set SHOW_CONTEXT never
SET synchronous_commit = on;
SELECT event_store.wait_for_pipeline('30 s');
-- positions already taken by the earlier tests
SELECT COALESCE(max(global_position), 0) AS base FROM event_store.global_log \gset

SELECT event_store.append('ra_acct-1', 'Opened', '{"n": 1}');
SELECT event_store.append('ra_order-1', 'Placed', '{"n": 2}');
SELECT event_store.append_events('ra_acct-1', '[{"type": "Deposited", "data": {"n": 3}}, {"type": "Withdrawn", "data": {"n": 4}}]');
BEGIN;
SELECT event_store.append('ra_acct-2', 'Opened', '{"n": 99}');
ROLLBACK;                                                   -- never in the log
SELECT event_store.append('ra_order-1', 'Shipped', '{"n": 5}');
SELECT event_store.append('ra_acct-2', 'Opened', '{"n": 6}');
SELECT event_store.wait_for_pipeline('30 s');

-- every event once, in commit order, positions dense
SELECT global_position - :base AS pos, stream_id, stream_version, event_type, data->>'n' AS n
  FROM event_store.read_all(:base);
-- (counted on the log table: the crypto suite left deliberately tampered
-- events, which fail loudly when read)
SELECT count(*) = count(DISTINCT global_position) AND max(global_position) = count(*) AS dense
  FROM event_store.global_log;
-- every event of the table is in the log, once
SELECT count(*) AS not_in_log FROM event_store.events e
 WHERE NOT EXISTS (SELECT 1 FROM event_store.global_log g
                    WHERE g.stream_id = e.stream_id AND g.stream_version = e.stream_version);

-- paging: pass the last position seen
SELECT global_position - :base AS pos, event_type FROM event_store.read_all(:base, 2);
SELECT global_position - :base AS pos, event_type FROM event_store.read_all(:base + 2, 2);
SELECT global_position - :base AS pos, event_type FROM event_store.read_all(:base + 4, 2);
SELECT count(*) FROM event_store.read_all(:base + 6, 2);
SELECT count(*) FROM event_store.read_all(:base, 0);

-- filters
SELECT global_position - :base AS pos, stream_id, event_type
  FROM event_store.read_all(:base, categories => '{ra_order}');
SELECT global_position - :base AS pos, stream_id, event_type
  FROM event_store.read_all(:base, categories => '{ra_acct, ra_order, ra_acct}', max_count => 3);
SELECT global_position - :base AS pos, stream_id, event_type
  FROM event_store.read_all(:base, event_types => '{Opened, Shipped}');
SELECT global_position - :base AS pos, stream_id, event_type
  FROM event_store.read_all(:base, categories => '{ra_acct}', event_types => '{Opened, Withdrawn}');
SELECT count(*) FROM event_store.read_all(:base, categories => '{}');
SELECT count(*) FROM event_store.read_all(:base, categories => '{nothing}');
SELECT count(*) FROM event_store.read_all(:base, event_types => '{}');
SELECT count(*) FROM event_store.read_all(:base, event_types => '{Nothing}');
SELECT global_position - :base AS pos, event_type
  FROM event_store.read_all(:base + 1, 1, event_types => '{Opened, Shipped}');   -- max_count counts matches

-- which index each filter reads, counted in the statistics of the session
-- (scans of each index while the query runs): the categories read the
-- category index, one ordered scan each; types alone read the log in
-- position order (the log has no type index since 0.2.0: each index costs
-- the worker an insertion per event), the types checked on its rows; no
-- type reads nothing
CREATE FUNCTION ra_scans(q text, OUT events bigint, OUT log_pkey bigint, OUT by_category bigint, OUT by_type bigint)
LANGUAGE plpgsql AS $$
DECLARE
  t regclass := to_regclass('event_store.global_log_event_type_idx');
  p0 bigint := pg_stat_get_xact_numscans('event_store.global_log_pkey'::regclass);
  c0 bigint := pg_stat_get_xact_numscans('event_store.global_log_category_idx'::regclass);
  t0 bigint := COALESCE(pg_stat_get_xact_numscans(t), 0);
BEGIN
  EXECUTE 'SELECT count(*) FROM (' || q || ') s' INTO events;
  log_pkey := pg_stat_get_xact_numscans('event_store.global_log_pkey'::regclass) - p0;
  by_category := pg_stat_get_xact_numscans('event_store.global_log_category_idx'::regclass) - c0;
  by_type := COALESCE(pg_stat_get_xact_numscans(t), 0) - t0;
END
$$;
SELECT count(*) AS type_index FROM pg_indexes
 WHERE schemaname = 'event_store' AND indexname = 'global_log_event_type_idx';
SELECT * FROM ra_scans(format('SELECT * FROM event_store.read_all(%s, categories => ''{ra_acct, ra_order}'')', :base));
SELECT * FROM ra_scans(format('SELECT * FROM event_store.read_all(%s, categories => ''{ra_acct}'', event_types => ''{Opened}'')', :base));
SELECT * FROM ra_scans(format('SELECT * FROM event_store.read_all(%s, event_types => ''{Opened, Shipped}'')', :base));
SELECT * FROM ra_scans(format('SELECT * FROM event_store.read_all(%s, event_types => ''{}'')', :base));
SELECT * FROM ra_scans(format('SELECT * FROM event_store.read_all(%s)', :base));
-- where rare types are read from far back, the owner may make the index
-- again (the worker keeps every index of the log); a read by type then
-- scans it once per type, merged by position: the same events
CREATE INDEX global_log_event_type_idx ON event_store.global_log (event_type, global_position);
SELECT event_store.append('ra_order-2', 'Shipped', '{"n": 7}');   -- ordered after the index was made
SELECT event_store.wait_for_pipeline('30 s');
SELECT global_position - :base AS pos, stream_id, event_type
  FROM event_store.read_all(:base, event_types => '{Opened, Shipped}');
SELECT * FROM ra_scans(format('SELECT * FROM event_store.read_all(%s, event_types => ''{Opened, Shipped}'')', :base));
SELECT global_position - :base AS pos, event_type
  FROM event_store.read_all(:base + 1, 2, event_types => '{Shipped, Opened}');
SELECT * FROM ra_scans(format('SELECT * FROM event_store.read_all(%s, 2, event_types => ''{Shipped, Opened}'')', :base + 1));
SELECT * FROM ra_scans(format('SELECT * FROM event_store.read_all(%s, categories => ''{ra_order}'', event_types => ''{Shipped}'')', :base));
-- an index of that name and another shape is not read (a type's positions
-- would not come in order, or not all of them): the log is scanned
DROP INDEX event_store.global_log_event_type_idx;
CREATE INDEX global_log_event_type_idx ON event_store.global_log (event_type, global_position DESC);
SELECT global_position - :base AS pos, event_type FROM event_store.read_all(:base, event_types => '{Shipped}');
SELECT * FROM ra_scans(format('SELECT * FROM event_store.read_all(%s, event_types => ''{Shipped}'')', :base));
DROP INDEX event_store.global_log_event_type_idx;
CREATE INDEX global_log_event_type_idx ON event_store.global_log (event_type, global_position)
 WHERE stream_id LIKE 'ra_acct%';
SELECT * FROM ra_scans(format('SELECT * FROM event_store.read_all(%s, event_types => ''{Shipped}'')', :base));
DROP INDEX event_store.global_log_event_type_idx;
CREATE INDEX global_log_event_type_idx ON event_store.global_log (global_position, event_type);
SELECT * FROM ra_scans(format('SELECT * FROM event_store.read_all(%s, event_types => ''{Shipped}'')', :base));
DROP INDEX event_store.global_log_event_type_idx;
CREATE INDEX global_log_event_type_idx ON event_store.global_log USING hash (event_type);
SELECT * FROM ra_scans(format('SELECT * FROM event_store.read_all(%s, event_types => ''{Shipped}'')', :base));
DROP INDEX event_store.global_log_event_type_idx;
-- nor a relation of that name that is not an index of the log
CREATE TABLE event_store.ra_decoy (p bigint, b text, c bigint, d text, t text COLLATE "C");
INSERT INTO event_store.ra_decoy VALUES (1, 'x', 1, 'x', 'Shipped');
CREATE INDEX global_log_event_type_idx ON event_store.ra_decoy (t, p);
SELECT * FROM ra_scans(format('SELECT * FROM event_store.read_all(%s, event_types => ''{Shipped}'')', :base));
DROP TABLE event_store.ra_decoy;
CREATE TABLE event_store.global_log_event_type_idx (t text);
SELECT * FROM ra_scans(format('SELECT * FROM event_store.read_all(%s, event_types => ''{Shipped}'')', :base));
DROP TABLE event_store.global_log_event_type_idx;
-- the index is looked up by name at each read: one renamed to it is read at once
CREATE INDEX ra_by_type ON event_store.global_log (event_type, global_position);
SELECT * FROM ra_scans(format('SELECT * FROM event_store.read_all(%s, event_types => ''{Shipped}'')', :base));
ALTER INDEX event_store.ra_by_type RENAME TO global_log_event_type_idx;
SELECT * FROM ra_scans(format('SELECT * FROM event_store.read_all(%s, event_types => ''{Shipped}'')', :base));
DROP INDEX event_store.global_log_event_type_idx;
-- categories with no type read nothing either
SELECT * FROM ra_scans(format('SELECT * FROM event_store.read_all(%s, categories => ''{ra_acct}'', event_types => ''{}'')', :base));
DROP FUNCTION ra_scans(text);

-- the health view
SELECT slot_name = 'event_store_' || (SELECT oid FROM pg_database WHERE datname = current_database()) AS slot,
       state, worker_running, slot_active, slot_wal_status, decoded_lsn IS NOT NULL AS decoded,
       confirmed_lsn IS NOT NULL AS confirmed, backlog_bytes >= 0 AS backlog,
       last_position >= :base + 6 AS ordered, rebuilds, last_error
  FROM event_store.pipeline_status;

-- bad input
SELECT * FROM event_store.read_all(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_all(0, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_all(-1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_all(0, -1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_all(0, 10, '{NULL}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_all(0, 10, '{""}');   -- an empty name
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_all(0, 10, NULL, ARRAY[repeat('t', 1025)]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_all(0, 10, NULL, '{{a},{b}}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.wait_for_pipeline(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.wait_for_pipeline('-1 s');
\echo :LAST_ERROR_SQLSTATE
-- the grants of README.md, "Security", for the global log: the reader reads
-- it (not without SELECT on global_log), writes nothing; the writer publishes;
-- the admin sees the health view
CREATE ROLE regress_ra_reader;
CREATE ROLE regress_ra_writer;
CREATE ROLE regress_ra_admin;
GRANT USAGE ON SCHEMA event_store TO regress_ra_reader, regress_ra_writer, regress_ra_admin;
GRANT SELECT ON event_store.events TO regress_ra_reader;
GRANT EXECUTE ON FUNCTION event_store.read_all(bigint, integer, text[], text[]),
                          event_store.wait_for_pipeline(interval) TO regress_ra_reader;
SET ROLE regress_ra_reader;
SELECT count(*) FROM event_store.read_all(:base);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT SELECT ON event_store.global_log TO regress_ra_reader;
SET ROLE regress_ra_reader;
SELECT count(*) FROM event_store.read_all(:base);
SELECT event_store.wait_for_pipeline('30 s');
INSERT INTO event_store.global_log VALUES (0, 'x', 1, 'x', 'x', '0/0');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.publish('t', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM event_store.pipeline_status;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT EXECUTE ON FUNCTION event_store.publish(text, jsonb, text) TO regress_ra_writer;
SET ROLE regress_ra_writer;
SELECT event_store.publish('t', '{}') IS NOT NULL AS published;
SELECT count(*) FROM event_store.read_all(:base);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT SELECT ON event_store.pipeline_status TO regress_ra_admin;
GRANT EXECUTE ON FUNCTION event_store._pipeline_state() TO regress_ra_admin;
SET ROLE regress_ra_admin;
SELECT state, worker_running FROM event_store.pipeline_status;
RESET ROLE;
DROP OWNED BY regress_ra_reader, regress_ra_writer, regress_ra_admin;
DROP ROLE regress_ra_reader, regress_ra_writer, regress_ra_admin;

-- read_all hands out events as every read path does: upcast to the newest shape
CREATE FUNCTION public.ra_add_unit(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT data || '{"unit": "EUR"}' $$;
SELECT event_store.add_upcaster('Shipped', 1, 'public.ra_add_unit(jsonb)');
SELECT global_position - :base AS pos, event_type, schema_version, data
  FROM event_store.read_all(:base, 10, NULL, '{Shipped}');
SELECT event_store.drop_upcaster('Shipped', 1);

-- consumer groups: member k of n reads the streams whose stream_hash is k mod n
-- the hash is message-db's hash_64 of the cardinal id (after the first '-', before the first '+')
SELECT event_store.stream_hash('account-123') AS h,
       event_store.stream_hash('account-123') = ('x' || left(md5('123'), 16))::bit(64)::bigint AS same_as_sql,
       event_store.stream_hash('account-123+2024') = event_store.stream_hash('account-123') AS compound_id,
       event_store.stream_hash('other-123') = event_store.stream_hash('account-123') AS category_ignored,
       event_store.stream_hash('account') = ('x' || left(md5('account'), 16))::bit(64)::bigint AS no_id_whole,
       event_store.stream_hash('a-') = ('x' || left(md5(''), 16))::bit(64)::bigint AS empty_id;
SELECT event_store.stream_hash(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.stream_hash('');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.stream_hash(repeat('x', 100000));
\echo :LAST_ERROR_SQLSTATE
SELECT max(global_position) AS gbase FROM event_store.global_log \gset
-- 40 streams of 3 categories, 5 events each, interleaved over 5 transactions
SELECT count(*) FROM generate_series(1, 5) r,
  LATERAL (SELECT event_store.append_events(c || '-' || i || CASE WHEN i % 7 = 0 THEN '+x' ELSE '' END,
                                             '[{"type": "G", "data": {}}]')
             FROM generate_series(1, 40) i, (VALUES ('cga'), ('cgb'), ('cgc')) v(c)
            WHERE (i + r) % 3 = 0 OR c = 'cga') s;
SELECT event_store.wait_for_pipeline('30 s');
CREATE TEMP TABLE cg AS
  SELECT m.member, e.*
    FROM generate_series(0, 2) m(member),
         LATERAL event_store.read_all(:gbase, 100000, NULL, NULL, m.member, 3) e;
-- every event exactly once, among the members
SELECT (SELECT count(*) FROM cg) AS read_by_members,
       (SELECT count(*) FROM event_store.read_all(:gbase, 100000)) AS in_the_log,
       (SELECT count(DISTINCT global_position) FROM cg) AS distinct_positions;
-- each stream to one member, the one stream_hash says; every member gets a share
SELECT count(*) AS streams_on_two_members FROM (SELECT stream_id FROM cg GROUP BY 1 HAVING count(DISTINCT member) > 1) x;
SELECT count(*) AS wrong_member FROM cg WHERE member <> abs(event_store.stream_hash(stream_id)) % 3;
SELECT count(DISTINCT member) AS members_with_events FROM cg;
-- in log order, each stream's versions in order, with the filters and max_count
SELECT count(*) AS out_of_order FROM (
  SELECT global_position < lag(global_position) OVER (PARTITION BY member ORDER BY global_position) AS bad1,
         stream_version < lag(stream_version) OVER (PARTITION BY stream_id ORDER BY global_position) AS bad2
    FROM cg) x WHERE bad1 OR bad2;
SELECT (SELECT array_agg(global_position ORDER BY global_position) FROM
          (SELECT global_position FROM cg WHERE member = 1 AND stream_id LIKE 'cgb-%' ORDER BY 1 LIMIT 4) x)
     = (SELECT array_agg(global_position) FROM event_store.read_all(:gbase, 4, '{cgb}', NULL, 1, 3)) AS category_filter,
       (SELECT array_agg(global_position ORDER BY global_position) FROM
          (SELECT global_position FROM cg WHERE member = 2 AND event_type = 'G' ORDER BY 1 LIMIT 3) x)
     = (SELECT array_agg(global_position) FROM event_store.read_all(:gbase, 3, NULL, '{G}', 2, 3)) AS type_filter;
-- a member resuming from its last position gets exactly the rest
SELECT (SELECT array_agg(global_position) FROM event_store.read_all(
          (SELECT max(global_position) FROM event_store.read_all(:gbase, 10, NULL, NULL, 0, 3)), 100000, NULL, NULL, 0, 3))
     = (SELECT array_agg(global_position ORDER BY global_position)
          FROM (SELECT global_position FROM cg WHERE member = 0 ORDER BY 1 OFFSET 10) x) AS resumed;
-- a group of one is the whole log
SELECT (SELECT count(*) FROM event_store.read_all(:gbase, 100000, NULL, NULL, 0, 1))
     = (SELECT count(*) FROM event_store.read_all(:gbase, 100000)) AS group_of_one;
-- bad groups: both or neither, size >= 1, 0 <= member < size
SELECT count(*) FROM event_store.read_all(0, 10, NULL, NULL, 0, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM event_store.read_all(0, 10, NULL, NULL, NULL, 3);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM event_store.read_all(0, 10, NULL, NULL, 0, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM event_store.read_all(0, 10, NULL, NULL, 3, 3);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM event_store.read_all(0, 10, NULL, NULL, -1, 3);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM event_store.read_all(0, 10, NULL, NULL, NULL, NULL) AS no_group;
SELECT count(*) FROM event_store.read_all(NULL, 10, NULL, NULL, 0, 2);
\echo :LAST_ERROR_SQLSTATE

-- positions of named consumers: saved in the consumer's own transaction, 0 before the first
SELECT event_store.load_position('billing') AS before_any;
BEGIN;
SELECT event_store.save_position('billing', (SELECT max(global_position) FROM event_store.read_all(:gbase, 5)));
SELECT event_store.load_position('billing') - :gbase AS in_the_transaction;
ROLLBACK;
SELECT event_store.load_position('billing') AS after_rollback;
SELECT event_store.save_position(consumer => 'billing', global_position => :gbase + 5);
SELECT event_store.save_position('billing', :gbase + 7);   -- later: replaces
SELECT event_store.load_position('billing') - :gbase AS saved;
SELECT count(*) AS rest FROM event_store.read_all(event_store.load_position('billing'), 100000) WHERE global_position <= :gbase + 10;
SELECT event_store.save_position('billing', 0);            -- back to the start: allowed
SELECT event_store.load_position('billing') AS rewound;
SELECT consumer, global_position FROM event_store.consumer_positions ORDER BY 1;
-- bad input
\set VERBOSITY sqlstate
SELECT event_store.save_position('billing', (SELECT max(global_position) + 1 FROM event_store.global_log));
\set VERBOSITY default
SELECT :'LAST_ERROR_MESSAGE' ~ '^global_position \d+ is beyond the head of the global log$' AS beyond_head;
SELECT event_store.save_position('billing', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_position('billing', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_position(NULL, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_position('', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_position(repeat('c', 2000), 1);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.load_position(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.load_position('');
\echo :LAST_ERROR_SQLSTATE
-- rights: the table's, as the caller
CREATE ROLE regress_pos_nobody;
GRANT USAGE ON SCHEMA event_store TO regress_pos_nobody;
GRANT EXECUTE ON FUNCTION event_store.save_position(text, bigint), event_store.load_position(text) TO regress_pos_nobody;
SET ROLE regress_pos_nobody;
SELECT event_store.load_position('billing');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_position('billing', 1);
\echo :LAST_ERROR_SQLSTATE
-- INSERT and UPDATE are not enough: the upsert reads the row (SELECT)
RESET ROLE;
GRANT INSERT, UPDATE ON event_store.consumer_positions TO regress_pos_nobody;
GRANT SELECT ON event_store.global_log TO regress_pos_nobody;
SET ROLE regress_pos_nobody;
SELECT event_store.save_position('mine', 1);
\echo :LAST_ERROR_SQLSTATE
-- with SELECT: saves its own consumer, not one another role saved first
RESET ROLE;
GRANT SELECT ON event_store.consumer_positions TO regress_pos_nobody;
SET ROLE regress_pos_nobody;
SELECT event_store.save_position('mine', 1);
SELECT event_store.save_position('mine', 2);
SELECT event_store.load_position('mine') AS mine;
SELECT event_store.save_position('billing', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.load_position('billing') AS billing_unmoved;
-- and a member of the owner may move it
RESET ROLE;
CREATE ROLE regress_pos_member IN ROLE regress_pos_nobody;
SET ROLE regress_pos_member;
SELECT event_store.save_position('mine', 3);
SELECT consumer, global_position, owner = 'regress_pos_nobody'::regrole AS owned_by_nobody FROM event_store.consumer_positions ORDER BY 1;
-- without SELECT on the global log
RESET ROLE;
REVOKE SELECT ON event_store.global_log FROM regress_pos_nobody;
SET ROLE regress_pos_nobody;
SELECT event_store.save_position('mine', 1);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE regress_pos_member;
DROP OWNED BY regress_pos_nobody;
DELETE FROM event_store.consumer_positions;
DROP ROLE regress_pos_nobody;

-- Each event comes out as stored, with its position, where nothing presents it differently:
-- every column compared with the log joined to the event table (NULL and non-NULL metadata,
-- a compressed and an out-of-line payload).
SELECT event_store.append('shapeall-1', 'Plain', '{"a": 1}');
SELECT event_store.append('shapeall-1', 'Plain', '{"a": 2}', metadata => '{"m": true}');
SELECT event_store.append('shapeall-2', 'Blob', jsonb_build_object('s', repeat('y', 100000)));
SELECT event_store.append('shapeall-2', 'Blob', jsonb_build_object('s', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 5000) i)));
-- runs of one stream's versions and streams interleaved, in one transaction
BEGIN;
SELECT event_store.append('shapeall-1', 'Plain', '{"a": 3}');
SELECT event_store.append_events('shapeall-2', '[{"type": "Plain", "data": {"a": 4}}, {"type": "Plain", "data": {"a": 5}}]');
SELECT event_store.append('shapeall-1', 'Plain', '{"a": 6}');
SELECT event_store.append_events('shapeall-1', '[{"type": "Plain", "data": {"a": 7}}, {"type": "Plain", "data": {"a": 8}}]');
COMMIT;
SELECT event_store.wait_for_pipeline('30 s');
SELECT string_agg(stream_id || ':' || stream_version, ' ' ORDER BY global_position) FROM event_store.read_all(0, 100000, categories => '{shapeall}');
SELECT string_agg(stream_id || ':' || stream_version, ' ' ORDER BY global_position)
  FROM event_store.read_all((SELECT min(global_position) FROM event_store.global_log WHERE stream_id = 'shapeall-2' AND stream_version = 3), 100000, categories => '{shapeall}');
SELECT count(*) AS differing FROM (
  (SELECT * FROM event_store.read_all(0, 100000, categories => '{shapeall}')
   EXCEPT ALL
   SELECT g.global_position, e.* FROM event_store.global_log g
     JOIN event_store.events e ON e.stream_id = g.stream_id AND e.stream_version = g.stream_version
    WHERE g.category = 'shapeall')
  UNION ALL
  (SELECT g.global_position, e.* FROM event_store.global_log g
     JOIN event_store.events e ON e.stream_id = g.stream_id AND e.stream_version = g.stream_version
    WHERE g.category = 'shapeall'
   EXCEPT ALL
   SELECT * FROM event_store.read_all(0, 100000, event_types => '{Plain,Blob}') WHERE stream_id LIKE 'shapeall-%')) d;
SELECT count(*) AS events FROM event_store.read_all(0, 100000, categories => '{shapeall}');

-- Runs of one stream's versions of every length from 1 to 40, each followed by one event of
-- another stream, then a run of 700 (over several pages of the event table's key): each
-- descent into the key reads a run's versions only so far ahead (twice as far as the last
-- while the run goes on).  read_all returns every event, in order, as the join does, read from
-- the start and from positions inside the runs.
BEGIN;
SELECT count(*) AS appended FROM (
  SELECT event_store.append_events('runall-1', (SELECT jsonb_agg(jsonb_build_object('type', 'R', 'data', jsonb_build_object('k', k, 'i', i)))
                                                  FROM generate_series(1, k) i)),
         event_store.append('runall-2', 'S', jsonb_build_object('k', k))
    FROM generate_series(1, 40) k) a;
SELECT event_store.append_events('runall-3', (SELECT jsonb_agg(jsonb_build_object('type', 'R', 'data', jsonb_build_object('i', i)))
                                                FROM generate_series(1, 700) i));
COMMIT;
SELECT event_store.wait_for_pipeline('30 s');
CREATE TEMP TABLE runall_joined AS
SELECT g.global_position, e.stream_id, e.stream_version, e.data
  FROM event_store.global_log g
  JOIN event_store.events e ON e.stream_id = g.stream_id AND e.stream_version = g.stream_version
 WHERE g.category = 'runall';
SELECT count(*) AS events, count(DISTINCT stream_id) AS streams FROM runall_joined;
SELECT count(*) AS starts,
       count(*) FILTER (WHERE (SELECT array_agg(ROW(r.global_position, r.stream_id, r.stream_version, r.data)::text
                                                ORDER BY r.global_position)
                                 FROM event_store.read_all(s.after, 100000, categories => '{runall}') r)
                        IS NOT DISTINCT FROM
                              (SELECT array_agg(ROW(j.global_position, j.stream_id, j.stream_version, j.data)::text
                                                ORDER BY j.global_position)
                                 FROM runall_joined j WHERE j.global_position > s.after)) AS same
  FROM (SELECT 0::bigint AS after
        UNION ALL
        SELECT global_position FROM runall_joined WHERE global_position % 37 = 0) s;
