# pg_upgrade keeps the event store whole (issue 12, item 6): the events, the
# global log with every position, a projection that resumes where it was,
# and a consumer's stored position.  The upgrade's servers run in binary
# upgrade mode, where the extension starts no worker (a slot or a position
# written then would be lost, or would break the upgrade); the new cluster
# has no replication slot, and its pipeline makes one and goes on.  Both
# clusters are PostgreSQL 15 (the same binaries), as an upgrade between
# minor versions or a pg_upgrade-based migration is.
use strict;
use warnings;
use File::Temp qw(tempdir);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $conf = "shared_preload_libraries = 'event_store'\nmax_worker_processes = 16\n";
my $old = PostgreSQL::Test::Cluster->new('old');
$old->init(allows_streaming => 'logical');
$old->append_conf('postgresql.conf', $conf);
$old->start;
$old->safe_psql('postgres', q{
	CREATE EXTENSION event_store CASCADE;
	SELECT event_store.append('account-' || (i % 7), 'Deposited', jsonb_build_object('amount', i)) FROM generate_series(1, 500) i;
	CREATE TABLE totals (stream_id text PRIMARY KEY, total numeric NOT NULL);
	CREATE FUNCTION add_total(e event_store.event) RETURNS void LANGUAGE sql AS $$
	  INSERT INTO totals VALUES (e.stream_id, (e.data->>'amount')::numeric)
	  ON CONFLICT (stream_id) DO UPDATE SET total = totals.total + EXCLUDED.total $$;
	SELECT event_store.create_projection('totals', 'add_total(event_store.event)');
});
is($old->safe_psql('postgres', q{SELECT event_store.wait_for_projection('totals', '60 s')}), 't', 'the projection caught up');
$old->safe_psql('postgres', q{
	CREATE TABLE consumer (position bigint NOT NULL);
	INSERT INTO consumer VALUES (250);
});
my $log = q{SELECT count(*) || ' ' || md5(string_agg(global_position || ':' || stream_id || ':' || stream_version, ',' ORDER BY global_position)) FROM event_store.read_all(0, 1000000)};
my $events = q{SELECT count(*) || ' ' || md5(string_agg(e::text, ',' ORDER BY stream_id, stream_version)) FROM event_store.events e};
my $old_log = $old->safe_psql('postgres', $log);
my $old_events = $old->safe_psql('postgres', $events);
my $old_totals = $old->safe_psql('postgres', q{SELECT string_agg(stream_id || '=' || total, ' ' ORDER BY stream_id) FROM totals});
$old->stop;

my $new = PostgreSQL::Test::Cluster->new('new');
$new->init(allows_streaming => 'logical');
$new->append_conf('postgresql.conf', $conf);

my $bindir = $old->config_data('--bindir');
my $work = tempdir(CLEANUP => 1);
chdir $work;
command_ok([ 'pg_upgrade', '--no-sync', '--retain', '-d', $old->data_dir, '-D', $new->data_dir,
	'-b', $bindir, '-B', $bindir, '-s', $new->host, '-p', $old->port, '-P', $new->port ],
	'pg_upgrade');

$new->start;
is($new->safe_psql('postgres', $events), $old_events, 'every event is there');
is($new->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'the pipeline runs after the upgrade');
is($new->safe_psql('postgres', $log), $old_log, 'read_all returns every event at its old position');
is($new->safe_psql('postgres', q{SELECT count(*) FROM event_store.read_all((SELECT position FROM consumer), 1000000)}),
	'250', 'a consumer resuming from its stored position gets exactly what it had not read');
is($new->safe_psql('postgres', q{SELECT string_agg(name || ' ' || state, ', ') FROM event_store.projection_status}),
	'totals live', 'the projection is live, not restored');
$new->safe_psql('postgres', q{SELECT event_store.append('account-1', 'Deposited', '{"amount": 1000}')});
is($new->safe_psql('postgres', q{SELECT event_store.wait_for_projection('totals', '60 s')}), 't', 'a new append is projected');
is($new->safe_psql('postgres', q{SELECT total FROM totals WHERE stream_id = 'account-1'}),
	$new->safe_psql('postgres', q{SELECT sum((data->>'amount')::numeric) FROM event_store.events WHERE stream_id = 'account-1'}),
	'once: the read model equals a fresh fold');
is($new->safe_psql('postgres', q{SELECT max(global_position) FROM event_store.global_log}), '501', 'the new event has the next position');
my $upgrade_logs = join('', map { slurp_file($_) } glob($new->data_dir . '/pg_upgrade_output.d/*/log/pg_upgrade_server.log'));
like($upgrade_logs, qr/database system is ready/, 'the upgrade servers logged');
unlike($upgrade_logs, qr/event_store pipeline started for database|background worker "event_store/, 'no worker of the extension ran in binary upgrade mode');

$new->stop;
done_testing();
