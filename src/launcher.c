/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The "event_store launcher" background worker: finds the databases the
 *	  pipeline serves and keeps one "event_store pipeline" worker running for
 *	  each.
 *
 * A database is served once it has asked for it (CREATE EXTENSION
 * event_store, or a call of a function that needs the global log: see
 * shmem.c), and, after a restart, when one of the pipeline's replication
 * slots (named event_store_<database oid>) belongs to it.  The launcher
 * connects to no database: it only reads the slots and the shared entries.
 * A worker that stops with an error is started again after a second; one
 * that cannot even start three times in a row (its database is gone) is
 * given up.  A worker whose database no longer has the extension frees its
 * entry itself and exits.
 *
 * When it starts, the launcher logs what is wrong with the settings an
 * event store depends on (health.c).
 *
 * Locking: es_pipeline_lock, exclusively, while the entries are changed;
 * ReplicationSlotControlLock, shared, while the slots are read.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/slot.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/timestamp.h"

#include "internal.h"
#include "pipeline.h"

/* launcher-local: the worker started for each entry */
static BackgroundWorkerHandle *handles[ES_MAX_PIPELINES];
static Oid	handle_db[ES_MAX_PIPELINES];
static int	failed_starts[ES_MAX_PIPELINES];

/*
 * Register the launcher; called from _PG_init while preloading.
 */
void
es_launcher_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "event_store");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "event_store_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "event_store launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "event_store launcher");
	RegisterBackgroundWorker(&worker);
}

/*
 * Ask for a worker for every database that has one of our slots.
 */
static void
want_databases_with_slots(void)
{
	Oid			dbs[ES_MAX_PIPELINES];
	int			n = 0;
	int			i;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (i = 0; i < max_replication_slots && n < ES_MAX_PIPELINES; i++)
	{
		ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];
		unsigned int oid;
		char		tail;

		if (!s->in_use || !OidIsValid(s->data.database))
			continue;
		if (sscanf(NameStr(s->data.name), "event_store_%u%c", &oid, &tail) == 1 &&
			oid == s->data.database)
			dbs[n++] = s->data.database;
	}
	LWLockRelease(ReplicationSlotControlLock);
	for (i = 0; i < n; i++)
	{
		EsPipelineDb *db;

		es_pipeline_want(dbs[i]);
		/* even with the pipeline disabled, see whether the extension is still there */
		LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
		db = es_pipeline_find(dbs[i]);
		if (db != NULL)
			db->cleanup = true;
		LWLockRelease(es_pipeline_lock);
	}
}

/*
 * Start a worker for the database of entry i.
 */
static bool
start_worker(int i, Oid dboid)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "event_store");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "event_store_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "event_store pipeline for database %u", dboid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "event_store pipeline");
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	worker.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&worker, &handles[i]))
	{
		handles[i] = NULL;
		return false;
	}
	handle_db[i] = dboid;
	return true;
}

/*
 * One pass: notice stopped workers, start the wanted ones.
 */
static void
launcher_pass(void)
{
	TimestampTz now = GetCurrentTimestamp();
	int			i;

	/* workers that stopped */
	for (i = 0; i < ES_MAX_PIPELINES; i++)
	{
		pid_t		pid;

		if (handles[i] == NULL ||
			GetBackgroundWorkerPid(handles[i], &pid) != BGWH_STOPPED)
			continue;
		pfree(handles[i]);
		handles[i] = NULL;
		LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
		{
			EsPipelineDb *db = &es_pipeline->dbs[i];

			if (db->dboid != handle_db[i])
				;				/* the entry was freed and reused */
			else if (db->state == ES_PIPE_RUNNING && db->pid == 0)
			{
				/* it stopped before it could serve its database (gone?) */
				if (++failed_starts[i] >= 3)
				{
					elog(LOG, "event_store launcher: giving up on database %u after %d failed starts",
						 db->dboid, failed_starts[i]);
					db->state = ES_PIPE_FREE;
					failed_starts[i] = 0;
				}
				else
				{
					db->state = ES_PIPE_WANTED;
					db->next_start = TimestampTzPlusMilliseconds(now, 1000);
				}
			}
			else
				failed_starts[i] = 0;	/* it ran; its exit callback set the state */
		}
		LWLockRelease(es_pipeline_lock);
	}

	/* workers to start */
	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	for (i = 0; i < ES_MAX_PIPELINES; i++)
	{
		EsPipelineDb *db = &es_pipeline->dbs[i];

		/* a hold whose backend died ends with it */
		if (db->held_by != 0 && kill(db->held_by, 0) != 0 && errno == ESRCH)
			db->held_by = 0;
		if ((!es_pipeline_enabled && !db->cleanup) || db->state != ES_PIPE_WANTED ||
			db->held_by != 0 || handles[i] != NULL || db->next_start > now)
			continue;
		if (start_worker(i, db->dboid))
		{
			db->state = ES_PIPE_RUNNING;
			db->pid = 0;
		}
		else
		{
			ereport(LOG,
					(errmsg("event_store launcher: could not start a pipeline worker for database %u",
							db->dboid),
					 errhint("Raise max_worker_processes.")));
			db->next_start = TimestampTzPlusMilliseconds(now, 5000);
		}
	}
	LWLockRelease(es_pipeline_lock);
}

/*
 * Main loop of the launcher.
 */
void
event_store_launcher_main(Datum arg)
{
	(void) arg;
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	es_pipeline->launcher_pid = MyProcPid;
	es_pipeline->launcher_latch = MyLatch;
	/* a restarted launcher lost its handles: entries it had started are restarted */
	for (int i = 0; i < ES_MAX_PIPELINES; i++)
		if (es_pipeline->dbs[i].state == ES_PIPE_RUNNING && es_pipeline->dbs[i].pid == 0)
			es_pipeline->dbs[i].state = ES_PIPE_WANTED;
	LWLockRelease(es_pipeline_lock);

	want_databases_with_slots();
	es_health_log();			/* the settings an event store depends on: say what is wrong */

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		launcher_pass();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
