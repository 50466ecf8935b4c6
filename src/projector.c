/*-------------------------------------------------------------------------
 *
 * projector.c
 *	  The projection workers ("event_store projector"): background workers
 *	  that apply the asynchronous projections of one database from the
 *	  global log, and their supervision by the database's pipeline worker.
 *
 * Each database with asynchronous projections has up to
 * event_store.projection_workers of them, started (and started again) by
 * its pipeline worker, each in its own slot of the database's shared entry.
 * The pipeline worker sets their latches whenever it has committed new
 * positions.  A worker then takes turns over the projections that are behind
 * the log (least recently served first): it tries a projection's lock
 * (projection.c), and if no other worker holds it, applies one batch:
 *
 *	 1. in one transaction, with a snapshot taken after the lock, read the
 *		log after the projection's position (the log scan of scan.c, as
 *		the projection's owner, so that the events are presented as the
 *		owner reads them) and call the handler for each event, up to
 *		event_store.projection_batch_events events or
 *		event_store.projection_batch_time, whichever comes first;
 *	 2. store the new position in the same transaction: the last event
 *		applied, or, if the log was read to its end, the head of the log
 *		as that snapshot saw it (events the filters skip are passed too).
 *
 * A crash or an error rolls back both, so each event's effect happens once.
 * Failures: no subtransaction per event (thousands of them would overflow
 * every backend's snapshot cache).  When a handler fails on the k-th event
 * of a batch, the batch is rolled back and applied again with k events; the
 * failing event then comes first in a batch of its own, which is retried
 * event_store.projection_retries times with a doubling delay
 * (event_store.projection_retry_delay), during which the worker serves other
 * projections.  Then the projection stops (state 'failed', on_error =>
 * 'stop') or the event is parked and the projection goes on (on_error =>
 * 'park').  An error that is not an event's (the handler dropped, the
 * owner's rights revoked) stops the projection after the same retries.
 *
 * A slow handler holds one worker for about projection_batch_time (or one
 * event) at a time; the others go on with the other projections.  A worker
 * commits with synchronous_commit = off: a lost commit is a lost batch,
 * position and effects together, applied again after the restart.
 *
 * Locking: the projection's lock (projection.c) for a batch; the shared
 * entry under es_pipeline_lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "pipeline.h"
#include "projection.h"
#include "read.h"



/* The worker's own reads (as the worker's role). */
static EsStatement count_async = ES_STATEMENT(
	"SELECT pg_catalog.count(*) FROM event_store.projections "
	" WHERE mode OPERATOR(pg_catalog.=) 'async' "
	"   AND log_identity OPERATOR(pg_catalog.=) (SELECT i.id FROM event_store.log_identity i)",
	0, InvalidOid);

static EsStatement candidates = ES_STATEMENT(
	"SELECT name, "
	"       state OPERATOR(pg_catalog.=) ANY ('{catching up,live,rebuilding}'::pg_catalog.text[]) "
	"         AND (COALESCE(position, 0) OPERATOR(pg_catalog.<) $1 OR state OPERATOR(pg_catalog.<>) 'live'), "
	"       COALESCE(pg_catalog.ceil(pg_catalog.date_part('epoch', retry_at OPERATOR(pg_catalog.-) pg_catalog.clock_timestamp()) "
	"                OPERATOR(pg_catalog.*) 1000), 0)::pg_catalog.int8 "
	"  FROM event_store.projections "
	" WHERE mode OPERATOR(pg_catalog.=) 'async' "
	"   AND log_identity OPERATOR(pg_catalog.=) (SELECT i.id FROM event_store.log_identity i) "
	" ORDER BY applied_at NULLS FIRST, name",
	1, INT8OID);

/* This worker's slot in its database's entry. */
static int	my_slot = -1;

/* Exiting because there is nothing to do (not an error): may be started again at once. */
static bool idle_exit = false;

/*
 * The batch being applied and the event being handled, for the error path
 * (kept outside the transaction, which the abort frees).  The batch is
 * identified by the projection's incarnation (a rebuild or a new projection
 * of the same name has another) and its start position: a failure is
 * recorded only if both still hold when it is.
 */
static struct
{
	char		name[ES_MAX_ID_BYTES + 1];
	char		incarnation[UUID_LEN * 2 + 5];
	int64		start;			/* the projection's position when the batch began */
	bool		valid;			/* an event's presentation or handler failed */
	int64		index;			/* events of the batch applied before it */
	int64		position;
	int64		stream_version;
	char		stream_id[ES_MAX_ID_BYTES + 1];
	char		event_type[ES_MAX_ID_BYTES + 1];
} failing;

static EsLogScan *volatile current_scan = NULL;

/*
 * A batch to shorten after a failure inside it: apply only the events before
 * the failing one (same projection, incarnation and start).
 */
static struct
{
	char		name[ES_MAX_ID_BYTES + 1];
	char		incarnation[UUID_LEN * 2 + 5];
	int64		start;
	int64		events;			/* 0: none */
} short_batch;

static MemoryContext event_cxt = NULL;	/* per event, reset */
static MemoryContext error_cxt = NULL;	/* the copied error, reset per failure */

/* ---------------------------------------------------------------------
 * Supervision, by the database's pipeline worker
 * ---------------------------------------------------------------------
 */

/*
 * Start the projection workers the database needs: as many as it has
 * asynchronous projections, at most event_store.projection_workers.  Called
 * by the pipeline worker after each round; counts the projections (one
 * query) when asked to, when they changed, and once a second.
 */
void
es_supervise_projectors(bool recount)
{
	static TimestampTz last_count = 0;
	static int	wanted = 0;
	TimestampTz now = GetCurrentTimestamp();
	EsPipelineDb *db;
	bool		changed;
	int			i;

	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	db = es_pipeline_find(MyDatabaseId);
	changed = db != NULL && db->projections_changed;
	if (db != NULL)
		db->projections_changed = false;
	LWLockRelease(es_pipeline_lock);
	if (db == NULL)
		return;

	if (recount || changed || TimestampDifferenceExceeds(last_count, now, 1000))
	{
		int64		n = 0;

		es_worker_begin();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (OidIsValid(es_projection_registry()))
		{
			bool		isnull;

			SPI_connect();
			if (es_run(&count_async, NULL, NULL, ES_RUN_READ_ONLY, 1, SPI_OK_SELECT) == 1)
				n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			SPI_finish();
		}
		PopActiveSnapshot();
		CommitTransactionCommand();
		wanted = (int) Min(n, (int64) es_projection_workers);
		last_count = now;
	}

	for (i = 0; i < wanted; i++)
	{
		BackgroundWorker worker;
		BackgroundWorkerHandle *handle;
		bool		start;

		LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
		db = es_pipeline_find(MyDatabaseId);
		start = db != NULL && db->projectors[i].pid == 0 &&
			(db->projectors[i].start_requested == 0 ||
			 TimestampDifferenceExceeds(db->projectors[i].start_requested, now, 1000));
		if (start)
			db->projectors[i].start_requested = now;
		LWLockRelease(es_pipeline_lock);
		if (!start)
			continue;

		memset(&worker, 0, sizeof(worker));
		worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
		worker.bgw_restart_time = BGW_NEVER_RESTART;
		snprintf(worker.bgw_library_name, BGW_MAXLEN, "event_store");
		snprintf(worker.bgw_function_name, BGW_MAXLEN, "event_store_projector_main");
		snprintf(worker.bgw_name, BGW_MAXLEN, "event_store projector %d for database %u",
				 i, MyDatabaseId);
		snprintf(worker.bgw_type, BGW_MAXLEN, "event_store projector");
		worker.bgw_main_arg = ObjectIdGetDatum(MyDatabaseId);
		memcpy(worker.bgw_extra, &i, sizeof(i));
		worker.bgw_notify_pid = MyProcPid;
		if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		{
			ereport(LOG,
					(errmsg("event_store pipeline: could not start projection worker %d for database %u",
							i, MyDatabaseId),
					 errhint("Raise max_worker_processes (each database with projections needs up to event_store.projection_workers of them).")));
			/* try again in 10 seconds, not at every round */
			LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
			db = es_pipeline_find(MyDatabaseId);
			if (db != NULL)
				db->projectors[i].start_requested = TimestampTzPlusMilliseconds(now, 9000);
			LWLockRelease(es_pipeline_lock);
		}
	}
}

/* ---------------------------------------------------------------------
 * The worker
 * ---------------------------------------------------------------------
 */

static void
projector_exit(int code, Datum arg)
{
	EsPipelineDb *db;

	(void) code;
	(void) arg;
	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	db = es_pipeline_find(MyDatabaseId);
	if (db != NULL && db->projectors[my_slot].pid == MyProcPid)
	{
		db->projectors[my_slot].pid = 0;
		db->projectors[my_slot].latch = NULL;
		/* a worker that fails at once is not restarted more than once a second */
		db->projectors[my_slot].start_requested = idle_exit ? 0 : GetCurrentTimestamp();
	}
	LWLockRelease(es_pipeline_lock);
}

/* Is this still our slot of a served database?  (Not: exit.) */
static bool
slot_is_mine(void)
{
	EsPipelineDb *db;
	bool		mine;

	LWLockAcquire(es_pipeline_lock, LW_SHARED);
	db = es_pipeline_find(MyDatabaseId);
	mine = db != NULL && db->projectors[my_slot].pid == MyProcPid;
	LWLockRelease(es_pipeline_lock);
	return mine;
}

/* What one projection row of the round's query says. */
typedef struct Candidate
{
	char	   *name;
	bool		runnable;		/* behind the log, not waiting for a retry */
} Candidate;

/* Is the projection in a state the workers apply? */
static bool
state_runs(const char *state)
{
	return strcmp(state, "catching up") == 0 || strcmp(state, "live") == 0 ||
		strcmp(state, "rebuilding") == 0;
}

/* Outcome of apply_batch. */
typedef enum BatchResult
{
	BATCH_NOTHING,				/* nothing to do (not behind, not runnable) */
	BATCH_BLOCKED,				/* the next event is not visible yet: look again soon */
	BATCH_APPLIED				/* committed a new position */
} BatchResult;

/*
 * The statements, run as the extension's owner (es_projection_run).  The
 * failure statements share their parameters: $1 name, $2 retries, $3
 * retry delay (ms), $4 error, $5 SQLSTATE, $6 position, $7 stream, $8
 * version, $9 event type.
 */
static EsStatement record_progress = ES_STATEMENT(
	"UPDATE event_store.projections "
	"   SET position = $2, "
	"       events_applied = events_applied OPERATOR(pg_catalog.+) $3, "
	"       state = CASE WHEN $4 AND state OPERATOR(pg_catalog.<>) 'live' THEN 'live' ELSE state END, "
	"       retries = 0, retry_at = NULL, "
	"       applied_at = pg_catalog.now() "
	" WHERE name OPERATOR(pg_catalog.=) $1",
	4, TEXTOID, INT8OID, INT8OID, BOOLOID);

#define FAILURE_TYPES TEXTOID, INT4OID, INT8OID, TEXTOID, TEXTOID, INT8OID, TEXTOID, INT8OID, TEXTOID

static EsStatement schedule_retry = ES_STATEMENT(
	"UPDATE event_store.projections "
	"   SET retries = $2, "
	"       retry_at = pg_catalog.now() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $3 OPERATOR(pg_catalog./) 1000.0), "
	"       last_error = $4, error_sqlstate = $5, error_position = $6, "
	"       error_stream_id = $7, error_stream_version = $8, error_at = pg_catalog.now() "
	" WHERE name OPERATOR(pg_catalog.=) $1",
	9, FAILURE_TYPES);

static EsStatement stop_projection = ES_STATEMENT(
	"UPDATE event_store.projections "
	"   SET state = 'failed', retries = $2, retry_at = NULL, "
	"       last_error = $4, error_sqlstate = $5, error_position = $6, "
	"       error_stream_id = $7, error_stream_version = $8, error_at = pg_catalog.now() "
	" WHERE name OPERATOR(pg_catalog.=) $1",
	9, FAILURE_TYPES);

static EsStatement park_event = ES_STATEMENT(
	"INSERT INTO event_store.projection_parked AS k "
	"  (projection, stream_id, stream_version, global_position, event_type, error, error_sqlstate) "
	"VALUES ($1, $7, $8, $6, $9, $4, $5) "
	"ON CONFLICT (projection, stream_id, stream_version) DO UPDATE "
	"SET error = EXCLUDED.error, error_sqlstate = EXCLUDED.error_sqlstate, "
	"    global_position = EXCLUDED.global_position, parked_at = pg_catalog.now()",
	9, FAILURE_TYPES);

static EsStatement pass_parked = ES_STATEMENT(
	"UPDATE event_store.projections "
	"   SET position = $6, retries = 0, retry_at = NULL, "
	"       last_error = $4, error_sqlstate = $5, error_position = $6, "
	"       error_stream_id = $7, error_stream_version = $8, error_at = pg_catalog.now(), "
	"       applied_at = pg_catalog.now() "
	" WHERE name OPERATOR(pg_catalog.=) $1",
	9, FAILURE_TYPES);

/*
 * Rows of the log a batch may pass over (types or categories it does not
 * handle) before it ends and records how far it got: a projection of rare
 * events reads the log in bounded steps, each a transaction of its own,
 * rather than from its position to the head in one.  The same for every
 * batch, a retry's too, so that a retried event is met again.
 */
#define PASS_LIMIT	10000

/*
 * Apply one batch of the projection, whose lock we hold, in the current
 * transaction (see the header).  The handler runs as the owner, each event
 * in a GUC nest level of its own, so that what it sets lasts for that event
 * only, as inline.
 */
static BatchResult
apply_batch(const char *name)
{
	EsProjection p;
	EsHandler	h;
	EsAsOwner	save;
	EsLogScan  *s;
	Snapshot	snap;
	int64		head;
	int64		limit = es_projection_batch_events;
	int64		applied = 0;
	int64		position;
	bool		exhausted;
	bool		caught_up;
	bool		timed_out = false;
	bool		blocked;
	TimestampTz start = GetCurrentTimestamp();
	Datum		args[4];

	PushActiveSnapshot(GetTransactionSnapshot());
	if (!es_projection_read(name, false, &p) || p.inline_mode || p.restored || !state_runs(p.state))
	{
		PopActiveSnapshot();
		return BATCH_NOTHING;
	}
	strlcpy(failing.name, name, sizeof(failing.name));
	strlcpy(failing.incarnation, p.incarnation, sizeof(failing.incarnation));
	failing.start = p.position;
	if (p.retries > 0)
		limit = 1;				/* a failing event, alone */
	if (short_batch.events > 0 && strcmp(short_batch.name, name) == 0)
	{
		if (strcmp(short_batch.incarnation, p.incarnation) == 0 && short_batch.start == p.position)
			limit = Min(limit, short_batch.events);
		short_batch.events = 0;
	}

	es_projection_resolve(&p, &h);
	PopActiveSnapshot();
	snap = RegisterSnapshot(GetTransactionSnapshot());
	head = es_log_head(snap);
	if (head <= p.position)
	{
		bool		was_live = strcmp(p.state, "live") == 0;

		if (!was_live)
		{
			/* at the end of the log (its last event parked, say): it is live */
			args[0] = CStringGetTextDatum(name);
			args[1] = Int64GetDatum(p.position);
			args[2] = Int64GetDatum(0);
			args[3] = BoolGetDatum(true);
			PushActiveSnapshot(snap);
			SPI_connect();
			es_projection_run(&record_progress, args, NULL, SPI_OK_UPDATE);
			SPI_finish();
			PopActiveSnapshot();
		}
		UnregisterSnapshot(snap);
		return was_live ? BATCH_NOTHING : BATCH_APPLIED;
	}
	PushActiveSnapshot(snap);
	es_projection_enter(&p, &save);
	s = es_log_scan_begin(p.position, p.categories, p.event_types, limit, snap);
	es_log_scan_set_pass_limit(s, PASS_LIMIT);
	current_scan = s;
	for (;;)
	{
		EsProjectionEvent ev;
		MemoryContext old;
		int			nest;

		failing.valid = true;
		failing.index = applied;
		MemoryContextReset(event_cxt);
		nest = NewGUCNestLevel();
		if (!es_log_scan_next(s))
		{
			AtEOXact_GUC(false, nest);
			break;
		}
		failing.position = s->position;
		failing.stream_version = s->current.stream_version;
		text_to_cstring_buffer(DatumGetTextPP(s->current.stream_id),
							   failing.stream_id, sizeof(failing.stream_id));
		text_to_cstring_buffer(DatumGetTextPP(s->values[Anum_events_event_type]),
							   failing.event_type, sizeof(failing.event_type));
		ev.projection = p.name;
		ev.position = s->position;
		ev.stream_id = s->current.stream_id;
		ev.stream_version = s->current.stream_version;
		old = MemoryContextSwitchTo(event_cxt);
		es_projection_call(&p, &h, &ev, s->values, s->nulls);
		MemoryContextSwitchTo(old);
		AtEOXact_GUC(false, nest);
		applied++;
		if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(), es_projection_batch_time_ms))
		{
			timed_out = true;
			break;
		}
	}
	failing.valid = false;
	current_scan = NULL;
	blocked = s->blocked;
	exhausted = !timed_out && applied < limit && !blocked && !s->cut;
	if (exhausted)
		position = Max(head, s->position);
	else if (s->cut)
		position = Max(s->position, s->passed);	/* `after` unless it ended at the cut */
	else
		position = s->position;
	caught_up = position >= head;
	es_log_scan_end(s);
	es_projection_leave(&save);

	if (applied == 0 && position == p.position)
	{
		/* stopped before an event its transaction does not show yet: write nothing */
		PopActiveSnapshot();
		UnregisterSnapshot(snap);
		return blocked ? BATCH_BLOCKED : BATCH_NOTHING;
	}
	args[0] = CStringGetTextDatum(name);
	args[1] = Int64GetDatum(position);
	args[2] = Int64GetDatum(applied);
	args[3] = BoolGetDatum(caught_up);
	SPI_connect();
	es_projection_run(&record_progress, args, NULL, SPI_OK_UPDATE);
	SPI_finish();
	PopActiveSnapshot();
	UnregisterSnapshot(snap);
	return BATCH_APPLIED;
}

/*
 * After a batch failed (its transaction aborted): shorten the next batch,
 * schedule a retry, or, past the retries, stop the projection or park the
 * event.  In a transaction of its own; only if the projection is still the
 * incarnation, at the position, that the batch started from (a rebuild,
 * resume or re-creation meanwhile makes the failure moot: if it recurs, the
 * new batch will meet it).
 */
static void
record_failure(ErrorData *edata)
{
	EsProjection p;
	Datum		args[9];
	char		nulls[9];
	EsStatement *st;
	int			retries;

	if (failing.valid && failing.index > 0)
	{
		/* the events before it are fine: apply them alone, then meet it first */
		strlcpy(short_batch.name, failing.name, sizeof(short_batch.name));
		strlcpy(short_batch.incarnation, failing.incarnation, sizeof(short_batch.incarnation));
		short_batch.start = failing.start;
		short_batch.events = failing.index;
		return;
	}

	es_worker_begin();
	PushActiveSnapshot(GetTransactionSnapshot());
	(void) es_projection_lock(failing.name, true);
	PopActiveSnapshot();
	PushActiveSnapshot(GetTransactionSnapshot());	/* one taken after the lock */
	if (!es_projection_read(failing.name, false, &p) || !state_runs(p.state) ||
		strcmp(p.incarnation, failing.incarnation) != 0 || p.position != failing.start)
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
		return;
	}
	retries = p.retries + 1;
	memset(nulls, ' ', sizeof(nulls));
	args[0] = CStringGetTextDatum(failing.name);
	args[1] = Int32GetDatum(retries);
	args[2] = Int64GetDatum((int64) es_projection_retry_delay_ms << Min(retries - 1, 20));
	args[3] = CStringGetTextDatum(edata->message ? edata->message : "");
	args[4] = CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode));
	args[5] = Int64GetDatum(failing.position);
	args[6] = CStringGetTextDatum(failing.stream_id);
	args[7] = Int64GetDatum(failing.stream_version);
	args[8] = CStringGetTextDatum(failing.event_type);
	if (!failing.valid)
		nulls[5] = nulls[6] = nulls[7] = nulls[8] = 'n';

	if (retries <= es_projection_retries)
		st = &schedule_retry;
	else if (!failing.valid || !p.park)
		st = &stop_projection;
	else
	{
		/* park it, and go on after it */
		SPI_connect();
		es_projection_run(&park_event, args, nulls, SPI_OK_INSERT);
		SPI_finish();
		st = &pass_parked;
	}
	SPI_connect();
	es_projection_run(st, args, nulls, SPI_OK_UPDATE);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/*
 * record_failure, whose own errors (a lock timeout, a dropped extension) are
 * logged rather than end the worker: the failure is then not recorded, and
 * the next batch meets the event again.
 */
static void
record_failure_safely(ErrorData *edata)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		record_failure(edata);
	}
	PG_CATCH();
	{
		ErrorData  *second;

		MemoryContextSwitchTo(cxt);
		second = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errmsg("event_store projection \"%s\": could not record its failure: %s",
						failing.name, second->message)));
		FreeErrorData(second);
	}
	PG_END_TRY();
}

/*
 * One round: find the projections behind the log, apply one batch of the
 * first whose lock is free.  Returns true if it applied a batch (look again
 * at once); otherwise *sleep_ms says when to look again (a retry that is
 * due, an event not visible yet).
 */
static bool
projector_round(long *sleep_ms)
{
	MemoryContext round_cxt = AllocSetContextCreate(TopMemoryContext, "event_store projector round",
													ALLOCSET_SMALL_SIZES);
	Candidate  *cands = NULL;
	int			ncands = 0;
	int			nasync = 0;
	volatile bool worked = false;
	int			i;

	es_worker_begin();
	PushActiveSnapshot(GetTransactionSnapshot());

	/*
	 * A restore brings the read models and positions along: apply nothing
	 * meanwhile.  Looked at after the snapshot was taken, so that what a
	 * restore that began later loaded is not in it (restore.c).
	 */
	if (es_restore_in_progress(MyDatabaseId) != 0)
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
		MemoryContextDelete(round_cxt);
		*sleep_ms = Min(*sleep_ms, 100);
		return false;
	}
	if (!OidIsValid(get_extension_oid("event_store", true)) ||
		!OidIsValid(es_projection_registry()))
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
		MemoryContextDelete(round_cxt);
		idle_exit = true;
		proc_exit(0);			/* dropped, or not at a version with projections */
	}
	SPI_connect();
	{
		Datum		args[1];

		args[0] = Int64GetDatum(es_log_head(GetActiveSnapshot()));
		nasync = (int) es_run(&candidates, args, NULL, ES_RUN_READ_ONLY, 0, SPI_OK_SELECT);
	}
	cands = MemoryContextAllocZero(round_cxt, sizeof(Candidate) * Max(nasync, 1));
	for (i = 0; i < nasync; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		bool		behind = DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
		int64		wait = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull));

		if (!behind)
			continue;
		if (wait > 0)
		{
			*sleep_ms = Min(*sleep_ms, (long) wait);
			continue;
		}
		cands[ncands].name = MemoryContextStrdup(round_cxt,
												 TextDatumGetCString(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull)));
		cands[ncands].runnable = true;
		ncands++;
	}
	SPI_finish();
	PopActiveSnapshot();

	if (nasync == 0)
	{
		CommitTransactionCommand();
		MemoryContextDelete(round_cxt);
		idle_exit = true;
		proc_exit(0);			/* no asynchronous projection: started again when there is */
	}

	for (i = 0; i < ncands && !worked; i++)
	{
		char	   *name = cands[i].name;

		if (!IsTransactionState())
			es_worker_begin();
		if (!es_projection_lock(name, false))
			continue;			/* another worker (or a rebuild) has it */
		pgstat_report_activity(STATE_RUNNING, name);
		PG_TRY();
		{
			BatchResult r = apply_batch(name);

			CommitTransactionCommand();
			if (r == BATCH_APPLIED)
				worked = true;
			else if (r == BATCH_BLOCKED)
				*sleep_ms = Min(*sleep_ms, 10);
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			/* keep what identifies the event before the abort frees it */
			if (failing.valid && current_scan != NULL && !current_scan->have_current)
				failing.valid = false;	/* failed before an event was fetched */
			else if (failing.valid && current_scan != NULL)
			{
				EsLogScan  *s = current_scan;

				failing.position = s->current.position;
				failing.stream_version = s->current.stream_version;
				text_to_cstring_buffer(DatumGetTextPP(s->current.stream_id),
									   failing.stream_id, sizeof(failing.stream_id));
				if (!TTS_EMPTY(s->event_slot) &&
					!s->event_slot->tts_isnull[Anum_events_event_type - 1])
					text_to_cstring_buffer(DatumGetTextPP(s->event_slot->tts_values[Anum_events_event_type - 1]),
										   failing.event_type, sizeof(failing.event_type));
				else
					failing.event_type[0] = '\0';
			}
			current_scan = NULL;
			MemoryContextSwitchTo(error_cxt);
			edata = CopyErrorData();
			FlushErrorState();
			AbortCurrentTransaction();
			ereport(LOG,
					(errmsg("event_store projection \"%s\" failed: %s", name, edata->message),
					 edata->context ? errdetail_internal("%s", edata->context) : 0));
			record_failure_safely(edata);
			failing.valid = false;
			MemoryContextReset(error_cxt);
			worked = true;		/* look again at once: the next batch is ready */
		}
		PG_END_TRY();
		pgstat_report_activity(STATE_IDLE, NULL);
	}
	if (IsTransactionState())
		CommitTransactionCommand();
	pgstat_report_stat(false);	/* the read models' tables are vacuumed like any other */
	if (worked)
		ConditionVariableBroadcast(&es_pipeline->projection_cv);
	MemoryContextDelete(round_cxt);
	return worked;
}

/*
 * Entry point of a projection worker; arg is the database's OID, bgw_extra
 * the slot's number.
 */
void
event_store_projector_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	EsPipelineDb *db;

	memcpy(&my_slot, MyBgworkerEntry->bgw_extra, sizeof(my_slot));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	if (my_slot < 0 || my_slot >= ES_MAX_PROJECTORS)
		proc_exit(0);
	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	db = es_pipeline_find(dboid);
	if (db == NULL || db->projectors[my_slot].pid != 0 || db->held_by != 0)
	{
		LWLockRelease(es_pipeline_lock);
		proc_exit(0);			/* not wanted any more, another runs, or held off */
	}
	db->projectors[my_slot].pid = MyProcPid;
	db->projectors[my_slot].latch = MyLatch;
	db->projectors[my_slot].start_requested = 0;
	LWLockRelease(es_pipeline_lock);
	before_shmem_exit(projector_exit, (Datum) 0);

	pgstat_report_appname("event_store projector");
	/* a lost commit is a lost batch, applied again: no need to wait for the flush */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_SESSION);
	/* the rounds rely on these, whatever postgresql.conf says */
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_SESSION);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_SESSION);
	/* the worker's own statements are schema-qualified; handlers get their own path */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION);
	event_cxt = AllocSetContextCreate(TopMemoryContext, "event_store projector event",
									  ALLOCSET_DEFAULT_SIZES);
	error_cxt = AllocSetContextCreate(TopMemoryContext, "event_store projector error",
									  ALLOCSET_DEFAULT_SIZES);
	ereport(DEBUG1,
			(errmsg("event_store projector %d started for database %u", my_slot, dboid)));

	for (;;)
	{
		long		sleep_ms = es_pipeline_naptime_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (!es_pipeline_enabled || my_slot >= es_projection_workers || !slot_is_mine())
		{
			idle_exit = true;
			proc_exit(0);
		}
		if (projector_round(&sleep_ms))
			continue;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(sleep_ms, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
