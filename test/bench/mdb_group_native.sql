\set p random(:lo, :hi)
SELECT * FROM event_store.read_all(:p - 1, 100, '{mdbread}', NULL, 1, 4);
