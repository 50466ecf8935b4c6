/*-------------------------------------------------------------------------
 *
 * check.c
 *	  check(): the consistency check an operator (and the soak and crash
 *	  tests) run over a whole database's event store.
 *
 * It compares what is derived with what it is derived from, and returns one
 * row (kind, object, detail) per disagreement; no row means consistent:
 *
 *	- stream:     each stream's versions are 1..n, and recorded_at never
 *	              decreases along it;
 *	- global_log: positions are 1..n with no gap; every entry has its event,
 *	              with the event's id, category and type; every event has an
 *	              entry (once the pipeline has ordered what was committed
 *	              before the check began); the events of one transaction
 *	              hold consecutive positions; positions follow commit order,
 *	              and a stream's versions in order;
 *	- pipeline:   the pipeline did not catch up within the timeout, so the
 *	              events without a position could not be judged;
 *	- snapshot:   every snapshot of an aggregate's current generation, in the
 *	              caller's view (upcasters, right to personal data), equals a
 *	              fresh fold of the stream's events up to its version, folded
 *	              by the reducer as the caller, and has that event's
 *	              recorded_at; a fold that fails is reported with its error;
 *	- projection: asynchronous positions lie within the global log, the
 *	              registry refers to this database's log, parked events exist.
 *
 * At most ES_CHECK_MAX_ROWS rows per check, then one row counting the rest.
 *
 * Rights and locking: the caller needs EXECUTE (revoked from PUBLIC) and
 * SELECT on event_store.events, event_store.global_log and
 * event_store.aggregates.  The tables are read as the extension's owner
 * (es_owner_begin), with AccessShareLock as any SELECT, so the snapshots
 * (no role has SELECT on them) and the registries are compared too; states
 * and event data are never part of the output.  Reducers run as the caller,
 * never as the owner, and the events they fold are read through the stream
 * scan of read.c, which checks the caller's rights and presents each event
 * as every read path does.  It writes nothing.  It needs READ COMMITTED:
 * after waiting for the pipeline it must see the positions written since.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "aggregate.h"
#include "internal.h"
#include "pipeline.h"
#include "read.h"

PG_FUNCTION_INFO_V1(event_store_check);

/* Rows reported per check before the rest are counted in one row. */
#define ES_CHECK_MAX_ROWS			100

/* Events without a position that are collected, and judged after the wait. */
#define ES_CHECK_MAX_UNORDERED		100000

typedef struct CheckOut
{
	ReturnSetInfo *rsinfo;
	int64		rows;
} CheckOut;

/*
 * One row of the result.
 */
static void
emit(CheckOut *out, const char *kind, const char *object, const char *detail)
{
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	values[0] = CStringGetTextDatum(kind);
	values[1] = CStringGetTextDatum(object ? object : "");
	values[2] = CStringGetTextDatum(detail ? detail : "");
	tuplestore_putvalues(out->rsinfo->setResult, out->rsinfo->setDesc, values, nulls);
	out->rows++;
}

/*
 * Run one check: a query returning (object text, detail text), one row per
 * disagreement, read as the extension's owner.  Reports the first
 * ES_CHECK_MAX_ROWS rows, then counts the rest in one row.
 */
static void
run_check(CheckOut *out, const char *kind, const char *sql,
		  int nargs, Oid *argtypes, Datum *args)
{
	EsOwnerSave owner;
	Portal		portal;
	uint64		i;

	es_owner_begin(&owner);
	/* not read-only: a fresh snapshot for each check (READ COMMITTED) */
	portal = SPI_cursor_open_with_args(NULL, sql, nargs, argtypes, args, NULL, false, 0);
	SPI_cursor_fetch(portal, true, ES_CHECK_MAX_ROWS);
	for (i = 0; i < SPI_processed; i++)
		emit(out, kind, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
			 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2));
	if (SPI_processed == ES_CHECK_MAX_ROWS)
	{
		SPI_freetuptable(SPI_tuptable);
		SPI_cursor_move(portal, true, FETCH_ALL);
		if (SPI_processed > 0)
			emit(out, kind, "...",
				 psprintf("%llu more disagreements of this kind",
						  (unsigned long long) SPI_processed));
	}
	SPI_freetuptable(SPI_tuptable);
	SPI_cursor_close(portal);
	es_owner_end(&owner);
}

/* --- streams ------------------------------------------------------------- */

static const char *stream_sql =
"SELECT s.stream_id::pg_catalog.text, "
"       CASE WHEN s.prev IS NULL "
"            THEN pg_catalog.format('the first version is %s, not 1', s.v) "
"            WHEN s.v OPERATOR(pg_catalog.<>) (s.prev OPERATOR(pg_catalog.+) 1) "
"            THEN pg_catalog.format('version %s follows version %s', s.v, s.prev) "
"            ELSE pg_catalog.format('recorded_at of version %s is earlier than that of version %s', s.v, s.prev) "
"       END "
"  FROM (SELECT e.stream_id, e.stream_version AS v, e.recorded_at AS r, "
"               pg_catalog.lag(e.stream_version) OVER w AS prev, "
"               pg_catalog.lag(e.recorded_at) OVER w AS prev_r "
"          FROM event_store.events e "
"        WINDOW w AS (PARTITION BY e.stream_id ORDER BY e.stream_version)) s "
" WHERE (s.prev IS NULL AND s.v OPERATOR(pg_catalog.<>) 1) "
"    OR s.v OPERATOR(pg_catalog.<>) (s.prev OPERATOR(pg_catalog.+) 1) "
"    OR s.r OPERATOR(pg_catalog.<) s.prev_r "
" ORDER BY s.stream_id, s.v";

/* --- the global log ------------------------------------------------------ */

/* positions 1..n: report each gap */
static const char *log_dense_sql =
"SELECT pg_catalog.format('position %s', s.p), "
"       CASE WHEN s.p OPERATOR(pg_catalog.<) 1 THEN 'positions start at 1' "
"            WHEN s.p OPERATOR(pg_catalog.=) (s.prev OPERATOR(pg_catalog.+) 2) "
"            THEN pg_catalog.format('position %s is missing', s.prev OPERATOR(pg_catalog.+) 1) "
"            ELSE pg_catalog.format('positions %s to %s are missing', s.prev OPERATOR(pg_catalog.+) 1, "
"                                   s.p OPERATOR(pg_catalog.-) 1) END "
"  FROM (SELECT g.global_position AS p, "
"               pg_catalog.lag(g.global_position, 1, 0::pg_catalog.int8) OVER (ORDER BY g.global_position) AS prev "
"          FROM event_store.global_log g) s "
" WHERE s.p OPERATOR(pg_catalog.<>) (s.prev OPERATOR(pg_catalog.+) 1) "
" ORDER BY s.p";

/* every entry has its event, with the event's category and type */
static const char *log_entries_sql =
"SELECT pg_catalog.format('position %s', g.global_position), "
"       CASE WHEN e.stream_id IS NULL "
"            THEN pg_catalog.format('stream %s version %s has no event', "
"                                   pg_catalog.quote_literal(g.stream_id), g.stream_version) "
"            WHEN g.event_type OPERATOR(pg_catalog.<>) e.event_type "
"            THEN pg_catalog.format('records type %s, but the event of stream %s version %s is a %s', "
"                                   pg_catalog.quote_literal(g.event_type), pg_catalog.quote_literal(g.stream_id), "
"                                   g.stream_version, pg_catalog.quote_literal(e.event_type)) "
"            WHEN g.event_id IS NULL OR g.event_id OPERATOR(pg_catalog.<>) e.event_id "
"            THEN pg_catalog.format('records event id %s, not the id of the event of stream %s version %s', "
"                                   g.event_id, pg_catalog.quote_literal(g.stream_id), g.stream_version) "
"            ELSE pg_catalog.format('records category %s for stream %s', "
"                                   pg_catalog.quote_literal(g.category), pg_catalog.quote_literal(g.stream_id)) END "
"  FROM event_store.global_log g "
"  LEFT JOIN event_store.events e "
"    ON e.stream_id OPERATOR(pg_catalog.=) g.stream_id "
"   AND e.stream_version OPERATOR(pg_catalog.=) g.stream_version "
" WHERE e.stream_id IS NULL "
"    OR g.event_type OPERATOR(pg_catalog.<>) e.event_type "
"    OR g.event_id IS NULL OR g.event_id OPERATOR(pg_catalog.<>) e.event_id "
"    OR g.category OPERATOR(pg_catalog.<>) pg_catalog.split_part(g.stream_id, '-', 1) "
" ORDER BY g.global_position";

/* the events of one transaction hold consecutive positions */
static const char *log_transactions_sql =
"SELECT pg_catalog.format('commit %s', g.commit_lsn), "
"       pg_catalog.format('its %s events are spread over positions %s to %s', "
"                         pg_catalog.count(*), pg_catalog.min(g.global_position), pg_catalog.max(g.global_position)) "
"  FROM event_store.global_log g "
" WHERE g.commit_lsn OPERATOR(pg_catalog.<>) '0/0'::pg_catalog.pg_lsn "
" GROUP BY g.commit_lsn "
"HAVING pg_catalog.max(g.global_position) OPERATOR(pg_catalog.-) pg_catalog.min(g.global_position) "
"       OPERATOR(pg_catalog.+) 1 OPERATOR(pg_catalog.<>) pg_catalog.count(*) "
" ORDER BY g.commit_lsn";

/* positions follow commit order (entries of a rebuild, 0/0, have none) */
static const char *log_commit_order_sql =
"SELECT pg_catalog.format('position %s', s.p), "
"       pg_catalog.format('commit %s is earlier than commit %s at position %s before it', s.lsn, s.prev_lsn, s.prev) "
"  FROM (SELECT g.global_position AS p, g.commit_lsn AS lsn, "
"               pg_catalog.lag(g.commit_lsn) OVER w AS prev_lsn, "
"               pg_catalog.lag(g.global_position) OVER w AS prev "
"          FROM event_store.global_log g "
"         WHERE g.commit_lsn OPERATOR(pg_catalog.<>) '0/0'::pg_catalog.pg_lsn "
"        WINDOW w AS (ORDER BY g.global_position)) s "
" WHERE s.lsn OPERATOR(pg_catalog.<) s.prev_lsn "
" ORDER BY s.p";

/* a stream's versions in order (appends to a stream commit one after the other) */
static const char *log_stream_order_sql =
"SELECT pg_catalog.format('position %s', s.p), "
"       pg_catalog.format('stream %s version %s comes before version %s at position %s', "
"                         pg_catalog.quote_literal(s.stream_id), s.v, s.prev_v, s.prev) "
"  FROM (SELECT g.stream_id, g.stream_version AS v, g.global_position AS p, "
"               pg_catalog.lag(g.stream_version) OVER w AS prev_v, "
"               pg_catalog.lag(g.global_position) OVER w AS prev "
"          FROM event_store.global_log g "
"        WINDOW w AS (PARTITION BY g.stream_id ORDER BY g.stream_version)) s "
" WHERE s.p OPERATOR(pg_catalog.<) s.prev "
" ORDER BY s.p";

/* events without a position: candidates, judged after waiting for the pipeline */
static const char *unordered_sql =
"SELECT e.stream_id::pg_catalog.text, e.stream_version "
"  FROM event_store.events e "
" WHERE NOT EXISTS (SELECT FROM event_store.global_log g "
"                    WHERE g.event_id OPERATOR(pg_catalog.=) e.event_id)";

static const char *still_unordered_sql =
"SELECT pg_catalog.format('stream %s version %s', pg_catalog.quote_literal(c.s), c.v), "
"       'the event has no position in the global log' "
"  FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.int8[])) c(s, v) "
"  JOIN event_store.events e "
"    ON e.stream_id OPERATOR(pg_catalog.=) c.s AND e.stream_version OPERATOR(pg_catalog.=) c.v "
" WHERE NOT EXISTS (SELECT FROM event_store.global_log g "
"                    WHERE g.event_id OPERATOR(pg_catalog.=) e.event_id) "
" ORDER BY c.s, c.v";

/*
 * Events committed before the check began must have a position once the
 * pipeline has caught up: collect those without one, wait for the pipeline,
 * and report those still without one.  Without a pipeline (not preloaded,
 * or wal_level below logical) there is nothing to wait for: not judged.
 */
static void
check_unordered(CheckOut *out, int64 timeout_ms)
{
	EsOwnerSave owner;
	Portal		portal;
	ArrayBuildState *streams;
	ArrayBuildState *versions;
	uint64		collected = 0;
	uint64		more = 0;
	Datum		args[2];
	Oid			argtypes[2] = {TEXTARRAYOID, INT8ARRAYOID};

	if (!es_pipeline_available())
		return;

	streams = initArrayResult(TEXTOID, CurrentMemoryContext, false);
	versions = initArrayResult(INT8OID, CurrentMemoryContext, false);
	es_owner_begin(&owner);
	portal = SPI_cursor_open_with_args(NULL, unordered_sql, 0, NULL, NULL, NULL, false, 0);
	for (;;)
	{
		uint64		i;

		SPI_cursor_fetch(portal, true, 1000);
		if (SPI_processed == 0)
			break;
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			Datum		s;
			Datum		v;

			if (collected >= ES_CHECK_MAX_UNORDERED)
			{
				more += SPI_processed - i;
				break;
			}
			s = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
			v = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);
			accumArrayResult(streams, s, false, TEXTOID, CurrentMemoryContext);
			accumArrayResult(versions, v, false, INT8OID, CurrentMemoryContext);
			collected++;
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	es_owner_end(&owner);
	if (collected == 0)
		return;

	if (!es_wait_for_pipeline_until(TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms)))
	{
		char		name[NAMEDATALEN];

		snprintf(name, sizeof(name), ES_PIPELINE_NAME_FORMAT, MyDatabaseId);
		emit(out, "pipeline", name,
			 psprintf("the pipeline did not order the committed events within " INT64_FORMAT " ms: "
					  "%llu events without a position in the global log were not judged",
					  timeout_ms, (unsigned long long) (collected + more)));
		return;
	}
	args[0] = makeArrayResult(streams, CurrentMemoryContext);
	args[1] = makeArrayResult(versions, CurrentMemoryContext);
	run_check(out, "global_log", still_unordered_sql, 2, argtypes, args);
	if (more > 0)
		emit(out, "global_log", "...",
			 psprintf("%llu more events had no position when the check began and were not judged: run the check again",
					  (unsigned long long) more));
}

/* --- snapshots ----------------------------------------------------------- */

/* the streams with snapshots of a current generation in the caller's view */
static const char *snapshot_groups_sql =
"SELECT s.aggregate::pg_catalog.text, s.stream_id::pg_catalog.text, a.generation "
"  FROM event_store.snapshots s "
"  JOIN event_store.aggregates a ON a.name OPERATOR(pg_catalog.=) s.aggregate "
" WHERE s.generation OPERATOR(pg_catalog.=) a.generation "
"   AND s.upcasters OPERATOR(pg_catalog.=) $1 "
" GROUP BY 1, 2, 3 "
" ORDER BY 1, 2";

static const char *snapshot_rows_sql =
"SELECT s.version, s.state, s.recorded_at "
"  FROM event_store.snapshots s "
" WHERE s.aggregate OPERATOR(pg_catalog.=) $1 AND s.stream_id OPERATOR(pg_catalog.=) $2 "
"   AND s.generation OPERATOR(pg_catalog.=) $3 AND s.upcasters OPERATOR(pg_catalog.=) $4 "
" ORDER BY s.version";

typedef struct CheckSnapshot
{
	int64		version;
	Jsonb	   *state;
	TimestampTz recorded_at;
} CheckSnapshot;

static char *
snapshot_object(const char *aggregate, const char *stream_id, int64 version)
{
	return psprintf("aggregate %s, stream %s, version " INT64_FORMAT,
					quote_literal_cstr(aggregate), quote_literal_cstr(stream_id), version);
}

/*
 * Fold the stream from its first event with the aggregate's reducer (no
 * snapshot used, none written) and compare the state at each snapshot's
 * version with the snapshot.  Runs as the caller.
 */
static void
check_snapshot_group(CheckOut *out, const EsAggregate *agg, const char *aggregate,
					 text *stream_id, CheckSnapshot *snaps, int nsnaps)
{
	const char *stream = text_to_cstring(stream_id);
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext work;
	MemoryContext spare;
	FmgrInfo	flinfo;
	LOCAL_FCINFO(fcinfo, 2);
	TupleDesc	tupdesc;
	EsStreamScan *s;
	Datum		state = JsonbPGetDatum(agg->initial_state);
	int			next = 0;
	int64		seen = 0;

	fmgr_info(agg->reducer, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 2, InvalidOid, NULL, NULL);
	tupdesc = lookup_rowtype_tupdesc(es_catalog()->event_type, -1);
	work = AllocSetContextCreate(outer, "event_store check fold", ALLOCSET_DEFAULT_SIZES);
	spare = AllocSetContextCreate(outer, "event_store check fold", ALLOCSET_DEFAULT_SIZES);

	s = es_stream_scan_begin(stream_id, 1, snaps[nsnaps - 1].version, false, NULL, -1,
							 GetActiveSnapshot());
	while (next < nsnaps)
	{
		Datum		result;
		int64		version;
		TimestampTz recorded_at;

		CHECK_FOR_INTERRUPTS();
		MemoryContextReset(work);
		MemoryContextSwitchTo(work);
		if (!es_stream_scan_next(s))
			break;
		version = DatumGetInt64(s->values[Anum_events_stream_version]);
		recorded_at = DatumGetTimestampTz(s->values[Anum_events_recorded_at]);
		result = es_reduce(fcinfo, agg, state, tupdesc, s->values, s->nulls, stream_id);
		seen++;
		if (result != state)
		{
			MemoryContext t = work;

			state = PointerGetDatum(PG_DETOAST_DATUM(result));
			work = spare;
			spare = t;
		}
		MemoryContextSwitchTo(outer);
		/* a version the stream skipped is reported by the stream check */
		while (next < nsnaps && snaps[next].version <= version)
		{
			if (snaps[next].version == version)
			{
				if (!DatumGetBool(DirectFunctionCall2(jsonb_eq, state,
													  JsonbPGetDatum(snaps[next].state))))
					emit(out, "snapshot", snapshot_object(aggregate, stream, version),
						 psprintf("the state differs from a fresh fold of the first " INT64_FORMAT " events",
								  seen));
				else if (snaps[next].recorded_at != recorded_at)
					emit(out, "snapshot", snapshot_object(aggregate, stream, version),
						 "recorded_at differs from that of the event at its version");
			}
			next++;
		}
	}
	MemoryContextSwitchTo(outer);
	es_stream_scan_end(s);
	ReleaseTupleDesc(tupdesc);
	for (; next < nsnaps; next++)
		emit(out, "snapshot", snapshot_object(aggregate, stream, snaps[next].version),
			 psprintf("the stream has " INT64_FORMAT " events: the version is beyond its end", seen));
	MemoryContextDelete(work);
	MemoryContextDelete(spare);
}

/*
 * Compare the snapshots of one stream and aggregate, in a subtransaction: a
 * reducer that fails (or no longer exists, or may not be executed by the
 * caller) is reported, and the check goes on.
 */
static void
check_snapshot_stream(CheckOut *out, const char *aggregate, const char *stream,
					  int64 generation, int64 view)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	MemoryContext local = AllocSetContextCreate(oldcontext, "event_store check snapshots",
												ALLOCSET_DEFAULT_SIZES);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(local);
	PG_TRY();
	{
		EsAggregate agg;
		EsOwnerSave owner;
		Oid			argtypes[4] = {TEXTOID, TEXTOID, INT8OID, INT8OID};
		Datum		args[4];
		CheckSnapshot *snaps;
		int			nsnaps;
		uint64		i;
		text	   *stream_id = cstring_to_text(stream);

		/*
		 * One fresh snapshot for the definition, the snapshots and the
		 * events, newer than the list of streams: every event a listed
		 * snapshot covers is visible to it.
		 */
		PushActiveSnapshot(GetTransactionSnapshot());
		es_lookup_aggregate(cstring_to_text(aggregate), GetActiveSnapshot(), true, &agg);
		if (agg.generation == generation)
		{
			args[0] = CStringGetTextDatum(aggregate);
			args[1] = PointerGetDatum(stream_id);
			args[2] = Int64GetDatum(generation);
			args[3] = Int64GetDatum(view);
			es_owner_begin(&owner);
			if (SPI_execute_with_args(snapshot_rows_sql, 4, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
				elog(ERROR, "SPI_execute_with_args failed");
			es_owner_end(&owner);
			nsnaps = (int) SPI_processed;
			snaps = palloc(sizeof(CheckSnapshot) * Max(nsnaps, 1));
			for (i = 0; i < SPI_processed; i++)
			{
				HeapTuple	tup = SPI_tuptable->vals[i];
				TupleDesc	desc = SPI_tuptable->tupdesc;
				bool		isnull;

				snaps[i].version = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
				snaps[i].state = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 2, &isnull));
				snaps[i].recorded_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));
			}
			SPI_freetuptable(SPI_tuptable);
			if (nsnaps > 0)
				check_snapshot_group(out, &agg, aggregate, stream_id, snaps, nsnaps);
		}
		/* else redefined since the list was read: the old snapshots are not used */
		PopActiveSnapshot();

		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN)
			ReThrowError(edata);
		emit(out, "snapshot",
			 psprintf("aggregate %s, stream %s", quote_literal_cstr(aggregate), quote_literal_cstr(stream)),
			 psprintf("not compared: a fresh fold failed with %s: %s",
					  unpack_sql_state(edata->sqlerrcode), edata->message));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextDelete(local);
}

/*
 * Every snapshot of a current generation, in the caller's view.  Snapshots
 * of another view (the other right to personal data) are compared when a
 * role with that view runs the check; those of older generations or of an
 * older upcaster registry are never used, and not compared.
 */
static void
check_snapshots(CheckOut *out)
{
	int64		view;
	EsOwnerSave owner;
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1];
	uint64		ngroups;
	uint64		i;
	char	  **aggregates;
	char	  **streams;
	int64	   *generations;

	if (!es_snapshot_view(&view))
		return;					/* a C upcast hook without a fingerprint: no snapshot is used */
	args[0] = Int64GetDatum(view);
	es_owner_begin(&owner);
	if (SPI_execute_with_args(snapshot_groups_sql, 1, argtypes, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed");
	es_owner_end(&owner);
	ngroups = SPI_processed;
	aggregates = palloc(sizeof(char *) * Max(ngroups, 1));
	streams = palloc(sizeof(char *) * Max(ngroups, 1));
	generations = palloc(sizeof(int64) * Max(ngroups, 1));
	for (i = 0; i < ngroups; i++)
	{
		bool		isnull;

		aggregates[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		streams[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		generations[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
													 3, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
	for (i = 0; i < ngroups; i++)
		check_snapshot_stream(out, aggregates[i], streams[i], generations[i], view);
}

/* --- projections --------------------------------------------------------- */

static const char *projection_sql =
"SELECT p.name::pg_catalog.text, "
"       CASE WHEN p.log_identity OPERATOR(pg_catalog.<>) i.id "
"            THEN 'restored from a dump: its position refers to another database''s global log' "
"            WHEN p.position IS NULL THEN 'an asynchronous projection without a position' "
"            ELSE pg_catalog.format('position %s is beyond the end of the global log (%s)', p.position, h.head) END "
"  FROM event_store.projections p, event_store.log_identity i, "
"       (SELECT COALESCE(pg_catalog.max(g.global_position), 0) AS head FROM event_store.global_log g) h "
" WHERE p.log_identity OPERATOR(pg_catalog.<>) i.id "
"    OR (p.mode OPERATOR(pg_catalog.=) 'async' "
"        AND (p.position IS NULL OR p.position OPERATOR(pg_catalog.<) 0 "
"             OR p.position OPERATOR(pg_catalog.>) h.head)) "
"UNION ALL "
"SELECT k.projection::pg_catalog.text, "
"       CASE WHEN e.stream_id IS NULL "
"            THEN pg_catalog.format('parked event of stream %s version %s does not exist', "
"                                   pg_catalog.quote_literal(k.stream_id), k.stream_version) "
"            ELSE pg_catalog.format('parked event of stream %s version %s is not at position %s of the global log', "
"                                   pg_catalog.quote_literal(k.stream_id), k.stream_version, k.global_position) END "
"  FROM event_store.projection_parked k "
"  LEFT JOIN event_store.events e "
"    ON e.stream_id OPERATOR(pg_catalog.=) k.stream_id "
"   AND e.stream_version OPERATOR(pg_catalog.=) k.stream_version "
" WHERE e.stream_id IS NULL "
"    OR (k.global_position IS NOT NULL "
"        AND NOT EXISTS (SELECT FROM event_store.global_log g "
"                         WHERE g.global_position OPERATOR(pg_catalog.=) k.global_position "
"                           AND g.stream_id OPERATOR(pg_catalog.=) k.stream_id "
"                           AND g.stream_version OPERATOR(pg_catalog.=) k.stream_version)) "
" ORDER BY 1, 2";

/*
 * The caller must be allowed to SELECT from the table (the check reports
 * what the tables hold).
 */
static void
require_select(Oid nsp, const char *relname)
{
	Oid			relid = get_relname_relid(relname, nsp);
	AclResult	acl;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"event_store\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION event_store.")));
	acl = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT);
	if (acl != ACLCHECK_OK)
		aclcheck_error(acl, OBJECT_TABLE, relname);
}

/*
 * check(timeout interval DEFAULT '5 s')
 * RETURNS TABLE(kind text, object text, detail text): one row per
 * disagreement between the event table and what is derived from it; no row
 * when consistent.  `timeout` bounds the wait for the pipeline to order the
 * events committed before the call.
 */
Datum
event_store_check(PG_FUNCTION_ARGS)
{
	CheckOut	out;
	int64		timeout_ms;
	Oid			nsp;

	es_require_arg(fcinfo, 0, "timeout");
	timeout_ms = es_interval_ms(PG_GETARG_INTERVAL_P(0), "timeout");
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("event_store.check() cannot run in a %s transaction",
						IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errdetail("After waiting for the pipeline, the check must see the positions written since, which a transaction snapshot does not."),
				 errhint("Run it in a READ COMMITTED transaction.")));
	nsp = get_namespace_oid("event_store", false);
	require_select(nsp, "events");
	require_select(nsp, "global_log");
	require_select(nsp, "aggregates");

	InitMaterializedSRF(fcinfo, 0);
	out.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	out.rows = 0;

	SPI_connect();
	run_check(&out, "stream", stream_sql, 0, NULL, NULL);
	run_check(&out, "global_log", log_dense_sql, 0, NULL, NULL);
	run_check(&out, "global_log", log_entries_sql, 0, NULL, NULL);
	run_check(&out, "global_log", log_transactions_sql, 0, NULL, NULL);
	run_check(&out, "global_log", log_commit_order_sql, 0, NULL, NULL);
	run_check(&out, "global_log", log_stream_order_sql, 0, NULL, NULL);
	check_unordered(&out, timeout_ms);
	check_snapshots(&out);
	run_check(&out, "projection", projection_sql, 0, NULL, NULL);
	SPI_finish();
	return (Datum) 0;
}
