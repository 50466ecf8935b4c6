/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared state of the decoding pipeline: one entry per database the
 *	  pipeline serves (its worker's pid, latch, replication origin and
 *	  progress), the hooks that keep it current, and the settings.
 *
 * Locking rules.  The entries are protected by the named LWLock tranche
 * "event_store" (es_pipeline_lock).  Readers of a single scalar that may be
 * stale without harm (the origin id in the output plugin's origin filter)
 * read it without the lock.  The launcher creates and frees entries; a
 * worker fills in its own entry's pid, latch and progress.
 *
 * Hooks: the versioning trigger marks a transaction that appended
 * (es_xact_appended), and this file's transaction callback sets the
 * database's worker latch when it commits, so the worker wakes on commit
 * rather than on a timer (COMMIT PREPARED wakes it too).  CREATE EXTENSION
 * event_store asks the launcher for a worker at commit; DROP EXTENSION
 * event_store wakes the worker at commit so that it notices, drops its slot
 * and exits.  DROP DATABASE (and CREATE DATABASE from it as template, ALTER
 * DATABASE RENAME / SET TABLESPACE) stops the database's worker first: a
 * connected worker and an active slot would make them fail.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <signal.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "replication/origin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "internal.h"
#include "pipeline.h"
#include "write.h"

EsPipelineShared *es_pipeline = NULL;
LWLock	   *es_pipeline_lock = NULL;

bool		es_pipeline_enabled = true;
bool		es_pipeline_notify = true;
int			es_pipeline_naptime_ms = 1000;
int			es_pipeline_batch_events = 10000;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_process_utility_hook = NULL;

/* per transaction: what to tell the pipeline at commit */
bool		es_xact_appended = false;
int			es_pipeline_max_lag_kb = 16 * 1024;
static bool want_at_commit = false;
static bool wake_at_commit = false;
static bool held_for_drop_extension = false;	/* workers held off until it ends */
static bool scrub_at_commit = false;	/* forget() queued key rows to overwrite */

static void release_workers(Oid dboid, bool database_gone, bool cleanup);

static void
es_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(EsPipelineShared)));
	RequestAddinShmemSpace(es_heads_shmem_size());
	RequestNamedLWLockTranche("event_store", 1);
}

static void
es_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	es_pipeline = ShmemInitStruct("event_store pipeline", sizeof(EsPipelineShared), &found);
	if (!found)
	{
		memset(es_pipeline, 0, sizeof(EsPipelineShared));
		ConditionVariableInit(&es_pipeline->progress_cv);
		ConditionVariableInit(&es_pipeline->projection_cv);
	}
	es_pipeline_lock = &(GetNamedLWLockTranche("event_store"))->lock;
	es_heads_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

/*
 * The entry of a database, or NULL.  Caller holds es_pipeline_lock.
 */
EsPipelineDb *
es_pipeline_find(Oid dboid)
{
	int			i;

	for (i = 0; i < ES_MAX_PIPELINES; i++)
		if (es_pipeline->dbs[i].state != ES_PIPE_FREE && es_pipeline->dbs[i].dboid == dboid)
			return &es_pipeline->dbs[i];
	return NULL;
}

/*
 * Ask the launcher for a worker for the database (a no-op if it has one).
 * Returns false if every entry is taken (more databases with the extension
 * than ES_MAX_PIPELINES); that is logged, at most once a minute.
 */
bool
es_pipeline_want(Oid dboid)
{
	static TimestampTz last_logged = 0;
	EsPipelineDb *db;
	Latch	   *launcher = NULL;
	int			i;

	if (es_pipeline == NULL)
		return false;
	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	db = es_pipeline_find(dboid);
	if (db == NULL)
	{
		for (i = 0; i < ES_MAX_PIPELINES; i++)
			if (es_pipeline->dbs[i].state == ES_PIPE_FREE)
			{
				db = &es_pipeline->dbs[i];
				memset(db, 0, sizeof(EsPipelineDb));
				pg_atomic_init_u64(&db->commits, 0);
				db->dboid = dboid;
				db->state = ES_PIPE_WANTED;
				break;
			}
		launcher = es_pipeline->launcher_latch;
	}
	else
		db->want_again = true;	/* a worker that is stopping must come back */
	LWLockRelease(es_pipeline_lock);
	if (db == NULL)
	{
		if (TimestampDifferenceExceeds(last_logged, GetCurrentTimestamp(), 60 * 1000))
		{
			ereport(LOG,
					(errmsg("event_store: no pipeline for database %u: the pipeline serves at most %d databases",
							dboid, ES_MAX_PIPELINES),
					 errhint("Drop the extension from databases that do not need it.")));
			last_logged = GetCurrentTimestamp();
		}
		return false;
	}
	if (launcher)
		SetLatch(launcher);
	return true;
}

/*
 * Wake a database's worker, if it runs.
 */
void
es_pipeline_wake_db(Oid dboid)
{
	EsPipelineDb *db;

	if (es_pipeline == NULL)
		return;
	LWLockAcquire(es_pipeline_lock, LW_SHARED);
	db = es_pipeline_find(dboid);
	if (db != NULL && db->latch != NULL)
		SetLatch(db->latch);
	LWLockRelease(es_pipeline_lock);
}

/*
 * An appending transaction committed: count it, and wake the worker only if
 * it sleeps until woken.  A worker that has just been busy looks again by
 * itself within a few milliseconds (worker.c), so that a stream of commits costs
 * no signal each; the counter and the flag are written and read each side
 * of a barrier, so that a commit is never missed by a worker going to sleep.
 */
void
es_pipeline_committed(Oid dboid)
{
	EsPipelineDb *db;

	if (es_pipeline == NULL)
		return;
	LWLockAcquire(es_pipeline_lock, LW_SHARED);
	db = es_pipeline_find(dboid);
	if (db != NULL)
	{
		pg_atomic_fetch_add_u64(&db->commits, 1);
		pg_memory_barrier();
		if (db->sleeping && db->latch != NULL)
			SetLatch(db->latch);
	}
	LWLockRelease(es_pipeline_lock);
}

/*
 * Wake a database's projection workers (new positions in the log).
 */
void
es_pipeline_wake_projectors(Oid dboid)
{
	EsPipelineDb *db;
	int			i;

	if (es_pipeline == NULL)
		return;
	LWLockAcquire(es_pipeline_lock, LW_SHARED);
	db = es_pipeline_find(dboid);
	if (db != NULL)
		for (i = 0; i < ES_MAX_PROJECTORS; i++)
			if (db->projectors[i].latch != NULL)
				SetLatch(db->projectors[i].latch);
	LWLockRelease(es_pipeline_lock);
}

/*
 * The projections of a database changed (one was created, resumed,
 * rebuilt, dropped): the pipeline worker counts them again and starts
 * projection workers, and the running ones look at once.
 */
void
es_pipeline_projections_changed(Oid dboid)
{
	EsPipelineDb *db;
	int			i;

	if (es_pipeline == NULL)
		return;
	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	db = es_pipeline_find(dboid);
	if (db != NULL)
	{
		db->projections_changed = true;
		if (db->latch != NULL)
			SetLatch(db->latch);
		for (i = 0; i < ES_MAX_PROJECTORS; i++)
			if (db->projectors[i].latch != NULL)
				SetLatch(db->projectors[i].latch);
	}
	LWLockRelease(es_pipeline_lock);
}

/* forget() queued key rows: the worker overwrites them once this transaction commits. */
void
es_pipeline_scrub_at_commit(void)
{
	scrub_at_commit = true;
}

/*
 * The replication origin of this database's worker (InvalidRepOriginId if
 * unknown).  Read without the lock: a stale value only lets one of the
 * worker's own transactions through, which the plugin then ignores anyway
 * (the worker never writes event_store.events).
 */
RepOriginId
es_pipeline_own_origin(void)
{
	int			i;

	if (es_pipeline == NULL)
		return InvalidRepOriginId;
	for (i = 0; i < ES_MAX_PIPELINES; i++)
		if (es_pipeline->dbs[i].state != ES_PIPE_FREE && es_pipeline->dbs[i].dboid == MyDatabaseId)
			return es_pipeline->dbs[i].origin;
	return InvalidRepOriginId;
}

/*
 * Is the pipeline possible in this server (preloaded, wal_level logical)?
 */
bool
es_pipeline_available(void)
{
	return es_pipeline != NULL && wal_level >= WAL_LEVEL_LOGICAL;
}

/*
 * Refuse, saying exactly what to change, when the pipeline cannot run.
 */
void
es_require_pipeline(void)
{
	if (es_pipeline == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the event_store pipeline is not running because event_store is not preloaded"),
				 errdetail("The global log is ordered by a background worker that only a preloaded library can start."),
				 errhint("Add event_store to shared_preload_libraries in postgresql.conf (shared_preload_libraries = 'event_store') and restart the server.")));
	if (wal_level < WAL_LEVEL_LOGICAL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the event_store pipeline needs wal_level = logical"),
				 errdetail("The current wal_level is \"%s\".", GetConfigOption("wal_level", false, false)),
				 errhint("Set wal_level = logical in postgresql.conf and restart the server.")));
}

/*
 * Make sure this database has a pipeline worker (asking the launcher for
 * one if not: a database restored from a base backup has no slot yet).
 */
void
es_ensure_pipeline_worker(void)
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
 * At commit: wake the worker of a database whose events changed, ask for a
 * worker for a database that gained the extension.  Never raises an error.
 */
/*
 * Flow control: before a transaction that appended commits, while the
 * pipeline is more than event_store.pipeline_max_lag of WAL behind, wait
 * (up to a few seconds) until it is within half of it.  So a backlog stays
 * bounded whatever the writers do -- the global log is at most about that
 * far behind, and drains in a fraction of a second -- and writers that are
 * faster than the pipeline go at its pace instead of leaving it behind.
 * Not for the extension's own workers, nor for a session that restores
 * (the pipeline waits for it).
 */
static void
wait_for_pipeline_lag(void)
{
	XLogRecPtr	target;
	TimestampTz deadline = 0;
	uint64		limit;

	if (es_pipeline_max_lag_kb <= 0 || es_pipeline == NULL || es_restoring ||
		MyBackendType != B_BACKEND)
		return;
	target = GetXLogInsertRecPtr();
	limit = (uint64) es_pipeline_max_lag_kb * 1024;
	for (;;)
	{
		EsPipelineDb *db;
		XLogRecPtr	applied = InvalidXLogRecPtr;
		bool		running;

		LWLockAcquire(es_pipeline_lock, LW_SHARED);
		db = es_pipeline_find(MyDatabaseId);
		running = db != NULL && db->pid != 0 && !XLogRecPtrIsInvalid(db->applied_lsn);
		if (running)
			applied = db->applied_lsn;
		LWLockRelease(es_pipeline_lock);
		if (!running || applied >= target || target - applied <= limit)
			break;
		if (deadline == 0)
		{
			/* behind by more than the limit: wait until within half of it */
			limit /= 2;
			deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 5000);
		}
		else if (GetCurrentTimestamp() >= deadline)
			break;
		es_pipeline_wake_db(MyDatabaseId);
		(void) ConditionVariableTimedSleep(&es_pipeline->progress_cv, 10, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
}

static void
pipeline_xact_callback(XactEvent event, void *arg)
{
	(void) arg;
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (es_xact_appended)
				wait_for_pipeline_lag();
			break;
		case XACT_EVENT_COMMIT:
			if (held_for_drop_extension)
				release_workers(MyDatabaseId, false, true);	/* one more, to clean up */
			if (scrub_at_commit && es_pipeline != NULL)
			{
				EsPipelineDb *db;

				LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
				db = es_pipeline_find(MyDatabaseId);
				if (db != NULL)
				{
					db->scrub_wanted = true;
					if (db->latch != NULL)
						SetLatch(db->latch);
				}
				LWLockRelease(es_pipeline_lock);
			}
			if (want_at_commit)
				es_pipeline_want(MyDatabaseId);
			if (es_xact_appended)
				es_pipeline_committed(MyDatabaseId);
			if (wake_at_commit)
				es_pipeline_wake_db(MyDatabaseId);
			es_xact_appended = false;
			want_at_commit = false;
			wake_at_commit = false;
			held_for_drop_extension = false;
			scrub_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			if (held_for_drop_extension)
				release_workers(MyDatabaseId, false, false);
			es_xact_appended = false;
			want_at_commit = false;
			wake_at_commit = false;
			held_for_drop_extension = false;
			scrub_at_commit = false;
			break;
		default:
			break;
	}
}

/* Does a DROP statement name the extension event_store? */
static bool
drops_event_store(DropStmt *stmt)
{
	ListCell   *lc;

	if (stmt->removeType != OBJECT_EXTENSION)
		return false;
	foreach(lc, stmt->objects)
	{
		Node	   *obj = lfirst(lc);

		if (IsA(obj, String) && strcmp(strVal(obj), "event_store") == 0)
			return true;
	}
	return false;
}

/*
 * Hold the workers (pipeline and projections) of a database off, and stop
 * those that run, waiting (at most 10 seconds each) until they are gone:
 * for a command that needs the database without other connections, or a
 * DROP EXTENSION (which would otherwise fight the workers for the tables'
 * locks).  The launcher starts none while the hold lasts, and ends it
 * itself should this backend die first.  Returns false if the database has
 * no entry (no workers).
 */
static bool
hold_workers(Oid dboid)
{
	EsPipelineDb *db;
	pid_t		pids[1 + ES_MAX_PROJECTORS];
	int			npids = 0;
	int			i;
	int			j;

	if (!OidIsValid(dboid) || es_pipeline == NULL)
		return false;
	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	db = es_pipeline_find(dboid);
	if (db != NULL)
	{
		db->held_by = MyProcPid;
		if (db->pid != 0)
			pids[npids++] = db->pid;
		for (i = 0; i < ES_MAX_PROJECTORS; i++)
			if (db->projectors[i].pid != 0)
				pids[npids++] = db->projectors[i].pid;
		db->state = ES_PIPE_WANTED;		/* for after the hold */
		db->pid = 0;
		db->latch = NULL;
	}
	LWLockRelease(es_pipeline_lock);
	if (db == NULL)
		return false;
	for (j = 0; j < npids; j++)
		kill(pids[j], SIGTERM);
	for (j = 0; j < npids; j++)
		for (i = 0; i < 1000 && kill(pids[j], 0) == 0; i++)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10,
							 PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	return true;
}

/*
 * End this backend's hold on a database's workers: they start again at once
 * (a worker then waits for the command's lock on the database before it
 * connects), or, the database dropped, the entry is freed.  `cleanup`: the
 * extension was dropped; the worker to start drops its slot and origin, even
 * with the pipeline disabled.  Never raises an error.
 */
static void
release_workers(Oid dboid, bool database_gone, bool cleanup)
{
	EsPipelineDb *db;
	Latch	   *launcher = NULL;

	if (!OidIsValid(dboid) || es_pipeline == NULL)
		return;
	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	db = es_pipeline_find(dboid);
	if (db != NULL && db->held_by == MyProcPid)
	{
		db->held_by = 0;
		if (database_gone)
			db->state = ES_PIPE_FREE;
		else
		{
			db->next_start = 0;
			db->cleanup = db->cleanup || cleanup;
			launcher = es_pipeline->launcher_latch;
		}
	}
	LWLockRelease(es_pipeline_lock);
	if (launcher)
		SetLatch(launcher);
}

/* The database (of the workers to hold) a command will have to itself, or InvalidOid. */
static pg_noinline Oid
database_needed_alone(Node *node, ProcessUtilityContext context, bool *dropping)
{
	ListCell   *lc;
	const char *dbname = NULL;
	bool		outside_blocks = false; /* the command refuses a transaction block */
	bool		needs_createdb = false;
	bool		template_ok = false;
	Oid			dboid;

	*dropping = false;
	if (IsA(node, DropdbStmt))
	{
		*dropping = true;
		dbname = ((DropdbStmt *) node)->dbname;
		outside_blocks = true;
	}
	else if (IsA(node, CreatedbStmt))
	{
		dbname = "template1";
		foreach(lc, ((CreatedbStmt *) node)->options)
		{
			DefElem    *opt = lfirst(lc);

			if (strcmp(opt->defname, "template") == 0 && opt->arg != NULL &&
				IsA(opt->arg, String))
				dbname = strVal(opt->arg);
		}
		outside_blocks = true;
		needs_createdb = true;
		template_ok = true;
	}
	else if (IsA(node, RenameStmt) && ((RenameStmt *) node)->renameType == OBJECT_DATABASE)
	{
		RenameStmt *stmt = (RenameStmt *) node;

		dbname = stmt->subname;
		needs_createdb = true;
		/* a name in use: the rename fails before it needs the database */
		if (OidIsValid(get_database_oid(stmt->newname, true)))
			return InvalidOid;
	}
	else if (IsA(node, AlterDatabaseStmt))
	{
		foreach(lc, ((AlterDatabaseStmt *) node)->options)
		{
			DefElem    *opt = lfirst(lc);

			if (strcmp(opt->defname, "tablespace") == 0)
				dbname = ((AlterDatabaseStmt *) node)->dbname;
		}
		outside_blocks = true;
	}
	if (dbname == NULL)
		return InvalidOid;

	/*
	 * Act only when the command is going to run: PostgreSQL checks these
	 * only once it has begun (a role with no rights must not be able to stop
	 * a database's workers by trying).
	 */
	dboid = get_database_oid(dbname, true);
	if (!OidIsValid(dboid) || dboid == MyDatabaseId)
		return InvalidOid;
	if (outside_blocks &&
		(context != PROCESS_UTILITY_TOPLEVEL || IsTransactionBlock() || IsSubTransaction()))
		return InvalidOid;
	if (needs_createdb && !have_createdb_privilege())
		return InvalidOid;
	if (!pg_database_ownercheck(dboid, GetUserId()))
	{
		HeapTuple	tup;
		bool		is_template = false;

		if (template_ok && (tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid))) != NULL)
		{
			is_template = ((Form_pg_database) GETSTRUCT(tup))->datistemplate;
			ReleaseSysCache(tup);
		}
		if (!is_template)
			return InvalidOid;
	}
	return dboid;
}

static void
es_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				   ProcessUtilityContext context, ParamListInfo params,
				   QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *node = pstmt->utilityStmt;
	bool		drop_db = false;
	volatile Oid alone = database_needed_alone(node, context, &drop_db);
	volatile bool dropping = drop_db;
	volatile bool held = false;

	if (IsA(node, CopyStmt))
		es_restore_note_copy((CopyStmt *) node);	/* restore.c: a restore holds the pipeline */
	if (OidIsValid(alone))
		held = hold_workers(alone);
	else if (IsA(node, DropStmt) && drops_event_store((DropStmt *) node) &&
			 !held_for_drop_extension && es_pipeline != NULL)
	{
		/* the workers would fight the drop for the tables' locks: off until it commits */
		if (hold_workers(MyDatabaseId))
			held_for_drop_extension = true;
	}

	PG_TRY();
	{
		es_statement_level++;	/* versioning.c: a row of a COPY in it is not the caller's */
		if (prev_process_utility_hook)
			prev_process_utility_hook(pstmt, queryString, readOnlyTree, context, params,
									  queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
									queryEnv, dest, qc);
		es_statement_level--;
	}
	PG_CATCH();
	{
		es_statement_level--;
		if (held)
			release_workers(alone, false, false);	/* it failed: back at once */
		PG_RE_THROW();
	}
	PG_END_TRY();

	/*
	 * stream_heads.c: a statement that may let rows past the versioning
	 * trigger, or drop the event table or its database (whose OIDs may come
	 * back), empties the cache of stream heads.  After it ran, while it
	 * holds its locks: no append publishes a head until it commits.
	 */
	if (IsA(node, AlterTableStmt) || IsA(node, CreateTrigStmt) || IsA(node, DropStmt) ||
		IsA(node, DropOwnedStmt) || IsA(node, DropdbStmt) || IsA(node, CreateFunctionStmt) ||
		IsA(node, AlterFunctionStmt) || IsA(node, AlterExtensionStmt) ||
		IsA(node, AlterExtensionContentsStmt) || IsA(node, RenameStmt) ||
		IsA(node, AlterObjectSchemaStmt) || IsA(node, CreateExtensionStmt))
		es_heads_forget_all();

	if (held)
		release_workers(alone, dropping, false);
	if (OidIsValid(alone) && dropping)
	{
		/* the dropped database's replication origin is a shared object: drop it too */
		char		name[NAMEDATALEN];

		snprintf(name, sizeof(name), ES_PIPELINE_NAME_FORMAT, alone);
		replorigin_drop_by_name(name, true, false);
	}

	if (IsA(node, CreateExtensionStmt) &&
		strcmp(((CreateExtensionStmt *) node)->extname, "event_store") == 0)
		want_at_commit = true;
	else if (IsA(node, TransactionStmt) &&
			 ((TransactionStmt *) node)->kind == TRANS_STMT_COMMIT_PREPARED)
		wake_at_commit = true;	/* it may have appended: cheap to wake for nothing */
}

/*
 * Called once per process from _PG_init: settings, hooks, and (when
 * preloaded) shared memory and the launcher.
 */
void
es_pipeline_init(void)
{
	DefineCustomBoolVariable("event_store.pipeline_enabled",
							 "Runs the pipeline workers that order events into the global log.",
							 "Off stops every worker (their slots keep the WAL they need, up to "
							 "max_slot_wal_keep_size); on starts them again.",
							 &es_pipeline_enabled,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("event_store.pipeline_notify",
							 "Whether the pipeline worker notifies the channel event_store_global_log of new positions.",
							 "One notification per round that ordered events, at its commit. Skipped while the "
							 "server's notification queue is more than half full.",
							 &es_pipeline_notify,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("event_store.pipeline_naptime",
							"Longest time the pipeline worker sleeps when no commit wakes it.",
							"Appending transactions wake the worker at commit; this only bounds the delay "
							"for changes that do not (e.g. a dropped extension noticed late).",
							&es_pipeline_naptime_ms,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("event_store.pipeline_max_lag",
							"WAL the pipeline may be behind before appending transactions wait for it at commit.",
							"Writers faster than the pipeline then go at its pace, and the global log stays "
							"about this far behind at most. 0 lets the backlog grow without bound.",
							&es_pipeline_max_lag_kb,
							16 * 1024, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("event_store.pipeline_batch_events",
							"Events the pipeline worker buffers before it orders them into the global log.",
							"The worker stops decoding at the first commit after this many events and "
							"writes their positions in one transaction. A single larger transaction "
							"is buffered whole.",
							&es_pipeline_batch_events,
							10000, 1, INT_MAX,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	RegisterXactCallback(pipeline_xact_callback, NULL);
	es_publish_init();
	prev_process_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = es_process_utility;

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = es_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = es_shmem_startup;

	/* not under pg_upgrade: a slot or a position written then would be lost */
	if (wal_level >= WAL_LEVEL_LOGICAL && !IsBinaryUpgrade)
		es_launcher_register();
}
