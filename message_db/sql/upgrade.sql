-- The update from 0.1.0: get_category_messages, PL/pgSQL in 0.1.0, becomes
-- event_store's C (src/message_db.c).  The updated extension has what a
-- fresh install has; every call answers as before, rows in the same order,
-- errors with the same SQLSTATE and message; the grants made on the function
-- stay.
\set SHOW_CONTEXT never
\pset null '(null)'
CREATE FUNCTION pg_temp.err(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE OPERATOR(pg_catalog.||) ': ' OPERATOR(pg_catalog.||) SQLERRM;
END $$;
SELECT extversion FROM pg_extension WHERE extname = 'event_store_message_db';
CREATE TEMP TABLE fresh AS
SELECT pg_describe_object(classid, objid, objsubid) AS object
  FROM pg_depend WHERE deptype = 'e' AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'event_store_message_db');
CREATE TEMP TABLE fresh_defs AS
SELECT p.oid::regprocedure::text AS function, pg_get_functiondef(p.oid) AS def
  FROM pg_proc p WHERE p.pronamespace = 'message_store'::regnamespace;

DROP EXTENSION event_store_message_db;
CREATE EXTENSION event_store_message_db VERSION '0.1.0';
CREATE ROLE mdb_upgrade_reader;
GRANT USAGE ON SCHEMA message_store TO mdb_upgrade_reader;
GRANT EXECUTE ON FUNCTION message_store.get_category_messages(varchar, bigint, bigint, varchar, bigint, bigint, varchar)
   TO mdb_upgrade_reader;
SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.oid = 'message_store.get_category_messages(varchar, bigint, bigint, varchar, bigint, bigint, varchar)'::regprocedure;

-- the answers of 0.1.0: the plain call in its variants, a consumer group's
-- members (one of which message-db gives no stream without id), a
-- correlation, a condition, a category without messages, and bad arguments
SET message_store.sql_condition = 'on';
CREATE TEMP TABLE calls (call text PRIMARY KEY);
INSERT INTO calls VALUES
  ($$'cat'$$), ($$'cat', 5, 3$$), ($$'cat', NULL, NULL$$), ($$'cat', 1, -1$$), ($$'cat', 1000000, 10$$),
  ($$'cat', -5, 0$$), ($$'grp', 1, 100, NULL, 0, 3$$), ($$'grp', 1, 100, NULL, 1, 3$$), ($$'grp', 1, 100, NULL, 2, 3$$),
  ($$'grp', 1, 100, 'corr'$$), ($$'cat', 1, 10, condition => 'position >= 1'$$), ($$'nothing'$$), ($$''$$),
  ($$NULL$$), ($$'cat-1'$$), ($$'cat', 1, -2$$), ($$'grp', 1, 10, NULL, 0$$), ($$'grp', 1, 10, NULL, 0, 0$$),
  ($$'grp', 1, 10, NULL, 3, 3$$), ($$'grp', 1, 10, NULL, 0, 40000$$), ($$'grp', 1, 10, 'corr-1'$$),
  ($$repeat('c', 2000)$$), ($$'cat', NULL, 2$$), ($$'cat', 2, 3000000000$$), ($$'cat', 9223372036854775807, 1$$);
-- each call's rows in their order (or its error), and how many
CREATE FUNCTION pg_temp.answers() RETURNS TABLE (call text, answer text, rows bigint) LANGUAGE plpgsql AS $$
DECLARE
    c text;
BEGIN
    FOR c IN SELECT calls.call FROM calls ORDER BY 1 LOOP
        BEGIN
            EXECUTE 'SELECT string_agg(m::text, '' '' ORDER BY o), count(*)'
                    ' FROM message_store.get_category_messages(' || c || ') WITH ORDINALITY AS m(id, s, t, p, g, d, md, tm, o)'
               INTO answer, rows;
        EXCEPTION WHEN OTHERS THEN
            answer := SQLSTATE || ': ' || SQLERRM;
            rows := NULL;
        END;
        call := c;
        RETURN NEXT;
    END LOOP;
END $$;
CREATE TEMP TABLE answers_010 AS SELECT * FROM pg_temp.answers();

ALTER EXTENSION event_store_message_db UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'event_store_message_db';
SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.oid = 'message_store.get_category_messages(varchar, bigint, bigint, varchar, bigint, bigint, varchar)'::regprocedure;
-- what a fresh install has, object for object and definition for definition
SELECT (SELECT count(*) FROM fresh) AS fresh_objects,
       (SELECT count(*) FROM (SELECT object FROM fresh
                              EXCEPT SELECT pg_describe_object(classid, objid, objsubid) FROM pg_depend
                               WHERE deptype = 'e' AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'event_store_message_db')) d) AS missing,
       (SELECT count(*) FROM (SELECT pg_describe_object(classid, objid, objsubid) FROM pg_depend
                               WHERE deptype = 'e' AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'event_store_message_db')
                              EXCEPT SELECT object FROM fresh) d) AS extra;
SELECT f.function FROM fresh_defs f
  FULL JOIN (SELECT p.oid::regprocedure::text AS function, pg_get_functiondef(p.oid) AS def
               FROM pg_proc p WHERE p.pronamespace = 'message_store'::regnamespace) u USING (function)
 WHERE f.def IS DISTINCT FROM u.def;
SELECT has_function_privilege('mdb_upgrade_reader',
       'message_store.get_category_messages(varchar, bigint, bigint, varchar, bigint, bigint, varchar)', 'EXECUTE') AS still_granted;

-- the same answers; what they were
CREATE TEMP TABLE answers_020 AS SELECT * FROM pg_temp.answers();
SELECT count(*) AS calls, count(*) FILTER (WHERE a.answer IS NOT DISTINCT FROM b.answer AND a.rows IS NOT DISTINCT FROM b.rows) AS same
  FROM answers_010 a JOIN answers_020 b USING (call);
SELECT a.call, left(a.answer, 60) AS answer_010, left(b.answer, 60) AS answer_020
  FROM answers_010 a JOIN answers_020 b USING (call)
 WHERE a.answer IS DISTINCT FROM b.answer OR a.rows IS DISTINCT FROM b.rows;
SELECT call, coalesce(rows || ' rows', answer) AS answer FROM answers_020 ORDER BY call;
RESET message_store.sql_condition;
DROP OWNED BY mdb_upgrade_reader;
DROP ROLE mdb_upgrade_reader;
