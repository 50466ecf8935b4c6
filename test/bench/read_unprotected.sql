SELECT * FROM event_store.read_stream('plain-read');
