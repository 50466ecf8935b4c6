\set s random(0, 199)
SELECT * FROM event_store.read_stream('mdbread-' || :s);
