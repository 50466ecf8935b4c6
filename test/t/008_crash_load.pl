# Crash durability under load (issue 12, item 1).
#
# Invariants 1, 4, 5 and 6 under kill -9.  Clients append at once: single
# events over many streams, 10-event batches, 5-row plain INSERTs, two hot
# streams shared by two clients, and one large transaction (decoded with
# logical_decoding_work_mem = 64kB, so that decoding spills to disk).  Each
# client prints "ack <id>" once a commit has returned.  Then, round after
# round: the postmaster and all its processes are killed with SIGKILL
# (EVENT_STORE_CRASH_KILLS times, default 2), and separately a client backend in the middle of its
# appends, the pipeline worker while it orders the large transaction, and a
# projection worker in the middle of its batches (each a crash restart of
# every process).  After every restart:
#   - every acknowledged event is there, once; no batch is torn;
#   - every stream is 1..n;
#   - the global log is dense, has each event once, and the events of one
#     transaction hold consecutive positions;
#   - an asynchronous and an inline projection that count and sum equal a
#     fresh fold of the events;
#   - amcheck finds nothing wrong with the extension's tables and indexes;
#   - event_store.check() returns no row.
#
# Knobs: EVENT_STORE_CRASH_KILLS (postmaster kills, default 2),
# EVENT_STORE_CRASH_WORKER_KILLS (rounds of backend, pipeline worker and
# projection worker kills, default 1), EVENT_STORE_CRASH_ROUND_SECONDS (load
# before each kill, default 0: a few hundred commits), EVENT_STORE_CRASH_BIG
# (events of the large transaction, default 20000).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;
use Time::HiRes qw(time usleep);

my $kills = $ENV{EVENT_STORE_CRASH_KILLS} // 2;
my $big = $ENV{EVENT_STORE_CRASH_BIG} // 20000;
my $worker_kills = $ENV{EVENT_STORE_CRASH_WORKER_KILLS} // 1;
my $round_seconds = $ENV{EVENT_STORE_CRASH_ROUND_SECONDS} // 0;
die "EVENT_STORE_CRASH_KILLS must be at least 1" unless $kills =~ /^\d+$/ && $kills >= 1;

my $node = PostgreSQL::Test::Cluster->new('crash_load');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'event_store'
max_worker_processes = 16
restart_after_crash = on
logical_decoding_work_mem = 64kB
event_store.projection_retry_delay = 20ms
log_statement = none
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION amcheck');
$node->safe_psql('postgres', 'CREATE EXTENSION event_store');
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'pipeline ready');

# Two read models that count and sum: a lost or doubled event shows.  Per
# stream and version modulo 16 (a row updated by every event of a 1,000-event
# batch would make each batch quadratic).
$node->safe_psql('postgres', q{
	CREATE TABLE tallies (key text PRIMARY KEY, n bigint NOT NULL, total bigint NOT NULL);
	CREATE FUNCTION tally(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	  INSERT INTO tallies VALUES (e.stream_id || '/' || e.stream_version % 16, 1, (e.data->>'k')::bigint)
	  ON CONFLICT (key) DO UPDATE SET n = tallies.n + 1, total = tallies.total + EXCLUDED.total;
	END $$;
	CREATE TABLE inline_tallies (LIKE tallies INCLUDING ALL);
	CREATE FUNCTION inline_tally(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	  INSERT INTO inline_tallies VALUES (e.stream_id || '/' || e.stream_version % 16, 1, (e.data->>'k')::bigint)
	  ON CONFLICT (key) DO UPDATE SET n = inline_tallies.n + 1, total = inline_tallies.total + EXCLUDED.total;
	END $$;
	SELECT event_store.create_projection('tallies', 'tally(event_store.event)', categories => '{load,big}');
	SELECT event_store.create_projection('inline_tallies', 'inline_tally(event_store.event)',
	                                     categories => '{load}', mode => 'inline');
});

# Events per acknowledged id: the prefix says which client wrote it.
my %size = (s => 1, h => 1, b => 10, i => 5, x => $big);
sub id_size { my ($id) = @_; return $size{ substr($id, 0, 1) }; }

my $dir = PostgreSQL::Test::Utils::tempdir;
my %clients_sql = (
	s => sub { my ($id, $i) = @_; "SELECT event_store.append('load-s" . ($i % 50) . "', 'E', '{\"id\": \"$id\", \"k\": $i}') \\gset\n" },
	b => sub { my ($id, $i) = @_; "SELECT event_store.append_events('load-b" . ($i % 10) . "', (SELECT jsonb_agg(jsonb_build_object('type', 'E', 'data', jsonb_build_object('id', '$id', 'k', k))) FROM generate_series(1, 10) k)) \\gset\n" },
	i => sub { my ($id, $i) = @_; "INSERT INTO event_store.events (stream_id, event_type, data) SELECT 'load-i" . ($i % 7) . "', 'E', jsonb_build_object('id', '$id', 'k', k) FROM generate_series(1, 5) k;\n" },
	h => sub { my ($id, $i) = @_; "SELECT event_store.append('load-hot" . ($i % 2) . "', 'E', '{\"id\": \"$id\", \"k\": 1}') \\gset\n" });

# Start a client: $kind, a tag unique to it, how many statements.
sub start_client
{
	my ($kind, $tag, $n) = @_;
	my $sql = "\\set ON_ERROR_STOP on\n";
	if ($kind eq 'x')
	{
		$sql .= "SELECT event_store.append_events('big-$tag', (SELECT jsonb_agg(jsonb_build_object('type', 'Big', 'data', jsonb_build_object('id', 'x$tag', 'k', k))) FROM generate_series(1, $big) k)) \\gset\n\\echo ack x$tag\n";
	}
	else
	{
		for my $i (1 .. $n)
		{
			my $id = "$kind$tag.$i";
			$sql .= $clients_sql{$kind}->($id, $i) . "\\echo ack $id\n";
		}
	}
	my $file = "$dir/$kind$tag.sql";
	open(my $fh, '>', $file) or die "could not write $file: $!";
	print $fh $sql;
	close($fh);
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-q', '-h', $node->host, '-p', $node->port, '-d', 'postgres', '-f', $file ],
		'>', \$out, '2>', \$err);
	return { h => $h, out => \$out, err => \$err, kind => $kind };
}

sub start_load
{
	my ($round, $with_big) = @_;
	my $n = 20000 + 2000 * $round_seconds;    # statements enough for the round
	my @c = (start_client('s', "$round", $n), start_client('b', "$round", $n / 4),
		start_client('i', "$round", $n / 4), start_client('h', "${round}a", $n),
		start_client('h', "${round}b", $n));
	push @c, start_client('x', "$round", 1) if $with_big;
	return @c;
}

sub acks
{
	my @clients = @_;
	my @a;
	for my $c (@clients)
	{
		eval { $c->{h}->pump_nb; };    # (dies once the client has exited)
		push @a, ${ $c->{out} } =~ /^ack (\S+)\n/mg;    # (a line cut short by a kill is no ack)
	}
	return @a;
}

sub wait_acks
{
	my ($want, @clients) = @_;
	my $deadline = time + 180;
	while (time < $deadline)
	{
		return if scalar(acks(@clients)) >= $want;
		usleep(20_000);
	}
	die "the clients did not get $want appends acknowledged";
}

# Let the clients run $seconds, or until $want commits are acknowledged.
sub load_for
{
	my ($seconds, $want, @clients) = @_;
	if ($seconds > 0)
	{
		my $until = time + $seconds;
		while (time < $until)
		{
			acks(@clients);    # (keeps the pipes drained)
			usleep(100_000);
		}
	}
	wait_acks($want, @clients) if $want > 0;
}

sub big_acked
{
	my @clients = @_;
	return grep { /^x/ } acks(@clients);
}

# The pids of every process of the server, to wait until they are gone.
sub server_pids
{
	my @pids = split /\n/, $node->safe_psql('postgres', 'SELECT pid FROM pg_stat_activity');
	push @pids, $node->{_pid};
	return @pids;
}

sub wait_gone
{
	my @pids = @_;
	for (1 .. 600)
	{
		return unless grep { kill(0, $_) } @pids;
		usleep(100_000);
	}
	die 'the server processes did not exit';
}

# Kill -9 the postmaster and every process of the server at once (as a
# machine crash would stop them: a backend whose postmaster alone is killed
# runs its statement to the end and commits), and start it again once they
# are all gone.
sub kill_postmaster
{
	my @pids = server_pids();
	kill 'KILL', @pids;
	wait_gone(@pids);
	$node->{_pid} = undef;    # as kill9 does
	$node->start;
}

# Kill -9 one server process: the postmaster resets every process and
# recovers by itself; wait until it accepts connections again.
sub kill_process
{
	my ($pid) = @_;
	my $started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
	kill 'KILL', $pid;
	usleep(100_000) while kill(0, $pid);
	# a crash restart keeps the postmaster: wait for the reset to be over
	$node->poll_query_until('postgres', q{SELECT pg_is_in_recovery() = false})
	  or die 'the server did not come back';
	is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started,
		"pid $pid killed: the postmaster stayed and reset the other processes");
}

sub finish_clients
{
	my @clients = @_;
	for my $c (@clients)
	{
		eval { $c->{h}->kill_kill; };
		eval { $c->{h}->finish; };
	}
}

sub pid_of
{
	my ($backend_type, $extra) = @_;
	$extra //= '';
	my $pid = $node->safe_psql('postgres', qq{
		SELECT pid FROM pg_stat_activity WHERE backend_type = '$backend_type' $extra ORDER BY pid LIMIT 1});
	die "no $backend_type process" unless $pid =~ /^\d+$/;
	return $pid;
}

my @all_acked;
my $restarts = 0;

# Everything the invariants say, after a restart.
sub verify
{
	my ($what) = @_;
	$restarts++;
	is($node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('180 s')}), 't',
		"$what: the pipeline catches up");
	is($node->safe_psql('postgres', q{SELECT event_store.wait_for_projection('tallies', '300 s')}), 't',
		"$what: the asynchronous projection catches up");

	# every acknowledged event there once; no batch torn
	my %stored = map { split /\|/ } split /\n/, $node->safe_psql('postgres', q{
		SELECT data->>'id', count(*) FROM event_store.events GROUP BY 1});
	my @lost = grep { ($stored{$_} // 0) != id_size($_) } @all_acked;
	is(scalar @lost, 0, "$what: every acknowledged event is there, once (" . scalar(@all_acked) . ' acknowledged)')
	  or diag('lost or doubled: ' . join(' ', @lost[ 0 .. ($#lost < 9 ? $#lost : 9) ]));
	my @torn = grep { $stored{$_} != id_size($_) } keys %stored;
	is(scalar @torn, 0, "$what: no batch or transaction is torn or doubled")
	  or diag('torn: ' . join(' ', map { "$_=$stored{$_}" } @torn[ 0 .. ($#torn < 9 ? $#torn : 9) ]));

	# every stream 1..n
	is($node->safe_psql('postgres', q{
		SELECT count(*) FROM (SELECT stream_id, count(*) n, min(stream_version) lo, max(stream_version) hi
		                        FROM event_store.events GROUP BY 1) s WHERE lo <> 1 OR hi <> n}),
		'0', "$what: every stream is 1..n");

	# the global log: dense, each event once, a transaction's events consecutive
	is($node->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM event_store.events) || ' events; log: ' || count(*) || ' entries, '
		       || count(DISTINCT (stream_id, stream_version)) || ' events, positions '
		       || coalesce(min(global_position), 1) || '..' || coalesce(max(global_position), 0)
		  FROM event_store.global_log}) =~ /^(\d+) events; log: \1 entries, \1 events, positions 1\.\.\1$/ ? 'dense' : 'not dense',
		'dense', "$what: the global log is dense and has each event once");
	is($node->safe_psql('postgres', q{
		SELECT count(*) FROM event_store.events e WHERE NOT EXISTS (SELECT 1 FROM event_store.global_log g
		         WHERE g.stream_id = e.stream_id AND g.stream_version = e.stream_version)}),
		'0', "$what: no event is missing from the global log");
	is($node->safe_psql('postgres', q{
		SELECT count(*) FROM (SELECT e.data->>'id', max(g.global_position) - min(g.global_position) + 1 AS span, count(*) AS n
		                        FROM event_store.events e JOIN event_store.global_log g USING (stream_id, stream_version)
		                       GROUP BY 1) t WHERE span <> n}),
		'0', "$what: the events of each transaction hold consecutive positions");

	# read models = a fresh fold of the events
	for my $t ([ 'tallies', q{'load', 'big'} ], [ 'inline_tallies', q{'load'} ])
	{
		my ($table, $cats) = @$t;
		is($node->safe_psql('postgres', qq{
			WITH fold AS (SELECT stream_id || '/' || stream_version % 16, count(*) AS n, sum((data->>'k')::bigint) AS total
			                FROM event_store.events WHERE split_part(stream_id, '-', 1) IN ($cats) GROUP BY 1)
			SELECT count(*) FROM ((SELECT * FROM fold EXCEPT SELECT * FROM $table)
			                      UNION ALL (SELECT * FROM $table EXCEPT SELECT * FROM fold)) d}),
			'0', "$what: $table = a fresh fold of the events");
	}

	# amcheck: every index of the extension's tables (with every heap tuple
	# looked up in it), and their heaps
	my ($rc, $out, $err) = $node->psql('postgres', q{
		SELECT count(bt_index_parent_check(i.indexrelid, true, true)::text)
		  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid
		  JOIN pg_am am ON am.oid = ic.relam
		 WHERE c.relnamespace = 'event_store'::regnamespace AND am.amname = 'btree'});
	ok($rc == 0 && $out >= 10, "$what: amcheck (bt_index_parent_check, heapallindexed) passes on the $out indexes")
	  or diag($err);
	is($node->safe_psql('postgres', q{
		SELECT count(*) FROM pg_class c, LATERAL verify_heapam(c.oid, check_toast => true) v
		 WHERE c.relnamespace = 'event_store'::regnamespace AND c.relkind = 'r'}),
		'0', "$what: verify_heapam finds nothing in the extension's tables");

	# and the operator's check agrees
	is($node->safe_psql('postgres', q{
		SELECT coalesce(string_agg(kind || ': ' || object || ': ' || detail, E'\n'), '') FROM event_store.check('60 s')}),
		'', "$what: event_store.check() returns no row");
}

# --- round 1: kill -9 of the postmaster, the large transaction in flight ------
my $t0 = time;
my @clients = start_load(1, 1);
wait_acks(100, @clients);
ok(!big_acked(@clients), 'the large transaction is not acknowledged when the postmaster is killed');
kill_postmaster();
push @all_acked, acks(@clients);
finish_clients(@clients);
cmp_ok(scalar @all_acked, '>=', 100, 'round 1: appends were acknowledged before the kill');
verify('postmaster kill 1');
note 'round 1: the large transaction killed in flight left '
  . $node->safe_psql('postgres', q{SELECT count(*) FROM event_store.events WHERE stream_id = 'big-1'})
  . ' events (all or nothing: it may have committed just before the kill)';

# --- kill -9 of a client backend, the pipeline worker and a projection
# worker (EVENT_STORE_CRASH_WORKER_KILLS times each, in turn) ---------------
my $round = 1;
my %killed = (backend => 0, pipeline => 0, projector => 0);
for my $w (1 .. $worker_kills)
{
	# a client backend in the middle of its appends
	$round++;
	@clients = start_load($round, 0);
	load_for($round_seconds, 300, @clients);
	kill_process(pid_of('client backend', q{AND query LIKE '%append_events%' AND pid <> pg_backend_pid()}));
	push @all_acked, acks(@clients);
	finish_clients(@clients);
	$killed{backend}++;
	verify("backend kill $w");

	# the pipeline worker while it orders the large transaction (started
	# after the round's load, so that it is decoded at the kill)
	$round++;
	@clients = start_load($round, 0);
	load_for($round_seconds, 0, @clients);
	push @clients, start_client('x', "$round", 1);
	my $deadline = time + 300;
	usleep(20_000) until big_acked(@clients) || time > $deadline;
	ok(scalar big_acked(@clients), 'the large transaction committed');
	# the worker decodes it (spilled to disk) and orders its events: kill it meanwhile
	my $behind = $node->safe_psql('postgres', qq{
		SELECT count(*) FROM event_store.events e WHERE stream_id = 'big-$round' AND NOT EXISTS
		  (SELECT 1 FROM event_store.global_log g WHERE g.stream_id = e.stream_id AND g.stream_version = e.stream_version)});
	note "round $round: $behind events of the large transaction not yet ordered when the pipeline worker was killed";
	kill_process(pid_of('event_store pipeline'));
	push @all_acked, acks(@clients);
	finish_clients(@clients);
	$killed{pipeline}++;
	verify("pipeline worker kill $w");

	# a projection worker in the middle of its batches (the large
	# transaction, started after the round's load, keeps it busy)
	$round++;
	@clients = start_load($round, 0);
	load_for($round_seconds, 0, @clients);
	push @clients, start_client('x', "$round", 1);
	$deadline = time + 300;
	usleep(20_000) until big_acked(@clients) || time > $deadline;
	ok(scalar big_acked(@clients), 'the large transaction committed');
	is($node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('180 s')}), 't', 'the large transaction is ordered');
	if ($w == 1)
	{
		# the pipeline decoded it through spill files (statistics do not
		# survive a crash: checked before this round's kill)
		ok($node->poll_query_until('postgres', q{
			SELECT spill_txns > 0 AND spill_bytes > 0 FROM pg_stat_replication_slots
			 WHERE slot_name = 'event_store_' || (SELECT oid FROM pg_database WHERE datname = current_database())}),
			'the pipeline decoded the large transaction through spill files (logical_decoding_work_mem = 64kB)');
	}
	# (it reaches the projection once ordered: wait until the projection has started on it)
	$deadline = time + 60;
	until (time > $deadline || $node->safe_psql('postgres', qq{
		SELECT count(*) > 0 FROM tallies WHERE key LIKE 'big-$round/%'}) eq 't')
	{
		usleep(20_000);
	}
	my $lag = $node->safe_psql('postgres', q{SELECT lag_events FROM event_store.projection_status WHERE name = 'tallies'});
	note "round $round: the projection was $lag events behind when its worker was killed";
	kill_process(pid_of('event_store projector'));
	push @all_acked, acks(@clients);
	finish_clients(@clients);
	$killed{projector}++;
	verify("projection worker kill $w");
}

# --- further kills of the postmaster, at varying moments ---------------------
for my $k (2 .. $kills)
{
	$round++;
	@clients = start_load($round, $k % 2);
	load_for($round_seconds, 100 + int(rand(900)), @clients);
	usleep(int(rand(500_000)));
	kill_postmaster();
	push @all_acked, acks(@clients);
	finish_clients(@clients);
	verify("postmaster kill $k");
}

my $events = $node->safe_psql('postgres', 'SELECT count(*) FROM event_store.events');
my $acked_events = 0;
$acked_events += id_size($_) for @all_acked;
note sprintf('%d postmaster kills, %d backend, %d pipeline worker and %d projection worker kills; '
	  . '%d restarts checked; %d commits (%d events) acknowledged, %d events stored; %.0f s',
	$kills, $killed{backend}, $killed{pipeline}, $killed{projector}, $restarts, scalar @all_acked,
	$acked_events, $events, time - $t0);

$node->stop;
done_testing();
