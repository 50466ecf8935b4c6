/*-------------------------------------------------------------------------
 *
 * read.c
 *	  The read path: read_stream() and stream_version().
 *
 * Reads go straight through the primary key (stream_id, stream_version) with
 * the statement's snapshot and put the rows into the SRF's tuplestore, with
 * no SQL in between.  Because they bypass the executor, they check the
 * caller's SELECT privilege on event_store.events themselves and refuse to
 * run where row-level security would apply.  Locking: AccessShareLock on the
 * table and its index, as a SELECT takes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"

#include "event_store.h"

PG_FUNCTION_INFO_V1(event_store_read_stream);
PG_FUNCTION_INFO_V1(event_store_stream_version);

/*
 * The caller must be allowed to SELECT from a table a read function reads
 * directly (the event table, the global log), and no row-level security
 * policy may apply to it (the read functions could not honour it).
 */
void
es_check_read_access(Relation rel)
{
	AclResult	acl = pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), ACL_SELECT);

	if (acl != ACLCHECK_OK)
		aclcheck_error(acl, OBJECT_TABLE, RelationGetRelationName(rel));
	if (check_enable_rls(RelationGetRelid(rel), InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("event_store read functions do not support row-level security on event_store.%s",
						RelationGetRelationName(rel)),
				 errhint("Query event_store.%s with SELECT, or disable row-level security on it.",
						 RelationGetRelationName(rel))));
}

/*
 * Turn a stored event into what readers are handed: the one place every read
 * path (read_stream, aggregates, read_all, projections, the output plugin
 * when asked) passes each event through.  values/nulls are an
 * event_store.event (Natts_event attributes); the function may replace any
 * of them with newly palloc'd datums.  Decryption comes first: the protected
 * paths refer to the stored shape, and upcasters need the plaintext (or the
 * nulls a forgotten subject leaves).  Then upcasting to the newest schema.
 * An event they do not concern pays close to nothing.
 */
void
es_present_event(Datum *values, bool *nulls)
{
	es_decrypt_event(values, nulls);	/* crypto.c: protected fields, in the stored shape */
	es_upcast_event(values, nulls);		/* upcast.c: then the newest shape */
}

/*
 * Start reading a stream's events visible to the snapshot, in version order
 * (descending when backwards), with versions in [lower, upper] (0: no bound),
 * recorded at or before *as_of (NULL: any time), at most max_count of them
 * (-1: all).  Checks the caller's right to read.  Every read path (read
 * functions, aggregates) goes through here, so that what it hands out is
 * the same everywhere.
 */
EsStreamScan *
es_stream_scan_begin(text *stream_id, int64 lower, int64 upper, bool backwards,
					 const TimestampTz *as_of, int64 max_count, Snapshot snapshot)
{
	const EsCatalog *cat = es_catalog();
	EsStreamScan *s = palloc0(sizeof(EsStreamScan));
	ScanKeyData keys[3];
	int			nkeys = 0;

	s->events = table_open(cat->events_relid, AccessShareLock);
	es_check_read_access(s->events);
	s->index = index_open(cat->stream_index, AccessShareLock);

	ScanKeyInit(&keys[nkeys++], 1, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(stream_id));
	if (lower > 0)
		ScanKeyInit(&keys[nkeys++], 2, BTGreaterEqualStrategyNumber, F_INT8GE, Int64GetDatum(lower));
	if (upper > 0)
		ScanKeyInit(&keys[nkeys++], 2, BTLessEqualStrategyNumber, F_INT8LE, Int64GetDatum(upper));
	s->scan = index_beginscan(s->events, s->index, snapshot, nkeys, 0);
	index_rescan(s->scan, keys, nkeys, NULL, 0);
	s->slot = table_slot_create(s->events, NULL);
	s->dir = backwards ? BackwardScanDirection : ForwardScanDirection;
	s->has_as_of = (as_of != NULL);
	s->as_of = as_of ? *as_of : 0;
	s->remaining = max_count;
	s->cxt = CurrentMemoryContext;
	s->row_context = AllocSetContextCreate(CurrentMemoryContext, "event_store stream scan",
										   ALLOCSET_DEFAULT_SIZES);
	/* the global position is assigned by the decoding pipeline; NULL until then */
	s->nulls[0] = true;
	return s;
}

/*
 * The next event into s->values/s->nulls (an event_store.event, as
 * es_present_event hands it out), or false at the end.  The values may point
 * into the scan's current tuple: valid until the next call.  The caller may
 * call this in a short-lived memory context that it resets between events
 * (the fold of load_aggregate does): the index scan keeps its own state in
 * the context the scan began in, and only what es_present_event allocates
 * goes into the caller's.
 */
bool
es_stream_scan_next(EsStreamScan *s)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext old;

	if (s->remaining == 0)
		return false;
	for (;;)
	{
		bool		found;

		CHECK_FOR_INTERRUPTS();
		MemoryContextSwitchTo(s->cxt);
		found = index_getnext_slot(s->scan, s->dir, s->slot);
		if (found)
			slot_getallattrs(s->slot);
		MemoryContextSwitchTo(caller);
		if (!found)
			break;
		if (s->has_as_of &&
			DatumGetTimestampTz(s->slot->tts_values[Anum_events_recorded_at - 1]) > s->as_of)
		{
			/* recorded_at never decreases along a stream: forwards, we are done */
			if (ScanDirectionIsForward(s->dir))
				return false;
			continue;
		}
		memcpy(&s->values[1], s->slot->tts_values, sizeof(Datum) * Natts_events);
		memcpy(&s->nulls[1], s->slot->tts_isnull, sizeof(bool) * Natts_events);
		/* what presenting an event allocates lives until the next one */
		MemoryContextReset(s->row_context);
		old = MemoryContextSwitchTo(s->row_context);
		es_present_event(s->values, s->nulls);
		MemoryContextSwitchTo(old);
		if (s->remaining > 0)
			s->remaining--;
		return true;
	}
	return false;
}

/*
 * Finish a stream scan: release the scan, its relations and its memory.
 */
void
es_stream_scan_end(EsStreamScan *s)
{
	MemoryContextDelete(s->row_context);
	ExecDropSingleTupleTableSlot(s->slot);
	index_endscan(s->scan);
	index_close(s->index, AccessShareLock);
	table_close(s->events, AccessShareLock);
	pfree(s);
}

/*
 * read_stream(stream_id, from_version, max_count, backwards, as_of)
 * RETURNS SETOF event_store.event
 *
 * Forwards: the events with version >= from_version (default: the first),
 * oldest first.  Backwards: version <= from_version (default: the newest),
 * newest first.  At most max_count events (NULL: all).  With as_of, only the
 * events recorded at or before that time: recorded_at never decreases along
 * a stream, so they are a prefix of it.
 */
Datum
event_store_read_stream(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		from = 0;
	int64		max_count = -1;
	TimestampTz as_of = 0;
	EsStreamScan *s;

	es_require_arg(fcinfo, 0, "stream_id");
	es_require_arg(fcinfo, 3, "backwards");
	if (!PG_ARGISNULL(1))
	{
		from = PG_GETARG_INT64(1);
		if (from < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("from_version must be at least 1"),
					 errdetail("Got " INT64_FORMAT ".", from),
					 errhint("A stream's first event has version 1; pass NULL to start at the first (or, backwards, the newest) event.")));
	}
	if (!PG_ARGISNULL(2))
	{
		max_count = PG_GETARG_INT32(2);
		if (max_count < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_count must not be negative"),
					 errdetail("Got " INT64_FORMAT ".", max_count),
					 errhint("Pass NULL to read every event.")));
	}
	if (!PG_ARGISNULL(4))
		as_of = PG_GETARG_TIMESTAMPTZ(4);

	InitMaterializedSRF(fcinfo, 0);
	if (max_count == 0)
		return (Datum) 0;

	if (PG_GETARG_BOOL(3))
		s = es_stream_scan_begin(PG_GETARG_TEXT_PP(0), 0, from, true,
								 PG_ARGISNULL(4) ? NULL : &as_of, max_count, GetActiveSnapshot());
	else
		s = es_stream_scan_begin(PG_GETARG_TEXT_PP(0), from, 0, false,
								 PG_ARGISNULL(4) ? NULL : &as_of, max_count, GetActiveSnapshot());
	while (es_stream_scan_next(s))
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, s->values, s->nulls);
	es_stream_scan_end(s);
	return (Datum) 0;
}

/*
 * stream_version(stream_id) RETURNS bigint: the newest version of the stream
 * the caller's snapshot sees; 0 for a stream with no events.
 */
Datum
event_store_stream_version(PG_FUNCTION_ARGS)
{
	const EsCatalog *cat;
	Relation	events;
	Relation	idx;
	int64		version;

	es_require_arg(fcinfo, 0, "stream_id");
	cat = es_catalog();
	events = table_open(cat->events_relid, AccessShareLock);
	es_check_read_access(events);
	idx = index_open(cat->stream_index, AccessShareLock);
	version = es_stream_head(events, idx, PG_GETARG_TEXT_PP(0), GetActiveSnapshot(), NULL);
	index_close(idx, AccessShareLock);
	table_close(events, AccessShareLock);
	PG_RETURN_INT64(version);
}
