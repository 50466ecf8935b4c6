# Without shared_preload_libraries or wal_level = logical, the functions that
# need the pipeline refuse with 55000 and a hint naming the setting; the
# event log itself works.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('prereq');
$node->init(allows_streaming => 'logical');    # wal_level = logical, not preloaded
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION event_store CASCADE');
is($node->safe_psql('postgres', q{SELECT event_store.append('pre-1', 'A', '{}')}), '1',
	'the event log works without preloading');
my ($ret, $out, $err) = $node->psql('postgres', q{\set VERBOSITY verbose
SELECT * FROM event_store.read_all()});
like($err, qr/55000: the event_store pipeline is not running because event_store is not preloaded/,
	'read_all without preloading: 55000');
like($err, qr/HINT:  Add event_store to shared_preload_libraries/, 'and the hint names the setting');
($ret, $out, $err) = $node->psql('postgres', q{SELECT event_store.wait_for_pipeline()});
like($err, qr/not preloaded/, 'wait_for_pipeline too');
($ret, $out, $err) = $node->psql('postgres', q{SELECT * FROM event_store.pipeline_status});
like($err, qr/not preloaded/, 'and pipeline_status');
isnt($node->safe_psql('postgres', q{SELECT event_store.publish('t', '{}')}), '',
	'publish needs only wal_level = logical');

$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'event_store'
wal_level = replica
});
$node->restart;
($ret, $out, $err) = $node->psql('postgres', q{\set VERBOSITY verbose
SELECT * FROM event_store.read_all()});
like($err, qr/55000: the event_store pipeline needs wal_level = logical/, 'read_all with wal_level = replica: 55000');
like($err, qr/HINT:  Set wal_level = logical in postgresql.conf/, 'and the hint names the setting');
($ret, $out, $err) = $node->psql('postgres', q{\set VERBOSITY verbose
SELECT event_store.publish('t', '{}')});
like($err, qr/55000: publish needs wal_level = logical/, 'publish with wal_level = replica: 55000');
is($node->safe_psql('postgres', q{SELECT event_store.append('pre-1', 'B', '{}')}), '2',
	'the event log still works');
unlike(slurp_file($node->logfile), qr/event_store launcher/, 'no launcher without wal_level = logical');

# the pipeline's settings in postgresql.conf are honoured from the start
$node->append_conf('postgresql.conf', qq{
wal_level = logical
event_store.pipeline_enabled = off
});
$node->restart;
is($node->safe_psql('postgres', q{SHOW event_store.pipeline_enabled}), 'off', 'pipeline_enabled = off from postgresql.conf');
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('2 s')}), 'f', 'no worker orders events then');
is($node->safe_psql('postgres', q{SELECT worker_running FROM event_store.pipeline_status}), 'f', 'pipeline_status says so');
$node->safe_psql('postgres', q{ALTER SYSTEM SET event_store.pipeline_enabled = on});
$node->reload;
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'enabled: the worker starts');
is($node->safe_psql('postgres', q{SELECT string_agg(event_type, ',' ORDER BY global_position) FROM event_store.read_all()}),
	'A,B', 'and orders the events appended before, from the event table');
$node->stop;
done_testing();
