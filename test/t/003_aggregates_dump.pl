# pg_dump and restore keep the aggregate definitions (event_store.aggregates is
# registered with pg_extension_config_dump) but not the snapshots (derived
# data); after the restore, loads give the same states and write snapshots
# again, and redefinition still invalidates.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('aggdump');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'event_store'");
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('src', q{
	CREATE EXTENSION event_store CASCADE;
	CREATE SCHEMA app;
	CREATE FUNCTION app.balance(state jsonb, e event_store.event) RETURNS jsonb LANGUAGE sql AS $$
	  SELECT jsonb_build_object('balance', (state->>'balance')::int
	    + CASE e.event_type WHEN 'Deposited' THEN (e.data->>'amount')::int ELSE -(e.data->>'amount')::int END) $$;
	SELECT event_store.define_aggregate('account', 'app.balance(jsonb, event_store.event)', '{"balance": 0}', 10);
	SELECT event_store.define_aggregate('account', 'app.balance(jsonb, event_store.event)', '{"balance": 0}', 10);
	SELECT event_store.append_events('account-1', (SELECT jsonb_agg(jsonb_build_object('type', 'Deposited',
	         'data', jsonb_build_object('amount', i)) ORDER BY i) FROM generate_series(1, 25) i));
	SELECT * FROM event_store.load_aggregate('account-1', 'account');
});

my $load = q{SELECT version || ' ' || state::text FROM event_store.load_aggregate('account-1', 'account')};
my $defs = q{SELECT string_agg(name || ' ' || reducer || ' ' || initial_state::text || ' ' || coalesce(snapshot_every::text, '-') || ' ' || generation, ';') FROM event_store.aggregates};
my $state = $node->safe_psql('src', $load);
is($state, '25 {"balance": 325}', 'state before the dump');
is($node->safe_psql('src', 'SELECT count(*) FROM event_store.snapshots'), '1', 'a snapshot before the dump');
my $defs_before = $node->safe_psql('src', $defs);

my $dir = PostgreSQL::Test::Utils::tempdir;
command_ok([ 'pg_dump', '-h', $node->host, '-p', $node->port, '-Fc', '-f', "$dir/src.dump", 'src' ], 'pg_dump -Fc');
$node->safe_psql('postgres', 'CREATE DATABASE dst');
command_ok([ 'pg_restore', '-h', $node->host, '-p', $node->port, '--exit-on-error', '-d', 'dst', "$dir/src.dump" ], 'pg_restore');

is($node->safe_psql('dst', $defs), $defs_before, 'aggregate definitions (reducer, generation) survive the dump');
is($node->safe_psql('dst', 'SELECT count(*) FROM event_store.snapshots'), '0', 'snapshots are not dumped');
is($node->safe_psql('dst', $load), $state, 'same state after the restore (full replay)');
is($node->safe_psql('dst', 'SELECT version FROM event_store.snapshots'), '25', 'the load wrote a snapshot again');
$node->safe_psql('dst', q{SELECT event_store.define_aggregate('account', 'app.balance(jsonb, event_store.event)', '{"balance": 1000}', 10)});
is($node->safe_psql('dst', $load), '25 {"balance": 1325}', 'redefinition after the restore invalidates the snapshot');

$node->stop;
done_testing();
