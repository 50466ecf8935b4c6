# Versioning under concurrent churn: the shortcuts that spare the trigger
# its look-up of a stream's head (the batch's previous row, the shared cache
# of heads, src/stream_heads.c) must never give an append a wrong version.
#
# For EVENT_STORE_STRESS_SECONDS (default 20) eight pgbench clients write
# to 20 hot streams and 2 streams whose ids are too long for the cache, in
# transactions that end in every way a transaction can: committed, rolled
# back, with savepoints rolled back to and released (then the whole
# rolled back), with appends inside PL/pgSQL exception blocks that fail and
# are retried, with expected versions that lose the race (VE001, caught),
# and through two-phase commit (PREPARE TRANSACTION, then COMMIT PREPARED or
# ROLLBACK PREPARED).  Every committed append records, in the same
# transaction, the version it returned.  Meanwhile the test alters the
# event table (which empties the cache) every second.  Then:
#   - every stream's versions are 1..n, without a gap;
#   - every recorded version is an event of its stream, and no version was
#     returned twice;
#   - event_store.check() returns no row once the pipeline has caught up;
#   - no pgbench client failed.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;
use Time::HiRes qw(time usleep);

my $seconds = $ENV{EVENT_STORE_STRESS_SECONDS} // 20;

my $node = PostgreSQL::Test::Cluster->new('head_stress');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'event_store'
max_connections = 40
max_prepared_transactions = 20
log_statement = none
log_min_messages = warning
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION pgcrypto;
	CREATE EXTENSION event_store;
	-- what each committed append returned (stream, version), written in its transaction
	CREATE TABLE returned (stream_id text NOT NULL, version bigint NOT NULL);
	-- the stream of a draw: 1..20 hot, 21..22 ids of 70 bytes (past the cache)
	CREATE FUNCTION sid(n int) RETURNS text LANGUAGE sql IMMUTABLE
	  AS $$ SELECT CASE WHEN n <= 20 THEN 'hot-' || n ELSE 'long-' || n || '-' || repeat('x', 62) END $$;
	-- an append that fails inside an exception block, then succeeds
	CREATE FUNCTION retried(s text) RETURNS bigint LANGUAGE plpgsql AS $$
	DECLARE v bigint;
	BEGIN
	  BEGIN
	    PERFORM event_store.append(s, 'Tried', '{}');
	    PERFORM event_store.append_events(s, '[{"type": "Tried", "data": {}}, {"type": "Tried", "data": {}}]');
	    RAISE EXCEPTION 'undo' USING ERRCODE = 'P0001';
	  EXCEPTION WHEN raise_exception THEN
	    NULL;
	  END;
	  v := event_store.append(s, 'Retried', '{}');
	  INSERT INTO returned VALUES (s, v);
	  RETURN v;
	END $$;
	-- an append expecting the version just read; NULL where another won the race
	CREATE FUNCTION expecting(s text) RETURNS bigint LANGUAGE plpgsql AS $$
	DECLARE v bigint;
	BEGIN
	  v := event_store.append_events(s, '[{"type": "Expected", "data": {}}, {"type": "Expected", "data": {}}]',
	                                 expected_version => event_store.stream_version(s));
	  INSERT INTO returned VALUES (s, v - 1), (s, v);
	  RETURN v;
	EXCEPTION WHEN SQLSTATE 'VE001' THEN
	  RETURN NULL;
	END $$;
});

my $dir = PostgreSQL::Test::Utils::tempdir;
my %scripts = (
	single => q{\set s random(1, 22)
INSERT INTO returned SELECT sid(:s), event_store.append(sid(:s), 'One', '{}');
},
	savepoints => q{\set s random(1, 22)
\set t random(1, 22)
BEGIN;
INSERT INTO returned SELECT sid(:s), event_store.append(sid(:s), 'Kept', '{}');
SAVEPOINT a;
SELECT event_store.append(sid(:s), 'Undone', '{}');
SELECT event_store.append_events(sid(:t), '[{"type": "Undone", "data": {}}, {"type": "Undone", "data": {}}]');
ROLLBACK TO a;
INSERT INTO returned SELECT sid(:t), event_store.append(sid(:t), 'Kept', '{}');
SAVEPOINT b;
INSERT INTO returned SELECT sid(:s), event_store.append(sid(:s), 'Released', '{}');
RELEASE b;
COMMIT;
},
	released_then_rolled_back => q{\set s random(1, 22)
BEGIN;
SAVEPOINT a;
SELECT event_store.append(sid(:s), 'Gone', '{}');
RELEASE a;
SAVEPOINT b;
SELECT event_store.append_events(sid(:s), '[{"type": "Gone", "data": {}}, {"type": "Gone", "data": {}}, {"type": "Gone", "data": {}}]');
RELEASE b;
ROLLBACK;
},
	batch => q{\set s random(1, 22)
WITH a AS MATERIALIZED (SELECT event_store.append_events(sid(:s), '[{"type": "B", "data": {}}, {"type": "B", "data": {}}, {"type": "B", "data": {}}]') AS v) INSERT INTO returned SELECT sid(:s), v - d FROM a, generate_series(0, 2) d;
},
	retried => q{\set s random(1, 22)
SELECT retried(sid(:s));
},
	expecting => q{\set s random(1, 22)
SELECT expecting(sid(:s));
},
	two_phase => q{\set s random(1, 22)
\set r random(0, 1)
\set n random(1, 1000000000)
BEGIN;
INSERT INTO returned SELECT sid(:s), event_store.append(sid(:s), 'Prepared', '{}');
PREPARE TRANSACTION 'p-:client_id-:n';
\if :r
COMMIT PREPARED 'p-:client_id-:n';
\else
ROLLBACK PREPARED 'p-:client_id-:n';
\endif
},
);
my @files;
for my $name (sort keys %scripts)
{
	open(my $fh, '>', "$dir/$name.sql") or die $!;
	print $fh $scripts{$name};
	close($fh);
	push @files, '-f', "$dir/$name.sql";
}
my ($out, $err) = ('', '');
my $t0 = time;
my $h = IPC::Run::start(
	[ 'pgbench', '-n', '-h', $node->host, '-p', $node->port, '-c', 8, '-j', 8,
		'-T', $seconds, @files, 'postgres' ],
	'>', \$out, '2>', \$err);

# meanwhile: statements that empty the cache
my $alters = 0;
while (time < $t0 + $seconds)
{
	usleep(1_000_000);
	$node->safe_psql('postgres',
		'ALTER TABLE event_store.events SET (autovacuum_vacuum_scale_factor = ' . (0.1 + ($alters++ % 5) / 100) . ')');
}
my $finished = $h->finish;
my ($tps) = $out =~ /tps = ([\d.]+)/;
note "pgbench: " . ($tps // '?') . " tps";
ok($finished, 'pgbench exited 0') or diag($err);
unlike($err, qr/aborted|ERROR/, 'no pgbench client failed') or diag($err);
is($node->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'), '0', 'no prepared transaction left');

my $events = $node->safe_psql('postgres', 'SELECT count(*) FROM event_store.events');
cmp_ok($events, '>', 1000, "the run appended ($events events)");
is($node->safe_psql('postgres', q{SELECT count(DISTINCT event_type) FROM event_store.events}), '7',
	'every kind of committed append took part (One, Kept, Released, B, Retried, Expected, Prepared)');
is($node->safe_psql('postgres', q{
	SELECT coalesce(string_agg(stream_id || ': ' || n || ' events, newest ' || v, '; '), 'none')
	  FROM (SELECT stream_id, count(*) n, max(stream_version) v FROM event_store.events GROUP BY 1) s
	 WHERE n <> v}), 'none', 'every stream is numbered 1..n, without a gap');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM returned r
	 WHERE NOT EXISTS (SELECT FROM event_store.events e WHERE e.stream_id = r.stream_id AND e.stream_version = r.version)}),
	'0', 'every version an append returned is an event of its stream');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT 1 FROM returned GROUP BY stream_id, version HAVING count(*) > 1) d}),
	'0', 'no version was returned twice');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM event_store.events e
	 WHERE e.event_type IN ('One', 'Kept', 'Released', 'B', 'Retried', 'Expected', 'Prepared')
	   AND NOT EXISTS (SELECT FROM returned r WHERE r.stream_id = e.stream_id AND r.version = e.stream_version)}),
	'0', 'every committed event was returned to its appender');
is($node->safe_psql('postgres', q{SELECT count(*) FROM event_store.events WHERE event_type IN ('Undone', 'Gone', 'Tried')}),
	'0', 'nothing rolled back was kept');
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('120 s')}), 't', 'the pipeline caught up');
is($node->safe_psql('postgres', q{SELECT count(*) FROM event_store.check()}), '0', 'check() finds nothing wrong')
	or diag($node->safe_psql('postgres', q{SELECT * FROM event_store.check() LIMIT 10}));

$node->stop;
done_testing();
