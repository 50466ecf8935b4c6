# pg_dump and restore keep every event intact, byte for byte, also when the
# table's physical order is not version order (vacuum reused the space of a
# rolled-back append), and appends continue after the restore.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'event_store'");
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('src', q{
	CREATE EXTENSION event_store CASCADE;
	BEGIN;
	SELECT event_store.append('inv-1', 'RolledBack', jsonb_build_object('pad', repeat('x', 200)));
	ROLLBACK;
	SELECT event_store.append('inv-1', 'First', '{}');
	VACUUM event_store.events;
	SELECT event_store.append('inv-1', 'Second', '{}');
	SELECT event_store.append('account-101', 'AccountCreated', '{"owner": "Alice"}', '{"correlation_id": "c-1"}');
	SELECT event_store.append('account-101', 'Deposited', '{"amount": 50}', schema_version => 2);
	SELECT event_store.append_events('big-1', (SELECT jsonb_agg(jsonb_build_object('type', 'T', 'data', jsonb_build_object('i', i))) FROM generate_series(1, 2000) i));
	SELECT event_store.append('large-1', 'Blob', jsonb_build_object('s', repeat('y', 300000)));
});

# the case the dump must survive: version 2 stored physically before version 1
my $physical = $node->safe_psql('src',
	q{SELECT string_agg(stream_version::text, ' ' ORDER BY ctid) FROM event_store.events WHERE stream_id = 'inv-1'});
is($physical, '2 1', 'physical order differs from version order');

my $fingerprint = q{SELECT count(*) || ' ' || md5(string_agg(e::text, ',' ORDER BY stream_id, stream_version)) FROM event_store.events e};
my $before = $node->safe_psql('src', $fingerprint);

my $dir = PostgreSQL::Test::Utils::tempdir;
my $port = $node->port;
my $host = $node->host;

# custom format through pg_restore
command_ok([ 'pg_dump', '-h', $host, '-p', $port, '-Fc', '-f', "$dir/src.dump", 'src' ], 'pg_dump -Fc');
$node->safe_psql('postgres', 'CREATE DATABASE dst_custom');
command_ok([ 'pg_restore', '-h', $host, '-p', $port, '--exit-on-error', '-d', 'dst_custom', "$dir/src.dump" ], 'pg_restore');
is($node->safe_psql('dst_custom', $fingerprint), $before, 'custom-format restore keeps every event');

# plain format through psql
command_ok([ 'pg_dump', '-h', $host, '-p', $port, '-f', "$dir/src.sql", 'src' ], 'pg_dump plain');
$node->safe_psql('postgres', 'CREATE DATABASE dst_plain');
command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', $host, '-p', $port, '-d', 'dst_plain', '-f', "$dir/src.sql" ], 'plain restore');
is($node->safe_psql('dst_plain', $fingerprint), $before, 'plain restore keeps every event');

# the restored store works: versions continue, the append-only guard holds
is($node->safe_psql('dst_custom', q{SELECT event_store.append('account-101', 'Withdrawn', '{"amount": 20}', expected_version => 2)}),
	'3', 'appends continue after the restore');
my ($rc, $out, $err) = $node->psql('dst_custom', 'DELETE FROM event_store.events');
like($err, qr/DELETE on event_store.events is not allowed/, 'restored log is append-only');
is($node->safe_psql('dst_plain', q{SELECT string_agg(event_type, ' ' ORDER BY stream_version) FROM event_store.read_stream('inv-1')}),
	'First Second', 'read_stream after restore');

$node->stop;
done_testing();
