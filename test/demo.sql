-- The demo: the seed's bank account, step by step.  Run by test/demo.
\set ON_ERROR_STOP on
\pset footer off
\echo
\echo '== 1. Install the extension (pgcrypto comes along)'
CREATE EXTENSION event_store CASCADE;

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
