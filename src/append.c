/*-------------------------------------------------------------------------
 *
 * append.c
 *	  append() and append_events(): the SQL write path.
 *
 * Both insert into event_store.events as an INSERT statement would, so that
 * the versioning trigger (versioning.c), the caller's privileges and any
 * other trigger apply exactly as for a plain INSERT.  When that INSERT would
 * do no more than fire the BEFORE ROW triggers, check the constraints and
 * insert into the heap and the indexes (direct_insert_ok: the usual case),
 * the rows are inserted here, without an executor of their own; otherwise
 * the INSERT runs through SPI, with plans prepared once per backend.  The expected
 * version travels as the stream_version of the first event (expected + 1),
 * which the trigger checks under the stream's lock: there is one place where
 * versions are decided; it also reports them back through an EsAppendFrame,
 * so the caller needs no SELECT privilege (RETURNING would).  A batch is one
 * statement, so it is all or nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/bitmapset.h"
#include "nodes/parsenodes.h"
#include "nodes/pg_list.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
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
 * Are the table's columns those the extension created, of the types our
 * values have?  (An INSERT would coerce a value to a column's new type or
 * domain, refuse one for an identity column, or fail on a dropped one.)
 */
static bool
columns_as_created(TupleDesc desc)
{
	static const Oid types[] = {TEXTOID, INT8OID, UUIDOID, TEXTOID, INT4OID, JSONBOID, JSONBOID,
	TIMESTAMPTZOID};
	int			i;

	StaticAssertStmt(lengthof(types) == Anum_events_recorded_at, "one type per column");
	if (desc->natts != Anum_events_recorded_at)
		return false;
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->atttypid != types[i] || att->atttypmod != -1 ||
			att->attidentity != '\0' || att->attgenerated != '\0')
			return false;
	}
	return true;
}

/*
 * Whether the INSERT of an append would do nothing but fire the table's
 * BEFORE ROW triggers, check its constraints and insert each row into the
 * heap and the indexes: then insert_directly() does that itself, without
 * starting an executor for it (9-17 % more single appends a second in
 * test/bench/compare).  Any other case (the caller lacks the table-wide
 * INSERT right, a read-only or parallel transaction, row-level security,
 * rules, a partition, columns changed, defaults or generated columns,
 * statement-level or AFTER triggers, a permission hook, deferrable
 * constraints) takes the INSERT, so that what would happen to it happens,
 * down to the error (sql/append_insert.sql tries each).
 */
static bool
direct_insert_ok(Relation rel)
{
	TupleConstr *constr = RelationGetDescr(rel)->constr;
	TriggerDesc *trig = rel->trigdesc;

	if (ExecutorCheckPerms_hook != NULL || XactReadOnly || IsInParallelMode())
		return false;
	/* (relhasrules stays set once a rule has been dropped: the rules themselves) */
	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rel->relrowsecurity ||
		rel->rd_rules != NULL || rel->rd_rel->relispartition)
		return false;
	if (!columns_as_created(RelationGetDescr(rel)))
		return false;
	if (constr != NULL && (constr->num_defval > 0 || constr->has_generated_stored))
		return false;
	if (trig != NULL &&
		(trig->trig_insert_after_row || trig->trig_insert_instead_row ||
		 trig->trig_insert_before_statement || trig->trig_insert_after_statement ||
		 trig->trig_insert_new_table))
		return false;
	return pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), ACL_INSERT) == ACLCHECK_OK;
}

/*
 * Insert the rows of an append as its INSERT statement would (see
 * direct_insert_ok), the way SPI runs it (ExecInsert and _SPI_execute_plan
 * are the model): a new snapshot and the command counter advanced before,
 * the counter advanced after.  Returns false, having done nothing, when the
 * INSERT must run instead.
 */
static bool
insert_directly(text *stream_id, EsBatch *b)
{
	const EsCatalog *cat = es_catalog();
	Relation	rel = table_open(cat->events_relid, RowExclusiveLock);
	RangeTblEntry *rte;
	EState	   *estate;
	MemoryContext oldcxt;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	CommandId	cid;
	int			i;

	if (!direct_insert_ok(rel))
	{
		table_close(rel, NoLock);
		return false;
	}

	/* what the executor would set up for the INSERT, in its memory */
	estate = CreateExecutorState();
	oldcxt = MemoryContextSwitchTo(estate->es_query_cxt);
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	rte->requiredPerms = ACL_INSERT;
	for (i = Anum_events_stream_id; i < Anum_events_recorded_at; i++)
		rte->insertedCols = bms_add_member(rte->insertedCols,
										   i - FirstLowInvalidHeapAttributeNumber);
	ExecInitRangeTable(estate, list_make1(rte));
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	for (i = 0; i < rri->ri_NumIndices; i++)
	{
		if (!rri->ri_IndexRelationDescs[i]->rd_index->indimmediate)
		{
			/* a deferred uniqueness check needs the executor's after-trigger queue */
			ExecCloseIndices(rri);
			MemoryContextSwitchTo(oldcxt);
			FreeExecutorState(estate);
			table_close(rel, NoLock);
			return false;
		}
	}

	PushActiveSnapshot(GetTransactionSnapshot());
	CommandCounterIncrement();
	UpdateActiveSnapshotCommandId();
	cid = GetCurrentCommandId(true);
	slot = table_slot_create(rel, NULL);
	for (i = 0; i < b->n; i++)
	{
		int			c;

		CHECK_FOR_INTERRUPTS();
		ExecClearTuple(slot);
		slot->tts_values[Anum_events_stream_id - 1] = PointerGetDatum(stream_id);
		slot->tts_isnull[Anum_events_stream_id - 1] = false;
		for (c = 0; c < NUM_COLS; c++)
		{
			/* the columns of a batch are those of the table after stream_id */
			slot->tts_values[Anum_events_stream_version - 1 + c] = b->cols[c][i];
			slot->tts_isnull[Anum_events_stream_version - 1 + c] = b->colnulls[c][i];
		}
		slot->tts_values[Anum_events_recorded_at - 1] = (Datum) 0;
		slot->tts_isnull[Anum_events_recorded_at - 1] = true;
		ExecStoreVirtualTuple(slot);
		slot->tts_tableOid = RelationGetRelid(rel);

		if (rri->ri_TrigDesc == NULL || !rri->ri_TrigDesc->trig_insert_before_row ||
			ExecBRInsertTriggers(estate, rri, slot))
		{
			if (RelationGetDescr(rel)->constr != NULL)
				ExecConstraints(rri, slot, estate);
			table_tuple_insert(rel, slot, cid, 0, NULL);
			if (rri->ri_NumIndices > 0)
				(void) ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL);
		}
		ResetPerTupleExprContext(estate);
	}
	ExecDropSingleTupleTableSlot(slot);
	PopActiveSnapshot();
	CommandCounterIncrement();

	ExecCloseIndices(rri);
	MemoryContextSwitchTo(oldcxt);
	FreeExecutorState(estate);
	table_close(rel, NoLock);	/* the lock is kept until the end of the transaction */
	return true;
}

/*
 * The arguments of append_statement or batch_statement for the rows.
 */
static void
statement_args(text *stream_id, EsBatch *b, bool single, Datum *values, char *nulls)
{
	int			i;

	memset(nulls, ' ', NUM_COLS + 1);
	values[0] = PointerGetDatum(stream_id);
	for (i = 0; i < NUM_COLS; i++)
	{
		Oid			elemtype;
		int16		typlen;
		bool		typbyval;
		char		typalign;
		int			dims[1] = {b->n};
		int			lbs[1] = {1};

		if (single)
		{
			values[i + 1] = b->cols[i][0];
			nulls[i + 1] = b->colnulls[i][0] ? 'n' : ' ';
			continue;
		}
		elemtype = get_element_type(batch_statement.argtypes[i + 1]);
		get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
		values[i + 1] = PointerGetDatum(construct_md_array(b->cols[i], b->colnulls[i], 1, dims, lbs,
														   elemtype, typlen, typbyval, typalign));
	}
}

/*
 * Insert the rows (directly, or else through our INSERT statement: for one
 * row append_statement, for more batch_statement) with a frame for the
 * trigger to report the versions in (see EsAppendFrame), and return the
 * highest: the stream's version after the append (for a re-sent event, the
 * version it has).  Errors pass through unchanged but for the context line
 * of our own statement.
 */
static int64
execute_insert(text *stream_id, EsBatch *b, bool single)
{
	EsAppendFrame frame = {0};
	EsAppendFrame *saved = es_append_frame;
	MemoryContext cxt = CurrentMemoryContext;

	frame.stream_id = stream_id;
	frame.rows = b->n;
	frame.subid = GetCurrentSubTransactionId();
	frame.depth = es_trigger_depth() + 1;
	frame.level = es_statement_level;	/* no executor of its own */
	es_append_frame = &frame;
	PG_TRY();
	{
		if (!insert_directly(stream_id, b))
		{
			Datum		values[NUM_COLS + 1];
			char		nulls[NUM_COLS + 1];

			statement_args(stream_id, b, single, values, nulls);
			frame.level = es_statement_level + 1;	/* SPI runs the INSERT's executor */
			SPI_connect();
			/* as the caller: an append needs the INSERT right */
			es_run(single ? &append_statement : &batch_statement, values, nulls, 0, 0,
				   SPI_OK_INSERT);
			SPI_finish();
		}
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

	if (frame.seen != b->n)
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
	Datum		vals[NUM_COLS];
	bool		isnull[NUM_COLS] = {0};
	EsBatch		row;
	text	   *stream_id;
	int64		first;
	int			i;

	es_require_arg(fcinfo, 0, "stream_id");
	es_require_arg(fcinfo, 1, "event_type");
	es_require_arg(fcinfo, 2, "data");
	stream_id = PG_GETARG_TEXT_PP(0);

	if (first_version(fcinfo, 4, stream_id, 1, &first))
		vals[COL_VERSION] = Int64GetDatum(first);
	else
		isnull[COL_VERSION] = true;
	vals[COL_ID] = PG_GETARG_DATUM(5);
	isnull[COL_ID] = PG_ARGISNULL(5);
	vals[COL_TYPE] = PG_GETARG_DATUM(1);
	vals[COL_SCHEMA_VERSION] = PG_GETARG_DATUM(6);
	isnull[COL_SCHEMA_VERSION] = PG_ARGISNULL(6);
	vals[COL_DATA] = PG_GETARG_DATUM(2);
	vals[COL_METADATA] = PG_GETARG_DATUM(3);
	isnull[COL_METADATA] = PG_ARGISNULL(3);

	row.n = 1;
	for (i = 0; i < NUM_COLS; i++)
	{
		row.cols[i] = &vals[i];
		row.colnulls[i] = &isnull[i];
	}
	PG_RETURN_INT64(execute_insert(stream_id, &row, true));
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

	return execute_insert(stream_id, b, false);
}
