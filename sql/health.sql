-- The health view (src/health.c): each setting an event store depends on,
-- ok or warning.
SELECT "check" FROM event_store.health ORDER BY 1;
-- a durability check warns exactly when its setting is off (pg_regress runs
-- its temporary server with fsync off: that one warns here)
SELECT "check", status, value FROM event_store.health
 WHERE "check" IN ('fsync', 'full_page_writes', 'synchronous_commit')
   AND (status = 'ok') <> (pg_catalog.current_setting("check") <> 'off');
-- the pipeline's prerequisites hold in the test cluster (test/event_store.conf)
SELECT "check", status FROM event_store.health
 WHERE "check" IN ('wal_level', 'shared_preload_libraries', 'max_worker_processes', 'max_replication_slots')
 ORDER BY 1;
SELECT value FROM event_store.health WHERE "check" = 'wal_level';
-- a capacity check says what it needs
SELECT value ~ '^16 \(event_store needs \d+ for \d+ databases?\)$' AS says_what_it_needs
  FROM event_store.health WHERE "check" = 'max_worker_processes';
-- no max_slot_wal_keep_size is set: a warning, and every warning says why
SELECT status, value FROM event_store.health WHERE "check" = 'max_slot_wal_keep_size';
SELECT count(*) AS unexplained FROM event_store.health
 WHERE (status = 'warning') <> (detail IS NOT NULL) OR status NOT IN ('ok', 'warning');
-- PUBLIC may not read it; a role granted SELECT (and EXECUTE on _health) may
CREATE ROLE regress_health_reader;
GRANT USAGE ON SCHEMA event_store TO regress_health_reader;
SET ROLE regress_health_reader;
SELECT count(*) FROM event_store.health;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT SELECT ON event_store.health TO regress_health_reader;
GRANT EXECUTE ON FUNCTION event_store._health() TO regress_health_reader;
SET ROLE regress_health_reader;
SELECT count(*) FROM event_store.health;
RESET ROLE;
REVOKE ALL ON event_store.health FROM regress_health_reader;
REVOKE ALL ON FUNCTION event_store._health() FROM regress_health_reader;
REVOKE USAGE ON SCHEMA event_store FROM regress_health_reader;
DROP ROLE regress_health_reader;
