/*-------------------------------------------------------------------------
 *
 * restore.c
 *	  Restores keep the global log's positions: while a pg_dump is being
 *	  restored into a database, its pipeline and projections wait.
 *
 * pg_dump dumps event_store.global_log and event_store.log_identity (they
 * are configuration tables of the extension), so a restored database has
 * the same position for every event, and the projections and consumers
 * restored with it resume where they were.  The restore loads the tables in
 * its own order, though: the events before the log (and, with pg_restore
 * -j, in any order), the read models after both.  A pipeline worker ordering
 * the restored events before their positions arrive would number them anew
 * (and the dumped log would then collide with its numbers); a projection
 * applying them before its read model arrives would apply them twice.
 *
 * So a session that loads the extension's tables the way a restore does --
 * a superuser's COPY ... FROM STDIN into a table of the event_store schema,
 * supplying recorded_at when it is the event table -- marks itself as
 * restoring, in shared memory, for its database, until it ends.  While a
 * database has a restoring session, its pipeline worker writes no position
 * and its projection workers apply nothing; inline projections are not
 * applied in a restoring session (the read models come from the dump).
 * Once the last restoring session has ended, the worker finds the restored
 * events in the restored log and gives positions only to the events the
 * dump had not ordered yet, after the others.
 *
 * Locking: es_pipeline_lock, exclusively, while a session is added or
 * removed; shared while the sessions are looked at.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/ipc.h"
#include "utils/lsyscache.h"

#include "internal.h"
#include "pipeline.h"

/* This session is restoring (see the header). */
bool		es_restoring = false;

/* At the session's end: no longer restoring. */
static void
end_restore(int code, Datum arg)
{
	int			i;

	(void) code;
	(void) arg;
	if (es_pipeline == NULL)
		return;
	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	for (i = 0; i < ES_MAX_RESTORES; i++)
		if (es_pipeline->restores[i].pid == MyProcPid)
			es_pipeline->restores[i].pid = 0;
	LWLockRelease(es_pipeline_lock);
	es_pipeline_wake_db(MyDatabaseId);	/* the worker may go on */
}

/* Does the COPY load the extension's tables as a restore does? */
static bool
copy_restores(CopyStmt *stmt)
{
	const EsCatalog *cat;
	Oid			relid;
	ListCell   *lc;

	if (!stmt->is_from || stmt->filename != NULL || stmt->is_program || stmt->relation == NULL ||
		!superuser())
		return false;
	cat = es_catalog_if_installed();
	if (cat == NULL)
		return false;
	relid = RangeVarGetRelid(stmt->relation, NoLock, true);
	if (!OidIsValid(relid) || get_rel_namespace(relid) != cat->nsp)
		return false;
	if (relid != cat->events_relid || stmt->attlist == NIL)
		return true;
	foreach(lc, stmt->attlist)
		if (strcmp(strVal(lfirst(lc)), "recorded_at") == 0)
			return true;
	return false;				/* a bulk load of new events, not a restore */
}

/*
 * Called by the utility hook (shmem.c) before a COPY runs: a restoring
 * session says so.
 */
void
es_restore_note_copy(CopyStmt *stmt)
{
	int			i;
	int			free_slot = -1;

	if (es_restoring || !copy_restores(stmt))
		return;
	es_restoring = true;
	if (es_pipeline == NULL)
		return;					/* no pipeline: nothing to hold */
	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	for (i = 0; i < ES_MAX_RESTORES && free_slot < 0; i++)
		if (es_pipeline->restores[i].pid == 0)
			free_slot = i;
	if (free_slot >= 0)
	{
		es_pipeline->restores[free_slot].pid = MyProcPid;
		es_pipeline->restores[free_slot].dboid = MyDatabaseId;
	}
	LWLockRelease(es_pipeline_lock);
	if (free_slot < 0)
	{
		es_restoring = false;
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many sessions are restoring event_store tables at once"),
				 errdetail("At most %d sessions of the server can restore at a time.", ES_MAX_RESTORES),
				 errhint("Restore with fewer parallel jobs.")));
	}
	before_shmem_exit(end_restore, (Datum) 0);
	ereport(LOG,
			(errmsg("event_store: session %d restores database %u; its pipeline and projections wait until the session ends",
					MyProcPid, MyDatabaseId)));
}

/*
 * Is a session restoring the database?  Returns the pid of one, or 0.
 */
int
es_restore_in_progress(Oid dboid)
{
	int			pid = 0;
	int			i;

	if (es_pipeline == NULL)
		return 0;
	LWLockAcquire(es_pipeline_lock, LW_SHARED);
	for (i = 0; i < ES_MAX_RESTORES && pid == 0; i++)
		if (es_pipeline->restores[i].pid != 0 && es_pipeline->restores[i].dboid == dboid)
			pid = es_pipeline->restores[i].pid;
	LWLockRelease(es_pipeline_lock);
	return pid;
}
