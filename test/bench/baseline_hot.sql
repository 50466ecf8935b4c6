SELECT bench.hot_append('hot-1', 'Deposited', '{"amount": 1, "note": "benchmark event"}');
