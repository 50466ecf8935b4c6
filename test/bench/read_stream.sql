SELECT * FROM event_store.read_stream('read-1');
