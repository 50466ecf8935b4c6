# pg_dump and restore keep every event intact, byte for byte, also when the
# table's physical order is not version order (vacuum reused the space of a
# rolled-back append), and appends continue after the restore.  The global
# log comes along: every event keeps its position (custom, plain and
# parallel restores), so a consumer resuming from a stored position misses
# nothing and sees nothing twice, and the projections (definitions,
# positions, parked events, the read models' own tables) resume where they
# were, without applying an event twice: while the restore runs, the
# pipeline and the projections wait, and inline projections are not applied
# to the events it loads.  A dump without the log (excluded by hand)
# numbers the events anew, and its projections are then refused (VE045)
# until rebuilt.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'event_store'\nevent_store.projection_retry_delay = 10ms\nmax_worker_processes = 24\n");
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
# an asynchronous projection with a parked event, and an inline one
$node->safe_psql('src', q{
	CREATE TABLE totals (stream_id text PRIMARY KEY, n int NOT NULL);
	CREATE FUNCTION tot(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	  IF e.data ? 'bad' THEN RAISE EXCEPTION 'bad event'; END IF;
	  INSERT INTO totals VALUES (e.stream_id, 1) ON CONFLICT (stream_id) DO UPDATE SET n = totals.n + 1;
	END $$;
	CREATE FUNCTION tot_reset() RETURNS void LANGUAGE sql AS $$ DELETE FROM totals $$;
	SELECT event_store.create_projection('totals', 'tot(event_store.event)', categories => '{account,big}',
	                                     reset => 'tot_reset()', on_error => 'park');
	CREATE TABLE counts (stream_id text PRIMARY KEY, n int NOT NULL);
	CREATE FUNCTION cnt(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	  INSERT INTO counts VALUES (e.stream_id, 1) ON CONFLICT (stream_id) DO UPDATE SET n = counts.n + 1;
	END $$;
	CREATE FUNCTION cnt_reset() RETURNS void LANGUAGE sql AS $$ DELETE FROM counts $$;
	SELECT event_store.create_projection('counts', 'cnt(event_store.event)', mode => 'inline', reset => 'cnt_reset()');
	SELECT event_store.append('account-102', 'Bad', '{"bad": true}');
});
is($node->safe_psql('src', q{SELECT event_store.wait_for_projection('totals', '60 s')}), 't', 'the projection caught up before the dump');
is($node->safe_psql('src', q{SELECT count(*) FROM event_store.parked_events}), '1', 'one event parked before the dump');
my $projections = q{SELECT string_agg(format('%s %s %s %s %s %s %s %s', name, handler, reset, categories, mode, on_error, owner, search_path), '; ' ORDER BY name) FROM event_store.projections};
my $models = q{SELECT (SELECT string_agg(stream_id || '=' || n, ' ' ORDER BY stream_id) FROM totals) || ' | ' || (SELECT string_agg(stream_id || '=' || n, ' ' ORDER BY stream_id) FROM counts)};
my $fold = q{SELECT (SELECT string_agg(stream_id || '=' || n, ' ' ORDER BY stream_id) FROM (SELECT stream_id, count(*) n FROM event_store.events WHERE split_part(stream_id, '-', 1) IN ('account', 'big') AND NOT data ? 'bad' GROUP BY 1) f)
                || ' | ' || (SELECT string_agg(stream_id || '=' || n, ' ' ORDER BY stream_id) FROM (SELECT stream_id, count(*) n FROM event_store.events WHERE stream_id <> 'event_store-subjects' GROUP BY 1) f)};
my $src_projections = $node->safe_psql('src', $projections);
# the log as read_all hands it out, and a consumer that stored its position halfway
is($node->safe_psql('src', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'the log is ordered before the dump');
my $log = q{SELECT count(*) || ' ' || md5(string_agg(global_position || ':' || stream_id || ':' || stream_version, ',' ORDER BY global_position)) FROM event_store.read_all(0, 1000000)};
my $src_log = $node->safe_psql('src', $log);
$node->safe_psql('src', q{
	CREATE TABLE consumer (name text PRIMARY KEY, position bigint NOT NULL);
	INSERT INTO consumer SELECT 'mailer', global_position FROM event_store.read_all(0, 1000) ORDER BY global_position DESC LIMIT 1;
	SELECT event_store.save_position('auditor', (SELECT max(global_position) FROM event_store.read_all(0, 500)));
});
my $rest = q{SELECT count(*) || ' ' || md5(string_agg(global_position || ':' || stream_id || ':' || stream_version, ',' ORDER BY global_position)) FROM event_store.read_all((SELECT position FROM consumer), 1000000)};
my $src_rest = $node->safe_psql('src', $rest);
# a consumer whose position is in event_store.consumer_positions (save_position)
my $saved_rest = q{SELECT event_store.load_position('auditor') || ' ' || count(*) || ' ' || md5(string_agg(global_position || ':' || stream_id, ',' ORDER BY global_position)) FROM event_store.read_all(event_store.load_position('auditor'), 1000000)};
my $src_saved_rest = $node->safe_psql('src', $saved_rest);
my $src_models = $node->safe_psql('src', $models);
is($src_models, $node->safe_psql('src', $fold), 'before the dump the read models equal a fresh fold');

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

# the global log after a restore: every event at the position it had
for my $db ('dst_custom', 'dst_plain')
{
	is($node->safe_psql($db, q{SELECT event_store.wait_for_pipeline('60 s')}), 't', "$db: the pipeline runs after the restore");
	is($node->safe_psql($db, $log), $src_log, "$db: read_all returns every event at its old position");
	is($node->safe_psql($db, $rest), $src_rest, "$db: a consumer resuming from its stored position gets exactly what it had not read");
	is($node->safe_psql($db, $saved_rest), $src_saved_rest, "$db: and one whose position save_position kept, too");
}
like(slurp_file($node->logfile), qr/event_store: session \d+ restores database \d+/, 'the restoring session said so');

# the restored store works: versions continue, the append-only guard holds
is($node->safe_psql('dst_custom', q{SELECT event_store.append('account-101', 'Withdrawn', '{"amount": 20}', expected_version => 2)}),
	'3', 'appends continue after the restore');
my ($rc, $out, $err) = $node->psql('dst_custom', 'DELETE FROM event_store.events');
like($err, qr/DELETE on event_store.events is not allowed/, 'restored log is append-only');
is($node->safe_psql('dst_plain', q{SELECT string_agg(event_type, ' ' ORDER BY stream_version) FROM event_store.read_stream('inv-1')}),
	'First Second', 'read_stream after restore');

# a parallel restore (pg_restore -j) loads the tables in any order: the same
$node->safe_psql('postgres', 'CREATE DATABASE dst_parallel');
command_ok([ 'pg_restore', '-h', $host, '-p', $port, '--exit-on-error', '-j', '4', '-d', 'dst_parallel', "$dir/src.dump" ], 'pg_restore -j 4');
is($node->safe_psql('dst_parallel', $fingerprint), $before, 'parallel restore keeps every event');
is($node->safe_psql('dst_parallel', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'dst_parallel: the pipeline runs');
is($node->safe_psql('dst_parallel', $log), $src_log, 'dst_parallel: every event at its old position');

# projections after a restore: definitions, parked events and read models as
# dumped, and they go on from their positions
for my $db ('dst_custom', 'dst_plain', 'dst_parallel')
{
	is($node->safe_psql($db, $projections), $src_projections, "$db: the projection definitions are restored");
	is($node->safe_psql($db, q{SELECT count(*) FROM event_store.parked_events}), '1', "$db: the parked event is restored");
	is($node->safe_psql($db, q{SELECT event_store.wait_for_projection('totals', '60 s')}), 't', "$db: the restored projection resumes");
	is($node->safe_psql($db, q{SELECT string_agg(name || ' ' || state, ', ' ORDER BY name) FROM event_store.projection_status}),
		'counts live, totals live', "$db: restored projections are live");
}
is($node->safe_psql('dst_plain', $models), $src_models,
	'the read models are as dumped: nothing was applied twice while the restore loaded the events');
is($node->safe_psql('dst_parallel', $models), $src_models, 'the same after a parallel restore');
$node->safe_psql('dst_plain', q{SELECT event_store.append('account-101', 'Deposited', '{"amount": 1}')});
is($node->safe_psql('dst_plain', q{SELECT event_store.wait_for_projection('totals', '60 s')}), 't', 'a new append is projected');
is($node->safe_psql('dst_plain', $models), $node->safe_psql('dst_plain', $fold),
	'after new appends the read models equal a fresh fold of the restored log');
is($node->safe_psql('dst_plain', q{SELECT count(*) FROM event_store.read_all((SELECT max(global_position) - 1 FROM event_store.global_log), 10)}),
	'1', 'the new event has the next position');

# (five databases' workers would exceed max_worker_processes: drop two)
$node->safe_psql('postgres', 'DROP DATABASE dst_custom');
$node->safe_psql('postgres', 'DROP DATABASE dst_parallel');

# a dump without the log (excluded by hand): the events are numbered anew,
# and the projections, whose positions refer to the old numbers, are
# refused until rebuilt
command_ok([ 'pg_dump', '-h', $host, '-p', $port, '-Fc', '--exclude-table-data=event_store.global_log',
	'--exclude-table-data=event_store.log_identity', '-f', "$dir/nolog.dump", 'src' ], 'pg_dump without the log');
$node->safe_psql('postgres', 'CREATE DATABASE dst_nolog');
command_ok([ 'pg_restore', '-h', $host, '-p', $port, '--exit-on-error', '-d', 'dst_nolog', "$dir/nolog.dump" ], 'pg_restore of it');
is($node->safe_psql('dst_nolog', $fingerprint), $before, 'the events are all there');
is($node->safe_psql('dst_nolog', $models), $src_models,
	'the read models are as dumped: the inline projection did not run again while the restore loaded the events');
is($node->safe_psql('dst_nolog', q{SELECT string_agg(name || ' ' || state || ' ' || error_sqlstate, ', ' ORDER BY name) FROM event_store.projection_status}),
	'counts failed VE045, totals failed VE045', 'its projections show as failed with VE045 until rebuilt');
($rc, $out, $err) = $node->psql('dst_nolog', q{SELECT event_store.resume_projection('totals')});
like($err, qr/projection "totals" was restored from a dump/, 'resume is refused: only a rebuild makes it right');
($rc, $out, $err) = $node->psql('dst_nolog', q{SELECT event_store.wait_for_projection('totals')});
like($err, qr/was restored from a dump/, 'wait_for_projection says so too, rather than answer true');
$node->safe_psql('dst_nolog', q{SELECT event_store.append('account-101', 'Deposited', '{"amount": 1}')});
is($node->safe_psql('dst_nolog', $models), $src_models, 'a restored inline projection does not apply new appends either');
$node->safe_psql('dst_nolog', q{
	SELECT event_store.rebuild_projection('totals');
	SELECT event_store.rebuild_projection('counts');
});
is($node->safe_psql('dst_nolog', q{SELECT event_store.wait_for_projection('totals', '60 s')}), 't', 'the rebuilt projection catches up');
is($node->safe_psql('dst_nolog', $models), $node->safe_psql('dst_nolog', $fold), 'after the rebuilds the read models equal a fresh fold of the restored log');
is($node->safe_psql('dst_nolog', q{SELECT string_agg(name || ' ' || state, ', ' ORDER BY name) FROM event_store.projection_status}),
	'counts live, totals live', 'and they are live again');
$node->safe_psql('dst_nolog', q{SELECT event_store.append('account-101', 'Deposited', '{"amount": 1}')});
is($node->safe_psql('dst_nolog', q{SELECT n FROM counts WHERE stream_id = 'account-101'}),
	$node->safe_psql('dst_nolog', q{SELECT count(*) FROM event_store.events WHERE stream_id = 'account-101'}),
	'the rebuilt inline projection applies new appends');

$node->stop;
done_testing();
