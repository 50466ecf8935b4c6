SELECT * FROM event_store.read_all(0, 1000);
