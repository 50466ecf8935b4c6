\set sid random(1, 10000)
SELECT event_store.append('account-' || :sid, 'Deposited', '{"amount": 1, "note": "benchmark event"}');
