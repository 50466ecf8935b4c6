/*-------------------------------------------------------------------------
 *
 * append.c
 *	  append() and append_events(): the SQL write path.
 *
 * Both insert into event_store.events through SPI with plans prepared once
 * per backend, so the versioning trigger (versioning.c), the caller's
 * privileges and any other trigger apply exactly as for a plain INSERT.  The
 * expected version travels as the stream_version of the first event
 * (expected + 1), which the trigger checks under the stream's lock: there is
 * one place where versions are decided; it also reports them back through an
 * EsAppendFrame, so the caller needs no SELECT privilege (RETURNING would).
 * A batch is one INSERT statement, so it is all or nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "write.h"

PG_FUNCTION_INFO_V1(event_store_append);
PG_FUNCTION_INFO_V1(event_store_append_events);

#define INSERT_COLUMNS \
	"INSERT INTO event_store.events " \
	"(stream_id, stream_version, event_id, event_type, schema_version, data, metadata) "

/* $1 is the stream id in both statements */
static EsStatement append_statement = ES_STATEMENT(
	INSERT_COLUMNS "VALUES ($1, $2, $3, $4, $5, $6, $7)",
	7, TEXTOID, INT8OID, UUIDOID, TEXTOID, INT4OID, JSONBOID, JSONBOID);

static EsStatement batch_statement = ES_STATEMENT(
	INSERT_COLUMNS
	"SELECT $1, u.v, u.i, u.t, u.s, u.d, u.m "
	"FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), "
	"pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7)) "
	"WITH ORDINALITY AS u(v, i, t, s, d, m, n) "
	"ORDER BY u.n",
	7, TEXTOID, INT8ARRAYOID, UUIDARRAYOID, TEXTARRAYOID, INT4ARRAYOID, JSONBARRAYOID, JSONBARRAYOID);

/* The columns of one batch, in the order of batch_statement's $2 .. $7. */
enum
{
	COL_VERSION,
	COL_ID,
	COL_TYPE,
	COL_SCHEMA_VERSION,
	COL_DATA,
	COL_METADATA,
	NUM_COLS
};

/* A batch read from its JSON array (es_read_batch), column by column. */
struct EsBatch
{
	int			n;
	Datum	   *cols[NUM_COLS];
	bool	   *colnulls[NUM_COLS];
};

/*
 * The stream's current version as the statement's snapshot sees it.
 */
static int64
current_version(text *stream_id)
{
	const EsCatalog *cat = es_catalog();
	Relation	events = table_open(cat->events_relid, AccessShareLock);
	Relation	idx = index_open(cat->stream_index, AccessShareLock);
	int64		version = es_stream_head(events, idx, stream_id, GetActiveSnapshot(), NULL);

	index_close(idx, AccessShareLock);
	table_close(events, AccessShareLock);
	return version;
}

/*
 * The stream_version the first of nevents events must get when the stream
 * is expected to be at `expected` (not negative).
 */
static int64
first_version_of(text *stream_id, int64 expected, int64 nevents)
{
	es_check_not_negative(expected, "expected_version", "Pass NULL for any version, 0 for a stream that must not exist yet, or the version the stream must be at.");
	if (expected > PG_INT64_MAX - nevents)
		es_report_wrong_version(stream_id, current_version(stream_id), expected);
	return expected + 1;
}

/*
 * Turn the expected_version argument into the stream_version the first of
 * nevents events must get.  Returns false when it is NULL (any version).
 */
static bool
first_version(FunctionCallInfo fcinfo, int argno, text *stream_id, int64 nevents,
			  int64 *first)
{
	if (PG_ARGISNULL(argno))
		return false;
	*first = first_version_of(stream_id, PG_GETARG_INT64(argno), nevents);
	return true;
}

/*
 * Drop the "SQL statement" context line SPI adds for our internal INSERT: the
 * caller did not write that statement, and the error says all there is.
 */
static void
drop_statement_context(ErrorData *edata)
{
	const char *ours = "SQL statement \"" INSERT_COLUMNS;
	int			ours_len = strlen(ours);
	StringInfoData buf;
	char	   *line;
	char	   *next;

	if (edata->context == NULL)
		return;
	initStringInfo(&buf);
	for (line = edata->context; line != NULL && *line != '\0'; line = next)
	{
		int			len;

		next = strchr(line, '\n');
		len = next ? next - line : (int) strlen(line);
		if (next)
			next++;
		if (len >= ours_len && strncmp(line, ours, ours_len) == 0)
			continue;
		if (buf.len > 0)
			appendStringInfoChar(&buf, '\n');
		appendBinaryStringInfo(&buf, line, len);
	}
	edata->context = buf.len > 0 ? buf.data : NULL;
}

/*
 * Run one of our INSERTs with a frame for the trigger to report the versions
 * in (see EsAppendFrame), and return the highest: the stream's version after
 * the append (for a re-sent event, the version it has).  Errors
 * pass through unchanged but for the context line of our own statement.
 */
static int64
execute_insert(EsStatement *st, Datum *values, const char *nulls, text *stream_id, int64 rows)
{
	EsAppendFrame frame = {0};
	EsAppendFrame *saved = es_append_frame;
	MemoryContext cxt = CurrentMemoryContext;

	frame.stream_id = stream_id;
	frame.rows = rows;
	frame.subid = GetCurrentSubTransactionId();
	frame.depth = es_trigger_depth() + 1;
	frame.level = es_statement_level + 1;	/* SPI runs the INSERT's executor */
	es_append_frame = &frame;
	PG_TRY();
	{
		/* as the caller: an append needs the INSERT right */
		es_run(st, values, nulls, 0, 0, SPI_OK_INSERT);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		es_append_frame = saved;
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		drop_statement_context(edata);
		ReThrowError(edata);
	}
	PG_END_TRY();
	es_append_frame = saved;

	if (frame.seen != rows)
		ereport(ERROR,
				(errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
				 errmsg("the events were not appended"),
				 errdetail("Another trigger on event_store.events skipped or added rows.")));
	es_publish_frame_head(&frame);	/* the stream's head, for the next append */
	return frame.version;
}

/*
 * append(stream_id, event_type, data, metadata, expected_version, event_id,
 *		  schema_version) RETURNS bigint: append one event, return the
 * stream's new version (or, for a re-sent event, the version it has).
 */
Datum
event_store_append(PG_FUNCTION_ARGS)
{
	Datum		values[7];
	char		nulls[7];
	text	   *stream_id;
	int64		first;
	int64		version;

	es_require_arg(fcinfo, 0, "stream_id");
	es_require_arg(fcinfo, 1, "event_type");
	es_require_arg(fcinfo, 2, "data");
	stream_id = PG_GETARG_TEXT_PP(0);

	memset(nulls, ' ', sizeof(nulls));
	values[0] = PointerGetDatum(stream_id);
	if (first_version(fcinfo, 4, stream_id, 1, &first))
		values[1] = Int64GetDatum(first);
	else
		nulls[1] = 'n';
	values[2] = PG_GETARG_DATUM(5);
	nulls[2] = PG_ARGISNULL(5) ? 'n' : ' ';
	values[3] = PG_GETARG_DATUM(1);
	values[4] = PG_GETARG_DATUM(6);
	nulls[4] = PG_ARGISNULL(6) ? 'n' : ' ';
	values[5] = PG_GETARG_DATUM(2);
	values[6] = PG_GETARG_DATUM(3);
	nulls[6] = PG_ARGISNULL(3) ? 'n' : ' ';

	SPI_connect();
	version = execute_insert(&append_statement, values, nulls, stream_id, 1);
	SPI_finish();
	PG_RETURN_INT64(version);
}

/* Error context: which element of the batch is being read. */
static void
batch_element_context(void *arg)
{
	errcontext("events[%d]", *(int *) arg);
}

/*
 * Reject a key of a batch element that is of the wrong JSON type.
 */
static void
wrong_type(const char *key, const char *type)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("\"%s\" of an event must be %s", key, type)));
}

/*
 * A key of a batch element: NULL when it is absent (or JSON null, when
 * null_ok); counts what it found in *found.
 */
static JsonbValue *
element_key(JsonbContainer *obj, const char *key, bool null_ok, int *found)
{
	JsonbValue *v = getKeyJsonValueFromContainer(obj, key, strlen(key), NULL);

	if (v == NULL)
		return NULL;
	(*found)++;
	if (v->type == jbvNull && null_ok)
		return NULL;
	return v;
}

/*
 * Read one batch element into column arrays.
 */
static void
read_element(JsonbValue *elem, int i, Datum *cols[], bool *colnulls[])
{
	JsonbContainer *obj;
	JsonbValue *v;
	int			found = 0;

	if (elem->type != jbvBinary || !JsonContainerIsObject(elem->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("each element of events must be a JSON object"),
				 errhint("Write an event as {\"type\": ..., \"data\": {...}}.")));
	obj = elem->val.binary.data;

	v = element_key(obj, "type", false, &found);
	if (v == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an event must have a \"type\"")));
	if (v->type != jbvString)
		wrong_type("type", "a string");
	cols[COL_TYPE][i] = PointerGetDatum(es_check_identifier(PointerGetDatum(cstring_to_text_with_len(v->val.string.val,
																									 v->val.string.len)),
															false, "event_type"));

	v = element_key(obj, "data", false, &found);
	if (v == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an event must have \"data\""),
				 errhint("Use an empty JSON object for an event without data.")));
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		wrong_type("data", "a JSON object");
	cols[COL_DATA][i] = JsonbPGetDatum(JsonbValueToJsonb(v));

	v = element_key(obj, "metadata", true, &found);
	colnulls[COL_METADATA][i] = (v == NULL);
	if (v != NULL)
	{
		if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
			wrong_type("metadata", "a JSON object");
		cols[COL_METADATA][i] = JsonbPGetDatum(JsonbValueToJsonb(v));
	}

	v = element_key(obj, "id", true, &found);
	colnulls[COL_ID][i] = (v == NULL);
	if (v != NULL)
	{
		if (v->type != jbvString)
			wrong_type("id", "a UUID string");
		cols[COL_ID][i] = DirectFunctionCall1(uuid_in,
											  CStringGetDatum(pnstrdup(v->val.string.val,
																	   v->val.string.len)));
	}

	v = element_key(obj, "schema_version", true, &found);
	colnulls[COL_SCHEMA_VERSION][i] = (v == NULL);
	if (v != NULL)
	{
		if (v->type != jbvNumeric)
			wrong_type("schema_version", "an integer");
		cols[COL_SCHEMA_VERSION][i] =
			Int32GetDatum(pg_strtoint32(DatumGetCString(DirectFunctionCall1(numeric_out,
																			NumericGetDatum(v->val.numeric)))));
		es_check_schema_version(DatumGetInt32(cols[COL_SCHEMA_VERSION][i]));
	}

	if (found != (int) JsonContainerSize(obj))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an event has an unknown key"),
				 errdetail("The keys of an event are \"type\", \"data\", \"metadata\", \"id\" and \"schema_version\".")));
}

/*
 * append_events(stream_id, events jsonb, expected_version) RETURNS bigint:
 * append a JSON array of events, all or nothing; return the highest version
 * among its events (the stream's version after it; for a re-sent batch, the
 * version of its last event).  An empty batch appends nothing and returns the
 * stream's version, after checking the expected version.
 */
Datum
event_store_append_events(PG_FUNCTION_ARGS)
{
	int64		expected = 0;

	es_require_arg(fcinfo, 0, "stream_id");
	es_require_arg(fcinfo, 1, "events");
	if (!PG_ARGISNULL(2))
		expected = PG_GETARG_INT64(2);
	PG_RETURN_INT64(es_append_batch(PG_GETARG_TEXT_PP(0), es_read_batch(PG_GETARG_JSONB_P(1)),
									PG_ARGISNULL(2) ? NULL : &expected));
}

/*
 * Read a JSON array of events in append_events' format, checking each as
 * the trigger will (so that every error about what is in the batch is
 * raised here, before anything is appended).
 */
EsBatch *
es_read_batch(Jsonb *batch)
{
	EsBatch    *b = palloc0(sizeof(EsBatch));
	ErrorContextCallback errcb;
	int			i;

	if (!JB_ROOT_IS_ARRAY(batch) || JB_ROOT_IS_SCALAR(batch))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("events must be a JSON array"),
				 errhint("Pass [{\"type\": ..., \"data\": {...}}, ...].")));
	b->n = JB_ROOT_COUNT(batch);
	for (i = 0; i < NUM_COLS; i++)
	{
		b->cols[i] = palloc(sizeof(Datum) * Max(b->n, 1));
		b->colnulls[i] = palloc0(sizeof(bool) * Max(b->n, 1));
	}
	errcb.callback = batch_element_context;
	errcb.arg = &i;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	for (i = 0; i < b->n; i++)
		read_element(getIthJsonbValueFromContainer(&batch->root, i), i, b->cols, b->colnulls);
	error_context_stack = errcb.previous;
	return b;
}

/*
 * Append a batch to the stream, all or nothing, expecting the stream at
 * *expected (NULL: any version); return the version of the batch's last
 * event, or for an empty batch the stream's version.
 */
int64
es_append_batch(text *stream_id, EsBatch *b, const int64 *expected)
{
	int64		first = 0;
	bool		versioned = (expected != NULL);
	Datum		values[7];
	int			i;
	int64		version;

	if (versioned)
		first = first_version_of(stream_id, *expected, b->n);
	if (b->n == 0)
	{
		version = current_version(stream_id);
		if (versioned && first - 1 != version)
			es_report_wrong_version(stream_id, version, first - 1);
		return version;
	}
	for (i = 0; i < b->n; i++)
	{
		b->colnulls[COL_VERSION][i] = !versioned;
		b->cols[COL_VERSION][i] = versioned ? Int64GetDatum(first + i) : (Datum) 0;
	}

	values[0] = PointerGetDatum(stream_id);
	for (i = 0; i < NUM_COLS; i++)
	{
		Oid			elemtype = get_element_type(batch_statement.argtypes[i + 1]);
		int16		typlen;
		bool		typbyval;
		char		typalign;
		int			dims[1] = {b->n};
		int			lbs[1] = {1};

		get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
		values[i + 1] = PointerGetDatum(construct_md_array(b->cols[i], b->colnulls[i], 1, dims, lbs,
														   elemtype, typlen, typbyval, typalign));
	}

	SPI_connect();
	version = execute_insert(&batch_statement, values, NULL, stream_id, b->n);
	SPI_finish();
	return version;
}
