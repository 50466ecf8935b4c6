# Soak (issue 12, item 2): an hour of a busy store compressed into the
# suite's budget, ending with the consistency check an operator runs.
#
# For EVENT_STORE_SOAK_SECONDS (default 40) pgbench clients append single
# events over 5,000 streams, 50-event batches over 500 streams and
# protected events (personal data, one subject per second), and load
# aggregates (writing snapshots) as a role that may read personal data and
# as one that may not; meanwhile the test forgets a subject every second
# (the one of three seconds ago), replaces the upcaster of the appended type
# every few seconds (which changes every snapshot's view), redefines the
# aggregate (a new generation) and deletes some snapshots (the last 5 s
# change no view, so that the loads write snapshots of the final ones), while the
# pipeline orders everything, an asynchronous and an inline projection
# count and sum.  Then:
#   - both read models equal a fresh fold of the events;
#   - event_store.check() returns no row, run as a superuser (who compares
#     the snapshots folded in clear) and as a role without the right to
#     personal data (who compares the redacted ones);
#   - amcheck finds nothing wrong with the extension's indexes;
#   - no pgbench client failed.
# The long version: EVENT_STORE_SOAK_SECONDS=3600.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;
use Time::HiRes qw(time usleep);

my $seconds = $ENV{EVENT_STORE_SOAK_SECONDS} // 40;
my $kek = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';

my $node = PostgreSQL::Test::Cluster->new('soak');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'event_store'
max_worker_processes = 16
max_connections = 40
event_store.key_encryption_key = '$kek'
log_statement = none
log_min_messages = warning
synchronous_commit = off
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION pgcrypto;
	CREATE EXTENSION amcheck;
	CREATE EXTENSION event_store;
	SELECT event_store.wait_for_pipeline('60 s');
	SELECT event_store.protect('Registered', '$.user', '{$.email}');
	CREATE FUNCTION acct(state jsonb, e event_store.event) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
	  RETURN jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1,
	                            'sum', coalesce((state->>'sum')::bigint, 0) + coalesce((e.data->>'amount')::bigint, 0),
	                            'email', coalesce(e.data->'email', state->'email'),
	                            'note', e.data->'note');
	END $$;
	SELECT event_store.define_aggregate('acct', 'acct(jsonb, event_store.event)', '{}', 20);
	-- two upcasters that take turns on Deposited 1 -> 2 (the amount untouched)
	CREATE FUNCTION up_a(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$ SELECT data || '{"note": "a"}' $$;
	CREATE FUNCTION up_b(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$ SELECT data || '{"note": "b"}' $$;
	SELECT event_store.add_upcaster('Deposited', 1, 'up_a(jsonb)');
	-- read models that count and sum per stream
	CREATE TABLE tallies (stream_id text PRIMARY KEY, n bigint NOT NULL, total bigint NOT NULL);
	CREATE FUNCTION tally(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	  INSERT INTO tallies VALUES (e.stream_id, 1, coalesce((e.data->>'amount')::bigint, 0))
	  ON CONFLICT (stream_id) DO UPDATE SET n = tallies.n + 1, total = tallies.total + EXCLUDED.total;
	END $$;
	CREATE TABLE inline_tallies (LIKE tallies INCLUDING ALL);
	CREATE FUNCTION inline_tally(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	  INSERT INTO inline_tallies VALUES (e.stream_id, 1, coalesce((e.data->>'amount')::bigint, 0))
	  ON CONFLICT (stream_id) DO UPDATE SET n = inline_tallies.n + 1, total = inline_tallies.total + EXCLUDED.total;
	END $$;
	SELECT event_store.create_projection('tallies', 'tally(event_store.event)', categories => '{soak,soakb,user}');
	SELECT event_store.create_projection('inline_tallies', 'inline_tally(event_store.event)', categories => '{soak,user}', mode => 'inline');
	-- loaders: one who reads personal data in clear (the superuser), one who may not
	CREATE ROLE soak_redacted LOGIN;
	GRANT USAGE ON SCHEMA event_store TO soak_redacted;
	GRANT SELECT ON event_store.events, event_store.aggregates, event_store.global_log TO soak_redacted;
	GRANT INSERT ON event_store.snapshots TO soak_redacted;
	GRANT EXECUTE ON FUNCTION event_store.load_aggregate(text, text, timestamptz, bigint),
	                          event_store.check(interval) TO soak_redacted;
});

# --- the clients -------------------------------------------------------------
my $dir = PostgreSQL::Test::Utils::tempdir;
my %scripts = (
	single => q{\set s random(1, 5000)
\set k random(1, 100)
SELECT event_store.append('soak-' || :s, 'Deposited', jsonb_build_object('amount', :k), schema_version => 1);
},
	batch => q{\set s random(1, 500)
SELECT event_store.append_events('soakb-' || :s, (SELECT jsonb_agg(jsonb_build_object('type', 'Deposited', 'schema_version', 1, 'data', jsonb_build_object('amount', i))) FROM generate_series(1, 50) i));
},
	# one subject per second: u-<epoch>, in the stream user-<epoch>
	protected => q{SELECT event_store.append('user-' || s, 'Registered', jsonb_build_object('user', 'u-' || s, 'email', 'u' || s || '@example.com', 'amount', 1)) FROM (SELECT extract(epoch FROM clock_timestamp())::bigint AS s) t;
},
	load => q{\set s random(1, 5000)
SELECT version FROM event_store.load_aggregate('soak-' || :s, 'acct');
\set b random(1, 500)
SELECT version FROM event_store.load_aggregate('soakb-' || :b, 'acct');
SELECT version FROM event_store.load_aggregate('user-' || extract(epoch FROM clock_timestamp())::bigint, 'acct');
},
);
for my $name (keys %scripts)
{
	open(my $fh, '>', "$dir/$name.sql") or die $!;
	print $fh $scripts{$name};
	close($fh);
}
my @clients;
sub pgbench
{
	my ($name, $clients, $user, @extra) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'pgbench', '-n', '-h', $node->host, '-p', $node->port, '-U', $user, '-c', $clients, '-j', $clients,
			'-T', $seconds, '-f', "$dir/$name.sql", @extra, 'postgres' ],
		'>', \$out, '2>', \$err);
	push @clients, { name => "$name as $user", h => $h, out => \$out, err => \$err };
}
my $t0 = time;
pgbench('single', 3, $node->safe_psql('postgres', 'SELECT current_user'));
pgbench('batch', 1, $node->safe_psql('postgres', 'SELECT current_user'));
pgbench('protected', 1, $node->safe_psql('postgres', 'SELECT current_user'), '-R', '200');
pgbench('load', 1, $node->safe_psql('postgres', 'SELECT current_user'), '-R', '100');
pgbench('load', 1, 'soak_redacted', '-R', '100');

# --- meanwhile: forget, upcaster changes, redefinitions, snapshot deletions ---
my %done = (forget => 0, upcaster => 0, redefine => 0, delete => 0);
my $tick = 0;
my $last_change = $node->safe_psql('postgres', 'SELECT now()');
while (time < $t0 + $seconds)
{
	$tick++;
	$node->safe_psql('postgres', q{SELECT event_store.forget('u-' || (extract(epoch FROM clock_timestamp())::bigint - 3))});
	$done{forget}++;
	# the last seconds change nothing, so that the loads write snapshots of
	# the views that end the run (a change in the last tick left none: the
	# current views' test failed, 0 snapshots)
	my $may_change = time < $t0 + $seconds - 5;
	if ($may_change && $tick % 4 == 0)
	{
		my $up = ($tick / 4) % 2 ? 'up_b' : 'up_a';
		$node->safe_psql('postgres', qq{
			BEGIN;
			SELECT event_store.drop_upcaster('Deposited', 1);
			SELECT event_store.add_upcaster('Deposited', 1, '$up(jsonb)');
			COMMIT;});
		$done{upcaster}++;
		$last_change = $node->safe_psql('postgres', 'SELECT now()');
	}
	if ($may_change && $tick % 9 == 0)
	{
		$node->safe_psql('postgres', q{SELECT event_store.define_aggregate('acct', 'acct(jsonb, event_store.event)', '{}', 20)});
		$done{redefine}++;
		$last_change = $node->safe_psql('postgres', 'SELECT now()');
	}
	if ($tick % 6 == 0)
	{
		$node->safe_psql('postgres', q{SELECT event_store.delete_snapshots('soak-' || (1 + (random() * 4999)::int))});
		$done{delete}++;
	}
	usleep(1_000_000);
}
my $failed = 0;
for my $c (@clients)
{
	$c->{h}->finish;
	my $ok = $c->{h}->result == 0 && ${ $c->{err} } !~ /aborted|ERROR/;
	$failed++ unless $ok;
	my ($tps) = ${ $c->{out} } =~ /tps = ([\d.]+)/;
	note sprintf('%-22s %s tps', $c->{name}, $tps // '?');
	diag("$c->{name}: " . ${ $c->{err} }) unless $ok;
}
is($failed, 0, 'no pgbench client failed');
my $load_time = time - $t0;

# --- then the whole store is checked -----------------------------------------
my $t1 = time;
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('300 s')}), 't', 'the pipeline has ordered everything');
my $pipeline_drain = time - $t1;
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_projection('tallies', '600 s')}), 't',
	'the asynchronous projection has applied everything');
my $projection_drain = time - $t1;
my $stats = $node->safe_psql('postgres', q{
	SELECT count(*) || ' events, ' || count(DISTINCT stream_id) || ' streams, '
	       || count(*) FILTER (WHERE metadata ? 'protected') || ' protected, '
	       || (SELECT count(*) FROM event_store.forgotten_subjects) || ' subjects forgotten, '
	       || (SELECT count(*) FROM event_store.snapshots) || ' snapshots'
	  FROM event_store.events});
note "soak: $stats; $done{forget} forget calls, $done{upcaster} upcaster replacements, $done{redefine} redefinitions, "
  . "$done{delete} snapshot deletions in " . sprintf('%.0f s of load; the pipeline drained in %.1f s, the projection in %.1f s',
	$load_time, $pipeline_drain, $projection_drain);
my ($events) = $stats =~ /^(\d+) events/;
cmp_ok($events, '>', 10000 * $seconds / 40, "$events events appended");
cmp_ok($node->safe_psql('postgres', q{SELECT count(*) FROM event_store.snapshots}), '>', 0, 'loads wrote snapshots');

for my $t ([ 'tallies', q{'soak', 'soakb', 'user'} ], [ 'inline_tallies', q{'soak', 'user'} ])
{
	my ($table, $cats) = @$t;
	is($node->safe_psql('postgres', qq{
		WITH fold AS (SELECT stream_id, count(*) AS n, sum(coalesce((data->>'amount')::bigint, 0)) AS total
		                FROM event_store.events WHERE split_part(stream_id, '-', 1) IN ($cats) GROUP BY 1)
		SELECT count(*) FROM ((SELECT * FROM fold EXCEPT SELECT * FROM $table)
		                      UNION ALL (SELECT * FROM $table EXCEPT SELECT * FROM fold)) d}),
		'0', "$table = a fresh fold of the events");
}

$t1 = time;
is($node->safe_psql('postgres', q{
	SELECT coalesce(string_agg(kind || ': ' || object || ': ' || detail, E'\n'), '') FROM event_store.check('60 s')}),
	'', 'event_store.check() as a superuser: no disagreement (streams, global log, snapshots folded in clear, projections)');
my $check_time = time - $t1;
is($node->safe_psql('postgres', q{
	SELECT coalesce(string_agg(kind || ': ' || object || ': ' || detail, E'\n'), '') FROM event_store.check('60 s')},
	extra_params => [ '-U', 'soak_redacted' ]),
	'', 'event_store.check() as a role without personal data: no disagreement (the redacted snapshots)');
# (the snapshots written since the last change of generation or upcaster are
# those of the two current views, one compared by each check)
my $views = $node->safe_psql('postgres', qq{
	SELECT count(*) || ' snapshots in ' || count(DISTINCT s.upcasters)
	  FROM event_store.snapshots s JOIN event_store.aggregates a ON a.name = s.aggregate AND a.generation = s.generation
	 WHERE s.created_at > '$last_change'});
like($views, qr/^[1-9]\d* snapshots in 2$/, "the current views, in clear and redacted, both had snapshots to compare ($views views)");
my ($rc, $out, $err) = $node->psql('postgres', q{
	SELECT count(bt_index_parent_check(i.indexrelid, true, true)::text)
	  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid
	  JOIN pg_am am ON am.oid = ic.relam
	 WHERE c.relnamespace = 'event_store'::regnamespace AND am.amname = 'btree'});
ok($rc == 0, "amcheck passes on the extension's $out indexes") or diag($err);
note sprintf('check() took %.1f s over %d events; the soak %.0f s in all', $check_time, $events, time - $t0);

$node->stop;
done_testing();
