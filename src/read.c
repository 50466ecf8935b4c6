/*-------------------------------------------------------------------------
 *
 * read.c
 *	  The read functions: read_stream(), stream_version() and read_all().
 *
 * They hand the scans of scan.c to the executor: each event goes into the
 * function's tuplestore as the scan presents it.  (In FROM, read_stream is
 * mostly not called at all: read_node.c's scan node runs the same scan,
 * started by es_read_stream_begin below, without the tuplestore.)
 * read_all() reads the global log, which the pipeline orders; it makes sure
 * the database has a pipeline worker first.
 *
 * Locking: that of the scans (AccessShareLock, as a SELECT takes).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

#include "pipeline.h"
#include "read.h"
#include "write.h"

PG_FUNCTION_INFO_V1(event_store_read_stream);
PG_FUNCTION_INFO_V1(event_store_stream_version);
PG_FUNCTION_INFO_V1(event_store_read_all);
PG_FUNCTION_INFO_V1(event_store_stream_hash);

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
	Datum		args[ES_READ_STREAM_NARGS];
	bool		nulls[ES_READ_STREAM_NARGS];
	EsStreamScan *s;
	int			i;

	for (i = 0; i < ES_READ_STREAM_NARGS; i++)
	{
		args[i] = PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i);
	}
	InitMaterializedSRF(fcinfo, 0);
	s = es_read_stream_begin(args, nulls, GetActiveSnapshot());
	if (s == NULL)
		return (Datum) 0;
	while (es_stream_scan_next(s))
		es_stream_scan_put(s, rsinfo->setResult, rsinfo->setDesc);
	es_stream_scan_end(s);
	return (Datum) 0;
}

/*
 * read_stream's arguments, checked, and the stream scan they ask for; NULL
 * when they ask for no event (max_count 0).  The function above and its
 * scan node (read_node.c) both start here.
 */
EsStreamScan *
es_read_stream_begin(const Datum *args, const bool *nulls, Snapshot snapshot)
{
	int64		from = 0;
	int64		max_count = -1;
	TimestampTz as_of = 0;

	es_require_value(nulls[0], "stream_id");
	es_require_value(nulls[3], "backwards");
	if (!nulls[1])
	{
		from = DatumGetInt64(args[1]);
		if (from < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("from_version must be at least 1"),
					 errdetail("Got " INT64_FORMAT ".", from),
					 errhint("A stream's first event has version 1; pass NULL to start at the first (or, backwards, the newest) event.")));
	}
	if (!nulls[2])
	{
		max_count = DatumGetInt32(args[2]);
		es_check_not_negative(max_count, "max_count", "Pass NULL to read every event.");
	}
	if (!nulls[4])
		as_of = DatumGetTimestampTz(args[4]);
	if (max_count == 0)
		return NULL;

	if (DatumGetBool(args[3]))
		return es_stream_scan_begin(DatumGetTextPP(args[0]), 0, from, true,
									nulls[4] ? NULL : &as_of, max_count, snapshot);
	return es_stream_scan_begin(DatumGetTextPP(args[0]), from, 0, false,
								nulls[4] ? NULL : &as_of, max_count, snapshot);
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

/*
 * read_all(after_position, max_count, categories, event_types
 *			[, consumer_group_member, consumer_group_size])
 * RETURNS SETOF event_store.event: the global log in commit order; with a
 * consumer group, only the events of the member's streams.  (0.1.0's
 * read_all has the first four arguments only.)
 */
Datum
event_store_read_all(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		after;
	int32		max_count;
	int32		member = 0;
	int32		size = 0;
	EsLogScan  *s;

	es_require_arg(fcinfo, 0, "after_position");
	es_require_arg(fcinfo, 1, "max_count");
	after = PG_GETARG_INT64(0);
	max_count = PG_GETARG_INT32(1);
	es_check_not_negative(after, "after_position", "Pass 0 to read from the first event.");
	es_check_not_negative(max_count, "max_count", NULL);
	if (PG_NARGS() >= 6 && (!PG_ARGISNULL(4) || !PG_ARGISNULL(5)))
	{
		if (PG_ARGISNULL(4) || PG_ARGISNULL(5))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("consumer_group_member and consumer_group_size must be given together"),
					 errhint("Pass both to read one member's share of the log, or neither to read all of it.")));
		member = PG_GETARG_INT32(4);
		size = PG_GETARG_INT32(5);
		if (size < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("consumer_group_size must be at least 1"),
					 errdetail("The size given was %d.", size)));
		if (member < 0 || member >= size)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("consumer_group_member must be between 0 and consumer_group_size - 1"),
					 errdetail("The member given was %d, of a group of %d.", member, size)));
	}
	es_ensure_pipeline_worker();

	InitMaterializedSRF(fcinfo, 0);
	s = es_log_scan_begin(after, PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2),
						  PG_ARGISNULL(3) ? NULL : PG_GETARG_ARRAYTYPE_P(3),
						  max_count, GetActiveSnapshot());
	if (size > 0)
		es_log_scan_set_group(s, member, size);
	while (es_log_scan_next(s))
		es_log_scan_put(s, rsinfo->setResult, rsinfo->setDesc);
	es_log_scan_end(s);
	return (Datum) 0;
}


/*
 * stream_hash(stream_id) RETURNS bigint: the hash that assigns streams to
 * consumer group members (es_stream_hash), for tools outside the database.
 */
Datum
event_store_stream_hash(PG_FUNCTION_ARGS)
{
	text	   *stream_id = es_identifier_arg(fcinfo, 0, "stream_id");

	PG_RETURN_INT64(es_stream_hash(VARDATA_ANY(stream_id), VARSIZE_ANY_EXHDR(stream_id)));
}
