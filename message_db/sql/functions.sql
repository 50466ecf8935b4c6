-- message-db's stream name functions, hash_64, message_store_version,
-- acquire_lock, and what the extension installs.
\set SHOW_CONTEXT never
\pset null '(null)'
-- the layer needs event_store 0.2.0
CREATE EXTENSION event_store VERSION '0.1.0' CASCADE;
CREATE EXTENSION event_store_message_db;
ALTER EXTENSION event_store UPDATE;
CREATE EXTENSION event_store_message_db;
-- a statement's SQLSTATE and message, or 'ok'
CREATE FUNCTION pg_temp.err(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE OPERATOR(pg_catalog.||) ': ' OPERATOR(pg_catalog.||) SQLERRM;
END $$;

-- what the extension is: message-db 1.3's public functions (with their
-- argument types), its type and views, and our helpers
SELECT p.oid::regprocedure AS function, pg_get_function_result(p.oid) AS returns
  FROM pg_proc p WHERE p.pronamespace = 'message_store'::regnamespace AND p.proname !~ '^_'
 ORDER BY p.oid::regprocedure::text;
SELECT c.relname, c.relkind FROM pg_class c WHERE c.relnamespace = 'message_store'::regnamespace ORDER BY 1;
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
  FROM pg_attribute a WHERE a.attrelid = 'message_store.message'::regclass AND a.attnum > 0 ORDER BY a.attnum;
-- no function is SECURITY DEFINER, none has a search_path of its own, none is for PUBLIC
SELECT count(*) AS definer_or_config FROM pg_proc p
 WHERE p.pronamespace = 'message_store'::regnamespace AND (p.prosecdef OR p.proconfig IS NOT NULL);
SELECT count(*) AS public_execute FROM pg_proc p
 WHERE p.pronamespace = 'message_store'::regnamespace AND has_function_privilege('public', p.oid, 'EXECUTE');
SELECT has_schema_privilege('public', 'message_store', 'USAGE') AS public_usage;

SET search_path = message_store;
SELECT message_store_version();

-- category, id, cardinal_id, is_category: message-db's answers, NULL included
SELECT s AS stream_name, category(s), id(s), cardinal_id(s), is_category(s)
  FROM unnest(ARRAY['someStream-123', 'someStream-123+abc', 'someStream-123-456', 'someStream:command-123',
                    'someStream', 'someStream+x', 'someStream-', 'someStream-+x', '-123', '', NULL]) s;

-- hash_64: the first 16 hex digits of the MD5, a signed bigint; the same
-- numbers as message-db's left('x' || md5(value), 17)::bit(64)::bigint
SELECT v, hash_64(v), hash_64(v) = left('x' || md5(v), 17)::bit(64)::bigint AS as_message_db
  FROM unnest(ARRAY['123', 'abc', 'someStream-123', '', NULL]) v;
SELECT count(*) AS differ FROM generate_series(1, 2000) i
 WHERE hash_64(i::text) IS DISTINCT FROM left('x' || md5(i::text), 17)::bit(64)::bigint;
-- negative hashes are half of them
SELECT count(*) FILTER (WHERE hash_64(i::text) < 0) BETWEEN 900 AND 1100 AS about_half_negative
  FROM generate_series(1, 2000) i;
-- event_store's consumer groups hash the cardinal id the same way
SELECT count(*) AS differ FROM generate_series(1, 2000) i
 WHERE event_store.stream_hash('account-' || i || '+x') <> hash_64(cardinal_id('account-' || i || '+x'));

-- acquire_lock: message-db's lock of the category, held to the end of the transaction
BEGIN;
SELECT acquire_lock('someStream-123') = hash_64('someStream') AS hash_of_category;
SELECT count(*) AS advisory_locks FROM pg_locks
 WHERE locktype = 'advisory' AND pid = pg_backend_pid()
   AND ((classid::bigint << 32) | objid::bigint) = hash_64('someStream') AND objsubid = 1;
COMMIT;
SELECT count(*) AS after_commit FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
SELECT acquire_lock(NULL);
