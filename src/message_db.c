/*-------------------------------------------------------------------------
 *
 * message_db.c
 *	  message_store.get_category_messages of the companion extension
 *	  event_store_message_db (message_db/), whose SQL names this library:
 *	  the log scan of read_all(), each event put into the tuplestore in
 *	  message-db's shape (message_store.message) as it is read.
 *
 * Written in PL/pgSQL, the function ran read_all() and copied its rows, with
 * the conversions, into the tuplestore of RETURN QUERY: every event went
 * through two tuplestores where read_all's caller has one (0.87x read_all's
 * tps with 8 clients).  Here the conversions are made as each event is read,
 * and the rows go into one tuplestore, the function's.
 *
 * Only the common call runs here without SQL: a category, every optional
 * argument NULL, a batch size of -1 or more.  No check of message-db's can
 * fail on it, and nothing is filtered out of the log's rows.  Any other call
 * asks the layer's own PL/pgSQL functions, as the PL/pgSQL version did: the
 * checks and their messages (_category_start), whether read_all's rows can
 * be taken as they are (_category_direct), and if not the filtered read
 * (_category_messages), whose rows are copied.
 *
 * Rights: as before, the caller needs EXECUTE on event_store.read_all,
 * checked here, and the rights read_all needs, checked by the scan; the
 * layer's own functions are called with the caller's rights, through SPI.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "event_store.h"
#include "internal.h"
#include "pipeline.h"
#include "read.h"

PG_FUNCTION_INFO_V1(event_store_mdb_get_category_messages);

/* The arguments of get_category_messages. */
enum
{
	ARG_CATEGORY,
	ARG_POSITION,
	ARG_BATCH_SIZE,
	ARG_CORRELATION,
	ARG_MEMBER,
	ARG_SIZE,
	ARG_CONDITION,
	NARGS
};

/* The columns of message_store.message. */
enum
{
	COL_ID,
	COL_STREAM_NAME,
	COL_TYPE,
	COL_POSITION,
	COL_GLOBAL_POSITION,
	COL_DATA,
	COL_METADATA,
	COL_TIME,
	NCOLS
};

/* The longest category name message_store._category_filter passes on. */
#define MAX_CATEGORY_BYTES	1024

#define CATEGORY_ARGTYPES	VARCHAROID, INT8OID, INT8OID, VARCHAROID, INT8OID, INT8OID, VARCHAROID

static EsStatement start_sql =
ES_STATEMENT("SELECT message_store._category_start($1, $2, $3, $4, $5, $6, $7)", NARGS, CATEGORY_ARGTYPES);
static EsStatement direct_sql =
ES_STATEMENT("SELECT message_store._category_direct($1, $4, $5, $6, $7)", NARGS, CATEGORY_ARGTYPES);
static EsStatement filtered_sql =
ES_STATEMENT("SELECT * FROM message_store._category_messages($1, $2, $3, $4, $5, $6, $7)", NARGS, CATEGORY_ARGTYPES);

/*
 * The category to read, as message_store._category_filter passes it on:
 * NULL for none (no name, or one of no or more than 1,024 bytes).
 */
static text *
category_arg(FunctionCallInfo fcinfo)
{
	text	   *category;
	int			len;

	if (PG_ARGISNULL(ARG_CATEGORY))
		return NULL;
	category = PG_GETARG_TEXT_PP(ARG_CATEGORY);
	len = VARSIZE_ANY_EXHDR(category);
	return (len >= 1 && len <= MAX_CATEGORY_BYTES) ? category : NULL;
}

/* Can the call be answered by the log scan with no check that could fail? */
static bool
plain_call(FunctionCallInfo fcinfo, text *category)
{
	return category != NULL && memchr(VARDATA_ANY(category), '-', VARSIZE_ANY_EXHDR(category)) == NULL &&
		!PG_ARGISNULL(ARG_BATCH_SIZE) && PG_GETARG_INT64(ARG_BATCH_SIZE) >= -1 &&
		PG_ARGISNULL(ARG_CORRELATION) && PG_ARGISNULL(ARG_MEMBER) &&
		PG_ARGISNULL(ARG_SIZE) && PG_ARGISNULL(ARG_CONDITION);
}

/* The call's arguments as SPI parameters. */
static void
call_args(FunctionCallInfo fcinfo, Datum *values, char *nulls)
{
	int			i;

	for (i = 0; i < NARGS; i++)
	{
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
}

/* The value (never NULL) of SQL statement st, one row and column, for the call's arguments. */
static Datum
ask(EsStatement *st, FunctionCallInfo fcinfo)
{
	Datum		values[NARGS];
	char		nulls[NARGS];
	bool		isnull;
	Datum		result;

	call_args(fcinfo, values, nulls);
	if (es_run(st, values, nulls, ES_RUN_READ_ONLY, 0, SPI_OK_SELECT) != 1)
		elog(ERROR, "\"%s\" returned " UINT64_FORMAT " rows", st->sql, SPI_processed);
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		elog(ERROR, "\"%s\" returned NULL", st->sql);
	return result;
}

/* Refuse a caller without EXECUTE on event_store.read_all, as calling it would. */
static void
check_read_all(void)
{
	Oid			argtypes[6] = {INT8OID, INT4OID, TEXTARRAYOID, TEXTARRAYOID, INT4OID, INT4OID};
	Oid			fn = LookupFuncName(list_make2(makeString("event_store"), makeString("read_all")),
									6, argtypes, false);

	es_check_execute(fn);
}

/* A value as the text its type's output function writes (data::text, event_id::varchar). */
static Datum
as_text(PGFunction out, Datum value)
{
	return CStringGetTextDatum(DatumGetCString(DirectFunctionCall1(out, value)));
}

/*
 * The event the scan is at, as a message, into the tuplestore.  The texts
 * are made in the scan's memory of the current event, freed with it.
 */
static void
put_message(EsLogScan *s, ReturnSetInfo *rsinfo)
{
	Datum		values[NCOLS];
	bool		nulls[NCOLS];
	const Datum *ev = s->values;
	const bool *evnull = s->nulls;
	MemoryContext old = MemoryContextSwitchTo(s->row_context);

	memset(nulls, 0, sizeof(nulls));
	values[COL_ID] = as_text(uuid_out, ev[Anum_events_event_id]);
	values[COL_STREAM_NAME] = ev[Anum_events_stream_id];
	values[COL_TYPE] = ev[Anum_events_event_type];
	values[COL_POSITION] = Int64GetDatum(DatumGetInt64(ev[Anum_events_stream_version]) - 1);
	values[COL_GLOBAL_POSITION] = ev[0];
	nulls[COL_DATA] = evnull[Anum_events_data];
	if (!nulls[COL_DATA])
		values[COL_DATA] = as_text(jsonb_out, ev[Anum_events_data]);
	nulls[COL_METADATA] = evnull[Anum_events_metadata];
	if (!nulls[COL_METADATA])
		values[COL_METADATA] = as_text(jsonb_out, ev[Anum_events_metadata]);

	/*
	 * recorded_at AT TIME ZONE 'UTC': a timestamptz counts microseconds from
	 * 2000-01-01 00:00 UTC, and the timestamp of its UTC wall clock is the
	 * same count (infinities included).
	 */
	values[COL_TIME] = ev[Anum_events_recorded_at];
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	MemoryContextSwitchTo(old);
}

/*
 * get_category_messages(category varchar, position bigint, batch_size
 * bigint, correlation varchar, consumer_group_member bigint,
 * consumer_group_size bigint, condition varchar) RETURNS SETOF
 * message_store.message
 */
Datum
event_store_mdb_get_category_messages(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		after;
	int64		batch_size;
	int32		count;
	int32		member = 0;
	int32		size = 0;
	text	   *category;
	ArrayType  *categories;
	EsLogScan  *s;

	if (PG_NARGS() != NARGS)
		elog(ERROR, "message_store.get_category_messages must be declared with %d arguments", NARGS);
	InitMaterializedSRF(fcinfo, 0);
	if (rsinfo->setDesc->natts != NCOLS)
		elog(ERROR, "message_store.message must have %d columns", NCOLS);

	category = category_arg(fcinfo);
	if (plain_call(fcinfo, category))
		after = Max(PG_ARGISNULL(ARG_POSITION) ? 1 : PG_GETARG_INT64(ARG_POSITION), 1) - 1;
	else
	{
		SPI_connect();
		after = DatumGetInt64(ask(&start_sql, fcinfo));
		if (!DatumGetBool(ask(&direct_sql, fcinfo)))
		{
			Datum		values[NARGS];
			char		nulls[NARGS];
			uint64		i;

			call_args(fcinfo, values, nulls);
			es_run(&filtered_sql, values, nulls, ES_RUN_READ_ONLY, 0, SPI_OK_SELECT);
			for (i = 0; i < SPI_processed; i++)
				tuplestore_puttuple(rsinfo->setResult, SPI_tuptable->vals[i]);
			SPI_finish();
			return (Datum) 0;
		}
		SPI_finish();
		if (!PG_ARGISNULL(ARG_MEMBER) && !PG_ARGISNULL(ARG_SIZE))
		{
			/* _category_start checked 0 <= member < size <= 32767 */
			member = (int32) PG_GETARG_INT64(ARG_MEMBER);
			size = (int32) PG_GETARG_INT64(ARG_SIZE);
		}
	}

	/* message_store._batch_count */
	batch_size = PG_ARGISNULL(ARG_BATCH_SIZE) ? 1000 : PG_GETARG_INT64(ARG_BATCH_SIZE);
	count = (batch_size < 0 || batch_size > PG_INT32_MAX) ? PG_INT32_MAX : (int32) batch_size;

	/* message_store._category_filter: none, or that one */
	if (category == NULL)
		categories = construct_empty_array(TEXTOID);
	else
	{
		Datum		name = PointerGetDatum(category);

		categories = construct_array(&name, 1, TEXTOID, -1, false, TYPALIGN_INT);
	}

	check_read_all();
	es_ensure_pipeline_worker();
	s = es_log_scan_begin(after, categories, NULL, count, GetActiveSnapshot());
	if (size > 0)
		es_log_scan_set_group(s, member, size);
	while (es_log_scan_next(s))
		put_message(s, rsinfo);
	es_log_scan_end(s);
	return (Datum) 0;
}
