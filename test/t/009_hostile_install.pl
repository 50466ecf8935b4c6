# Hostile install (issue 12, item 4).
#
# A role that is not a superuser (mallory) plants look-alikes where a
# careless script or internal statement would find them: in the schema
# public, a function of the same name and argument types as every function
# of pg_catalog (and of pgcrypto and of the extension itself), an aggregate
# for each common one, an operator for every operator of pg_catalog,
# domains named like the types, and tables named like the extension's
# tables and views, with triggers on every event and a row-level security
# policy on reads.  Each of them, when it runs, leaves a trace: a row in
# public.trace, a step of the sequence public.trace_seq (which survives a
# rollback) and a WARNING in the server log.  Then:
#   - hostile_new: mallory owns the database (and so the schema public) and
#     sets its search_path to public, pg_catalog -- for every session and
#     for the background workers; a superuser installs pgcrypto and
#     event_store there (CREATE EXTENSION);
#   - hostile_upd: the old default, CREATE on public for PUBLIC; a superuser
#     installs 0.1.0, mallory plants, and a superuser whose own
#     search_path is public, pg_catalog runs ALTER EXTENSION UPDATE;
#   - in both, the README's workload (appends by every path, reads,
#     aggregates and snapshots, execute, upcasters, protect / forget,
#     read_all, publish, the output plugin, projections of both modes with
#     pause / resume / rebuild / parked events, check) runs under the
#     hostile search_path as the superuser and as an application role
#     holding the README's roles, while the pipeline worker and the
#     projection workers do their part;
#   - hostile_new is dumped with pg_dump and restored (mallory's objects
#     come along); the restored database runs the workload and rebuilds
#     its projections;
#   - mallory's pre-made schema event_store, holding look-alikes that do not
#     collide with the extension's names: CREATE EXTENSION is refused
#     (VE007, test 005_install covers its messages) and none of them ran in
#     the meantime, though the 0.1.0 script had run as a superuser.
# None of the planted objects may ever run: no trace anywhere.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $t0 = time;
my $kek = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
my $node = PostgreSQL::Test::Cluster->new('hostile');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'event_store'
max_worker_processes = 24
max_replication_slots = 16
event_store.key_encryption_key = '$kek'
event_store.projection_retry_delay = 20ms
log_statement = none
});
# servers that restrict output plugins (output_plugin_libraries) must allow ours
$node->append_conf('postgresql.conf', "output_plugin_libraries = 'pgoutput, test_decoding, event_store'\n")
  if `postgres --describe-config` =~ /^output_plugin_libraries\t/m;
$node->start;

# the README's roles (test/readme_sql prints the SQL of its Security section),
# and an application role that holds them all
my $security = `test/readme_sql Security`;
die 'no SQL in the README\'s Security section' unless $security =~ /CREATE ROLE/;
# (roles once for the cluster, grants in each database; each CREATE ROLE is one line)
my $roles_sql = join '', grep { /^CREATE ROLE/ } split /^/m, $security;
my $grants_sql = join '', grep { !/^CREATE ROLE/ } split /^/m, $security;
$node->safe_psql('postgres', $roles_sql . q{
	CREATE ROLE mallory LOGIN;
	CREATE ROLE app_user LOGIN;
	GRANT app_admin, app_privacy_admin, app_projector TO app_user;
});

# --- what mallory plants -----------------------------------------------------
my $plant = q{
-- the trace: a row, a step of a sequence (not undone by a rollback), a warning
CREATE TABLE public.trace (at timestamptz DEFAULT clock_timestamp(), who text DEFAULT current_user, what text);
CREATE SEQUENCE public.trace_seq;
CREATE FUNCTION public.es_trace(what text) RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog AS $t$
BEGIN
  PERFORM nextval('public.trace_seq');
  RAISE WARNING 'ES-TRACE: % ran', what;
  INSERT INTO public.trace (what) VALUES (what);
  RETURN true;
END $t$;
GRANT EXECUTE ON FUNCTION public.es_trace(text) TO PUBLIC;
CREATE FUNCTION public.es_trace_trigger() RETURNS trigger LANGUAGE plpgsql AS $t$
BEGIN
  PERFORM public.es_trace(format('trigger on %s (%s %s)', TG_TABLE_NAME, TG_WHEN, TG_OP));
  RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $t$;

-- a function like every function of pg_catalog, same name and argument types
DO $d$
DECLARE
  f record;
  planted int := 0;
BEGIN
  FOR f IN SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
                  pg_get_function_result(p.oid) AS ret, p.proretset, p.proargmodes IS NOT NULL AS has_out
             FROM pg_proc p
            WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind IN ('f', 'w')
  LOOP
    BEGIN
      EXECUTE format('CREATE FUNCTION public.%I(%s) RETURNS %s LANGUAGE plpgsql AS %L',
                     f.proname, f.args, f.ret,
                     format('BEGIN PERFORM public.es_trace(%L); RETURN%s; END',
                            'function ' || f.proname || '(' || f.args || ')',
                            CASE WHEN f.proretset OR f.has_out OR f.ret = 'void' THEN '' ELSE ' NULL' END));
      planted := planted + 1;
    EXCEPTION WHEN OTHERS THEN NULL;   -- internal, cstring, trigger, ...: not possible in PL/pgSQL
    END;
  END LOOP;
  INSERT INTO public.planted VALUES ('functions', planted);
END $d$;

-- an aggregate like each of pg_catalog's of one argument
DO $d$
DECLARE
  a record;
  planted int := 0;
BEGIN
  FOR a IN SELECT DISTINCT p.proname, format_type(p.proargtypes[0], NULL) AS arg
             FROM pg_proc p
            WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind = 'a' AND p.pronargs = 1
  LOOP
    BEGIN
      EXECUTE format('CREATE FUNCTION public.%I(state %s, v %s) RETURNS %s LANGUAGE plpgsql AS %L',
                     'es_agg_' || md5(a.proname || a.arg), a.arg, a.arg, a.arg,
                     format('BEGIN PERFORM public.es_trace(%L); RETURN v; END', 'aggregate ' || a.proname || '(' || a.arg || ')'));
      EXECUTE format('CREATE AGGREGATE public.%I(%s) (SFUNC = public.%I, STYPE = %s)',
                     a.proname, a.arg, 'es_agg_' || md5(a.proname || a.arg), a.arg);
      planted := planted + 1;
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
  END LOOP;
  CREATE FUNCTION public.es_count_star(state bigint) RETURNS bigint LANGUAGE plpgsql AS
    'BEGIN PERFORM public.es_trace(''aggregate count(*)''); RETURN state + 1; END';
  CREATE AGGREGATE public.count(*) (SFUNC = public.es_count_star, STYPE = bigint, INITCOND = '0');
  INSERT INTO public.planted VALUES ('aggregates', planted + 1);
END $d$;

-- an operator like every operator of pg_catalog
DO $d$
DECLARE
  op record;
  planted int := 0;
  fn text;
BEGIN
  FOR op IN SELECT o.oid, o.oprname, o.oprleft, o.oprright, o.oprresult
             FROM pg_operator o WHERE o.oprnamespace = 'pg_catalog'::regnamespace
  LOOP
    fn := 'es_op_' || op.oid;
    BEGIN
      IF op.oprleft = 0 THEN
        EXECUTE format('CREATE FUNCTION public.%I(r %s) RETURNS %s LANGUAGE plpgsql AS %L', fn,
                       format_type(op.oprright, NULL), format_type(op.oprresult, NULL),
                       format('BEGIN PERFORM public.es_trace(%L); RETURN NULL; END', 'operator ' || op.oprname));
        EXECUTE format('CREATE OPERATOR public.%s (RIGHTARG = %s, FUNCTION = public.%I)', op.oprname,
                       format_type(op.oprright, NULL), fn);
      ELSE
        EXECUTE format('CREATE FUNCTION public.%I(l %s, r %s) RETURNS %s LANGUAGE plpgsql AS %L', fn,
                       format_type(op.oprleft, NULL), format_type(op.oprright, NULL), format_type(op.oprresult, NULL),
                       format('BEGIN PERFORM public.es_trace(%L); RETURN NULL; END',
                              'operator ' || format_type(op.oprleft, NULL) || ' ' || op.oprname || ' ' || format_type(op.oprright, NULL)));
        EXECUTE format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = public.%I)', op.oprname,
                       format_type(op.oprleft, NULL), format_type(op.oprright, NULL), fn);
      END IF;
      planted := planted + 1;
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
  END LOOP;
  INSERT INTO public.planted VALUES ('operators', planted);
END $d$;

-- domains named like the types, whose check leaves a trace
DO $d$
DECLARE
  t text;
  planted int := 0;
BEGIN
  FOREACH t IN ARRAY '{text,jsonb,json,int8,int4,int2,bigint,integer,uuid,bytea,timestamptz,timestamp,pg_lsn,regclass,regprocedure,regproc,regrole,regnamespace,regtype,oid,name,interval,bool,boolean,numeric,float8,varchar,xid,tid,char,event,anyelement,record}'::text[]
  LOOP
    BEGIN
      EXECUTE format('CREATE DOMAIN public.%I AS pg_catalog.%I CHECK (public.es_trace(%L))', t,
                     CASE t WHEN 'bigint' THEN 'int8' WHEN 'integer' THEN 'int4' WHEN 'boolean' THEN 'bool'
                            WHEN 'event' THEN 'text' WHEN 'char' THEN 'bpchar' ELSE t END,
                     'domain ' || t);
      planted := planted + 1;
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
  END LOOP;
  INSERT INTO public.planted VALUES ('domains', planted);
END $d$;

-- tables named like the extension's relations (and its type), with a
-- trigger on every event and a policy that traces reads
DO $d$
DECLARE
  t text;
  planted int := 0;
BEGIN
  FOREACH t IN ARRAY '{events,streams,event,global_log,snapshots,aggregates,upcasters,event_schemas,protected_types,subject_keys,forgotten_subjects,projections,projection_parked,projection_status,parked_events,pipeline_status,log_identity,events_pkey,pg_extension,pg_class,pg_proc,pg_namespace,pg_depend,pg_replication_slots}'::text[]
  LOOP
    BEGIN
      EXECUTE format('CREATE TABLE public.%I (stream_id text, stream_version bigint, name text, x int)', t);
      EXECUTE format('CREATE TRIGGER es_row BEFORE INSERT OR UPDATE OR DELETE ON public.%I FOR EACH ROW EXECUTE FUNCTION public.es_trace_trigger()', t);
      EXECUTE format('CREATE TRIGGER es_stmt BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON public.%I FOR EACH STATEMENT EXECUTE FUNCTION public.es_trace_trigger()', t);
      EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', t);
      EXECUTE format('CREATE POLICY es_read ON public.%I USING (public.es_trace(%L))', t, 'read of table ' || t);
      EXECUTE format('GRANT ALL ON public.%I TO PUBLIC', t);
      -- a row, so that a read evaluates the policy (put in without the triggers)
      EXECUTE format('ALTER TABLE public.%I DISABLE TRIGGER USER', t);
      EXECUTE format('INSERT INTO public.%I VALUES (''planted'', 1, ''planted'', 1)', t);
      EXECUTE format('ALTER TABLE public.%I ENABLE TRIGGER USER', t);
      planted := planted + 1;
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
  END LOOP;
  INSERT INTO public.planted VALUES ('tables', planted);
END $d$;
TRUNCATE public.trace;
SELECT FROM setval('public.trace_seq', 1, false);
};
# the planting needs a table of its own first, and the pgcrypto names
my $plant_all = q{CREATE TABLE public.planted (what text, n int);} . $plant . q{
DO $d$
DECLARE
  s text;
  planted int := 0;
BEGIN
  -- pgcrypto's names with other argument types, and the extension's own names
  FOREACH s IN ARRAY ARRAY[
      'encrypt_iv(text, text, text, text)', 'decrypt_iv(text, text, text, text)', 'hmac(text, bytea, text)',
      'digest(bytea, varchar)', 'gen_random_bytes(bigint)', 'gen_random_uuid(text)',
      'append(text, text, jsonb, jsonb, bigint, uuid, integer)', 'append_events(text, jsonb, bigint)',
      'read_stream(text, bigint, integer, boolean, timestamptz)', 'stream_version(text)',
      'forget(text)', 'protect(text, text, text[])', 'read_all(bigint, integer, text[], text[])',
      '_version_events()', '_refuse_change()', '_subject_hash(text)', 'personal_data_access()',
      'load_aggregate(text, text, timestamptz, bigint)', 'execute(text, text, regprocedure, jsonb)',
      'create_projection(text, regprocedure, text[], text[], text, regprocedure, text, text)',
      'wait_for_pipeline(interval)', 'check(interval)']
  LOOP
    BEGIN
      EXECUTE format('CREATE FUNCTION public.%s RETURNS %s LANGUAGE plpgsql AS %L', s,
                     CASE WHEN s LIKE '\_version%' OR s LIKE '\_refuse%' THEN 'trigger' ELSE 'text' END,
                     format('BEGIN PERFORM public.es_trace(%L); RETURN NULL; END', 'function ' || s));
      planted := planted + 1;
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
  END LOOP;
  INSERT INTO public.planted VALUES ('look-alikes of pgcrypto and of the extension', planted);
END $d$;
TRUNCATE public.trace;
SELECT FROM setval('public.trace_seq', 1, false);
SELECT string_agg(what || ' ' || n, ', ' ORDER BY what) FROM public.planted;
};

# The traces in a database: rows, sequence steps.
sub traces
{
	my ($db, $schema) = @_;
	$schema //= 'public';
	return $node->safe_psql($db, qq{
		SET search_path = pg_catalog;
		SELECT (SELECT count(*) FROM $schema.trace) || ' rows, ' ||
		       (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM $schema.trace_seq) || ' steps'
		       || coalesce(': ' || (SELECT string_agg(DISTINCT what, '; ') FROM $schema.trace), '')});
}

# --- hostile_new: mallory owns the database, sets its search_path ------------
$node->safe_psql('postgres', 'CREATE DATABASE hostile_new OWNER mallory');
my $planted = $node->safe_psql('hostile_new', $plant_all, extra_params => [ '-U', 'mallory' ]);
note "planted in hostile_new: $planted";
my ($n) = $planted =~ /functions (\d+)/;
cmp_ok($n, '>', 2000, "mallory planted $n look-alike functions");
($n) = $planted =~ /operators (\d+)/;
cmp_ok($n, '>', 500, "and $n look-alike operators");
$node->safe_psql('hostile_new', q{ALTER DATABASE hostile_new SET search_path = public, pg_catalog},
	extra_params => [ '-U', 'mallory' ]);
is($node->safe_psql('hostile_new', 'SHOW search_path'), 'public, pg_catalog',
	'every session of hostile_new starts with search_path = public, pg_catalog');
is(traces('hostile_new'), '0 rows, 0 steps', 'nothing traced yet');

$node->safe_psql('hostile_new', q{
	CREATE SCHEMA crypto;
	GRANT USAGE ON SCHEMA crypto TO PUBLIC;
	CREATE EXTENSION pgcrypto SCHEMA crypto;
	CREATE EXTENSION event_store;
});
is(traces('hostile_new'), '0 rows, 0 steps', 'CREATE EXTENSION event_store ran none of the planted objects');

# --- hostile_upd: 0.1.0 installed, mallory plants, then ALTER EXTENSION UPDATE
$node->safe_psql('postgres', 'CREATE DATABASE hostile_upd');
$node->safe_psql('hostile_upd', q{
	GRANT CREATE ON SCHEMA public TO PUBLIC;
	CREATE SCHEMA crypto;
	GRANT USAGE ON SCHEMA crypto TO PUBLIC;
	CREATE EXTENSION pgcrypto SCHEMA crypto;
	CREATE EXTENSION event_store VERSION '0.1.0';
	SELECT event_store.append('old-1', 'Opened', '{"n": 1}');
	SELECT event_store.append('old-1', 'Deposited', '{"amount": 5}');
});
$node->safe_psql('hostile_upd', $plant_all, extra_params => [ '-U', 'mallory' ]);
$node->safe_psql('hostile_upd', q{
	SET search_path = public, pg_catalog;
	ALTER EXTENSION event_store UPDATE;
});
is($node->safe_psql('hostile_upd', q{SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'event_store'}),
	'0.2.0', 'hostile_upd updated to 0.2.0 under search_path = public, pg_catalog');
is(traces('hostile_upd'), '0 rows, 0 steps', 'ALTER EXTENSION event_store UPDATE ran none of the planted objects');
$node->safe_psql('hostile_upd', q{ALTER DATABASE hostile_upd SET search_path = public, pg_catalog});
# the pipeline worker started before that: it comes back (a second later) with the database's setting
$node->safe_psql('hostile_upd', q{
	SET search_path = pg_catalog;
	SELECT pg_terminate_backend(pid) FROM pg_stat_activity
	 WHERE backend_type = 'event_store pipeline' AND datname = current_database()});

# --- the workload -----------------------------------------------------------
# The application's own functions, in a schema of the superuser's (a
# reducer, a decider, an upcaster, projection handlers).  Their bodies
# qualify every name: they run under the hostile search_path too, and what
# is tested is the extension, not them.
my $app = q{
CREATE SCHEMA app;
GRANT USAGE ON SCHEMA app TO PUBLIC;
CREATE FUNCTION app.reduce(state pg_catalog.jsonb, e event_store.event) RETURNS pg_catalog.jsonb
LANGUAGE sql SET search_path = pg_catalog AS $f$
  SELECT jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1) $f$;
CREATE FUNCTION app.decide(state pg_catalog.jsonb, command pg_catalog.jsonb) RETURNS pg_catalog.jsonb
LANGUAGE sql SET search_path = pg_catalog AS $f$
  SELECT jsonb_build_array(jsonb_build_object('type', 'Decided', 'data', command)) $f$;
CREATE FUNCTION app.up(data pg_catalog.jsonb) RETURNS pg_catalog.jsonb
LANGUAGE sql SET search_path = pg_catalog AS $f$ SELECT data || '{"v": 2}'::jsonb $f$;
CREATE TABLE app.seen (projection pg_catalog.text, stream_id pg_catalog.text, stream_version pg_catalog.int8);
GRANT INSERT, DELETE, SELECT ON app.seen TO PUBLIC;
CREATE FUNCTION app.see(e event_store.event) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $f$
BEGIN
  IF e.data ? 'poison' THEN RAISE EXCEPTION 'poison'; END IF;
  INSERT INTO app.seen VALUES ('async', e.stream_id, e.stream_version);
END $f$;
CREATE FUNCTION app.see_inline(e event_store.event) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $f$
BEGIN
  INSERT INTO app.seen VALUES ('inline', e.stream_id, e.stream_version);
END $f$;
CREATE FUNCTION app.reset_async() RETURNS void LANGUAGE sql SET search_path = pg_catalog AS
  $f$ DELETE FROM app.seen WHERE projection = 'async' $f$;
CREATE FUNCTION app.reset_inline() RETURNS void LANGUAGE sql SET search_path = pg_catalog AS
  $f$ DELETE FROM app.seen WHERE projection = 'inline' $f$;
};

# The README's workload; every call is the extension's, with literals only
# (a cast of the workload's own, '...'::jsonb, would meet mallory's domain).
sub workload
{
	my ($tag, $superuser) = @_;
	my $id = sprintf('0190a4c2-0000-7000-8000-%012d', length($tag) * 1000 + ord($tag));
	my $w = qq{
SET search_path = public, pg_catalog;
SELECT event_store.append('acct_$tag-1', 'Opened', '{"owner": "ann"}', expected_version => 0);
SELECT event_store.append('acct_$tag-1', 'Deposited', '{"amount": 50}', expected_version => 1,
                          event_id => '$id');
SELECT event_store.append('acct_$tag-1', 'Deposited', '{"amount": 50}', expected_version => 1,
                          event_id => '$id');
SELECT event_store.append_events('acct_$tag-1', '[{"type": "Withdrawn", "data": {"amount": 20}},
                                                 {"type": "Deposited", "data": {"amount": 5}, "metadata": {"m": 1}}]');
INSERT INTO event_store.events (stream_id, event_type, data) VALUES ('acct_$tag-2', 'Opened', '{"owner": "bob"}');
COPY event_store.events (stream_id, event_type, data) FROM STDIN;
acct_$tag-2\tDeposited\t{"amount": 7}
acct_$tag-2\tDeposited\t{"amount": 8}
\\.
SELECT pg_catalog.count(*) FROM event_store.read_stream('acct_$tag-1');
SELECT pg_catalog.count(*) FROM event_store.read_stream('acct_$tag-1', from_version => 2, max_count => 2, backwards => true);
SELECT pg_catalog.count(*) FROM event_store.read_stream('acct_$tag-1', as_of => pg_catalog.now());
SELECT event_store.stream_version('acct_$tag-1');
SELECT pg_catalog.count(*) FROM event_store.streams;
SELECT event_store.define_aggregate('agg_$tag', 'app.reduce(pg_catalog.jsonb, event_store.event)', '{}', 2);
SELECT * FROM event_store.load_aggregate('acct_$tag-1', 'agg_$tag');
SELECT * FROM event_store.load_aggregate('acct_$tag-1', 'agg_$tag', at_version => 2);
SELECT event_store.save_snapshot('acct_$tag-1', 'agg_$tag', 1, '{"n": 1}');
SELECT * FROM event_store.load_snapshot('acct_$tag-1', 'agg_$tag');
SELECT event_store.execute('acct_$tag-1', 'agg_$tag', 'app.decide(pg_catalog.jsonb, pg_catalog.jsonb)', '{"x": 1}');
SELECT event_store.add_upcaster('Opened_$tag', 1, 'app.up(pg_catalog.jsonb)');
SELECT event_store.append('acct_$tag-3', 'Opened_$tag', '{"owner": "cy"}', schema_version => 1);
SELECT pg_catalog.count(*) FROM event_store.read_stream('acct_$tag-3');
SELECT pg_catalog.count(*) FROM event_store.event_schemas;
SELECT event_store.current_schema_version('Opened_$tag');
SELECT event_store.drop_upcaster('Opened_$tag', 1);
SELECT event_store.protect('Registered_$tag', '\$.user', '{\$.email}');
SELECT event_store.append('user_$tag-1', 'Registered_$tag', '{"user": "u_$tag", "email": "ann\@example.com"}');
SELECT pg_catalog.count(*) FROM event_store.read_stream('user_$tag-1');
SELECT pg_catalog.count(*) FROM event_store.subject_streams('u_$tag');
SELECT event_store.rewrap_keys();
SELECT event_store.forget('u_$tag');
SELECT event_store.forget('u_$tag');
SELECT pg_catalog.count(*) FROM event_store.read_stream('user_$tag-1');
SELECT event_store.wait_for_pipeline('60 s');
SELECT pg_catalog.count(*) FROM event_store.read_all(0, 100);
SELECT pg_catalog.count(*) FROM event_store.read_all(0, 100, '{acct_$tag}', '{Deposited}');
SELECT event_store.publish('accounts.$tag', '{"account": 1}', 'acct_$tag-1');
SELECT pg_catalog.count(*) FROM event_store.pipeline_status;
SELECT event_store.create_projection('async_$tag', 'app.see(event_store.event)', categories => '{acct_$tag}',
                                     reset => 'app.reset_async()', on_error => 'park');
SELECT event_store.create_projection('inline_$tag', 'app.see_inline(event_store.event)', categories => '{acct_$tag}',
                                     mode => 'inline', reset => 'app.reset_inline()');
SELECT event_store.append('acct_$tag-1', 'Poison', '{"poison": true}');
SELECT event_store.append('acct_$tag-1', 'Deposited', '{"amount": 100}');
SELECT event_store.wait_for_projection('async_$tag', '60 s');
SELECT event_store.pause_projection('async_$tag');
SELECT event_store.resume_projection('async_$tag');
SELECT event_store.rebuild_projection('async_$tag');
SELECT event_store.wait_for_projection('async_$tag', '60 s');
SELECT event_store.rebuild_projection('inline_$tag');
SELECT pg_catalog.count(*) FROM event_store.projection_status;
SELECT pg_catalog.count(*) FROM event_store.parked_events;
SELECT event_store.replay_parked('async_$tag');
SELECT event_store.discard_parked('async_$tag');
SELECT pg_catalog.count(*) FROM event_store.check('60 s');
SELECT event_store.delete_snapshots('acct_$tag-1');
};
	$w .= qq{
SELECT 'slot' FROM pg_catalog.pg_create_logical_replication_slot('plugin_$tag', 'event_store');
SELECT event_store.append('acct_$tag-4', 'Opened', '{"owner": "dee"}');
SELECT pg_catalog.count(*) FROM pg_catalog.pg_logical_slot_peek_changes('plugin_$tag', NULL, NULL, 'categories', 'acct_$tag', 'include-messages', 'true');
SELECT pg_catalog.count(*) FROM pg_catalog.pg_logical_slot_get_changes('plugin_$tag', NULL, NULL);
SELECT pg_catalog.pg_drop_replication_slot('plugin_$tag');
} if $superuser;
	return $w;
}

for my $db ('hostile_new', 'hostile_upd')
{
	$node->safe_psql($db, "SET search_path = pg_catalog;\n" . $app . $grants_sql);
	$node->safe_psql($db, workload('su', 1));
	is(traces($db), '0 rows, 0 steps', "$db: the README workload as the superuser ran none of the planted objects");
	$node->safe_psql($db, workload('app', 0), extra_params => [ '-U', 'app_user' ]);
	is(traces($db), '0 rows, 0 steps', "$db: the README workload as an application role ran none of them");
	# the workers have done their part meanwhile
	is($node->safe_psql($db, q{
		SET search_path = pg_catalog;
		SELECT count(*) FILTER (WHERE projection = 'async') > 0 AND count(*) FILTER (WHERE projection = 'inline') > 0
		  FROM app.seen}), 't', "$db: the projection workers and the inline projections applied events");
	is($node->safe_psql($db, q{SET search_path = pg_catalog; SELECT count(*) FROM event_store.check('60 s')}), '0',
		"$db: consistent");
}

# --- pg_dump and restore, mallory's objects included --------------------------
my $dump = PostgreSQL::Test::Utils::tempdir . '/hostile_new.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('hostile_new') ], 'pg_dump of hostile_new');
is(traces('hostile_new'), '0 rows, 0 steps', 'pg_dump ran none of the planted objects');
$node->safe_psql('postgres', 'CREATE DATABASE hostile_restored OWNER mallory');
$node->safe_psql('hostile_restored', q{ALTER DATABASE hostile_restored SET search_path = public, pg_catalog});
$node->command_ok([ 'pg_restore', '-d', $node->connstr('hostile_restored'), $dump ], 'pg_restore into hostile_restored');
is(traces('hostile_restored'), '0 rows, 0 steps', 'pg_restore (the events replayed through the trigger) ran none of the planted objects');
is($node->safe_psql('hostile_restored', q{SET search_path = pg_catalog; SELECT count(*) FROM public.planted}),
	'6', 'mallory\'s objects were restored too');
# the restored projections are rebuilt (until then they refer to hostile_new's log)
$node->safe_psql('hostile_restored', q{
	SET search_path = public, pg_catalog;
	SELECT event_store.rebuild_projection('async_su');
	SELECT event_store.rebuild_projection('inline_su');
	SELECT event_store.wait_for_projection('async_su', '60 s');
});
$node->safe_psql('hostile_restored', workload('rst', 1));
is(traces('hostile_restored'), '0 rows, 0 steps',
	'hostile_restored: the workload, the pipeline and the projections ran none of the planted objects');
is($node->safe_psql('hostile_restored', q{SET search_path = pg_catalog;
	SELECT event_store.wait_for_pipeline('60 s') AND (SELECT count(*) FROM event_store.global_log) = (SELECT count(*) FROM event_store.events)}),
	't', 'hostile_restored: every restored event is in its global log');

# --- mallory's pre-made schema event_store --------------------------------
$node->safe_psql('postgres', q{CREATE DATABASE hostile_schema; GRANT CREATE ON DATABASE hostile_schema TO mallory});
# (everything in mallory's schema, but what would collide with the
# extension's own names: such a collision fails the 0.1.0 script already)
my $in_schema = 'CREATE TABLE public.planted (what text, n int);' . $plant;
$in_schema =~ s/public\./event_store./g;
$in_schema =~ s/FOREACH t IN ARRAY '\{events,[^']*\}'/FOREACH t IN ARRAY '{pg_extension,pg_class,pg_proc,pg_namespace,pg_depend,pg_replication_slots}'/;
$in_schema =~ s/,event,anyelement/,anyelement/;
$node->safe_psql('hostile_schema', "CREATE SCHEMA event_store;\n" . $in_schema, extra_params => [ '-U', 'mallory' ]);
cmp_ok($node->safe_psql('hostile_schema', q{SET search_path = pg_catalog;
	SELECT sum(n) FROM event_store.planted}), '>', 3000, 'mallory planted her look-alikes in her schema event_store');
my ($rc, $out, $err) = $node->psql('hostile_schema', q{\set VERBOSITY verbose
CREATE EXTENSION event_store});
like($err, qr/VE007/, 'CREATE EXTENSION into mallory\'s pre-made schema is refused (VE007)');
is(traces('hostile_schema', 'event_store'), '0 rows, 0 steps',
	'and none of the look-alikes in it ran, though the 0.1.0 script ran as a superuser before the refusal');

# none of it in the server log either
my $log = slurp_file($node->logfile);

# the control: the traps work -- an unqualified name under the hostile
# search_path walks into them (the aggregate, an operator, a domain, a
# table's read policy, its trigger)
$node->safe_psql('hostile_new', q{
	SELECT count(*) FROM event_store.events;
	SELECT 1 FROM event_store.events WHERE stream_id = 'x';
	SELECT '{}'::jsonb;
}, extra_params => [ '-U', 'app_user' ]);
$node->safe_psql('hostile_new', q{SELECT count(*) FROM events; INSERT INTO events (x) VALUES (1)},
	extra_params => [ '-U', 'app_user' ]);
like(traces('hostile_new'), qr/^\d+ rows, \d+ steps: .*aggregate count\(\*\).*domain jsonb.*operator text = text.*read of table events.*trigger on events/,
	'control: unqualified names under the hostile search_path do run the planted objects, and leave their traces');
my @ran = $log =~ /ES-TRACE: ([^\n]*) ran/g;
is(scalar @ran, 0, 'no trace in the server log') or diag(join("\n", @ran[ 0 .. ($#ran < 19 ? $#ran : 19) ]));
note sprintf('hostile install: %.0f s', time - $t0);

$node->stop;
done_testing();
