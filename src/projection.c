/*-------------------------------------------------------------------------
 *
 * projection.c
 *	  Projections (read models): the registry, the functions that create
 *	  and change projections, and wait_for_projection().  Handlers and
 *	  inline application are in projection_handler.c, parked events in
 *	  projection_parked.c, the workers in projector.c.
 *
 * A projection is a handler(e event_store.event) RETURNS void that writes the
 * user's own tables, applied to every event of the global log (or of some
 * types or categories), in log order.  Its definition and progress are a row
 * of event_store.projections, written only by the functions here and by the
 * projection workers (projector.c), as the extension's owner.
 *
 * Asynchronous projections (mode 'async') are applied by the projection
 * workers; their `position` is stored in the same transaction as the
 * handler's effects, so each event's effect happens once however often it
 * is delivered.  Inline projections are applied by the BEFORE INSERT trigger
 * (es_apply_inline), inside the appending transaction: the read model is
 * right before that transaction commits, and rolled back with it.
 *
 * Handlers (and reset functions) run as the projection's owner, the role
 * that created it, inside SECURITY_RESTRICTED_OPERATION (no SET ROLE, no
 * temporary objects) and a GUC nest level that undoes whatever they set, with
 * the search_path of the session that created the projection (as SET
 * search_path FROM CURRENT would).  Every run re-checks that the owner may
 * EXECUTE the handler and SELECT the event table and the global log: a
 * projection is a way of reading events, so it cannot read more than its
 * owner may.  The events it is handed are presented as its owner would read
 * them (upcast; protected fields in clear only with personal_data_access()).
 *
 * Locking.  Work on one projection (a worker's batch, rebuild, pause,
 * resume, drop, replay_parked) is serialised by an ExclusiveLock on the
 * projection's lock tag (advisory class, field4 = ES_LOCKTAG_PROJECTION, key
 * = 64-bit hash of the name), held until the transaction ends; workers only
 * try it (ConditionalLockAcquire) and move on to another projection.
 * Creating or rebuilding an inline projection takes ShareRowExclusiveLock
 * on event_store.events, which waits for every running appender and makes
 * new ones wait: the history replayed and the appends that apply the
 * projection inline meet without a gap or an overlap.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "pipeline.h"
#include "projection.h"
#include "read.h"

PG_FUNCTION_INFO_V1(event_store_create_projection);
PG_FUNCTION_INFO_V1(event_store_drop_projection);
PG_FUNCTION_INFO_V1(event_store_pause_projection);
PG_FUNCTION_INFO_V1(event_store_resume_projection);
PG_FUNCTION_INFO_V1(event_store_rebuild_projection);
PG_FUNCTION_INFO_V1(event_store_wait_for_projection);

/* Settings */
int			es_projection_workers = 2;
int			es_projection_batch_events = 1000;
int			es_projection_batch_time_ms = 100;
int			es_projection_retries = 5;
int			es_projection_retry_delay_ms = 100;

/* The statements, each run as the extension's owner (es_projection_run). */
static EsStatement read_projection = ES_STATEMENT(
	"SELECT p.name, p.handler, p.reset, p.event_types, p.categories, p.mode, p.on_error, "
	"       p.owner::pg_catalog.oid, p.search_path, p.state, p.position, p.retries, "
	"       p.log_identity OPERATOR(pg_catalog.<>) (SELECT i.id FROM event_store.log_identity i), "
	"       p.incarnation::pg_catalog.text "
	"  FROM event_store.projections p WHERE p.name OPERATOR(pg_catalog.=) $1",
	1, TEXTOID);

static EsStatement insert_projection = ES_STATEMENT(
	"INSERT INTO event_store.projections "
	"  (name, handler, reset, event_types, categories, mode, on_error, owner, "
	"   search_path, state, position, log_identity) "
	"SELECT $1, $2, $3, $4, $5, $6, $7, $8::pg_catalog.regrole, $9, $10, $11, i.id "
	"  FROM event_store.log_identity i "
	"ON CONFLICT (name) DO NOTHING",
	11, TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTARRAYOID, TEXTOID, TEXTOID, OIDOID, TEXTOID, TEXTOID, INT8OID);

static EsStatement delete_projection = ES_STATEMENT(
	"WITH parked AS (DELETE FROM event_store.projection_parked k "
	"                 WHERE k.projection OPERATOR(pg_catalog.=) $1) "
	"DELETE FROM event_store.projections WHERE name OPERATOR(pg_catalog.=) $1",
	1, TEXTOID);

static EsStatement update_state = ES_STATEMENT(
	"UPDATE event_store.projections SET state = $2, retries = 0, retry_at = NULL "
	" WHERE name OPERATOR(pg_catalog.=) $1",
	2, TEXTOID, TEXTOID);

static EsStatement delete_all_parked = ES_STATEMENT(
	"DELETE FROM event_store.projection_parked WHERE projection OPERATOR(pg_catalog.=) $1",
	1, TEXTOID);

static EsStatement reset_for_rebuild = ES_STATEMENT(
	"UPDATE event_store.projections p "
	"   SET state = CASE WHEN p.mode OPERATOR(pg_catalog.=) 'inline' THEN 'live' ELSE 'rebuilding' END, "
	"       position = CASE WHEN p.mode OPERATOR(pg_catalog.=) 'inline' THEN NULL ELSE 0 END, "
	"       rebuild_total = CASE WHEN p.mode OPERATOR(pg_catalog.=) 'inline' THEN NULL ELSE $2 END, "
	"       events_applied = 0, retries = 0, retry_at = NULL, "
	"       incarnation = pg_catalog.gen_random_uuid(), "
	"       log_identity = (SELECT i.id FROM event_store.log_identity i) "
	" WHERE p.name OPERATOR(pg_catalog.=) $1",
	2, TEXTOID, INT8OID);

/* Per transaction: tell the pipeline worker at commit that projections changed. */
static bool changed_at_commit = false;

/* Tell the pipeline worker at commit that the projections changed. */
void
es_projection_changed(void)
{
	changed_at_commit = true;
}

static void
projection_xact_callback(XactEvent event, void *arg)
{
	(void) arg;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (changed_at_commit)
				es_pipeline_projections_changed(MyDatabaseId);
			/* FALLTHROUGH */
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			changed_at_commit = false;
			break;
		default:
			break;
	}
}

/*
 * Called once per process from _PG_init, before the event_store prefix is
 * reserved: settings and cache invalidation.
 */
void
es_projection_init(void)
{
	DefineCustomIntVariable("event_store.projection_workers",
							"Projection workers per database.",
							"Each applies one asynchronous projection at a time, taking turns over "
							"the projections that have events to apply.",
							&es_projection_workers,
							2, 1, ES_MAX_PROJECTORS,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("event_store.projection_batch_events",
							"Events a projection worker applies in one transaction at most.",
							NULL,
							&es_projection_batch_events,
							1000, 1, INT_MAX,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("event_store.projection_batch_time",
							"Time after which a projection worker ends a batch and turns to the next projection.",
							"A slow handler holds a worker for about this long (or one event) at a time.",
							&es_projection_batch_time_ms,
							100, 1, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("event_store.projection_retries",
							"Times a failing event is retried before the projection stops or parks it.",
							NULL,
							&es_projection_retries,
							5, 0, 100,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("event_store.projection_retry_delay",
							"Delay before the first retry of a failing event; it doubles with each retry.",
							NULL,
							&es_projection_retry_delay_ms,
							100, 0, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	/*
	 * The inline projections are loaded again when the registry changes,
	 * when the grants their owners need change (on the event table and the
	 * global log), and when functions or roles do.
	 */
	ES_WATCH_RELATION(projections_relid, es_projection_inline_reset);
	ES_WATCH_RELATION(events_relid, es_projection_inline_reset);
	ES_WATCH_RELATION(log_relid, es_projection_inline_reset);
	es_watch_syscache(PROCOID, es_projection_inline_reset);
	es_watch_syscache(AUTHMEMROLEMEM, es_projection_inline_reset);
	es_watch_syscache(AUTHOID, es_projection_inline_reset);
	RegisterXactCallback(projection_xact_callback, NULL);
}

/*
 * The registry's OID (InvalidOid if the extension is not installed, or at a
 * version without projections).
 */
Oid
es_projection_registry(void)
{
	const EsCatalog *cat = es_catalog_if_installed();

	return cat ? cat->projections_relid : InvalidOid;
}

/* The registry, or the error that the installed version has none. */
Oid
es_projection_require_registry(void)
{
	Oid			relid;

	(void) es_catalog();		/* the extension is installed at all */
	relid = es_projection_registry();
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the installed version of extension \"event_store\" has no projections"),
				 errhint("Run ALTER EXTENSION event_store UPDATE.")));
	return relid;
}

/*
 * Run a statement on the projection tables as their owner, so that callers
 * need no privilege on them (es_run: the caller is connected to SPI, the
 * rows are left in SPI_tuptable).  Returns SPI_processed.
 */
uint64
es_projection_run(EsStatement *st, Datum *values, const char *nulls, int expect)
{
	es_projection_require_registry();
	return es_run(st, values, nulls, ES_RUN_AS_OWNER, 0, expect);
}

static char *
text_column(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * Read the projection's row into *p (palloc'd in the current context), as
 * the transaction's snapshot sees it, or with `latest` as the latest one
 * (a projection committed after a REPEATABLE READ transaction began counts).
 * Returns false if there is no such projection.
 */
bool
es_projection_read(const char *name, bool latest, EsProjection *p)
{
	MemoryContext caller = CurrentMemoryContext;
	Datum		args[1];
	bool		found;

	args[0] = CStringGetTextDatum(name);
	SPI_connect();
	es_projection_require_registry();
	/* not read-only: a projection this transaction just created or changed counts */
	found = es_run(&read_projection, args, NULL,
				   ES_RUN_AS_OWNER | (latest ? ES_RUN_LATEST | ES_RUN_READ_ONLY : 0), 0,
				   SPI_OK_SELECT) == 1;
	if (found)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext spi = MemoryContextSwitchTo(caller);
		bool		isnull;
		Datum		d;
		char	   *mode;
		char	   *on_error;

		memset(p, 0, sizeof(*p));
		p->name = text_column(tup, desc, 1);
		p->handler_signature = text_column(tup, desc, 2);
		p->reset_signature = text_column(tup, desc, 3);
		d = SPI_getbinval(tup, desc, 4, &isnull);
		p->event_types = isnull ? NULL : DatumGetArrayTypePCopy(d);
		d = SPI_getbinval(tup, desc, 5, &isnull);
		p->categories = isnull ? NULL : DatumGetArrayTypePCopy(d);
		mode = text_column(tup, desc, 6);
		on_error = text_column(tup, desc, 7);
		p->inline_mode = strcmp(mode, "inline") == 0;
		p->park = strcmp(on_error, "park") == 0;
		p->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 8, &isnull));
		p->search_path = text_column(tup, desc, 9);
		p->state = text_column(tup, desc, 10);
		d = SPI_getbinval(tup, desc, 11, &isnull);
		p->has_position = !isnull;
		p->position = isnull ? 0 : DatumGetInt64(d);
		p->retries = DatumGetInt32(SPI_getbinval(tup, desc, 12, &isnull));
		d = SPI_getbinval(tup, desc, 13, &isnull);
		p->restored = isnull || DatumGetBool(d);
		p->incarnation = text_column(tup, desc, 14);
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	return found;
}

/* The projection's row, or the error that it does not exist. */
void
es_projection_read_or_fail(const char *name, EsProjection *p)
{
	if (!es_projection_read(name, false, p))
		ereport(ERROR,
				(errcode(ERRCODE_ES_UNKNOWN_PROJECTION),
				 errmsg("projection \"%s\" does not exist", name),
				 errhint("Create it with event_store.create_projection(); see event_store.projection_status.")));
}

/* The key of a projection's lock. */
static uint64
lock_key(const char *name)
{
	return hash_bytes_extended((const unsigned char *) name, strlen(name), 0);
}

/*
 * Take the projection's lock until the transaction ends (see the header).
 * Without `wait`, returns false at once if someone else holds it.
 */
bool
es_projection_lock(const char *name, bool wait)
{
	return es_xact_lock(ES_LOCKTAG_PROJECTION, lock_key(name), wait);
}

/* Does this transaction hold the projection's lock? */
static bool
es_projection_lock_held(const char *name)
{
	return es_xact_lock_held(ES_LOCKTAG_PROJECTION, lock_key(name));
}

/*
 * The functions that change a projection are for its owner (and members of
 * the owner's role, superusers included).
 */
void
es_projection_check_owner(const EsProjection *p)
{
	if (!has_privs_of_role(GetUserId(), p->owner))
	{
		const char *owner = GetUserNameFromId(p->owner, true);

		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of projection \"%s\"", p->name),
				 errdetail("Projection \"%s\" belongs to role \"%s\".", p->name,
						   owner ? owner : "(dropped)")));
	}
}

/*
 * A projection restored by pg_dump into another database refers to that
 * database's global log: only a rebuild can make it right.
 */
void
es_projection_check_not_restored(const EsProjection *p)
{
	if (p->restored)
		ereport(ERROR,
				(errcode(ERRCODE_ES_PROJECTION_RESTORED),
				 errmsg("projection \"%s\" was restored from a dump", p->name),
				 errdetail("Its position refers to the global log of the database it was dumped from; this database orders its events anew."),
				 errhint("Run event_store.rebuild_projection('%s').", p->name)));
}

/* A text argument that must be one of two words. */
static bool
choice_arg(FunctionCallInfo fcinfo, int argno, const char *name, const char *a, const char *b)
{
	char	   *v;

	es_require_arg(fcinfo, argno, name);
	v = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (strcmp(v, a) == 0)
		return true;
	if (strcmp(v, b) == 0)
		return false;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid %s \"%s\"", name, v),
			 errhint("Use '%s' or '%s'.", a, b)));
	return false;				/* not reached */
}

/* A filter array argument (checked as es_name_array does), or NULL. */
static ArrayType *
filter_arg(FunctionCallInfo fcinfo, int argno, const char *name)
{
	text	  **names;

	if (PG_ARGISNULL(argno))
		return NULL;
	(void) es_name_array(PG_GETARG_ARRAYTYPE_P(argno), name, &names);
	return PG_GETARG_ARRAYTYPE_P(argno);
}

/* A function argument: its identifier, for messages. */
const char *
es_projection_name_arg(FunctionCallInfo fcinfo)
{
	return text_to_cstring(es_identifier_arg(fcinfo, 0, "name"));
}

/*
 * create_projection(name, handler, event_types, categories, mode, reset,
 * on_error, start) RETURNS void
 */
Datum
event_store_create_projection(PG_FUNCTION_ARGS)
{
	const char *name = es_projection_name_arg(fcinfo);
	Oid			handler;
	Oid			reset = InvalidOid;
	ArrayType  *types = filter_arg(fcinfo, 2, "event_types");
	ArrayType  *categories = filter_arg(fcinfo, 3, "categories");
	bool		async = choice_arg(fcinfo, 4, "mode", "async", "inline");
	bool		stop = choice_arg(fcinfo, 6, "on_error", "stop", "park");
	bool		beginning = choice_arg(fcinfo, 7, "start", "beginning", "now");
	Oid			owner = GetUserId();
	int64		position = 0;
	Datum		args[11];
	char		nulls[11];

	es_require_arg(fcinfo, 1, "handler");
	es_projection_require_registry();
	handler = PG_GETARG_OID(1);
	es_projection_check_function(handler, false, name);
	es_projection_check_owner_rights(owner, handler, !async);
	if (!PG_ARGISNULL(5))
	{
		reset = PG_GETARG_OID(5);
		es_projection_check_function(reset, true, name);
		es_projection_check_owner_rights(owner, reset, !async);
	}
	if (!async && beginning)
		es_projection_check_replay(name);
	if (async)
		es_require_pipeline();

	if (!async)
	{
		/* a clean cut between the history and the appends that apply it inline */
		LockRelationOid(es_catalog()->events_relid, ShareRowExclusiveLock);
	}
	else if (!beginning)
	{
		/* start after everything committed before the call */
		if (!es_wait_for_pipeline_until(TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 60 * 1000)))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("could not find the end of the global log for projection \"%s\"", name),
					 errdetail("The pipeline did not order the committed events within 60 seconds."),
					 errhint("Check event_store.pipeline_status, or start the projection at the beginning.")));
		position = es_latest_log_head();
	}

	memset(nulls, ' ', sizeof(nulls));
	args[0] = CStringGetTextDatum(name);
	args[1] = CStringGetTextDatum(format_procedure_qualified(handler));
	args[2] = OidIsValid(reset) ? CStringGetTextDatum(format_procedure_qualified(reset)) : (Datum) 0;
	nulls[2] = OidIsValid(reset) ? ' ' : 'n';
	args[3] = types ? PointerGetDatum(types) : (Datum) 0;
	nulls[3] = types ? ' ' : 'n';
	args[4] = categories ? PointerGetDatum(categories) : (Datum) 0;
	nulls[4] = categories ? ' ' : 'n';
	args[5] = CStringGetTextDatum(async ? "async" : "inline");
	args[6] = CStringGetTextDatum(stop ? "stop" : "park");
	args[7] = ObjectIdGetDatum(owner);
	args[8] = CStringGetTextDatum(GetConfigOption("search_path", false, false));
	args[9] = CStringGetTextDatum(!async || !beginning ? "live" : "catching up");
	args[10] = Int64GetDatum(position);
	nulls[10] = async ? ' ' : 'n';

	SPI_connect();
	if (es_projection_run(&insert_projection, args, nulls, SPI_OK_INSERT) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_ES_PROJECTION_EXISTS),
				 errmsg("projection \"%s\" already exists", name),
				 errhint("Drop it first, or choose another name.")));
	SPI_finish();
	CacheInvalidateRelcacheByRelid(es_projection_registry());
	CommandCounterIncrement();
	es_projection_changed();

	if (!async && beginning)
	{
		EsProjection p;

		es_projection_read_or_fail(name, &p);
		(void) es_projection_replay_log(&p);
	}
	PG_RETURN_VOID();
}

/*
 * drop_projection(name) RETURNS boolean: false if there is no such projection.
 * The read model's tables are the user's and stay.
 */
Datum
event_store_drop_projection(PG_FUNCTION_ARGS)
{
	const char *name = es_projection_name_arg(fcinfo);
	EsProjection p;
	Datum		args[1];

	es_projection_require_registry();
	if (!es_projection_read(name, false, &p))
		PG_RETURN_BOOL(false);
	es_projection_check_owner(&p);
	(void) es_projection_lock(name, true);
	args[0] = CStringGetTextDatum(name);
	SPI_connect();
	es_projection_run(&delete_projection, args, NULL, SPI_OK_DELETE);
	SPI_finish();
	CacheInvalidateRelcacheByRelid(es_projection_registry());
	es_projection_changed();
	PG_RETURN_BOOL(true);
}

/* Read, check the owner, lock, read again (the row may have changed while we waited). */
void
es_projection_lock_for_change(const char *name, EsProjection *p)
{
	es_projection_require_registry();
	es_projection_read_or_fail(name, p);
	es_projection_check_owner(p);
	(void) es_projection_lock(name, true);
	es_projection_read_or_fail(name, p);
}

/* Set the projection's state (and clear its retry schedule). */
static void
set_state(const char *name, const char *state)
{
	Datum		args[2];

	args[0] = CStringGetTextDatum(name);
	args[1] = CStringGetTextDatum(state);
	SPI_connect();
	es_projection_run(&update_state, args, NULL, SPI_OK_UPDATE);
	SPI_finish();
	es_projection_changed();
}

/* pause_projection(name) RETURNS void: the workers leave it alone until resumed. */
Datum
event_store_pause_projection(PG_FUNCTION_ARGS)
{
	const char *name = es_projection_name_arg(fcinfo);
	EsProjection p;

	es_projection_lock_for_change(name, &p);
	if (p.inline_mode)
		ereport(ERROR,
				(errcode(ERRCODE_ES_PROJECTION_STATE),
				 errmsg("inline projection \"%s\" cannot be paused", name),
				 errdetail("Its handler runs in every appending transaction; a pause would leave a gap."),
				 errhint("Drop it, or create an asynchronous projection instead.")));
	if (strcmp(p.state, "paused") != 0)
		set_state(name, "paused");
	PG_RETURN_VOID();
}

/*
 * resume_projection(name) RETURNS void: a paused or failed projection goes on
 * where it stopped (a failed one retries its event at once); a running one
 * retries a failing event now.
 */
Datum
event_store_resume_projection(PG_FUNCTION_ARGS)
{
	const char *name = es_projection_name_arg(fcinfo);
	EsProjection p;

	es_projection_lock_for_change(name, &p);
	es_projection_check_not_restored(&p);
	if (!p.inline_mode)
		set_state(name, strcmp(p.state, "paused") == 0 || strcmp(p.state, "failed") == 0 ?
				  "catching up" : p.state);
	PG_RETURN_VOID();
}

/*
 * rebuild_projection(name) RETURNS void: call reset, then apply the whole
 * history again.  Inline: here and now.  Async: the workers start again at
 * the beginning of the log and go on live from there (state 'rebuilding'
 * until they catch up; progress in projection_status).
 */
Datum
event_store_rebuild_projection(PG_FUNCTION_ARGS)
{
	const char *name = es_projection_name_arg(fcinfo);
	EsProjection p;
	Datum		args[2];

	es_projection_lock_for_change(name, &p);
	if (p.reset_signature == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_ES_PROJECTION_STATE),
				 errmsg("projection \"%s\" has no reset function", name),
				 errdetail("A rebuild applies every event again; without a reset the read model would count them twice."),
				 errhint("Drop the projection and create it again with reset => a function that empties its tables.")));
	if (p.inline_mode)
	{
		EsHandler	h;

		es_projection_check_replay(name);
		es_projection_resolve(&p, &h);	/* its owner's rights, before any lock */
		LockRelationOid(es_catalog()->events_relid, ShareRowExclusiveLock);
	}
	else
		es_require_pipeline();
	es_projection_call_reset(&p);

	args[0] = CStringGetTextDatum(name);
	SPI_connect();
	es_projection_run(&delete_all_parked, args, NULL, SPI_OK_DELETE);
	args[1] = Int64GetDatum(p.inline_mode ? 0 : es_latest_log_head());
	es_projection_run(&reset_for_rebuild, args, NULL, SPI_OK_UPDATE);
	SPI_finish();
	CacheInvalidateRelcacheByRelid(es_projection_registry());	/* a restored inline projection applies again */
	CommandCounterIncrement();
	es_projection_changed();
	if (p.inline_mode)
		(void) es_projection_replay_log(&p);
	PG_RETURN_VOID();
}

/* The projection's position as the latest snapshot sees it (-1: gone). */
static int64
current_position(const char *name)
{
	EsProjection p;

	if (!es_projection_read(name, true, &p))
		return -1;
	return p.has_position ? p.position : 0;
}

/*
 * wait_for_projection(name, timeout interval DEFAULT '5 s') RETURNS boolean:
 * true once the projection has applied everything committed before the
 * call, false after the timeout.  Inline projections are always current.
 */
Datum
event_store_wait_for_projection(PG_FUNCTION_ARGS)
{
	const char *name = es_projection_name_arg(fcinfo);
	EsProjection p;
	TimestampTz deadline;
	int64		head;
	bool		done = false;

	es_require_arg(fcinfo, 1, "timeout");
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										   es_interval_ms(PG_GETARG_INTERVAL_P(1), "timeout"));
	es_projection_require_registry();
	es_projection_read_or_fail(name, &p);
	es_projection_check_not_restored(&p);
	if (p.inline_mode)
		PG_RETURN_BOOL(true);
	es_require_pipeline();
	if (es_projection_lock_held(name))
		ereport(ERROR,
				(errcode(ERRCODE_ES_PROJECTION_STATE),
				 errmsg("cannot wait for projection \"%s\" in the transaction that changes it", name),
				 errdetail("The projection workers wait for this transaction to end before they apply it."),
				 errhint("Commit first, then wait.")));

	/* everything committed before the call is in the log ... */
	if (!es_wait_for_pipeline_until(deadline))
		PG_RETURN_BOOL(false);
	head = es_latest_log_head();

	/* ... and the projection has passed it */
	ConditionVariablePrepareToSleep(&es_pipeline->projection_cv);
	for (;;)
	{
		int64		position = current_position(name);
		long		left;

		if (position < 0)
			ereport(ERROR,
					(errcode(ERRCODE_ES_UNKNOWN_PROJECTION),
					 errmsg("projection \"%s\" was dropped", name)));
		if (position >= head)
		{
			done = true;
			break;
		}
		left = (long) TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (left <= 0)
			break;
		(void) ConditionVariableTimedSleep(&es_pipeline->projection_cv, Min(left, 100),
										   PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	PG_RETURN_BOOL(done);
}
