-- Schema evolution: upcasters turn old event shapes into the newest one on
-- every read; the stored bytes never change.
\set SHOW_CONTEXT never

-- The seed's example: V1 {"address": "123 Main St"} becomes V2 {"street": ..., "city": "NY"}.
CREATE FUNCTION public.address_v1_to_v2(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT (data - 'address') || jsonb_build_object('street', data->'address', 'city', 'NY') $$;
SELECT event_store.append('customer-1', 'AddressChanged', '{"address": "123 Main St"}');
SELECT event_store.current_schema_version('AddressChanged');
SELECT event_store.add_upcaster('AddressChanged', 1, 'public.address_v1_to_v2(jsonb)');
SELECT event_store.current_schema_version('AddressChanged');
-- new events default to the current version; an explicit old version is upcast on read
SELECT event_store.append('customer-1', 'AddressChanged', '{"street": "5th Ave", "city": "NY"}');
SELECT event_store.append('customer-1', 'AddressChanged', '{"address": "1 Old Rd"}', schema_version => 1);
SELECT stream_version, event_type, schema_version, data FROM event_store.read_stream('customer-1');
-- the stored rows are unchanged
SELECT stream_version, schema_version, data FROM event_store.events WHERE stream_id = 'customer-1' ORDER BY 1;
-- every read path: backwards, as of a time, in the select list
SELECT stream_version, data FROM event_store.read_stream('customer-1', backwards => true, max_count => 1);
SELECT (event_store.read_stream('customer-1', max_count => 1)).data;

-- A three-step chain with a rename: OrderPlaced v1 -> v2 -> v3 becomes OrderSubmitted v3 -> v4.
CREATE FUNCTION public.order_add_currency(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT data || '{"currency": "EUR"}' $$;
CREATE FUNCTION public.order_total_to_amount(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT (data - 'total') || jsonb_build_object('amount', data->'total') $$;
CREATE FUNCTION public.order_add_channel(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT data || '{"channel": "web"}' $$;
SELECT event_store.append('order-1', 'OrderPlaced', '{"total": 10}');
SELECT event_store.add_upcaster('OrderPlaced', 1, 'public.order_add_currency(jsonb)');
SELECT event_store.append('order-1', 'OrderPlaced', '{"total": 20, "currency": "USD"}');
SELECT event_store.add_upcaster('OrderPlaced', 2, 'public.order_total_to_amount(jsonb)', 'OrderSubmitted');
SELECT event_store.add_upcaster('OrderSubmitted', 3, 'public.order_add_channel(jsonb)');
SELECT event_store.append('order-1', 'OrderSubmitted', '{"amount": 30, "currency": "GBP", "channel": "app"}');
SELECT event_store.current_schema_version('OrderPlaced'), event_store.current_schema_version('OrderSubmitted');
SELECT stream_version, event_type, schema_version, data FROM event_store.read_stream('order-1');
-- a legacy writer still appending OrderPlaced gets its last version before the
-- rename, and its events read as OrderSubmitted
SELECT event_store.append('order-2', 'OrderPlaced', '{"total": 5, "currency": "CHF"}');
SELECT e.schema_version AS stored, r.event_type, r.schema_version, r.data
  FROM event_store.events e, event_store.read_stream('order-2') r WHERE e.stream_id = 'order-2';
SELECT * FROM event_store.event_schemas ORDER BY event_type;

-- Invalid registrations
SELECT event_store.add_upcaster('OrderPlaced', 1, 'public.order_add_currency(jsonb)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.add_upcaster('OrderSubmitted', 5, 'public.order_add_channel(jsonb)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.add_upcaster('NewType', 2, 'public.order_add_channel(jsonb)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.add_upcaster('NewType', 0, 'public.order_add_channel(jsonb)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.add_upcaster('NewType', 2147483647, 'public.order_add_channel(jsonb)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.add_upcaster('NewType', 1, 'pg_catalog.upper(text)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.add_upcaster('NewType', 1, 'pg_catalog.jsonb_concat(jsonb, jsonb)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.add_upcaster('NewType', 1, 'pg_catalog.jsonb_array_elements(jsonb)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.add_upcaster('NewType', 1, 'public.no_such_function(jsonb)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.add_upcaster(NULL, 1, 'public.order_add_channel(jsonb)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.add_upcaster('NewType', NULL, 'public.order_add_channel(jsonb)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.add_upcaster('NewType', 1, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.add_upcaster('', 1, 'public.order_add_channel(jsonb)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.add_upcaster(repeat('t', 10240), 1, 'public.order_add_channel(jsonb)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.add_upcaster('NewType', 1, 'public.order_add_channel(jsonb)', '');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.current_schema_version(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.current_schema_version('');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.current_schema_version('NoUpcasters');
-- the registry is changed only through the functions
SELECT count(*) FROM event_store.upcasters;

-- Dropping: only the last step of a chain; replacing is drop + add in one transaction
SELECT event_store.drop_upcaster('OrderPlaced', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.drop_upcaster('OrderPlaced', 2);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.drop_upcaster('OrderSubmitted', 9);
SELECT event_store.drop_upcaster(NULL, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.drop_upcaster('OrderSubmitted', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.drop_upcaster('OrderSubmitted', 2147483647);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.drop_upcaster('OrderSubmitted', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.drop_upcaster('', 1);
\echo :LAST_ERROR_SQLSTATE
BEGIN;
SELECT event_store.drop_upcaster('OrderSubmitted', 3);
CREATE FUNCTION public.order_add_channel_v2(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT data || '{"channel": "store"}' $$;
SELECT event_store.add_upcaster('OrderSubmitted', 3, 'public.order_add_channel_v2(jsonb)');
-- the new chain applies at once, in this transaction too
SELECT stream_version, data->>'channel' AS channel FROM event_store.read_stream('order-1');
COMMIT;
SELECT stream_version, event_type, schema_version, data FROM event_store.read_stream('order-1');

-- An upcaster that fails, or returns something other than an object, fails the
-- read with the event named; nothing half-upcast is returned.
CREATE FUNCTION public.failing_upcaster(data jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE
  AS $$ BEGIN RAISE EXCEPTION 'cannot upcast %', data->>'n' USING ERRCODE = 'P0001'; END $$;
CREATE FUNCTION public.array_upcaster(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT '[1, 2]'::jsonb $$;
CREATE FUNCTION public.null_upcaster(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT NULL::jsonb $$;
SELECT event_store.append('bad-1', 'Fails', '{"n": 1}'), event_store.append('bad-2', 'Arrays', '{"n": 1}'),
       event_store.append('bad-3', 'Nulls', '{"n": 1}');
SELECT event_store.add_upcaster('Fails', 1, 'public.failing_upcaster(jsonb)');
SELECT event_store.add_upcaster('Arrays', 1, 'public.array_upcaster(jsonb)');
SELECT event_store.add_upcaster('Nulls', 1, 'public.null_upcaster(jsonb)');
\set SHOW_CONTEXT errors
SELECT * FROM event_store.read_stream('bad-1');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_stream('bad-2');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.read_stream('bad-3');
\echo :LAST_ERROR_SQLSTATE
\set SHOW_CONTEXT never
SELECT event_store.drop_upcaster('Fails', 1), event_store.drop_upcaster('Arrays', 1),
       event_store.drop_upcaster('Nulls', 1);
SELECT stream_id, data FROM event_store.read_stream('bad-1');

-- Replacing an upcaster's body takes effect at once; dropping its function
-- breaks only the reads that need it, with an error that says what to do.
CREATE FUNCTION public.tag_v1(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT data || '{"tag": "first"}' $$;
SELECT event_store.append('tag-1', 'Tagged', '{}', schema_version => 1);
SELECT event_store.add_upcaster('Tagged', 1, 'public.tag_v1(jsonb)');
SELECT data FROM event_store.read_stream('tag-1');
CREATE OR REPLACE FUNCTION public.tag_v1(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT data || '{"tag": "second"}' $$;
SELECT data FROM event_store.read_stream('tag-1');
DROP FUNCTION public.tag_v1(jsonb);
SELECT data FROM event_store.read_stream('tag-1');
\echo :LAST_ERROR_SQLSTATE
-- a function of the same signature that no longer returns jsonb: VE005, the
-- code of a wrong signature (VE008 is for a function that is gone)
CREATE FUNCTION public.tag_v1(data jsonb) RETURNS text LANGUAGE sql IMMUTABLE
  AS $$ SELECT 'not jsonb' $$;
SELECT data FROM event_store.read_stream('tag-1');
\echo :LAST_ERROR_SQLSTATE
DROP FUNCTION public.tag_v1(jsonb);
SELECT stream_version, data FROM event_store.read_stream('customer-1', max_count => 1);
SELECT event_store.append('tag-1', 'Tagged', '{"tag": "new"}');
SELECT event_store.drop_upcaster('Tagged', 1);
SELECT stream_version, schema_version, data FROM event_store.read_stream('tag-1');

-- Snapshots follow the upcasters' code: once an upcaster's body is replaced
-- (CREATE OR REPLACE, or drop and create under the same signature), loads
-- fold again rather than serve state folded under the old body.
CREATE FUNCTION public.grade_v1(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT data || '{"grade": "A"}' $$;
CREATE FUNCTION public.grades(state jsonb, e event_store.event) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT jsonb_build_object('grades', coalesce(state->'grades', '[]') || jsonb_build_array(e.data->'grade')) $$;
SELECT event_store.append('grade-1', 'Graded', '{}', schema_version => 1),
       event_store.append('grade-1', 'Graded', '{}', schema_version => 1);
SELECT event_store.add_upcaster('Graded', 1, 'public.grade_v1(jsonb)');
SELECT event_store.define_aggregate('grades', 'public.grades(jsonb, event_store.event)', '{}', 1);
SELECT * FROM event_store.load_aggregate('grade-1', 'grades');
SELECT count(*) AS snapshots FROM event_store.snapshots WHERE aggregate = 'grades';
CREATE OR REPLACE FUNCTION public.grade_v1(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT data || '{"grade": "B"}' $$;
SELECT * FROM event_store.load_aggregate('grade-1', 'grades');
DROP FUNCTION public.grade_v1(jsonb);
CREATE FUNCTION public.grade_v1(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT data || '{"grade": "C"}' $$;
SELECT * FROM event_store.load_aggregate('grade-1', 'grades');
-- a body that did not change keeps the snapshots valid
CREATE OR REPLACE FUNCTION public.grade_v1(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT data || '{"grade": "C"}' $$;
SELECT * FROM event_store.load_snapshot('grade-1', 'grades');
SELECT event_store.drop_upcaster('Graded', 1);
DELETE FROM event_store.aggregates WHERE name = 'grades';

-- Rows written around the functions (only the owner can) break nothing but
-- the events that need them: not the reads of other types, not appends.
INSERT INTO event_store.upcasters VALUES ('Garbled', 1, 'not a signature(', NULL),
       ('Garbled', 2000000000, 'public.address_v1_to_v2(pg_catalog.jsonb)', NULL),
       ('Garbled2', 1, 'public.address_v1_to_v2(pg_catalog.jsonb, pg_catalog.jsonb)', 'x');
\c
\set SHOW_CONTEXT never
SELECT event_store.append('garbled-1', 'Garbled', '{}', schema_version => 1);
SELECT stream_version, schema_version, data FROM event_store.read_stream('customer-1', max_count => 1);
SELECT event_store.append('garbled-2', 'Other', '{}');
SELECT * FROM event_store.read_stream('garbled-1');
\echo :LAST_ERROR_SQLSTATE
SELECT event_type, current_version, steps FROM event_store.event_schemas WHERE event_type LIKE 'Garbled%' ORDER BY 1;
DELETE FROM event_store.upcasters WHERE event_type LIKE 'Garbled%';
\c
\set SHOW_CONTEXT never

-- Registering needs EXECUTE on the upcaster, and the right to call add_upcaster.
CREATE ROLE regress_upcast_admin;
GRANT USAGE ON SCHEMA event_store TO regress_upcast_admin;
GRANT EXECUTE ON FUNCTION event_store.add_upcaster(text, integer, regprocedure, text) TO regress_upcast_admin;
GRANT SELECT, INSERT ON event_store.upcasters TO regress_upcast_admin;
REVOKE EXECUTE ON FUNCTION public.order_add_channel(jsonb) FROM PUBLIC;
SET ROLE regress_upcast_admin;
SELECT event_store.add_upcaster('Private', 1, 'public.order_add_channel(jsonb)');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.drop_upcaster('Private', 1);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP OWNED BY regress_upcast_admin;
DROP ROLE regress_upcast_admin;

-- A C extension upcasts through the hook (test/modules/upcast_hook): for
-- Paid events at version 1 it renames "amount" to "amount_cents".
-- An aggregate over them shows that snapshots follow the hook too: the
-- module declares what it does in event_store_upcast_hook_fingerprint.
SELECT event_store.append('invoice-1', 'Paid', '{"amount": 1250, "by": "card"}');
SELECT stream_version, schema_version, data FROM event_store.read_stream('invoice-1');
CREATE FUNCTION public.last_data_of(state jsonb, e event_store.event) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT e.data $$;
SELECT event_store.define_aggregate('last_paid', 'public.last_data_of(jsonb, event_store.event)', '{}', 1);
SELECT * FROM event_store.load_aggregate('invoice-1', 'last_paid');
\getenv abs_builddir PG_ABS_BUILDDIR
\getenv dlsuffix PG_DLSUFFIX
\set hook_library :abs_builddir '/test/modules/upcast_hook/upcast_hook' :dlsuffix
LOAD :'hook_library';
SET upcast_hook.event_type = 'Paid';
SELECT stream_version, schema_version, data FROM event_store.read_stream('invoice-1');
SELECT * FROM event_store.load_aggregate('invoice-1', 'last_paid');
-- the hook runs after the SQL chain: it sees (and may continue from) its result
CREATE FUNCTION public.paid_add_currency(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT data || '{"currency": "EUR"}' $$;
SELECT event_store.add_upcaster('Paid', 1, 'public.paid_add_currency(jsonb)');
SET upcast_hook.from_version = 2;
SELECT stream_version, schema_version, data FROM event_store.read_stream('invoice-1');
SELECT * FROM event_store.load_aggregate('invoice-1', 'last_paid');
RESET upcast_hook.event_type;
SELECT stream_version, schema_version, data FROM event_store.read_stream('invoice-1');
SELECT * FROM event_store.load_aggregate('invoice-1', 'last_paid');
-- a hook that declares no fingerprint: snapshots are neither used nor written
SET upcast_hook.event_type = 'Paid';
SET upcast_hook.declare_fingerprint = off;
SELECT event_store.delete_snapshots(aggregate => 'last_paid');
SELECT * FROM event_store.load_aggregate('invoice-1', 'last_paid');
SELECT count(*) AS snapshots FROM event_store.snapshots WHERE aggregate = 'last_paid';
SELECT * FROM event_store.load_snapshot('invoice-1', 'last_paid');
SELECT event_store.save_snapshot('invoice-1', 'last_paid', 1, '{}');
\echo :LAST_ERROR_SQLSTATE
RESET upcast_hook.declare_fingerprint;
RESET upcast_hook.event_type;
RESET upcast_hook.from_version;
DELETE FROM event_store.aggregates WHERE name = 'last_paid';

-- pg_dump keeps the registry
SELECT count(*) FROM pg_extension e, unnest(e.extconfig) c WHERE e.extname = 'event_store' AND c = 'event_store.upcasters'::regclass;

-- Leave the registry empty for the suites that follow: drop every chain from its last step.
SELECT event_store.drop_upcaster('OrderSubmitted', 3), event_store.drop_upcaster('OrderPlaced', 2),
       event_store.drop_upcaster('OrderPlaced', 1), event_store.drop_upcaster('AddressChanged', 1),
       event_store.drop_upcaster('Paid', 1);
SELECT count(*) FROM event_store.upcasters;
