# The log stays append-only on a logical replica.  The logical-replication
# apply worker fires row triggers only (never statement triggers), so a
# statement-level guard alone let a replicated UPDATE or DELETE through; the
# row-level ALWAYS guard refuses it (VE003) and the subscriber's events stay
# as they were.  Appends replicate as before, through the versioning trigger.
# Publisher and subscriber are two databases of one cluster (the slot is
# made beforehand, as CREATE SUBSCRIPTION within one cluster requires).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('replica');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', "wal_retrieve_retry_interval = '200ms'");
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE pub; CREATE DATABASE sub');
for my $db ('pub', 'sub')
{
	$node->safe_psql($db, 'CREATE EXTENSION event_store');
}
$node->safe_psql('pub', q{
	SELECT event_store.append('acct-1', 'Opened', '{"owner": "Alice"}');
	SELECT event_store.append('acct-1', 'Deposited', '{"amount": 50}');
	CREATE PUBLICATION events_pub FOR TABLE event_store.events;
	SELECT pg_create_logical_replication_slot('events_sub', 'pgoutput');
});
my $connstr = $node->connstr . ' dbname=pub';
$node->safe_psql('sub', qq{
	CREATE SUBSCRIPTION events_sub CONNECTION '$connstr' PUBLICATION events_pub
	  WITH (create_slot = false, slot_name = 'events_sub');
});
my $log = q{SELECT string_agg(stream_version || ':' || event_type || ':' || data::text, ' ' ORDER BY stream_version) FROM event_store.events WHERE stream_id = 'acct-1'};
ok($node->poll_query_until('sub', "SELECT ($log) = '1:Opened:{\"owner\": \"Alice\"} 2:Deposited:{\"amount\": 50}'"),
	'the initial copy replicates the events');
$node->safe_psql('pub', q{SELECT event_store.append('acct-1', 'Withdrawn', '{"amount": 20}')});
ok($node->poll_query_until('sub', "SELECT count(*) = 3 FROM event_store.events WHERE stream_id = 'acct-1'"),
	'an append replicates');
my $before = $node->safe_psql('sub', $log);

# On the publisher, the documented privileged way around the guards (the
# owner disabling them); the change reaches the subscriber as a row change.
my $offset = -s $node->logfile;
$node->safe_psql('pub', q{
	ALTER TABLE event_store.events DISABLE TRIGGER USER;
	UPDATE event_store.events SET data = '{"amount": 5000}' WHERE stream_id = 'acct-1' AND stream_version = 2;
});
# wait until the apply worker was refused, or applied the change
my $refused = 0;
for (my $i = 0; $i < 600; $i++)
{
	$refused = slurp_file($node->logfile, $offset) =~ /UPDATE on event_store\.events is not allowed/;
	last if $refused || $node->safe_psql('sub', $log) ne $before;
	usleep(100_000);
}
ok($refused, 'the apply worker is refused the replicated UPDATE');
is($node->safe_psql('sub', $log), $before, 'the subscriber\'s events are unchanged');

$node->safe_psql('sub', q{ALTER SUBSCRIPTION events_sub DISABLE});
$node->stop;
done_testing();
