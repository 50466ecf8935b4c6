# Bad input at volume (issue 12, item 3), in the manner of pgvector's input
# tests: a generator makes thousands of inputs and sends each through the
# extension in its own transaction; every failure must carry a SQLSTATE that
# the README documents (in the function's reference row, or as a general
# argument error), and the server must never crash.
#
# What is generated:
#   - for every public function, every argument in turn replaced by each odd
#     value of its type, the others valid: NULL; text that is empty, 1024 /
#     1025 bytes, multibyte at the limit and past it, control characters,
#     only '-', the extension's own category, 1 MB, invalid UTF-8; bigint and
#     integer 0, -1, 2^31-1, 2^31, 2^63-1, -2^63 and past it; JSON that is
#     not an object, 10,000 levels deep (and deeper: 54001), a payload of
#     EVENT_STORE_BAD_INPUT_MB (default 5) megabytes, huge numbers, \u0000,
#     lone surrogates, 100,000 keys; batches of every wrong shape and of
#     100,000 events; UUIDs, times (infinities, the year 294276),
#     intervals (negative, 178,000,000 years); regprocedure arguments that
#     do not exist, are OID 0, aggregates, procedures, window and
#     set-returning functions, of the wrong signature, raising, recursive
#     (an upcaster that reads its own stream, a reducer that loads its own
#     aggregate, a decider that executes itself), deciders returning
#     scalars, objects, arrays of non-events; paths and name arrays of
#     every wrong shape;
#   - then random combinations of two or three bad arguments (fixed seed);
#   - plain INSERTs with odd values in every column, and COPY with broken
#     lines (FROM PROGRAM, so that each COPY is one input);
#   - the output plugin: every option with bad names and values, and a
#     decoding of everything the inputs appended;
#   - a SQL_ASCII database: bytes that are not UTF-8 everywhere, through
#     appends, reads, personal data, the global log and the plugin.
# Afterwards every stored event reads back, the store passes
# event_store.check(), and the postmaster never restarted.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;
use Time::HiRes qw(time);

my $t0 = time;
my $mb = $ENV{EVENT_STORE_BAD_INPUT_MB} // 5;
my $combos = $ENV{EVENT_STORE_BAD_INPUT_COMBOS} // 2000;
my $kek = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';

my $node = PostgreSQL::Test::Cluster->new('bad_input');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'event_store'
max_worker_processes = 16
event_store.key_encryption_key = '$kek'
event_store.projection_retry_delay = 10ms
event_store.projection_retries = 1
log_statement = none
log_min_messages = warning
log_min_error_statement = panic
statement_timeout = '120s'
});
$node->append_conf('postgresql.conf', "output_plugin_libraries = 'pgoutput, test_decoding, event_store'\n")
  if `postgres --describe-config` =~ /^output_plugin_libraries\t/m;
$node->start;
my $started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');

# --- what the README documents --------------------------------------------
my $readme = slurp_file('README.md');
my ($functions) = $readme =~ /^### Functions\n(.*?)^### /ms;
my ($sqlstate_table) = $readme =~ /^### SQLSTATEs\n(.*?)^## /ms;
die 'README: no function reference or SQLSTATE table' unless $functions && $sqlstate_table;
my %documented;    # function name => { code => 1 }
my %inherits;      # "as `read_stream`": the errors of another row too
for my $row (split /\n/, $functions)
{
	next unless $row =~ /^\| `([a-z_]+)\(/;
	my $fn = $1;
	my @cells = split /\s*\|\s*/, $row;
	my $errors = $cells[-1];
	$documented{$fn}{$_} = 1 for $errors =~ /`([0-9A-Z]{5})`/g;
	while ($errors =~ /`VE(\d\d\d)`(?:–|-)`VE(\d\d\d)`/g)
	{
		$documented{$fn}{ sprintf('VE%03d', $_) } = 1 for $1 .. $2;
	}
	# "the reducer's own errors" and the like: user code may raise anything
	$documented{$fn}{own} = 1 if $errors =~ /own errors/;
	push @{ $inherits{$fn} }, $1 while $errors =~ /\bas `([a-z_]+)`/g;
}
for my $fn (keys %inherits)
{
	for my $from (@{ $inherits{$fn} })
	{
		$documented{$fn}{$_} = 1 for keys %{ $documented{$from} };
	}
}
# the output plugin: the codes its section names
my ($plugin_section) = $readme =~ /^## Streaming events out: the output plugin\n(.*?)^## /ms;
$documented{plugin}{$_} = 1 for $plugin_section =~ /`([0-9A-Z]{5})`/g;
my %in_table = map { $_ => 1 } $sqlstate_table =~ /`([0-9A-Z]{5})`/g;
# argument errors and missing rights, which the table documents for every function
my @general = qw(22004 22023 22P02 22003 42501);
# PostgreSQL's own refusals of an input before the extension sees it (a row of the table)
my $postgres_refusal = qr/^(22021|22P04|22P05|54001|0A000) (invalid byte sequence|missing data for column|extra data after last expected column|unsupported Unicode escape|conversion between|stack depth limit exceeded|array must not contain nulls|row field count|invalid input syntax|COPY)/;
cmp_ok(scalar keys %documented, '>=', 30, 'the README documents the errors of ' . scalar(keys %documented) . ' functions');

# --- the database: fixtures the valid arguments refer to ---------------------
$node->safe_psql('postgres', q{
	CREATE EXTENSION pgcrypto;
	CREATE EXTENSION event_store;
	SELECT event_store.wait_for_pipeline('60 s');
	SELECT 'slot' FROM pg_create_logical_replication_slot('bi_slot', 'event_store');
	CREATE FUNCTION bi_reduce(state jsonb, e event_store.event) RETURNS jsonb LANGUAGE sql
	  AS $$ SELECT jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1) $$;
	CREATE FUNCTION bi_decide(state jsonb, command jsonb) RETURNS jsonb LANGUAGE sql
	  AS $$ SELECT jsonb_build_array(jsonb_build_object('type', 'Decided', 'data', '{}'::jsonb)) $$;
	CREATE FUNCTION bi_up(data jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT data $$;
	CREATE FUNCTION bi_handle(e event_store.event) RETURNS void LANGUAGE sql AS $$ SELECT $$;
	CREATE FUNCTION bi_reset() RETURNS void LANGUAGE sql AS $$ SELECT $$;
	-- wrong shapes
	CREATE PROCEDURE bi_proc(data jsonb) LANGUAGE sql AS $$ SELECT $$;
	CREATE FUNCTION bi_setof(data jsonb) RETURNS SETOF jsonb LANGUAGE sql AS $$ SELECT data $$;
	CREATE FUNCTION bi_void(data jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;
	CREATE FUNCTION bi_text(data text) RETURNS text LANGUAGE sql AS $$ SELECT data $$;
	CREATE FUNCTION bi_raise(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN RAISE EXCEPTION 'raised by user code' USING ERRCODE = 'AB123'; END $$;
	CREATE FUNCTION bi_raise2(state jsonb, x jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN RAISE EXCEPTION 'raised by user code' USING ERRCODE = 'AB123'; END $$;
	CREATE FUNCTION bi_raise_reduce(state jsonb, e event_store.event) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN RAISE EXCEPTION 'raised by user code' USING ERRCODE = 'AB123'; END $$;
	CREATE FUNCTION bi_raise_handle(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN RAISE EXCEPTION 'raised by user code' USING ERRCODE = 'AB123'; END $$;
	CREATE FUNCTION bi_null_reduce(state jsonb, e event_store.event) RETURNS jsonb LANGUAGE sql AS $$ SELECT NULL::jsonb $$;
	-- deciders that return what is not a batch
	CREATE FUNCTION bi_decide_scalar(state jsonb, command jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '5'::jsonb $$;
	CREATE FUNCTION bi_decide_object(state jsonb, command jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '{"type": "E", "data": {}}'::jsonb $$;
	CREATE FUNCTION bi_decide_null(state jsonb, command jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT NULL::jsonb $$;
	CREATE FUNCTION bi_decide_jnull(state jsonb, command jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT 'null'::jsonb $$;
	CREATE FUNCTION bi_decide_numbers(state jsonb, command jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '[1, 2, 3]'::jsonb $$;
	CREATE FUNCTION bi_decide_nested(state jsonb, command jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '[[{"type": "E", "data": {}}]]'::jsonb $$;
	CREATE FUNCTION bi_decide_badkey(state jsonb, command jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '[{"type": "E", "data": {}, "extra": 1}]'::jsonb $$;
	CREATE FUNCTION bi_decide_command(state jsonb, command jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT command $$;
	CREATE FUNCTION bi_decide_many(state jsonb, command jsonb) RETURNS jsonb LANGUAGE sql
	  AS $$ SELECT jsonb_agg(jsonb_build_object('type', 'Many', 'data', jsonb_build_object('i', i))) FROM generate_series(1, 20000) i $$;
	-- recursion through the extension
	CREATE FUNCTION bi_rec_up(data jsonb) RETURNS jsonb LANGUAGE sql
	  AS $$ SELECT coalesce((SELECT r.data FROM event_store.read_stream('bi-rec') r LIMIT 1), data) $$;
	CREATE FUNCTION bi_rec_reduce(state jsonb, e event_store.event) RETURNS jsonb LANGUAGE sql
	  AS $$ SELECT (SELECT a.state FROM event_store.load_aggregate(e.stream_id, 'bi_rec_agg') a) $$;
	CREATE FUNCTION bi_rec_decide(state jsonb, command jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
	  PERFORM event_store.execute('bi-rec', 'bi_agg', 'bi_rec_decide(jsonb, jsonb)', command);
	  RETURN '[]';
	END $$;
	CREATE FUNCTION bi_rec_handle(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN PERFORM event_store.append(e.stream_id, 'Again', '{}'); END $$;
	SELECT event_store.define_aggregate('bi_agg', 'bi_reduce(jsonb, event_store.event)', '{}', 2);
	SELECT event_store.define_aggregate('bi_rec_agg', 'bi_rec_reduce(jsonb, event_store.event)');
	SELECT event_store.define_aggregate('bi_raise_agg', 'bi_raise_reduce(jsonb, event_store.event)');
	SELECT event_store.define_aggregate('bi_null_agg', 'bi_null_reduce(jsonb, event_store.event)');
	SELECT event_store.append_events('bi-fixed', '[{"type": "E", "data": {"k": 1}}, {"type": "E", "data": {"k": 2}}, {"type": "E", "data": {"k": 3}}]');
	SELECT event_store.append('bi-rec', 'Rec', '{}');
	SELECT event_store.create_projection('bi_proj', 'bi_handle(event_store.event)', reset => 'bi_reset()');
	CREATE FUNCTION bi_handle_inline(e event_store.event) RETURNS void LANGUAGE plpgsql AS $$ BEGIN END $$;
	SELECT event_store.create_projection('bi_inline', 'bi_handle_inline(event_store.event)', mode => 'inline', reset => 'bi_reset()', start => 'now');
	SELECT event_store.protect('BiSecret', '$.who', '{$.secret}');
	SELECT event_store.append('bi-secret', 'BiSecret', '{"who": "bi-subject", "secret": "s"}');
	CREATE ROLE bi_nobody;
	CREATE FUNCTION bi_try(q text, keep boolean) RETURNS text LANGUAGE plpgsql AS $$
	BEGIN
	  BEGIN
	    EXECUTE q;
	    IF NOT keep THEN RAISE EXCEPTION USING ERRCODE = 'BI999'; END IF;
	    RETURN 'ok';
	  EXCEPTION WHEN OTHERS THEN
	    RETURN CASE WHEN SQLSTATE = 'BI999' THEN 'ok'
	                ELSE SQLSTATE || ' ' || replace(left(SQLERRM, 160), E'\n', ' ') END;
	  END;
	END $$;
});

# --- the odd values of each type -----------------------------------------------
my $big = "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, " . int($mb * 1024 * 1024 / 32) . ") i)";
my %odd;
{
	my $type;
	for my $line (split /\n/, <<'EOV')
== text
NULL
''
' '
'-'
'---'
repeat('a', 1024)
repeat('a', 1025)
repeat('é', 512)
repeat('é', 513)
E'\x01\x02\x1f'
E'tab\there'
E'new\nline'
'event_store'
'event_store-x'
'Ωμέγα-1'
'🙂-1'
repeat('x', 1000000)
E'\xff\xfe'
'"quoted''s\'
'%s%n%x'
'a-b-c-d'
'e' || chr(769) || '-1'
'$.x'
'async'
'inline'
'park'
'now'
== bigint
NULL
0
-1
1
2
2147483647
2147483648
9223372036854775807
(-9223372036854775807 - 1)
'9223372036854775808'
== integer
NULL
0
-1
1
2147483647
(-2147483647 - 1)
'2147483648'
'9223372036854775807'
== jsonb
NULL
'{}'
'[]'
'null'
'1'
'"s"'
'true'
'{"a":'
''
(repeat('[', 10000) || repeat(']', 10000))::jsonb
('{"deep": ' || repeat('{"a": ', 10000) || '1' || repeat('}', 10000) || '}')::jsonb
(repeat('[', 200000) || repeat(']', 200000))::jsonb
jsonb_build_object('big', BIG)
'{"n": 1e100000, "m": -1e-100000, "i": 123456789012345678901234567890}'
'{"s": "\u0000"}'
'{"s": "\ud800"}'
'{"s": "\uD83D\uDE00 \u00e9"}'
(SELECT jsonb_object_agg('k' || i, i) FROM generate_series(1, 100000) i)
jsonb_build_object(repeat('k', 1000000), 1)
'{"type": "E", "data": {}}'
'[{"type": "E", "data": {}}]'
'[{"type": "E"}]'
'[{"data": {}}]'
'[{"type": 1, "data": {}}]'
'[{"type": "E", "data": []}]'
'[{"type": "E", "data": {}, "id": "not-a-uuid"}]'
'[{"type": "E", "data": {}, "schema_version": 1e10}]'
'[{"type": "E", "data": {}, "schema_version": -1}]'
'[{"type": "E", "data": {}, "schema_version": "2"}]'
'[{"type": "E", "data": {}, "metadata": []}]'
'[{"type": "E", "data": {}, "metadata": {"protected": 1}}]'
'[{"type": "E", "data": {}, "typo": 1}]'
'[{"type": "", "data": {}}]'
'[1, 2]'
'[[]]'
'[null]'
'[{"type": "E", "data": {}, "id": "00000000-0000-0000-0000-000000000001"}, {"type": "F", "data": {}, "id": "00000000-0000-0000-0000-000000000001"}]'
(SELECT jsonb_agg(jsonb_build_object('type', 'Bulk', 'data', jsonb_build_object('i', i))) FROM generate_series(1, 100000) i)
'{"protected": {"key": "x", "fields": ["$.a"]}}'
'{"correlation_id": 5}'
== uuid
NULL
'00000000-0000-0000-0000-000000000000'
'ffffffff-ffff-ffff-ffff-ffffffffffff'
'not-a-uuid'
'00000000-0000-0000-0000-000000000001'
== boolean
NULL
true
false
== timestamptz
NULL
'infinity'
'-infinity'
'4713-01-01 00:00+00 BC'
'294276-12-31 23:59:59+00'
'epoch'
'yesterday'
== interval
NULL
'0'
'-1 us'
'-178000000 years'
'178000000 years'
'1 us'
'100 ms'
'2147483647 days'
'-2147483648 months'
== regprocedure
NULL
'0'
'4294967295'
'bi_nonexistent(jsonb)'
'pg_catalog.count("any")'
'bi_proc(jsonb)'
'pg_catalog.row_number()'
'bi_setof(jsonb)'
'bi_void(jsonb)'
'bi_text(text)'
'pg_catalog.jsonb_strip_nulls(jsonb)'
'pg_catalog.jsonb_concat(jsonb, jsonb)'
'bi_raise(jsonb)'
'bi_raise2(jsonb, jsonb)'
'bi_raise_reduce(jsonb, event_store.event)'
'bi_raise_handle(event_store.event)'
'bi_null_reduce(jsonb, event_store.event)'
'bi_decide_scalar(jsonb, jsonb)'
'bi_decide_object(jsonb, jsonb)'
'bi_decide_null(jsonb, jsonb)'
'bi_decide_jnull(jsonb, jsonb)'
'bi_decide_numbers(jsonb, jsonb)'
'bi_decide_nested(jsonb, jsonb)'
'bi_decide_badkey(jsonb, jsonb)'
'bi_decide_command(jsonb, jsonb)'
'bi_decide_many(jsonb, jsonb)'
'bi_rec_up(jsonb)'
'bi_rec_reduce(jsonb, event_store.event)'
'bi_rec_decide(jsonb, jsonb)'
'bi_rec_handle(event_store.event)'
'event_store._version_events()'
'event_store.append(text, text, jsonb, jsonb, bigint, uuid, integer)'
== text[]
NULL
'{}'
'{NULL}'
'{""}'
'{{a},{b}}'
'{a,a}'
(SELECT array_agg('n' || i) FROM generate_series(1, 10000) i)
'{$}'
'{$.}'
'{$..a}'
'{$.a[0]}'
'{$.*}'
'{$.a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q}'
'{$.a,$.a.b}'
(SELECT array_agg('$.f' || i) FROM generate_series(1, 33) i)
'{$.é}'
ARRAY[repeat('a', 1025)]
'{event_store}'
'[0:0]={$.x}'
EOV
	{
		if ($line =~ /^== (\S+)$/) { $type = $1; next; }
		$line =~ s/BIG/$big/;
		push @{ $odd{$type} }, $line;
	}
}

# The public functions, their arguments (name, type, a valid value) and
# whether an input's effects are kept (appends: the plugin and the read
# paths see them afterwards) or rolled back (everything else, so that one
# input never changes what the next one meets).
my $s = 'STREAM';    # replaced by a fresh stream id per input
my @functions = (
	[ 'check', 0, [ [ 'timeout', 'interval', q{'1 s'} ] ] ],    # first: while the store is small
	[ 'append', 1, [ [ 'stream_id', 'text', "'$s'" ], [ 'event_type', 'text', q{'E'} ], [ 'data', 'jsonb', q{'{}'} ],
		[ 'metadata', 'jsonb', 'NULL' ], [ 'expected_version', 'bigint', 'NULL' ], [ 'event_id', 'uuid', 'NULL' ],
		[ 'schema_version', 'integer', 'NULL' ] ] ],
	[ 'append_events', 1, [ [ 'stream_id', 'text', "'$s'" ], [ 'events', 'jsonb', q{'[{"type": "E", "data": {}}]'} ],
		[ 'expected_version', 'bigint', 'NULL' ] ] ],
	[ 'read_stream', 0, [ [ 'stream_id', 'text', q{'bi-fixed'} ], [ 'from_version', 'bigint', 'NULL' ],
		[ 'max_count', 'integer', 'NULL' ], [ 'backwards', 'boolean', 'false' ], [ 'as_of', 'timestamptz', 'NULL' ] ] ],
	[ 'stream_version', 0, [ [ 'stream_id', 'text', q{'bi-fixed'} ] ] ],
	[ 'current_schema_version', 0, [ [ 'event_type', 'text', q{'E'} ] ] ],
	[ 'add_upcaster', 0, [ [ 'event_type', 'text', q{'BiUp'} ], [ 'from_schema_version', 'integer', '1' ],
		[ 'upcaster', 'regprocedure', q{'bi_up(jsonb)'} ], [ 'to_event_type', 'text', 'NULL' ] ] ],
	[ 'drop_upcaster', 0, [ [ 'event_type', 'text', q{'Rec'} ], [ 'from_schema_version', 'integer', '1' ] ] ],
	[ 'define_aggregate', 0, [ [ 'name', 'text', q{'bi_new'} ], [ 'reducer', 'regprocedure', q{'bi_reduce(jsonb, event_store.event)'} ],
		[ 'initial_state', 'jsonb', q{'{}'} ], [ 'snapshot_every', 'integer', 'NULL' ] ] ],
	[ 'load_aggregate', 0, [ [ 'stream_id', 'text', q{'bi-fixed'} ], [ 'aggregate', 'text', q{'bi_agg'} ],
		[ 'as_of', 'timestamptz', 'NULL' ], [ 'at_version', 'bigint', 'NULL' ] ] ],
	[ 'save_snapshot', 0, [ [ 'stream_id', 'text', q{'bi-fixed'} ], [ 'aggregate', 'text', q{'bi_agg'} ],
		[ 'version', 'bigint', '1' ], [ 'state', 'jsonb', q{'{}'} ] ] ],
	[ 'load_snapshot', 0, [ [ 'stream_id', 'text', q{'bi-fixed'} ], [ 'aggregate', 'text', q{'bi_agg'} ] ] ],
	[ 'delete_snapshots', 0, [ [ 'stream_id', 'text', q{'bi-fixed'} ], [ 'aggregate', 'text', q{'bi_agg'} ] ] ],
	[ 'execute', 0, [ [ 'stream_id', 'text', "'$s'" ], [ 'aggregate', 'text', q{'bi_agg'} ],
		[ 'decider', 'regprocedure', q{'bi_decide(jsonb, jsonb)'} ], [ 'command', 'jsonb', q{'{}'} ] ] ],
	[ 'protect', 0, [ [ 'event_type', 'text', q{'BiNew'} ], [ 'subject', 'text', q{'$.who'} ], [ 'fields', 'text[]', q{'{$.x}'} ] ] ],
	[ 'forget', 0, [ [ 'subject', 'text', q{'bi-subject'} ] ] ],
	[ 'rewrap_keys', 0, [] ],
	[ 'personal_data_access', 0, [] ],
	[ 'subject_streams', 0, [ [ 'subject', 'text', q{'bi-subject'} ] ] ],
	[ 'read_all', 0, [ [ 'after_position', 'bigint', '0' ], [ 'max_count', 'integer', '10' ],
		[ 'categories', 'text[]', 'NULL' ], [ 'event_types', 'text[]', 'NULL' ] ] ],
	[ 'read_all', 0, [ [ 'after_position', 'bigint', '0' ], [ 'max_count', 'integer', '10' ],
		[ 'categories', 'text[]', 'NULL' ], [ 'event_types', 'text[]', 'NULL' ],
		[ 'consumer_group_member', 'integer', '1' ], [ 'consumer_group_size', 'integer', '3' ] ] ],
	[ 'stream_hash', 0, [ [ 'stream_id', 'text', q{'bi-fixed'} ] ] ],
	[ 'save_position', 0, [ [ 'consumer', 'text', q{'bi-consumer'} ], [ 'global_position', 'bigint', '0' ] ] ],
	[ 'load_position', 0, [ [ 'consumer', 'text', q{'bi-consumer'} ] ] ],
	[ 'wait_for_pipeline', 0, [ [ 'timeout', 'interval', q{'1 s'} ] ] ],
	[ 'publish', 1, [ [ 'topic', 'text', q{'bi.topic'} ], [ 'payload', 'jsonb', q{'{}'} ], [ 'key', 'text', 'NULL' ] ] ],
	[ 'create_projection', 0, [ [ 'name', 'text', q{'bi_new_proj'} ], [ 'handler', 'regprocedure', q{'bi_handle(event_store.event)'} ],
		[ 'event_types', 'text[]', 'NULL' ], [ 'categories', 'text[]', 'NULL' ], [ 'mode', 'text', q{'async'} ],
		[ 'reset', 'regprocedure', 'NULL' ], [ 'on_error', 'text', q{'stop'} ], [ 'start', 'text', q{'beginning'} ] ] ],
	[ 'drop_projection', 0, [ [ 'name', 'text', q{'bi_proj'} ] ] ],
	[ 'pause_projection', 0, [ [ 'name', 'text', q{'bi_proj'} ] ] ],
	[ 'resume_projection', 0, [ [ 'name', 'text', q{'bi_proj'} ] ] ],
	[ 'rebuild_projection', 0, [ [ 'name', 'text', q{'bi_proj'} ] ] ],
	[ 'replay_parked', 0, [ [ 'name', 'text', q{'bi_proj'} ] ] ],
	[ 'discard_parked', 0, [ [ 'name', 'text', q{'bi_proj'} ], [ 'stream_id', 'text', 'NULL' ], [ 'stream_version', 'bigint', 'NULL' ] ] ],
	[ 'wait_for_projection', 0, [ [ 'name', 'text', q{'bi_proj'} ], [ 'timeout', 'interval', q{'1 s'} ] ] ],
);

# every public function of the extension is generated for
my %generated = map { $_->[0] => 1 } @functions;
my @missing = grep { !$generated{$_} } split /\n/, $node->safe_psql('postgres', q{
	SELECT DISTINCT p.proname FROM pg_depend d JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
	 WHERE d.deptype = 'e' AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'event_store')
	   AND p.proname NOT LIKE '\_%' ORDER BY 1});
is(join(', ', @missing), '', 'every public function gets generated inputs');

# --- the inputs ---------------------------------------------------------------
my @inputs;    # [ label, function (documentation row), sql, keep, user code ]
my $n = 0;
sub call_sql
{
	my ($fn, $args) = @_;
	my $sql = "SELECT count(*) FROM event_store.\"$fn\"(" . join(', ', map { "$_->[0] => $_->[1]" } @$args) . ')';
	$n++;
	$sql =~ s/$s/bi-g$n/g;
	return $sql;
}
# does an input run user code that may raise its own errors?
sub user_code { my ($sql) = @_; return $sql =~ /bi_(raise|rec_|null_reduce|decide_|text|proc|setof|void)|jsonb_concat|row_number/ ? 1 : 0; }

for my $f (@functions)
{
	my ($fn, $keep, $args) = @$f;
	push @inputs, [ "$fn()", $fn, call_sql($fn, [ map { [ $_->[0], $_->[2] ] } @$args ]), $keep ];
	for my $i (0 .. $#$args)
	{
		for my $v (@{ $odd{ $args->[$i][1] } })
		{
			my @a = map { [ $_->[0], $_->[2] ] } @$args;
			$a[$i][1] = $v;
			push @inputs, [ "$fn($args->[$i][0] => $v)", $fn, call_sql($fn, \@a), $keep ];
		}
	}
}
# random combinations of two or three bad arguments
srand(12);
my @with_args = grep { @{ $_->[2] } >= 2 } @functions;
for (1 .. $combos)
{
	my ($fn, $keep, $args) = @{ $with_args[ int(rand(@with_args)) ] };
	my @a = map { [ $_->[0], $_->[2] ] } @$args;
	my @label;
	for (1 .. 2 + int(rand(2)))
	{
		my $i = int(rand(@$args));
		my $vals = $odd{ $args->[$i][1] };
		my $v = $vals->[ int(rand(@$vals)) ];
		next if $v =~ /generate_series|repeat\(|string_agg/;    # the heavy ones are tried alone above
		$a[$i][1] = $v;
		push @label, "$args->[$i][0] => $v";
	}
	push @inputs, [ "$fn(" . join(', ', @label) . ')', $fn, call_sql($fn, \@a), $keep ];
}
# plain INSERT: each column odd in turn
my @columns = ([ 'stream_id', 'text', "'$s'" ], [ 'stream_version', 'bigint', 'NULL' ], [ 'event_id', 'uuid', 'NULL' ],
	[ 'event_type', 'text', q{'E'} ], [ 'schema_version', 'integer', 'NULL' ], [ 'data', 'jsonb', q{'{}'} ],
	[ 'metadata', 'jsonb', 'NULL' ], [ 'recorded_at', 'timestamptz', 'NULL' ]);
for my $i (0 .. $#columns)
{
	for my $v (@{ $odd{ $columns[$i][1] } })
	{
		my @c = map { $_->[2] } @columns;
		$c[$i] = $v;
		$n++;
		my $sql = 'INSERT INTO event_store.events (' . join(', ', map { $_->[0] } @columns) . ') VALUES (' . join(', ', @c) . ')';
		$sql =~ s/$s/bi-g$n/g;
		push @inputs, [ "INSERT($columns[$i][0] => $v)", 'append', $sql, 1 ];
	}
}
# COPY from files with broken lines (FROM PROGRAM: one input each)
my $dir = PostgreSQL::Test::Utils::tempdir;
my @copies = (
	"bi-copy-1\tE\t{}\n", "bi-copy-2\tE\t{\"a\":\n", "bi-copy-3\tE\n", "bi-copy-4\tE\t{}\textra\n", "\\N\tE\t{}\n",
	"bi-copy-5\t\\N\t{}\n", "bi-copy-6\tE\t[1]\n", "bi-copy-7\tE\t{\"s\": \"\\\\u0000\"}\n", "\xff\xfe\tE\t{}\n",
	"bi-copy-8\tE\t{}\nbi-copy-8\tE\t{\"ok\": 1}\nbi-copy-8\tE\tnot json\n", "bi-copy-9\t" . ('t' x 2000) . "\t{}\n",
	"event_store-copy\tE\t{}\n", "bi-copy-10\tE\t{\"x\": " . ('[' x 5000) . (']' x 5000) . "}\n", "\\.\n", "",
	join('', map { "bi-copy-11\tE\t{\"i\": $_}\n" } 1 .. 20000));
for my $i (0 .. $#copies)
{
	my $file = "$dir/copy$i.tsv";
	open(my $fh, '>:raw', $file) or die $!;
	print $fh $copies[$i];
	close($fh);
	push @inputs, [ "COPY(file $i)", 'append', "COPY event_store.events (stream_id, event_type, data) FROM PROGRAM 'cat $file'", 1 ];
}
push @inputs, [ 'COPY(binary garbage)', 'append',
	"COPY event_store.events (stream_id, event_type, data) FROM PROGRAM 'head -c 4096 /dev/urandom' WITH (FORMAT binary)", 1 ];
# recursion through the extension: an upcaster that reads its own stream
# (registered in the same, rolled-back, transaction), a reducer that loads its
# own aggregate, a decider that executes itself (in the regprocedure values)
push @inputs, [ 'recursive upcaster', 'read_stream',
	"SELECT event_store.add_upcaster('Rec', 1, 'bi_rec_up(jsonb)'); SELECT count(*) FROM event_store.read_stream('bi-rec')", 0 ];
push @inputs, [ 'recursive upcaster, read_all', 'read_all',
	"SELECT event_store.add_upcaster('Rec', 1, 'bi_rec_up(jsonb)'); SELECT count(*) FROM event_store.read_all(0, 100)", 0 ];
push @inputs, [ 'recursive reducer', 'load_aggregate', "SELECT count(*) FROM event_store.load_aggregate('bi-fixed', 'bi_rec_agg')", 0 ];
push @inputs, [ 'raising reducer', 'load_aggregate', "SELECT count(*) FROM event_store.load_aggregate('bi-fixed', 'bi_raise_agg')", 0 ];
push @inputs, [ 'null-returning reducer', 'load_aggregate', "SELECT count(*) FROM event_store.load_aggregate('bi-fixed', 'bi_null_agg')", 0 ];
push @inputs, [ 'raising upcaster', 'read_stream',
	"SELECT event_store.add_upcaster('E', 1, 'bi_raise(jsonb)'); SELECT count(*) FROM event_store.read_stream('bi-fixed')", 0 ];
push @inputs, [ 'upcaster returning a non-object', 'read_stream',
	"SELECT event_store.add_upcaster('E', 1, 'pg_catalog.jsonb_strip_nulls(jsonb)'); SELECT event_store.append('bi-arr', 'E', '{}', schema_version => 1); "
	  . "SELECT count(*) FROM event_store.read_stream('bi-fixed')", 0 ];

# as a role with no rights: every function refused with 42501
for my $f (@functions)
{
	my ($fn, $keep, $args) = @$f;
	push @inputs, [ "$fn() as bi_nobody", $fn,
		'SET LOCAL ROLE bi_nobody; ' . call_sql($fn, [ map { [ $_->[0], $_->[2] ] } @$args ]), 0 ];
}

# --- running them: each its own transaction; a crash is noticed and survived --
sub run_inputs
{
	my ($db, $list) = @_;
	my %result;
	my $from = 0;
	my $crashes = 0;
	while ($from <= $#$list)
	{
		my $script = "\\set ON_ERROR_STOP off\n";
		for my $i ($from .. $#$list)
		{
			my ($label, $fn, $sql, $keep) = @{ $list->[$i] };
			$script .= "SELECT $i, bi_try(\$bi\$$sql\$bi\$, " . ($keep ? 'true' : 'false') . ");\n";
		}
		my $file = "$dir/inputs.sql";
		open(my $fh, '>:raw', $file) or die $!;
		print $fh $script;
		close($fh);
		my ($stdout, $stderr) = ('', '');
		IPC::Run::run([ 'psql', '-X', '-A', '-t', '-q', '-h', $node->host, '-p', $node->port, '-d', $db, '-f', $file ],
			'>', \$stdout, '2>', \$stderr);
		my $last = $from - 1;
		for my $line (split /\n/, $stdout)
		{
			next unless $line =~ /^(\d+)\|(.*)$/;
			$result{$1} = $2;
			$last = $1 if $1 > $last;
		}
		last if $last >= $#$list;
		# the connection was lost: the input after the last answered one
		$crashes++;
		$result{ $last + 1 } = 'CRASH';
		diag("connection lost at input " . ($last + 1) . ": $list->[$last + 1][0]\n" . substr($stderr, -500));
		$node->poll_query_until('postgres', 'SELECT true') or die 'the server did not come back';
		$from = $last + 2;
	}
	return (\%result, $crashes);
}

my ($results, $crashes) = run_inputs('postgres', \@inputs);

# --- the output plugin: decoding everything appended, then bad options --------
# everything the inputs appended, decoded as JSON documents
is($node->safe_psql('postgres', q{
	SELECT count(*) > 1000 FROM pg_logical_slot_get_changes('bi_slot', NULL, NULL) c WHERE (c.data::jsonb)->>'kind' = 'event'}),
	't', 'the output plugin decodes every event the inputs appended, as JSON');
# a few odd events and messages for the options to filter
$node->safe_psql('postgres', q{
	SELECT event_store.append('bi-plugin-1', 'E', ('{"deep": ' || repeat('[', 5000) || repeat(']', 5000) || '}')::jsonb);
	SELECT event_store.append('Ωμέγα-2', 'Ünïcode', '{"s": "\uD83D\uDE00 \u00e9"}');
	SELECT event_store.append('bi-plugin-2', 'E', jsonb_build_object('k', repeat('v', 100000)));
	SELECT event_store.publish('bi.topic', '{"n": 1e100}', 'k');
	SELECT event_store.publish('é', '[1, 2]');
});
my @plugin = ([ 'no options', '' ]);
for my $opt ('categories', 'event-types', 'topics', 'include-events', 'include-messages', 'format', 'Categories', '', 'categories ')
{
	for my $v (q{''}, q{'a'}, q{'a,,b'}, q{','}, q{' '}, q{'true'}, q{'false'}, q{'maybe'}, q{'on'}, q{'off'}, 'NULL',
		q{repeat('c', 100000)}, q{'é,🙂'}, q{E'\x01'}, q{'bi,bi-g1,event_store'})
	{
		push @plugin, [ "option '$opt' => $v", ", '$opt', $v" ];
	}
}
push @plugin, [ 'an option without a value', q{, 'categories'} ];
push @plugin, [ 'options repeated', q{, 'categories', 'a', 'categories', 'b'} ];
my @plugin_inputs;
for my $p (@plugin)
{
	push @plugin_inputs, [ "plugin: $p->[0]", 'plugin', "SELECT count(*) FROM pg_logical_slot_peek_changes('bi_slot', NULL, NULL$p->[1])", 0 ];
}
for my $upto ('NULL', '0', '-1', '2147483647')
{
	push @plugin_inputs, [ "plugin: upto_nchanges $upto", 'plugin', "SELECT count(*) FROM pg_logical_slot_peek_changes('bi_slot', NULL, $upto)", 0 ];
}
my ($plugin_results, $plugin_crashes) = run_inputs('postgres', \@plugin_inputs);
$crashes += $plugin_crashes;

# --- a SQL_ASCII database: bytes that are not UTF-8 -----------------------------
$node->safe_psql('postgres', q{CREATE DATABASE bi_ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0});
$node->safe_psql('bi_ascii', q{
	CREATE EXTENSION pgcrypto;
	CREATE EXTENSION event_store;
	SELECT event_store.wait_for_pipeline('60 s');
	SELECT 'slot' FROM pg_create_logical_replication_slot('bi_ascii_slot', 'event_store');
	CREATE FUNCTION bi_try(q text, keep boolean) RETURNS text LANGUAGE plpgsql AS $$
	BEGIN
	  EXECUTE q;
	  RETURN 'ok';
	EXCEPTION WHEN OTHERS THEN
	  RETURN SQLSTATE || ' ' || replace(left(SQLERRM, 160), E'\n', ' ');
	END $$;
	SELECT event_store.protect('AsciiSecret', '$.who', '{$.secret}');
});
my @ascii;
for my $v (q{E'\xff\xfe-1'}, q{E'caf\xe9-1'}, q{E'\x80'}, q{E'\xc3\xa9-ok'}, q{E'\xed\xa0\x80-1'}, q{repeat(E'\xe9', 1024)},
	q{repeat(E'\xe9', 1025)})
{
	push @ascii, [ "ascii append stream_id => $v", 'append', "SELECT event_store.append($v, 'E', '{}')", 1 ];
	push @ascii, [ "ascii append event_type => $v", 'append', "SELECT event_store.append('ascii-1', $v, '{}')", 1 ];
	push @ascii, [ "ascii append data => $v", 'append', "SELECT event_store.append('ascii-2', 'E', jsonb_build_object('s', $v))", 1 ];
	push @ascii, [ "ascii protected => $v", 'append',
		"SELECT event_store.append('ascii-3', 'AsciiSecret', jsonb_build_object('who', $v, 'secret', $v))", 1 ];
	push @ascii, [ "ascii read_stream => $v", 'read_stream', "SELECT count(*) FROM event_store.read_stream($v)", 0 ];
	push @ascii, [ "ascii forget => $v", 'forget', "SELECT event_store.forget($v)", 0 ];
	push @ascii, [ "ascii publish => $v", 'publish', "SELECT event_store.publish($v, jsonb_build_object('s', $v), $v)", 1 ];
	push @ascii, [ "ascii read_all => $v", 'read_all', "SELECT count(*) FROM event_store.read_all(0, 100, ARRAY[$v], ARRAY[$v])", 0 ];
}
for my $v (q{'{"s": "\u00e9"}'}, q{'{"s": "\u0041"}'}, q{'{"s": "\uD83D\uDE00"}'})
{
	push @ascii, [ "ascii JSON escape $v", 'append', "SELECT event_store.append('ascii-4', 'E', $v)", 1 ];
}
my ($ascii_results, $ascii_crashes) = run_inputs('bi_ascii', \@ascii);
$crashes += $ascii_crashes;
is($node->safe_psql('bi_ascii', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'SQL_ASCII: the pipeline orders the events');
my ($rc, $out, $err) = $node->psql('bi_ascii', q{
	SELECT count(*) FROM event_store.read_all(0, 100000);
	SELECT count(*) FROM pg_logical_slot_get_changes('bi_ascii_slot', NULL, NULL);
	SELECT count(*) FROM event_store.check('30 s')});
is($rc, 0, 'SQL_ASCII: read_all and the output plugin over bytes that are not UTF-8') or diag($err);
like($out, qr/^\d+\n\d+\n0$/, 'SQL_ASCII: read back, decoded, consistent');

# --- judging ----------------------------------------------------------------
my (%codes, %undocumented, %not_in_table);
my $tried = 0;
for my $set ([ \@inputs, $results ], [ \@plugin_inputs, $plugin_results ], [ \@ascii, $ascii_results ])
{
	my ($list, $res) = @$set;
	for my $i (0 .. $#$list)
	{
		my ($label, $fn, $sql) = @{ $list->[$i] };
		my $r = $res->{$i} // 'no answer';
		$tried++;
		next if $r eq 'ok';
		my ($code) = $r =~ /^([0-9A-Z]{5}) /;
		$code //= $r;
		$codes{$code}++;
		my $user = user_code($sql);
		next if $code eq 'AB123' && $user;    # raised by the user's own function, passed through
		my $ok = $documented{$fn}{$code} || grep { $_ eq $code } @general;
		$ok ||= $r =~ $postgres_refusal && $in_table{$1};
		$ok ||= $user && $documented{$fn}{own} && $in_table{$code};
		push @{ $undocumented{"$fn $code"} }, "$label: $r" unless $ok;
		$not_in_table{$code} = 1 unless $in_table{$code} || ($code eq 'AB123');
	}
}
note sprintf('%d inputs tried, %d distinct SQLSTATEs: %s', $tried, scalar(keys %codes),
	join(' ', map { "$_ x$codes{$_}" } sort keys %codes));
cmp_ok($tried, '>=', 3000, "$tried inputs tried");
is(join(' ', sort keys %not_in_table), '', 'every SQLSTATE seen is in the README\'s SQLSTATE table');
is(join("\n", map { "$_ (" . scalar(@{ $undocumented{$_} }) . " inputs, e.g. $undocumented{$_}[0])" } sort keys %undocumented), '',
	'every failure carries a SQLSTATE its function\'s reference row documents');
is($crashes, 0, 'no input crashed the server');
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started, 'the postmaster never restarted');
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal|PANIC|TRAP:/, 'no server process died');

# --- afterwards: everything reads back, and the store is consistent ------------
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('120 s')}), 't', 'the pipeline ordered every event the inputs appended');
($rc, $out, $err) = $node->psql('postgres', q{
	SELECT count(*) FROM event_store.streams s, LATERAL event_store.read_stream(s.stream_id) r});
is($rc, 0, "every stream reads back ($out events)") or diag($err);
($rc, $out, $err) = $node->psql('postgres', q{
	SELECT count(*) FROM event_store.read_all(0, 2147483647)});
is($rc, 0, "the global log reads back ($out events)") or diag($err);
is($node->safe_psql('postgres', q{
	SELECT coalesce(string_agg(kind || ' ' || object || ': ' || detail, E'\n'), '') FROM event_store.check('60 s')}),
	'', 'event_store.check() after all of it: consistent');
note sprintf('bad input: %.0f s', time - $t0);

$node->stop;
done_testing();
