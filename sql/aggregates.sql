-- Aggregates and snapshots: the seed's bank account, the snapshot cadence,
-- invalidation on redefinition, time travel, hand-managed snapshots.
\set SHOW_CONTEXT never

-- The reducer: (state, event) -> state.
CREATE FUNCTION account_reducer(state jsonb, e event_store.event) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
  CASE e.event_type
    WHEN 'AccountCreated' THEN
      RETURN jsonb_build_object('owner', e.data->'owner', 'balance', 0, 'version', e.stream_version);
    WHEN 'Deposited' THEN
      RETURN state || jsonb_build_object('balance', (state->>'balance')::numeric + (e.data->>'amount')::numeric,
                                         'version', e.stream_version);
    WHEN 'Withdrawn' THEN
      RETURN state || jsonb_build_object('balance', (state->>'balance')::numeric - (e.data->>'amount')::numeric,
                                         'version', e.stream_version);
    ELSE
      RETURN state;   -- an event it does not know: the state unchanged
  END CASE;
END $$;

SELECT event_store.define_aggregate('account', 'account_reducer(jsonb, event_store.event)',
                                    initial_state => '{"balance": 0}', snapshot_every => 3);
SELECT name, reducer, initial_state, snapshot_every, generation FROM event_store.aggregates;

-- a stream with no events: version 0, the initial state
SELECT * FROM event_store.load_aggregate('acct-1', 'account');

-- the seed: AccountCreated, Deposited 50, Withdrawn 20 -> balance 30
SELECT event_store.append('acct-1', 'AccountCreated', '{"owner": "Alice"}', expected_version => 0);
SELECT event_store.append('acct-1', 'Deposited', '{"amount": 50}', expected_version => 1);
SELECT * FROM event_store.load_aggregate('acct-1', 'account');
SELECT count(*) AS snapshots FROM event_store.snapshots;   -- 2 events replayed < 3: none
SELECT event_store.append('acct-1', 'Withdrawn', '{"amount": 20}', expected_version => 2);
SELECT * FROM event_store.load_aggregate('acct-1', 'account');

-- cadence: that load replayed 3 events, so it wrote a snapshot at version 3
SELECT stream_id, aggregate, generation, version, state FROM event_store.snapshots ORDER BY version;
SELECT * FROM event_store.load_snapshot('acct-1', 'account');
-- the next load starts from it, replays nothing and writes nothing
SELECT * FROM event_store.load_aggregate('acct-1', 'account');
SELECT count(*) AS snapshots FROM event_store.snapshots;

-- two more events: replayed 2 < 3, no snapshot; a third: snapshot at 6
SELECT event_store.append_events('acct-1', '[{"type": "Deposited", "data": {"amount": 5}},
                                                   {"type": "Deposited", "data": {"amount": 7}}]');
SELECT * FROM event_store.load_aggregate('acct-1', 'account');
SELECT version FROM event_store.snapshots ORDER BY version;
SELECT event_store.append('acct-1', 'Withdrawn', '{"amount": 2}');
SELECT * FROM event_store.load_aggregate('acct-1', 'account');
SELECT version, state->'balance' AS balance FROM event_store.snapshots ORDER BY version;

-- an event the reducer ignores still counts as replayed
SELECT event_store.append('acct-1', 'AddressChanged', '{"city": "Bern"}');
SELECT * FROM event_store.load_aggregate('acct-1', 'account');

-- snapshots are derived data: deleting them changes nothing but speed
SELECT * FROM event_store.load_aggregate('acct-1', 'account');
SELECT event_store.delete_snapshots('acct-1', 'account');
SELECT * FROM event_store.load_aggregate('acct-1', 'account');   -- full replay: 7 events, snapshot at 7
SELECT version FROM event_store.snapshots ORDER BY version;

-- the snapshot is used: a planted (wrong) state shows through, so loads do read it
SELECT event_store.save_snapshot('acct-1', 'account', 7, '{"balance": 1000, "planted": true}');
SELECT * FROM event_store.load_aggregate('acct-1', 'account');
SELECT * FROM event_store.load_snapshot('acct-1', 'account');
SELECT event_store.delete_snapshots('acct-1');

-- time travel by version: before and after a snapshot, never a newer one
SELECT event_store.save_snapshot('acct-1', 'account', 3, '{"balance": 30, "from": "snapshot 3"}');
SELECT * FROM event_store.load_aggregate('acct-1', 'account', at_version => 0);
SELECT * FROM event_store.load_aggregate('acct-1', 'account', at_version => 2);   -- before: full replay of 2
SELECT * FROM event_store.load_aggregate('acct-1', 'account', at_version => 3);   -- the snapshot itself
SELECT * FROM event_store.load_aggregate('acct-1', 'account', at_version => 5);   -- snapshot 3 + 4, 5
SELECT * FROM event_store.load_aggregate('acct-1', 'account', at_version => 100); -- beyond the end: the newest
SELECT event_store.delete_snapshots();

-- time travel by time: events recorded at different times
SELECT event_store.append('acct-tt', 'AccountCreated', '{"owner": "Bob"}',
                          expected_version => 0);
INSERT INTO event_store.events (stream_id, event_type, data, recorded_at) VALUES
  ('acct-tt', 'Deposited', '{"amount": 10}', '2030-01-01 00:00+00'),
  ('acct-tt', 'Deposited', '{"amount": 20}', '2030-01-02 00:00+00'),
  ('acct-tt', 'Deposited', '{"amount": 30}', '2030-01-03 00:00+00'),
  ('acct-tt', 'Deposited', '{"amount": 40}', '2030-01-04 00:00+00');
SELECT event_store.save_snapshot('acct-tt', 'account', 3, '{"balance": 30, "from": "snapshot 3"}');
SELECT version, recorded_at FROM event_store.snapshots WHERE stream_id = 'acct-tt';
SELECT * FROM event_store.load_aggregate('acct-tt', 'account', as_of => '2030-01-01 12:00+00');  -- before the snapshot
SELECT * FROM event_store.load_aggregate('acct-tt', 'account', as_of => '2030-01-02 00:00+00');  -- at it
SELECT * FROM event_store.load_aggregate('acct-tt', 'account', as_of => '2030-01-03 12:00+00');  -- after it
SELECT * FROM event_store.load_aggregate('acct-tt', 'account', as_of => '2000-01-01 00:00+00');  -- before the stream
SELECT * FROM event_store.load_aggregate('acct-tt', 'account', as_of => '2030-01-04 00:00+00', at_version => 4);
SELECT * FROM event_store.load_aggregate('acct-tt', 'account', as_of => '2030-01-03 00:00+00', at_version => 2);
-- loads of the past write snapshots too (a snapshot is true at its version, whoever computed it)
SELECT event_store.delete_snapshots('acct-tt');
SELECT * FROM event_store.load_aggregate('acct-tt', 'account', at_version => 4);
SELECT version, state->'balance' AS balance, recorded_at FROM event_store.snapshots WHERE stream_id = 'acct-tt';
SELECT * FROM event_store.load_aggregate('acct-tt', 'account', as_of => '2030-01-03 12:00+00');

-- Redefinition invalidates: a new generation, old snapshots deleted and never served.
SELECT event_store.load_aggregate('acct-1', 'account');
SELECT generation, version FROM event_store.snapshots WHERE stream_id = 'acct-1';
CREATE FUNCTION account_reducer_cents(state jsonb, e event_store.event) RETURNS jsonb
LANGUAGE sql AS $$
  SELECT CASE e.event_type
    WHEN 'Deposited' THEN jsonb_build_object('cents', coalesce((state->>'cents')::numeric, 0) + 100 * (e.data->>'amount')::numeric)
    WHEN 'Withdrawn' THEN jsonb_build_object('cents', coalesce((state->>'cents')::numeric, 0) - 100 * (e.data->>'amount')::numeric)
    ELSE state END
$$;
SELECT event_store.define_aggregate('account', 'account_reducer_cents(jsonb, event_store.event)', '{"cents": 0}');
SELECT name, reducer, initial_state, snapshot_every, generation FROM event_store.aggregates;
SELECT count(*) AS snapshots FROM event_store.snapshots WHERE aggregate = 'account';
SELECT * FROM event_store.load_aggregate('acct-1', 'account');
-- a snapshot left by the old generation (as a concurrent old-code load could write) is ignored
INSERT INTO event_store.snapshots (stream_id, aggregate, generation, version, state, recorded_at)
  VALUES ('acct-1', 'account', 1, 7, '{"stale": true}', now());
SELECT * FROM event_store.load_aggregate('acct-1', 'account');
SELECT * FROM event_store.load_snapshot('acct-1', 'account');
-- same reducer, redefined (say, after CREATE OR REPLACE FUNCTION): a new generation again
SELECT event_store.save_snapshot('acct-1', 'account', 7, '{"cents": -1}');
SELECT * FROM event_store.load_aggregate('acct-1', 'account');
SELECT event_store.define_aggregate('account', 'account_reducer_cents(jsonb, event_store.event)', '{"cents": 0}', 3);
SELECT generation FROM event_store.aggregates WHERE name = 'account';
SELECT * FROM event_store.load_aggregate('acct-1', 'account');
SELECT generation, version, state FROM event_store.snapshots WHERE stream_id = 'acct-1' ORDER BY 1, 2;

-- snapshot_every: NULL follows the setting event_store.snapshot_every; 0 never writes
SHOW event_store.snapshot_every;
SELECT event_store.define_aggregate('counter', 'account_reducer_cents(jsonb, event_store.event)');
SELECT snapshot_every FROM event_store.aggregates WHERE name = 'counter';
SET event_store.snapshot_every = 2;
SELECT * FROM event_store.load_aggregate('acct-1', 'counter');
SELECT version FROM event_store.snapshots WHERE aggregate = 'counter';
SET event_store.snapshot_every = 0;
SELECT event_store.delete_snapshots(aggregate => 'counter');
SELECT * FROM event_store.load_aggregate('acct-1', 'counter');
SELECT count(*) FROM event_store.snapshots WHERE aggregate = 'counter';
RESET event_store.snapshot_every;
SELECT event_store.define_aggregate('never', 'account_reducer_cents(jsonb, event_store.event)', '{}', 0);
SELECT * FROM event_store.load_aggregate('acct-1', 'never');
SELECT count(*) FROM event_store.snapshots WHERE aggregate = 'never';

-- a read-only transaction loads, and writes no snapshot
BEGIN READ ONLY;
SET LOCAL event_store.snapshot_every = 1;
SELECT * FROM event_store.load_aggregate('acct-tt', 'counter');
COMMIT;
SET event_store.snapshot_every = 1;
SELECT * FROM event_store.load_aggregate('acct-tt', 'counter');
RESET event_store.snapshot_every;
SELECT version FROM event_store.snapshots WHERE aggregate = 'counter';
SELECT event_store.delete_snapshots(aggregate => 'counter');
SELECT count(*) FROM event_store.snapshots WHERE aggregate = 'counter';

-- a reducer that returns its input state unchanged for every event
CREATE FUNCTION same_state(state jsonb, e event_store.event) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT AS 'SELECT state';
SELECT event_store.define_aggregate('same', 'same_state(jsonb, event_store.event)', '{"x": [1, 2, 3]}', 2);
SELECT * FROM event_store.load_aggregate('acct-1', 'same');
-- a reducer that returns (part of) the event
CREATE FUNCTION last_data(state jsonb, e event_store.event) RETURNS jsonb
LANGUAGE sql AS 'SELECT e.data || jsonb_build_object(''v'', e.stream_version, ''type'', e.event_type)';
SELECT event_store.define_aggregate('last', 'last_data(jsonb, event_store.event)', 'null', 2);
SELECT * FROM event_store.load_aggregate('acct-1', 'last');
SELECT * FROM event_store.load_aggregate('acct-1', 'last', at_version => 1);
SELECT * FROM event_store.load_aggregate('nothing-here', 'last');    -- the initial state may be any JSON

-- large states and events (TOASTed values)
CREATE FUNCTION collect(state jsonb, e event_store.event) RETURNS jsonb
LANGUAGE sql AS 'SELECT state || jsonb_build_object(e.stream_version::text, length(e.data->>''blob''))';
SELECT event_store.define_aggregate('collect', 'collect(jsonb, event_store.event)', '{}', 2);
SELECT event_store.append_events('aggbig-1', (SELECT jsonb_agg(jsonb_build_object('type', 'Blob',
          'data', jsonb_build_object('blob', repeat(md5(i::text), 10000)))) FROM generate_series(1, 5) i));
SELECT version, state FROM event_store.load_aggregate('aggbig-1', 'collect');
SELECT version, state FROM event_store.load_aggregate('aggbig-1', 'collect');
-- incompressible data, stored out of line
SELECT event_store.append_events('aggbig-1', (SELECT jsonb_agg(jsonb_build_object('type', 'Blob',
          'data', jsonb_build_object('blob', (SELECT string_agg(md5(random()::text || j || i), '') FROM generate_series(1, 4000) j))))
          FROM generate_series(1, 3) i));
SELECT count(*) AS out_of_line FROM event_store.events    -- bigger than a page: TOASTed out of line
 WHERE stream_id = 'aggbig-1' AND pg_column_size(data) > 8192;
SELECT version, state FROM event_store.load_aggregate('aggbig-1', 'collect');
SELECT pg_column_size(state) > 0 AS stored, version FROM event_store.snapshots WHERE stream_id = 'aggbig-1' ORDER BY version;

-- Bad inputs.
-- NULLs
SELECT event_store.define_aggregate(NULL, 'account_reducer(jsonb, event_store.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.define_aggregate('x', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.define_aggregate('x', 'account_reducer(jsonb, event_store.event)', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.load_aggregate(NULL, 'account');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.load_aggregate('acct-1', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_snapshot(NULL, 'account', 1, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_snapshot('acct-1', NULL, 1, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_snapshot('acct-1', 'account', NULL, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_snapshot('acct-1', 'account', 1, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.load_snapshot(NULL, 'account');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.load_snapshot('acct-1', NULL);
\echo :LAST_ERROR_SQLSTATE
-- empty and too long names
SELECT event_store.define_aggregate('', 'account_reducer(jsonb, event_store.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.define_aggregate(repeat('a', 1025), 'account_reducer(jsonb, event_store.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.load_aggregate('acct-1', '');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_snapshot('', 'account', 1, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_snapshot(repeat('s', 1025), 'account', 1, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.load_snapshot('acct-1', '');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.delete_snapshots(aggregate => '');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.delete_snapshots('acct-1', repeat('a', 1025));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.load_aggregate('acct-1', repeat('a', 100000));
\echo :LAST_ERROR_SQLSTATE
-- stream ids: as for an append, not empty, at most 1024 bytes
SELECT * FROM event_store.load_aggregate('', 'account');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.load_aggregate(repeat('s', 1025), 'account');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.load_snapshot('', 'account');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.load_snapshot(repeat('s', 1025), 'account');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.delete_snapshots('');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.delete_snapshots(repeat('s', 5000));
\echo :LAST_ERROR_SQLSTATE
-- deleting the snapshots of a stream nobody has is no error
SELECT event_store.delete_snapshots('nobody-1');
-- unknown aggregate
SELECT * FROM event_store.load_aggregate('acct-1', 'acount');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_snapshot('acct-1', 'acount', 1, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.load_snapshot('acct-1', 'acount');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.delete_snapshots(aggregate => 'acount');
\echo :LAST_ERROR_SQLSTATE
-- reducers of the wrong signature
CREATE FUNCTION bad_args(state jsonb, e jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT state';
CREATE FUNCTION bad_ret(state jsonb, e event_store.event) RETURNS json LANGUAGE sql AS 'SELECT state::json';
CREATE FUNCTION bad_set(state jsonb, e event_store.event) RETURNS SETOF jsonb LANGUAGE sql AS 'SELECT state';
CREATE FUNCTION bad_three(state jsonb, e event_store.event, x int) RETURNS jsonb LANGUAGE sql AS 'SELECT state';
CREATE PROCEDURE bad_proc(state jsonb, e event_store.event) LANGUAGE sql AS 'SELECT 1';
SELECT event_store.define_aggregate('x', 'bad_args(jsonb, jsonb)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.define_aggregate('x', 'bad_ret(jsonb, event_store.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.define_aggregate('x', 'bad_set(jsonb, event_store.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.define_aggregate('x', 'bad_three(jsonb, event_store.event, int)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.define_aggregate('x', 'bad_proc(jsonb, event_store.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.define_aggregate('x', 'no_such_function(jsonb, event_store.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.define_aggregate('x', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.define_aggregate('x', 'account_reducer(jsonb, event_store.event)', snapshot_every => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM event_store.aggregates WHERE name = 'x';
-- a reducer that returns NULL
CREATE FUNCTION null_reducer(state jsonb, e event_store.event) RETURNS jsonb LANGUAGE sql AS 'SELECT NULL::jsonb';
SELECT event_store.define_aggregate('nulls', 'null_reducer(jsonb, event_store.event)');
SELECT * FROM event_store.load_aggregate('acct-1', 'nulls');
\echo :LAST_ERROR_SQLSTATE
-- a reducer that fails: its error passes through
CREATE FUNCTION failing_reducer(state jsonb, e event_store.event) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  IF e.stream_version = 2 THEN RAISE EXCEPTION 'cannot fold %', e.event_type USING ERRCODE = '22012'; END IF;
  RETURN state;
END $$;
SELECT event_store.define_aggregate('failing', 'failing_reducer(jsonb, event_store.event)');
SELECT * FROM event_store.load_aggregate('acct-1', 'failing');
\echo :LAST_ERROR_SQLSTATE
-- a reducer dropped after the definition, then created again
SELECT event_store.define_aggregate('dropped', 'last_data(jsonb, event_store.event)');
DROP FUNCTION last_data(jsonb, event_store.event);
SELECT * FROM event_store.load_aggregate('acct-1', 'dropped');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.load_snapshot('acct-1', 'dropped');   -- needs no reducer
SELECT event_store.delete_snapshots(aggregate => 'dropped');
CREATE FUNCTION last_data(state jsonb, e event_store.event) RETURNS jsonb
LANGUAGE sql AS 'SELECT e.data';
SELECT * FROM event_store.load_aggregate('acct-1', 'dropped');
-- a row written around define_aggregate (only the owner can) whose reducer is
-- no signature: its loads fail with VE017, other aggregates are not affected
INSERT INTO event_store.aggregates VALUES ('garbled', 'not a signature(', '{}', NULL, 1, now());
SELECT * FROM event_store.load_aggregate('acct-1', 'garbled');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.load_aggregate('acct-1', 'dropped');
DELETE FROM event_store.aggregates WHERE name = 'garbled';
-- a reducer that drops itself while folding: VE017, not a failed cache lookup
CREATE FUNCTION public.self_dropping(state jsonb, e event_store.event) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  DROP FUNCTION public.self_dropping(jsonb, event_store.event);
  RETURN state;
END $$;
SELECT event_store.define_aggregate('self_dropping', 'public.self_dropping(jsonb, event_store.event)');
SELECT * FROM event_store.load_aggregate('acct-1', 'self_dropping');
\echo :LAST_ERROR_SQLSTATE
DELETE FROM event_store.aggregates WHERE name = 'self_dropping';
DROP FUNCTION public.self_dropping(jsonb, event_store.event);
-- negative and impossible versions
SELECT * FROM event_store.load_aggregate('acct-1', 'account', at_version => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_snapshot('acct-1', 'account', 0, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_snapshot('acct-1', 'account', -5, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_snapshot('acct-1', 'account', 8, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_snapshot('nobody-1', 'account', 1, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_snapshot('acct-1', 'account', 9223372036854775807, '{}');
\echo :LAST_ERROR_SQLSTATE
-- invalid JSON
SELECT event_store.define_aggregate('x', 'account_reducer(jsonb, event_store.event)', '{bad');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.save_snapshot('acct-1', 'account', 1, '{bad');
\echo :LAST_ERROR_SQLSTATE
-- snapshots cannot name an unknown aggregate or version 0, even by INSERT
\set VERBOSITY terse
INSERT INTO event_store.snapshots (stream_id, aggregate, generation, version, state, recorded_at)
  VALUES ('acct-1', 'nope', 1, 1, '{}', now());
\echo :LAST_ERROR_SQLSTATE
INSERT INTO event_store.snapshots (stream_id, aggregate, generation, version, state, recorded_at)
  VALUES ('acct-1', 'account', 1, 0, '{}', now());
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default

-- deleting an aggregate's row deletes its snapshots
SELECT count(*) FROM event_store.snapshots WHERE aggregate = 'collect';
DELETE FROM event_store.aggregates WHERE name = 'collect';
SELECT count(*) FROM event_store.snapshots WHERE aggregate = 'collect';
SELECT * FROM event_store.load_aggregate('aggbig-1', 'collect');
\echo :LAST_ERROR_SQLSTATE
