/*-------------------------------------------------------------------------
 *
 * read_all.c
 *	  The read side of the global log: read_all(), wait_for_pipeline() and
 *	  the pipeline's health (event_store.pipeline_status).
 *
 * read_all() reads event_store.global_log in position order through its
 * primary key, or, filtered, through the (category, global_position) and
 * (event_type, global_position) indexes (one ordered index scan per
 * category or type, merged), and fetches each event through the event
 * table's primary key.  It runs SQL (SPI) as the caller, so the caller needs
 * SELECT on both tables.  Each event passes through es_present_event().
 *
 * Positions are committed by the pipeline worker in increasing order, in
 * one transaction per batch, so a snapshot sees a prefix of the log: a
 * reader that passes the last position it saw never skips an event.
 *
 * Locking: AccessShareLock on the tables, as a SELECT takes; the shared
 * pipeline entry is read under es_pipeline_lock, shared.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "event_store.h"
#include "pipeline.h"

PG_FUNCTION_INFO_V1(event_store_read_all);
PG_FUNCTION_INFO_V1(event_store_wait_for_pipeline);
PG_FUNCTION_INFO_V1(event_store_pipeline_state);

#define READ_ALL_COLUMNS \
	"SELECT g.global_position, e.stream_id, e.stream_version, e.event_id, e.event_type, " \
	"       e.schema_version, e.data, e.metadata, e.recorded_at "
#define READ_ALL_JOIN \
	"  JOIN event_store.events e ON e.stream_id OPERATOR(pg_catalog.=) g.stream_id " \
	"                           AND e.stream_version OPERATOR(pg_catalog.=) g.stream_version "

static const char *const read_all_queries[4] = {
	/* no filter */
	READ_ALL_COLUMNS
	"  FROM event_store.global_log g " READ_ALL_JOIN
	" WHERE g.global_position OPERATOR(pg_catalog.>) $1 "
	" ORDER BY g.global_position LIMIT $2",
	/* categories (and maybe event types): one index scan per category */
	READ_ALL_COLUMNS
	"  FROM (SELECT DISTINCT c FROM pg_catalog.unnest($3::pg_catalog.text[]) c) cs "
	"  CROSS JOIN LATERAL (SELECT * FROM event_store.global_log g "
	"                       WHERE g.category OPERATOR(pg_catalog.=) cs.c "
	"                         AND g.global_position OPERATOR(pg_catalog.>) $1 "
	"                       ORDER BY g.global_position LIMIT $2) g " READ_ALL_JOIN
	" ORDER BY g.global_position LIMIT $2",
	/* event types only: one index scan per type */
	READ_ALL_COLUMNS
	"  FROM (SELECT DISTINCT t FROM pg_catalog.unnest($4::pg_catalog.text[]) t) ts "
	"  CROSS JOIN LATERAL (SELECT * FROM event_store.global_log g "
	"                       WHERE g.event_type OPERATOR(pg_catalog.=) ts.t "
	"                         AND g.global_position OPERATOR(pg_catalog.>) $1 "
	"                       ORDER BY g.global_position LIMIT $2) g " READ_ALL_JOIN
	" ORDER BY g.global_position LIMIT $2",
	/* both: per category, filtered by type (the category index drives) */
	READ_ALL_COLUMNS
	"  FROM (SELECT DISTINCT c FROM pg_catalog.unnest($3::pg_catalog.text[]) c) cs "
	"  CROSS JOIN LATERAL (SELECT * FROM event_store.global_log g "
	"                       WHERE g.category OPERATOR(pg_catalog.=) cs.c "
	"                         AND g.global_position OPERATOR(pg_catalog.>) $1 "
	"                         AND g.event_type OPERATOR(pg_catalog.=) ANY ($4::pg_catalog.text[]) "
	"                       ORDER BY g.global_position LIMIT $2) g " READ_ALL_JOIN
	" ORDER BY g.global_position LIMIT $2",
};

static SPIPlanPtr read_all_plans[4];

/*
 * A filter array must be one-dimensional without NULLs.
 */
static void
check_name_array(ArrayType *arr, const char *what)
{
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array", what)));
	if (array_contains_nulls(arr))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not contain null", what),
				 errhint("Pass NULL instead of the array to read every %s.",
						 strcmp(what, "categories") == 0 ? "category" : "event type")));
}

/*
 * Make sure this database has a pipeline worker (asking the launcher for
 * one if not: a database restored from a base backup has no slot yet).
 */
static void
ensure_worker(void)
{
	bool		have;

	es_require_pipeline();
	LWLockAcquire(es_pipeline_lock, LW_SHARED);
	have = es_pipeline_find(MyDatabaseId) != NULL;
	LWLockRelease(es_pipeline_lock);
	if (!have)
		es_pipeline_want(MyDatabaseId);
}

/*
 * read_all(after_position, max_count, categories, event_types)
 * RETURNS SETOF event_store.event: the global log in commit order.
 */
Datum
event_store_read_all(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		after;
	int32		max_count;
	int			shape;
	Datum		args[4];
	char		argnulls[4] = {' ', ' ', 'n', 'n'};
	Relation	events;
	uint64		i;
	int			ret;

	es_require_arg(fcinfo, 0, "after_position");
	es_require_arg(fcinfo, 1, "max_count");
	after = PG_GETARG_INT64(0);
	max_count = PG_GETARG_INT32(1);
	if (after < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("after_position must not be negative"),
				 errdetail("Got " INT64_FORMAT ".", after),
				 errhint("Pass 0 to read from the first event.")));
	if (max_count < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_count must not be negative"),
				 errdetail("Got %d.", max_count)));
	if (!PG_ARGISNULL(2))
		check_name_array(PG_GETARG_ARRAYTYPE_P(2), "categories");
	if (!PG_ARGISNULL(3))
		check_name_array(PG_GETARG_ARRAYTYPE_P(3), "event_types");
	ensure_worker();

	events = table_open(es_catalog()->events_relid, AccessShareLock);
	es_check_read_access(events);
	table_close(events, AccessShareLock);

	InitMaterializedSRF(fcinfo, 0);
	if (max_count == 0)
		return (Datum) 0;

	shape = (PG_ARGISNULL(2) ? 0 : 1) + (PG_ARGISNULL(3) ? 0 : 2);
	args[0] = Int64GetDatum(after);
	args[1] = Int64GetDatum((int64) max_count);
	args[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	args[3] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	if (!PG_ARGISNULL(2))
		argnulls[2] = ' ';
	if (!PG_ARGISNULL(3))
		argnulls[3] = ' ';

	SPI_connect();
	if (read_all_plans[shape] == NULL)
	{
		Oid			types[4] = {INT8OID, INT8OID, TEXTARRAYOID, TEXTARRAYOID};
		SPIPlanPtr	plan = SPI_prepare(read_all_queries[shape], 4, types);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare read_all: %s", SPI_result_code_string(SPI_result));
		read_all_plans[shape] = plan;
	}
	ret = SPI_execute_plan(read_all_plans[shape], args, argnulls, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "read_all failed: %s", SPI_result_code_string(ret));
	for (i = 0; i < SPI_processed; i++)
	{
		Datum		values[Natts_event];
		bool		nulls[Natts_event];

		heap_deform_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, values, nulls);
		es_present_event(values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}

/*
 * wait_for_pipeline(timeout interval DEFAULT '5 s') RETURNS boolean: true
 * once every transaction committed (and flushed) before the call is in the
 * global log, false after the timeout.  For tests and read-your-writes.
 */
Datum
event_store_wait_for_pipeline(PG_FUNCTION_ARGS)
{
	Interval   *timeout;
	int64		timeout_ms;
	XLogRecPtr	target;
	TimestampTz deadline;
	bool		done = false;

	es_require_arg(fcinfo, 0, "timeout");
	timeout = PG_GETARG_INTERVAL_P(0);
	timeout_ms = (timeout->time + (int64) timeout->day * USECS_PER_DAY +
				  (int64) timeout->month * DAYS_PER_MONTH * USECS_PER_DAY) / 1000;
	if (timeout_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must not be negative")));
	ensure_worker();

	target = GetFlushRecPtr(NULL);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
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
			es_pipeline_want(MyDatabaseId);	/* the worker stopped meanwhile */
		left = (long) TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (left <= 0)
			break;
		/* the worker broadcasts after every round; the timeout bounds a missed one */
		(void) ConditionVariableTimedSleep(&es_pipeline->progress_cv, Min(left, 100),
										   PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	PG_RETURN_BOOL(done);
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
	ensure_worker();
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
		memset(nulls, 1, sizeof(nulls));
		nulls[0] = false;
		values[1] = CStringGetTextDatum("starting");
		nulls[1] = false;
		values[3] = BoolGetDatum(false);
		nulls[3] = false;
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
	}
	values[1] = CStringGetTextDatum(copy.pid != 0 ? "running" :
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
