-- The demo: the seed's bank account, step by step.  Run by test/demo.
\set ON_ERROR_STOP on
\pset footer off
\echo
\echo '== 1. Install the extension, and pgcrypto for personal data'
CREATE EXTENSION pgcrypto;
CREATE EXTENSION event_store;

\echo
\echo '== 2. Append the history of account-101: each write says which version it expects'
SELECT event_store.append('account-101', 'AccountCreated', '{"id": 101, "owner": "Alice"}', expected_version => 0) AS version;
SELECT event_store.append('account-101', 'Deposited', '{"id": 101, "amount": 50}', expected_version => 1) AS version;
SELECT event_store.append('account-101', 'Withdrawn', '{"id": 101, "amount": 20}', expected_version => 2) AS version;

\echo
\echo '== 3. Read the stream: state = f(history)'
SELECT stream_version, event_type, data, recorded_at FROM event_store.read_stream('account-101');
SELECT sum(CASE event_type WHEN 'Deposited' THEN (data->>'amount')::numeric
                           WHEN 'Withdrawn' THEN -(data->>'amount')::numeric ELSE 0 END) AS balance
  FROM event_store.read_stream('account-101');

\echo
\echo '== 4. A stale writer (it loaded version 2) is refused: optimistic concurrency'
\set ON_ERROR_STOP off
SELECT event_store.append('account-101', 'Withdrawn', '{"id": 101, "amount": 40}', expected_version => 2);
\set ON_ERROR_STOP on

\echo
\echo '== 5. A client retries after a lost acknowledgement: the event id makes it a no-op'
SELECT event_store.append('account-101', 'Deposited', '{"id": 101, "amount": 5}', expected_version => 3,
                          event_id => '0190a4c2-0000-7000-8000-000000000001') AS first_try;
SELECT event_store.append('account-101', 'Deposited', '{"id": 101, "amount": 5}', expected_version => 3,
                          event_id => '0190a4c2-0000-7000-8000-000000000001') AS retry;
SELECT event_store.stream_version('account-101') AS version_after_retry;

\echo
\echo '== 6. A batch is all or nothing'
SELECT event_store.append_events('account-102', '[
  {"type": "AccountCreated", "data": {"id": 102, "owner": "Bob"}},
  {"type": "Deposited", "data": {"id": 102, "amount": 100}, "metadata": {"channel": "atm"}}
]', expected_version => 0) AS version;
\set ON_ERROR_STOP off
SELECT event_store.append_events('account-102', '[
  {"type": "Withdrawn", "data": {"id": 102, "amount": 10}},
  {"type": "Withdrawn", "data": "not an object"}
]');
\set ON_ERROR_STOP on
SELECT event_store.stream_version('account-102') AS still_at;

\echo
\echo '== 7. Any client can append with a plain INSERT; the trigger assigns the version'
INSERT INTO event_store.events (stream_id, event_type, data) VALUES ('account-102', 'Withdrawn', '{"id": 102, "amount": 30}');
SELECT stream_version, event_type, data, metadata FROM event_store.read_stream('account-102');

\echo
\echo '== 8. History cannot be rewritten, not even by the superuser'
\set ON_ERROR_STOP off
UPDATE event_store.events SET data = '{"id": 101, "amount": 5000}' WHERE stream_id = 'account-101' AND stream_version = 2;
DELETE FROM event_store.events WHERE stream_id = 'account-101';
\set ON_ERROR_STOP on

\echo
\echo '== 9. Time travel: the stream as it was before the withdrawal'
SELECT stream_version, event_type, data
  FROM event_store.read_stream('account-101',
         as_of => (SELECT recorded_at FROM event_store.read_stream('account-101', from_version => 2, max_count => 1)));

\echo
\echo '== 10. The streams, newest version first'
SELECT stream_id, category, version FROM event_store.streams ORDER BY version DESC, stream_id;

\echo
\echo '== 11. The global log: every event once, in commit order (ordered by the decoding pipeline)'
SELECT event_store.wait_for_pipeline('30 s') AS pipeline_caught_up;
SELECT global_position, stream_id, stream_version, event_type FROM event_store.read_all(0, 10);
\echo 'Three processes of one service split it (a consumer group): each stream goes to one member'
SELECT m AS member, coalesce(string_agg(DISTINCT e.stream_id, ', '), '-') AS streams, count(e.stream_id) AS events
  FROM generate_series(0, 2) m LEFT JOIN LATERAL event_store.read_all(0, 100, NULL, NULL, m, 3) e ON true
 GROUP BY m ORDER BY m;
\echo 'A consumer keeps its position in the database, in the transaction of its own effects'
SELECT event_store.save_position('mailer', 3);
SELECT global_position, stream_id, event_type FROM event_store.read_all(event_store.load_position('mailer'), 2);

\echo
\echo '== 12. An aggregate: the balance folded by a reducer, with a snapshot every 2 events'
CREATE FUNCTION account_balance(state jsonb, e event_store.event) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object('balance', coalesce((state->>'balance')::numeric, 0)
           + CASE e.event_type WHEN 'Deposited' THEN (e.data->>'amount')::numeric
                               WHEN 'Withdrawn' THEN -(e.data->>'amount')::numeric ELSE 0 END)
$$;
SELECT event_store.define_aggregate('account', 'account_balance(jsonb, event_store.event)', '{}', 2);
SELECT * FROM event_store.load_aggregate('account-101', 'account');
SELECT stream_id, aggregate, version, state FROM event_store.snapshots;

\echo
\echo '== 13. A command in one call: load, decide, append at the loaded version (retried on conflicts)'
CREATE FUNCTION withdraw(state jsonb, command jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  IF (state->>'balance')::numeric < (command->>'amount')::numeric THEN
    RAISE EXCEPTION 'insufficient funds: balance %, asked %', state->>'balance', command->>'amount'
      USING ERRCODE = 'P0001';
  END IF;
  RETURN jsonb_build_array(jsonb_build_object('type', 'Withdrawn', 'data', jsonb_build_object('amount', command->'amount')));
END $$;
SELECT event_store.execute('account-101', 'account', 'withdraw(jsonb, jsonb)', '{"amount": 10}') AS version;
\set ON_ERROR_STOP off
SELECT event_store.execute('account-101', 'account', 'withdraw(jsonb, jsonb)', '{"amount": 1000}');
\set ON_ERROR_STOP on
SELECT * FROM event_store.load_aggregate('account-101', 'account');

\echo
\echo '== 14. Schema evolution: version 1 had "amount" in cents; an upcaster turns it into euros on every read'
SELECT event_store.append('account-103', 'Refunded', '{"amount_cents": 2500}', schema_version => 1);
CREATE FUNCTION cents_to_euros(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT jsonb_build_object('amount', round((data->>'amount_cents')::numeric / 100, 2)) $$;
SELECT event_store.add_upcaster('Refunded', 1, 'cents_to_euros(jsonb)');
SELECT stream_version, schema_version, data FROM event_store.read_stream('account-103');
SELECT stream_version, schema_version, data AS stored FROM event_store.events WHERE stream_id = 'account-103';

\echo
\echo '== 15. The read side (CQRS): a projection keeps a balances table current; query it with plain SQL'
CREATE TABLE balances (account text PRIMARY KEY, owner text, balance numeric NOT NULL DEFAULT 0);
CREATE FUNCTION project_balance(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  CASE e.event_type
    WHEN 'AccountCreated' THEN INSERT INTO balances (account, owner) VALUES (e.stream_id, e.data->>'owner');
    WHEN 'Deposited' THEN UPDATE balances SET balance = balance + (e.data->>'amount')::numeric WHERE account = e.stream_id;
    WHEN 'Withdrawn' THEN UPDATE balances SET balance = balance - (e.data->>'amount')::numeric WHERE account = e.stream_id;
    ELSE NULL;
  END CASE;
END $$;
CREATE FUNCTION reset_balances() RETURNS void LANGUAGE sql AS $$ DELETE FROM balances $$;
SELECT event_store.create_projection('balances', 'project_balance(event_store.event)',
                                     categories => '{account}', reset => 'reset_balances()');
SELECT event_store.wait_for_projection('balances', '30 s') AS caught_up_with_history;
SELECT * FROM balances ORDER BY account;
\echo 'Which accounts hold more than 50? (the question the event log is bad at)'
SELECT account, owner, balance FROM balances WHERE balance > 50;
\echo 'Bob deposits 100; read-your-writes: wait for the projection, then read'
SELECT event_store.append('account-102', 'Deposited', '{"id": 102, "amount": 100}') AS version;
SELECT event_store.wait_for_projection('balances') AS applied;
SELECT account, owner, balance FROM balances WHERE balance > 50;
SELECT name, mode, state, position, events_applied, lag_events FROM event_store.projection_status;

\echo
\echo '== 16. Personal data: the owner''s name is encrypted with a key of her own; forgetting her deletes the key'
SET event_store.key_encryption_key = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
SELECT event_store.protect('CustomerRegistered', '$.customer_id', '{$.name, $.email}');
SELECT event_store.append('customer-7', 'CustomerRegistered',
       '{"customer_id": "c-7", "name": "Carol", "email": "carol@example.com", "plan": "gold"}');
SELECT data FROM event_store.read_stream('customer-7');
SELECT data->>'name' AS stored_name FROM event_store.events WHERE stream_id = 'customer-7';
SELECT event_store.forget('c-7') AS forgotten;
SELECT data, metadata->>'redacted' AS redacted FROM event_store.read_stream('customer-7');
SELECT event_type, data FROM event_store.read_stream('event_store-subjects');
