# Shared by test/bench/run and test/bench/compare (sourced after test/lib.sh,
# from the repository's root): the benchmark cluster's settings and scripts,
# the measurements, and the cases.  The functions work on the cluster in
# $dir (its socket directory, with the scripts) on port $port, and read
# $clients, $duration and $pairs; $bench_pgbench_opts holds the pgbench
# options of every measured run: prepared statements, as applications use
# them, for the event_store side and its baseline alike.
bench_pgbench_opts=${bench_pgbench_opts:--M prepared}

# Settings beyond test/event_store.conf.  The key-encryption key for the
# crypto case starts with a letter: start_cluster writes settings unquoted.
bench_settings=("shared_buffers = '1GB'" "max_wal_size = '8GB'" "checkpoint_timeout = '30min'"
	"max_connections = 50"
	"event_store.key_encryption_key = 'aa112233445566778899aabbccddeeffaa112233445566778899aabbccddeeff'")

# Every case runs with the pipeline on, as users run it: each write case
# reports, besides its tps, the backlog its run left in the global log, the
# time that backlog took to drain, and the rate sustained counting the drain;
# and a row with the pipeline off beside it, labelled, for comparison.
# bench_order CASE...: the cases in the order they run (as given).
bench_order() { echo "$@"; }

# The batch scripts: $1 events in one transaction to a stream batch-N, as
# one JSON array for append_events (what a client sends), and, for the
# floor, one prepared INSERT of the same rows (same columns and payload).
bench_batch() {
	local i
	{
		echo '\set sid random(1, 10000)'
		printf "SELECT event_store.append_events('batch-' || :sid, '["
		for i in $(seq 1 "$1"); do
			((i > 1)) && printf ', '
			printf '{"type": "Deposited", "data": {"amount": %d, "note": "benchmark event"}}' "$i"
		done
		echo "]');"
	} > "$dir/append_batch$1.sql"
	{
		echo '\set sid random(1, 10000)'
		echo "INSERT INTO bench.floor_events (stream_id, stream_version, event_type, data)"
		echo "SELECT 'batch-' || :sid, nextval('bench.floor_seq'), 'Deposited', jsonb_build_object('amount', i, 'note', 'benchmark event')"
		echo "  FROM generate_series(1, $1) i;"
	} > "$dir/floor_batch$1.sql"
}

# Copy the settings and the scripts into $dir, generate the batch scripts,
# start the cluster (commit timestamps on: the latency cases need them), and
# run setup.sql.
bench_start() {
	cp test/event_store.conf test/bench/*.sql "$dir/"
	bench_batch 10
	bench_batch 100
	[[ $EUID -eq 0 ]] && chown postgres: "$dir"/*
	start_cluster "$dir" "$port" "$dir/event_store.conf" "${bench_settings[@]}" "track_commit_timestamp = on"
	bench_sql setup.sql
}

# Run the SQL file $dir/$1 (in database $2, default postgres), quietly.
bench_sql() {
	as_pg "psql -X -q -h '$dir' -p $port -d ${2:-postgres} -v ON_ERROR_STOP=1 -f '$dir/$1'" >/dev/null
}

# leave autovacuum nothing to do while we measure
bench_vacuum() { as_pg "psql -X -q -h '$dir' -p $port -d postgres -c 'VACUUM ANALYZE'"; }

q() { as_pg "psql -X -qAt -h '$dir' -p $port -d postgres -c \"$1\""; }

# bench_pipeline on|off: the pipeline, for the whole cluster
bench_pipeline() {
	q "ALTER SYSTEM SET event_store.pipeline_enabled = $1" >/dev/null
	q "SELECT pg_reload_conf()" >/dev/null
	[[ $1 == on ]] && q "SELECT event_store.wait_for_pipeline('120 s')" >/dev/null
	return 0
}

# tps of ${bench_clients:-$clients} clients running script $1 for $duration s
# (in database $2, default postgres, with the server options $3), and the
# number of transactions; its output on failure
pgbench_run() {
	local out c=${bench_clients:-$clients}
	out=$(as_pg "PGOPTIONS='${3:-}' pgbench -n $bench_pgbench_opts -h '$dir' -p $port -c $c -j $c -T $duration -f '$dir/$1' ${2:-postgres}" 2>&1) ||
		{ echo "pgbench $1 failed: $out" >&2; return 1; }
	echo "$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out") $(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")" |
		grep -E '^[0-9.]+ [0-9]+$' || { echo "pgbench $1: no tps in: $out" >&2; return 1; }
}

pgbench_tps() { local r; r=$(pgbench_run "$@") && echo "${r%% *}"; }

# tps of one pgbench run of script $1 with synchronous_commit $2 (in
# database $3, default postgres, with more server options $4), after a
# checkpoint so that no run pays for the previous one's dirty buffers
tps() {
	as_pg "psql -X -q -h '$dir' -p $port -d postgres -c CHECKPOINT"
	pgbench_tps "$1" "${3:-postgres}" "-c synchronous_commit=$2 ${4:-}"
}

# An appending run (tps, with synchronous_commit $2) of script $1, whose
# transactions append $3 events each, from a drained pipeline: prints the
# tps, the backlog the run left (events appended and not yet in the global
# log), the seconds it took to drain (0 with the pipeline off), and the
# events/s sustained counting the drain.
tps_drain() {
	local r t n p0 p1 backlog=0 drain=0 t0 t1 on
	on=$(q "SELECT current_setting('event_store.pipeline_enabled')")
	[[ $on == on ]] && q "SELECT event_store.wait_for_pipeline('300 s')" >/dev/null
	as_pg "psql -X -q -h '$dir' -p $port -d postgres -c CHECKPOINT"
	p0=$(q "SELECT COALESCE(max(global_position), 0) FROM event_store.global_log")
	r=$(pgbench_run "$1" postgres "-c synchronous_commit=$2") || return 1
	t=${r%% *} n=${r##* }
	if [[ $on == on ]]; then
		p1=$(q "SELECT COALESCE(max(global_position), 0) FROM event_store.global_log")
		backlog=$((n * $3 - (p1 - p0)))
		((backlog < 0)) && backlog=0
		t0=$(date +%s.%N)
		q "SELECT event_store.wait_for_pipeline('300 s')" >/dev/null
		t1=$(date +%s.%N)
		drain=$(awk -v a="$t1" -v b="$t0" 'BEGIN {printf "%.3f", a - b}')
	fi
	echo "$t $backlog $drain $(awk -v n="$n" -v e="$3" -v d="$duration" -v w="$drain" 'BEGIN {printf "%.0f", n * e / (d + w)}')"
}

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

ratio() { awk -v a="$1" -v b="$2" "BEGIN {printf \"${3:-%.2f}\", a / b}"; }

# One table row: case, sync, the medians of ours and of the baseline, their
# ratio, and the per-pair ratios (or runs) $5 under the name $6 (pairs).
bench_row() {
	printf '%-44s %-4s %10.0f %10.0f  %5.2fx  (%s: %s)\n' "$1" "$2" "$3" "$4" "$(ratio "$3" "$4" %s)" "${6:-pairs}" "$5"
}

# bench_pairs NAME SYNC OURS BASE [base]: $pairs interleaved runs of the
# commands OURS and BASE (each prints one number, e.g. tps; OURS first, or
# BASE first when the fifth argument is "base"), then the row of the medians.
bench_pairs() {
	local i to tb os=() bs=() rs=()
	for ((i = 1; i <= pairs; i++)); do
		if [[ ${5:-} == base ]]; then
			tb=$(eval "$4"); to=$(eval "$3")
		else
			to=$(eval "$3"); tb=$(eval "$4")
		fi
		os+=("$to") bs+=("$tb") rs+=("$(ratio "$to" "$tb")")
	done
	bench_row "$1" "$2" "$(printf '%s\n' "${os[@]}" | median)" "$(printf '%s\n' "${bs[@]}" | median)" "${rs[*]}"
}

# bench_pairs_write NAME SYNC OURS BASE EVENTS: $pairs interleaved runs of
# our appending script OURS (tps_drain, EVENTS events per transaction) and
# the baseline's script BASE, then the row of the medians: the tps and their
# ratio, the backlog, the drain, and the sustained events/s (counting the
# drain) against the floor's events/s.
bench_pairs_write() {
	local i r tb os=() bs=() rs=() bl=() dr=() su=() mo mb
	for ((i = 1; i <= pairs; i++)); do
		r=$(tps_drain "$3" "$2" "$5"); tb=$(tps "$4" "$2")
		read -r to b d sus <<<"$r"
		os+=("$to") bs+=("$tb") rs+=("$(ratio "$to" "$tb")") bl+=("$b") dr+=("$d") su+=("$sus")
	done
	mo=$(printf '%s\n' "${os[@]}" | median) mb=$(printf '%s\n' "${bs[@]}" | median)
	printf '%-44s %-4s %10.0f %10.0f  %5.2fx  (pairs: %s)\n' "$1" "$2" "$mo" "$mb" "$(ratio "$mo" "$mb" %s)" "${rs[*]}"
	printf '%-44s %-4s backlog at end %s events, drained in %s s; sustained %s ev/s = %sx the floor\n' "" "" \
		"$(printf '%s\n' "${bl[@]}" | median)" "$(printf '%s\n' "${dr[@]}" | median)" \
		"$(printf '%s\n' "${su[@]}" | median)" "$(ratio "$(printf '%s\n' "${su[@]}" | median)" "$(awk -v t="$mb" -v e="$5" 'BEGIN {print t * e}')")"
}

# The cases measured as tps of one script against another, one row a line:
# label|our script|the baseline's script|synchronous_commit settings|events
# appended per transaction of ours (empty: a read case)|clients (empty:
# $clients).
bench_rows() {
	case $1 in
	one) echo "1 append, 10k streams vs INSERT floor|append_one.sql|floor_one.sql|on off|1|" ;;
	single) echo "1 append, 1 client vs INSERT floor|append_one.sql|floor_one.sql|on|1|1" ;;
	batch10) echo "10-event append_events vs INSERT of 10 rows|append_batch10.sql|floor_batch10.sql|on off|10|" ;;
	batch) echo "100-event append_events vs INSERT of 100 rows|append_batch100.sql|floor_batch100.sql|on off|100|" ;;
	hot) echo "1 hot stream vs advisory lock + head + 1|append_hot.sql|baseline_hot.sql|on off|1|" ;;
	read) echo "read_stream 1,000 events vs plain SELECT|read_stream.sql|read_select.sql|on||" ;;
	readall)
		echo "read_all 1,000 events vs SELECT of the join|read_all.sql|read_all_select.sql|on||"
		echo "  100 of 200 interleaved streams' events|read_all_mix.sql|read_all_mix_select.sql|on||" ;;
	crypto)
		echo "append, 2 protected fields vs unprotected|append_protected.sql|append_unprotected.sql|on off|1|"
		echo "read_stream 1,000 protected vs unprotected|read_protected.sql|read_unprotected.sql|on||" ;;
	messagedb)
		echo "write_message vs append|mdb_write.sql|mdb_write_native.sql|on off||"
		echo "write_message expected -1 vs append expected 0|mdb_write_expected.sql|mdb_write_expected_native.sql|on off||"
		echo "get_category_messages 100 vs read_all 100|mdb_category.sql|mdb_category_native.sql|on||"
		echo "  consumer group member 1 of 4|mdb_group.sql|mdb_group_native.sql|on||"
		echo "get_stream_messages 100 vs read_stream|mdb_stream.sql|mdb_stream_native.sql|on||" ;;
	esac
}

# bench_each_row CASE MEASURE [SETUP [QUERY]]: what CASE of bench_rows needs
# beyond setup.sql (done as "SETUP FILE.sql", default bench_sql; the
# positions of readall's interleaved category asked with "QUERY SQL",
# default q, and given to pgbench as mlo and mhi), then "MEASURE label
# our-script baseline-script synchronous_commit" for each row and setting.
# Exits on a case that bench_rows does not have.
bench_each_row() {
	local rows row label ours base syncs events cl s saved=$bench_pgbench_opts
	mapfile -t rows < <(bench_rows "$1")
	((${#rows[@]})) || { echo "unknown case: $1" >&2; exit 2; }
	[[ $1 == crypto ]] && ${3:-bench_sql} crypto_setup.sql
	if [[ $1 == readall ]]; then
		${3:-bench_sql} readall_setup.sql
		bench_pgbench_opts+=" $(${4:-q} "SELECT format('-D mlo=%s -D mhi=%s', min(global_position), max(global_position) - 100) FROM event_store.global_log WHERE category = 'mix'")"
	fi
	for row in "${rows[@]}"; do
		IFS='|' read -r label ours base syncs events cl <<<"$row"
		for s in $syncs; do
			bench_clients=$cl "$2" "$label" "$ours" "$base" "$s" "$events"
		done
	done
	bench_pgbench_opts=$saved
}

# bench_flat_out DONE WAIT [BACKLOG]: $clients clients append flat out for
# $duration s, from a state where every event is done; DONE is a query of the
# events done so far (ordered into the global log, applied by a projection),
# WAIT a call that waits until all are, up to its last argument, the timeout.
# Prints the events/s appended, the events/s done during the run, the backlog
# at the end (events appended and not done, or the query BACKLOG's answer),
# and the seconds it took to drain.
bench_flat_out() {
	local n0 d0 tps n1 d1 backlog t0 t1
	q "SELECT $2'120 s')" >/dev/null
	n0=$(q "SELECT count(*) FROM event_store.events")
	d0=$(q "$1")
	tps=$(pgbench_tps append_one.sql)
	d1=$(q "$1")
	n1=$(q "SELECT count(*) FROM event_store.events")
	backlog=$((n1 - n0 - (d1 - d0)))
	[[ -n ${3:-} ]] && backlog=$(q "$3")
	t0=$(date +%s.%N)
	q "SELECT $2'300 s')" >/dev/null
	t1=$(date +%s.%N)
	echo "$tps $(awk -v a="$d1" -v b="$d0" -v d="$duration" 'BEGIN {print (a - b) / d}') $backlog $(awk -v a="$t1" -v b="$t0" 'BEGIN {print a - b}')"
}

# The decoding pipeline's throughput (bench_flat_out)
pipeline_throughput() {
	bench_flat_out "SELECT COALESCE(max(global_position), 0) FROM event_store.global_log" "event_store.wait_for_pipeline("
}

# The projection case's read models (projection_setup.sql), and the
# asynchronous upsert projection bench_balances, caught up.
projection_start() {
	bench_sql projection_setup.sql
	q "SELECT event_store.wait_for_pipeline('120 s')" >/dev/null
	q "SELECT event_store.create_projection('bench_balances', 'public.bench_balance(event_store.event)', categories => '{account}', start => 'now')" >/dev/null
	q "SELECT event_store.wait_for_projection('bench_balances', '120 s')" >/dev/null
}

# bench_balances' throughput (bench_flat_out; the backlog as it reports it)
projection_throughput() {
	local status="FROM event_store.projection_status WHERE name = 'bench_balances'"
	bench_flat_out "SELECT events_applied $status" "event_store.wait_for_projection('bench_balances', " "SELECT lag_events $status"
}

# Upcasting: read_stream of 1,000 events with (a) an empty registry, (b) 100
# upcasters for other types, (c) a one-step SQL upcaster on their type, (d)
# the C hook (test/modules/upcast_hook of the source tree $1, default the
# current directory) on their type; one database each.
upcast_setup() {
	local src=${1:-.} v
	make -s -C "$src/test/modules/upcast_hook" PG_CONFIG="$PG_BIN/pg_config" >/dev/null
	cp "$src/test/modules/upcast_hook/upcast_hook.so" "$dir/"
	[[ $EUID -eq 0 ]] && chown postgres: "$dir/upcast_hook.so"
	for v in a b c d; do
		as_pg "psql -X -q -h '$dir' -p $port -d postgres -c 'CREATE DATABASE upcast_$v'"
		as_pg "psql -X -q -h '$dir' -p $port -d upcast_$v -v ON_ERROR_STOP=1" >/dev/null <<-'SQL'
			CREATE EXTENSION event_store CASCADE;
			SELECT event_store.append_events('read-1',
			       (SELECT jsonb_agg(jsonb_build_object('type', 'Deposited', 'schema_version', 1,
			                         'data', jsonb_build_object('amount', i, 'note', 'benchmark event')) ORDER BY i)
			          FROM generate_series(1, 1000) i));
			CREATE FUNCTION public.add_currency(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
			  AS $$ SELECT data || '{"currency": "EUR"}' $$;
		SQL
	done
	as_pg "psql -X -q -h '$dir' -p $port -d upcast_b -c \"SELECT count(event_store.add_upcaster('Other' || i, 1, 'public.add_currency(jsonb)')) FROM generate_series(1, 100) i\"" >/dev/null
	as_pg "psql -X -q -h '$dir' -p $port -d upcast_c -c \"SELECT event_store.add_upcaster('Deposited', 1, 'public.add_currency(jsonb)')\"" >/dev/null
}

# tps of read_stream in the upcast case's database $1 (a, b, c or d)
upcast_tps() {
	if [[ $1 == d ]]; then
		tps read_stream.sql on upcast_d "-c session_preload_libraries=$dir/upcast_hook.so -c upcast_hook.event_type=Deposited"
	else
		tps read_stream.sql on "upcast_$1"
	fi
}

upcast_label() {
	case $1 in
	a) echo "read_stream, empty upcaster registry (a)" ;;
	b) echo "  (b) 100 upcasters for other types" ;;
	c) echo "  (c) one SQL upcaster on the type" ;;
	d) echo "  (d) the C hook on the type" ;;
	esac
}
