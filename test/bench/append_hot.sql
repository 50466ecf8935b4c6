SELECT event_store.append('hot-1', 'Deposited', '{"amount": 1, "note": "benchmark event"}');
