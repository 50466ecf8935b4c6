# Projections under crashes, and isolation between projections.
#
# Invariant 6: after a crash, each event's effect on a read model is applied
# exactly once.  Several clients append while asynchronous and inline
# projections run; the postmaster is killed with SIGKILL, and later a
# projection worker in the middle of its batches.  After each restart every
# read model equals a fresh fold of the committed events.  Then: a slow
# projection (100 ms per event) does not hold up a fast one, with two
# projection workers and with one; and an asynchronous projection reads
# protected fields as its owner may.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('projections');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'event_store'
max_worker_processes = 16
event_store.projection_retry_delay = 20ms
restart_after_crash = on
event_store.key_encryption_key = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pgcrypto');
$node->safe_psql('postgres', 'CREATE EXTENSION event_store');
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'pipeline ready');

# Two read models that count and sum: applying an event twice, or missing
# one, shows.  One asynchronous, one inline.
$node->safe_psql('postgres', q{
	CREATE TABLE tallies (stream_id text PRIMARY KEY, n bigint NOT NULL, total bigint NOT NULL);
	CREATE FUNCTION tally(e event_store.event) RETURNS void LANGUAGE sql AS $$
	  INSERT INTO tallies VALUES (e.stream_id, 1, (e.data->>'k')::bigint)
	  ON CONFLICT (stream_id) DO UPDATE SET n = tallies.n + 1, total = tallies.total + EXCLUDED.total $$;
	CREATE TABLE inline_tallies (LIKE tallies INCLUDING ALL);
	CREATE FUNCTION inline_tally(e event_store.event) RETURNS void LANGUAGE sql AS $$
	  INSERT INTO inline_tallies VALUES (e.stream_id, 1, (e.data->>'k')::bigint)
	  ON CONFLICT (stream_id) DO UPDATE SET n = inline_tallies.n + 1, total = inline_tallies.total + EXCLUDED.total $$;
	SELECT event_store.create_projection('tallies', 'tally(event_store.event)', categories => '{load}');
	SELECT event_store.create_projection('inline_tallies', 'inline_tally(event_store.event)', categories => '{load}', mode => 'inline');
});

# How many streams of a read model differ from a fresh fold of the log.
sub differences
{
	my ($table) = @_;
	return $node->safe_psql('postgres', qq{
		WITH fold AS (SELECT stream_id, count(*) AS n, sum((data->>'k')::bigint) AS total
		                FROM event_store.events WHERE stream_id LIKE 'load-%' GROUP BY stream_id)
		SELECT count(*) FROM ((SELECT * FROM fold EXCEPT SELECT * FROM $table)
		                      UNION ALL (SELECT * FROM $table EXCEPT SELECT * FROM fold)) d});
}

# Clients that append and print "ack <id>" once each commit has returned:
# single events over many streams, 10-event batches, one hot stream.
my $dir = PostgreSQL::Test::Utils::tempdir;
# (each event's data carries the id its client acknowledges: s…, b…, h…)
my @scripts = (
	[ 's', sub { my ($n, $i) = @_; "SELECT event_store.append('load-s" . ($i % 50) . "', 'E', '{\"id\": \"s$n\", \"k\": $i}') \\gset\n" } ],
	[ 'b', sub { my ($n, $i) = @_; "SELECT event_store.append_events('load-b" . ($i % 10) . "', (SELECT jsonb_agg(jsonb_build_object('type', 'E', 'data', jsonb_build_object('id', 'b$n', 'k', k))) FROM generate_series(1, 10) k)) \\gset\n" } ],
	[ 'h', sub { my ($n, $i) = @_; "SELECT event_store.append('load-hot', 'E', '{\"id\": \"h$n\", \"k\": 1}') \\gset\n" } ]);

sub start_clients
{
	my ($round) = @_;
	my @clients;
	for my $s (@scripts)
	{
		my ($name, $gen) = @$s;
		my $sql = '';
		for my $i (1 .. 4000)
		{
			$sql .= $gen->("$round$i", $i);
			$sql .= "\\echo ack $name$round$i\n";
		}
		my $file = "$dir/$name$round.sql";
		open(my $fh, '>', $file) or die "could not write $file: $!";
		print $fh $sql;
		close($fh);
		my ($out, $err) = ('', '');
		my $h = IPC::Run::start(
			[ 'psql', '-X', '-q', '-h', $node->host, '-p', $node->port, '-d', 'postgres', '-f', $file ],
			'>', \$out, '2>', \$err);
		push @clients, { h => $h, out => \$out };
	}
	return @clients;
}

sub acks
{
	my @clients = @_;
	$_->{h}->pump_nb for @clients;
	return map { ${ $_->{out} } =~ /^ack (\S+)$/mg } @clients;
}

# Kill -9 the postmaster, wait until every process of it is gone, start again.
sub kill_postmaster
{
	my @pids = split /\n/, $node->safe_psql('postgres', 'SELECT pid FROM pg_stat_activity');
	push @pids, $node->{_pid};
	$node->kill9;
	for (1 .. 600)
	{
		last unless grep { kill(0, $_) } @pids;
		usleep(100_000);
	}
	$node->start;
}

# Kill -9 one server process: the postmaster resets every backend and
# recovers by itself; wait until it accepts connections again.
sub kill_process
{
	my ($pid) = @_;
	kill 'KILL', $pid;
	usleep(200_000) while kill(0, $pid);
	$node->poll_query_until('postgres', 'SELECT true') or die 'the server did not come back';
}

# --- kill -9 of the postmaster while clients append ------------------------
my @clients = start_clients('a');
my $deadline = time + 120;
while (time < $deadline)
{
	last if scalar(acks(@clients)) >= 600;
	usleep(20_000);
}
kill_postmaster();
my @acked = acks(@clients);
eval { $_->{h}->finish } for @clients;
cmp_ok(scalar @acked, '>=', 600, 'clients had appends acknowledged before the crash');
is($node->safe_psql('postgres', sprintf(q{
	SELECT count(*) FROM unnest('{%s}'::text[]) a(id)
	 WHERE NOT EXISTS (SELECT 1 FROM event_store.events WHERE data->>'id' = a.id)}, join(',', @acked))),
	'0', 'every acknowledged append survived the crash');
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_projection('tallies', '120 s')}), 't',
	'the asynchronous projection catches up after the crash');
is(differences('tallies'), '0', 'asynchronous read model = fresh fold of the committed events (no loss, no double)');
is(differences('inline_tallies'), '0', 'inline read model = fresh fold of the committed events');
cmp_ok($node->safe_psql('postgres', q{SELECT sum(n) FROM tallies}), '>=', scalar @acked,
	'the read model counts at least the acknowledged events');

# --- kill -9 of a projection worker in the middle of its batches ------------
# a second, slow projection keeps a worker busy while we kill it
$node->safe_psql('postgres', q{
	CREATE TABLE slow_tallies (LIKE tallies INCLUDING ALL);
	CREATE FUNCTION slow_tally(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	  PERFORM pg_sleep(0.0005);
	  INSERT INTO slow_tallies VALUES (e.stream_id, 1, (e.data->>'k')::bigint)
	  ON CONFLICT (stream_id) DO UPDATE SET n = slow_tallies.n + 1, total = slow_tallies.total + EXCLUDED.total;
	END $$;
	SELECT event_store.create_projection('slow_tallies', 'slow_tally(event_store.event)', categories => '{load}');
});
$node->poll_query_until('postgres', q{
	SELECT lag_events > 200 FROM event_store.projection_status WHERE name = 'slow_tallies'
	   AND events_applied > 0}) or die 'the slow projection did not start';
# a projection worker (a SIGKILL of any server process resets them all, the busy one included)
my $projector = $node->safe_psql('postgres', q{
	SELECT pid FROM pg_stat_activity WHERE backend_type = 'event_store projector' ORDER BY pid LIMIT 1});
ok($projector =~ /^\d+$/, 'a projection worker runs');
my $before = $node->safe_psql('postgres', q{SELECT events_applied FROM event_store.projection_status WHERE name = 'slow_tallies'});
@clients = start_clients('b');
usleep(300_000);
kill_process($projector);
eval { $_->{h}->finish } for @clients;
is($node->safe_psql('postgres', q{
	SELECT bool_and(event_store.wait_for_projection(n, '180 s')) FROM unnest('{tallies,slow_tallies}'::text[]) n}),
	't', 'both projections catch up after the worker was killed');
is(differences('tallies'), '0', 'asynchronous read model = fresh fold after the worker was killed');
is(differences('slow_tallies'), '0', 'the killed worker\'s own read model = fresh fold (its batch was applied once)');
is(differences('inline_tallies'), '0', 'inline read model = fresh fold');
$node->safe_psql('postgres', q{SELECT event_store.drop_projection('slow_tallies')});

# --- cancels in the middle of batches, and the statistics of the read models -----
# A projection worker whose batch is cancelled (pg_cancel_backend) at any
# point, even before it has fetched an event, records a failure and retries:
# it never crashes the server, and nothing is applied twice.
my $started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
@clients = start_clients('c');
for (1 .. 150)
{
	$node->safe_psql('postgres', q{
		SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE backend_type = 'event_store projector'});
	usleep(10_000);
}
eval { $_->{h}->kill_kill; $_->{h}->finish } for @clients;
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started,
	'cancelling projection workers at random never crashed the server');
is($node->safe_psql('postgres', q{
	SELECT bool_and(event_store.wait_for_projection(n, '120 s')) FROM unnest('{tallies}'::text[]) n}),
	't', 'the projection catches up after the cancels');
is(differences('tallies'), '0', 'read model = fresh fold after the cancels');
# the workers report their writes, so that autovacuum and autoanalyze look after read models
ok($node->poll_query_until('postgres', q{
	SELECT n_tup_ins + n_tup_upd > 0 FROM pg_stat_user_tables WHERE relname = 'tallies'}),
	'the projection workers report the read model\'s writes to the statistics');

# --- a database whose defaults would stop an unprepared worker ------------------
# (REPEATABLE READ, read-only transactions and a tiny lock_timeout by default:
# the workers set their own.)
$node->safe_psql('postgres', 'CREATE DATABASE hostile');
$node->safe_psql('hostile', q{
	CREATE EXTENSION event_store CASCADE;
	CREATE TABLE seen (stream_id text, stream_version bigint);
	CREATE FUNCTION see(e event_store.event) RETURNS void LANGUAGE sql AS $$
	  INSERT INTO seen VALUES (e.stream_id, e.stream_version) $$;
	ALTER DATABASE hostile SET default_transaction_isolation = 'repeatable read';
	ALTER DATABASE hostile SET lock_timeout = '1ms';
});
$node->safe_psql('hostile', q{SELECT event_store.wait_for_pipeline('60 s')});
$node->safe_psql('hostile', q{
	SELECT event_store.create_projection('see', 'see(event_store.event)');
	SELECT count(event_store.append('h-' || (i % 3), 'E', '{}')) FROM generate_series(1, 300) i;
	ALTER DATABASE hostile SET default_transaction_read_only = on;
});
is($node->safe_psql('hostile', q{
	SET default_transaction_read_only = off;
	SELECT event_store.wait_for_projection('see', '60 s')}), 't',
	'a projection applies in a database whose defaults are repeatable read, read-only and lock_timeout = 1ms');
is($node->safe_psql('hostile', q{SELECT count(*) || ' ' || count(DISTINCT (stream_id, stream_version)) FROM seen}),
	'300 300', 'every event once');
is($node->safe_psql('hostile', q{SELECT retries || ' ' || coalesce(last_error, 'no error') FROM event_store.projection_status}),
	'0 no error', 'and without a single failed batch');

# --- a slow projection does not delay a fast one ------------------------------
$node->safe_psql('postgres', q{
	CREATE TABLE fast_seen (stream_id text, stream_version bigint);
	CREATE FUNCTION fast(e event_store.event) RETURNS void LANGUAGE sql AS $$
	  INSERT INTO fast_seen VALUES (e.stream_id, e.stream_version) $$;
	CREATE FUNCTION slow(e event_store.event) RETURNS void LANGUAGE sql AS $$ SELECT pg_sleep(0.1) $$;
	SELECT event_store.create_projection('slow', 'slow(event_store.event)', categories => '{iso}', start => 'now');
	SELECT event_store.create_projection('fast', 'fast(event_store.event)', categories => '{iso}', start => 'now');
});

# Append, then time how long until the fast projection has applied it.
sub fast_lag
{
	my ($tag) = @_;
	my $worst = 0;
	for my $i (1 .. 15)
	{
		$node->safe_psql('postgres', qq{SELECT event_store.append_events('iso-$tag', (SELECT jsonb_agg(jsonb_build_object('type', 'E', 'data', '{}'::jsonb)) FROM generate_series(1, 5)))});
		my $t0 = time;
		my $ok = $node->safe_psql('postgres', q{SELECT event_store.wait_for_projection('fast', '10 s')});
		my $lag = time - $t0;
		die "the fast projection did not catch up" unless $ok eq 't';
		$worst = $lag if $lag > $worst;
	}
	return $worst;
}
my $lag2 = fast_lag('two');
my $slow_behind = $node->safe_psql('postgres', q{SELECT lag_events FROM event_store.projection_status WHERE name = 'slow'});
note sprintf('two projection workers: the fast projection lagged at most %.3f s; the slow one is %s events behind',
	$lag2, $slow_behind);
cmp_ok($slow_behind, '>', 20, 'the slow projection is far behind (100 ms per event)');
cmp_ok($lag2, '<', 2, 'with two projection workers, the fast projection stays within 2 s');

$node->append_conf('postgresql.conf', "event_store.projection_workers = 1\n");
$node->reload;
$node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'event_store projector' AND datname = current_database()})
  or die 'the second projection worker did not stop';
my $lag1 = fast_lag('one');
note sprintf('one projection worker: the fast projection lagged at most %.3f s', $lag1);
cmp_ok($lag1, '<', 2, 'with one projection worker taking turns, the fast projection stays within 2 s');
is($node->safe_psql('postgres', q{SELECT count(*) FROM fast_seen}), '150', 'the fast projection applied every event once');
$node->safe_psql('postgres', q{
	SELECT event_store.drop_projection('slow');
	SELECT event_store.drop_projection('fast');
});

# --- an asynchronous projection reads personal data as its owner may --------
$node->safe_psql('postgres', q{
	SELECT event_store.protect('Registered', '$.user_id', '{$.email}');
	CREATE ROLE reader_ok NOLOGIN;
	CREATE ROLE reader_no NOLOGIN;
	GRANT USAGE ON SCHEMA event_store TO reader_ok, reader_no;
	GRANT SELECT ON event_store.events, event_store.global_log TO reader_ok, reader_no;
	GRANT EXECUTE ON FUNCTION event_store.create_projection(text, regprocedure, text[], text[], text, regprocedure, text, text)
	   TO reader_ok, reader_no;
	GRANT EXECUTE ON FUNCTION event_store.personal_data_access() TO reader_ok;
	CREATE TABLE emails (who text, user_id text, email text);
	GRANT INSERT ON emails TO reader_ok, reader_no;
	CREATE FUNCTION keep_email(e event_store.event) RETURNS void LANGUAGE sql AS $$
	  INSERT INTO emails VALUES (current_user, e.data->>'user_id', e.data->>'email') $$;
	SELECT event_store.append('user-1', 'Registered', '{"user_id": "u1", "email": "ann@example.com"}');
	SET ROLE reader_ok;
	SELECT event_store.create_projection('emails_ok', 'keep_email(event_store.event)', event_types => '{Registered}');
	RESET ROLE;
	SET ROLE reader_no;
	SELECT event_store.create_projection('emails_no', 'keep_email(event_store.event)', event_types => '{Registered}');
	RESET ROLE;
});
is($node->safe_psql('postgres', q{
	SELECT bool_and(event_store.wait_for_projection(n, '60 s')) FROM unnest('{emails_ok,emails_no}'::text[]) n}),
	't', 'both projections applied the protected event');
is($node->safe_psql('postgres', q{SELECT who || ':' || user_id || ':' || coalesce(email, 'null') FROM emails ORDER BY who}),
	"reader_no:u1:null\nreader_ok:u1:ann\@example.com",
	'the owner with personal_data_access() reads the field in clear, the other gets null');
$node->safe_psql('postgres', q{
	SELECT event_store.forget('u1');
	DELETE FROM emails;
	SET ROLE reader_ok;
	SELECT event_store.create_projection('emails_after', 'keep_email(event_store.event)', event_types => '{Registered}');
	RESET ROLE;
});
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_projection('emails_after', '60 s')}), 't',
	'a projection created after forget catches up');
is($node->safe_psql('postgres', q{SELECT coalesce(email, 'null') FROM emails}), 'null',
	'after forget, a new projection gets null for the forgotten field');

$node->stop;
done_testing();
