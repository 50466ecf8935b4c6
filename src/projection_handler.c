/*-------------------------------------------------------------------------
 *
 * projection_handler.c
 *	  Projections: handlers -- resolving them, checking their owner's
 *	  rights, running them as the owner -- and the application of inline
 *	  projections by the BEFORE INSERT trigger.
 *
 * Handlers (and reset functions) run as the projection's owner, the role
 * that created it, inside SECURITY_RESTRICTED_OPERATION (no SET ROLE, no
 * temporary objects) and a GUC nest level that undoes whatever they set,
 * with the search_path of the session that created the projection (as SET
 * search_path FROM CURRENT would).  Every run re-checks that the owner may
 * EXECUTE the handler and SELECT the event table and the global log: a
 * projection is a way of reading events, so it cannot read more than its
 * owner may.  The events it is handed are presented as its owner would read
 * them (upcast; protected fields in clear only with personal_data_access()).
 *
 * Inline projections are applied by the trigger (es_apply_inline), inside
 * the appending transaction: the read model is right before that
 * transaction commits, and rolled back with it.  They are loaded from the
 * registry once per invalidation (catalog.c calls es_projection_inline_reset
 * when the registry, a function, a role or a grant changed); a handler can
 * cause a reload while it runs, so each load is a set of its own, freed
 * only once no es_apply_inline() uses it.
 *
 * Locking: a catch-up replays the log under ShareRowExclusiveLock on
 * event_store.events, which the caller (create, rebuild) takes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "pipeline.h"
#include "projection.h"
#include "read.h"

/*
 * The shape of a handler, (e event_store.event) RETURNS void, or of a reset
 * function, () RETURNS void.
 */
static void
function_shape(bool reset, EsFunctionShape *shape)
{
	shape->role = reset ? "reset function" : "handler";
	shape->signature = reset ? "() RETURNS void" : "(e event_store.event) RETURNS void";
	shape->nargs = reset ? 0 : 1;
	shape->argtypes[0] = es_catalog()->event_type;
	shape->rettype = VOIDOID;
}

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

static void
release_inline_set(InlineSet *set)
{
	if (set->users == 0 && set->retired)
		MemoryContextDelete(set->cxt);
}

/*
 * The registry, a function, a role or the grants on the event table or the
 * global log changed: load the inline projections again (watched through
 * catalog.c; see es_projection_init).
 */
void
es_projection_inline_reset(void)
{
	inline_valid = false;
}

/*
 * Is fn a plain function taking (event_store.event) (or nothing, for a
 * reset) and returning void?  Raises VE042 otherwise.
 */
void
es_projection_check_function(Oid fn, bool reset, const char *projection)
{
	EsFunctionShape shape;

	function_shape(reset, &shape);
	es_check_function(fn, &shape, ERRCODE_ES_WRONG_HANDLER,
					  psprintf(" of projection \"%s\"", projection));
}

/* Resolve a stored signature; VE043 if the function is gone. */
static Oid
resolve_function(const char *signature, bool reset, const char *projection)
{
	EsFunctionShape shape;
	Oid			fn;

	function_shape(reset, &shape);
	fn = es_resolve_function(signature, &shape);

	if (!OidIsValid(fn))
		ereport(ERROR,
				(errcode(ERRCODE_ES_HANDLER_MISSING),
				 errmsg("%s %s of projection \"%s\" does not exist",
						reset ? "reset function" : "handler", signature, projection),
				 errdetail("The function was dropped or renamed after the projection was created."),
				 errhint("Create the function again, or drop the projection and create it anew.")));
	es_projection_check_function(fn, reset, projection);
	return fn;
}

/*
 * May the owner run the projection?  EXECUTE on the function, SELECT on the
 * event table and the global log (a projection reads the log for its owner).
 */
void
es_projection_check_owner_rights(Oid owner, Oid fn, bool inline_mode)
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
	es_projection_check_owner_rights(p->owner, h->fn, p->inline_mode);
	fmgr_info(h->fn, &h->flinfo);
	h->event_desc = lookup_rowtype_tupdesc_copy(es_catalog()->event_type, -1);
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
void
es_projection_call_reset(const EsProjection *p)
{
	Oid			fn = resolve_function(p->reset_signature, true, p->name);
	EsAsOwner	save;
	FmgrInfo	flinfo;
	LOCAL_FCINFO(fcinfo, 0);

	es_projection_check_owner_rights(p->owner, fn, p->inline_mode);
	fmgr_info(fn, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 0, InvalidOid, NULL, NULL);
	es_projection_enter(p, &save);
	(void) FunctionCallInvoke(fcinfo);	/* returns void: no result to check */
	es_projection_leave(&save);
	CommandCounterIncrement();
}

/*
 * The history can be applied to an inline projection in this transaction (a
 * catch-up, a rebuild) only under READ COMMITTED, where each statement sees
 * the latest commits (a transaction snapshot would miss the appends the lock
 * on the event table waited for, and the reset would leave their effects),
 * and only before the transaction appends anything itself (its own events
 * are not in the log yet).
 */
void
es_projection_check_replay(const char *name)
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

/*
 * Apply every event of the log that the projection's filters select, in
 * log order, to an inline projection, in this transaction, as its owner.
 * The caller holds ShareRowExclusiveLock on the event table, so no append
 * can commit meanwhile; the log is first made complete (every committed
 * event ordered), then read with a fresh snapshot.
 */
int64
es_projection_replay_log(const EsProjection *p)
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
	Oid			relid = es_projection_registry();
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

	/* a restore brings the read models along: the events it loads are in them (restore.c) */
	if (es_restoring)
		return;
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
				EsSubxact	sx;

				/* in `work`, the current context here */
				es_subxact_begin(&sx);
				PG_TRY();
				{
					apply_one_inline(set, ip, &ev, ev_values, ev_nulls);
					es_subxact_commit(&sx);
				}
				PG_CATCH();
				{
					ErrorData  *edata = es_subxact_abort(&sx);

					es_projection_park(ip->def.name, values[Anum_events_stream_id - 1], ev.stream_version, 0,
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
