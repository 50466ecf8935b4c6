/*-------------------------------------------------------------------------
 *
 * upcast_registry.c
 *	  add_upcaster() and drop_upcaster(): the functions that change the
 *	  upcaster registry, event_store.upcasters.
 *
 * A step from version n to n + 1 of a type must extend its chain without a
 * hole, and only the last step of a chain can be dropped.  The registry is
 * written by these functions only, as the extension's owner
 * (ES_RUN_AS_OWNER): nobody else has a right to write it, so no row skips
 * their checks or their invalidation, which every backend receives at
 * commit (upcast.c rebuilds its cache).
 *
 * Locking: both take ShareRowExclusiveLock on the registry, so that two
 * sessions cannot both check and extend a chain, and check with a snapshot
 * taken after the lock (ES_RUN_LATEST), whatever the isolation level.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "upcast.h"

PG_FUNCTION_INFO_V1(event_store_add_upcaster);
PG_FUNCTION_INFO_V1(event_store_drop_upcaster);

/* The statements, each run as the extension's owner. */
static EsStatement step_exists = ES_STATEMENT(
	"SELECT 1::pg_catalog.int8 FROM event_store.upcasters "
	"WHERE event_type OPERATOR(pg_catalog.=) $1 "
	"AND from_schema_version OPERATOR(pg_catalog.=) $2",
	2, TEXTOID, INT4OID);

/* the newest version of a type so far: where its steps, and renames into it, lead */
static EsStatement chain_end = ES_STATEMENT(
	"SELECT coalesce(pg_catalog.max(from_schema_version) OPERATOR(pg_catalog.+) 1, 1)::pg_catalog.int8 "
	"FROM event_store.upcasters "
	"WHERE event_type OPERATOR(pg_catalog.=) $1 "
	"OR to_event_type OPERATOR(pg_catalog.=) $1",
	1, TEXTOID);

/* a later step of the type, or of a type the step renames into, that dropping it would cut off */
static EsStatement later_step = ES_STATEMENT(
	"SELECT 1::pg_catalog.int8 FROM event_store.upcasters u, event_store.upcasters s "
	"WHERE s.event_type OPERATOR(pg_catalog.=) $1 "
	"AND s.from_schema_version OPERATOR(pg_catalog.=) $2 "
	"AND u.event_type OPERATOR(pg_catalog.=) coalesce(s.to_event_type, s.event_type) "
	"AND u.from_schema_version OPERATOR(pg_catalog.=) ($2 OPERATOR(pg_catalog.+) 1)",
	2, TEXTOID, INT4OID);

static EsStatement insert_step = ES_STATEMENT(
	"INSERT INTO event_store.upcasters "
	"(event_type, from_schema_version, upcaster, to_event_type) "
	"VALUES ($1, $2, $3, $4)",
	4, TEXTOID, INT4OID, TEXTOID, TEXTOID);

static EsStatement delete_step = ES_STATEMENT(
	"DELETE FROM event_store.upcasters "
	"WHERE event_type OPERATOR(pg_catalog.=) $1 "
	"AND from_schema_version OPERATOR(pg_catalog.=) $2",
	2, TEXTOID, INT4OID);

/*
 * Check that a function is (jsonb) RETURNS jsonb, and that the caller may
 * execute it.
 */
static void
check_upcaster_function(Oid fn)
{
	if (!SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(fn)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", fn)));
	if (!es_function_fits(fn, &es_upcaster_shape))
		ereport(ERROR,
				(errcode(ERRCODE_ES_UPCASTER_SIGNATURE),
				 errmsg("upcaster %s must take one jsonb argument and return jsonb",
						format_procedure(fn)),
				 errhint("Write it as CREATE FUNCTION f(data jsonb) RETURNS jsonb.")));
	es_check_execute(fn);
}

/*
 * Run a query on the registry and return the first column of its first row
 * as an int8 (or -1 when there is none).  It reads with a snapshot taken
 * now, after the caller locked the registry, so that a change another
 * session committed while we waited for the lock is seen, whatever the
 * isolation level.
 */
static int64
registry_probe(EsStatement *st, Datum *values)
{
	int64		result = -1;

	if (es_run(st, values, NULL, ES_RUN_AS_OWNER | ES_RUN_READ_ONLY | ES_RUN_LATEST, 1,
			   SPI_OK_SELECT) > 0)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			result = DatumGetInt64(d);
	}
	return result;
}

/* The registry, locked against the other writers. */
static Relation
open_registry(void)
{
	return table_open(es_catalog()->upcasters_relid, ShareRowExclusiveLock);
}

/*
 * A step goes from version n to n + 1: n is between 1 and INT32_MAX - 1.
 */
static void
check_from_version(int32 from)
{
	if (from < 1 || from == PG_INT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("from_schema_version must be between 1 and %d", PG_INT32_MAX - 1),
				 errdetail("Got %d.", from)));
}

/*
 * add_upcaster(event_type, from_schema_version, upcaster, to_event_type)
 * registers the step from version n to n + 1 of a type.  It must extend a
 * chain without a hole: n = 1, or version n of the type exists (a step to
 * it, of the type or renamed into it).  A step already registered for (type,
 * n) is a conflict: drop it first to replace it.
 */
Datum
event_store_add_upcaster(PG_FUNCTION_ARGS)
{
	text	   *type;
	int32		from;
	Oid			fn;
	bool		renames = !PG_ARGISNULL(3);
	Datum		args[2];
	Datum		ins[4];
	char		ins_nulls[4] = {' ', ' ', ' ', ' '};
	Relation	rel;
	int64		current;

	type = es_identifier_arg(fcinfo, 0, "event_type");
	es_require_arg(fcinfo, 1, "from_schema_version");
	es_require_arg(fcinfo, 2, "upcaster");
	from = PG_GETARG_INT32(1);
	fn = PG_GETARG_OID(2);
	if (renames)
		(void) es_identifier_arg(fcinfo, 3, "to_event_type");
	check_from_version(from);
	check_upcaster_function(fn);

	rel = open_registry();

	SPI_connect();
	args[0] = PointerGetDatum(type);
	args[1] = Int32GetDatum(from);
	if (registry_probe(&step_exists, args) >= 0)
		ereport(ERROR,
				(errcode(ERRCODE_ES_UPCASTER_CONFLICT),
				 errmsg("an upcaster from schema version %d of event type \"%s\" is already registered",
						from, text_to_cstring(type)),
				 errhint("Drop it with event_store.drop_upcaster() first to replace it.")));

	current = registry_probe(&chain_end, args);
	if (from > current)
		ereport(ERROR,
				(errcode(ERRCODE_ES_UPCASTER_CONFLICT),
				 errmsg("upcaster from schema version %d of event type \"%s\" would leave a hole in its chain",
						from, text_to_cstring(type)),
				 errdetail("The chain of \"%s\" reaches schema version " INT64_FORMAT ".",
						   text_to_cstring(type), current),
				 errhint("Register the step from version " INT64_FORMAT " first.", current)));

	ins[0] = PointerGetDatum(type);
	ins[1] = Int32GetDatum(from);
	ins[2] = CStringGetTextDatum(format_procedure_qualified(fn));
	ins[3] = renames ? PG_GETARG_DATUM(3) : (Datum) 0;
	ins_nulls[3] = renames ? ' ' : 'n';
	es_run(&insert_step, ins, ins_nulls, ES_RUN_AS_OWNER, 0, SPI_OK_INSERT);
	SPI_finish();

	CacheInvalidateRelcache(rel);
	table_close(rel, NoLock);
	PG_RETURN_VOID();
}

/*
 * drop_upcaster(event_type, from_schema_version): remove a step.  Only the
 * last step of a chain can go (removing another would leave a hole).
 * Returns whether there was one.
 */
Datum
event_store_drop_upcaster(PG_FUNCTION_ARGS)
{
	text	   *type = es_identifier_arg(fcinfo, 0, "event_type");
	int32		from;
	Datum		args[2];
	Relation	rel;
	bool		dropped;

	es_require_arg(fcinfo, 1, "from_schema_version");
	from = PG_GETARG_INT32(1);
	check_from_version(from);
	rel = open_registry();

	SPI_connect();
	args[0] = PointerGetDatum(type);
	args[1] = Int32GetDatum(from);
	if (registry_probe(&later_step, args) >= 0)
		ereport(ERROR,
				(errcode(ERRCODE_ES_UPCASTER_CONFLICT),
				 errmsg("upcaster from schema version %d of event type \"%s\" is not the last step of its chain",
						from, text_to_cstring(type)),
				 errhint("Drop the later steps first.")));
	dropped = es_run(&delete_step, args, NULL, ES_RUN_AS_OWNER, 0, SPI_OK_DELETE) > 0;
	SPI_finish();

	CacheInvalidateRelcache(rel);
	table_close(rel, NoLock);
	PG_RETURN_BOOL(dropped);
}

