-- Upcasting on the other read paths: aggregates fold upcast events, and a
-- snapshot folded under another upcaster registry is never served.
\set SHOW_CONTEXT never
CREATE FUNCTION public.cents_reducer(state jsonb, e event_store.event) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT jsonb_build_object('cents', coalesce((state->>'cents')::int, 0) + (e.data->>'cents')::int,
                                  'schema_versions', coalesce(state->'schema_versions', '[]') || to_jsonb(e.schema_version)) $$;
SELECT event_store.define_aggregate('wallet', 'public.cents_reducer(jsonb, event_store.event)', '{}', 2);
-- version 1 of Credited had "amount" in euros; version 2 has "cents"
SELECT event_store.append('wallet-1', 'Credited', '{"amount": 1}', schema_version => 1),
       event_store.append('wallet-1', 'Credited', '{"amount": 2}', schema_version => 1),
       event_store.append('wallet-1', 'Credited', '{"cents": 300}', schema_version => 2);
CREATE FUNCTION public.euros_to_cents(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT jsonb_build_object('cents', (data->>'amount')::int * 100) $$;
-- without the upcaster, the reducer sees the old shape: the old events carry no cents
SELECT * FROM event_store.load_aggregate('wallet-1', 'wallet');
SELECT event_store.add_upcaster('Credited', 1, 'public.euros_to_cents(jsonb)');
SELECT * FROM event_store.load_aggregate('wallet-1', 'wallet');
SELECT version, upcasters <> 0 AS under_registry FROM event_store.snapshots WHERE stream_id = 'wallet-1';
-- a new upcaster changes what the events say: the snapshot folded before it is ignored
CREATE FUNCTION public.double_cents(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT jsonb_build_object('cents', (data->>'cents')::int * 2) $$;
SELECT event_store.add_upcaster('Credited', 2, 'public.double_cents(jsonb)');
SELECT * FROM event_store.load_aggregate('wallet-1', 'wallet');
-- the same as a full replay without snapshots
SELECT event_store.delete_snapshots('wallet-1');
SELECT * FROM event_store.load_aggregate('wallet-1', 'wallet');
-- dropping the step: back to the one-step shapes, folded again
SELECT event_store.drop_upcaster('Credited', 2);
SELECT * FROM event_store.load_aggregate('wallet-1', 'wallet');
SELECT event_store.drop_upcaster('Credited', 1);
