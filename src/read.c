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
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"

#include "event_store.h"

PG_FUNCTION_INFO_V1(event_store_read_stream);
PG_FUNCTION_INFO_V1(event_store_stream_version);

/*
 * The caller must be allowed to SELECT from the event table, and no
 * row-level security policy may apply to it (the read functions could not
 * honour it).
 */
void
es_check_read_access(Relation events)
{
	AclResult	acl = pg_class_aclcheck(RelationGetRelid(events), GetUserId(), ACL_SELECT);

	if (acl != ACLCHECK_OK)
		aclcheck_error(acl, OBJECT_TABLE, RelationGetRelationName(events));
	if (check_enable_rls(RelationGetRelid(events), InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("event_store read functions do not support row-level security on event_store.events"),
				 errhint("Query event_store.events with SELECT, or disable row-level security on it.")));
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
	const EsCatalog *cat;
	text	   *stream_id;
	bool		has_from = !PG_ARGISNULL(1);
	int64		from = 0;
	int64		max_count = -1;
	bool		backwards;
	bool		has_as_of = !PG_ARGISNULL(4);
	TimestampTz as_of = 0;
	Relation	events;
	Relation	idx;
	ScanKeyData keys[2];
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanDirection dir;
	Datum		values[Natts_event];
	bool		nulls[Natts_event];
	int64		count = 0;

	es_require_arg(fcinfo, 0, "stream_id");
	es_require_arg(fcinfo, 3, "backwards");
	stream_id = PG_GETARG_TEXT_PP(0);
	backwards = PG_GETARG_BOOL(3);
	if (has_from)
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
	if (has_as_of)
		as_of = PG_GETARG_TIMESTAMPTZ(4);

	InitMaterializedSRF(fcinfo, 0);
	if (max_count == 0)
		return (Datum) 0;

	cat = es_catalog();
	events = table_open(cat->events_relid, AccessShareLock);
	es_check_read_access(events);
	idx = index_open(cat->stream_index, AccessShareLock);

	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(stream_id));
	if (has_from)
		ScanKeyInit(&keys[1], 2,
					backwards ? BTLessEqualStrategyNumber : BTGreaterEqualStrategyNumber,
					backwards ? F_INT8LE : F_INT8GE, Int64GetDatum(from));
	dir = backwards ? BackwardScanDirection : ForwardScanDirection;

	scan = index_beginscan(events, idx, GetActiveSnapshot(), has_from ? 2 : 1, 0);
	index_rescan(scan, keys, has_from ? 2 : 1, NULL, 0);
	slot = table_slot_create(events, NULL);

	/* the global position is assigned by the decoding pipeline; NULL until then */
	values[0] = (Datum) 0;
	nulls[0] = true;
	while (index_getnext_slot(scan, dir, slot))
	{
		slot_getallattrs(slot);
		if (has_as_of &&
			DatumGetTimestampTz(slot->tts_values[Anum_events_recorded_at - 1]) > as_of)
		{
			if (!backwards)
				break;
			continue;
		}
		memcpy(&values[1], slot->tts_values, sizeof(Datum) * Natts_events);
		memcpy(&nulls[1], slot->tts_isnull, sizeof(bool) * Natts_events);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		if (++count == max_count)
			break;
	}

	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	index_close(idx, AccessShareLock);
	table_close(events, AccessShareLock);
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
