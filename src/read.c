/*-------------------------------------------------------------------------
 *
 * read.c
 *	  The read functions: read_stream(), stream_version() and read_all().
 *
 * They hand the scans of scan.c to the executor: each event goes into the
 * function's tuplestore as the scan presents it.  read_all() reads the
 * global log, which the pipeline orders; it makes sure the database has a
 * pipeline worker first.
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
		es_check_not_negative(max_count, "max_count", "Pass NULL to read every event.");
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
		es_stream_scan_put(s, rsinfo->setResult, rsinfo->setDesc);
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
