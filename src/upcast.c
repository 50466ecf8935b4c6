/*-------------------------------------------------------------------------
 *
 * upcast.c
 *	  Schema evolution: the upcaster registry's per-backend cache, the
 *	  upcasting of events on every read path, and the C hook.  The
 *	  functions that change the registry are in upcast_registry.c.
 *
 * An upcaster turns the data of an event of type T at schema version n into
 * version n + 1, optionally renaming the type; steps chain.  The registry
 * (event_store.upcasters) is read like a catalog: with the catalog snapshot
 * (the historic one inside logical decoding, which is why the table is a
 * user_catalog_table), into a per-backend hash table keyed by event type.
 * add_upcaster() and drop_upcaster() send a relcache invalidation for the
 * table, which every backend receives at commit (catalog.c calls
 * invalidate_registry); the cache is then rebuilt on its next use.  With an empty registry and no hook, upcasting an event
 * costs one test of a flag.
 *
 * The registry is written by add_upcaster() and drop_upcaster() only
 * (upcast_registry.c), as the extension's owner: a row the owner writes by
 * hand breaks only the events that need it (load_registry).
 *
 * Locking: reads take AccessShareLock on the registry, as the catalog
 * would.
 *
 * Calling a step: through an FmgrInfo of the step's own, kept with the cache,
 * in which the function keeps what it caches between calls (a SQL function
 * its plans and the state of the statement it is running, PL/pgSQL a pointer
 * to its compiled body).  A step's function can run inside itself: an
 * upcaster that reads the log (event_store.read_stream(), load_aggregate())
 * reads events that are upcast too, by the same step when they are of the
 * same type and version.  A SQL function's state cannot serve two calls at
 * once, so each depth of such nesting calls through an FmgrInfo of its own
 * (UpcastCall); the calls are set up when first needed.  A call that ends in
 * an error may leave that state half-run (its executor's resources released
 * by the abort), so its FmgrInfo is not used again: the next call at that
 * depth, which comes after the (sub)transaction's abort, frees it and sets
 * up another.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "read.h"
#include "upcast.h"

PG_FUNCTION_INFO_V1(event_store_current_schema_version);

/* The public hook and what it does (event_store.h). */
event_store_upcast_hook_type event_store_upcast_hook = NULL;
uint64		event_store_upcast_hook_fingerprint = 0;

/* An upcaster: a plain function (data jsonb) RETURNS jsonb. */
const EsFunctionShape es_upcaster_shape = {
	"upcaster", "(data jsonb) RETURNS jsonb", 1, {JSONBOID}, JSONBOID
};

/*
 * An FmgrInfo through which a step's function is called, at one depth of
 * nesting, in a memory context of its own (its fn_mcxt, and where the struct
 * itself lives), so that it can be thrown away with what the function keeps
 * in it.
 */
typedef struct UpcastCall
{
	FmgrInfo	flinfo;
	MemoryContext cxt;
	bool		spoiled;		/* a call through it ended in an error */
} UpcastCall;

/* One step of a chain. */
typedef struct UpcastStep
{
	int32		from_version;
	Oid			fn;
	char	   *signature;		/* as registered */
	bool		missing;		/* the function no longer exists (dropped, renamed) */
	bool		broken;			/* the step no longer fits (or is missing) */
	char	   *to_type;		/* NULL: the type stays */
	MemoryContext cxt;			/* the cache's context the step is in */
	int			depth;			/* calls of the step in progress */
	int			ncalls;			/* length of calls */
	UpcastCall **calls;			/* calls[d]: for a call at depth d, or NULL */
} UpcastStep;

/*
 * Everything known about one event type, the hash table's entry.  The steps
 * are kept sorted by from_version and looked up by binary search, so that
 * the registry's rows, whatever they hold, cost memory in proportion to
 * their number (a row written around add_upcaster may leave a hole).
 */
typedef struct TypeEntry
{
	char		event_type[ES_MAX_ID_BYTES + 1];	/* key */
	int32		current_version;	/* the newest schema version of the type */
	int			nsteps;
	int			maxsteps;
	UpcastStep *steps;
} TypeEntry;

/*
 * The cache lives in registry_context.  A rebuild makes a new context; the old
 * one is freed at once unless a chain is being applied (registry_pins > 0),
 * in which case it waits in retired_contexts until the last pin goes: an
 * upcaster may itself cause a rebuild while its FmgrInfo is in use.  When the
 * last pin goes with an error, the retired contexts wait for the next read
 * (free_retired_contexts): the FmgrInfos in them may hold the state of calls
 * the error interrupted, which is freed after the abort, not before.
 */
static MemoryContext registry_context = NULL;
static MemoryContext retired_contexts = NULL;
static int	registry_pins = 0;
static HTAB *registry = NULL;
static bool registry_valid = false;
static uint64 registry_invalidations = 0;
static bool registry_empty = true;
static uint64 registry_fingerprint = 0;

/* The entry of the last type looked up: streams repeat their types. */
static TypeEntry *last_entry = NULL;
static char last_type[ES_MAX_ID_BYTES + 1];
static int	last_type_len = -1;

/*
 * Drop the cache when the registry changes (or every relcache entry is
 * invalidated).  The rebuild is lazy: a chain being applied right now keeps
 * the steps it started with.
 */
static void
invalidate_registry(void)
{
	registry_valid = false;
	registry_invalidations++;
}

/*
 * A function changed (CREATE OR REPLACE, DROP, ALTER): recheck the steps.
 */
static void
invalidate_registry_functions(void)
{
	if (!registry_empty)
		invalidate_registry();
}

/*
 * Called once per process from _PG_init.
 */
void
es_upcast_init(void)
{
	ES_WATCH_RELATION(upcasters_relid, invalidate_registry);
	es_watch_syscache(PROCOID, invalidate_registry_functions);
}

/*
 * The entry of a type, created empty when absent.
 */
static TypeEntry *
type_entry(const char *event_type, bool create)
{
	bool		found;
	TypeEntry  *e = hash_search(registry, event_type, create ? HASH_ENTER : HASH_FIND, &found);

	if (create && !found)
	{
		e->current_version = 1;
		e->nsteps = 0;
		e->maxsteps = 0;
		e->steps = NULL;
	}
	return e;
}

/*
 * What a function does, as far as the catalog tells: its language, source
 * (or C symbol and library), settings and security mode.  Part of the
 * registry's fingerprint, so that replacing an upcaster's body (CREATE OR
 * REPLACE FUNCTION, or drop and create under the same signature) changes it
 * and the snapshots folded under the old body are no longer used.
 */
static uint64
function_fingerprint(Oid fn)
{
	HeapTuple	tp = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	Form_pg_proc proc;
	uint64		h;
	bool		isnull;
	Datum		d;
	char	   *lang;
	static const int attrs[3] = {Anum_pg_proc_prosrc, Anum_pg_proc_probin, Anum_pg_proc_proconfig};
	int			i;

	if (!HeapTupleIsValid(tp))
		return 0;
	proc = (Form_pg_proc) GETSTRUCT(tp);
	lang = get_language_name(proc->prolang, true);
	h = hash_bytes_extended((const unsigned char *) (lang ? lang : ""), lang ? strlen(lang) : 0,
							proc->prosecdef ? 1 : 0);
	for (i = 0; i < 3; i++)
	{
		d = SysCacheGetAttr(PROCOID, tp, attrs[i], &isnull);
		if (!isnull)
		{
			struct varlena *v = PG_DETOAST_DATUM_PACKED(d);

			h = hash_combine64(h, hash_bytes_extended((const unsigned char *) VARDATA_ANY(v),
													  VARSIZE_ANY_EXHDR(v), i + 1));
		}
		else
			h = hash_combine64(h, i + 1);
	}
	ReleaseSysCache(tp);
	return h;
}

/*
 * The step of an entry that upcasts from version v, or NULL.
 */
static UpcastStep *
find_step(TypeEntry *e, int32 v)
{
	int			lo = 0;
	int			hi = e->nsteps - 1;

	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (e->steps[mid].from_version == v)
			return &e->steps[mid];
		if (e->steps[mid].from_version < v)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return NULL;
}

static int
step_cmp(const void *a, const void *b)
{
	int32		x = ((const UpcastStep *) a)->from_version;
	int32		y = ((const UpcastStep *) b)->from_version;

	return (x > y) - (x < y);
}

/*
 * Free the retired caches, unless a chain is being applied.
 */
static void
free_retired_contexts(void)
{
	if (registry_pins == 0 && retired_contexts != NULL)
	{
		MemoryContextDelete(retired_contexts);
		retired_contexts = NULL;
	}
}

/*
 * Give up the cache's memory, now or when the last pin goes.
 */
static void
retire_registry_context(void)
{
	free_retired_contexts();
	if (registry_context == NULL)
		return;
	if (registry_pins == 0)
		MemoryContextDelete(registry_context);
	else
	{
		if (retired_contexts == NULL)
			retired_contexts = AllocSetContextCreate(CacheMemoryContext,
													 "event_store retired upcasters",
													 ALLOCSET_SMALL_SIZES);
		MemoryContextSetParent(registry_context, retired_contexts);
	}
	registry_context = NULL;
}

/*
 * (Re)build the cache from the registry, read with the catalog snapshot.
 * A function that is missing or no longer fits, or a signature that is no
 * signature, marks its step broken (an error when an event needs it) rather
 * than failing every read; a row no event can need (a type longer than any
 * event's, a version no chain reaches) is left out.  add_upcaster() writes
 * no such row, but the owner could.
 */
static void
load_registry(void)
{
	uint64		invalidations = registry_invalidations;
	HASHCTL		ctl;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tuple;
	MemoryContext old;
	const EsCatalog *cat;

	retire_registry_context();
	registry = NULL;
	last_entry = NULL;
	last_type_len = -1;
	registry_empty = true;
	registry_fingerprint = 0;

	cat = es_catalog_if_installed();
	if (cat == NULL)
	{
		registry_valid = (invalidations == registry_invalidations);
		return;
	}

	registry_context = AllocSetContextCreate(CacheMemoryContext, "event_store upcasters",
											 ALLOCSET_SMALL_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = ES_MAX_ID_BYTES + 1;
	ctl.entrysize = sizeof(TypeEntry);
	ctl.hcxt = registry_context;
	registry = hash_create("event_store upcasters", 16, &ctl,
						   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	old = MemoryContextSwitchTo(registry_context);
	rel = table_open(cat->upcasters_relid, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		Datum		v[Natts_upcasters];
		bool		n[Natts_upcasters];
		char	   *type;
		char	   *to_type = NULL;
		char	   *signature;
		int32		from;
		Oid			fn;
		TypeEntry  *e;
		UpcastStep *step;

		es_deform_row(tuple, RelationGetDescr(rel), Natts_upcasters, v, n);
		if (n[Anum_upcasters_event_type - 1] || n[Anum_upcasters_from_version - 1] ||
			n[Anum_upcasters_upcaster - 1])
			continue;
		type = TextDatumGetCString(v[Anum_upcasters_event_type - 1]);
		from = DatumGetInt32(v[Anum_upcasters_from_version - 1]);
		if (strlen(type) > ES_MAX_ID_BYTES || from < 1 || from == PG_INT32_MAX)
			continue;
		signature = TextDatumGetCString(v[Anum_upcasters_upcaster - 1]);
		/* the signature, resolved now: InvalidOid when the function is gone */
		fn = es_resolve_function(signature, &es_upcaster_shape);
		if (!n[Anum_upcasters_to_event_type - 1])
			to_type = TextDatumGetCString(v[Anum_upcasters_to_event_type - 1]);

		e = type_entry(type, true);
		if (e->nsteps == e->maxsteps)
		{
			e->maxsteps = Max(4, 2 * e->maxsteps);
			e->steps = e->steps ? repalloc(e->steps, sizeof(UpcastStep) * e->maxsteps)
				: palloc(sizeof(UpcastStep) * e->maxsteps);
		}
		step = &e->steps[e->nsteps++];
		memset(step, 0, sizeof(UpcastStep));
		step->from_version = from;
		step->fn = fn;
		step->signature = signature;
		step->to_type = to_type;
		step->missing = !OidIsValid(fn);
		step->broken = step->missing || !es_function_fits(fn, &es_upcaster_shape) ||
			(to_type != NULL && (to_type[0] == '\0' || strlen(to_type) > ES_MAX_ID_BYTES));
		step->cxt = registry_context;	/* the calls: when first needed */

		/*
		 * The current version of a type: where its own steps lead, or where a
		 * rename delivers it; a type renamed away stays at the version it had
		 * before the rename (its new events are renamed on read).
		 */
		if (to_type == NULL)
			e->current_version = Max(e->current_version, from + 1);
		else
		{
			TypeEntry  *t;

			e->current_version = Max(e->current_version, from);
			if (!step->broken)
			{
				t = type_entry(to_type, true);
				t->current_version = Max(t->current_version, from + 1);
			}
		}

		/*
		 * Order-insensitive (heap order must not matter).  The step's
		 * function is in it by signature and by definition (see
		 * function_fingerprint).
		 */
		registry_fingerprint +=
			hash_bytes_extended((const unsigned char *) type, strlen(type), from) ^
			hash_bytes_extended((const unsigned char *) signature, strlen(signature), 0) ^
			(to_type ? hash_bytes_extended((const unsigned char *) to_type, strlen(to_type), 1) : 0) ^
			(step->broken ? 0 : function_fingerprint(fn));
		registry_empty = false;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	MemoryContextSwitchTo(old);

	/* each type's steps in version order, for find_step */
	{
		HASH_SEQ_STATUS st;
		TypeEntry  *e;

		hash_seq_init(&st, registry);
		while ((e = hash_seq_search(&st)) != NULL)
			if (e->nsteps > 1)
				qsort(e->steps, e->nsteps, sizeof(UpcastStep), step_cmp);
	}

	/* valid unless the registry changed while we read it */
	registry_valid = (invalidations == registry_invalidations);
}

static inline void
ensure_registry(void)
{
	if (!registry_valid)
		load_registry();
}

/*
 * The cached entry of a type given as bytes, or NULL when no upcaster
 * concerns it.
 */
static TypeEntry *
find_type(const char *type, int len)
{
	if (len > ES_MAX_ID_BYTES)
		return NULL;
	if (len == last_type_len && memcmp(type, last_type, len) == 0)
		return last_entry;
	memcpy(last_type, type, len);
	last_type[len] = '\0';
	last_type_len = len;
	last_entry = hash_search(registry, last_type, HASH_FIND, NULL);
	return last_entry;
}

/*
 * The current (newest) schema version of an event type: where its upcaster
 * chain ends, or 1.  This is what an append without schema_version records.
 */
int32
es_current_schema_version(text *event_type)
{
	TypeEntry  *e;

	ensure_registry();
	if (registry_empty)
		return 1;
	e = find_type(VARDATA_ANY(event_type), VARSIZE_ANY_EXHDR(event_type));
	return e ? e->current_version : 1;
}

/*
 * A fingerprint of what upcasting does: the registry's content (with the
 * definitions of its functions) and the C hook's declared fingerprint.
 * State folded from events depends on it (snapshots record it, and are
 * ignored when it changed).  Returns false when it cannot be known: a hook is
 * installed that declares no fingerprint.
 */
bool
es_upcast_fingerprint(uint64 *fingerprint)
{
	ensure_registry();
	*fingerprint = registry_fingerprint;
	if (event_store_upcast_hook != NULL)
	{
		if (event_store_upcast_hook_fingerprint == 0)
			return false;
		*fingerprint = hash_combine64(*fingerprint, event_store_upcast_hook_fingerprint);
	}
	return true;
}

/* Error context while an upcaster runs: the event it works on. */
typedef struct UpcastContext
{
	EventStoreUpcastEvent *event;
	int32		from_version;
} UpcastContext;

static void
upcast_error_context(void *arg)
{
	UpcastContext *c = arg;

	errcontext("upcasting event %s version " INT64_FORMAT " (type %s, schema version %d)",
			   text_to_cstring(c->event->stream_id), c->event->stream_version,
			   text_to_cstring(c->event->event_type), c->from_version);
}

/*
 * The FmgrInfo for a call of a step at its current depth, set up if needed.
 */
static UpcastCall *
step_call(UpcastStep *step)
{
	UpcastCall *call;
	MemoryContext cxt;

	if (step->depth == step->ncalls)
	{
		int			n = Max(1, 2 * step->ncalls);

		step->calls = step->calls ?
			repalloc(step->calls, sizeof(UpcastCall *) * n) :
			MemoryContextAlloc(step->cxt, sizeof(UpcastCall *) * n);
		memset(step->calls + step->ncalls, 0, sizeof(UpcastCall *) * (n - step->ncalls));
		step->ncalls = n;
	}
	call = step->calls[step->depth];
	if (call != NULL && !call->spoiled)
		return call;
	if (call != NULL)
	{
		/* after the abort of the call that spoiled it: see the header */
		step->calls[step->depth] = NULL;
		MemoryContextDelete(call->cxt);
	}
	cxt = AllocSetContextCreate(step->cxt, "event_store upcaster call", ALLOCSET_SMALL_SIZES);
	call = MemoryContextAllocZero(cxt, sizeof(UpcastCall));
	call->cxt = cxt;
	call->spoiled = true;		/* until set up */
	step->calls[step->depth] = call;
	fmgr_info_cxt(step->fn, &call->flinfo, cxt);
	call->spoiled = false;
	return call;
}

/*
 * Call a step's function on data, through an FmgrInfo no call in progress
 * uses.
 */
static Datum
call_step(UpcastStep *step, Jsonb *data, bool *isnull)
{
	UpcastCall *volatile call = step_call(step);
	Datum		result;
	LOCAL_FCINFO(fcinfo, 1);

	InitFunctionCallInfoData(*fcinfo, &call->flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = JsonbPGetDatum(data);
	fcinfo->args[0].isnull = false;

	step->depth++;
	PG_TRY();
	{
		result = FunctionCallInvoke(fcinfo);
	}
	PG_CATCH();
	{
		step->depth--;
		call->spoiled = true;
		PG_RE_THROW();
	}
	PG_END_TRY();
	step->depth--;

	*isnull = fcinfo->isnull;
	return result;
}

/*
 * Run the registered chain, then the hook, on one event.
 */
static void
upcast(EventStoreUpcastEvent *ev)
{
	TypeEntry  *e;
	UpcastStep *step;
	UpcastContext ctx;
	ErrorContextCallback errcb;

	if (registry_empty)
		e = NULL;
	else
		e = find_type(VARDATA_ANY(ev->event_type), VARSIZE_ANY_EXHDR(ev->event_type));

	ctx.event = ev;
	ctx.from_version = ev->schema_version;
	errcb.callback = upcast_error_context;
	errcb.arg = &ctx;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	/* versions strictly increase, one step at a time: the loop ends */
	while (e != NULL && ev->schema_version < PG_INT32_MAX &&
		   (step = find_step(e, ev->schema_version)) != NULL)
	{
		Datum		result;
		bool		isnull;
		Jsonb	   *jb;

		ctx.from_version = ev->schema_version;
		if (step->missing)
			ereport(ERROR,
					(errcode(ERRCODE_ES_UPCASTER_MISSING),
					 errmsg("upcaster %s from schema version %d of event type \"%s\" does not exist",
							step->signature, step->from_version, text_to_cstring(ev->event_type)),
					 errdetail("The function was dropped or renamed after the step was registered."),
					 errhint("Create the function again, or register a working step with event_store.drop_upcaster() and event_store.add_upcaster().")));
		if (step->broken)
			ereport(ERROR,
					(errcode(ERRCODE_ES_UPCASTER_SIGNATURE),
					 errmsg("the upcaster from schema version %d of event type \"%s\" no longer takes and returns jsonb",
							step->from_version, text_to_cstring(ev->event_type)),
					 errhint("Register a working step with event_store.drop_upcaster() and event_store.add_upcaster().")));
		result = call_step(step, ev->data, &isnull);
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_ES_UPCASTER_RESULT),
					 errmsg("upcaster %s returned null", format_procedure(step->fn)),
					 errhint("An upcaster returns the event's data in the next schema version, a JSON object.")));
		jb = DatumGetJsonbP(result);
		if (!JB_ROOT_IS_OBJECT(jb))
			ereport(ERROR,
					(errcode(ERRCODE_ES_UPCASTER_RESULT),
					 errmsg("upcaster %s returned a JSON %s, not an object",
							format_procedure(step->fn),
							JB_ROOT_IS_SCALAR(jb) ? "scalar" : "array"),
					 errhint("An upcaster returns the event's data in the next schema version.")));
		ev->data = jb;
		ev->schema_version++;
		if (step->to_type != NULL)
		{
			ev->event_type = cstring_to_text(step->to_type);
			e = find_type(step->to_type, strlen(step->to_type));
		}
	}

	if (event_store_upcast_hook != NULL)
	{
		ctx.from_version = ev->schema_version;
		(*event_store_upcast_hook) (ev);
	}
	error_context_stack = errcb.previous;
}

/*
 * Upcast an event_store.event (values/nulls, Natts_event attributes) in
 * place: a step of es_present_event().
 */
void
es_upcast_event(Datum *values, bool *nulls)
{
	EventStoreUpcastEvent ev;

	ensure_registry();
	if (event_store_upcast_hook == NULL)
	{
		text	   *type;
		TypeEntry  *e;

		if (registry_empty)
			return;

		/*
		 * No step from this event's version: the event as stored, its data
		 * not even detoasted (a compressed payload would be decompressed
		 * for nothing, and every value left as stored lets read_stream copy
		 * the row whole, see scan.c).
		 */
		type = DatumGetTextPP(values[Anum_events_event_type]);
		e = find_type(VARDATA_ANY(type), VARSIZE_ANY_EXHDR(type));
		if (e == NULL || find_step(e, DatumGetInt32(values[Anum_events_schema_version])) == NULL)
			return;
	}

	ev.stream_id = DatumGetTextPP(values[Anum_events_stream_id]);
	ev.stream_version = DatumGetInt64(values[Anum_events_stream_version]);
	ev.event_type = DatumGetTextPP(values[Anum_events_event_type]);
	ev.schema_version = DatumGetInt32(values[Anum_events_schema_version]);
	ev.data = DatumGetJsonbP(values[Anum_events_data]);

	/*
	 * The cache stays alive while the chain runs, even if it is rebuilt
	 * meanwhile; after an error, until the next read.
	 */
	free_retired_contexts();
	registry_pins++;
	PG_TRY();
	{
		upcast(&ev);
	}
	PG_CATCH();
	{
		registry_pins--;
		PG_RE_THROW();
	}
	PG_END_TRY();
	registry_pins--;
	free_retired_contexts();
	values[Anum_events_event_type] = PointerGetDatum(ev.event_type);
	values[Anum_events_schema_version] = Int32GetDatum(ev.schema_version);
	values[Anum_events_data] = JsonbPGetDatum(ev.data);
	(void) nulls;
}

/*
 * current_schema_version(event_type) RETURNS integer
 */
Datum
event_store_current_schema_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(es_current_schema_version(es_identifier_arg(fcinfo, 0, "event_type")));
}
