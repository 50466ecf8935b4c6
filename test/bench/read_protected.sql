SELECT * FROM event_store.read_stream('pii-read');
