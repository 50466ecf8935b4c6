/* event_store--0.1.0--0.2.0.sql: projections (read models) and the fixes of the security review */

\echo Use "ALTER EXTENSION event_store UPDATE TO '0.2.0'" to load this file. \quit

-- CREATE EXTENSION event_store runs event_store--0.1.0.sql and then this
-- script; ALTER EXTENSION event_store UPDATE runs this script alone.  Every
-- name is schema-qualified, as in the install script.

-- ---------------------------------------------------------------------------
-- Review fixes (issue 10)
-- ---------------------------------------------------------------------------

-- ---------------------------------------------------------------------------
-- Projections: read models kept from the global log (src/projection.c)
-- ---------------------------------------------------------------------------
