/*-------------------------------------------------------------------------
 *
 * aggregate.c
 *	  Aggregates: the registry (define_aggregate) and the fold behind
 *	  load_aggregate() and execute().
 *
 * An aggregate is a name, a reducer (state jsonb, e event_store.event)
 * RETURNS jsonb, an initial state and a snapshot cadence, stored in
 * event_store.aggregates.  Its state after n events is the reducer folded over
 * the stream's first n events, starting from the initial state.  Loading
 * starts from the newest valid snapshot (snapshot.c) and folds only the events
 * after it, read through the stream scan of scan.c (so they are exactly what
 * read_stream returns), calling the reducer through fmgr, resolved once per
 * load, with a memory context reset per event.
 *
 * Every define_aggregate() of an existing name bumps the aggregate's
 * generation; snapshots carry the generation they were computed under, and
 * only those of the current one are ever used, so state computed by an older
 * reducer is never served.
 *
 * The reducer is stored by its schema-qualified signature (text), not its
 * OID: the definition survives pg_dump and pg_upgrade (which refuses reg*
 * columns in user tables).  It is resolved again at each load
 * (es_resolve_function).
 *
 * Locking and rights: loads take AccessShareLock on the tables they read, as
 * a SELECT does, and check the caller's SELECT right on the events and the
 * registry.  The registry and the snapshots are written through SPI as the
 * extension's owner (ES_RUN_AS_OWNER): EXECUTE on define_aggregate is the
 * right to define, and no role needs (or should get) a write grant on
 * event_store.aggregates.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "aggregate.h"
#include "read.h"

PG_FUNCTION_INFO_V1(event_store_define_aggregate);
PG_FUNCTION_INFO_V1(event_store_load_aggregate);

/* Settings, documented in README.md, "Settings". */
int			es_snapshot_every = 100;
int			es_execute_retries = 5;

static EsStatement define_statement = ES_STATEMENT(
	"INSERT INTO event_store.aggregates AS a "
	"(name, reducer, initial_state, snapshot_every, generation, defined_at) "
	"VALUES ($1, $2, $3, $4, 1, pg_catalog.now()) "
	"ON CONFLICT (name) DO UPDATE SET reducer = EXCLUDED.reducer, "
	"initial_state = EXCLUDED.initial_state, snapshot_every = EXCLUDED.snapshot_every, "
	"generation = a.generation OPERATOR(pg_catalog.+) 1, defined_at = EXCLUDED.defined_at "
	"RETURNING a.generation",
	4, TEXTOID, TEXTOID, JSONBOID, INT4OID);

static EsStatement drop_old_statement = ES_STATEMENT(
	"DELETE FROM event_store.snapshots s "
	"WHERE s.aggregate OPERATOR(pg_catalog.=) $1 AND s.generation OPERATOR(pg_catalog.<) $2",
	2, TEXTOID, INT8OID);

/*
 * Functions changed (a reducer may drop itself while it folds): a fold
 * that sees the count move checks that its reducer still exists.
 */
static uint64 function_changes = 0;

static void
count_function_changes(void)
{
	function_changes++;
}

/*
 * Called once per process from _PG_init: settings and cache invalidation.
 */
void
es_aggregate_init(void)
{
	DefineCustomIntVariable("event_store.snapshot_every",
							"Events load_aggregate replays before it writes a snapshot, for aggregates defined without their own.",
							"0 writes no snapshot automatically.",
							&es_snapshot_every,
							100, 0, INT_MAX,
							PGC_USERSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("event_store.execute_retries",
							"Times execute() retries a command after a concurrent append to its stream.",
							NULL,
							&es_execute_retries,
							5, 0, 1000,
							PGC_USERSET, 0,
							NULL, NULL, NULL);

	es_watch_syscache(PROCOID, count_function_changes);
}

/* A reducer: a plain function (state jsonb, e event_store.event) RETURNS jsonb. */
static void
reducer_shape(EsFunctionShape *shape)
{
	shape->role = "reducer";
	shape->signature = "(state jsonb, e event_store.event) RETURNS jsonb";
	shape->nargs = 2;
	shape->argtypes[0] = JSONBOID;
	shape->argtypes[1] = es_catalog()->event_type;
	shape->rettype = JSONBOID;
}

/*
 * Resolve a reducer stored by its signature, and check it again: it may have
 * been dropped, or dropped and created anew, since define_aggregate.
 */
static Oid
resolve_reducer(text *aggregate, const char *signature)
{
	EsFunctionShape shape;
	Oid			fn;

	reducer_shape(&shape);
	fn = es_resolve_function(signature, &shape);

	if (!OidIsValid(fn))
		ereport(ERROR,
				(errcode(ERRCODE_ES_REDUCER_MISSING),
				 errmsg("reducer %s of aggregate \"%s\" does not exist", signature,
						text_to_cstring(aggregate)),
				 errdetail("The function was dropped or renamed after the aggregate was defined."),
				 errhint("Create the function again, or define the aggregate again with event_store.define_aggregate().")));
	es_check_function(fn, &shape, ERRCODE_ES_WRONG_REDUCER, NULL);
	es_check_execute(fn);
	return fn;
}

/*
 * Read the definition of an aggregate as the snapshot sees it; an unknown
 * name is an error.  With with_reducer, resolve and check its reducer too.
 * Everything is palloc'd in the current context.
 */
void
es_lookup_aggregate(text *name, Snapshot snapshot, bool with_reducer, EsAggregate *agg)
{
	const EsCatalog *cat = es_catalog();
	Relation	rel = table_open(cat->aggregates_relid, AccessShareLock);
	Relation	idx;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData key;
	bool		found;
	char	   *signature = NULL;

	es_check_read_access(rel);
	idx = index_open(cat->aggregates_pkey, AccessShareLock);
	slot = table_slot_create(rel, NULL);
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(name));
	scan = index_beginscan(rel, idx, snapshot, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	if (found)
	{
		Datum	   *v;
		bool	   *n;

		slot_getallattrs(slot);
		v = slot->tts_values;
		n = slot->tts_isnull;
		agg->name = DatumGetTextPCopy(v[Anum_aggregates_name - 1]);
		signature = TextDatumGetCString(v[Anum_aggregates_reducer - 1]);
		agg->initial_state = DatumGetJsonbPCopy(v[Anum_aggregates_initial_state - 1]);
		agg->snapshot_every = n[Anum_aggregates_snapshot_every - 1] ? es_snapshot_every :
			DatumGetInt32(v[Anum_aggregates_snapshot_every - 1]);
		agg->generation = DatumGetInt64(v[Anum_aggregates_generation - 1]);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);

	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_ES_UNKNOWN_AGGREGATE),
				 errmsg("aggregate \"%s\" does not exist", text_to_cstring(name)),
				 errhint("Define it with event_store.define_aggregate().")));
	agg->reducer = with_reducer ? resolve_reducer(name, signature) : InvalidOid;
}

/*
 * One step of a fold: the reducer called (through `fcinfo`, set up for
 * agg->reducer) on the state and the event in values/nulls (an
 * event_store.event of `tupdesc`); returns the new state.  A reducer that
 * returns null is an error (VE012: not a state).
 */
Datum
es_reduce(FunctionCallInfo fcinfo, const EsAggregate *agg, Datum state, TupleDesc tupdesc,
		  Datum *values, bool *nulls, text *stream_id)
{
	HeapTuple	tuple = heap_form_tuple(tupdesc, values, nulls);
	Datum		next;

	fcinfo->args[0].value = state;
	fcinfo->args[0].isnull = false;
	fcinfo->args[1].value = HeapTupleGetDatum(tuple);
	fcinfo->args[1].isnull = false;
	fcinfo->isnull = false;
	next = FunctionCallInvoke(fcinfo);
	if (fcinfo->isnull)
		ereport(ERROR,
				(errcode(ERRCODE_ES_INVALID_STATE),
				 errmsg("reducer %s returned null", format_procedure(agg->reducer)),
				 errdetail("Aggregate \"%s\", stream \"%s\", event version " INT64_FORMAT ".",
						   text_to_cstring(agg->name), text_to_cstring(stream_id),
						   DatumGetInt64(values[Anum_events_stream_version])),
				 errhint("A reducer returns the new state as a JSON value; return the state unchanged for an event it ignores.")));
	return next;
}

/*
 * The state of an aggregate over a stream, and its version: the newest valid
 * snapshot at or before the bounds (at_version, -1 for none; *as_of, NULL for
 * none) and the events after it, folded with the reducer.  Writes a snapshot
 * when it folded snapshot_every events or more and the caller may (see
 * es_may_write_snapshots).  The result is palloc'd in the current context.
 */
Jsonb *
es_fold(text *stream_id, const EsAggregate *agg, const TimestampTz *as_of,
		int64 at_version, Snapshot snapshot, int64 *version)
{
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext work;
	MemoryContext spare;
	EsSnapshot	snap;
	FmgrInfo	flinfo;
	LOCAL_FCINFO(fcinfo, 2);
	TupleDesc	tupdesc;
	EsStreamScan *s;
	Datum		state;
	int64		replayed = 0;
	Jsonb	   *result;
	bool		usable;
	int64		view_after;
	uint64		changes = function_changes;

	if (at_version == 0)
	{
		*version = 0;
		return agg->initial_state;
	}
	usable = es_snapshot_view(&snap.view);
	if (!usable || !es_find_snapshot(stream_id, agg, as_of, at_version, snapshot, &snap))
	{
		snap.version = 0;
		snap.state = agg->initial_state;
		snap.recorded_at = DT_NOBEGIN;
	}

	fmgr_info(agg->reducer, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 2, InvalidOid, NULL, NULL);
	tupdesc = lookup_rowtype_tupdesc(es_catalog()->event_type, -1);

	/*
	 * Two contexts take turns: the state lives in one, the next event's work
	 * is done in the other, which is reset first.  A reducer that returns
	 * its input state unchanged keeps the state where it is.
	 */
	work = AllocSetContextCreate(outer, "event_store fold", ALLOCSET_DEFAULT_SIZES);
	spare = AllocSetContextCreate(outer, "event_store fold", ALLOCSET_DEFAULT_SIZES);
	state = JsonbPGetDatum(snap.state);

	s = es_stream_scan_begin(stream_id, snap.version + 1, at_version > 0 ? at_version : 0,
							 false, as_of, -1, snapshot);
	for (;;)
	{
		Datum		next;

		CHECK_FOR_INTERRUPTS();
		MemoryContextReset(work);
		MemoryContextSwitchTo(work);
		if (!es_stream_scan_next(s))
			break;
		if (changes != function_changes)
		{
			/* the reducer must not have gone meanwhile (fmgr would fail to find it) */
			if (!SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(agg->reducer)))
				ereport(ERROR,
						(errcode(ERRCODE_ES_REDUCER_MISSING),
						 errmsg("reducer of aggregate \"%s\" was dropped while it folded stream \"%s\"",
								text_to_cstring(agg->name), text_to_cstring(stream_id)),
						 errdetail("The function no longer exists at event version " INT64_FORMAT ".",
								   DatumGetInt64(s->values[Anum_events_stream_version])),
						 errhint("Create the function again, or define the aggregate again with event_store.define_aggregate().")));
			changes = function_changes;
		}
		next = es_reduce(fcinfo, agg, state, tupdesc, s->values, s->nulls, stream_id);
		snap.version = DatumGetInt64(s->values[Anum_events_stream_version]);
		snap.recorded_at = DatumGetTimestampTz(s->values[Anum_events_recorded_at]);
		replayed++;
		if (next != state)
		{
			MemoryContext t = work;

			state = PointerGetDatum(PG_DETOAST_DATUM(next));
			work = spare;
			spare = t;
		}
	}
	MemoryContextSwitchTo(outer);
	es_stream_scan_end(s);
	ReleaseTupleDesc(tupdesc);

	result = DatumGetJsonbPCopy(state);
	MemoryContextDelete(work);
	MemoryContextDelete(spare);

	/* not if the view changed meanwhile (a registry change seen mid-fold) */
	if (usable && agg->snapshot_every > 0 && replayed >= agg->snapshot_every &&
		es_may_write_snapshots() && es_snapshot_view(&view_after) && view_after == snap.view)
	{
		snap.state = result;
		es_write_snapshot(stream_id, agg, &snap, false);
	}
	*version = snap.version;
	return result;
}

/*
 * define_aggregate(name, reducer, initial_state, snapshot_every) RETURNS void:
 * register or redefine an aggregate.  Redefinition starts a new generation
 * and deletes the snapshots of older ones.
 */
Datum
event_store_define_aggregate(PG_FUNCTION_ARGS)
{
	text	   *name = es_identifier_arg(fcinfo, 0, "name");
	Oid			reducer;
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Datum		drop_values[2];
	bool		isnull;
	EsFunctionShape shape;

	es_require_arg(fcinfo, 1, "reducer");
	es_require_arg(fcinfo, 2, "initial_state");
	reducer = PG_GETARG_OID(1);
	if (!PG_ARGISNULL(3) && PG_GETARG_INT32(3) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("snapshot_every must not be negative"),
				 errdetail("Got %d.", PG_GETARG_INT32(3)),
				 errhint("Pass 0 to write no snapshot automatically, or NULL to follow event_store.snapshot_every.")));
	reducer_shape(&shape);
	es_check_function(reducer, &shape, ERRCODE_ES_WRONG_REDUCER, NULL);
	es_check_execute(reducer);

	values[0] = PointerGetDatum(name);
	values[1] = CStringGetTextDatum(format_procedure_qualified(reducer));
	values[2] = PG_GETARG_DATUM(2);
	values[3] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nulls[3] = PG_ARGISNULL(3) ? 'n' : ' ';

	/* the registry (and the snapshots) are written by the functions only, as their owner */
	SPI_connect();
	if (es_run(&define_statement, values, nulls, ES_RUN_AS_OWNER, 0, SPI_OK_INSERT_RETURNING) != 1)
		elog(ERROR, "event_store: define_aggregate wrote no row");
	drop_values[0] = PointerGetDatum(name);
	drop_values[1] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	es_run(&drop_old_statement, drop_values, NULL, ES_RUN_AS_OWNER, 0, SPI_OK_DELETE);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * load_aggregate(stream_id, aggregate, as_of, at_version)
 * RETURNS TABLE(version bigint, state jsonb): one row, the aggregate's state
 * after the stream's events (those recorded at or before as_of, and up to
 * at_version, when given).  A stream with no events: version 0 and the
 * initial state.
 */
Datum
event_store_load_aggregate(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	text	   *stream_id;
	text	   *name;
	TimestampTz as_of = 0;
	int64		at_version = -1;
	EsAggregate agg;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	int64		version;
	Jsonb	   *state;

	stream_id = es_identifier_arg(fcinfo, 0, "stream_id");
	name = es_identifier_arg(fcinfo, 1, "aggregate");
	if (!PG_ARGISNULL(2))
		as_of = PG_GETARG_TIMESTAMPTZ(2);
	if (!PG_ARGISNULL(3))
	{
		at_version = PG_GETARG_INT64(3);
		es_check_not_negative(at_version, "at_version", "Pass the version to load the state at, 0 for the initial state, or NULL for the newest.");
	}

	InitMaterializedSRF(fcinfo, 0);
	es_lookup_aggregate(name, GetActiveSnapshot(), true, &agg);
	state = es_fold(stream_id, &agg, PG_ARGISNULL(2) ? NULL : &as_of, at_version,
					GetActiveSnapshot(), &version);
	values[0] = Int64GetDatum(version);
	values[1] = JsonbPGetDatum(state);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}
