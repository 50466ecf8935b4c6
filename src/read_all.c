/*-------------------------------------------------------------------------
 *
 * read_all.c
 *	  The read side of the global log: read_all(), wait_for_pipeline() and
 *	  the pipeline's health (event_store.pipeline_status).
 *
 * The log scan (es_log_scan_*) is the reader behind read_all() and the
 * projections: it reads event_store.global_log in position order through its
 * primary key, or, filtered, through the (category, global_position) and
 * (event_type, global_position) indexes (one ordered index scan per
 * category or type, merged by position), and fetches each event through the
 * event table's primary key: direct index scans, no SQL, one row in memory
 * at a time (what presenting a row allocates is reset before the next).
 * Because it bypasses the executor it checks the current role's SELECT
 * privilege on both tables itself.  Each event passes through
 * es_present_event(), like every read path.
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

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "event_store.h"
#include "pipeline.h"

PG_FUNCTION_INFO_V1(event_store_read_all);
PG_FUNCTION_INFO_V1(event_store_wait_for_pipeline);
PG_FUNCTION_INFO_V1(event_store_pipeline_state);

/* Columns of event_store.global_log (1-based). */
#define Anum_log_global_position	1
#define Anum_log_stream_id			2
#define Anum_log_stream_version		3
#define Anum_log_category			4
#define Anum_log_event_type			5

/* One ordered index scan of the log, merged with the others by position. */
typedef struct LogSubScan
{
	IndexScanDesc scan;
	TupleTableSlot *slot;		/* the scan's current row, when `have` */
	bool		have;
	bool		done;
	int64		position;		/* of the current row */
} LogSubScan;

/*
 * A filter array of names (categories, event types): one-dimensional,
 * without NULLs, each a valid identifier (es_check_identifier).  Returns the
 * number of distinct names and them, sorted in byte order, in *names
 * (palloc'd texts), for bsearch with es_text_cmp.  `what` names the argument.
 */
int
es_name_array(ArrayType *arr, const char *what, text ***names)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	int			k = 0;
	bool		categories = strcmp(what, "categories") == 0;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array", what)));
	if (array_contains_nulls(arr))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not contain null", what),
				 errhint("Pass NULL instead of the array to select every %s.",
						 categories ? "category" : "event type")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	*names = palloc(sizeof(text *) * Max(n, 1));
	for (i = 0; i < n; i++)
		(*names)[i] = es_check_identifier(elems[i], false,
										  categories ? "a category" : "an event type");
	qsort(*names, n, sizeof(text *), es_text_cmp);
	for (i = 0; i < n; i++)
		if (k == 0 || es_text_cmp(&(*names)[k - 1], &(*names)[i]) != 0)
			(*names)[k++] = (*names)[i];
	return k;
}

/* Byte-order comparison of two texts (through pointers to them), for qsort and bsearch. */
int
es_text_cmp(const void *a, const void *b)
{
	const text *x = *(text *const *) a;
	const text *y = *(text *const *) b;
	int			lx = VARSIZE_ANY_EXHDR(x);
	int			ly = VARSIZE_ANY_EXHDR(y);
	int			c = memcmp(VARDATA_ANY(x), VARDATA_ANY(y), Min(lx, ly));

	return c != 0 ? c : (lx > ly) - (lx < ly);
}

/*
 * Start reading the global log after position `after`, in position order,
 * through the snapshot: every event, or only those of the given categories
 * and/or event types (NULL: no filter; an empty array matches nothing), at
 * most max_count (-1: no limit).  One ordered index scan per category (or,
 * without categories, per event type) of the log's (category,
 * global_position) and (event_type, global_position) indexes, merged by
 * position; with both filters the types are checked on the category scans'
 * rows.  Each row's event is fetched through the event table's primary key.
 * Checks the current role's right to read both tables.
 *
 * A snapshot sees a prefix of the log (the pipeline commits positions in
 * increasing order, one transaction at a time), so a reader that passes the
 * last position it saw skips nothing.  Should a position's event not be
 * visible (it cannot be: the pipeline publishes a position only once its
 * transaction is visible), the scan ends before it rather than skip it.
 */
EsLogScan *
es_log_scan_begin(int64 after, ArrayType *categories, ArrayType *event_types,
				  int64 max_count, Snapshot snapshot)
{
	const EsCatalog *cat = es_catalog();
	EsLogScan  *s = palloc0(sizeof(EsLogScan));
	text	  **names = NULL;
	int			nnames = 0;
	Oid			index;
	int			i;

	s->log = table_open(cat->log_relid, AccessShareLock);
	s->events = table_open(cat->events_relid, AccessShareLock);
	es_check_read_access(s->events);
	es_check_read_access(s->log);
	s->snapshot = snapshot;
	s->remaining = max_count;
	s->position = after;
	s->cxt = CurrentMemoryContext;
	s->row_context = AllocSetContextCreate(CurrentMemoryContext, "event_store log scan",
										   ALLOCSET_DEFAULT_SIZES);
	if (categories != NULL)
	{
		/* one scan per category; with types too, the types are checked on its rows */
		nnames = es_name_array(categories, "categories", &names);
		index = cat->log_category_index;
		if (event_types != NULL)
		{
			s->ntypes = es_name_array(event_types, "event_types", &s->types);
			s->filter_types = true;
		}
	}
	else if (event_types != NULL)
	{
		/* one scan per event type */
		nnames = es_name_array(event_types, "event_types", &names);
		index = cat->log_type_index;
	}
	else
		index = cat->log_pkey;	/* one scan of the whole log */

	s->log_index = index_open(index, AccessShareLock);
	s->events_index = index_open(cat->stream_index, AccessShareLock);
	s->nsubs = (index == cat->log_pkey) ? 1 : nnames;
	s->subs = palloc0(sizeof(LogSubScan) * Max(s->nsubs, 1));
	for (i = 0; i < s->nsubs; i++)
	{
		LogSubScan *sub = &s->subs[i];
		ScanKeyData keys[2];
		int			nkeys = 0;

		if (index != cat->log_pkey)
			ScanKeyInit(&keys[nkeys++], 1, BTEqualStrategyNumber, F_TEXTEQ,
						PointerGetDatum(names[i]));
		ScanKeyInit(&keys[nkeys], nkeys + 1, BTGreaterStrategyNumber, F_INT8GT,
					Int64GetDatum(after));
		nkeys++;
		sub->scan = index_beginscan(s->log, s->log_index, snapshot, nkeys, 0);
		index_rescan(sub->scan, keys, nkeys, NULL, 0);
		sub->slot = table_slot_create(s->log, NULL);
	}
	s->event_scan = index_beginscan(s->events, s->events_index, snapshot, 2, 0);
	s->event_slot = table_slot_create(s->events, NULL);
	s->values[0] = Int64GetDatum(0);
	return s;
}

/* Advance a sub-scan to its next row (of an accepted type). */
static void
sub_advance(EsLogScan *s, LogSubScan *sub)
{
	while (!sub->done)
	{
		bool		isnull;

		if (!index_getnext_slot(sub->scan, ForwardScanDirection, sub->slot))
		{
			sub->done = true;
			sub->have = false;
			return;
		}
		if (s->filter_types)
		{
			text	   *type = DatumGetTextPP(slot_getattr(sub->slot, Anum_log_event_type, &isnull));

			if (bsearch(&type, s->types, s->ntypes, sizeof(text *), es_text_cmp) == NULL)
				continue;
		}
		sub->position = DatumGetInt64(slot_getattr(sub->slot, Anum_log_global_position, &isnull));
		sub->have = true;
		return;
	}
}

/*
 * The next event into s->values/s->nulls (an event_store.event with its
 * global position, as es_present_event hands it out), or false at the end.
 * s->position is then the event's position; the values are valid until the
 * next call.  While the event is presented, s->current identifies it (for
 * an error handler: presentation can fail, e.g. a tampered ciphertext).
 */
bool
es_log_scan_next(EsLogScan *s)
{
	MemoryContext caller = CurrentMemoryContext;
	LogSubScan *best = NULL;
	ScanKeyData keys[2];
	bool		isnull;
	bool		found;
	int			i;

	s->have_current = false;
	if (s->remaining == 0 || s->ended)
		return false;
	CHECK_FOR_INTERRUPTS();
	MemoryContextSwitchTo(s->cxt);
	if (!s->started)
	{
		for (i = 0; i < s->nsubs; i++)
			sub_advance(s, &s->subs[i]);
		s->started = true;
	}
	for (i = 0; i < s->nsubs; i++)
		if (s->subs[i].have && (best == NULL || s->subs[i].position < best->position))
			best = &s->subs[i];
	if (best == NULL)
	{
		MemoryContextSwitchTo(caller);
		s->ended = true;
		return false;
	}

	/* the event of this position */
	s->current.position = best->position;
	s->current.stream_id = slot_getattr(best->slot, Anum_log_stream_id, &isnull);
	s->current.stream_version = DatumGetInt64(slot_getattr(best->slot, Anum_log_stream_version, &isnull));
	s->have_current = true;
	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_TEXTEQ, s->current.stream_id);
	ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_INT8EQ,
				Int64GetDatum(s->current.stream_version));
	index_rescan(s->event_scan, keys, 2, NULL, 0);
	found = index_getnext_slot(s->event_scan, ForwardScanDirection, s->event_slot);
	if (found)
		slot_getallattrs(s->event_slot);
	MemoryContextSwitchTo(caller);
	if (!found)
	{
		s->ended = true;		/* never skip a position: stop before it */
		s->blocked = true;
		return false;
	}

	s->values[0] = Int64GetDatum(best->position);
	s->nulls[0] = false;
	memcpy(&s->values[1], s->event_slot->tts_values, sizeof(Datum) * Natts_events);
	memcpy(&s->nulls[1], s->event_slot->tts_isnull, sizeof(bool) * Natts_events);
	MemoryContextReset(s->row_context);
	MemoryContextSwitchTo(s->row_context);
	es_present_event(s->values, s->nulls);
	MemoryContextSwitchTo(caller);

	/* the log row's datum goes with its slot, which moves on below: keep the event's */
	s->current.stream_id = s->values[Anum_events_stream_id];
	s->position = best->position;
	if (s->remaining > 0)
		s->remaining--;
	MemoryContextSwitchTo(s->cxt);
	sub_advance(s, best);
	MemoryContextSwitchTo(caller);
	return true;
}

/*
 * Finish a log scan: release the scans, relations and memory.
 */
void
es_log_scan_end(EsLogScan *s)
{
	int			i;

	for (i = 0; i < s->nsubs; i++)
	{
		index_endscan(s->subs[i].scan);
		ExecDropSingleTupleTableSlot(s->subs[i].slot);
	}
	index_endscan(s->event_scan);
	ExecDropSingleTupleTableSlot(s->event_slot);
	index_close(s->events_index, AccessShareLock);
	index_close(s->log_index, AccessShareLock);
	table_close(s->events, AccessShareLock);
	table_close(s->log, AccessShareLock);
	MemoryContextDelete(s->row_context);
	pfree(s);
}

/*
 * The highest position of the global log the snapshot sees (0: none); with
 * the log a prefix, every position up to it is visible too.
 */
int64
es_log_head(Snapshot snapshot)
{
	const EsCatalog *cat = es_catalog();
	Relation	log = table_open(cat->log_relid, AccessShareLock);
	Relation	idx = index_open(cat->log_pkey, AccessShareLock);
	IndexScanDesc scan = index_beginscan(log, idx, snapshot, 0, 0);
	TupleTableSlot *slot = table_slot_create(log, NULL);
	int64		head = 0;

	index_rescan(scan, NULL, 0, NULL, 0);
	if (index_getnext_slot(scan, BackwardScanDirection, slot))
	{
		bool		isnull;

		head = DatumGetInt64(slot_getattr(slot, Anum_log_global_position, &isnull));
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, AccessShareLock);
	table_close(log, AccessShareLock);
	return head;
}

/* The head of the log as the latest snapshot sees it. */
int64
es_latest_log_head(void)
{
	Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
	int64		head = es_log_head(snap);

	UnregisterSnapshot(snap);
	return head;
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
	if (!have && !es_pipeline_want(MyDatabaseId))
		ereport(WARNING,
				(errmsg("the event_store pipeline serves at most %d databases, and this one has no worker",
						ES_MAX_PIPELINES),
				 errdetail("The global log of this database is not ordered while every pipeline entry is taken."),
				 errhint("Drop the extension from databases that do not need it.")));
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
	EsLogScan  *s;

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
	ensure_worker();

	InitMaterializedSRF(fcinfo, 0);
	s = es_log_scan_begin(after, PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2),
						  PG_ARGISNULL(3) ? NULL : PG_GETARG_ARRAYTYPE_P(3),
						  max_count, GetActiveSnapshot());
	while (es_log_scan_next(s))
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, s->values, s->nulls);
	es_log_scan_end(s);
	return (Datum) 0;
}

/*
 * An interval argument in milliseconds; negative is an error (22023).  Any
 * negative interval counts, '-1 us' too.
 */
int64
es_interval_ms(Interval *interval, const char *what)
{
	int64		us = interval->time + (int64) interval->day * USECS_PER_DAY +
		(int64) interval->month * DAYS_PER_MONTH * USECS_PER_DAY;

	if (us < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be negative", what)));
	return us / 1000;
}

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

	ensure_worker();
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
