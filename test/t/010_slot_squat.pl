# The pipeline's replication slot in the hands of a role that is not a
# superuser (issue 12, items 1 and 4: found while writing them).
#
# The pipeline worker of a database uses the logical replication slot
# event_store_<database oid>, and a role with the REPLICATION attribute (not
# a superuser) may create, advance, consume and drop any slot.  Whatever
# such a role does to the slot, the pipeline must never be silently wrong:
# either every committed event reaches the global log, or the pipeline says
# it cannot (wait_for_pipeline() returns false, pipeline_status shows the
# error).  Invariants 5 and 10: read_all never skips an event, and no role
# but a superuser can hide events.
#   1. the slot is squatted before CREATE EXTENSION, with another output
#      plugin (test_decoding);
#   2. it is advanced past committed events while the worker is stopped;
#   3. it is consumed (pg_logical_slot_get_changes) while the worker is
#      stopped;
#   4. a physical slot of that name (the worker cannot use it: a control
#      that it says so).
# Cases 2 and 3 are caught when the worker takes the slot again: it never
# confirms the slot beyond its origin's flushed progress, so a slot found
# confirmed beyond it was moved by someone else; the worker orders the
# events it will not deliver from the event table and warns.  The controls:
# no warning, and commit order kept, when the worker is merely stopped and
# started again, after it confirmed the slot through a busy but event-less
# stretch of WAL, and after a crash of the server.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('slot_squat');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'event_store'
max_worker_processes = 16
log_statement = none
});
$node->append_conf('postgresql.conf', "output_plugin_libraries = 'pgoutput, test_decoding, event_store'\n")
  if `postgres --describe-config` =~ /^output_plugin_libraries\t/m;
$node->start;
$node->safe_psql('postgres', 'CREATE ROLE repl LOGIN REPLICATION');

my $slot_of = q{SELECT 'event_store_' || oid FROM pg_database WHERE datname = current_database()};

# Either every committed event is in the global log, or the pipeline says it
# is not (wait_for_pipeline false and an error in pipeline_status): never
# "caught up" with events missing.
sub not_silent
{
	my ($db, $what) = @_;
	my $caught_up = $node->safe_psql($db, q{SELECT event_store.wait_for_pipeline('10 s')});
	my $missing = $node->safe_psql($db, q{
		SELECT count(*) FROM event_store.events e WHERE NOT EXISTS (SELECT 1 FROM event_store.global_log g
		         WHERE g.stream_id = e.stream_id AND g.stream_version = e.stream_version)});
	my $status = $node->safe_psql($db, q{SELECT state || ' / ' || coalesce(last_error, 'no error') FROM event_store.pipeline_status});
	note "$what: wait_for_pipeline $caught_up, $missing events not in the global log, pipeline $status";
	ok($missing eq '0' || ($caught_up eq 'f' && $status !~ /no error$/),
		"$what: no event silently missing from the global log")
	  or diag("wait_for_pipeline() = $caught_up, $missing committed events are not in the global log, "
		  . "pipeline_status: $status; check(): "
		  . $node->safe_psql($db, q{SELECT string_agg(kind || ' ' || object || ': ' || detail, '; ') FROM event_store.check('5 s')}));
}

sub set_pipeline
{
	my ($on) = @_;
	$node->append_conf('postgresql.conf', "event_store.pipeline_enabled = $on\n");
	$node->reload;
}

# --- 1. the slot squatted with another plugin, before the install ----------
$node->safe_psql('postgres', 'CREATE DATABASE squat');
my $slot = $node->safe_psql('squat', $slot_of);
$node->safe_psql('squat', qq{SELECT 'ok' FROM pg_create_logical_replication_slot('$slot', 'test_decoding')},
	extra_params => [ '-U', 'repl' ]);
$node->safe_psql('squat', q{
	CREATE EXTENSION event_store;
	SELECT event_store.append('s-1', 'E', '{}');
	SELECT event_store.append('s-1', 'E', '{}');
});
not_silent('squat', 'a slot of the name created with test_decoding before the install');

# --- 2. the slot advanced while the worker is stopped -------------------------
$node->safe_psql('postgres', 'CREATE DATABASE advanced');
$slot = $node->safe_psql('advanced', $slot_of);
$node->safe_psql('advanced', q{
	CREATE EXTENSION event_store;
	SELECT event_store.append('a-1', 'E', '{}');
	SELECT event_store.wait_for_pipeline('60 s');
});
set_pipeline('off');
$node->poll_query_until('advanced', qq{SELECT NOT active FROM pg_replication_slots WHERE slot_name = '$slot'})
  or die 'the pipeline worker did not stop';
$node->safe_psql('advanced', q{
	SELECT event_store.append('a-1', 'E', '{}');
	SELECT event_store.append('a-1', 'E', '{}');
});
$node->safe_psql('advanced', qq{SELECT 'ok' FROM pg_replication_slot_advance('$slot', pg_current_wal_insert_lsn())},
	extra_params => [ '-U', 'repl' ]);
set_pipeline('on');
$node->safe_psql('advanced', q{SELECT event_store.append('a-1', 'E', '{}')});
not_silent('advanced', 'the slot advanced by a REPLICATION role while the worker was stopped');
is($node->safe_psql('advanced', q{SELECT last_error FROM event_store.pipeline_status}),
	'slot moved by another session; rebuilt from event_store.events', 'advanced: pipeline_status says the slot was moved');

# --- 3. the slot consumed while the worker is stopped ---------------------------
$node->safe_psql('postgres', 'CREATE DATABASE consumed');
$slot = $node->safe_psql('consumed', $slot_of);
$node->safe_psql('consumed', q{
	CREATE EXTENSION event_store;
	SELECT event_store.append('c-1', 'E', '{}');
	SELECT event_store.wait_for_pipeline('60 s');
});
set_pipeline('off');
$node->poll_query_until('consumed', qq{SELECT NOT active FROM pg_replication_slots WHERE slot_name = '$slot'})
  or die 'the pipeline worker did not stop';
$node->safe_psql('consumed', q{SELECT event_store.append('c-1', 'E', '{}')});
$node->safe_psql('consumed', qq{SELECT count(*) FROM pg_logical_slot_get_changes('$slot', NULL, NULL)},
	extra_params => [ '-U', 'repl' ]);
set_pipeline('on');
$node->safe_psql('consumed', q{SELECT event_store.append('c-1', 'E', '{}')});
not_silent('consumed', 'the slot consumed by a REPLICATION role while the worker was stopped');
is($node->safe_psql('consumed', q{SELECT last_error FROM event_store.pipeline_status}),
	'slot moved by another session; rebuilt from event_store.events', 'consumed: pipeline_status says the slot was moved');

# --- 4. a physical slot of the name: the worker cannot use it (control) ----------
$node->safe_psql('postgres', 'CREATE DATABASE physical');
$slot = $node->safe_psql('physical', $slot_of);
$node->safe_psql('physical', qq{SELECT 'ok' FROM pg_create_physical_replication_slot('$slot')},
	extra_params => [ '-U', 'repl' ]);
$node->safe_psql('physical', q{
	CREATE EXTENSION event_store;
	SELECT event_store.append('p-1', 'E', '{}');
});
not_silent('physical', 'a physical slot of the name');

for my $db ('advanced', 'consumed')
{
	my $slot_name = $node->safe_psql($db, $slot_of);
	like(slurp_file($node->logfile), qr/WARNING:  replication slot "$slot_name" of the event_store pipeline was moved by another session/,
		"$db: the worker warns that the slot was moved by another session");
}

# --- 5. controls: stopped and started, idle WAL, a crash: no false alarm -------
$node->safe_psql('postgres', 'CREATE DATABASE control');
$node->safe_psql('control', q{
	CREATE EXTENSION event_store;
	CREATE TABLE other (x text);
	SELECT event_store.append('k-1', 'E', '{}');
	SELECT event_store.wait_for_pipeline('60 s');
});
$slot = $node->safe_psql('control', $slot_of);
my $log_from = -s $node->logfile;
my $restart = sub {
	set_pipeline('off');
	$node->poll_query_until('control', qq{SELECT NOT active FROM pg_replication_slots WHERE slot_name = '$slot'})
	  or die 'the pipeline worker did not stop';
	# appends while no worker runs: ordered from the slot, in commit order
	$node->safe_psql('control', q{SELECT event_store.append('k-2', 'E', '{}'); SELECT event_store.append('k-1', 'E', '{}')});
	set_pipeline('on');
	$node->safe_psql('control', q{SELECT event_store.wait_for_pipeline('60 s')}) eq 't' or die 'no catch-up';
};
$restart->();
# more than a WAL segment written to another table: the worker confirms the slot through it
$node->safe_psql('control', q{INSERT INTO other SELECT repeat('x', 1000) FROM generate_series(1, 30000)});
$node->safe_psql('control', q{SELECT event_store.append('k-3', 'E', '{}'); SELECT event_store.wait_for_pipeline('60 s')});
my $before = $node->safe_psql('control', q{SELECT pg_current_wal_insert_lsn()});
$node->safe_psql('control', q{INSERT INTO other SELECT repeat('x', 1000) FROM generate_series(1, 30000)});
ok($node->poll_query_until('control', qq{SELECT confirmed_flush_lsn > '$before' FROM pg_replication_slots WHERE slot_name = '$slot'}),
	'control: the worker confirms the slot through 30 MB of WAL without events');
$restart->();
$node->stop('immediate');
$node->start;
$node->safe_psql('control', q{SELECT event_store.append('k-4', 'E', '{}')});
is($node->safe_psql('control', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'control: the pipeline catches up after a crash');
is($node->safe_psql('control', q{
	SELECT string_agg(g.stream_id || '/' || g.stream_version, ' ' ORDER BY g.global_position)
	  FROM event_store.global_log g}),
	'k-1/1 k-2/1 k-1/2 k-3/1 k-2/2 k-1/3 k-4/1',
	'control: every event ordered once, in commit order');
is($node->safe_psql('control', q{SELECT count(*) FROM event_store.check('10 s')}), '0', 'control: check() finds nothing');
is($node->safe_psql('control', q{SELECT coalesce(last_error, 'none') FROM event_store.pipeline_status}), 'none',
	'control: pipeline_status shows no error');
my $control_log = substr(slurp_file($node->logfile), $log_from);
unlike($control_log, qr/moved by another session|ordered \d+ events from the event table/,
	'control: no false alarm and no rebuild, after a restart of the worker, idle WAL and a crash');

$node->stop;
done_testing();
