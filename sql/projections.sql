-- Projections: read models kept by the extension from the global log.
\set SHOW_CONTEXT never
SET synchronous_commit = on;
SELECT event_store.wait_for_pipeline('30 s');

-- Poll until a condition holds (the workers apply asynchronously), at most 30 s.
CREATE FUNCTION pj_wait_until(condition text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE ok boolean;
BEGIN
  FOR i IN 1 .. 600 LOOP
    EXECUTE condition INTO ok;
    IF ok THEN RETURN true; END IF;
    PERFORM pg_sleep(0.05);
  END LOOP;
  RETURN false;
END $$;

-- The seed: Alice opens account 101, deposits 50, withdraws 20.  The read
-- model: one row per account with its balance.
SELECT event_store.append('pj_account-101', 'AccountCreated', '{"owner": "Alice"}', expected_version => 0);
SELECT event_store.append('pj_account-101', 'Deposited', '{"amount": 50}', expected_version => 1);
SELECT event_store.append('pj_account-101', 'Withdrawn', '{"amount": 20}', expected_version => 2);
SELECT event_store.append('pj_account-102', 'AccountCreated', '{"owner": "Bob"}');
SELECT event_store.append('pj_account-102', 'Deposited', '{"amount": 150}');
SELECT event_store.append('pj_order-1', 'PjOrderPlaced', '{"total": 12}');

CREATE TABLE pj_balances (account text PRIMARY KEY, owner text, balance numeric NOT NULL DEFAULT 0);
CREATE FUNCTION pj_balance(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  CASE e.event_type
    WHEN 'AccountCreated' THEN
      INSERT INTO pj_balances (account, owner) VALUES (e.stream_id, e.data->>'owner');
    WHEN 'Deposited' THEN
      UPDATE pj_balances SET balance = balance + (e.data->>'amount')::numeric WHERE account = e.stream_id;
    WHEN 'Withdrawn' THEN
      UPDATE pj_balances SET balance = balance - (e.data->>'amount')::numeric WHERE account = e.stream_id;
    ELSE NULL;
  END CASE;
END $$;
CREATE FUNCTION pj_balance_reset() RETURNS void LANGUAGE sql AS $$ DELETE FROM pj_balances $$;

-- from the beginning of history (catch-up), in the background
SELECT event_store.create_projection('balances', 'pj_balance(event_store.event)',
                                     categories => '{pj_account}', reset => 'pj_balance_reset()');
SELECT event_store.wait_for_projection('balances', '30 s');
SELECT * FROM pj_balances ORDER BY account;
-- the query the event log is terrible at
SELECT account, balance FROM pj_balances WHERE balance > 100;
SELECT name, mode, state, on_error, categories, event_types, events_applied, lag_events, lag,
       last_error, retries, rebuild_done, rebuild_total, parked, handler
  FROM event_store.projection_status;

-- read-your-writes: after a deposit, wait, then read
SELECT event_store.append('pj_account-101', 'Deposited', '{"amount": 100}');
SELECT event_store.wait_for_projection('balances');
SELECT account, balance FROM pj_balances WHERE balance > 100 ORDER BY account;
-- a rolled-back append never reaches a projection
BEGIN;
SELECT event_store.append('pj_account-101', 'Deposited', '{"amount": 1000000}');
ROLLBACK;
SELECT event_store.append('pj_account-102', 'Withdrawn', '{"amount": 1}');
SELECT event_store.wait_for_projection('balances');
SELECT * FROM pj_balances ORDER BY account;
-- position and count: every event of the category, once
SELECT p.events_applied = (SELECT count(*) FROM event_store.events WHERE stream_id LIKE 'pj\_account-%') AS all_applied,
       p.position = (SELECT max(global_position) FROM event_store.global_log) AS at_head
  FROM event_store.projection_status p WHERE name = 'balances';

-- filters: event types, categories, both; an empty array selects nothing
CREATE TABLE pj_seen (projection text, stream_id text, stream_version bigint, event_type text,
                      global_position bigint, who text);
CREATE FUNCTION pj_seen(e event_store.event) RETURNS void LANGUAGE sql AS $$
  INSERT INTO pj_seen VALUES (current_setting('pj.name', true), e.stream_id, e.stream_version,
                              e.event_type, e.global_position, current_user)
$$;
CREATE FUNCTION pj_seen_deposits(e event_store.event) RETURNS void LANGUAGE sql AS $$
  INSERT INTO pj_seen VALUES ('deposits', e.stream_id, e.stream_version, e.event_type, e.global_position, current_user)
$$;
CREATE FUNCTION pj_seen_orders(e event_store.event) RETURNS void LANGUAGE sql AS $$
  INSERT INTO pj_seen VALUES ('orders', e.stream_id, e.stream_version, e.event_type, e.global_position, current_user)
$$;
CREATE FUNCTION pj_seen_both(e event_store.event) RETURNS void LANGUAGE sql AS $$
  INSERT INTO pj_seen VALUES ('both', e.stream_id, e.stream_version, e.event_type, e.global_position, current_user)
$$;
CREATE FUNCTION pj_seen_none(e event_store.event) RETURNS void LANGUAGE sql AS $$
  INSERT INTO pj_seen VALUES ('none', e.stream_id, e.stream_version, e.event_type, e.global_position, current_user)
$$;
SELECT event_store.create_projection('deposits', 'pj_seen_deposits(event_store.event)', event_types => '{Deposited}');
SELECT event_store.create_projection('orders', 'pj_seen_orders(event_store.event)', categories => '{pj_order}');
SELECT event_store.create_projection('both', 'pj_seen_both(event_store.event)',
                                     event_types => '{AccountCreated, PjOrderPlaced}', categories => '{pj_account, pj_order}');
SELECT event_store.create_projection('none', 'pj_seen_none(event_store.event)', event_types => '{}');
SELECT bool_and(event_store.wait_for_projection(n, '30 s')) FROM unnest('{deposits,orders,both,none}'::text[]) n;
SELECT projection, stream_id, stream_version, event_type, who FROM pj_seen
 WHERE stream_id LIKE 'pj\_%' ORDER BY projection, global_position;
-- handlers get the global position: in log order, and what read_all returns
SELECT count(*) AS differ FROM pj_seen s
  JOIN event_store.global_log g ON g.stream_id = s.stream_id AND g.stream_version = s.stream_version
 WHERE g.global_position IS DISTINCT FROM s.global_position;
-- a projection whose filters skip everything still passes the events (it is not behind)
SELECT name, lag_events, events_applied FROM event_store.projection_status WHERE name = 'none';
SELECT event_store.drop_projection(n) FROM unnest('{deposits,orders,both,none}'::text[]) n;
TRUNCATE pj_seen;

-- a rare type: the projector passes over at most 10,000 rows of other types
-- per batch and index scan (each batch a transaction that records how far
-- it got), so the 25,000 events between the rare ones take several batches;
-- none is missed, whether the log is read whole (types only) or merged from
-- two categories' scans
SELECT event_store.append('pj_rare-1', 'PjRare', '{"n": 1}');
SELECT event_store.append_events('pj_rare-2', (SELECT jsonb_agg(jsonb_build_object('type', 'PjNoise', 'data', '{}'::jsonb))
                                                 FROM generate_series(1, 12500)));
SELECT event_store.append('pj_rarer-1', 'PjRare', '{"n": 2}');
SELECT event_store.append_events('pj_rare-2', (SELECT jsonb_agg(jsonb_build_object('type', 'PjNoise', 'data', '{}'::jsonb))
                                                 FROM generate_series(1, 12500)));
SELECT event_store.append('pj_rare-1', 'PjRare', '{"n": 3}');
SELECT event_store.create_projection('rare', 'pj_seen(event_store.event)', event_types => '{PjRare}');
SELECT event_store.create_projection('rare2', 'pj_seen(event_store.event)',
                                     event_types => '{PjRare}', categories => '{pj_rare, pj_rarer}');
SELECT event_store.wait_for_projection(n, '60 s') FROM unnest('{rare,rare2}'::text[]) n;
SELECT stream_id, stream_version, event_type, count(*) AS seen FROM pj_seen
 GROUP BY stream_id, stream_version, event_type ORDER BY min(global_position);
SELECT s.name, s.events_applied, s.lag_events, s.position = (SELECT max(global_position) FROM event_store.global_log) AS at_head
  FROM event_store.projection_status s WHERE s.name IN ('rare', 'rare2') ORDER BY s.name;
SELECT event_store.drop_projection(n) FROM unnest('{rare,rare2}'::text[]) n;
TRUNCATE pj_seen;

-- start => 'now': only what is committed after the call
SELECT event_store.create_projection('from_now', 'pj_seen(event_store.event)', categories => '{pj_order}', start => 'now');
SELECT event_store.append('pj_order-2', 'PjOrderPlaced', '{"total": 3}');
SELECT event_store.wait_for_projection('from_now');
SELECT stream_id, event_type FROM pj_seen;
SELECT event_store.drop_projection('from_now');
TRUNCATE pj_seen;

-- handlers get what the read functions return: events upcast to their newest schema
CREATE FUNCTION pj_up_v1(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT (data - 'address') || jsonb_build_object('street', data->'address', 'city', 'NY') $$;
SELECT event_store.append('pj_customer-1', 'AddressChanged', '{"address": "123 Main St"}', schema_version => 1);
SELECT event_store.add_upcaster('AddressChanged', 1, 'pj_up_v1(jsonb)');
CREATE TABLE pj_addresses (customer text PRIMARY KEY, street text, city text, schema_version int);
CREATE FUNCTION pj_address(e event_store.event) RETURNS void LANGUAGE sql AS $$
  INSERT INTO pj_addresses VALUES (e.stream_id, e.data->>'street', e.data->>'city', e.schema_version)
  ON CONFLICT (customer) DO UPDATE SET street = EXCLUDED.street, city = EXCLUDED.city, schema_version = EXCLUDED.schema_version
$$;
SELECT event_store.create_projection('addresses', 'pj_address(event_store.event)', categories => '{pj_customer}');
SELECT event_store.wait_for_projection('addresses', '30 s');
SELECT * FROM pj_addresses;
SELECT event_store.drop_projection('addresses');
SELECT event_store.drop_upcaster('AddressChanged', 1);

-- inline: applied inside the appending transaction, before it commits
CREATE TABLE pj_inline (account text PRIMARY KEY, balance numeric NOT NULL DEFAULT 0, who text);
CREATE FUNCTION pj_inline(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF e.data ? 'fail' THEN RAISE EXCEPTION 'inline handler refuses %', e.data->>'fail' USING ERRCODE = 'P0001'; END IF;
  INSERT INTO pj_inline
  VALUES (e.stream_id,
          CASE e.event_type WHEN 'Withdrawn' THEN -1 ELSE 1 END * COALESCE((e.data->>'amount')::numeric, 0),
          current_user)
  ON CONFLICT (account) DO UPDATE SET balance = pj_inline.balance + EXCLUDED.balance;
END $$;
CREATE FUNCTION pj_inline_reset() RETURNS void LANGUAGE sql AS $$ DELETE FROM pj_inline $$;
-- start => 'beginning': the history is applied in create_projection's transaction
SELECT event_store.create_projection('inline_balances', 'pj_inline(event_store.event)', categories => '{pj_account}',
                                     mode => 'inline', reset => 'pj_inline_reset()');
SELECT account, balance FROM pj_inline ORDER BY account;
BEGIN;
SELECT event_store.append('pj_account-101', 'Deposited', '{"amount": 5}');
SELECT account, balance FROM pj_inline WHERE account = 'pj_account-101';   -- already there, before COMMIT
ROLLBACK;
SELECT account, balance FROM pj_inline WHERE account = 'pj_account-101';   -- and gone with the rollback
-- every path appends through the trigger: INSERT and COPY too
INSERT INTO event_store.events (stream_id, event_type, data) VALUES ('pj_account-103', 'Deposited', '{"amount": 7}');
COPY event_store.events (stream_id, event_type, data) FROM stdin;
pj_account-103	Deposited	{"amount": 8}
\.
SELECT account, balance FROM pj_inline WHERE account = 'pj_account-103';
-- on_error => 'stop': the handler's error fails the append, which writes nothing
SELECT event_store.append('pj_account-103', 'Deposited', '{"amount": 9, "fail": "this"}');
\echo :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
SELECT event_store.stream_version('pj_account-103');
-- inline projections are always current; they cannot be paused
SELECT event_store.wait_for_projection('inline_balances', '0 s');
SELECT event_store.pause_projection('inline_balances');
\echo :LAST_ERROR_SQLSTATE
SELECT name, mode, state, position, events_applied, lag_events, lag FROM event_store.projection_status
 WHERE name = 'inline_balances';
-- rebuild: reset, then the whole history again, here and now
UPDATE pj_inline SET balance = -1;
SELECT event_store.rebuild_projection('inline_balances');
SELECT account, balance FROM pj_inline ORDER BY account;
-- the history is applied in the caller's transaction only under READ COMMITTED
-- and before it appends anything itself (its own events are not in the log yet)
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT event_store.rebuild_projection('inline_balances');
\echo :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
ROLLBACK;
BEGIN;
SELECT event_store.append('pj_account-101', 'Deposited', '{"amount": 1}');
SELECT event_store.rebuild_projection('inline_balances');
\echo :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
ROLLBACK;
BEGIN;
SELECT event_store.append('pj_account-101', 'Deposited', '{"amount": 1}');
SELECT event_store.create_projection('inline_late', 'pj_inline(event_store.event)', mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT event_store.drop_projection('inline_balances');
SELECT event_store.append('pj_account-103', 'Deposited', '{"amount": 9, "fail": "no longer applied"}');

-- an inline handler may not append (the append running it holds its stream),
-- nor release the extension's locks
CREATE FUNCTION pj_inline_appends(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM event_store.append('pj_echo-1', 'Echo', '{}');
END $$;
CREATE FUNCTION pj_inline_unlocks(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_unlock_all();
END $$;
SELECT event_store.create_projection('inline_appends', 'pj_inline_appends(event_store.event)', categories => '{pj_nest}',
                                     mode => 'inline', start => 'now');
SELECT event_store.append('pj_nest-1', 'Nest', '{}');
\echo :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
SELECT event_store.drop_projection('inline_appends');
SELECT event_store.create_projection('inline_unlocks', 'pj_inline_unlocks(event_store.event)', categories => '{pj_nest}',
                                     mode => 'inline', start => 'now');
SELECT event_store.append('pj_nest-1', 'Nest', '{}');
\echo :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
SELECT event_store.drop_projection('inline_unlocks');
SELECT event_store.stream_version('pj_nest-1') AS nothing_appended, event_store.stream_version('pj_echo-1') AS no_echo;
DROP FUNCTION pj_inline_appends(event_store.event), pj_inline_unlocks(event_store.event);

-- inline, on_error => 'park': the event is parked, the append commits
CREATE FUNCTION pj_inline_park(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF e.data ? 'fail' THEN RAISE EXCEPTION 'inline handler refuses %', e.data->>'fail'; END IF;
  INSERT INTO pj_seen VALUES ('inline_park', e.stream_id, e.stream_version, e.event_type, e.global_position, current_user);
END $$;
SELECT event_store.create_projection('inline_park', 'pj_inline_park(event_store.event)', categories => '{pj_park}',
                                     mode => 'inline', on_error => 'park');
SELECT event_store.append_events('pj_park-1', '[{"type": "A", "data": {}}, {"type": "B", "data": {"fail": "b"}}, {"type": "C", "data": {}}]');
SELECT stream_version, event_type FROM pj_seen WHERE projection = 'inline_park' ORDER BY stream_version;
SELECT projection, stream_id, stream_version, event_type, error, error_sqlstate
  FROM event_store.parked_events;
-- fix the handler, replay the parked event
CREATE OR REPLACE FUNCTION pj_inline_park(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO pj_seen VALUES ('inline_park', e.stream_id, e.stream_version, e.event_type, e.global_position, current_user);
END $$;
SELECT event_store.wait_for_pipeline();
-- (once ordered, the list shows the parked event's global position)
SELECT global_position = (SELECT global_position FROM event_store.global_log
                           WHERE stream_id = 'pj_park-1' AND stream_version = 2) AS positioned
  FROM event_store.parked_events;
SELECT event_store.replay_parked('inline_park');
SELECT stream_version, event_type, global_position IS NOT NULL AS positioned FROM pj_seen
 WHERE projection = 'inline_park' ORDER BY stream_version;
SELECT count(*) FROM event_store.parked_events;
SELECT event_store.drop_projection('inline_park');
TRUNCATE pj_seen;

-- what a handler SETs lasts for its event only, however events are batched
CREATE TABLE pj_settings (stream_version bigint, seen text);
CREATE FUNCTION pj_setting(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO pj_settings VALUES (e.stream_version, current_setting('pj.leftover', true));
  PERFORM set_config('pj.leftover', 'set at version ' || e.stream_version, false);
  SET work_mem = '1MB';
END $$;
SELECT count(event_store.append('pj_settings-1', 'Set', '{}')) FROM generate_series(1, 5);
SELECT event_store.create_projection('settings', 'pj_setting(event_store.event)', categories => '{pj_settings}');
SELECT event_store.wait_for_projection('settings', '30 s');
SELECT stream_version, coalesce(nullif(seen, ''), '(not set)') AS seen FROM pj_settings ORDER BY 1;
SELECT event_store.drop_projection('settings');
DROP TABLE pj_settings;
DROP FUNCTION pj_setting(event_store.event);

-- async, on_error => 'stop': retried with back-off, then stopped; resume retries
CREATE TABLE pj_poison (stream_id text, stream_version bigint);
CREATE FUNCTION pj_poisoned(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF e.data ? 'poison' AND NOT EXISTS (SELECT 1 FROM pj_cured) THEN
    RAISE EXCEPTION 'cannot digest %', e.data->>'poison' USING ERRCODE = 'P0001';
  END IF;
  INSERT INTO pj_poison VALUES (e.stream_id, e.stream_version);
END $$;
CREATE TABLE pj_cured ();
SELECT event_store.append('pj_poison-1', 'Fed', '{}');
SELECT event_store.append('pj_poison-1', 'Fed', '{"poison": "apple"}');
SELECT event_store.append('pj_poison-1', 'Fed', '{}');
SELECT event_store.create_projection('stopper', 'pj_poisoned(event_store.event)', categories => '{pj_poison}');
SELECT pj_wait_until($$SELECT state = 'failed' FROM event_store.projection_status WHERE name = 'stopper'$$);
SELECT name, state, events_applied, retries, last_error, error_sqlstate, error_stream_id, error_stream_version,
       error_position = (SELECT global_position FROM event_store.global_log
                          WHERE stream_id = 'pj_poison-1' AND stream_version = 2) AS error_position_right,
       error_at >= created_at AS error_at_after_creation, parked
  FROM event_store.projection_status WHERE name = 'stopper';
-- the events before the poison were applied (a batch is applied up to the failing event), none after
SELECT * FROM pj_poison ORDER BY stream_version;
SELECT event_store.wait_for_projection('stopper', '100 ms');
-- the cure, then resume: it goes on from the failing event
INSERT INTO pj_cured DEFAULT VALUES;
SELECT event_store.resume_projection('stopper');
SELECT event_store.wait_for_projection('stopper', '30 s');
SELECT * FROM pj_poison ORDER BY stream_version;
SELECT name, state, events_applied, retries, last_error FROM event_store.projection_status WHERE name = 'stopper';
SELECT event_store.drop_projection('stopper');
TRUNCATE pj_poison, pj_cured;
DELETE FROM pj_cured;

-- async, on_error => 'park': the event is set aside, the projection goes on
SELECT event_store.create_projection('parker', 'pj_poisoned(event_store.event)', categories => '{pj_poison}',
                                     on_error => 'park');
SELECT event_store.wait_for_projection('parker', '30 s');
SELECT * FROM pj_poison ORDER BY stream_version;
SELECT name, state, events_applied, parked, last_error, error_stream_version FROM event_store.projection_status
 WHERE name = 'parker';
SELECT projection, stream_id, stream_version, event_type, error, error_sqlstate,
       global_position = (SELECT global_position FROM event_store.global_log
                           WHERE stream_id = 'pj_poison-1' AND stream_version = 2) AS position_right
  FROM event_store.parked_events;
-- replaying while the cause remains keeps it parked
SELECT event_store.replay_parked('parker');
SELECT count(*) FROM event_store.parked_events;
INSERT INTO pj_cured DEFAULT VALUES;
SELECT event_store.replay_parked('parker');
SELECT * FROM pj_poison ORDER BY stream_version;
SELECT count(*) FROM event_store.parked_events;
-- discard: parked events can be dropped instead
DELETE FROM pj_cured;
SELECT event_store.append('pj_poison-2', 'Fed', '{"poison": "pear"}');
SELECT event_store.append('pj_poison-2', 'Fed', '{"poison": "plum"}');
SELECT event_store.wait_for_projection('parker', '30 s');
SELECT stream_id, stream_version FROM event_store.parked_events ORDER BY 1, 2;
SELECT event_store.discard_parked('parker', 'pj_poison-2', 1);
SELECT event_store.discard_parked('parker');
SELECT count(*) FROM event_store.parked_events;

-- pause and resume
SELECT event_store.pause_projection('parker');
SELECT event_store.append('pj_poison-3', 'Fed', '{}');
SELECT event_store.wait_for_projection('parker', '300 ms');
SELECT name, state, lag_events > 0 AS behind FROM event_store.projection_status WHERE name = 'parker';
SELECT count(*) FROM pj_poison WHERE stream_id = 'pj_poison-3';
SELECT event_store.resume_projection('parker');
SELECT event_store.wait_for_projection('parker', '30 s');
SELECT count(*) FROM pj_poison WHERE stream_id = 'pj_poison-3';
SELECT event_store.drop_projection('parker');

-- rebuild equals live: a random history, the live read model, then a rebuild
SELECT count(event_store.append('pj_account-' || (200 + k), 'AccountCreated', '{"owner": "many"}'))
  FROM generate_series(0, 6) k;
SELECT count(event_store.append('pj_account-' || (200 + (i % 7)),
                                CASE WHEN i % 3 = 0 THEN 'Withdrawn' ELSE 'Deposited' END,
                                jsonb_build_object('amount', (i * 37) % 101)))
  FROM generate_series(1, 300) i;
-- (and one account whose deposit came before it was opened: the update finds no row, live and rebuilt alike)
SELECT event_store.append('pj_account-300', 'Deposited', '{"amount": 5}');
SELECT event_store.append('pj_account-300', 'AccountCreated', '{"owner": "late"}');
SELECT event_store.wait_for_projection('balances', '30 s');
CREATE VIEW pj_fold AS
SELECT stream_id AS account,
       sum(CASE event_type WHEN 'Deposited' THEN (data->>'amount')::numeric
                           WHEN 'Withdrawn' THEN -(data->>'amount')::numeric ELSE 0 END) AS balance
  FROM event_store.read_all(0, 100000, categories => '{pj_account}')
 WHERE stream_id IN (SELECT account FROM pj_balances)
 GROUP BY stream_id;
CREATE TEMP TABLE pj_live AS SELECT * FROM pj_balances;
SELECT count(*) AS accounts, sum(balance) AS total FROM pj_live;
BEGIN;
SELECT event_store.rebuild_projection('balances');
SELECT count(*) AS rows_after_reset FROM pj_balances;
SELECT state, rebuild_done, rebuild_total = (SELECT max(global_position) FROM event_store.global_log) AS total_is_head,
       events_applied, position
  FROM event_store.projection_status WHERE name = 'balances';
COMMIT;
-- appends during the rebuild are not missed
SELECT event_store.append('pj_account-101', 'Deposited', '{"amount": 1}');
SELECT event_store.wait_for_projection('balances', '30 s');
SELECT state, rebuild_done, rebuild_total FROM event_store.projection_status WHERE name = 'balances';
UPDATE pj_live SET balance = balance + 1 WHERE account = 'pj_account-101';
SELECT count(*) AS differ FROM (
  (SELECT * FROM pj_live EXCEPT SELECT * FROM pj_balances)
  UNION ALL
  (SELECT * FROM pj_balances EXCEPT SELECT * FROM pj_live)) d;
-- live and rebuilt both equal a fresh fold of the log (for the accounts opened first)
SELECT count(*) AS compared, count(*) FILTER (WHERE b.balance <> f.balance) AS differ
  FROM pj_balances b JOIN pj_fold f USING (account)
 WHERE b.account <> 'pj_account-300';

-- bad inputs
SELECT event_store.create_projection(NULL, 'pj_seen(event_store.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.create_projection('', 'pj_seen(event_store.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.create_projection(repeat('p', 1025), 'pj_seen(event_store.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.create_projection('p', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.create_projection('balances', 'pj_seen(event_store.event)');
\echo :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
CREATE FUNCTION pj_wrong1(data jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION pj_wrong2(e event_store.event) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
CREATE FUNCTION pj_wrong3(e event_store.event) RETURNS SETOF void LANGUAGE sql AS $$ SELECT $$;
CREATE PROCEDURE pj_wrong4(e event_store.event) LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION pj_wrong5(x int) RETURNS void LANGUAGE sql AS $$ SELECT $$;
SELECT event_store.create_projection('p', 'pj_wrong1(jsonb)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.create_projection('p', 'pj_wrong2(event_store.event)');
\echo :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
SELECT event_store.create_projection('p', 'pj_wrong3(event_store.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.create_projection('p', 'pj_wrong4(event_store.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.create_projection('p', 'pj_seen(event_store.event)', reset => 'pj_wrong5(integer)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.create_projection('p', 'pj_seen(event_store.event)', reset => 'pj_seen(event_store.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.create_projection('p', 'no_such_function(event_store.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.create_projection('p', 'pj_seen(event_store.event)', mode => 'sync');
\echo :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
SELECT event_store.create_projection('p', 'pj_seen(event_store.event)', mode => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.create_projection('p', 'pj_seen(event_store.event)', on_error => 'ignore');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.create_projection('p', 'pj_seen(event_store.event)', start => 'later');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.create_projection('p', 'pj_seen(event_store.event)', event_types => '{{a},{b}}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.create_projection('p', 'pj_seen(event_store.event)', event_types => '{a,NULL}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.create_projection('p', 'pj_seen(event_store.event)', categories => '{""}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.create_projection('p', 'pj_seen(event_store.event)', categories => ARRAY[repeat('c', 1025)]);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM event_store.projections WHERE name = 'p';
-- unknown names
SELECT event_store.drop_projection('nope');
SELECT event_store.pause_projection('nope');
\echo :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
SELECT event_store.resume_projection('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.rebuild_projection('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.replay_parked('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.discard_parked('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.wait_for_projection('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.drop_projection(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.wait_for_projection('balances', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.wait_for_projection('balances', '-1 us');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.discard_parked('balances', NULL, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.discard_parked('balances', '', NULL);
\echo :LAST_ERROR_SQLSTATE
-- rebuild needs a reset
SELECT event_store.create_projection('no_reset', 'pj_seen(event_store.event)', event_types => '{}');
SELECT event_store.rebuild_projection('no_reset');
\echo :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
SELECT event_store.drop_projection('no_reset');
-- a handler dropped after creation: the projection stops with VE043
CREATE FUNCTION pj_doomed(e event_store.event) RETURNS void LANGUAGE sql AS $$ SELECT $$;
SELECT event_store.create_projection('doomed', 'pj_doomed(event_store.event)', categories => '{pj_order}');
SELECT event_store.wait_for_projection('doomed', '30 s');
DROP FUNCTION pj_doomed(event_store.event);
SELECT event_store.append('pj_order-3', 'PjOrderPlaced', '{}');
SELECT pj_wait_until($$SELECT state = 'failed' FROM event_store.projection_status WHERE name = 'doomed'$$);
SELECT state, error_sqlstate, last_error, error_stream_id FROM event_store.projection_status WHERE name = 'doomed';
SELECT event_store.drop_projection('doomed');
SELECT event_store.drop_projection('doomed');

-- privileges: handlers run as the projection's owner, never as the worker's superuser
CREATE ROLE regress_pj_owner NOLOGIN;
CREATE ROLE regress_pj_stranger NOLOGIN;
GRANT USAGE ON SCHEMA event_store TO regress_pj_owner, regress_pj_stranger;
GRANT EXECUTE ON FUNCTION event_store.create_projection(text, regprocedure, text[], text[], text, regprocedure, text, text),
                          event_store.drop_projection(text), event_store.pause_projection(text),
                          event_store.resume_projection(text), event_store.rebuild_projection(text),
                          event_store.replay_parked(text), event_store.discard_parked(text, text, bigint),
                          event_store.wait_for_projection(text, interval) TO regress_pj_owner, regress_pj_stranger;
GRANT SELECT ON event_store.projection_status, event_store.parked_events TO regress_pj_owner;
GRANT INSERT, SELECT ON pj_seen TO regress_pj_owner;
-- without SELECT on the events, no projection: it would read them for its owner
SET ROLE regress_pj_owner;
SELECT event_store.create_projection('owned', 'pj_seen(event_store.event)', categories => '{pj_order}');
\echo :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
RESET ROLE;
GRANT SELECT ON event_store.events, event_store.global_log TO regress_pj_owner;
-- without EXECUTE on the handler, none either
REVOKE EXECUTE ON FUNCTION pj_seen(event_store.event) FROM PUBLIC;
SET ROLE regress_pj_owner;
SELECT event_store.create_projection('owned', 'pj_seen(event_store.event)', categories => '{pj_order}');
\echo :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
RESET ROLE;
GRANT EXECUTE ON FUNCTION pj_seen(event_store.event) TO regress_pj_owner;
SET ROLE regress_pj_owner;
SELECT event_store.create_projection('owned', 'pj_seen(event_store.event)', categories => '{pj_order}');
SELECT event_store.wait_for_projection('owned', '30 s');
RESET ROLE;
SELECT DISTINCT who FROM pj_seen;
SELECT owner FROM event_store.projection_status WHERE name = 'owned';
-- someone else may not change it
SET ROLE regress_pj_stranger;
SELECT event_store.pause_projection('owned');
\echo :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
SELECT event_store.drop_projection('owned');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- revoking the owner's right stops the projection at its next event
REVOKE EXECUTE ON FUNCTION pj_seen(event_store.event) FROM regress_pj_owner;
SELECT event_store.append('pj_order-4', 'PjOrderPlaced', '{}');
SELECT pj_wait_until($$SELECT state = 'failed' FROM event_store.projection_status WHERE name = 'owned'$$);
SELECT state, error_sqlstate FROM event_store.projection_status WHERE name = 'owned';
-- the text of a handler's error (it may quote the event's data) is for the owner's members only
GRANT SELECT ON event_store.projection_status TO regress_pj_stranger;
SET ROLE regress_pj_stranger;
SELECT name, state, error_sqlstate, last_error FROM event_store.projection_status WHERE name = 'owned';
RESET ROLE;
SET ROLE regress_pj_owner;
SELECT name, state, error_sqlstate, last_error IS NOT NULL AS sees_error FROM event_store.projection_status WHERE name = 'owned';
SELECT event_store.drop_projection('owned');
RESET ROLE;
-- a handler that tries what only a superuser may: it runs as its owner, and fails
CREATE TABLE pj_escalation (attempt text, result text);
GRANT INSERT ON pj_escalation TO regress_pj_owner;
CREATE FUNCTION pj_escalate(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  labels text[] := ARRAY['create a superuser', 'make itself superuser', 'set role to the superuser',
                         'set session authorization', 'copy to a program', 'read a server file',
                         'create a temporary table', 'alter system', 'terminate the worker'];
  attempts text[] := ARRAY['CREATE ROLE regress_pj_evil SUPERUSER', 'ALTER ROLE regress_pj_owner SUPERUSER',
                           format('SET ROLE %I', session_user), format('SET SESSION AUTHORIZATION %I', session_user),
                           'COPY (SELECT 1) TO PROGRAM ''true''', 'SELECT pg_read_file(''postgresql.conf'')',
                           'CREATE TEMP TABLE pj_tmp (x int)', 'ALTER SYSTEM SET work_mem = ''1MB''',
                           'SELECT pg_terminate_backend(pg_backend_pid())'];
BEGIN
  FOR i IN 1 .. array_length(attempts, 1) LOOP
    BEGIN
      EXECUTE attempts[i];
      INSERT INTO pj_escalation VALUES (labels[i], 'succeeded as ' || current_user);
    EXCEPTION WHEN OTHERS THEN
      INSERT INTO pj_escalation VALUES (labels[i], SQLSTATE);
    END;
  END LOOP;
  INSERT INTO pj_escalation VALUES ('current_user', current_user);
  INSERT INTO pj_escalation VALUES ('session_user is a superuser', (SELECT rolsuper FROM pg_roles WHERE rolname = session_user)::text);
END $$;
ALTER FUNCTION pj_escalate(event_store.event) OWNER TO regress_pj_owner;
SET ROLE regress_pj_owner;
SELECT event_store.create_projection('escalate', 'pj_escalate(event_store.event)', categories => '{pj_order}', start => 'now');
RESET ROLE;
SELECT event_store.append('pj_order-5', 'PjOrderPlaced', '{}');
SELECT event_store.wait_for_projection('escalate', '30 s');
SELECT * FROM pj_escalation;
SELECT count(*) FROM pg_roles WHERE rolname = 'regress_pj_evil' OR (rolname = 'regress_pj_owner' AND rolsuper);
-- inline: a superuser's append runs the handler as its owner, too.  An inline
-- projection is code every writer runs, as a trigger is: it needs TRIGGER on the log
SET ROLE regress_pj_owner;
SELECT event_store.drop_projection('escalate');
SELECT event_store.create_projection('escalate_inline', 'pj_escalate(event_store.event)', categories => '{pj_order}',
                                     mode => 'inline', start => 'now');
\echo :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
RESET ROLE;
GRANT TRIGGER ON event_store.events TO regress_pj_owner;
SET ROLE regress_pj_owner;
SELECT event_store.create_projection('escalate_inline', 'pj_escalate(event_store.event)', categories => '{pj_order}',
                                     mode => 'inline', start => 'now');
RESET ROLE;
TRUNCATE pj_escalation;
SELECT event_store.append('pj_order-6', 'PjOrderPlaced', '{}');
SELECT * FROM pj_escalation;
SET ROLE regress_pj_owner;
SELECT event_store.drop_projection('escalate_inline');
RESET ROLE;

-- personal data: handlers see protected fields as their owner may read them;
-- SubjectForgotten is an ordinary event a projection handles to erase its copies
SET event_store.key_encryption_key = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
SELECT event_store.protect('PjUserRegistered', '$.user_id', '{$.email}');
CREATE TABLE pj_users (user_id text PRIMARY KEY, email text, redacted text);
GRANT SELECT, INSERT, UPDATE, DELETE ON pj_users TO regress_pj_owner;
CREATE FUNCTION pj_user(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF e.event_type = 'SubjectForgotten' THEN
    DELETE FROM pj_users WHERE encode(sha256(convert_to(user_id, 'UTF8')), 'hex') = e.data->>'subject_sha256';
  ELSE
    INSERT INTO pj_users VALUES (e.data->>'user_id', e.data->>'email', e.metadata->>'redacted')
    ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email, redacted = EXCLUDED.redacted;
  END IF;
END $$;
ALTER FUNCTION pj_user(event_store.event) OWNER TO regress_pj_owner;
SET ROLE regress_pj_owner;
SELECT event_store.create_projection('users', 'pj_user(event_store.event)',
                                     event_types => '{PjUserRegistered, SubjectForgotten}', mode => 'inline', start => 'now');
RESET ROLE;
SELECT event_store.append('pj_user-1', 'PjUserRegistered', '{"user_id": "pu1", "email": "ann@example.com"}');
SELECT * FROM pj_users;                      -- the owner may not read personal data: null
GRANT EXECUTE ON FUNCTION event_store.personal_data_access() TO regress_pj_owner;
SELECT event_store.append('pj_user-2', 'PjUserRegistered', '{"user_id": "pu2", "email": "bob@example.com"}');
SELECT * FROM pj_users ORDER BY user_id;     -- now it may
SELECT event_store.forget('pu2');
SELECT * FROM pj_users ORDER BY user_id;     -- the projection erased its copy
SET ROLE regress_pj_owner;
SELECT event_store.drop_projection('users');
RESET ROLE;
REVOKE EXECUTE ON FUNCTION event_store.personal_data_access() FROM regress_pj_owner;
RESET event_store.key_encryption_key;

-- the README's grants (Security): a role with exactly them runs a projection
CREATE ROLE regress_projector NOLOGIN;
GRANT USAGE ON SCHEMA event_store TO regress_projector;
GRANT SELECT ON event_store.events, event_store.global_log,
                event_store.projection_status, event_store.parked_events TO regress_projector;
GRANT EXECUTE ON FUNCTION event_store.create_projection(text, regprocedure, text[], text[], text, regprocedure, text, text),
                          event_store.drop_projection(text), event_store.pause_projection(text),
                          event_store.resume_projection(text), event_store.rebuild_projection(text),
                          event_store.replay_parked(text), event_store.discard_parked(text, text, bigint),
                          event_store.wait_for_projection(text, interval) TO regress_projector;
GRANT TRIGGER ON event_store.events TO regress_projector;
CREATE TABLE pj_app (stream_id text);
ALTER TABLE pj_app OWNER TO regress_projector;
CREATE FUNCTION pj_app(e event_store.event) RETURNS void LANGUAGE sql AS $$ INSERT INTO pj_app VALUES (e.stream_id) $$;
ALTER FUNCTION pj_app(event_store.event) OWNER TO regress_projector;
SET ROLE regress_projector;
SELECT event_store.create_projection('app', 'pj_app(event_store.event)', categories => '{pj_order}');
SELECT event_store.wait_for_projection('app', '30 s');
SELECT count(*) > 0 AS applied FROM pj_app;
SELECT name, state, owner FROM event_store.projection_status WHERE name = 'app';
SELECT event_store.pause_projection('app'), event_store.resume_projection('app'), event_store.drop_projection('app');
SELECT event_store.create_projection('app_inline', 'pj_app(event_store.event)', categories => '{pj_order}', mode => 'inline');
SELECT event_store.drop_projection('app_inline');
-- but it may not write the registry itself
UPDATE event_store.projections SET position = 0;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP TABLE pj_app;
DROP FUNCTION pj_app(event_store.event);
REVOKE ALL ON SCHEMA event_store FROM regress_projector;
REVOKE ALL ON ALL TABLES IN SCHEMA event_store FROM regress_projector;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA event_store FROM regress_projector;
DROP ROLE regress_projector;
SELECT has_function_privilege('public', 'event_store.create_projection(text, regprocedure, text[], text[], text, regprocedure, text, text)', 'EXECUTE') AS public_create,
       has_table_privilege('public', 'event_store.projection_status', 'SELECT') AS public_status,
       has_table_privilege('regress_pj_owner', 'event_store.projections', 'UPDATE') AS owner_updates_registry;

-- clean up
SELECT event_store.drop_projection('balances');
DROP VIEW pj_fold;
DROP TABLE pj_balances, pj_seen, pj_inline, pj_poison, pj_cured, pj_addresses, pj_escalation, pj_users;
DROP FUNCTION pj_balance(event_store.event), pj_balance_reset(), pj_seen(event_store.event),
              pj_seen_deposits(event_store.event), pj_seen_orders(event_store.event), pj_seen_both(event_store.event),
              pj_seen_none(event_store.event), pj_inline(event_store.event), pj_inline_reset(),
              pj_inline_park(event_store.event), pj_poisoned(event_store.event), pj_up_v1(jsonb),
              pj_address(event_store.event), pj_escalate(event_store.event), pj_user(event_store.event), pj_wait_until(text),
              pj_wrong1(jsonb), pj_wrong2(event_store.event), pj_wrong3(event_store.event), pj_wrong5(integer);
DROP PROCEDURE pj_wrong4(event_store.event);
REVOKE ALL ON SCHEMA event_store FROM regress_pj_owner, regress_pj_stranger;
REVOKE ALL ON ALL TABLES IN SCHEMA event_store FROM regress_pj_owner, regress_pj_stranger;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA event_store FROM regress_pj_owner, regress_pj_stranger;
DROP ROLE regress_pj_owner, regress_pj_stranger;
SELECT count(*) FROM event_store.projections;
