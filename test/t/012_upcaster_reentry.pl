# An upcaster that reads events which need the same upcaster (found by the
# bad-input generator of 011_bad_input, issue 12, item 3).
#
# An upcaster may read the log -- e.g. copy a field from the event another
# event refers to -- and the events it reads are upcast too, by the same
# step if they are of the same type and version: the step's function runs
# inside itself.  That must give the same result whatever the language of
# the function.  Postgres keeps a SQL function's execution state in its
# FmgrInfo, so the nested call must not use the FmgrInfo of the call in
# progress.  Here the same upcaster, in SQL and in PL/pgSQL, over the same
# two events: the referring one is upcast with the name of the one it refers
# to.  Also through the projections and aggregates (every read path upcasts).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('upcaster_reentry');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'event_store'\nlog_statement = none\n");
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION event_store;
	-- version 1 -> 2: an event that refers to another gets the other's name
	CREATE FUNCTION ref_sql(data jsonb) RETURNS jsonb LANGUAGE sql AS $$
	  SELECT CASE WHEN data ? 'ref'
	              THEN data || jsonb_build_object('ref_name', (SELECT r.data->>'name' FROM event_store.read_stream(data->>'ref') r LIMIT 1))
	              ELSE data || '{"v2": true}' END $$;
	CREATE FUNCTION ref_plpgsql(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
	  RETURN CASE WHEN data ? 'ref'
	              THEN data || jsonb_build_object('ref_name', (SELECT r.data->>'name' FROM event_store.read_stream(data->>'ref') r LIMIT 1))
	              ELSE data || '{"v2": true}' END;
	END $$;
	SELECT event_store.append('sql-1', 'SqlItem', '{"name": "first"}');
	SELECT event_store.append('sql-2', 'SqlItem', '{"name": "second", "ref": "sql-1"}');
	SELECT event_store.add_upcaster('SqlItem', 1, 'ref_sql(jsonb)');
	SELECT event_store.append('plpgsql-1', 'PlItem', '{"name": "first"}');
	SELECT event_store.append('plpgsql-2', 'PlItem', '{"name": "second", "ref": "plpgsql-1"}');
	SELECT event_store.add_upcaster('PlItem', 1, 'ref_plpgsql(jsonb)');
	CREATE FUNCTION names(state jsonb, e event_store.event) RETURNS jsonb LANGUAGE sql
	  AS $$ SELECT state || jsonb_build_object(e.data->>'name', e.data->>'ref_name') $$;
	SELECT event_store.define_aggregate('names', 'names(jsonb, event_store.event)', '{}', 0);
});

for my $lang ('plpgsql', 'sql')
{
	my ($rc, $out, $err) = $node->psql('postgres', qq{SELECT data FROM event_store.read_stream('$lang-2')});
	is($out, '{"ref": "' . $lang . '-1", "name": "second", "ref_name": "first"}',
		"read_stream: an upcaster in $lang that reads an event needing itself upcasts both")
	  or diag($err);
	($rc, $out, $err) = $node->psql('postgres', qq{SELECT state FROM event_store.load_aggregate('$lang-2', 'names')});
	is($out, '{"second": "first"}', "load_aggregate: the same in $lang") or diag($err);
}

$node->stop;
done_testing();
