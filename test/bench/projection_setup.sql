-- The projection case: a simple upsert read model (throughput), an
-- insert-only one (commit-to-applied delay per event, from commit
-- timestamps), and a database with an inline projection for the writer's
-- cost (the same upsert, applied in the appending transaction).
CREATE TABLE public.bench_balances (stream_id text PRIMARY KEY, n bigint NOT NULL, last_version bigint NOT NULL);
-- (PL/pgSQL: its plans are cached across transactions; a LANGUAGE sql function
-- is planned again in every transaction, i.e. at every inline append)
CREATE FUNCTION public.bench_balance(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.bench_balances VALUES (e.stream_id, 1, e.stream_version)
  ON CONFLICT (stream_id) DO UPDATE SET n = bench_balances.n + 1, last_version = EXCLUDED.last_version;
END $$;
CREATE TABLE public.bench_applied (stream_id text, stream_version bigint);
CREATE FUNCTION public.bench_apply(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.bench_applied VALUES (e.stream_id, e.stream_version);
END $$;
