# Start-up checks (issue 12, item 7): a server started with settings that
# put committed events at risk, or without the capacity the pipeline needs,
# says so in its log when the launcher starts, and event_store.health shows
# each check; with good settings every check is ok and the log is quiet.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('health');
$node->init(allows_streaming => 'logical');
# the launcher, one pipeline worker and two projection workers need 4
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_store'
fsync = off
full_page_writes = off
synchronous_commit = off
max_worker_processes = 3
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION event_store');

my $checks = q{SELECT string_agg("check" || '=' || status, ' ' ORDER BY "check") FROM event_store.health};
is($node->safe_psql('postgres', $checks),
	'fsync=warning full_page_writes=warning max_replication_slots=ok max_slot_wal_keep_size=warning '
	  . 'max_worker_processes=warning shared_preload_libraries=ok synchronous_commit=warning wal_level=ok',
	'the health view flags each risky setting and the missing capacity');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM event_store.health WHERE status = 'warning' AND detail IS NULL}),
	'0', 'every warning says why it matters');
like($node->safe_psql('postgres', q{SELECT value FROM event_store.health WHERE "check" = 'max_worker_processes'}),
	qr/^3 \(event_store needs 4 for 1 database\)$/, 'the capacity check says what is needed');

my $log = slurp_file($node->logfile);
for my $s ('fsync = off', 'full_page_writes = off', 'synchronous_commit = off', 'max_slot_wal_keep_size = -1')
{
	like($log, qr/WARNING:  event_store: \Q$s\E/, "the launcher logs $s at start-up");
}

# the view is for administrators: PUBLIC is not granted it
$node->safe_psql('postgres', 'CREATE ROLE stranger LOGIN');
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT * FROM event_store.health', extra_params => ['-U', 'stranger']);
like($err, qr/permission denied/, 'PUBLIC may not read the health view');

# good settings: every check is ok, and the launcher says nothing
$node->append_conf('postgresql.conf', q{
fsync = on
full_page_writes = on
synchronous_commit = on
max_worker_processes = 16
max_slot_wal_keep_size = '1GB'
});
my $offset = -s $node->logfile;
$node->restart;
is($node->safe_psql('postgres', q{SELECT count(*) FROM event_store.health WHERE status <> 'ok'}),
	'0', 'with good settings every check is ok');
# the launcher has run its checks once the pipeline worker is up
ok($node->poll_query_until('postgres', q{SELECT worker_running FROM event_store.pipeline_status}),
	'the pipeline runs');
unlike(substr(slurp_file($node->logfile), $offset), qr/WARNING:  event_store: /,
	'and the log is quiet');

done_testing();
