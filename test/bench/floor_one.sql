\set sid random(1, 10000)
INSERT INTO bench.floor_events (stream_id, stream_version, event_type, data)
VALUES ('account-' || :sid, nextval('bench.floor_seq'), 'Deposited', '{"amount": 1, "note": "benchmark event"}');
