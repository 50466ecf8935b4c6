# Invariant 4: a batch is all or nothing, and an acknowledged commit survives
# a crash (kill -9 of the postmaster in the middle of a stream of appends).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'event_store'");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION event_store CASCADE');

# One client appends 10-event batches to 4 streams, one transaction each, and
# prints "ack N" once the commit of batch N has returned.
my $script = '';
for my $n (1 .. 3000)
{
	my $stream = 'crash-' . ($n % 4);
	$script .= "SELECT event_store.append_events('$stream', (SELECT jsonb_agg(jsonb_build_object('type', 'E', 'data', jsonb_build_object('batch', $n, 'k', k))) FROM generate_series(1, 10) k)) \\gset\n";
	$script .= "\\echo ack $n\n";
}
my $file = PostgreSQL::Test::Utils::tempdir . '/appends.sql';
open(my $fh, '>', $file) or die "could not write $file: $!";
print $fh $script;
close($fh);
my ($stdout, $stderr) = ('', '');
my $client = IPC::Run::start(
	[ 'psql', '-X', '-q', '-h', $node->host, '-p', $node->port, '-d', 'postgres', '-f', $file ],
	'>', \$stdout, '2>', \$stderr);

# wait for some acknowledgements, then crash
my $deadline = time + 120;
while (time < $deadline)
{
	$client->pump_nb;
	my @acks = $stdout =~ /^ack (\d+)$/mg;
	last if @acks >= 200;
	select(undef, undef, undef, 0.02);
}
# every server process, so that we can wait for them all to be gone
my @pids = split /\n/, $node->safe_psql('postgres', 'SELECT pid FROM pg_stat_activity');
push @pids, $node->{_pid};
$node->kill9;
eval { $client->finish; };    # psql exits: its connection is gone
my @acked = $stdout =~ /^ack (\d+)$/mg;
cmp_ok(scalar @acked, '>=', 200, 'client acknowledged batches before the crash');

# the killed postmaster's processes notice its death and exit; start again once they have
# (pg_ctl takes even a zombie for a running postmaster: wait until it is reaped)
for (1 .. 600)
{
	last unless grep { kill(0, $_) } @pids;
	select(undef, undef, undef, 0.1);
}
$node->start;

# every acknowledged batch is there, whole
my $missing = $node->safe_psql('postgres', sprintf(q{
	SELECT count(*) FROM unnest('{%s}'::int[]) a(n)
	 WHERE (SELECT count(*) FROM event_store.events WHERE (data->>'batch')::int = a.n) <> 10},
	join(',', @acked)));
is($missing, '0', 'every acknowledged batch survived the crash, whole');

# no batch is torn: each stored batch has all its 10 events
my $torn = $node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT data->>'batch', count(*) c FROM event_store.events GROUP BY 1) b WHERE c <> 10});
is($torn, '0', 'no batch is half-written');

# every stream is 1..n with no gap and no duplicate, a batch in consecutive versions
my $gaps = $node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT stream_id, count(*) n, max(stream_version) m, count(DISTINCT stream_version) d
	                        FROM event_store.events GROUP BY stream_id) s WHERE n <> m OR d <> n});
is($gaps, '0', 'versions are 1..n in every stream');
my $split = $node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT data->>'batch', max(stream_version) - min(stream_version) span
	                        FROM event_store.events GROUP BY 1) b WHERE span <> 9});
is($split, '0', 'each batch occupies consecutive versions');

# and the store goes on
my $before = $node->safe_psql('postgres', q{SELECT event_store.stream_version('crash-0')});
is($node->safe_psql('postgres', qq{SELECT event_store.append('crash-0', 'After', '{}', expected_version => $before)}),
	$before + 1, 'appends continue after recovery');

$node->stop;
done_testing();
