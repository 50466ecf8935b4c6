/* event_store_message_db--0.1.0--0.2.0.sql: get_category_messages in C */

\echo Use "ALTER EXTENSION event_store_message_db UPDATE TO '0.2.0'" to load this file. \quit

-- CREATE EXTENSION event_store_message_db runs event_store_message_db--0.1.0.sql
-- and then this script; ALTER EXTENSION event_store_message_db UPDATE runs
-- this script alone.

-- get_category_messages reads the log itself (event_store's library,
-- src/message_db.c) and puts each event in message-db's shape into its
-- result as it reads it, where the PL/pgSQL version copied read_all's rows
-- into a second tuplestore.  Any call with a correlation, a consumer group,
-- a condition, a batch size below -1 or a name that is not a category goes
-- through the layer's PL/pgSQL functions as before.  Replaced in place: the
-- grants made on the function stay.
CREATE OR REPLACE FUNCTION message_store.get_category_messages(category varchar, "position" bigint DEFAULT 1,
                                                               batch_size bigint DEFAULT 1000,
                                                               correlation varchar DEFAULT NULL,
                                                               consumer_group_member bigint DEFAULT NULL,
                                                               consumer_group_size bigint DEFAULT NULL,
                                                               condition varchar DEFAULT NULL)
RETURNS SETOF message_store.message
LANGUAGE c STABLE ROWS 1000
AS '$libdir/event_store', 'event_store_mdb_get_category_messages';
