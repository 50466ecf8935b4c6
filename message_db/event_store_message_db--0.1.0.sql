/* event_store_message_db--0.1.0.sql: message-db 1.3's SQL interface over event_store */

\echo Use "CREATE EXTENSION event_store_message_db" to load this file. \quit

-- The schema message_store, with message-db's functions, type and reporting
-- views, reading and writing event_store's log: a client written for
-- message-db works unchanged.  Positions are message-db's (0-based in a
-- stream; -1 expects no stream), global positions are event_store's
-- commit-ordered log.  The README's "Moving from message-db" says what
-- differs and why.
--
-- The functions that read and write are thin PL/pgSQL over one
-- event_store call each (append, read_stream, read_all): their plans are
-- cached per session, so a client that has every statement planned, as most
-- drivers do, pays for one function call, not for planning the layer's SQL
-- (inlined SQL functions cost that planning on every call).  The small pure
-- functions are SQL with SQL-standard bodies (RETURN), parsed here, once,
-- and inlined where they are used.
--
-- Every name is schema-qualified, operators too (OPERATOR(pg_catalog.=)):
-- PL/pgSQL statements are parsed under the caller's search_path.  Nothing is
-- SECURITY DEFINER: every function runs with the caller's rights, which must
-- include event_store's (README, "Moving from message-db").

-- event_store 0.2.0 or later (0.1.0 is the only release before it): the
-- layer reads the global log's event ids and consumer groups, which 0.1.0
-- has not.
DO $version$
DECLARE
    installed pg_catalog.text;
BEGIN
    SELECT e.extversion INTO installed FROM pg_catalog.pg_extension e
     WHERE e.extname OPERATOR(pg_catalog.=) 'event_store';
    IF installed OPERATOR(pg_catalog.=) '0.1.0' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = 'event_store_message_db needs extension "event_store" at version 0.2.0 or later',
            DETAIL = pg_catalog.format('event_store is at version %s.', installed),
            HINT = 'Run ALTER EXTENSION event_store UPDATE, then create this extension.';
    END IF;
END
$version$;

-- ---------------------------------------------------------------------------
-- The schema must be new: CREATE EXTENSION installs into a schema called
-- message_store that exists already, such as message-db's own, whose objects
-- (a table messages, functions of the same names) would stay next to ours or
-- be replaced.  Refuse it, with the way out, as event_store refuses a schema
-- event_store it did not make (VE007).
-- ---------------------------------------------------------------------------
DO $check$
DECLARE
    ext_owner pg_catalog.oid;
    nsp pg_catalog.oid;
    nsp_owner pg_catalog.oid;
    creator pg_catalog.text;
    objects pg_catalog.int8;
    has_messages pg_catalog.bool;
BEGIN
    SELECT e.extowner, e.extnamespace INTO ext_owner, nsp
      FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'event_store_message_db';
    SELECT n.nspowner INTO nsp_owner FROM pg_catalog.pg_namespace n WHERE n.oid OPERATOR(pg_catalog.=) nsp;
    SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c WHERE c.relnamespace OPERATOR(pg_catalog.=) nsp)
           OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p WHERE p.pronamespace OPERATOR(pg_catalog.=) nsp)
           OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_type t WHERE t.typnamespace OPERATOR(pg_catalog.=) nsp)
           OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_operator o WHERE o.oprnamespace OPERATOR(pg_catalog.=) nsp)
           OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_collation c WHERE c.collnamespace OPERATOR(pg_catalog.=) nsp)
           OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_conversion c WHERE c.connamespace OPERATOR(pg_catalog.=) nsp)
           OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_opfamily f WHERE f.opfnamespace OPERATOR(pg_catalog.=) nsp)
           OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_ts_config c WHERE c.cfgnamespace OPERATOR(pg_catalog.=) nsp)
           OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_ts_dict d WHERE d.dictnamespace OPERATOR(pg_catalog.=) nsp)
           OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_statistic_ext s WHERE s.stxnamespace OPERATOR(pg_catalog.=) nsp),
           EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.relnamespace OPERATOR(pg_catalog.=) nsp
                      AND c.relname OPERATOR(pg_catalog.=) 'messages')
      INTO objects, has_messages;
    IF has_messages THEN
        RAISE EXCEPTION USING ERRCODE = 'VE007',
            MESSAGE = 'schema "message_store" holds a table "messages": message-db seems to be installed in this database',
            DETAIL = 'event_store_message_db creates its own schema message_store and must not mix its objects with message-db''s.',
            HINT = 'Rename message-db''s schema (ALTER SCHEMA message_store RENAME TO message_db), create the extension again, then move the messages over with SELECT message_store.import_messages(''message_db.messages'').';
    END IF;
    IF objects OPERATOR(pg_catalog.>) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'VE007',
            MESSAGE = 'schema "message_store" exists already and is not empty',
            DETAIL = pg_catalog.format('It holds %s objects. event_store_message_db creates the schema and must be the only thing in it.', objects),
            HINT = 'Rename the schema (ALTER SCHEMA message_store RENAME TO ...) or drop it, and create the extension again.';
    END IF;
    IF nsp_owner OPERATOR(pg_catalog.<>) ext_owner THEN
        RAISE EXCEPTION USING ERRCODE = 'VE007',
            MESSAGE = pg_catalog.format('schema "message_store" belongs to role "%s", not to the extension''s owner "%s"',
                                        pg_catalog.pg_get_userbyid(nsp_owner), pg_catalog.pg_get_userbyid(ext_owner)),
            DETAIL = 'Its owner could add objects to it that run with the rights of whoever calls them.',
            HINT = 'Drop the schema (or rename it) and create the extension again.';
    END IF;
    SELECT pg_catalog.string_agg(DISTINCT CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
                                               ELSE pg_catalog.pg_get_userbyid(a.grantee) END, ', ')
      INTO creator
      FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
     WHERE n.oid OPERATOR(pg_catalog.=) nsp AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
       AND a.grantee OPERATOR(pg_catalog.<>) nsp_owner;
    IF creator IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'VE007',
            MESSAGE = pg_catalog.format('schema "message_store" lets role "%s" create objects in it', creator),
            DETAIL = 'A role that may create objects in the extension''s schema could add objects that run with the rights of whoever calls them.',
            HINT = pg_catalog.format('Run REVOKE CREATE ON SCHEMA message_store FROM %s and create the extension again.', creator);
    END IF;
END
$check$;

-- ---------------------------------------------------------------------------
-- The message, as every read function returns it (message-db's type).
-- ---------------------------------------------------------------------------
CREATE TYPE message_store.message AS (
    id              varchar,
    stream_name     varchar,
    type            varchar,
    position        bigint,
    global_position bigint,
    data            varchar,
    metadata        varchar,
    time            timestamp
);

-- ---------------------------------------------------------------------------
-- Stream names (message-db's semantics, NULL in, NULL out, except
-- is_category(NULL), which message-db answers true).  "someStream-123+x":
-- category "someStream", id "123+x", cardinal id "123".
-- ---------------------------------------------------------------------------
CREATE FUNCTION message_store.category(stream_name varchar)
RETURNS varchar
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.split_part(stream_name, '-', 1);

CREATE FUNCTION message_store.id(stream_name varchar)
RETURNS varchar
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN pg_catalog.strpos(stream_name, '-') OPERATOR(pg_catalog.>) 0
            THEN pg_catalog.substr(stream_name, pg_catalog.strpos(stream_name, '-') OPERATOR(pg_catalog.+) 1)
       END;

CREATE FUNCTION message_store.cardinal_id(stream_name varchar)
RETURNS varchar
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.split_part(message_store.id(stream_name), '+', 1);

CREATE FUNCTION message_store.is_category(stream_name varchar)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (pg_catalog.strpos(stream_name, '-') OPERATOR(pg_catalog.=) 0) IS NOT FALSE;

-- The first 64 bits of the MD5 of the text, as a signed bigint: what
-- assigns a stream to a consumer group member (of its cardinal id), the
-- same as event_store.stream_hash for a stream name with an id.
CREATE FUNCTION message_store.hash_64(value varchar)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CAST(CAST('x' OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.md5(value), 16) AS bit(64)) AS bigint);

CREATE FUNCTION message_store.message_store_version()
RETURNS varchar
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN '1.3.0';

-- message-db's writers serialise on this lock of the category; ours lock the
-- stream instead (inside event_store's append), so write_message does not
-- take it.  Kept for clients that take it themselves.
CREATE FUNCTION message_store.acquire_lock(stream_name varchar)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    hash bigint := message_store.hash_64(message_store.category(acquire_lock.stream_name));
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(hash);
    RETURN hash;
END
$$;

-- ---------------------------------------------------------------------------
-- Internal helpers of the functions below (not message-db's).
-- ---------------------------------------------------------------------------

-- message-db's NOT NULL columns: the same error, for a NULL argument that
-- event_store would otherwise take (an id) or refuse with another SQLSTATE.
CREATE FUNCTION message_store._null_column(column_name text)
RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'not_null_violation', COLUMN = column_name,
        MESSAGE = pg_catalog.format('null value in column "%s" of relation "messages" violates not-null constraint', column_name);
END
$$;

-- A message's JSON: SQL NULL and JSON null are stored as {} (event_store
-- keeps objects only); any other non-object is refused by event_store.
CREATE FUNCTION message_store._object(value jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN value IS NULL OR pg_catalog.jsonb_typeof(value) OPERATOR(pg_catalog.=) 'null'
            THEN '{}'::pg_catalog.jsonb ELSE value END;

-- Is there a stream of this name?  Never raises: false for a name
-- event_store cannot store (NULL, empty, longer than 1024 bytes).
CREATE FUNCTION message_store._stream_exists(stream_name varchar)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE WHEN pg_catalog.octet_length(stream_name) OPERATOR(pg_catalog.>=) 1
                 AND pg_catalog.octet_length(stream_name) OPERATOR(pg_catalog.<=) 1024
            THEN event_store.stream_version(stream_name) OPERATOR(pg_catalog.>) 0
            ELSE false END;

-- batch_size as event_store's max_count: NULL is 1000, -1 everything (a
-- batch_size below -1 is refused before, by the argument checks).
CREATE FUNCTION message_store._batch_count(batch_size bigint)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN batch_size IS NULL THEN 1000
            WHEN batch_size OPERATOR(pg_catalog.<) 0 OR batch_size OPERATOR(pg_catalog.>) 2147483647 THEN 2147483647
            ELSE batch_size::integer END;

-- The category as read_all's filter: no category for a name no stream can
-- have (NULL, empty, too long), which message-db answers with no message.
CREATE FUNCTION message_store._category_filter(category varchar)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN pg_catalog.octet_length(category) OPERATOR(pg_catalog.>=) 1
                 AND pg_catalog.octet_length(category) OPERATOR(pg_catalog.<=) 1024
            THEN ARRAY[category::pg_catalog.text] ELSE '{}'::pg_catalog.text[] END;

-- Is the SQL condition allowed?  message-db's test: the setting
-- message_store.sql_condition, unset or 'off' meaning no.
CREATE FUNCTION message_store._check_condition(condition varchar)
RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF condition IS NOT NULL
       AND (pg_catalog.current_setting('message_store.sql_condition', true) IS NULL
            OR pg_catalog.current_setting('message_store.sql_condition', true) OPERATOR(pg_catalog.=) 'off') THEN
        RAISE EXCEPTION 'Retrieval with SQL condition is not activated';
    END IF;
END
$$;

-- message-db's LIMIT $3 with a batch_size below -1.
CREATE FUNCTION message_store._check_batch_size(batch_size bigint)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF batch_size OPERATOR(pg_catalog.<) -1 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_row_count_in_limit_clause', MESSAGE = 'LIMIT must not be negative';
    END IF;
END
$$;

-- get_stream_messages' argument checks, in message-db's order, with its
-- messages; returns read_stream's from_version (message-db's position + 1).
CREATE FUNCTION message_store._stream_start(stream_name varchar, "position" bigint, batch_size bigint, condition varchar)
RETURNS bigint
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF message_store.is_category(stream_name) THEN
        RAISE EXCEPTION 'Must be a stream name: %', stream_name;
    END IF;
    PERFORM message_store._check_condition(condition);
    PERFORM message_store._check_batch_size(batch_size);
    RETURN message_store._from_version("position");
END
$$;

-- read_stream's max_count for a batch: none for a name too long to be a
-- stream (message-db finds no message; event_store would refuse the name).
CREATE FUNCTION message_store._stream_count(stream_name varchar, batch_size bigint)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN pg_catalog.octet_length(stream_name) OPERATOR(pg_catalog.>) 1024 THEN 0
            ELSE message_store._batch_count(batch_size) END;

-- get_category_messages' argument checks, in message-db's order, with its
-- messages; returns read_all's after_position (message-db's position - 1).
CREATE FUNCTION message_store._category_start(category varchar, "position" bigint, batch_size bigint,
                                              correlation varchar, consumer_group_member bigint,
                                              consumer_group_size bigint, condition varchar)
RETURNS bigint
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF NOT message_store.is_category(category) THEN
        RAISE EXCEPTION 'Must be a category: %', category;
    END IF;
    IF correlation IS NOT NULL AND pg_catalog.strpos(correlation, '-') OPERATOR(pg_catalog.>) 0 THEN
        RAISE EXCEPTION 'Correlation must be a category (Correlation: %)', correlation;
    END IF;
    IF (consumer_group_member IS NULL) OPERATOR(pg_catalog.<>) (consumer_group_size IS NULL) THEN
        RAISE EXCEPTION 'Consumer group member and size must be specified (Consumer Group Member: %, Consumer Group Size: %)',
            consumer_group_member, consumer_group_size;
    END IF;
    IF consumer_group_member IS NOT NULL THEN
        IF consumer_group_size OPERATOR(pg_catalog.<) 1 THEN
            RAISE EXCEPTION 'Consumer group size must not be less than 1 (Consumer Group Member: %, Consumer Group Size: %)',
                consumer_group_member, consumer_group_size;
        END IF;
        IF consumer_group_member OPERATOR(pg_catalog.<) 0 THEN
            RAISE EXCEPTION 'Consumer group member must not be less than 0 (Consumer Group Member: %, Consumer Group Size: %)',
                consumer_group_member, consumer_group_size;
        END IF;
        IF consumer_group_member OPERATOR(pg_catalog.>=) consumer_group_size THEN
            RAISE EXCEPTION 'Consumer group member must be less than the group size (Consumer Group Member: %, Consumer Group Size: %)',
                consumer_group_member, consumer_group_size;
        END IF;
    END IF;
    PERFORM message_store._check_condition(condition);
    -- message-db passes the group size to its query as a smallint
    IF consumer_group_size OPERATOR(pg_catalog.>) 32767 THEN
        RAISE EXCEPTION USING ERRCODE = 'numeric_value_out_of_range', MESSAGE = 'smallint out of range';
    END IF;
    PERFORM message_store._check_batch_size(batch_size);
    RETURN GREATEST(COALESCE("position", 1), 1) OPERATOR(pg_catalog.-) 1;
END
$$;

-- Can get_category_messages read event_store's log straight (one read_all,
-- nothing filtered out)?  Not with a correlation or a condition, and not for
-- the one member of a consumer group that event_store gives the stream named
-- like the category, whose cardinal id is NULL: message-db gives such a
-- stream to no member.  Never raises.
CREATE FUNCTION message_store._category_direct(category varchar, correlation varchar,
                                               consumer_group_member bigint, consumer_group_size bigint,
                                               condition varchar)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
RETURN correlation IS NULL AND condition IS NULL
       AND (consumer_group_member IS NULL OR consumer_group_size IS NULL
            OR consumer_group_size OPERATOR(pg_catalog.<) 1
            OR consumer_group_member OPERATOR(pg_catalog.<) 0
            OR consumer_group_member OPERATOR(pg_catalog.>=) consumer_group_size
            OR pg_catalog.abs(pg_catalog.mod(message_store.hash_64(category), consumer_group_size))
               OPERATOR(pg_catalog.<>) consumer_group_member
            OR NOT message_store._stream_exists(category)) IS NOT FALSE;

-- A message from an event of the log, and its global position (NULL while
-- the pipeline has not ordered it): the conversions every read makes.
CREATE FUNCTION message_store._message(e event_store.event, global_position bigint)
RETURNS message_store.message
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ROW(e.event_id::varchar, e.stream_id::varchar, e.event_type::varchar,
           e.stream_version OPERATOR(pg_catalog.-) 1, global_position,
           e.data::pg_catalog.text::varchar, e.metadata::pg_catalog.text::varchar,
           e.recorded_at AT TIME ZONE 'UTC')::message_store.message;

-- The columns of message-db's table messages over events_query, a query of
-- events (aliased e), for SQL conditions, which name them: global_position,
-- position, time, stream_name, type, data, metadata, id.
CREATE FUNCTION message_store._messages_query(events_query text, global_position text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 'SELECT ' OPERATOR(pg_catalog.||) global_position OPERATOR(pg_catalog.||) ' AS global_position,'
       ' e.stream_version OPERATOR(pg_catalog.-) 1 AS position,'
       ' e.recorded_at AT TIME ZONE ''UTC'' AS time,'
       ' e.stream_id AS stream_name, e.event_type AS type, e.data, e.metadata, e.event_id AS id,'
       ' e.stream_version AS _version'
       ' FROM ' OPERATOR(pg_catalog.||) events_query OPERATOR(pg_catalog.||) ' e';

-- ---------------------------------------------------------------------------
-- Writing
-- ---------------------------------------------------------------------------

-- Returns the message's position in its stream (0 for the first): one
-- event_store.append.  An expected version is checked after the append: it
-- numbers the message under event_store's stream lock, after waiting for any
-- transaction in progress that appended to the stream, so the version it
-- returns tells whether the stream was at the expected one; if not,
-- message-db's exception (whose words clients match on) aborts the
-- transaction, the append with it.  No subtransaction, no second read of the
-- stream.  A re-sent message (same id and content) returns its version, so a
-- retried write succeeds.  message-db's NOT NULL errors for the id, stream
-- name and type (event_store would give a NULL id a new one).
CREATE FUNCTION message_store.write_message(id varchar, stream_name varchar, "type" varchar, data jsonb,
                                            metadata jsonb DEFAULT NULL, expected_version bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    message_id uuid := id::pg_catalog.uuid;
    version bigint;
BEGIN
    IF stream_name IS NULL THEN
        PERFORM message_store._null_column('stream_name');
    ELSIF "type" IS NULL THEN
        PERFORM message_store._null_column('type');
    ELSIF message_id IS NULL THEN
        PERFORM message_store._null_column('id');
    END IF;
    version := event_store.append(stream_name, "type", message_store._object(data), message_store._object(metadata),
                                  NULL::bigint, message_id);
    IF expected_version IS NOT NULL
       AND (version OPERATOR(pg_catalog.-) 2) OPERATOR(pg_catalog.<>) expected_version THEN
        RAISE EXCEPTION 'Wrong expected version: % (Stream: %, Stream Version: %)',
            expected_version, stream_name, version OPERATOR(pg_catalog.-) 2;
    END IF;
    RETURN version OPERATOR(pg_catalog.-) 1;
END
$$;

-- ---------------------------------------------------------------------------
-- Reading a stream
-- ---------------------------------------------------------------------------

-- The newest position of the stream; NULL for a stream without messages.
CREATE FUNCTION message_store.stream_version(stream_name varchar)
RETURNS bigint
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    version bigint;
BEGIN
    -- no stream has a name event_store cannot store
    IF stream_name IS NULL OR pg_catalog.octet_length(stream_name) OPERATOR(pg_catalog.>) 1024 THEN
        RETURN NULL;
    END IF;
    version := event_store.stream_version(stream_name);
    IF version OPERATOR(pg_catalog.=) 0 THEN
        RETURN NULL;
    END IF;
    RETURN version OPERATOR(pg_catalog.-) 1;
END
$$;

-- get_stream_messages with a condition (message_store.sql_condition on):
-- the stream in chunks, the condition on message-db's columns, until the
-- batch is full or the stream ends.
CREATE FUNCTION message_store._stream_messages(stream_name varchar, "position" bigint, batch_size bigint,
                                               condition varchar)
RETURNS SETOF message_store.message
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    from_version bigint := message_store._stream_start(stream_name, "position", batch_size, condition);
    wanted bigint := message_store._stream_count(stream_name, batch_size);
    chunk integer := LEAST(GREATEST(wanted, 100), 10000);
    returned bigint := 0;
    seen integer;
    query text;
    r record;
BEGIN
    IF wanted OPERATOR(pg_catalog.=) 0 THEN
        RETURN;
    END IF;
    query := 'SELECT ROW(messages.id::varchar, messages.stream_name::varchar, messages.type::varchar, messages.position, messages.global_position,'
             ' messages.data::pg_catalog.text::varchar, messages.metadata::pg_catalog.text::varchar, messages.time)::message_store.message AS message,'
             ' messages._version, (' OPERATOR(pg_catalog.||) condition OPERATOR(pg_catalog.||) ') AS keep'
             ' FROM (' OPERATOR(pg_catalog.||)
             message_store._messages_query('event_store.read_stream($1, $2, $3)',
                 '(SELECT g.global_position FROM event_store.global_log g'
                 ' WHERE g.event_id OPERATOR(pg_catalog.=) e.event_id)')
             OPERATOR(pg_catalog.||) ') messages';
    LOOP
        seen := 0;
        FOR r IN EXECUTE query USING stream_name::pg_catalog.text, from_version, chunk LOOP
            seen := seen OPERATOR(pg_catalog.+) 1;
            from_version := r._version OPERATOR(pg_catalog.+) 1;
            IF r.keep THEN
                RETURN NEXT r.message;
                returned := returned OPERATOR(pg_catalog.+) 1;
                IF returned OPERATOR(pg_catalog.>=) wanted THEN
                    RETURN;
                END IF;
            END IF;
        END LOOP;
        EXIT WHEN seen OPERATOR(pg_catalog.<) chunk;
    END LOOP;
END
$$;

-- read_stream's from_version for a message-db position (>=, default 0).
CREATE FUNCTION message_store._from_version("position" bigint)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN LEAST(GREATEST(COALESCE("position", 0), 0), 9223372036854775806) OPERATOR(pg_catalog.+) 1;

-- A stream's messages from position (>=, default 0), at most batch_size
-- (default 1000; -1: all): one read_stream, and each event's global
-- position from event_store.global_log's key (the event id, covering the
-- position); an event the pipeline has not ordered yet (a few milliseconds
-- after its commit) has none, NULL.
CREATE FUNCTION message_store.get_stream_messages(stream_name varchar, "position" bigint DEFAULT 0,
                                                  batch_size bigint DEFAULT 1000, condition varchar DEFAULT NULL)
RETURNS SETOF message_store.message
LANGUAGE plpgsql STABLE ROWS 100
AS $$
DECLARE
    from_version bigint := message_store._stream_start(stream_name, "position", batch_size, condition);
BEGIN
    IF condition IS NOT NULL THEN
        RETURN QUERY SELECT * FROM message_store._stream_messages(stream_name, "position", batch_size, condition);
        RETURN;
    END IF;
    RETURN QUERY
    SELECT e.event_id::varchar, e.stream_id::varchar, e.event_type::varchar,
           e.stream_version OPERATOR(pg_catalog.-) 1, l.global_position,
           e.data::pg_catalog.text::varchar, e.metadata::pg_catalog.text::varchar,
           e.recorded_at AT TIME ZONE 'UTC'
      FROM event_store.read_stream(stream_name, from_version, message_store._stream_count(stream_name, batch_size)) e
      LEFT JOIN event_store.global_log l ON l.event_id OPERATOR(pg_catalog.=) e.event_id
     ORDER BY e.stream_version;
END
$$;

-- The newest message of the stream (of type `type`, when given: backwards
-- in chunks); none for an empty stream.
CREATE FUNCTION message_store.get_last_stream_message(stream_name varchar, "type" varchar DEFAULT NULL)
RETURNS SETOF message_store.message
LANGUAGE plpgsql STABLE ROWS 1
AS $$
DECLARE
    from_version bigint;
    seen integer;
    e event_store.event;
BEGIN
    IF stream_name IS NULL THEN
        RETURN;
    END IF;
    LOOP
        seen := 0;
        FOR e IN SELECT * FROM event_store.read_stream(stream_name, from_version, 100, true) LOOP
            seen := seen OPERATOR(pg_catalog.+) 1;
            from_version := e.stream_version OPERATOR(pg_catalog.-) 1;
            IF "type" IS NULL OR e.event_type OPERATOR(pg_catalog.=) "type" THEN
                RETURN NEXT message_store._message(e,
                    (SELECT l.global_position FROM event_store.global_log l
                      WHERE l.event_id OPERATOR(pg_catalog.=) e.event_id));
                RETURN;
            END IF;
        END LOOP;
        EXIT WHEN seen OPERATOR(pg_catalog.<) 100 OR from_version OPERATOR(pg_catalog.<) 1;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------
-- Reading a category
-- ---------------------------------------------------------------------------

-- get_category_messages when something is filtered out of read_all's rows
-- (a correlation, a condition, the consumer group member that event_store
-- gives the stream without id): the log in chunks, filtered, until the batch
-- is full or the log ends, so that a batch is never cut short (a consumer
-- takes an empty batch for the end).  The consumer group is event_store's,
-- in its scan.
CREATE FUNCTION message_store._category_messages(category varchar, "position" bigint, batch_size bigint,
                                                 correlation varchar, consumer_group_member bigint,
                                                 consumer_group_size bigint, condition varchar)
RETURNS SETOF message_store.message
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    after_position bigint := message_store._category_start(category, "position", batch_size, correlation,
                                                  consumer_group_member, consumer_group_size, condition);
    wanted bigint := message_store._batch_count(batch_size);
    chunk integer := LEAST(GREATEST(wanted, 1000), 10000);
    returned bigint := 0;
    seen integer;
    keep text := 'true';
    query text;
    r record;
BEGIN
    IF wanted OPERATOR(pg_catalog.=) 0 THEN
        RETURN;
    END IF;
    IF correlation IS NOT NULL THEN
        keep := keep OPERATOR(pg_catalog.||)
                ' AND pg_catalog.split_part(messages.metadata OPERATOR(pg_catalog.->>) ''correlationStreamName'', ''-'', 1)'
                ' OPERATOR(pg_catalog.=) $6';
    END IF;
    IF consumer_group_member IS NOT NULL THEN
        -- message-db's MOD(@hash_64(cardinal_id(stream_name)), size) = member
        -- is NULL for a stream without id: never any member's
        keep := keep OPERATOR(pg_catalog.||) ' AND pg_catalog.strpos(messages.stream_name, ''-'') OPERATOR(pg_catalog.>) 0';
    END IF;
    IF condition IS NOT NULL THEN
        keep := keep OPERATOR(pg_catalog.||) ' AND (' OPERATOR(pg_catalog.||) condition OPERATOR(pg_catalog.||) ')';
    END IF;
    query := 'SELECT ROW(messages.id::varchar, messages.stream_name::varchar, messages.type::varchar,'
             ' messages.position, messages.global_position,'
             ' messages.data::pg_catalog.text::varchar, messages.metadata::pg_catalog.text::varchar,'
             ' messages.time)::message_store.message AS message,'
             ' messages.global_position AS _position, (' OPERATOR(pg_catalog.||) keep OPERATOR(pg_catalog.||) ') AS keep'
             ' FROM (' OPERATOR(pg_catalog.||)
             message_store._messages_query('event_store.read_all($1, $2, $3, NULL, $4, $5)', 'e.global_position')
             OPERATOR(pg_catalog.||) ') messages';
    LOOP
        seen := 0;
        FOR r IN EXECUTE query USING after_position, chunk, message_store._category_filter(category),
                                     consumer_group_member::integer, consumer_group_size::integer,
                                     correlation::pg_catalog.text LOOP
            seen := seen OPERATOR(pg_catalog.+) 1;
            after_position := r._position;
            IF r.keep THEN
                RETURN NEXT r.message;
                returned := returned OPERATOR(pg_catalog.+) 1;
                IF returned OPERATOR(pg_catalog.>=) wanted THEN
                    RETURN;
                END IF;
            END IF;
        END LOOP;
        EXIT WHEN seen OPERATOR(pg_catalog.<) chunk;
    END LOOP;
END
$$;

-- A category's messages from global position (>=, default 1), at most
-- batch_size (default 1000; -1: all), in global position order; of the
-- streams whose metadata's correlationStreamName is of the category
-- `correlation`; of consumer group member consumer_group_member (0-based) of
-- consumer_group_size, by message-db's hash of the cardinal id.  One
-- event_store.read_all, with the consumer group in its scan, unless something
-- must be filtered out (_category_direct).
CREATE FUNCTION message_store.get_category_messages(category varchar, "position" bigint DEFAULT 1,
                                                    batch_size bigint DEFAULT 1000,
                                                    correlation varchar DEFAULT NULL,
                                                    consumer_group_member bigint DEFAULT NULL,
                                                    consumer_group_size bigint DEFAULT NULL,
                                                    condition varchar DEFAULT NULL)
RETURNS SETOF message_store.message
LANGUAGE plpgsql STABLE ROWS 1000
AS $$
DECLARE
    after_position bigint := message_store._category_start(category, "position", batch_size, correlation,
                                                           consumer_group_member, consumer_group_size, condition);
BEGIN
    IF NOT message_store._category_direct(category, correlation, consumer_group_member, consumer_group_size, condition) THEN
        RETURN QUERY SELECT * FROM message_store._category_messages(category, "position", batch_size, correlation,
                                                                    consumer_group_member, consumer_group_size, condition);
        RETURN;
    END IF;
    RETURN QUERY
    SELECT e.event_id::varchar, e.stream_id::varchar, e.event_type::varchar,
           e.stream_version OPERATOR(pg_catalog.-) 1, e.global_position,
           e.data::pg_catalog.text::varchar, e.metadata::pg_catalog.text::varchar,
           e.recorded_at AT TIME ZONE 'UTC'
      FROM event_store.read_all(after_position, message_store._batch_count(batch_size),
                                message_store._category_filter(category), NULL::pg_catalog.text[],
                                consumer_group_member::integer, consumer_group_size::integer) e;
END
$$;

-- ---------------------------------------------------------------------------
-- Reporting views (message-db's), over event_store's tables with the
-- caller's rights (security_invoker): message counts by stream, type and
-- category, and each one's share of all messages, in percent.  Stored types,
-- before any upcaster's renaming.
-- ---------------------------------------------------------------------------
CREATE VIEW message_store.stream_summary WITH (security_invoker = true) AS
SELECT s.stream_id::varchar AS stream_name,
       s.version AS message_count,
       pg_catalog.round(s.version::pg_catalog.numeric OPERATOR(pg_catalog./)
                        pg_catalog.sum(s.version) OVER () OPERATOR(pg_catalog.*) 100, 2) AS percent
  FROM event_store.streams s
 ORDER BY s.stream_id;

CREATE VIEW message_store.type_summary WITH (security_invoker = true) AS
SELECT c.type, c.message_count,
       pg_catalog.round(c.message_count::pg_catalog.numeric OPERATOR(pg_catalog./)
                        pg_catalog.sum(c.message_count) OVER () OPERATOR(pg_catalog.*) 100, 2) AS percent
  FROM (SELECT e.event_type::varchar AS type, pg_catalog.count(*) AS message_count
          FROM event_store.events e GROUP BY e.event_type) c
 ORDER BY c.type;

CREATE VIEW message_store.stream_type_summary WITH (security_invoker = true) AS
SELECT c.stream_name, c.type, c.message_count,
       pg_catalog.round(c.message_count::pg_catalog.numeric OPERATOR(pg_catalog./)
                        pg_catalog.sum(c.message_count) OVER () OPERATOR(pg_catalog.*) 100, 2) AS percent
  FROM (SELECT e.stream_id::varchar AS stream_name, e.event_type::varchar AS type, pg_catalog.count(*) AS message_count
          FROM event_store.events e GROUP BY e.stream_id, e.event_type) c
 ORDER BY c.stream_name, c.type;

CREATE VIEW message_store.type_stream_summary WITH (security_invoker = true) AS
SELECT c.type, c.stream_name, c.message_count,
       pg_catalog.round(c.message_count::pg_catalog.numeric OPERATOR(pg_catalog./)
                        pg_catalog.sum(c.message_count) OVER () OPERATOR(pg_catalog.*) 100, 2) AS percent
  FROM (SELECT e.event_type::varchar AS type, e.stream_id::varchar AS stream_name, pg_catalog.count(*) AS message_count
          FROM event_store.events e GROUP BY e.event_type, e.stream_id) c
 ORDER BY c.type, c.stream_name;

CREATE VIEW message_store.category_type_summary WITH (security_invoker = true) AS
SELECT c.category, c.type, c.message_count,
       pg_catalog.round(c.message_count::pg_catalog.numeric OPERATOR(pg_catalog./)
                        pg_catalog.sum(c.message_count) OVER () OPERATOR(pg_catalog.*) 100, 2) AS percent
  FROM (SELECT pg_catalog.split_part(e.stream_id, '-', 1)::varchar AS category, e.event_type::varchar AS type,
               pg_catalog.count(*) AS message_count
          FROM event_store.events e GROUP BY 1, 2) c
 ORDER BY c.category, c.type;

CREATE VIEW message_store.type_category_summary WITH (security_invoker = true) AS
SELECT c.type, c.category, c.message_count,
       pg_catalog.round(c.message_count::pg_catalog.numeric OPERATOR(pg_catalog./)
                        pg_catalog.sum(c.message_count) OVER () OPERATOR(pg_catalog.*) 100, 2) AS percent
  FROM (SELECT e.event_type::varchar AS type, pg_catalog.split_part(e.stream_id, '-', 1)::varchar AS category,
               pg_catalog.count(*) AS message_count
          FROM event_store.events e GROUP BY 1, 2) c
 ORDER BY c.type, c.category;

-- ---------------------------------------------------------------------------
-- Moving from message-db
-- ---------------------------------------------------------------------------

-- Appends the messages of a message-db table (message-db's
-- message_store.messages, in a schema renamed before this extension was
-- created) to event_store's log, in global position order: each stream's
-- messages at the positions they had (position p is version p + 1), with
-- their ids, types, data and metadata.  A superuser keeps each message's
-- time (raised, where needed, to its stream's previous one: event_store's
-- times never decrease along a stream); for other roles the time is the
-- import's, and the original is kept in the metadata as "messageDbTime".
-- Messages already imported (same id, stream, type and data) are skipped, so
-- an import can be run again.  All or nothing; returns how many messages it
-- appended.
CREATE FUNCTION message_store.import_messages(source regclass)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    missing text;
    bad record;
    keep_time boolean;
    imported bigint;
BEGIN
    IF source IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed', MESSAGE = 'source must not be null';
    END IF;
    SELECT pg_catalog.string_agg(c.name, ', ' ORDER BY c.ord) INTO missing
      FROM pg_catalog.unnest('{global_position,position,time,stream_name,type,data,metadata,id}'::pg_catalog.text[])
           WITH ORDINALITY AS c(name, ord)
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid OPERATOR(pg_catalog.=) source
                          AND a.attname OPERATOR(pg_catalog.=) c.name::pg_catalog.name
                          AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('%s is not a message-db messages table', source),
            DETAIL = pg_catalog.format('It has no column %s.', missing),
            HINT = 'Pass message-db''s table message_store.messages, in the schema you renamed it to, e.g. message_db.messages.';
    END IF;

    -- positions: 0, 1, 2, ... in every stream, as message-db numbers them
    EXECUTE pg_catalog.format(
        'SELECT m.stream_name, pg_catalog.count(*) AS n, pg_catalog.min(m.position) AS first, pg_catalog.max(m.position) AS last'
        '  FROM %s m GROUP BY m.stream_name'
        ' HAVING pg_catalog.min(m.position) OPERATOR(pg_catalog.<>) 0'
        '     OR pg_catalog.max(m.position) OPERATOR(pg_catalog.<>) (pg_catalog.count(*) OPERATOR(pg_catalog.-) 1)'
        '     OR pg_catalog.count(DISTINCT m.position) OPERATOR(pg_catalog.<>) pg_catalog.count(*)'
        ' ORDER BY m.stream_name LIMIT 1', source) INTO bad;
    IF bad.n IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('the positions of stream "%s" in %s are not 0, 1, 2, ...', bad.stream_name, source),
            DETAIL = pg_catalog.format('It has %s messages at positions %s to %s.', bad.n, bad.first, bad.last);
    END IF;
    -- what event_store refuses, named by global position before anything is written
    EXECUTE pg_catalog.format(
        'SELECT m.global_position, CASE'
        '   WHEN m.stream_name IS NULL OR m.stream_name OPERATOR(pg_catalog.=) '''' OR pg_catalog.octet_length(m.stream_name) OPERATOR(pg_catalog.>) 1024'
        '     THEN ''its stream name is empty or longer than 1024 bytes'''
        '   WHEN m.type IS NULL OR m.type OPERATOR(pg_catalog.=) '''' OR pg_catalog.octet_length(m.type) OPERATOR(pg_catalog.>) 1024'
        '     THEN ''its type is empty or longer than 1024 bytes'''
        '   WHEN m.id IS NULL THEN ''it has no id'''
        '   WHEN pg_catalog.jsonb_typeof(m.data::pg_catalog.jsonb) OPERATOR(pg_catalog.<>) ALL (''{object,"null"}'') THEN ''its data is not a JSON object'''
        '   WHEN pg_catalog.jsonb_typeof(m.metadata::pg_catalog.jsonb) OPERATOR(pg_catalog.<>) ALL (''{object,"null"}'') THEN ''its metadata is not a JSON object'''
        ' END AS problem FROM %s m'
        ' WHERE m.stream_name IS NULL OR m.stream_name OPERATOR(pg_catalog.=) '''' OR pg_catalog.octet_length(m.stream_name) OPERATOR(pg_catalog.>) 1024'
        '    OR m.type IS NULL OR m.type OPERATOR(pg_catalog.=) '''' OR pg_catalog.octet_length(m.type) OPERATOR(pg_catalog.>) 1024'
        '    OR m.id IS NULL'
        '    OR pg_catalog.jsonb_typeof(m.data::pg_catalog.jsonb) OPERATOR(pg_catalog.<>) ALL (''{object,"null"}'')'
        '    OR pg_catalog.jsonb_typeof(m.metadata::pg_catalog.jsonb) OPERATOR(pg_catalog.<>) ALL (''{object,"null"}'')'
        ' ORDER BY m.global_position LIMIT 1', source) INTO bad;
    IF bad.global_position IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('message at global position %s of %s cannot be imported: %s', bad.global_position, source, bad.problem);
    END IF;

    -- event_store lets superusers (restores, imports) record a time
    SELECT r.rolsuper INTO keep_time FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER;
    IF keep_time THEN
        EXECUTE pg_catalog.format(
            'INSERT INTO event_store.events (stream_id, stream_version, event_id, event_type, data, metadata, recorded_at)'
            ' SELECT m.stream_name, m.position OPERATOR(pg_catalog.+) 1, m.id, m.type,'
            '        message_store._object(m.data::pg_catalog.jsonb), message_store._object(m.metadata::pg_catalog.jsonb),'
            '        pg_catalog.max(m.time) OVER (PARTITION BY m.stream_name ORDER BY m.position) AT TIME ZONE ''UTC'''
            '   FROM %s m ORDER BY m.global_position', source);
    ELSE
        EXECUTE pg_catalog.format(
            'INSERT INTO event_store.events (stream_id, stream_version, event_id, event_type, data, metadata)'
            ' SELECT m.stream_name, m.position OPERATOR(pg_catalog.+) 1, m.id, m.type,'
            '        message_store._object(m.data::pg_catalog.jsonb),'
            '        message_store._object(m.metadata::pg_catalog.jsonb) OPERATOR(pg_catalog.||)'
            '          pg_catalog.jsonb_build_object(''messageDbTime'', m.time)'
            '   FROM %s m ORDER BY m.global_position', source);
    END IF;
    GET DIAGNOSTICS imported = ROW_COUNT;
    RETURN imported;
END
$$;

-- A position a consumer stored while reading message-db (the global
-- position of the last message it handled) as the event_store position of
-- the same point of the log: the new position of the newest imported message
-- at or before it, 0 if none.  The source table must still be there, and
-- the pipeline must have ordered the imported messages
-- (event_store.wait_for_pipeline()).
CREATE FUNCTION message_store.translate_position(source regclass, "position" bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    old_position bigint;
    new_position bigint;
BEGIN
    IF source IS NULL OR "position" IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed', MESSAGE = 'source and position must not be null';
    END IF;
    EXECUTE pg_catalog.format(
        'SELECT m.global_position, g.global_position FROM %s m'
        '  LEFT JOIN event_store.global_log g ON g.event_id OPERATOR(pg_catalog.=) m.id'
        ' WHERE m.global_position OPERATOR(pg_catalog.<=) $1'
        ' ORDER BY m.global_position DESC LIMIT 1', source)
      INTO old_position, new_position USING "position";
    IF old_position IS NULL THEN
        RETURN 0;
    END IF;
    IF new_position IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('the message at global position %s of %s has no position in the event log yet', old_position, source),
            HINT = 'Import the messages first; then SELECT event_store.wait_for_pipeline() lets the pipeline order them.';
    END IF;
    RETURN new_position;
END
$$;

-- ---------------------------------------------------------------------------
-- Nothing for PUBLIC.  A client role needs USAGE on the schema, EXECUTE on
-- its functions, and event_store's rights (README, "Moving from message-db").
-- ---------------------------------------------------------------------------
DO $revoke$
DECLARE
    f pg_catalog.regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
              WHERE p.pronamespace OPERATOR(pg_catalog.=) 'message_store'::pg_catalog.regnamespace LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$revoke$;
