/*-------------------------------------------------------------------------
 *
 * decoder.c
 *	  The logical decoding output plugin "event_store", compiled into
 *	  event_store.so: one JSON document per event appended to
 *	  event_store.events and per message written by event_store.publish(),
 *	  in commit order.
 *
 * Usable by pg_recvlogical, pg_logical_slot_get_changes() and CDC tools:
 *
 *	  pg_recvlogical -d mydb --slot events --create-slot -P event_store
 *	  pg_recvlogical -d mydb --slot events --start -f - -o categories=account
 *
 * Options (all optional):
 *	  categories=a,b		only events of streams in these categories
 *	  event-types=X,Y		only events of these types
 *	  topics=t1,t2			only published messages of these topics
 *	  include-events=bool	emit events (default true)
 *	  include-messages=bool	emit published messages (default true)
 * An unknown option is an error.
 *
 * Only inserts into event_store.events are emitted, recognised by the
 * relation's OID (looked up under the historic snapshot and cached until a
 * relcache invalidation touches it), never by name.  Transactions tagged
 * with the pipeline worker's own replication origin are dropped
 * (filter_by_origin_cb).  Each event is built as an event_store.event and
 * handed to es_present_event() before it is written, like every read path.
 *
 * In the pipeline worker (worker.c) es_decoder_sink is set, and the plugin
 * hands the identifiers of each event to it instead of writing JSON.
 *
 * Memory: each change is formatted in a private context that is reset after
 * the change.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "replication/logical.h"
#include "replication/message.h"
#include "replication/origin.h"
#include "replication/output_plugin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/uuid.h"

#include "internal.h"
#include "pipeline.h"
#include "read.h"


extern PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

EsDecoderSink *es_decoder_sink = NULL;
TransactionId es_decoded_catalog_xids[ES_MAX_CATALOG_XIDS];
int			es_ndecoded_catalog_xids = 0;
bool		es_presenting_in_decoding = false;

typedef struct EsDecoderData
{
	MemoryContext context;		/* per change, reset after each */
	List	   *categories;		/* of char *, NIL: all */
	List	   *event_types;	/* of char *, NIL: all */
	List	   *topics;			/* of char *, NIL: all */
	bool		include_events;
	bool		include_messages;
	int64		index;			/* documents written in the current transaction */
} EsDecoderData;

static void es_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init);
static void es_shutdown(LogicalDecodingContext *ctx);
static void es_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn);
static void es_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn);
static void es_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
					  Relation relation, ReorderBufferChange *change);
static void es_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
					   XLogRecPtr message_lsn, bool transactional, const char *prefix,
					   Size message_size, const char *message);
static bool es_filter_by_origin(LogicalDecodingContext *ctx, RepOriginId origin_id);

/*
 * Present an event (values/nulls, an event_store.event) as every read path
 * does, in a subtransaction: if a presentation step fails (an upcaster that
 * raises, or reads a table that decoding cannot), the event keeps its
 * stored shape and the error is returned (else NULL), so that the plugin
 * hands the consumer the stored event with the error, instead of failing at
 * the same change at every reconnect.  The error goes to the server log too.
 */
static ErrorData *
present_or_mark(Datum *values, bool *nulls)
{
	Datum		stored[Natts_event];
	bool		stored_nulls[Natts_event];
	ErrorData  *volatile edata = NULL;
	EsSubxact	sx;

	memcpy(stored, values, sizeof(stored));
	memcpy(stored_nulls, nulls, sizeof(stored_nulls));
	es_subxact_begin(&sx);
	PG_TRY();
	{
		es_presenting_in_decoding = true;
		es_present_event(values, nulls);
		es_presenting_in_decoding = false;
		es_subxact_commit(&sx);
	}
	PG_CATCH();
	{
		es_presenting_in_decoding = false;
		edata = es_subxact_abort(&sx);
		memcpy(values, stored, sizeof(stored));
		memcpy(nulls, stored_nulls, sizeof(stored_nulls));
		ereport(LOG,
				(errmsg("event_store output plugin: event %s version " INT64_FORMAT " is streamed as stored: %s",
						TextDatumGetCString(values[Anum_events_stream_id]),
						DatumGetInt64(values[Anum_events_stream_version]), edata->message)));
	}
	PG_END_TRY();
	return edata;
}

/*
 * The plugin's entry point, looked up by name when a slot uses "event_store".
 */
void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	AssertVariableIsOfType(&_PG_output_plugin_init, LogicalOutputPluginInit);

	cb->startup_cb = es_startup;
	cb->begin_cb = es_begin;
	cb->change_cb = es_change;
	cb->commit_cb = es_commit;
	cb->message_cb = es_message;
	cb->filter_by_origin_cb = es_filter_by_origin;
	cb->shutdown_cb = es_shutdown;
}

/*
 * The OID of event_store.events as the catalog looked when the change being
 * decoded was made (InvalidOid: the extension was not installed then).  The
 * catalog (catalog.c) follows the invalidations that decoding replays.
 */
static Oid
decoded_events_relid(void)
{
	const EsCatalog *cat = es_catalog_if_installed();

	return cat ? cat->events_relid : InvalidOid;
}

/*
 * Split a comma-separated option value into a list of non-empty names,
 * kept as written (case matters: event types are case-sensitive).
 * Whitespace around a name is ignored.
 */
static List *
parse_name_list(DefElem *elem)
{
	List	   *result = NIL;
	char	   *p;

	if (elem->arg == NULL || strVal(elem->arg)[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_ES_PLUGIN_OPTION),
				 errmsg("option \"%s\" of output plugin \"event_store\" needs a value", elem->defname),
				 errhint("Give a comma-separated list, e.g. -o %s=a,b.", elem->defname)));
	p = pstrdup(strVal(elem->arg));
	for (;;)
	{
		char	   *comma = strchr(p, ',');
		char	   *end;

		if (comma)
			*comma = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		end = p + strlen(p);
		while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		if (*p == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_ES_PLUGIN_OPTION),
					 errmsg("invalid value for option \"%s\" of output plugin \"event_store\": \"%s\"",
							elem->defname, strVal(elem->arg)),
					 errdetail("The list has an empty name."),
					 errhint("Give a comma-separated list of names, e.g. -o %s=a,b.", elem->defname)));
		result = lappend(result, p);
		if (!comma)
			break;
		p = comma + 1;
	}
	return result;
}

/*
 * Parse a boolean option; a bare option name means true.
 */
static bool
parse_bool_option(DefElem *elem)
{
	bool		result;

	if (elem->arg == NULL)
		return true;
	if (!parse_bool(strVal(elem->arg), &result))
		ereport(ERROR,
				(errcode(ERRCODE_ES_PLUGIN_OPTION),
				 errmsg("invalid value for option \"%s\" of output plugin \"event_store\": \"%s\"",
						elem->defname, strVal(elem->arg)),
				 errhint("Use true or false.")));
	return result;
}

/*
 * Set up the plugin's state and parse its options.
 */
static void
es_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init)
{
	EsDecoderData *data = palloc0(sizeof(EsDecoderData));
	ListCell   *lc;

	data->context = AllocSetContextCreate(ctx->context, "event_store decoder change",
										  ALLOCSET_DEFAULT_SIZES);
	data->include_events = true;
	data->include_messages = true;
	ctx->output_plugin_private = data;
	opt->output_type = OUTPUT_PLUGIN_TEXTUAL_OUTPUT;
	opt->receive_rewrites = false;

	es_catalog_reset();			/* what this process looked up before is not the historic catalog */

	foreach(lc, ctx->output_plugin_options)
	{
		DefElem    *elem = lfirst(lc);

		Assert(elem->arg == NULL || IsA(elem->arg, String));
		if (strcmp(elem->defname, "categories") == 0)
			data->categories = parse_name_list(elem);
		else if (strcmp(elem->defname, "event-types") == 0)
			data->event_types = parse_name_list(elem);
		else if (strcmp(elem->defname, "topics") == 0)
			data->topics = parse_name_list(elem);
		else if (strcmp(elem->defname, "include-events") == 0)
			data->include_events = parse_bool_option(elem);
		else if (strcmp(elem->defname, "include-messages") == 0)
			data->include_messages = parse_bool_option(elem);
		else
			ereport(ERROR,
					(errcode(ERRCODE_ES_PLUGIN_OPTION),
					 errmsg("option \"%s\" is unknown to output plugin \"event_store\"", elem->defname),
					 errdetail("Known options: categories, event-types, topics, include-events, include-messages.")));
	}
	(void) is_init;
}

static void
es_shutdown(LogicalDecodingContext *ctx)
{
	EsDecoderData *data = ctx->output_plugin_private;

	MemoryContextDelete(data->context);
}

/*
 * Nothing is written for BEGIN: a document carries its transaction's commit
 * LSN and its index within the transaction.
 */
static void
es_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	EsDecoderData *data = ctx->output_plugin_private;

	(void) txn;
	data->index = 0;
}

static void
es_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
	if (rbtxn_has_catalog_changes(txn) && es_ndecoded_catalog_xids < ES_MAX_CATALOG_XIDS)
		es_decoded_catalog_xids[es_ndecoded_catalog_xids++] = txn->xid;
	if (es_decoder_sink != NULL)
		es_decoder_sink->commit(es_decoder_sink->arg, txn, commit_lsn);
	(void) ctx;
}

/*
 * Drop the transactions the pipeline worker wrote (the global log): they are
 * tagged with its replication origin.
 */
static bool
es_filter_by_origin(LogicalDecodingContext *ctx, RepOriginId origin_id)
{
	(void) ctx;
	return origin_id != InvalidRepOriginId && origin_id == es_pipeline_own_origin();
}

/*
 * The category of a stream: its id up to the first '-' (the whole id if
 * there is none), as streams.category computes it.
 */
text *
es_stream_category(const char *stream_id, int len)
{
	const char *dash = memchr(stream_id, '-', len);

	return cstring_to_text_with_len(stream_id, dash ? (int) (dash - stream_id) : len);
}

/*
 * Is the name (not NUL-terminated) in the list?  NIL matches everything.
 */
static bool
name_in_list(List *list, const char *name, int len)
{
	ListCell   *lc;

	if (list == NIL)
		return true;
	foreach(lc, list)
	{
		const char *s = lfirst(lc);

		if ((int) strlen(s) == len && memcmp(s, name, len) == 0)
			return true;
	}
	return false;
}

/* Append "key": to a JSON object under construction. */
static inline void
json_key(StringInfo out, const char *key, bool first)
{
	if (!first)
		appendStringInfoString(out, ", ");
	escape_json(out, key);
	appendStringInfoString(out, ": ");
}

/* Append a text datum as a JSON string. */
static void
json_text(StringInfo out, Datum value, bool isnull)
{
	if (isnull)
		appendStringInfoString(out, "null");
	else
		escape_json(out, TextDatumGetCString(value));
}

/* Append a jsonb datum. */
static void
json_jsonb(StringInfo out, Datum value, bool isnull)
{
	Jsonb	   *jb;

	if (isnull)
	{
		appendStringInfoString(out, "null");
		return;
	}
	jb = DatumGetJsonbP(value);
	JsonbToCString(out, &jb->root, VARSIZE(jb));
}

/* Append where the document sits in the change stream. */
static void
json_position(StringInfo out, EsDecoderData *data, ReorderBufferTXN *txn)
{
	char		ts[MAXDATELEN + 1];

	json_key(out, "xid", false);
	appendStringInfo(out, "%u", txn->xid);
	json_key(out, "commit_lsn", false);
	appendStringInfo(out, "\"%X/%X\"", LSN_FORMAT_ARGS(txn->final_lsn));
	json_key(out, "commit_time", false);
	appendStringInfo(out, "\"%s\"",
					 JsonEncodeDateTime(ts, TimestampTzGetDatum(txn->xact_time.commit_time),
										TIMESTAMPTZOID, NULL));
	json_key(out, "index", false);
	appendStringInfo(out, INT64_FORMAT, data->index++);
}

/*
 * One inserted row of event_store.events: to the worker's sink, or as one
 * JSON document.
 */
static void
es_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
		  Relation relation, ReorderBufferChange *change)
{
	EsDecoderData *data = ctx->output_plugin_private;
	MemoryContext old;
	TupleDesc	desc;
	HeapTuple	tuple;
	Datum		values[Natts_event];
	bool		nulls[Natts_event];
	text	   *stream_id;
	text	   *event_type;
	char		ts[MAXDATELEN + 1];
	StringInfo	out;
	ErrorData  *perr;

	if (change->action != REORDER_BUFFER_CHANGE_INSERT ||
		change->data.tp.newtuple == NULL ||
		RelationGetRelid(relation) != decoded_events_relid())
		return;
	desc = RelationGetDescr(relation);
	if (desc->natts != Natts_events)
		return;

	old = MemoryContextSwitchTo(data->context);
	tuple = &change->data.tp.newtuple->tuple;
	values[0] = (Datum) 0;
	nulls[0] = true;			/* the global position is assigned later, by the worker */
	heap_deform_tuple(tuple, desc, &values[1], &nulls[1]);
	if (nulls[Anum_events_stream_id] || nulls[Anum_events_stream_version] ||
		nulls[Anum_events_event_id] || nulls[Anum_events_event_type])
	{
		MemoryContextSwitchTo(old);
		MemoryContextReset(data->context);
		return;
	}
	stream_id = DatumGetTextPP(values[Anum_events_stream_id]);
	event_type = DatumGetTextPP(values[Anum_events_event_type]);

	if (es_decoder_sink != NULL)
	{
		es_decoder_sink->event(es_decoder_sink->arg, txn, RelationGetRelid(relation),
							   stream_id,
							   DatumGetInt64(values[Anum_events_stream_version]),
							   DatumGetUUIDP(values[Anum_events_event_id]),
							   event_type);
		MemoryContextSwitchTo(old);
		MemoryContextReset(data->context);
		return;
	}

	if (!data->include_events ||
		!name_in_list(data->event_types, VARDATA_ANY(event_type), VARSIZE_ANY_EXHDR(event_type)))
		goto done;
	if (data->categories != NIL)
	{
		text	   *category = es_stream_category(VARDATA_ANY(stream_id),
												  VARSIZE_ANY_EXHDR(stream_id));

		if (!name_in_list(data->categories, VARDATA_ANY(category), VARSIZE_ANY_EXHDR(category)))
			goto done;
	}

	perr = present_or_mark(values, nulls);

	OutputPluginPrepareWrite(ctx, true);
	out = ctx->out;
	appendStringInfoChar(out, '{');
	json_key(out, "kind", true);
	appendStringInfoString(out, "\"event\"");
	json_key(out, "global_position", false);
	if (nulls[0])
		appendStringInfoString(out, "null");
	else
		appendStringInfo(out, INT64_FORMAT, DatumGetInt64(values[0]));
	json_key(out, "stream_id", false);
	json_text(out, values[Anum_events_stream_id], nulls[Anum_events_stream_id]);
	json_key(out, "stream_version", false);
	appendStringInfo(out, INT64_FORMAT, DatumGetInt64(values[Anum_events_stream_version]));
	json_key(out, "event_id", false);
	if (nulls[Anum_events_event_id])
		appendStringInfoString(out, "null");
	else
		appendStringInfo(out, "\"%s\"",
						 DatumGetCString(DirectFunctionCall1(uuid_out, values[Anum_events_event_id])));
	json_key(out, "event_type", false);
	json_text(out, values[Anum_events_event_type], nulls[Anum_events_event_type]);
	json_key(out, "schema_version", false);
	if (nulls[Anum_events_schema_version])
		appendStringInfoString(out, "null");
	else
		appendStringInfo(out, "%d", DatumGetInt32(values[Anum_events_schema_version]));
	json_key(out, "data", false);
	json_jsonb(out, values[Anum_events_data], nulls[Anum_events_data]);
	json_key(out, "metadata", false);
	json_jsonb(out, values[Anum_events_metadata], nulls[Anum_events_metadata]);
	json_key(out, "recorded_at", false);
	if (nulls[Anum_events_recorded_at])
		appendStringInfoString(out, "null");
	else
		appendStringInfo(out, "\"%s\"",
						 JsonEncodeDateTime(ts, values[Anum_events_recorded_at], TIMESTAMPTZOID, NULL));
	if (perr != NULL)
	{
		/* as stored, and why: a consumer is never stopped by one event */
		json_key(out, "presentation_error", false);
		appendStringInfoString(out, "{\"sqlstate\": ");
		escape_json(out, unpack_sql_state(perr->sqlerrcode));
		appendStringInfoString(out, ", \"message\": ");
		escape_json(out, perr->message ? perr->message : "");
		appendStringInfoChar(out, '}');
	}
	json_position(out, data, txn);
	appendStringInfoChar(out, '}');
	OutputPluginWrite(ctx, true);

done:
	MemoryContextSwitchTo(old);
	MemoryContextReset(data->context);
}

/*
 * A message written by publish() (prefix ES_MESSAGE_PREFIX): its body is
 * already a JSON object {"topic", "key", "payload"}; the document adds the
 * kind and the position.
 */
static void
es_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
		   XLogRecPtr message_lsn, bool transactional, const char *prefix,
		   Size message_size, const char *message)
{
	EsDecoderData *data = ctx->output_plugin_private;
	MemoryContext old;
	Jsonb	   *body;
	JsonbValue *topic;
	StringInfo	out;

	if (es_decoder_sink != NULL || !data->include_messages || !transactional ||
		strcmp(prefix, ES_MESSAGE_PREFIX) != 0)
		return;

	old = MemoryContextSwitchTo(data->context);

	/*
	 * Only what publish() wrote, signed for this transaction: anyone may call
	 * pg_logical_emit_message() with our prefix, and a forged or malformed
	 * message must neither reach consumers nor stop the slot.
	 */
	{
		char	   *json = es_publish_verify(txn->xid, message, message_size);

		if (json == NULL)
		{
			ereport(WARNING,
					(errcode(ERRCODE_ES_FORGED_MESSAGE),
					 errmsg("ignoring a logical decoding message with prefix \"%s\" that event_store.publish() did not write",
							ES_MESSAGE_PREFIX),
					 errdetail("Transaction %u, message at %X/%X.", txn->xid, LSN_FORMAT_ARGS(message_lsn))));
			goto done;
		}
		body = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
	}
	if (!JB_ROOT_IS_OBJECT(body))
		goto done;
	topic = getKeyJsonValueFromContainer(&body->root, "topic", 5, NULL);
	if (topic == NULL || topic->type != jbvString ||
		!name_in_list(data->topics, topic->val.string.val, topic->val.string.len))
		goto done;

	OutputPluginPrepareWrite(ctx, true);
	out = ctx->out;
	appendStringInfoChar(out, '{');
	json_key(out, "kind", true);
	appendStringInfoString(out, "\"message\"");
	json_key(out, "topic", false);
	escape_json(out, pnstrdup(topic->val.string.val, topic->val.string.len));
	{
		JsonbValue *key = getKeyJsonValueFromContainer(&body->root, "key", 3, NULL);
		JsonbValue *payload = getKeyJsonValueFromContainer(&body->root, "payload", 7, NULL);

		json_key(out, "key", false);
		if (key != NULL && key->type == jbvString)
			escape_json(out, pnstrdup(key->val.string.val, key->val.string.len));
		else
			appendStringInfoString(out, "null");
		json_key(out, "payload", false);
		if (payload != NULL)
		{
			Jsonb	   *p = JsonbValueToJsonb(payload);

			JsonbToCString(out, &p->root, VARSIZE(p));
		}
		else
			appendStringInfoString(out, "null");
	}
	json_key(out, "message_lsn", false);
	appendStringInfo(out, "\"%X/%X\"", LSN_FORMAT_ARGS(message_lsn));
	json_position(out, data, txn);
	appendStringInfoChar(out, '}');
	OutputPluginWrite(ctx, true);

done:
	MemoryContextSwitchTo(old);
	MemoryContextReset(data->context);
}
