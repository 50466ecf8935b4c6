-- A database for the inline projection's cost: the extension, the same
-- upsert read model, and (in proj_inline only) an inline projection of it.
CREATE EXTENSION event_store CASCADE;
CREATE TABLE public.bench_balances (stream_id text PRIMARY KEY, n bigint NOT NULL, last_version bigint NOT NULL);
-- (PL/pgSQL: its plans are cached across transactions; a LANGUAGE sql function
-- is planned again in every transaction, i.e. at every inline append)
CREATE FUNCTION public.bench_balance(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.bench_balances VALUES (e.stream_id, 1, e.stream_version)
  ON CONFLICT (stream_id) DO UPDATE SET n = bench_balances.n + 1, last_version = EXCLUDED.last_version;
END $$;
