-- execute(): command handling in one call.  Load, decide, append at the
-- loaded version; business errors pass through unchanged; retries on a
-- concurrent append are bounded.
\set SHOW_CONTEXT never

CREATE FUNCTION bank_reducer(state jsonb, e event_store.event) RETURNS jsonb
LANGUAGE sql AS $$
  SELECT CASE e.event_type
    WHEN 'AccountOpened' THEN jsonb_build_object('open', true, 'owner', e.data->'owner', 'balance', 0)
    WHEN 'Deposited' THEN jsonb_set(state, '{balance}', to_jsonb((state->>'balance')::numeric + (e.data->>'amount')::numeric))
    WHEN 'Withdrawn' THEN jsonb_set(state, '{balance}', to_jsonb((state->>'balance')::numeric - (e.data->>'amount')::numeric))
    ELSE state END
$$;
SELECT event_store.define_aggregate('bank', 'bank_reducer(jsonb, event_store.event)', '{"open": false}');

-- The decider: (state, command) -> JSON array of new events, or a business error.
CREATE FUNCTION bank_decide(state jsonb, command jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
  CASE command->>'type'
    WHEN 'Open' THEN
      IF (state->>'open')::boolean THEN
        RETURN '[]';                       -- already open: nothing to do
      END IF;
      RETURN jsonb_build_array(jsonb_build_object('type', 'AccountOpened', 'data', jsonb_build_object('owner', command->'owner')));
    WHEN 'Deposit' THEN
      IF NOT (state->>'open')::boolean THEN
        RAISE EXCEPTION 'account is not open' USING ERRCODE = 'AB001';
      END IF;
      RETURN jsonb_build_array(jsonb_build_object('type', 'Deposited', 'data', jsonb_build_object('amount', command->'amount'),
                                                  'metadata', jsonb_build_object('command', command->>'type')));
    WHEN 'Withdraw' THEN
      IF (state->>'balance')::numeric < (command->>'amount')::numeric THEN
        RAISE EXCEPTION 'insufficient funds'
          USING ERRCODE = 'AB002',
                DETAIL = format('The balance is %s, the withdrawal %s.', state->>'balance', command->>'amount'),
                HINT = 'Deposit first.';
      END IF;
      RETURN jsonb_build_array(jsonb_build_object('type', 'Withdrawn', 'data', jsonb_build_object('amount', command->'amount')));
    WHEN 'Transfer' THEN
      -- two events, all or nothing
      RETURN jsonb_build_array(
        jsonb_build_object('type', 'Withdrawn', 'data', jsonb_build_object('amount', command->'amount')),
        jsonb_build_object('type', 'TransferSent', 'data', jsonb_build_object('to', command->'to')));
    ELSE
      RAISE EXCEPTION 'unknown command %', command->>'type' USING ERRCODE = 'AB000';
  END CASE;
END $$;

-- the seed, by commands: open, deposit 50, withdraw 20 -> balance 30
SELECT event_store.execute('bank-1', 'bank', 'bank_decide(jsonb, jsonb)', '{"type": "Open", "owner": "Alice"}');
SELECT event_store.execute('bank-1', 'bank', 'bank_decide(jsonb, jsonb)', '{"type": "Deposit", "amount": 50}');
SELECT event_store.execute('bank-1', 'bank', 'bank_decide(jsonb, jsonb)', '{"type": "Withdraw", "amount": 20}');
SELECT * FROM event_store.load_aggregate('bank-1', 'bank');
SELECT stream_version, event_type, data, metadata FROM event_store.read_stream('bank-1');

-- nothing to do: [] appends nothing and returns the version
SELECT event_store.execute('bank-1', 'bank', 'bank_decide(jsonb, jsonb)', '{"type": "Open", "owner": "Alice"}');
SELECT event_store.stream_version('bank-1');

-- two events at once
SELECT event_store.execute('bank-1', 'bank', 'bank_decide(jsonb, jsonb)', '{"type": "Transfer", "amount": 5, "to": "bank-2"}');
SELECT stream_version, event_type, data FROM event_store.read_stream('bank-1', from_version => 4);

-- business errors pass through unchanged: SQLSTATE, message, detail, hint; nothing appended
\set VERBOSITY verbose
SELECT event_store.execute('bank-1', 'bank', 'bank_decide(jsonb, jsonb)', '{"type": "Withdraw", "amount": 1000}');
\set VERBOSITY default
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-9', 'bank', 'bank_decide(jsonb, jsonb)', '{"type": "Deposit", "amount": 1}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', 'bank_decide(jsonb, jsonb)', '{"type": "Close"}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.stream_version('bank-1'), event_store.stream_version('bank-9');

-- a business error inside a transaction aborts it, as any error does; a
-- savepoint keeps what came before
BEGIN;
SELECT event_store.execute('bank-1', 'bank', 'bank_decide(jsonb, jsonb)', '{"type": "Deposit", "amount": 1}');
SAVEPOINT s;
SELECT event_store.execute('bank-1', 'bank', 'bank_decide(jsonb, jsonb)', '{"type": "Withdraw", "amount": 1000}');
ROLLBACK TO s;
SELECT event_store.execute('bank-1', 'bank', 'bank_decide(jsonb, jsonb)', '{"type": "Deposit", "amount": 2}');
COMMIT;
SELECT * FROM event_store.load_aggregate('bank-1', 'bank');

-- the correlation id reaches the appended events like any append's
SET event_store.correlation_id = 'req-7';
SELECT event_store.execute('bank-1', 'bank', 'bank_decide(jsonb, jsonb)', '{"type": "Deposit", "amount": 3}');
RESET event_store.correlation_id;
SELECT stream_version, metadata FROM event_store.read_stream('bank-1', backwards => true, max_count => 1);

-- Deciders that return something other than a JSON array of events: VE014.
CREATE FUNCTION decide_json(state jsonb, command jsonb) RETURNS jsonb
LANGUAGE sql AS 'SELECT command->''returns''';
SELECT event_store.execute('bank-1', 'bank', 'decide_json(jsonb, jsonb)', '{"returns": {"type": "Deposited", "data": {}}}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', 'decide_json(jsonb, jsonb)', '{"returns": "Deposited"}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', 'decide_json(jsonb, jsonb)', '{"returns": null}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', 'decide_json(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', 'decide_json(jsonb, jsonb)', '{"returns": [1]}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', 'decide_json(jsonb, jsonb)', '{"returns": [{"type": "Deposited"}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', 'decide_json(jsonb, jsonb)', '{"returns": [{"data": {}}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', 'decide_json(jsonb, jsonb)', '{"returns": [{"type": "A", "data": {}}, {"type": "B", "data": {}, "colour": "red"}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', 'decide_json(jsonb, jsonb)', '{"returns": [{"type": "A", "data": [1]}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', 'decide_json(jsonb, jsonb)', '{"returns": [{"type": "", "data": {}}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', 'decide_json(jsonb, jsonb)', '{"returns": [{"type": "A", "data": {}, "id": "not-a-uuid"}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', 'decide_json(jsonb, jsonb)', '{"returns": [{"type": "A", "data": {}, "schema_version": 0}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', 'decide_json(jsonb, jsonb)', '{"returns": [{"type": "A", "data": {}, "schema_version": 99999999999}]}');
\echo :LAST_ERROR_SQLSTATE
-- an error of the append itself (here another trigger's) is not the
-- decider's: it passes through with its own SQLSTATE, not VE014
CREATE FUNCTION refuse_zero() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.data ? 'zero' THEN PERFORM 1 / 0; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_zero BEFORE INSERT ON event_store.events
  FOR EACH ROW EXECUTE FUNCTION refuse_zero();
SELECT event_store.execute('bank-1', 'bank', 'decide_json(jsonb, jsonb)', '{"returns": [{"type": "A", "data": {"zero": 1}}]}');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER refuse_zero ON event_store.events;
DROP FUNCTION refuse_zero();
-- a decider that produces bad JSON fails in the decider, with its own error
CREATE FUNCTION decide_bad_json(state jsonb, command jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$ BEGIN RETURN '[{"type": "A", "data": {]'; END $$;
SELECT event_store.execute('bank-1', 'bank', 'decide_bad_json(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.stream_version('bank-1');
-- an event id already used by another event: VE002, as for append_events
SELECT event_store.execute('bank-ids', 'bank', 'decide_json(jsonb, jsonb)',
  '{"returns": [{"type": "A", "data": {}, "id": "00000000-0000-4000-8000-00000000e001"}]}');
SELECT event_store.execute('bank-ids', 'bank', 'decide_json(jsonb, jsonb)',
  '{"returns": [{"type": "B", "data": {}, "id": "00000000-0000-4000-8000-00000000e001"}]}');
\echo :LAST_ERROR_SQLSTATE
-- the same event again is a no-op, as for append_events
SELECT event_store.execute('bank-ids', 'bank', 'decide_json(jsonb, jsonb)',
  '{"returns": [{"type": "A", "data": {}, "id": "00000000-0000-4000-8000-00000000e001"}]}');
SELECT event_store.stream_version('bank-ids');

-- Retries.  A decider that appends to the stream itself stands in for a
-- concurrent writer: every attempt conflicts, is rolled back (with the
-- decider's own append), and retried, until execute gives up.
CREATE FUNCTION decide_racing(state jsonb, command jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE 'attempt at balance %', state->>'balance';
  PERFORM event_store.append('bank-1', 'Deposited', '{"amount": 1000}');
  RETURN '[{"type": "Deposited", "data": {"amount": 1}}]';
END $$;
SHOW event_store.execute_retries;
SET event_store.execute_retries = 2;
SELECT event_store.execute('bank-1', 'bank', 'decide_racing(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE
SET event_store.execute_retries = 0;
SELECT event_store.execute('bank-1', 'bank', 'decide_racing(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE
RESET event_store.execute_retries;
SELECT * FROM event_store.load_aggregate('bank-1', 'bank');   -- nothing of the attempts stayed
-- under REPEATABLE READ a retry cannot see the new version: 40001, retry the transaction
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT event_store.execute('bank-1', 'bank', 'decide_racing(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
-- a decider error is not retried, even when it is a wrong expected version of its own
CREATE FUNCTION decide_own_conflict(state jsonb, command jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE 'called';
  PERFORM event_store.append('bank-1', 'Deposited', '{"amount": 1}', expected_version => 1);
  RETURN '[]';
END $$;
SELECT event_store.execute('bank-1', 'bank', 'decide_own_conflict(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE

-- Bad inputs.
SELECT event_store.execute(NULL, 'bank', 'bank_decide(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', NULL, 'bank_decide(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', NULL, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', 'bank_decide(jsonb, jsonb)', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('', 'bank', 'bank_decide(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute(repeat('x', 1025), 'bank', 'bank_decide(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', '', 'bank_decide(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bnak', 'bank_decide(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', 'bank_reducer(jsonb, event_store.event)', '{}');
\echo :LAST_ERROR_SQLSTATE
CREATE FUNCTION decide_set(state jsonb, command jsonb) RETURNS SETOF jsonb LANGUAGE sql AS 'SELECT ''[]''::jsonb';
SELECT event_store.execute('bank-1', 'bank', 'decide_set(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', 'no_such_decider(jsonb, jsonb)', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.execute('bank-1', 'bank', 'bank_decide(jsonb, jsonb)', '{bad');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.stream_version('bank-1');
