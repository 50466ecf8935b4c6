/* event_store--0.1.0--0.2.0.sql: projections (read models) and the fixes of the security review */

\echo Use "ALTER EXTENSION event_store UPDATE TO '0.2.0'" to load this file. \quit

-- CREATE EXTENSION event_store runs event_store--0.1.0.sql and then this
-- script; ALTER EXTENSION event_store UPDATE runs this script alone.  Every
-- name is schema-qualified, as in the install script.

-- ---------------------------------------------------------------------------
-- Review fixes (issue 10)
-- ---------------------------------------------------------------------------

-- The registries are written by their functions only (as the extension's
-- owner, src/event_store.c es_owner_begin): a row of upcasters written by
-- hand may hold anything, so the view resolves only text that is a signature
-- as add_upcaster() writes it ("schema.name(pg_catalog.jsonb)"), which
-- to_regprocedure() cannot fail on; anything else shows as missing.
CREATE OR REPLACE VIEW event_store.event_schemas WITH (security_invoker = true) AS
WITH types(event_type) AS (
    SELECT u.event_type FROM event_store.upcasters u
    UNION
    SELECT u.to_event_type FROM event_store.upcasters u WHERE u.to_event_type IS NOT NULL
)
SELECT t.event_type,
       event_store.current_schema_version(t.event_type) AS current_version,
       ARRAY(SELECT pg_catalog.format('%s -> %s%s: %s', u.from_schema_version,
                                      u.from_schema_version OPERATOR(pg_catalog.+) 1,
                                      CASE WHEN u.to_event_type IS NOT NULL
                                           THEN pg_catalog.format(' as %s', u.to_event_type) ELSE '' END,
                                      coalesce(CASE WHEN u.upcaster OPERATOR(pg_catalog.~)
                                                         '^("([^"]|"")+"|[a-z_][a-z0-9_$]*)\.("([^"]|"")+"|[a-z_][a-z0-9_$]*)\(pg_catalog\.jsonb\)$'
                                                    THEN pg_catalog.to_regprocedure(u.upcaster)::pg_catalog.text END,
                                               u.upcaster OPERATOR(pg_catalog.||) ' (missing)'))
               FROM event_store.upcasters u
              WHERE u.event_type OPERATOR(pg_catalog.=) t.event_type
              ORDER BY u.from_schema_version) AS steps
  FROM types t;

-- ---------------------------------------------------------------------------
-- Projections: read models kept from the global log (src/projection.c)
-- ---------------------------------------------------------------------------
