# Outside consumers of the global log, as a service runs them (issue 14):
# processes in Python (psycopg2) that LISTEN on event_store_global_log, read
# read_all from their position until it is empty, then wait for the next
# notification.
#   1. One transaction of 100 events: exactly one notification, whose
#      payload is the new head of the log.
#   2. A consumer group of three members, started before a writer appends
#      3,000 events over 200 streams in 300 transactions from 4 clients:
#      together the members read every event exactly once, each stream goes
#      to one member (the one stream_hash says), each member's events come
#      in log order and each stream's in version order; they were woken by
#      notifications, one per worker round: never more than one per
#      transaction, not one per event.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;

my $python = '/usr/bin/python3';
plan skip_all => 'needs python3-psycopg2'
  unless system($python, '-c', 'import psycopg2') == 0;

my $node = PostgreSQL::Test::Cluster->new('consumers');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'event_store'
max_worker_processes = 16
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION event_store');
$node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('60 s')});
my $dsn = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres';
my $dir = PostgreSQL::Test::Utils::tempdir;

my $script = "$dir/consumer.py";
open(my $fh, '>', $script) or die;
print $fh <<'PY';
import json, select, sys, os, time
import psycopg2

mode, dsn, out = sys.argv[1], sys.argv[2], sys.argv[3]
conn = psycopg2.connect(dsn)
conn.autocommit = True
cur = conn.cursor()
cur.execute("LISTEN event_store_global_log")

def wait_notifications(seconds):
    got = []
    end = time.time() + seconds
    while time.time() < end:
        if select.select([conn], [], [], max(0, end - time.time())) != ([], [], []):
            conn.poll()
            got.extend(n.payload for n in conn.notifies)
            conn.notifies.clear()
    return got

if mode == 'one':
    writer = psycopg2.connect(dsn)
    w = writer.cursor()
    w.execute("SELECT event_store.append_events('one-1', (SELECT jsonb_agg(jsonb_build_object('type', 'E', 'data', '{}'::jsonb)) FROM generate_series(1, 100)))")
    writer.commit()
    payloads = wait_notifications(3)
    cur.execute("SELECT max(global_position) FROM event_store.global_log")
    json.dump({'payloads': payloads, 'head': cur.fetchone()[0]}, open(out, 'w'))
    sys.exit(0)

member, size, stop = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
pos, events, payloads, wakeups = 0, [], [], 0
while True:
    while True:  # read from our position until empty
        cur.execute("SELECT global_position, stream_id, stream_version "
                    "FROM event_store.read_all(%s, 500, NULL, NULL, %s, %s)", (pos, member, size))
        rows = cur.fetchall()
        if not rows:
            break
        events.extend(rows)
        pos = rows[-1][0]
    if os.path.exists(stop):
        break
    # then wait: woken by a notification (or, rarely, the timeout)
    if select.select([conn], [], [], 5) != ([], [], []):
        conn.poll()
        payloads.extend(n.payload for n in conn.notifies if n.payload.isdigit())
        conn.notifies.clear()
        wakeups += 1
json.dump({'events': events, 'payloads': payloads, 'wakeups': wakeups}, open(out, 'w'))
PY
close($fh);

# --- 1. one transaction, one notification -----------------------------------
system($python, $script, 'one', $dsn, "$dir/one.json") == 0 or die 'the consumer failed';
my $one = slurp_file("$dir/one.json");
my ($payloads) = $one =~ /"payloads": \[([^\]]*)\]/;
my ($head) = $one =~ /"head": (\d+)/;
is($payloads, "\"$head\"", 'one transaction of 100 events: one notification, its payload the new head of the log');

# --- 2. a consumer group of three members -------------------------------------
my $stop = "$dir/stop";
my @members;
for my $m (0 .. 2)
{
	push @members, IPC::Run::start([ $python, $script, 'group', $dsn, "$dir/member$m.json", $m, 3, $stop ]);
}
sleep 1;	# they listen before the first event
my $bench = "$dir/append.sql";
open($fh, '>', $bench) or die;
print $fh q{\set s random(1, 200)
SELECT event_store.append_events('grp-' || :s, '[{"type": "E", "data": {}}, {"type": "E", "data": {}}, {"type": "E", "data": {}}, {"type": "E", "data": {}}, {"type": "E", "data": {}}, {"type": "E", "data": {}}, {"type": "E", "data": {}}, {"type": "E", "data": {}}, {"type": "E", "data": {}}, {"type": "E", "data": {}}]');
};
close($fh);
$node->command_ok([ 'pgbench', '-n', '-c', '4', '-t', '75', '-f', $bench, 'postgres' ],
	'4 clients append 3,000 events in 300 transactions');
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'the pipeline has ordered them');
sleep 1;	# the last notification reaches the members
open($fh, '>', $stop) or die;
close($fh);
$node->safe_psql('postgres', q{NOTIFY event_store_global_log, 'stop'});	# wake them to see the stop file
$_->finish for @members;

# the members' reads, into a table, to be checked with SQL
$node->safe_psql('postgres', 'CREATE TABLE got (member int, global_position bigint, stream_id text, stream_version bigint, n int)');
my ($notifications, $wakeups, $monotonic, $last_is_head) = (0, 0, 1, 1);
my $final_head = $node->safe_psql('postgres', 'SELECT max(global_position) FROM event_store.global_log');
for my $m (0 .. 2)
{
	my $json = slurp_file("$dir/member$m.json");
	my ($events) = $json =~ /"events": \[(.*)\], "payloads"/s;
	my @rows = $events =~ /\[(\d+), "([^"]+)", (\d+)\]/g;
	my @values;
	my $n = 0;
	while (my ($p, $s, $v) = splice(@rows, 0, 3))
	{
		$n++;
		push @values, "($m, $p, '$s', $v, $n)";
	}
	$node->safe_psql('postgres', 'INSERT INTO got VALUES ' . join(', ', @values)) if @values;
	my ($payload_list) = $json =~ /"payloads": \[([^\]]*)\]/;
	my @heads = $payload_list =~ /"(\d+)"/g;
	$notifications += @heads;
	for my $i (1 .. $#heads) { $monotonic = 0 if $heads[$i] <= $heads[ $i - 1 ]; }
	$last_is_head = 0 unless @heads && $heads[-1] == $final_head;
	$wakeups += $1 if $json =~ /"wakeups": (\d+)/;
}
is($node->safe_psql('postgres', q{
	SELECT count(*) || ' ' || count(DISTINCT global_position) FROM got}),
	'3100 3100', 'the members read the 3,000 events and the 100 of part 1, each once');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM event_store.global_log g WHERE NOT EXISTS (SELECT 1 FROM got WHERE got.global_position = g.global_position)}),
	'0', 'no event of the log was missed');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT stream_id FROM got GROUP BY 1 HAVING count(DISTINCT member) > 1) x}),
	'0', 'each stream went to one member');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM got WHERE member <> abs(event_store.stream_hash(stream_id)) % 3}),
	'0', 'the member stream_hash says');
is($node->safe_psql('postgres', q{SELECT count(DISTINCT member) FROM got}), '3', 'every member had a share');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (
	  SELECT global_position < lag(global_position) OVER (PARTITION BY member ORDER BY n) AS bad_log,
	         stream_version <> lag(stream_version) OVER (PARTITION BY stream_id ORDER BY n) + 1 AS bad_stream
	    FROM got) x WHERE bad_log OR bad_stream}),
	'0', 'each member read in log order, each stream in version order');
note "notifications received by the members: $notifications, wake-ups: $wakeups, for 300 transactions";
ok($wakeups > 0, 'the members were woken by notifications');
ok($notifications <= 3 * 300, 'at most one notification per transaction for each member, not one per event (9,000)');
ok($monotonic, 'each notification names a higher head than the one before');
ok($last_is_head, 'the last notification each member got names the head of the log');

$node->stop;
done_testing();
