/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  The extension's objects and their invalidation, and the functions its
 *	  registries name.
 *
 * Every module finds the extension's tables, indexes and types here: their
 * OIDs are looked up by name once per backend (es_catalog), and again after
 * a relcache invalidation of one of them.  The catalog is complete when the
 * objects of the installed version are there; the objects a later version
 * added are InvalidOid while the extension is at an earlier one (a library
 * serves every version from 0.1.0 to its own), and then every relcache
 * invalidation looks again (ALTER EXTENSION UPDATE creates them).  The
 * installed version is checked too: a library older than the installed
 * scripts (a server not restarted after an upgrade of the package) refuses
 * to serve them.
 *
 * The catalog registers the extension's only relcache callback, and one
 * callback per system cache; modules that cache what they derived from the
 * catalog (the upcaster chains, the protection rules and keys, the inline
 * projections, the publish key) register reset functions with it
 * (es_watch_relation, es_watch_syscache).  Postgres allows few callbacks per
 * process, shared with every other extension: one each is our share.
 *
 * Registries keep functions by signature text; es_resolve_function finds
 * the function such a text names, es_check_function checks a function's
 * shape (the same words in every message), es_check_execute the right to
 * call it.
 *
 * Locking: none; the lookups read the system caches.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "internal.h"

/*
 * The objects, by name; `since_0_2`: added by version 0.2.0 (InvalidOid at
 * 0.1.0).  (The log's optional event-type index is not one: the log scan
 * looks it up by name each time, src/scan.c.)
 */
typedef struct EsObject
{
	const char *name;
	size_t		offset;			/* of its OID in EsCatalog */
	bool		since_0_2;
} EsObject;

#define OBJECT(name, field, since_0_2) {name, offsetof(EsCatalog, field), since_0_2}

static const EsObject objects[] = {
	OBJECT("events", events_relid, false),
	OBJECT("events_pkey", stream_index, false),
	OBJECT("events_event_id_key", event_id_index, false),
	OBJECT("global_log", log_relid, false),
	OBJECT("global_log_pkey", log_pkey, false),
	OBJECT("global_log_event_key", log_event_key, false),
	OBJECT("global_log_category_idx", log_category_index, false),
	OBJECT("aggregates", aggregates_relid, false),
	OBJECT("aggregates_pkey", aggregates_pkey, false),
	OBJECT("snapshots", snapshots_relid, false),
	OBJECT("snapshots_pkey", snapshots_pkey, false),
	OBJECT("snapshots_time_idx", snapshots_time_idx, false),
	OBJECT("upcasters", upcasters_relid, false),
	OBJECT("subject_keys", keys_relid, false),
	OBJECT("subject_keys_pkey", keys_pkey, false),
	OBJECT("forgotten_subjects", tomb_relid, false),
	OBJECT("forgotten_subjects_pkey", tomb_pkey, false),
	OBJECT("protected_types", rules_relid, false),
	OBJECT("subject_keys_subject_hash", keys_hash, true),
	OBJECT("key_scrubs", scrubs_relid, true),
	OBJECT("publish_key", publish_key_relid, true),
	OBJECT("projections", projections_relid, true),
	OBJECT("projection_parked", parked_relid, true),
	OBJECT("log_identity", log_identity_relid, true),
};

#define NOBJECTS	lengthof(objects)

#define OBJECT_OID(cat, i)	(*(Oid *) ((char *) (cat) + objects[i].offset))

/*
 * The catalog as last looked up.  `known` keeps the OIDs after an
 * invalidation, until the next lookup replaces them: a later invalidation
 * of one of them must still reach the modules watching it.
 */
static EsCatalog known;
static bool valid = false;
static uint64 generation = 0;
static bool complete = false;	/* every object of version 0.2.0 is there */
static bool loaded_historic = false;	/* looked up inside logical decoding */
static bool modes_agree = false;	/* the historic catalog is the present one */

/* Reset functions. */
#define MAX_WATCHERS	16

typedef struct RelationWatcher
{
	size_t		offset;
	EsResetFunction fn;
} RelationWatcher;

typedef struct SyscacheWatcher
{
	int			cacheid;
	EsResetFunction fn;
} SyscacheWatcher;

static RelationWatcher relation_watchers[MAX_WATCHERS];
static int	nrelation_watchers = 0;
static SyscacheWatcher syscache_watchers[MAX_WATCHERS];
static int	nsyscache_watchers = 0;

/*
 * The relcache callback: a relation changed (InvalidOid: every relation).
 */
static void
catalog_relcache_callback(Datum arg, Oid relid)
{
	int			i;

	(void) arg;
	for (i = 0; i < nrelation_watchers; i++)
	{
		Oid			watched = *(Oid *) ((char *) &known + relation_watchers[i].offset);

		/* a watched relation that is missing may be being created (an update) */
		if (relid == InvalidOid || relid == watched || (!complete && !OidIsValid(watched)))
			relation_watchers[i].fn();
	}
	if (relid == InvalidOid || !complete)
	{
		valid = false;
		return;
	}
	for (i = 0; i < (int) NOBJECTS; i++)
		if (relid == OBJECT_OID(&known, i))
		{
			valid = false;
			return;
		}
}

/*
 * The syscache callback, one registered per cache watched.
 */
static void
catalog_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	int			i;

	(void) arg;
	(void) hashvalue;
	for (i = 0; i < nsyscache_watchers; i++)
		if (syscache_watchers[i].cacheid == cacheid)
			syscache_watchers[i].fn();
}

/*
 * Called once per process from _PG_init, before the modules register.
 */
void
es_catalog_init(void)
{
	CacheRegisterRelcacheCallback(catalog_relcache_callback, (Datum) 0);
}

/*
 * Call fn when the relation whose OID is at field_offset in EsCatalog
 * changes (see internal.h).  From a module's start-up only.
 */
void
es_watch_relation(size_t field_offset, EsResetFunction fn)
{
	if (nrelation_watchers == MAX_WATCHERS)
		elog(ERROR, "too many event_store relation watchers");
	relation_watchers[nrelation_watchers].offset = field_offset;
	relation_watchers[nrelation_watchers].fn = fn;
	nrelation_watchers++;
}

/*
 * Call fn when the system cache changes.  From a module's start-up only.
 */
void
es_watch_syscache(int cacheid, EsResetFunction fn)
{
	int			i;
	bool		registered = false;

	if (nsyscache_watchers == MAX_WATCHERS)
		elog(ERROR, "too many event_store system cache watchers");
	for (i = 0; i < nsyscache_watchers; i++)
		registered |= (syscache_watchers[i].cacheid == cacheid);
	if (!registered)
		CacheRegisterSyscacheCallback(cacheid, catalog_syscache_callback, (Datum) 0);
	syscache_watchers[nsyscache_watchers].cacheid = cacheid;
	syscache_watchers[nsyscache_watchers].fn = fn;
	nsyscache_watchers++;
}

/*
 * Forget what was looked up.
 */
void
es_catalog_reset(void)
{
	valid = false;
}

/*
 * Parse "major.minor.patch" into a comparable number, or -1.
 */
static int64
version_number(const char *v)
{
	int			major,
				minor,
				patch;
	char		rest;

	if (sscanf(v, "%d.%d.%d%c", &major, &minor, &patch, &rest) != 3 ||
		major < 0 || minor < 0 || patch < 0)
		return -1;
	return ((int64) major * 1000 + minor) * 1000 + patch;
}

/*
 * An installed extension's schema and version (from pg_extension), or
 * false if it is not installed.  Readable in logical decoding too.
 */
bool
es_extension(const char *name, Oid *schema, char **version)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum(name));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	found = HeapTupleIsValid(tup);
	if (found && schema)
		*schema = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
	if (found && version)
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion, RelationGetDescr(rel), &isnull);

		*version = isnull ? NULL : TextDatumGetCString(d);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * The installed version of the extension must be one this library serves:
 * 0.1.0 up to its own (EXTVERSION).
 */
static void
check_installed_version(void)
{
	char	   *installed = NULL;

	if (es_extension("event_store", NULL, &installed) && installed != NULL &&
		version_number(installed) > version_number(EXTVERSION))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"event_store\" is installed at version %s, but the loaded library is version %s",
						installed, EXTVERSION),
				 errdetail("A library serves the versions up to its own."),
				 errhint("Restart the server so that it loads the library installed with version %s.",
						 installed)));
}

/*
 * Look the objects up.  Returns false, leaving the catalog invalid, when
 * the extension is not installed (or one of its objects of 0.1.0 is
 * missing).
 */
static bool
load_catalog(void)
{
	EsCatalog	c;
	bool		all = true;
	int			i;

	memset(&c, 0, sizeof(c));
	c.nsp = get_namespace_oid("event_store", true);
	if (!OidIsValid(c.nsp))
		return false;
	for (i = 0; i < (int) NOBJECTS; i++)
	{
		Oid			oid = get_relname_relid(objects[i].name, c.nsp);

		if (!OidIsValid(oid) && !objects[i].since_0_2)
			return false;
		all &= OidIsValid(oid);
		OBJECT_OID(&c, i) = oid;
	}
	c.event_type = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
								   CStringGetDatum("event"), ObjectIdGetDatum(c.nsp));
	if (!OidIsValid(c.event_type))
		return false;
	{
		HeapTuple	tp = SearchSysCache1(RELOID, ObjectIdGetDatum(c.events_relid));

		if (!HeapTupleIsValid(tp))
			return false;
		c.owner = ((Form_pg_class) GETSTRUCT(tp))->relowner;
		ReleaseSysCache(tp);
	}
	check_installed_version();
	known = c;
	complete = all;
	loaded_historic = HistoricSnapshotActive();
	valid = true;
	generation++;
	return true;
}

uint64
es_catalog_generation(void)
{
	return valid ? generation : 0;
}

/*
 * The pipeline worker says whether the historic catalog it decodes with is
 * the present one (no catalog change since the WAL it decodes, worker.c):
 * then one lookup serves both.
 */
void
es_catalog_modes_agree(bool agree)
{
	modes_agree = agree;
}

/*
 * Inside logical decoding the catalog is a historic one, as of the change
 * being decoded: what was looked up there is not for the present, nor the
 * other way round (the pipeline worker does both), unless they agree.
 */
const EsCatalog *
es_catalog_if_installed(void)
{
	if (valid && !modes_agree && loaded_historic != HistoricSnapshotActive())
		valid = false;
	if (!valid && !load_catalog())
		return NULL;
	return &known;
}

const EsCatalog *
es_catalog(void)
{
	const EsCatalog *c = es_catalog_if_installed();

	if (c == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"event_store\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION event_store.")));
	return c;
}

/*
 * Deform a row of one of our tables into values/nulls, which have room for
 * natts columns: the table's own count, which a column added by hand would
 * change (the row is refused rather than overrun the arrays).
 */
void
es_deform_row(HeapTuple tuple, TupleDesc desc, int natts, Datum *values, bool *nulls)
{
	if (desc->natts != natts)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a table of extension \"event_store\" has %d columns where %d were expected",
						desc->natts, natts),
				 errhint("Reinstall the extension; its tables must not be altered.")));
	heap_deform_tuple(tuple, desc, values, nulls);
}

/* ---------------------------------------------------------------------
 * Functions named by signature
 * ---------------------------------------------------------------------
 */

/*
 * Parse one identifier as quote_identifier() writes it: lowercase letters,
 * digits, "_" and "$" (not starting with a digit or "$"), or a double-quoted
 * string with "" for a quote.  Returns the position after it, or NULL.
 */
static const char *
parse_identifier(const char *p, char **out)
{
	StringInfoData buf;

	initStringInfo(&buf);
	if (*p == '"')
	{
		for (p++;; p++)
		{
			if (*p == '\0')
				return NULL;
			if (*p == '"')
			{
				if (p[1] != '"')
					break;
				p++;
			}
			appendStringInfoChar(&buf, *p);
		}
		p++;
	}
	else
	{
		if (!((*p >= 'a' && *p <= 'z') || *p == '_'))
			return NULL;
		while ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '$')
			appendStringInfoChar(&buf, *p++);
	}
	if (buf.len == 0 || buf.len >= NAMEDATALEN)
		return NULL;
	*out = buf.data;
	return p;
}

/*
 * See internal.h.  The text must be exactly schema.name followed by the
 * argument types as format_procedure_qualified() writes them; nothing else
 * is parsed (to_regprocedure() would raise on malformed text in PG15), so
 * that a bad registry row breaks only what needs it.
 */
Oid
es_resolve_function(const char *signature, const EsFunctionShape *shape)
{
	StringInfoData args;
	const char *p = signature;
	char	   *schema;
	char	   *name;
	size_t		rest;
	int			i;

	initStringInfo(&args);
	appendStringInfoChar(&args, '(');
	for (i = 0; i < shape->nargs; i++)
	{
		if (i > 0)
			appendStringInfoChar(&args, ',');
		appendStringInfoString(&args, format_type_be_qualified(shape->argtypes[i]));
	}
	appendStringInfoChar(&args, ')');

	p = parse_identifier(p, &schema);
	if (p == NULL || *p != '.')
		return InvalidOid;
	p = parse_identifier(p + 1, &name);
	if (p == NULL)
		return InvalidOid;
	rest = strlen(p);
	if (rest != (size_t) args.len || memcmp(p, args.data, rest) != 0)
		return InvalidOid;
	return LookupFuncName(list_make2(makeString(schema), makeString(name)),
						  shape->nargs, shape->argtypes, true);
}

/* Does the pg_proc row have the shape? */
static bool
proc_fits(Form_pg_proc proc, const EsFunctionShape *shape)
{
	int			i;

	if (proc->prokind != PROKIND_FUNCTION || proc->proretset ||
		proc->prorettype != shape->rettype || proc->pronargs != shape->nargs)
		return false;
	for (i = 0; i < shape->nargs; i++)
		if (proc->proargtypes.values[i] != shape->argtypes[i])
			return false;
	return true;
}

bool
es_function_fits(Oid fn, const EsFunctionShape *shape)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	bool		fits;

	if (!HeapTupleIsValid(tup))
		return false;
	fits = proc_fits((Form_pg_proc) GETSTRUCT(tup), shape);
	ReleaseSysCache(tup);
	return fits;
}

void
es_check_function(Oid fn, const EsFunctionShape *shape, int sqlstate, const char *of)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	Form_pg_proc proc;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("%s with OID %u does not exist", shape->role, fn)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (!proc_fits(proc, shape))
	{
		StringInfoData args;
		int			i;

		initStringInfo(&args);
		for (i = 0; i < proc->pronargs; i++)
			appendStringInfo(&args, "%s%s", i > 0 ? ", " : "",
							 format_type_be(proc->proargtypes.values[i]));
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("%s %s%s has the wrong signature", shape->role, format_procedure(fn),
						of ? of : ""),
				 errdetail("A %s must be a function %s; this one is a %s taking (%s) and returning %s%s.",
						   shape->role, shape->signature,
						   proc->prokind == PROKIND_FUNCTION ? "function" :
						   proc->prokind == PROKIND_PROCEDURE ? "procedure" :
						   proc->prokind == PROKIND_AGGREGATE ? "aggregate function" : "window function",
						   args.data, proc->proretset ? "SETOF " : "",
						   format_type_be(proc->prorettype))));
	}
	ReleaseSysCache(tup);
}

void
es_check_execute(Oid fn)
{
	AclResult	acl = pg_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE);

	if (acl != ACLCHECK_OK)
		aclcheck_error(acl, OBJECT_FUNCTION, get_func_name(fn));
}
