\set p random(:mlo, :mhi)
SELECT * FROM event_store.read_all(:p, 100, '{mix}');
