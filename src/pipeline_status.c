/*-------------------------------------------------------------------------
 *
 * pipeline_status.c
 *	  The pipeline seen from SQL: wait_for_pipeline(), the state behind the
 *	  view event_store.pipeline_status, and the wait for the end of the log
 *	  that projections use.
 *
 * Locking: the shared pipeline entry is read under es_pipeline_lock,
 * shared; waits sleep on the entry's condition variable.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "internal.h"
#include "pipeline.h"

PG_FUNCTION_INFO_V1(event_store_wait_for_pipeline);
PG_FUNCTION_INFO_V1(event_store_pipeline_state);

/*
 * Wait until every transaction committed before the call is in the global
 * log, or until the deadline; true if it is.  Commits made with
 * synchronous_commit = off count too: their WAL is flushed first, so that
 * the worker can decode it.
 */
bool
es_wait_for_pipeline_until(TimestampTz deadline)
{
	XLogRecPtr	target;
	bool		done = false;

	es_ensure_pipeline_worker();
	target = GetXLogInsertRecPtr();

	/*
	 * That is where the next record goes, past the header of its page if it
	 * starts one: flush up to the end of the last record, before the header.
	 */
	if (XLogSegmentOffset(target, wal_segment_size) == SizeOfXLogLongPHD)
		target -= SizeOfXLogLongPHD;
	else if (target % XLOG_BLCKSZ == SizeOfXLogShortPHD)
		target -= SizeOfXLogShortPHD;
	if (target > GetFlushRecPtr(NULL))
		XLogFlush(target);
	es_pipeline_wake_db(MyDatabaseId);
	ConditionVariablePrepareToSleep(&es_pipeline->progress_cv);
	for (;;)
	{
		EsPipelineDb *db;
		long		left;
		bool		missing;

		LWLockAcquire(es_pipeline_lock, LW_SHARED);
		db = es_pipeline_find(MyDatabaseId);
		missing = db == NULL;
		done = db != NULL && db->pid != 0 && db->applied_lsn >= target;
		LWLockRelease(es_pipeline_lock);
		if (done)
			break;
		if (missing)
			es_pipeline_want(MyDatabaseId); /* the worker stopped meanwhile */
		left = (long) TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (left <= 0)
			break;
		/* the worker broadcasts after every round; the timeout bounds a missed one */
		(void) ConditionVariableTimedSleep(&es_pipeline->progress_cv, Min(left, 100),
										   PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	return done;
}

/*
 * wait_for_pipeline(timeout interval DEFAULT '5 s') RETURNS boolean: true
 * once every transaction committed before the call is in the global log,
 * false after the timeout.  For tests and read-your-writes.
 */
Datum
event_store_wait_for_pipeline(PG_FUNCTION_ARGS)
{
	int64		timeout_ms;

	es_require_arg(fcinfo, 0, "timeout");
	timeout_ms = es_interval_ms(PG_GETARG_INTERVAL_P(0), "timeout");
	PG_RETURN_BOOL(es_wait_for_pipeline_until(TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
																		  timeout_ms)));
}

/*
 * _pipeline_state(): this database's entry, for the pipeline_status view.
 */
Datum
event_store_pipeline_state(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[12];
	bool		nulls[12];
	EsPipelineDb copy;
	bool		found = false;
	char		name[NAMEDATALEN];

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	es_ensure_pipeline_worker();
	LWLockAcquire(es_pipeline_lock, LW_SHARED);
	{
		EsPipelineDb *db = es_pipeline_find(MyDatabaseId);

		if (db != NULL)
		{
			copy = *db;
			found = true;
		}
	}
	LWLockRelease(es_pipeline_lock);

	memset(nulls, 0, sizeof(nulls));
	snprintf(name, sizeof(name), ES_PIPELINE_NAME_FORMAT, MyDatabaseId);
	values[0] = CStringGetTextDatum(name);
	if (!found)
	{
		bool		full = true;
		int			i;

		LWLockAcquire(es_pipeline_lock, LW_SHARED);
		for (i = 0; i < ES_MAX_PIPELINES && full; i++)
			full = es_pipeline->dbs[i].state != ES_PIPE_FREE;
		LWLockRelease(es_pipeline_lock);
		memset(nulls, 1, sizeof(nulls));
		nulls[0] = false;
		values[1] = CStringGetTextDatum(full ? "unavailable" : "starting");
		nulls[1] = false;
		values[3] = BoolGetDatum(false);
		nulls[3] = false;
		if (full)
		{
			values[10] = CStringGetTextDatum(psprintf("the pipeline serves at most %d databases, and every entry is taken",
													  ES_MAX_PIPELINES));
			nulls[10] = false;
		}
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
	}
	values[1] = CStringGetTextDatum(es_restore_in_progress(MyDatabaseId) != 0 ? "restoring" :
									copy.pid != 0 ? "running" :
									copy.state == ES_PIPE_WANTED ? "starting" : "stopped");
	values[2] = Int32GetDatum(copy.pid);
	nulls[2] = copy.pid == 0;
	values[3] = BoolGetDatum(copy.pid != 0);
	values[4] = LSNGetDatum(copy.decoded_lsn);
	nulls[4] = XLogRecPtrIsInvalid(copy.decoded_lsn);
	values[5] = LSNGetDatum(copy.applied_lsn);
	nulls[5] = XLogRecPtrIsInvalid(copy.applied_lsn);
	values[6] = Int64GetDatum(copy.last_position);
	values[7] = TimestampTzGetDatum(copy.last_commit_time);
	nulls[7] = copy.last_commit_time == 0;
	values[8] = TimestampTzGetDatum(copy.last_apply_time);
	nulls[8] = copy.last_apply_time == 0;
	values[9] = Int64GetDatum(copy.rebuilds);
	values[10] = CStringGetTextDatum(copy.last_error);
	nulls[10] = copy.last_error[0] == '\0';
	values[11] = TimestampTzGetDatum(copy.caught_up_time);
	nulls[11] = copy.caught_up_time == 0;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
