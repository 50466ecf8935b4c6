/*-------------------------------------------------------------------------
 *
 * health.c
 *	  Start-up checks and the health view: the server settings an event
 *	  store depends on, said clearly where they are wrong.
 *
 * Each check looks at one setting (or the capacity for the databases the
 * pipeline serves) and says "ok" or "warning", with what it found and why it
 * matters:
 *
 *	fsync, full_page_writes   off: a crash can lose or tear committed events
 *	synchronous_commit        off (the server's default): a crash can lose
 *							  the last appends a client was told had committed
 *	wal_level, preloading     the pipeline cannot run (no global log)
 *	max_slot_wal_keep_size    -1: a stopped pipeline keeps WAL without bound
 *	max_worker_processes      fewer than the launcher, a pipeline worker and
 *							  the projection workers of every database need
 *	max_replication_slots     fewer than one per database, besides the slots
 *							  others hold
 *
 * The launcher logs every warning once when it starts (so that a server
 * started with a wrong setting says so in its log), and the view
 * event_store.health (the SQL function _health()) shows the checks at any
 * time, in the database it is queried from.
 *
 * Locking: es_pipeline_lock and ReplicationSlotControlLock, shared, while
 * the entries and the slots are counted.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "postmaster/bgworker_internals.h"
#include "replication/slot.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "internal.h"
#include "pipeline.h"
#include "projection.h"

PG_FUNCTION_INFO_V1(event_store_health);

#define MAX_CHECKS	8

typedef struct HealthCheck
{
	const char *name;
	bool		ok;
	char	   *value;
	const char *detail;			/* why it matters, when not ok */
} HealthCheck;

/* The value of a setting as SHOW prints it. */
static char *
setting(const char *name)
{
	const char *v = GetConfigOption(name, true, false);

	return pstrdup(v ? v : "");
}

/* The databases the pipeline serves now (its shared entries in use). */
static int
databases_served(void)
{
	int			n = 0;
	int			i;

	if (es_pipeline == NULL)
		return 0;
	LWLockAcquire(es_pipeline_lock, LW_SHARED);
	for (i = 0; i < ES_MAX_PIPELINES; i++)
		if (es_pipeline->dbs[i].state != ES_PIPE_FREE)
			n++;
	LWLockRelease(es_pipeline_lock);
	return n;
}

/* Replication slots in use that are not the pipeline's. */
static int
other_slots(void)
{
	int			n = 0;
	int			i;

	if (ReplicationSlotCtl == NULL)
		return 0;
	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (i = 0; i < max_replication_slots; i++)
	{
		ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];

		if (s->in_use && strncmp(NameStr(s->data.name), "event_store_", 12) != 0)
			n++;
	}
	LWLockRelease(ReplicationSlotControlLock);
	return n;
}

static void
add(HealthCheck *checks, int *n, const char *name, bool ok, char *value, const char *detail)
{
	Assert(*n < MAX_CHECKS);
	checks[*n].name = name;
	checks[*n].ok = ok;
	checks[*n].value = value;
	checks[*n].detail = ok ? NULL : detail;
	(*n)++;
}

/*
 * Run the checks into checks[] (MAX_CHECKS); returns how many.
 */
static int
run_checks(HealthCheck *checks)
{
	int			n = 0;
	int			dbs = Max(databases_served(), 1);
	int			workers = 1 + dbs * (1 + es_projection_workers);
	int			slots = other_slots() + dbs;
	const char *sync = GetConfigOption("synchronous_commit", true, false);

	add(checks, &n, "fsync", enableFsync, setting("fsync"),
		"A crash of the operating system can lose or corrupt committed events.");
	add(checks, &n, "full_page_writes", fullPageWrites, setting("full_page_writes"),
		"A crash can leave torn pages in the event table and its indexes.");
	add(checks, &n, "synchronous_commit", sync == NULL || strcmp(sync, "off") != 0, setting("synchronous_commit"),
		"A crash can lose the last appends that clients were told had committed; set it off per transaction where that is acceptable, not for the server.");
	add(checks, &n, "wal_level", wal_level >= WAL_LEVEL_LOGICAL, setting("wal_level"),
		"The pipeline needs wal_level = logical: no global log, read_all or projections without it.");
	add(checks, &n, "shared_preload_libraries", es_pipeline != NULL, setting("shared_preload_libraries"),
		"The pipeline needs event_store in shared_preload_libraries.");
	add(checks, &n, "max_slot_wal_keep_size", max_slot_wal_keep_size_mb >= 0, setting("max_slot_wal_keep_size"),
		"Without a limit, a pipeline that stops keeps every WAL segment since: the disk can fill. Set a size you can afford.");
	add(checks, &n, "max_worker_processes", max_worker_processes >= workers,
		psprintf("%d (event_store needs %d for %d database%s)", max_worker_processes, workers, dbs,
				 dbs == 1 ? "" : "s"),
		"Too few background workers for the launcher, a pipeline worker and the projection workers of every database: some will not start.");
	add(checks, &n, "max_replication_slots", max_replication_slots >= slots,
		psprintf("%d (event_store needs %d besides the %d in use by others)", max_replication_slots,
				 dbs, slots - dbs),
		"Too few replication slots for one per database: a database's pipeline will not start.");
	return n;
}

/*
 * Log every warning (the launcher, once when it starts).
 */
void
es_health_log(void)
{
	HealthCheck checks[MAX_CHECKS];
	int			n = run_checks(checks);
	int			i;

	for (i = 0; i < n; i++)
		if (!checks[i].ok)
			ereport(WARNING,
					(errmsg("event_store: %s = %s", checks[i].name, checks[i].value),
					 errdetail("%s", checks[i].detail),
					 errhint("See SELECT * FROM event_store.health in a database with the extension.")));
}

/*
 * _health() RETURNS TABLE(check text, status text, value text, detail
 * text): the checks, for the view event_store.health.
 */
Datum
event_store_health(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HealthCheck checks[MAX_CHECKS];
	int			n;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	n = run_checks(checks);
	for (i = 0; i < n; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = CStringGetTextDatum(checks[i].name);
		values[1] = CStringGetTextDatum(checks[i].ok ? "ok" : "warning");
		values[2] = CStringGetTextDatum(checks[i].value);
		if (checks[i].detail)
			values[3] = CStringGetTextDatum(checks[i].detail);
		else
			nulls[3] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
