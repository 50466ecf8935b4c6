/*-------------------------------------------------------------------------
 *
 * projection.c
 *	  Projections (read models): the registry and its SQL functions,
 *	  running handlers as their owner, inline application, and
 *	  wait_for_projection().
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

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "aggregate.h"
#include "pipeline.h"
#include "projection.h"

PG_FUNCTION_INFO_V1(event_store_create_projection);
PG_FUNCTION_INFO_V1(event_store_drop_projection);
PG_FUNCTION_INFO_V1(event_store_pause_projection);
PG_FUNCTION_INFO_V1(event_store_resume_projection);
PG_FUNCTION_INFO_V1(event_store_rebuild_projection);
PG_FUNCTION_INFO_V1(event_store_replay_parked);
PG_FUNCTION_INFO_V1(event_store_discard_parked);
PG_FUNCTION_INFO_V1(event_store_wait_for_projection);

/* Settings */
int			es_projection_workers = 2;
int			es_projection_batch_events = 1000;
int			es_projection_batch_time_ms = 100;
int			es_projection_retries = 5;
int			es_projection_retry_delay_ms = 100;

#define HANDLER_SIGNATURE	"(e event_store.event) RETURNS void"
#define RESET_SIGNATURE		"() RETURNS void"

/* Columns of event_store.projections (1-based). */
#define Anum_projections_name			1
#define Anum_projections_handler		2
#define Anum_projections_event_types	4
#define Anum_projections_categories		5
#define Anum_projections_mode			6
#define Anum_projections_on_error		7
#define Anum_projections_owner			8
#define Anum_projections_search_path	9

/* The registry table; reset by invalidation. */
static Oid	registry_relid = InvalidOid;

/* The tables whose grants the inline projections' owners need (set when loaded). */
static Oid	inline_events_relid = InvalidOid;
static Oid	inline_log_relid = InvalidOid;

/*
 * Inline projections, loaded from the registry once per invalidation.  A
 * handler can cause a reload while it runs (DDL sends invalidations; an
 * append of its own applies the inline projections again), so each load is
 * a set of its own, freed only once no es_apply_inline() uses it.
 */
typedef struct InlineProjection
{
	EsProjection def;
	bool		resolved;
	EsHandler	handler;
	text	  **types;			/* sorted; ntypes -1: no filter */
	int			ntypes;
	text	  **categories;
	int			ncategories;
} InlineProjection;

typedef struct InlineSet
{
	MemoryContext cxt;
	InlineProjection *items;
	int			n;
	int			users;			/* es_apply_inline() calls using the set */
	bool		retired;		/* replaced: free when unused */
} InlineSet;

static InlineSet *inline_set = NULL;
static bool inline_valid = false;
static int	inline_depth = 0;		/* es_apply_inline() calls in progress */
static LocalTransactionId registry_missing_in = InvalidLocalTransactionId;

/* Per transaction: tell the pipeline worker at commit that projections changed. */
static bool changed_at_commit = false;

/* ---------------------------------------------------------------------
 * Settings, caches and their invalidation
 * ---------------------------------------------------------------------
 */

static void
release_inline_set(InlineSet *set)
{
	if (set->users == 0 && set->retired)
		MemoryContextDelete(set->cxt);
}

static void
reset_inline_cache(void)
{
	inline_valid = false;
}

static void
projection_relcache_callback(Datum arg, Oid relid)
{
	(void) arg;
	if (relid == InvalidOid || relid == registry_relid)
	{
		registry_relid = InvalidOid;
		reset_inline_cache();
	}
	else if (relid == inline_events_relid || relid == inline_log_relid)
		reset_inline_cache();	/* their grants changed: check the owners again */
}

/* A function changed (dropped, replaced, its ACL): resolve the handlers again. */
static void
projection_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	(void) arg;
	(void) cacheid;
	(void) hashvalue;
	reset_inline_cache();
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

	CacheRegisterRelcacheCallback(projection_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, projection_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, projection_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, projection_syscache_callback, (Datum) 0);
	RegisterXactCallback(projection_xact_callback, NULL);
}

/*
 * The registry's OID (InvalidOid if the extension is installed at a
 * version without projections).
 */
static Oid
registry(void)
{
	if (!OidIsValid(registry_relid))
	{
		Oid			nsp = get_namespace_oid("event_store", true);
		Oid			relid = OidIsValid(nsp) ? get_relname_relid("projections", nsp) : InvalidOid;

		registry_relid = relid;
	}
	return registry_relid;
}

/* The registry, or the error that the installed version has none. */
static Oid
require_registry(void)
{
	Oid			relid;

	(void) es_catalog();		/* the extension is installed at all */
	relid = registry();
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the installed version of extension \"event_store\" has no projections"),
				 errhint("Run ALTER EXTENSION event_store UPDATE.")));
	return relid;
}

/* ---------------------------------------------------------------------
 * The registry: read and written through SPI as the extension's owner
 * ---------------------------------------------------------------------
 */

/*
 * Run one statement on the projection tables as their owner, so that
 * callers need no privilege on them.  Returns SPI_processed; the result
 * rows, if any, are left in SPI_tuptable (the caller must be connected to
 * SPI).
 */
int
es_projection_registry_exec(const char *sql, int nargs, Oid *types, Datum *values,
							const char *nulls)
{
	EsOwnerSave save;
	int			rc;

	require_registry();
	es_owner_begin(&save);
	rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);
	es_owner_end(&save);
	if (rc < 0)
		elog(ERROR, "event_store: projection registry statement failed: %s",
			 SPI_result_code_string(rc));
	return (int) SPI_processed;
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
	static const char *sql =
		"SELECT p.name, p.handler, p.reset, p.event_types, p.categories, p.mode, p.on_error, "
		"       p.owner::pg_catalog.oid, p.search_path, p.state, p.position, p.retries, "
		"       p.log_identity OPERATOR(pg_catalog.<>) (SELECT i.id FROM event_store.log_identity i), "
		"       p.incarnation::pg_catalog.text "
		"  FROM event_store.projections p WHERE p.name OPERATOR(pg_catalog.=) $1";
	MemoryContext caller = CurrentMemoryContext;
	Datum		args[1];
	Oid			types[1] = {TEXTOID};
	bool		found;

	args[0] = CStringGetTextDatum(name);
	SPI_connect();
	if (latest)
	{
		SPIPlanPtr	plan;
		Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
		EsOwnerSave save;
		int			rc;

		require_registry();
		es_owner_begin(&save);
		plan = SPI_prepare(sql, 1, types);
		if (plan == NULL)
			elog(ERROR, "event_store: could not prepare the projection registry read: %s",
				 SPI_result_code_string(SPI_result));
		rc = SPI_execute_snapshot(plan, args, NULL, snap, InvalidSnapshot, true, false, 0);
		es_owner_end(&save);
		UnregisterSnapshot(snap);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "event_store: projection registry read failed: %s", SPI_result_code_string(rc));
		found = SPI_processed == 1;
	}
	else
		found = es_projection_registry_exec(sql, 1, types, args, NULL) == 1;
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
static void
read_or_fail(const char *name, EsProjection *p)
{
	if (!es_projection_read(name, false, p))
		ereport(ERROR,
				(errcode(ERRCODE_ES_UNKNOWN_PROJECTION),
				 errmsg("projection \"%s\" does not exist", name),
				 errhint("Create it with event_store.create_projection(); see event_store.projection_status.")));
}

/*
 * Take the projection's lock until the transaction ends (see the header).
 * Without `wait`, returns false at once if someone else holds it.
 */
bool
es_projection_lock(const char *name, bool wait)
{
	LOCKTAG		tag;
	uint64		h = hash_bytes_extended((const unsigned char *) name, strlen(name), 0);

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h,
						 ES_LOCKTAG_PROJECTION);
	return LockAcquire(&tag, ExclusiveLock, false, !wait) != LOCKACQUIRE_NOT_AVAIL;
}

/* Does this transaction hold the projection's lock? */
static bool
es_projection_lock_held(const char *name)
{
	LOCKTAG		tag;
	uint64		h = hash_bytes_extended((const unsigned char *) name, strlen(name), 0);

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h,
						 ES_LOCKTAG_PROJECTION);
	return LockHeldByMe(&tag, ExclusiveLock);
}

/*
 * The functions that change a projection are for its owner (and members of
 * the owner's role, superusers included).
 */
static void
check_owner(const EsProjection *p)
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
static void
check_not_restored(const EsProjection *p)
{
	if (p->restored)
		ereport(ERROR,
				(errcode(ERRCODE_ES_PROJECTION_RESTORED),
				 errmsg("projection \"%s\" was restored from a dump", p->name),
				 errdetail("Its position refers to the global log of the database it was dumped from; this database orders its events anew."),
				 errhint("Run event_store.rebuild_projection('%s').", p->name)));
}

/* ---------------------------------------------------------------------
 * Handlers: their signature, their owner's rights, calling them
 * ---------------------------------------------------------------------
 */

/*
 * Is fn a plain function taking (event_store.event) (or nothing, for a
 * reset) and returning void?  Raises VE042 otherwise.
 */
static void
check_function(Oid fn, bool reset, const char *projection)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	Form_pg_proc proc;
	const char *role = reset ? "reset function" : "handler";

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_ES_WRONG_HANDLER),
				 errmsg("%s with OID %u does not exist", role, fn)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (proc->prokind != PROKIND_FUNCTION || proc->proretset || proc->prorettype != VOIDOID ||
		proc->pronargs != (reset ? 0 : 1) ||
		(!reset && proc->proargtypes.values[0] != es_agg_catalog()->event_type))
	{
		char	   *args = pstrdup("");
		int			i;

		for (i = 0; i < proc->pronargs; i++)
			args = psprintf("%s%s%s", args, i > 0 ? ", " : "",
							format_type_be(proc->proargtypes.values[i]));
		ereport(ERROR,
				(errcode(ERRCODE_ES_WRONG_HANDLER),
				 errmsg("%s %s of projection \"%s\" has the wrong signature", role,
						format_procedure(fn), projection),
				 errdetail("A %s must be a function %s; this one is a %s taking (%s) and returning %s%s.",
						   role, reset ? RESET_SIGNATURE : HANDLER_SIGNATURE,
						   proc->prokind == PROKIND_FUNCTION ? "function" :
						   proc->prokind == PROKIND_PROCEDURE ? "procedure" :
						   proc->prokind == PROKIND_AGGREGATE ? "aggregate function" : "window function",
						   args, proc->proretset ? "SETOF " : "",
						   format_type_be(proc->prorettype))));
	}
	ReleaseSysCache(tup);
}

/* Resolve a stored signature; VE043 if the function is gone. */
static Oid
resolve_function(const char *signature, bool reset, const char *projection)
{
	Oid			event_type = es_agg_catalog()->event_type;
	Oid			fn = es_resolve_signature(signature, reset ? 0 : 1, &event_type);

	if (!OidIsValid(fn))
		ereport(ERROR,
				(errcode(ERRCODE_ES_HANDLER_MISSING),
				 errmsg("%s %s of projection \"%s\" does not exist",
						reset ? "reset function" : "handler", signature, projection),
				 errdetail("The function was dropped or renamed after the projection was created."),
				 errhint("Create the function again, or drop the projection and create it anew.")));
	check_function(fn, reset, projection);
	return fn;
}

/*
 * May the owner run the projection?  EXECUTE on the function, SELECT on the
 * event table and the global log (a projection reads the log for its owner).
 */
static void
check_owner_rights(Oid owner, Oid fn, bool inline_mode)
{
	const EsCatalog *cat = es_catalog();
	AclResult	acl;

	/*
	 * An inline projection is code every writer runs, like a trigger on the
	 * event table: its owner needs the right to create one there.
	 */
	if (inline_mode && pg_class_aclcheck(cat->events_relid, owner, ACL_TRIGGER) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not run code in every append to event_store.events",
						GetUserNameFromId(owner, false)),
				 errhint("An inline projection runs in every appending transaction, as a trigger would: its owner needs the TRIGGER privilege on event_store.events.")));

	acl = pg_proc_aclcheck(fn, owner, ACL_EXECUTE);
	if (acl != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not execute function %s",
						GetUserNameFromId(owner, false), format_procedure(fn)),
				 errhint("A projection's owner needs EXECUTE on its handler and reset function.")));
	if (pg_class_aclcheck(cat->events_relid, owner, ACL_SELECT) != ACLCHECK_OK ||
		pg_class_aclcheck(cat->log_relid, owner, ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not read event_store.events and event_store.global_log",
						GetUserNameFromId(owner, false)),
				 errhint("A projection reads the events for its owner, who needs SELECT on both tables.")));
}

/*
 * Resolve the projection's handler for calling, checking it and its owner's
 * rights again (they may have changed since the projection was created).
 */
void
es_projection_resolve(const EsProjection *p, EsHandler *h)
{
	if (GetUserNameFromId(p->owner, true) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the owner of projection \"%s\" does not exist", p->name),
				 errdetail("Role %u was dropped.", p->owner),
				 errhint("Drop the projection and create it again as another role.")));
	h->fn = resolve_function(p->handler_signature, false, p->name);
	check_owner_rights(p->owner, h->fn, p->inline_mode);
	fmgr_info(h->fn, &h->flinfo);
	h->event_desc = lookup_rowtype_tupdesc_copy(es_agg_catalog()->event_type, -1);
}

/*
 * Become the projection's owner for running its code (see the header);
 * es_projection_leave() undoes it, and so does an error's abort.
 */
void
es_projection_enter(const EsProjection *p, EsAsOwner *save)
{
	GetUserIdAndSecContext(&save->save_user, &save->save_sec);
	SetUserIdAndSecContext(p->owner, save->save_sec | SECURITY_RESTRICTED_OPERATION);
	save->nestlevel = NewGUCNestLevel();
	/* (setting it costs a new search path; an inline projection's writer often has it already) */
	if (namespace_search_path == NULL || strcmp(namespace_search_path, p->search_path) != 0)
		(void) set_config_option("search_path", p->search_path, PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
}

void
es_projection_leave(EsAsOwner *save)
{
	AtEOXact_GUC(false, save->nestlevel);
	SetUserIdAndSecContext(save->save_user, save->save_sec);
}

/* Error context: which projection and event the handler was called for. */
static void
projection_error_context(void *arg)
{
	const EsProjectionEvent *ev = arg;

	if (ev->position > 0)
		errcontext("projection \"%s\", event at global position " INT64_FORMAT " (stream \"%s\", version " INT64_FORMAT ")",
				   ev->projection, ev->position, TextDatumGetCString(ev->stream_id),
				   ev->stream_version);
	else
		errcontext("projection \"%s\", event of stream \"%s\", version " INT64_FORMAT,
				   ev->projection, TextDatumGetCString(ev->stream_id), ev->stream_version);
}

/*
 * Call the handler for one event (values/nulls: a presented event_store.event),
 * as the current role (the caller has entered the owner's context).
 */
void
es_projection_call(const EsProjection *p, EsHandler *h, const EsProjectionEvent *ev,
				   Datum *values, bool *nulls)
{
	LOCAL_FCINFO(fcinfo, 1);
	ErrorContextCallback errcb;
	HeapTuple	tuple = heap_form_tuple(h->event_desc, values, nulls);

	(void) p;
	errcb.callback = projection_error_context;
	errcb.arg = (void *) ev;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	InitFunctionCallInfoData(*fcinfo, &h->flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = HeapTupleGetDatum(tuple);
	fcinfo->args[0].isnull = false;
	(void) FunctionCallInvoke(fcinfo);
	error_context_stack = errcb.previous;
	heap_freetuple(tuple);
}

/* Call the reset function, as the owner. */
static void
call_reset(const EsProjection *p)
{
	Oid			fn = resolve_function(p->reset_signature, true, p->name);
	EsAsOwner	save;
	FmgrInfo	flinfo;
	LOCAL_FCINFO(fcinfo, 0);

	check_owner_rights(p->owner, fn, p->inline_mode);
	fmgr_info(fn, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 0, InvalidOid, NULL, NULL);
	es_projection_enter(p, &save);
	(void) FunctionCallInvoke(fcinfo);	/* returns void: no result to check */
	es_projection_leave(&save);
	CommandCounterIncrement();
}

/*
 * Record a parked event (its handler failed): in the registry, as the owner
 * of the extension.
 */
static void
park_event(const char *projection, Datum stream_id, int64 stream_version, int64 position,
		   Datum event_type, ErrorData *edata)
{
	Datum		args[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	Oid			types[7] = {TEXTOID, TEXTOID, INT8OID, INT8OID, TEXTOID, TEXTOID, TEXTOID};

	args[0] = CStringGetTextDatum(projection);
	args[1] = stream_id;
	args[2] = Int64GetDatum(stream_version);
	args[3] = Int64GetDatum(position);
	nulls[3] = position > 0 ? ' ' : 'n';
	args[4] = event_type;
	args[5] = CStringGetTextDatum(edata->message ? edata->message : "");
	args[6] = CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode));
	SPI_connect();
	es_projection_registry_exec("INSERT INTO event_store.projection_parked AS k "
								"  (projection, stream_id, stream_version, global_position, event_type, error, error_sqlstate) "
								"VALUES ($1, $2, $3, $4, $5, $6, $7) "
								"ON CONFLICT (projection, stream_id, stream_version) DO UPDATE "
								"SET error = EXCLUDED.error, error_sqlstate = EXCLUDED.error_sqlstate, "
								"    global_position = COALESCE(EXCLUDED.global_position, k.global_position), "
								"    parked_at = pg_catalog.now()",
								7, types, args, nulls);
	SPI_finish();
}

/*
 * The history can be applied to an inline projection in this transaction (a
 * catch-up, a rebuild) only under READ COMMITTED, where each statement sees
 * the latest commits (a transaction snapshot would miss the appends the lock
 * on the event table waited for, and the reset would leave their effects),
 * and only before the transaction appends anything itself (its own events
 * are not in the log yet).
 */
static void
check_replay_possible(const char *name)
{
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("projection \"%s\" cannot be caught up or rebuilt in a %s transaction", name,
						IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errdetail("The transaction's snapshot would not show the events committed while it waited for appends to finish."),
				 errhint("Run it in a READ COMMITTED transaction.")));
	if (es_xact_appended)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("projection \"%s\" cannot be caught up or rebuilt in a transaction that has appended events", name),
				 errdetail("The transaction's own events are not in the global log yet, so they would be missed."),
				 errhint("Commit the appends first.")));
}

/* ---------------------------------------------------------------------
 * Replaying the log in the caller's transaction (inline catch-up, rebuild)
 * ---------------------------------------------------------------------
 */

/*
 * Apply every event of the log that the projection's filters select, in
 * log order, to an inline projection, in this transaction, as its owner.
 * The caller holds ShareRowExclusiveLock on the event table, so no append
 * can commit meanwhile; the log is first made complete (every committed
 * event ordered), then read with a fresh snapshot.
 */
static int64
replay_log(const EsProjection *p)
{
	EsHandler	h;
	EsAsOwner	save;
	EsLogScan  *s;
	Snapshot	snap;
	int64		applied = 0;
	MemoryContext work = AllocSetContextCreate(CurrentMemoryContext, "event_store replay",
											   ALLOCSET_DEFAULT_SIZES);

	es_require_pipeline();
	if (!es_wait_for_pipeline_until(TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 60 * 1000)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("could not replay the history into projection \"%s\"", p->name),
				 errdetail("The pipeline did not order the committed events into the global log within 60 seconds."),
				 errhint("Check event_store.pipeline_status.")));
	es_projection_resolve(p, &h);
	snap = RegisterSnapshot(GetLatestSnapshot());
	es_projection_enter(p, &save);
	s = es_log_scan_begin(0, p->categories, p->event_types, -1, snap);
	for (;;)
	{
		EsProjectionEvent ev;
		MemoryContext old;

		if (!es_log_scan_next(s))
			break;
		ev.projection = p->name;
		ev.position = s->position;
		ev.stream_id = s->current.stream_id;
		ev.stream_version = s->current.stream_version;
		MemoryContextReset(work);
		old = MemoryContextSwitchTo(work);
		es_projection_call(p, &h, &ev, s->values, s->nulls);
		MemoryContextSwitchTo(old);
		applied++;
	}
	es_log_scan_end(s);
	es_projection_leave(&save);
	UnregisterSnapshot(snap);
	MemoryContextDelete(work);
	return applied;
}

/* ---------------------------------------------------------------------
 * Inline projections: applied by the appending transaction
 * ---------------------------------------------------------------------
 */

/* The sorted names of a filter (-1: no filter). */
static int
sorted_names(ArrayType *arr, const char *what, text ***out)
{
	if (arr == NULL)
	{
		*out = NULL;
		return -1;
	}
	return es_name_array(arr, what, out);
}

/*
 * Load the inline projections from the registry, with the latest snapshot
 * (a projection created by this transaction, or committed after its
 * snapshot was taken, counts).  A projection that cannot run (its handler
 * dropped, its owner's rights revoked) raises its error here, at the
 * append: an inline read model never silently falls behind.
 */
static void
load_inline(void)
{
	Oid			relid = registry();
	Relation	rel;
	SysScanDesc scan;
	Snapshot	snap;
	HeapTuple	tup;
	List	   *names = NIL;
	ListCell   *lc;
	InlineSet  *set;
	MemoryContext cxt;
	MemoryContext old;

	if (inline_set != NULL)
	{
		inline_set->retired = true;
		release_inline_set(inline_set);
		inline_set = NULL;
	}
	inline_valid = false;
	if (!OidIsValid(relid))
	{
		/* installed at 0.1.0: look again in the next transaction */
		registry_missing_in = MyProc->lxid;
		return;
	}

	/* which are inline: a direct scan (no privilege is needed to append) */
	rel = table_open(relid, AccessShareLock);
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = systable_beginscan(rel, InvalidOid, false, snap, 0, NULL);
	while ((tup = systable_getnext(scan)) != NULL)
	{
		bool		isnull;
		Datum		mode = heap_getattr(tup, Anum_projections_mode, RelationGetDescr(rel), &isnull);

		if (!isnull && strcmp(TextDatumGetCString(mode), "inline") == 0)
			names = lappend(names, TextDatumGetCString(heap_getattr(tup, Anum_projections_name,
																	 RelationGetDescr(rel), &isnull)));
	}
	systable_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);

	inline_events_relid = es_catalog()->events_relid;
	inline_log_relid = es_catalog()->log_relid;
	cxt = AllocSetContextCreate(TopMemoryContext, "event_store inline projections",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	set = palloc0(sizeof(InlineSet));
	set->cxt = cxt;
	set->items = palloc0(sizeof(InlineProjection) * Max(list_length(names), 1));
	foreach(lc, names)
	{
		InlineProjection *ip = &set->items[set->n];

		if (!es_projection_read(lfirst(lc), true, &ip->def))
			elog(ERROR, "event_store: inline projection \"%s\" vanished while its definition was read",
				 (char *) lfirst(lc));
		if (ip->def.restored)
			continue;			/* restored from a dump: not applied until rebuilt */
		ip->ntypes = sorted_names(ip->def.event_types, "event_types", &ip->types);
		ip->ncategories = sorted_names(ip->def.categories, "categories", &ip->categories);
		set->n++;
	}
	MemoryContextSwitchTo(old);
	inline_set = set;
	inline_valid = true;
}

/* The handler of an inline projection, resolved and checked at its first event. */
static EsHandler *
inline_handler(InlineSet *set, InlineProjection *ip)
{
	if (!ip->resolved)
	{
		MemoryContext old = MemoryContextSwitchTo(set->cxt);

		es_projection_resolve(&ip->def, &ip->handler);
		MemoryContextSwitchTo(old);
		ip->resolved = true;
	}
	return &ip->handler;
}

static bool
name_selected(text **names, int n, text *name)
{
	return n < 0 || (n > 0 && bsearch(&name, names, n, sizeof(text *), es_text_cmp) != NULL);
}

/* Present the event as the owner reads it, and hand it to the handler. */
static void
apply_one_inline(InlineSet *set, InlineProjection *ip, EsProjectionEvent *ev,
				 Datum *values, bool *nulls)
{
	EsHandler  *h = inline_handler(set, ip);
	EsAsOwner	save;

	es_projection_enter(&ip->def, &save);
	es_present_event(values, nulls);
	es_projection_call(&ip->def, h, ev, values, nulls);
	es_projection_leave(&save);
}

/*
 * Called by the BEFORE INSERT trigger (versioning.c) for every event it is
 * about to insert (values/nulls: the row of event_store.events, complete):
 * apply the inline projections that select it.  The handler sees the event
 * as a reader would (decrypted and upcast for the projection's owner), with
 * global_position NULL (it is not ordered yet).  With on_error => 'stop' a
 * handler's error fails the append; with 'park' the event is parked (in a
 * subtransaction) and the append goes on.  Costs one test of a flag when
 * there is no inline projection.
 */
void
es_apply_inline(Datum *values, bool *nulls)
{
	text	   *volatile category = NULL;
	MemoryContext work;
	InlineSet  *volatile set;
	volatile int i;

	if (registry_missing_in != InvalidLocalTransactionId)
	{
		if (registry_missing_in == MyProc->lxid)
			return;
		registry_missing_in = InvalidLocalTransactionId;
		inline_valid = false;
	}
	if (!inline_valid)
		load_inline();
	set = inline_set;
	if (set == NULL || set->n == 0)
		return;

	work = AllocSetContextCreate(CurrentMemoryContext, "event_store inline projection",
								 ALLOCSET_DEFAULT_SIZES);
	set->users++;
	inline_depth++;
	PG_TRY();
	{
		for (i = 0; i < set->n; i++)
		{
			InlineProjection *ip = &set->items[i];
			text	   *stream_id = DatumGetTextPP(values[Anum_events_stream_id - 1]);
			Datum		ev_values[Natts_event];
			bool		ev_nulls[Natts_event];
			EsProjectionEvent ev;
			MemoryContext old;

			if (!name_selected(ip->types, ip->ntypes, DatumGetTextPP(values[Anum_events_event_type - 1])))
				continue;
			if (ip->ncategories >= 0)
			{
				if (category == NULL)
					category = es_stream_category(VARDATA_ANY(stream_id), VARSIZE_ANY_EXHDR(stream_id));
				if (!name_selected(ip->categories, ip->ncategories, category))
					continue;
			}
			ev.projection = ip->def.name;
			ev.position = 0;
			ev.stream_id = values[Anum_events_stream_id - 1];
			ev.stream_version = DatumGetInt64(values[Anum_events_stream_version - 1]);

			MemoryContextReset(work);
			old = MemoryContextSwitchTo(work);
			ev_values[0] = (Datum) 0;
			ev_nulls[0] = true;
			memcpy(&ev_values[1], values, sizeof(Datum) * Natts_events);
			memcpy(&ev_nulls[1], nulls, sizeof(bool) * Natts_events);
			if (!ip->def.park)
				apply_one_inline(set, ip, &ev, ev_values, ev_nulls);
			else
			{
				ResourceOwner owner = CurrentResourceOwner;

				BeginInternalSubTransaction(NULL);
				MemoryContextSwitchTo(work);
				PG_TRY();
				{
					apply_one_inline(set, ip, &ev, ev_values, ev_nulls);
					ReleaseCurrentSubTransaction();
					MemoryContextSwitchTo(work);
					CurrentResourceOwner = owner;
				}
				PG_CATCH();
				{
					ErrorData  *edata;

					MemoryContextSwitchTo(work);
					edata = CopyErrorData();
					FlushErrorState();
					RollbackAndReleaseCurrentSubTransaction();
					MemoryContextSwitchTo(work);
					CurrentResourceOwner = owner;
					park_event(ip->def.name, values[Anum_events_stream_id - 1], ev.stream_version, 0,
							   values[Anum_events_event_type - 1], edata);
				}
				PG_END_TRY();
			}
			MemoryContextSwitchTo(old);
		}
	}
	PG_FINALLY();
	{
		inline_depth--;
		set->users--;
		release_inline_set(set);
	}
	PG_END_TRY();
	MemoryContextDelete(work);
}

/*
 * Is an inline projection's handler running?  It may not append: the append
 * that runs it holds its stream's lock only until its next row, and a nested
 * append would take the lock's slot from it.
 */
bool
es_in_inline_projection(void)
{
	return inline_depth > 0;
}

/* ---------------------------------------------------------------------
 * The SQL functions
 * ---------------------------------------------------------------------
 */

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
static const char *
projection_name_arg(FunctionCallInfo fcinfo)
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
	const char *name = projection_name_arg(fcinfo);
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
	Oid			argtypes[11] = {TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTARRAYOID,
	TEXTOID, TEXTOID, OIDOID, TEXTOID, TEXTOID, INT8OID};

	es_require_arg(fcinfo, 1, "handler");
	require_registry();
	handler = PG_GETARG_OID(1);
	check_function(handler, false, name);
	check_owner_rights(owner, handler, !async);
	if (!PG_ARGISNULL(5))
	{
		reset = PG_GETARG_OID(5);
		check_function(reset, true, name);
		check_owner_rights(owner, reset, !async);
	}
	if (!async && beginning)
		check_replay_possible(name);
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
	if (es_projection_registry_exec("INSERT INTO event_store.projections "
									"  (name, handler, reset, event_types, categories, mode, on_error, owner, "
									"   search_path, state, position, log_identity) "
									"SELECT $1, $2, $3, $4, $5, $6, $7, $8::pg_catalog.regrole, $9, $10, $11, i.id "
									"  FROM event_store.log_identity i "
									"ON CONFLICT (name) DO NOTHING",
									11, argtypes, args, nulls) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_ES_PROJECTION_EXISTS),
				 errmsg("projection \"%s\" already exists", name),
				 errhint("Drop it first, or choose another name.")));
	SPI_finish();
	CacheInvalidateRelcacheByRelid(registry());
	CommandCounterIncrement();
	changed_at_commit = true;

	if (!async && beginning)
	{
		EsProjection p;

		read_or_fail(name, &p);
		(void) replay_log(&p);
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
	const char *name = projection_name_arg(fcinfo);
	EsProjection p;
	Datum		args[1];
	Oid			types[1] = {TEXTOID};

	require_registry();
	if (!es_projection_read(name, false, &p))
		PG_RETURN_BOOL(false);
	check_owner(&p);
	(void) es_projection_lock(name, true);
	args[0] = CStringGetTextDatum(name);
	SPI_connect();
	es_projection_registry_exec("DELETE FROM event_store.projections WHERE name OPERATOR(pg_catalog.=) $1",
								1, types, args, NULL);
	SPI_finish();
	CacheInvalidateRelcacheByRelid(registry());
	changed_at_commit = true;
	PG_RETURN_BOOL(true);
}

/* Read, check the owner, lock, read again (the row may have changed while we waited). */
static void
lock_for_change(const char *name, EsProjection *p)
{
	require_registry();
	read_or_fail(name, p);
	check_owner(p);
	(void) es_projection_lock(name, true);
	read_or_fail(name, p);
}

/* Set the projection's state (and clear its retry schedule). */
static void
set_state(const char *name, const char *state)
{
	Datum		args[2];
	Oid			types[2] = {TEXTOID, TEXTOID};

	args[0] = CStringGetTextDatum(name);
	args[1] = CStringGetTextDatum(state);
	SPI_connect();
	es_projection_registry_exec("UPDATE event_store.projections SET state = $2, retries = 0, retry_at = NULL "
								" WHERE name OPERATOR(pg_catalog.=) $1",
								2, types, args, NULL);
	SPI_finish();
	changed_at_commit = true;
}

/* pause_projection(name) RETURNS void: the workers leave it alone until resumed. */
Datum
event_store_pause_projection(PG_FUNCTION_ARGS)
{
	const char *name = projection_name_arg(fcinfo);
	EsProjection p;

	lock_for_change(name, &p);
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
	const char *name = projection_name_arg(fcinfo);
	EsProjection p;

	lock_for_change(name, &p);
	check_not_restored(&p);
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
	const char *name = projection_name_arg(fcinfo);
	EsProjection p;
	Datum		args[2];
	Oid			types[2] = {TEXTOID, INT8OID};

	lock_for_change(name, &p);
	if (p.reset_signature == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_ES_PROJECTION_STATE),
				 errmsg("projection \"%s\" has no reset function", name),
				 errdetail("A rebuild applies every event again; without a reset the read model would count them twice."),
				 errhint("Drop the projection and create it again with reset => a function that empties its tables.")));
	if (p.inline_mode)
	{
		EsHandler	h;

		check_replay_possible(name);
		es_projection_resolve(&p, &h);	/* its owner's rights, before any lock */
		LockRelationOid(es_catalog()->events_relid, ShareRowExclusiveLock);
	}
	else
		es_require_pipeline();
	call_reset(&p);

	args[0] = CStringGetTextDatum(name);
	SPI_connect();
	es_projection_registry_exec("DELETE FROM event_store.projection_parked WHERE projection OPERATOR(pg_catalog.=) $1",
								1, types, args, NULL);
	args[1] = Int64GetDatum(p.inline_mode ? 0 : es_latest_log_head());
	es_projection_registry_exec("UPDATE event_store.projections p "
								"   SET state = CASE WHEN p.mode OPERATOR(pg_catalog.=) 'inline' THEN 'live' ELSE 'rebuilding' END, "
								"       position = CASE WHEN p.mode OPERATOR(pg_catalog.=) 'inline' THEN NULL ELSE 0 END, "
								"       rebuild_total = CASE WHEN p.mode OPERATOR(pg_catalog.=) 'inline' THEN NULL ELSE $2 END, "
								"       events_applied = 0, retries = 0, retry_at = NULL, "
								"       incarnation = pg_catalog.gen_random_uuid(), "
								"       log_identity = (SELECT i.id FROM event_store.log_identity i) "
								" WHERE p.name OPERATOR(pg_catalog.=) $1",
								2, types, args, NULL);
	SPI_finish();
	CacheInvalidateRelcacheByRelid(registry());	/* a restored inline projection applies again */
	CommandCounterIncrement();
	changed_at_commit = true;
	if (p.inline_mode)
		(void) replay_log(&p);
	PG_RETURN_VOID();
}

/*
 * replay_parked(name) RETURNS bigint: apply the projection's parked events
 * again, oldest position first, in this transaction, as its owner; those
 * that succeed are removed from the parked list, the others stay with their
 * new error.  Returns how many succeeded.
 */
Datum
event_store_replay_parked(PG_FUNCTION_ARGS)
{
	const char *name = projection_name_arg(fcinfo);
	EsProjection p;
	EsHandler	h;
	Datum		args[3];
	Oid			types[3] = {TEXTOID, TEXTOID, INT8OID};
	MemoryContext caller = CurrentMemoryContext;
	int			n;
	int			i;
	int64		replayed = 0;
	Datum	   *streams;
	int64	   *versions;
	int64	   *positions;

	lock_for_change(name, &p);
	check_not_restored(&p);
	es_projection_resolve(&p, &h);
	args[0] = CStringGetTextDatum(name);
	SPI_connect();
	n = es_projection_registry_exec("SELECT k.stream_id, k.stream_version, COALESCE(k.global_position, g.global_position) "
									"  FROM event_store.projection_parked k "
									"  LEFT JOIN event_store.global_log g "
									"    ON g.stream_id OPERATOR(pg_catalog.=) k.stream_id "
									"   AND g.stream_version OPERATOR(pg_catalog.=) k.stream_version "
									" WHERE k.projection OPERATOR(pg_catalog.=) $1 "
									" ORDER BY 3 NULLS LAST, k.parked_at, k.stream_id, k.stream_version",
									1, types, args, NULL);
	streams = MemoryContextAlloc(caller, sizeof(Datum) * Max(n, 1));
	versions = MemoryContextAlloc(caller, sizeof(int64) * Max(n, 1));
	positions = MemoryContextAlloc(caller, sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		bool		isnull;
		HeapTuple	tup = SPI_tuptable->vals[i];
		Datum		d;
		MemoryContext spi;

		d = SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull);
		spi = MemoryContextSwitchTo(caller);
		streams[i] = PointerGetDatum(DatumGetTextPCopy(d));
		MemoryContextSwitchTo(spi);
		versions[i] = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
		d = SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull);
		positions[i] = isnull ? 0 : DatumGetInt64(d);
	}
	SPI_finish();
	MemoryContextSwitchTo(caller);

	for (i = 0; i < n; i++)
	{
		ResourceOwner owner = CurrentResourceOwner;
		EsProjectionEvent ev;
		volatile Datum event_type = (Datum) 0;

		ev.projection = name;
		ev.position = positions[i];
		ev.stream_id = streams[i];
		ev.stream_version = versions[i];
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(caller);
		PG_TRY();
		{
			EsAsOwner	save;
			EsStreamScan *s;
			bool		found;

			es_projection_enter(&p, &save);
			s = es_stream_scan_begin(DatumGetTextPP(streams[i]), versions[i], versions[i], false,
									 NULL, 1, GetActiveSnapshot());
			found = es_stream_scan_next(s);
			if (found)
			{
				event_type = PointerGetDatum(DatumGetTextPCopy(s->values[Anum_events_event_type]));
				s->values[0] = Int64GetDatum(positions[i]);
				s->nulls[0] = positions[i] == 0;
				es_projection_call(&p, &h, &ev, s->values, s->nulls);
			}
			es_stream_scan_end(s);
			es_projection_leave(&save);
			args[1] = streams[i];
			args[2] = Int64GetDatum(versions[i]);
			SPI_connect();
			es_projection_registry_exec("DELETE FROM event_store.projection_parked "
										" WHERE projection OPERATOR(pg_catalog.=) $1 "
										"   AND stream_id OPERATOR(pg_catalog.=) $2 "
										"   AND stream_version OPERATOR(pg_catalog.=) $3",
										3, types, args, NULL);
			SPI_finish();
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(caller);
			CurrentResourceOwner = owner;
			if (found)
				replayed++;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(caller);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(caller);
			CurrentResourceOwner = owner;
			park_event(name, streams[i], versions[i], positions[i],
					   event_type != (Datum) 0 ? event_type : CStringGetTextDatum(""), edata);
		}
		PG_END_TRY();
	}
	PG_RETURN_INT64(replayed);
}

/*
 * discard_parked(name, stream_id, stream_version) RETURNS bigint: forget the
 * projection's parked events (all, a stream's, or one); returns how many.
 */
Datum
event_store_discard_parked(PG_FUNCTION_ARGS)
{
	const char *name = projection_name_arg(fcinfo);
	EsProjection p;
	Datum		args[3];
	char		nulls[3] = {' ', 'n', 'n'};
	Oid			types[3] = {TEXTOID, TEXTOID, INT8OID};
	int			n;

	if (PG_ARGISNULL(1) && !PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream_version needs a stream_id"),
				 errhint("Pass the stream of the parked event too.")));
	lock_for_change(name, &p);
	args[0] = CStringGetTextDatum(name);
	if (!PG_ARGISNULL(1))
	{
		args[1] = PointerGetDatum(es_identifier_arg(fcinfo, 1, "stream_id"));
		nulls[1] = ' ';
	}
	if (!PG_ARGISNULL(2))
	{
		args[2] = PG_GETARG_DATUM(2);
		nulls[2] = ' ';
	}
	SPI_connect();
	n = es_projection_registry_exec("DELETE FROM event_store.projection_parked "
									" WHERE projection OPERATOR(pg_catalog.=) $1 "
									"   AND ($2 IS NULL OR stream_id OPERATOR(pg_catalog.=) $2) "
									"   AND ($3::pg_catalog.int8 IS NULL OR stream_version OPERATOR(pg_catalog.=) $3)",
									3, types, args, nulls);
	SPI_finish();
	PG_RETURN_INT64(n);
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
	const char *name = projection_name_arg(fcinfo);
	EsProjection p;
	TimestampTz deadline;
	int64		head;
	bool		done = false;

	es_require_arg(fcinfo, 1, "timeout");
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										   es_interval_ms(PG_GETARG_INTERVAL_P(1), "timeout"));
	require_registry();
	read_or_fail(name, &p);
	check_not_restored(&p);
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
