# The decoding pipeline end to end: pg_recvlogical with the event_store
# plugin; the global log after kill -9 in the middle of a stream of appends
# (invariant 5: every committed event once, in commit order); a slot
# invalidated while the worker was stopped, recovered by a rebuild.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('pipeline');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'event_store'
max_worker_processes = 16
log_temp_files = 0
});
# servers that restrict output plugins (output_plugin_libraries) must allow ours for pg_recvlogical
$node->append_conf('postgresql.conf', "output_plugin_libraries = 'pgoutput, test_decoding, event_store'\n")
  if `postgres --describe-config` =~ /^output_plugin_libraries\t/m;
$node->start;

# Two psql clients running the script in database $db, once the first has
# acknowledged 300 of its appends (the script echoes "ack <n>" after each):
# [ harness, \stdout, \stderr ] each.
sub start_appenders
{
	my ($db, $name, $script) = @_;
	my $file = PostgreSQL::Test::Utils::tempdir . "/$name.sql";
	open(my $fh, '>', $file) or die "could not write $file: $!";
	print $fh $script;
	close($fh);
	my @clients;
	for my $c (1 .. 2)
	{
		my ($stdout, $stderr) = ('', '');
		push @clients, [ IPC::Run::start(
			[ 'psql', '-X', '-q', '-h', $node->host, '-p', $node->port, '-d', $db, '-f', $file ],
			'>', \$stdout, '2>', \$stderr), \$stdout, \$stderr ];
	}
	my $deadline = time + 120;
	while (time < $deadline)
	{
		$_->[0]->pump_nb for @clients;
		my @acks = ${ $clients[0][1] } =~ /^ack (\d+)$/mg;
		last if @acks >= 300;
		select(undef, undef, undef, 0.02);
	}
	return @clients;
}
$node->safe_psql('postgres', 'CREATE EXTENSION event_store CASCADE');
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('60 s')}), 't',
	'the pipeline worker starts for a database that creates the extension');

# --- pg_recvlogical -P event_store --------------------------------------
my $connstr = $node->connstr('postgres');
command_ok([ 'pg_recvlogical', '-d', $connstr, '--slot', 'recv', '--create-slot', '-P', 'event_store' ],
	'pg_recvlogical creates a slot with the event_store plugin');
$node->safe_psql('postgres', q{
	CREATE TABLE not_events (x int);
	INSERT INTO not_events VALUES (1);
	SELECT event_store.append('recv_acct-' || (i % 3), 'Deposited', jsonb_build_object('i', i, 's', repeat('x', i)))
	  FROM generate_series(1, 20) i;
	SELECT event_store.append_events('recv_order-1', '[{"type": "Placed", "data": {"n": 1}}, {"type": "Paid", "data": {"n": 2}}]');
	BEGIN; SELECT event_store.append('recv_acct-0', 'RolledBack', '{}'); ROLLBACK;
	SELECT event_store.publish('orders', '{"order": 1}', 'recv_order-1');
	INSERT INTO not_events VALUES (2);
});
my $endpos = $node->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
my $outfile = PostgreSQL::Test::Utils::tempdir . '/recv.json';
command_ok([ 'pg_recvlogical', '-d', $connstr, '--slot', 'recv', '--start', '--endpos', $endpos,
		'--no-loop', '-f', $outfile, '-o', 'include-messages=true' ],
	'pg_recvlogical streams the changes');
my @lines = grep { /\S/ } split /\n/, slurp_file($outfile);
is(scalar @lines, 23, 'one document per event and per published message, nothing else');
$node->safe_psql('postgres', 'CREATE TABLE recv (n serial, doc jsonb)');
for my $line (@lines)
{
	$node->safe_psql('postgres', "INSERT INTO recv (doc) VALUES (\$json\$$line\$json\$)");
}
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM recv r JOIN event_store.events e
	    ON e.stream_id = r.doc->>'stream_id' AND e.stream_version = (r.doc->>'stream_version')::bigint
	 WHERE r.doc->>'kind' = 'event' AND e.event_id = (r.doc->>'event_id')::uuid
	   AND e.event_type = r.doc->>'event_type' AND e.data = r.doc->'data'
	   AND e.metadata = r.doc->'metadata' AND e.recorded_at = (r.doc->>'recorded_at')::timestamptz}),
	'22', 'every streamed event is the stored event, field by field');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM event_store.events e
	 WHERE NOT EXISTS (SELECT 1 FROM recv r WHERE r.doc->>'event_id' = e.event_id::text)}),
	'0', 'every stored event was streamed');
is($node->safe_psql('postgres', q{
	SELECT string_agg(r.doc->>'kind', ',' ORDER BY r.n) FILTER (WHERE r.n > 20) FROM recv r}),
	'event,event,message', 'in commit order, the published message last');
is($node->safe_psql('postgres', q{
	SELECT bool_and(ok) FROM (SELECT (r.doc->>'commit_lsn')::pg_lsn >= lag((r.doc->>'commit_lsn')::pg_lsn)
	                                  OVER (ORDER BY r.n) IS NOT FALSE AS ok FROM recv r) s}),
	't', 'commit LSNs never decrease along the stream');
$node->safe_psql('postgres', q{SELECT pg_drop_replication_slot('recv')});

# --- a 100,000-event transaction and a rolled-back 50,000-event one --------
my $pipeline_pid = $node->safe_psql('postgres', q{
	SELECT event_store.wait_for_pipeline('60 s');
	SELECT pid FROM pg_stat_activity WHERE backend_type = 'event_store pipeline'});
$pipeline_pid = (split /\n/, $pipeline_pid)[1];
$node->safe_psql('postgres', q{
	SELECT event_store.append_events('big-1', (SELECT jsonb_agg(jsonb_build_object('type', 'Big', 'data', jsonb_build_object('i', i)))
	                                             FROM generate_series(1, 100000) i))});
$node->psql('postgres', q{
	BEGIN;
	SELECT event_store.append_events('big-2', (SELECT jsonb_agg(jsonb_build_object('type', 'Big', 'data', jsonb_build_object('i', i)))
	                                             FROM generate_series(1, 50000) i));
	ROLLBACK;});
$node->safe_psql('postgres', q{SELECT event_store.append('big-3', 'After', '{}')});
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('120 s')}), 't', 'a 100,000-event transaction is ordered');
is($node->safe_psql('postgres', q{
	SELECT count(*) || ' ' || (max(global_position) - min(global_position) + 1) || ' ' ||
	       bool_and(stream_version = global_position - m.first + 1)
	  FROM event_store.read_all(0, 200000, categories => '{big}') r,
	       (SELECT min(global_position) AS first FROM event_store.global_log WHERE stream_id = 'big-1') m
	 WHERE r.stream_id = 'big-1'}),
	'100000 100000 true', 'its events have consecutive positions, in version order');
is($node->safe_psql('postgres', q{
	SELECT string_agg(DISTINCT stream_id, ',') FROM event_store.read_all(0, 200000, categories => '{big}')}),
	'big-1,big-3', 'the rolled-back one is not in the log');
# the worker holds at most 10,000 events in memory: the rest went to a temporary file
ok(slurp_file($node->logfile) =~ /\[$pipeline_pid\] LOG:  temporary file: path "[^"]+", size [1-9]/,
	'the worker spilled the large transaction\'s events to a temporary file (bounded memory)');
# the running worker reports its writes, so that autovacuum and autoanalyze
# look after the global log (and its visibility map lets index-only scans
# skip the heap); a worker that reported only at its exit left them blind
ok($node->poll_query_until('postgres', qq{
	SELECT n_tup_ins >= (SELECT count(*) FROM event_store.global_log)
	  FROM pg_stat_user_tables WHERE relid = 'event_store.global_log'::regclass
	   AND (SELECT pid FROM pg_stat_activity WHERE backend_type = 'event_store pipeline'
	                                          AND datname = current_database()) = $pipeline_pid}),
	'the pipeline worker reports its inserts into the global log to the statistics while it runs');

# --- kill -9 in the middle of a stream of appends -----------------------
my $script = '';
for my $n (1 .. 4000)
{
	my $stream = 'crash-' . ($n % 7);
	if ($n % 10 == 0)
	{
		$script .= "SELECT event_store.append_events('$stream', '[{\"type\": \"B\", \"data\": {\"n\": $n}}, {\"type\": \"B\", \"data\": {\"n\": $n}}]') \\gset\n";
	}
	else
	{
		$script .= "SELECT event_store.append('$stream', 'A', '{\"n\": $n}') \\gset\n";
	}
	$script .= "\\echo ack $n\n";
}
my @clients = start_appenders('postgres', 'appends', $script);
my @pids = split /\n/, $node->safe_psql('postgres', 'SELECT pid FROM pg_stat_activity');
push @pids, $node->{_pid};
$node->kill9;
eval { $_->[0]->finish; } for @clients;
for (1 .. 600)
{
	last unless grep { kill(0, $_) } @pids;
	select(undef, undef, undef, 0.1);
}
$node->start;
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('60 s')}), 't',
	'the pipeline catches up after the crash');
my $check_log = sub {
	my ($what) = @_;
	is($node->safe_psql('postgres', q{
		SELECT count(*) FROM event_store.events e
		 WHERE NOT EXISTS (SELECT 1 FROM event_store.global_log g
		                    WHERE g.stream_id = e.stream_id AND g.stream_version = e.stream_version)}),
		'0', "$what: every committed event is in the global log");
	is($node->safe_psql('postgres', q{
		SELECT count(*) FROM event_store.global_log g
		 WHERE NOT EXISTS (SELECT 1 FROM event_store.events e
		                    WHERE g.stream_id = e.stream_id AND g.stream_version = e.stream_version)}),
		'0', "$what: nothing else is");
	is($node->safe_psql('postgres', q{
		SELECT count(*) = (SELECT count(*) FROM event_store.events)
		   AND count(*) = max(global_position) AND min(global_position) = 1
		  FROM event_store.read_all(0, 1000000)}),
		't', "$what: read_all returns each event once, positions 1..n with no gap");
	is($node->safe_psql('postgres', q{
		SELECT count(*) FROM (SELECT commit_lsn, lag(commit_lsn) OVER (ORDER BY global_position) prev
		                        FROM event_store.global_log WHERE commit_lsn <> '0/0') s
		 WHERE commit_lsn < prev}),
		'0', "$what: positions follow commit order");
	is($node->safe_psql('postgres', q{
		SELECT count(*) FROM (SELECT stream_id, stream_version,
		                             lag(stream_version) OVER (PARTITION BY stream_id ORDER BY global_position) prev
		                        FROM event_store.global_log) s
		 WHERE prev IS NOT NULL AND stream_version <> prev + 1}),
		'0', "$what: each stream's events in version order");
};
$check_log->('after kill -9');
cmp_ok($node->safe_psql('postgres', q{SELECT count(*) FROM event_store.events WHERE stream_id LIKE 'crash-%'}),
	'>=', 300, 'appends were committed before the crash');

# --- the worker stopped, the slot invalidated, the log recovered ----------
$node->safe_psql('postgres', q{ALTER SYSTEM SET event_store.pipeline_enabled = off});
$node->reload;
ok($node->poll_query_until('postgres',
	q{SELECT NOT worker_running FROM event_store.pipeline_status}), 'the worker stops when disabled');
$node->safe_psql('postgres', q{ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'});
$node->reload;
for my $i (1 .. 4)
{
	$node->safe_psql('postgres', qq{
		SELECT event_store.append('lost-' || (g % 5), 'WhileStopped', jsonb_build_object('round', $i, 'g', g))
		  FROM generate_series(1, 200) g;
		SELECT pg_switch_wal();});
}
$node->safe_psql('postgres', 'CHECKPOINT');
ok($node->poll_query_until('postgres',
	q{SELECT wal_status = 'lost' FROM pg_replication_slots WHERE slot_name LIKE 'event_store_%'}),
	'the slot is invalidated');
my $rebuilds = $node->safe_psql('postgres', q{SELECT rebuilds FROM event_store.pipeline_status});
$node->safe_psql('postgres', q{ALTER SYSTEM SET event_store.pipeline_enabled = on});
$node->safe_psql('postgres', q{ALTER SYSTEM SET max_slot_wal_keep_size = -1});
$node->reload;
ok($node->poll_query_until('postgres',
	q{SELECT worker_running AND slot_wal_status = 'reserved' FROM event_store.pipeline_status}),
	'the worker comes back with a new slot');
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'and catches up');
is($node->safe_psql('postgres', q{SELECT rebuilds > } . $rebuilds . q{ FROM event_store.pipeline_status}),
	't', 'the log was rebuilt from the event table');
like($node->safe_psql('postgres', q{SELECT last_error FROM event_store.pipeline_status}),
	qr/slot invalidated/, 'the invalidation is reported in pipeline_status');
$node->safe_psql('postgres', q{SELECT event_store.append('lost-0', 'AfterRecovery', '{}')});
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'new appends are ordered again');
$check_log->('after the rebuild');
is($node->safe_psql('postgres', q{
	SELECT event_type FROM event_store.read_all(0, 1000000) ORDER BY global_position DESC LIMIT 1}),
	'AfterRecovery', 'the newest event is last');
ok(slurp_file($node->logfile) =~ /replication slot "event_store_\d+" of the event_store pipeline was invalidated/,
	'the invalidation is logged');

# --- DROP EXTENSION and DROP DATABASE are not hindered by the worker --------
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION event_store CASCADE');
is($node->safe_psql('other', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'a second database gets its worker');
$node->safe_psql('other', 'DROP EXTENSION event_store');
ok($node->poll_query_until('postgres',
	q{SELECT count(*) = 0 FROM pg_replication_slots WHERE database = 'other'}),
	'a dropped extension drops its slot');
$node->safe_psql('other', 'CREATE EXTENSION event_store CASCADE');
is($node->safe_psql('other', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'created again: a worker again');
$node->safe_psql('other', q{SELECT event_store.append('o-1', 'A', '{}')});
$node->safe_psql('postgres', 'CREATE DATABASE other_copy TEMPLATE other');
pass('CREATE DATABASE from a template with a running worker succeeds');
$node->safe_psql('postgres', 'ALTER DATABASE other RENAME TO other2');
$node->safe_psql('postgres', 'ALTER DATABASE other2 RENAME TO other');
pass('ALTER DATABASE RENAME of a database with a running worker succeeds');
is($node->safe_psql('other', q{SELECT event_store.append('o-1', 'A', '{}'); SELECT event_store.wait_for_pipeline('60 s')}),
	"2\nt", 'its worker comes back');
is($node->safe_psql('other_copy', q{SELECT event_store.append('o-1', 'A', '{}'); SELECT event_store.wait_for_pipeline('60 s')}),
	"2\nt", 'and the copy gets a worker of its own');
is($node->safe_psql('other_copy', q{SELECT string_agg(stream_id || '@' || stream_version, ',' ORDER BY global_position) FROM event_store.read_all()}),
	'o-1@1,o-1@2', 'which orders the copied events too');

# --- nobody stops a database's workers by trying a command that fails --------
# (the commands that need a database alone stop its workers only once they are
# sure to run; a failed one gets them back at once)
my $worker = sub {
	$node->safe_psql('postgres', q{
		SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity
		 WHERE backend_type IN ('event_store pipeline', 'event_store projector') AND datname = 'other'});
};
my $pid = $worker->();
ok($pid =~ /^\d+$/, 'the worker of database other runs');
$node->safe_psql('postgres', 'CREATE ROLE nobody_in_particular LOGIN');
my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE other', extra_params => [ '-U', 'nobody_in_particular' ]);
like($err, qr/must be owner of database other/, 'a role without rights cannot drop the database');
is($worker->(), $pid, 'and its attempt did not stop the worker');
($rc, $out, $err) = $node->psql('postgres', 'CREATE DATABASE stolen TEMPLATE other', extra_params => [ '-U', 'nobody_in_particular' ]);
like($err, qr/permission denied to create database/, 'nor copy it');
is($worker->(), $pid, 'nor stop the worker that way');
($rc, $out, $err) = $node->psql('postgres', 'BEGIN; DROP DATABASE other');
like($err, qr/DROP DATABASE cannot run inside a transaction block/, 'DROP DATABASE in a transaction block fails');
is($worker->(), $pid, 'and does not stop the worker');
($rc, $out, $err) = $node->psql('postgres', 'ALTER DATABASE other RENAME TO postgres');
like($err, qr/already exists/, 'a rename to a name in use fails');
is($worker->(), $pid, 'and does not stop the worker');
# a command that stops the workers and then fails brings them back at once
my $blocker = $node->background_psql('other');
$blocker->query_safe('SELECT 1');
($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE other');
like($err, qr/is being accessed by other users/, 'DROP DATABASE fails while another session is connected');
$blocker->quit;
ok($node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'event_store pipeline' AND datname = 'other'}),
	'the worker it stopped is back');
is($node->safe_psql('other', q{SELECT event_store.append('o-1', 'A', '{}'); SELECT event_store.wait_for_pipeline('60 s')}),
	"3\nt", 'and orders again');

# --- DROP EXTENSION: rolled back, the workers come back; committed with the
# pipeline disabled, the slot and origin are dropped all the same ------------
$node->safe_psql('other', q{BEGIN; DROP EXTENSION event_store; ROLLBACK});
is($node->safe_psql('other', q{SELECT event_store.append('o-1', 'A', '{}'); SELECT event_store.wait_for_pipeline('60 s')}),
	"4\nt", 'a rolled-back DROP EXTENSION leaves a working pipeline');
$node->safe_psql('postgres', 'ALTER SYSTEM SET event_store.pipeline_enabled = off');
$node->reload;
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'event_store pipeline' AND datname = 'other'}),
	'the pipeline disabled, the worker stops');
$node->safe_psql('other', 'DROP EXTENSION event_store');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM pg_replication_slots WHERE database = 'other'}),
	'DROP EXTENSION with the pipeline disabled drops the slot all the same');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM pg_replication_origin WHERE roname = 'event_store_' || (SELECT oid FROM pg_database WHERE datname = 'other')}),
	'and the replication origin');
$node->safe_psql('postgres', 'ALTER SYSTEM SET event_store.pipeline_enabled = on');
$node->reload;
$node->safe_psql('other', 'CREATE EXTENSION event_store');
is($node->safe_psql('other', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'created again: a worker again');

# --- a committed transaction not visible yet gets no position until it is -----
# (invariant 5: with a synchronous standby that never answers, a commit waits
# after its commit record is flushed, invisible; a later one is visible.  The
# pipeline must not publish the later one's position first, or a reader who
# saw it would pass the earlier one for good.)
my $base = $node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('60 s'); SELECT max(global_position) FROM event_store.global_log});
$base = (split /\n/, $base)[1];
$node->safe_psql('postgres', q{ALTER SYSTEM SET synchronous_standby_names = 'nosuch'});
$node->reload;
my $sync = $node->background_psql('postgres', on_error_stop => 0);
$sync->query_until(qr/waiting/, q{
	\echo waiting
	SET synchronous_commit = on;
	SELECT event_store.append('sync-1', 'CommittedFirst', '{}');
});
ok($node->poll_query_until('postgres', q{SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event = 'SyncRep'}),
	'an append waits for the synchronous standby after its commit record');
$node->safe_psql('postgres', q{SET synchronous_commit = local; SELECT event_store.append('sync-2', 'CommittedSecond', '{}')});
is($node->safe_psql('postgres', q{SET synchronous_commit = local; SELECT event_store.wait_for_pipeline('2 s')}), 'f',
	'the pipeline does not pass the invisible transaction');
is($node->safe_psql('postgres', q{SELECT count(*) FROM event_store.global_log WHERE stream_id IN ('sync-1', 'sync-2')}), '0',
	'neither it nor the later one has a position while it is invisible');
is($node->safe_psql('postgres', qq{SELECT count(*) FROM event_store.read_all($base)}), '0', 'read_all returns neither');
$node->safe_psql('postgres', q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'});
$sync->quit;
$node->safe_psql('postgres', q{ALTER SYSTEM RESET synchronous_standby_names});
$node->reload;
is($node->safe_psql('postgres', qq{SELECT event_store.wait_for_pipeline('60 s'); SELECT string_agg(stream_id, ' ' ORDER BY global_position) FROM event_store.read_all($base)}),
	"t\nsync-1 sync-2", 'once visible, both are ordered, in commit order');

# --- a slot of the pipeline's name that the pipeline did not make -------------
$node->safe_psql('postgres', 'CREATE DATABASE squatted');
my $squatted_oid = $node->safe_psql('postgres', q{SELECT oid FROM pg_database WHERE datname = 'squatted'});
$node->safe_psql('squatted', qq{SELECT pg_create_logical_replication_slot('event_store_$squatted_oid', 'test_decoding')});
$node->safe_psql('squatted', 'CREATE EXTENSION event_store');
ok($node->poll_query_until('squatted', q{SELECT last_error LIKE '%was not made by the event_store pipeline%' FROM event_store.pipeline_status}),
	'a slot of the pipeline\'s name made with another plugin is refused, and pipeline_status says why');
$node->safe_psql('squatted', qq{SELECT pg_drop_replication_slot('event_store_$squatted_oid')});
is($node->safe_psql('squatted', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'once it is dropped, the pipeline makes its own');
is($node->safe_psql('squatted', q{SELECT event_store.append('s-1', 'A', '{}'); SELECT event_store.wait_for_pipeline('60 s'); SELECT last_position FROM event_store.pipeline_status}),
	"1\nt\n1", 'and orders events');
$node->safe_psql('postgres', 'DROP DATABASE squatted');

# --- more databases than pipeline entries: said, not silent --------------------
$node->safe_psql('postgres', 'ALTER SYSTEM SET event_store.pipeline_enabled = off');
$node->reload;
for my $i (1 .. 32)
{
	$node->safe_psql('postgres', "CREATE DATABASE many_$i");
	$node->safe_psql("many_$i", 'CREATE EXTENSION event_store');
}
my $status = $node->safe_psql('many_32', q{SELECT state || ': ' || coalesce(last_error, '') FROM event_store.pipeline_status});
($rc, $out, $err) = $node->psql('many_32', q{SELECT count(*) FROM event_store.read_all()});
like($status, qr/^unavailable: the pipeline serves at most 32 databases/, 'pipeline_status of a database past the limit says so');
like($err, qr/WARNING:  the event_store pipeline serves at most 32 databases, and this one has no worker/, 'read_all warns');
ok(slurp_file($node->logfile) =~ /no pipeline for database \d+: the pipeline serves at most 32 databases/, 'and the server log says so');
$node->safe_psql('postgres', "DROP DATABASE many_$_") for 1 .. 32;
$node->safe_psql('postgres', 'ALTER SYSTEM SET event_store.pipeline_enabled = on');
$node->reload;

my $other_oid = $node->safe_psql('postgres', q{SELECT oid FROM pg_database WHERE datname = 'other'});
$node->safe_psql('postgres', 'DROP DATABASE other_copy');
$node->safe_psql('postgres', 'DROP DATABASE other');
pass('DROP DATABASE of a database with a running worker succeeds');
is($node->safe_psql('postgres', qq{SELECT count(*) FROM pg_replication_origin WHERE roname = 'event_store_$other_oid'}),
	'0', 'the dropped database\'s replication origin is dropped with it');

# --- ALTER EXTENSION UPDATE while events are appended ------------------------
# The update rewrites the global log (the key becomes the event id): the
# worker, which decodes with historic catalog snapshots and writes with the
# present one through the same caches, must see the new table and key at
# once, and give every event one position, with its id.
$node->safe_psql('postgres', 'CREATE DATABASE upgrading');
$node->safe_psql('upgrading', q{CREATE EXTENSION event_store VERSION '0.1.0' CASCADE});
is($node->safe_psql('upgrading', q{SELECT event_store.append('up-0', 'A', '{}'); SELECT event_store.wait_for_pipeline('60 s')}),
	"1\nt", 'the worker orders the log of 0.1.0');
my $type_index = q{SELECT count(*) FROM pg_indexes WHERE schemaname = 'event_store' AND indexname = 'global_log_event_type_idx'};
is($node->safe_psql('upgrading', $type_index), '1', '0.1.0 indexes the log by type');
my $up_script = '';
for my $n (1 .. 1500)
{
	$up_script .= "SELECT event_store.append('up-" . ($n % 5) . "', 'A', '{\"n\": $n}') \\gset\n\\echo ack $n\n";
}
my @up_clients = start_appenders('upgrading', 'upgrade_appends', $up_script);
my $log_offset = -s $node->logfile;
$node->safe_psql('upgrading', 'ALTER EXTENSION event_store UPDATE');
$_->[0]->finish for @up_clients;
is(join('', map { ${ $_->[2] } } @up_clients), '', 'the appends went on through the update');
is($node->safe_psql('upgrading', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'the worker catches up');
is($node->safe_psql('upgrading', q{
	SELECT count(*), count(DISTINCT g.global_position), min(g.global_position), max(g.global_position),
	       count(*) FILTER (WHERE g.event_id IS DISTINCT FROM e.event_id)
	  FROM event_store.events e LEFT JOIN event_store.global_log g
	    ON g.stream_id = e.stream_id AND g.stream_version = e.stream_version}),
	'3001|3001|1|3001|0', 'every event has one position, dense, with its id, before and after the update');
is($node->safe_psql('upgrading', q{SELECT count(*) FROM event_store.check()}), '0', 'and check() finds nothing wrong');
is($node->safe_psql('upgrading', q{SELECT pg_get_indexdef('event_store.global_log_event_key'::regclass)}),
	'CREATE UNIQUE INDEX global_log_event_key ON event_store.global_log USING btree (event_id) INCLUDE (global_position)',
	'the log is keyed by the event id');
is($node->safe_psql('upgrading', $type_index), '0', 'the update drops the type index');
is($node->safe_psql('upgrading', q{
	SELECT count(*), count(DISTINCT global_position), min(global_position), max(global_position)
	  FROM event_store.read_all(0, 10000, event_types => '{A}');
	SELECT count(*) FROM event_store.read_all(0, event_types => '{B}')}),
	"3001|3001|1|3001\n0", 'a read by type after it scans the log: every event of the type, once');
unlike(substr(slurp_file($node->logfile), $log_offset), qr/ERROR: .*|event_store pipeline for database \d+ stops/,
	'the worker had no error through the update');

$node->stop;
done_testing();
