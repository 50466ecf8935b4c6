/*-------------------------------------------------------------------------
 *
 * versioning.c
 *	  The BEFORE INSERT trigger of event_store.events (stream versioning,
 *	  expected-version check, idempotency by event_id) and the append-only
 *	  guards.
 *
 * Every append, whatever its path (append(), append_events(), a plain
 * INSERT, COPY, a logical-replication apply), goes through
 * event_store_version_events(), which fires ALWAYS, so that
 * session_replication_role cannot bypass it.  The append-only guards are
 * ALWAYS triggers too, at statement level (which refuses a statement even
 * when it matches no row, and TRUNCATE) and at row level (the
 * logical-replication apply worker fires row triggers only).
 *
 * Locking rules.  An append takes an ExclusiveLock on its stream's lock tag
 * (advisory class, field4 = ES_LOCKTAG_STREAM, key = 64-bit hash of the
 * stream id), and, when the event has an id, on the id's (ES_LOCKTAG_EVENT_ID,
 * after the stream's), from its checks to its insert (locks.c: held until the
 * next row or the end of the transaction, one of each per backend at most).
 * Under the locks the stream's head is read through the primary key
 * (stream_id, stream_version), and the id through its unique index, with a
 * dirty snapshot: it sees every committed row and every row of the own
 * transaction, including those the current command inserted, so a multi-row
 * INSERT numbers its rows correctly (the rows of an append_events() batch
 * after the first take the head from the row before instead, when that is
 * safe: frame_knows_head; and an append finds the head the last append()
 * or append_events() of the stream left in the shared cache of
 * stream_heads.c, when there is one); a row of another transaction in
 * progress is waited for (after letting go of the locks), and the checks
 * repeated.  So appends to one stream serialise on it, the same id sent to
 * two streams gives VE002 (never a unique violation), appends to different
 * streams never wait for each other (short of a hash collision, which only
 * serialises two streams' checks), and a transaction writing a million
 * streams holds one stream lock.  No row is written besides the event
 * itself.  The unique indexes remain the backstop: a bug here would raise a
 * unique violation, never a duplicate version.
 *
 * Under REPEATABLE READ and SERIALIZABLE, appending on top of a head that the
 * transaction's snapshot cannot see is a serialization failure (40001).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

#include "crypto.h"
#include "pipeline.h"
#include "projection.h"
#include "upcast.h"
#include "write.h"

PG_FUNCTION_INFO_V1(event_store_version_events);
PG_FUNCTION_INFO_V1(event_store_refuse_change);

/* The locks of the stream and of the event id being appended (locks.c). */
static EsLock stream_lock;
static EsLock event_id_lock;

/* The frame of the append() or append_events() call running its INSERT. */
EsAppendFrame *es_append_frame = NULL;

/* Calls of the trigger in this backend (see frame_knows_head). */
static uint64 trigger_calls = 0;

/* Statements running, one inside another (own_frame). */
int			es_statement_level = 0;
static ExecutorRun_hook_type prev_executor_run = NULL;
static ExecutorFinish_hook_type prev_executor_finish = NULL;

static void
count_executor_run(QueryDesc *queryDesc, ScanDirection direction, uint64 count,
				   bool execute_once)
{
	es_statement_level++;
	PG_TRY();
	{
		if (prev_executor_run)
			prev_executor_run(queryDesc, direction, count, execute_once);
		else
			standard_ExecutorRun(queryDesc, direction, count, execute_once);
	}
	PG_FINALLY();
	{
		es_statement_level--;
	}
	PG_END_TRY();
}

static void
count_executor_finish(QueryDesc *queryDesc)
{
	es_statement_level++;
	PG_TRY();
	{
		if (prev_executor_finish)
			prev_executor_finish(queryDesc);
		else
			standard_ExecutorFinish(queryDesc);
	}
	PG_FINALLY();
	{
		es_statement_level--;
	}
	PG_END_TRY();
}

/* What the head probe returns. */
typedef struct StreamHead
{
	int64		version;		/* 0: the stream has no event */
	TimestampTz recorded_at;
	TransactionId xmin;
} StreamHead;

typedef enum DuplicateCheck
{
	EVENT_ID_NEW,
	EVENT_ID_SAME_EVENT,
	EVENT_ID_OTHER_EVENT
} DuplicateCheck;

/*
 * Reset the per-transaction state when the top-level transaction ends.
 */
static void
versioning_xact_callback(XactEvent event, void *arg)
{
	(void) arg;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			es_append_frame = NULL;
			break;
		default:
			break;
	}
}

/*
 * Called once per process from _PG_init.
 */
void
es_versioning_init(void)
{
	RegisterXactCallback(versioning_xact_callback, NULL);
	es_heads_init();
	prev_executor_run = ExecutorRun_hook;
	ExecutorRun_hook = count_executor_run;
	prev_executor_finish = ExecutorFinish_hook;
	ExecutorFinish_hook = count_executor_finish;
}

/*
 * Streams of the category "event_store" (the id "event_store", or starting
 * with "event_store-") are the extension's own: forget() records
 * SubjectForgotten in event_store-subjects.  Only superusers write them (the
 * extension's functions run as its owner, a superuser; so do restores and
 * logical replicas).
 */
static void
check_stream_writer(text *stream_id)
{
	static const char prefix[] = "event_store";
	int			len = VARSIZE_ANY_EXHDR(stream_id);
	const char *id = VARDATA_ANY(stream_id);
	int			plen = sizeof(prefix) - 1;

	if (len >= plen && memcmp(id, prefix, plen) == 0 && (len == plen || id[plen] == '-') &&
		!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to append to stream \"%s\"", text_to_cstring(stream_id)),
				 errdetail("Streams of the category \"event_store\" are written by the extension itself."),
				 errhint("Use a stream of another category.")));
}

/*
 * A recorded_at the INSERT supplies: finite (a time in the future, infinity
 * above all, would pin every later event of the stream there, and as_of
 * would never return them), and only from a superuser: a restore, an
 * import, a logical replica.  Appends get their transaction's time.
 */
static void
check_supplied_recorded_at(TimestampTz ts)
{
	if (TIMESTAMP_NOT_FINITE(ts))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("recorded_at of an event must be a finite time"),
				 errdetail("Got %s.", timestamptz_to_str(ts))));
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to set recorded_at of an event"),
				 errdetail("Only superusers supply recorded_at (a restore, an import, a logical replica); an append records its transaction's start time."),
				 errhint("Leave recorded_at out of the INSERT.")));
}

/*
 * Validate a JSON document that must be an object.
 */
static Jsonb *
check_object(Datum value, const char *what)
{
	Jsonb	   *jb = DatumGetJsonbP(value);

	if (!JB_ROOT_IS_OBJECT(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", what),
				 errdetail("Got a JSON %s.",
						   JB_ROOT_IS_ARRAY(jb) && !JB_ROOT_IS_SCALAR(jb) ? "array" : "scalar")));
	return jb;
}

/*
 * Add event_store.correlation_id / causation_id to the metadata when they are
 * set and the metadata does not carry its own.
 */
static Jsonb *
add_trace_ids(Jsonb *metadata)
{
	bool		corr = es_correlation_id != NULL && es_correlation_id[0] != '\0';
	bool		caus = es_causation_id != NULL && es_causation_id[0] != '\0';
	StringInfoData buf;
	Datum		ids;

	if (!corr && !caus)
		return metadata;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	if (corr)
	{
		escape_json(&buf, "correlation_id");
		appendStringInfoChar(&buf, ':');
		escape_json(&buf, es_correlation_id);
	}
	if (caus)
	{
		if (corr)
			appendStringInfoChar(&buf, ',');
		escape_json(&buf, "causation_id");
		appendStringInfoChar(&buf, ':');
		escape_json(&buf, es_causation_id);
	}
	appendStringInfoChar(&buf, '}');
	ids = DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
	/* the right operand wins: the event's own metadata keeps its keys */
	return DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, ids, JsonbPGetDatum(metadata)));
}

/*
 * A new event id: a UUID version 7 (RFC 9562), so that the unique index on
 * event_id grows at its right edge instead of being written at random.
 */
static Datum
new_event_id(void)
{
	pg_uuid_t  *uuid = palloc(sizeof(pg_uuid_t));
	uint64		unix_ms;
	int			i;

	unix_ms = (uint64) (GetCurrentTimestamp() / 1000) +
		(uint64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
	es_random_bytes(uuid->data + 6, UUID_LEN - 6);
	for (i = 0; i < 6; i++)
		uuid->data[i] = (unsigned char) (unix_ms >> (40 - 8 * i));
	uuid->data[6] = (uuid->data[6] & 0x0f) | 0x70;	/* version 7 */
	uuid->data[8] = (uuid->data[8] & 0x3f) | 0x80;	/* variant RFC 9562 */
	return UUIDPGetDatum(uuid);
}

/*
 * The key of a stream's lock, and of an event id's.
 */
static inline uint64
stream_lock_key(text *stream_id)
{
	return hash_bytes_extended((const unsigned char *) VARDATA_ANY(stream_id),
							   VARSIZE_ANY_EXHDR(stream_id), 0);
}

static inline uint64
event_id_lock_key(Datum event_id)
{
	return hash_bytes_extended(DatumGetUUIDP(event_id)->data, UUID_LEN, 0);
}

/*
 * Find the newest event of a stream: visible to the (MVCC) snapshot, or,
 * without one, settled (es_read_settled: a row of a transaction still in
 * progress returns false with *wait_for set to that transaction, which the
 * caller waits for, holding no lock of ours, before it probes again).
 */
static bool
probe_head(Relation events, Relation stream_index, text *stream_id,
		   Snapshot snapshot, StreamHead *head, TransactionId *wait_for)
{
	TupleTableSlot *slot = table_slot_create(events, NULL);
	ScanKeyData key;
	bool		found;

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(stream_id));
	if (snapshot == NULL)
		found = es_read_settled(events, stream_index, &key, 1, BackwardScanDirection, false,
								slot, wait_for);
	else
	{
		IndexScanDesc scan = index_beginscan(events, stream_index, snapshot, 1, 0);

		index_rescan(scan, &key, 1, NULL, 0);
		found = index_getnext_slot(scan, BackwardScanDirection, slot);
		index_endscan(scan);
	}
	if (found)
	{
		bool		isnull;
		bool		should_free;
		HeapTuple	tuple;

		head->version = DatumGetInt64(slot_getattr(slot, Anum_events_stream_version, &isnull));
		head->recorded_at = DatumGetTimestampTz(slot_getattr(slot, Anum_events_recorded_at, &isnull));
		tuple = ExecFetchSlotHeapTuple(slot, false, &should_free);
		head->xmin = HeapTupleHeaderGetXmin(tuple->t_data);
		if (should_free)
			heap_freetuple(tuple);
	}
	else
	{
		head->version = 0;
		head->recorded_at = DT_NOBEGIN;
		head->xmin = InvalidTransactionId;
	}
	ExecDropSingleTupleTableSlot(slot);
	return found;
}

/*
 * The newest version of a stream visible to the (MVCC) snapshot, 0 for
 * none.  recorded_at, when not NULL, receives the newest event's time.
 */
int64
es_stream_head(Relation events, Relation stream_index, text *stream_id,
			   Snapshot snapshot, TimestampTz *recorded_at)
{
	StreamHead	head;

	Assert(snapshot != NULL);
	probe_head(events, stream_index, stream_id, snapshot, &head, NULL);
	if (recorded_at)
		*recorded_at = head.recorded_at;
	return head.version;
}

/*
 * Find an event by id, settled (es_read_settled); on success the slot holds
 * a materialised copy of the row.  A row of a transaction in progress is
 * not found: *wait_for is set to that transaction instead.
 */
static bool
find_event_by_id(Relation events, Datum event_id, TupleTableSlot *slot,
				 TransactionId *wait_for)
{
	Relation	idx = index_open(es_catalog()->event_id_index, AccessShareLock);
	ScanKeyData key;
	bool		found;

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_UUID_EQ, event_id);
	found = es_read_settled(events, idx, &key, 1, ForwardScanDirection, false, slot, wait_for);
	index_close(idx, AccessShareLock);
	return found;
}

/*
 * Is the stored event with this id the same event (stream, type, schema
 * version and data) as the one being appended?  Metadata is not compared: a
 * retry may carry other tracing metadata.  When a transaction in progress
 * is inserting an event with the id, *wait_for is set to it (and the result
 * is EVENT_ID_NEW): the caller waits for it and checks again.
 */
static DuplicateCheck
check_event_id(Relation events, Datum event_id, text *stream_id, text *event_type,
			   int32 schema_version, Jsonb *data, int64 *stored_version,
			   TransactionId *wait_for)
{
	TupleTableSlot *slot = table_slot_create(events, NULL);
	DuplicateCheck result = EVENT_ID_NEW;

	if (find_event_by_id(events, event_id, slot, wait_for))
	{
		Datum	   *v;

		slot_getallattrs(slot);
		v = slot->tts_values;
		*stored_version = DatumGetInt64(v[Anum_events_stream_version - 1]);
		if (DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID,
												 v[Anum_events_stream_id - 1],
												 PointerGetDatum(stream_id))) &&
			DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID,
												 v[Anum_events_event_type - 1],
												 PointerGetDatum(event_type))) &&
			DatumGetInt32(v[Anum_events_schema_version - 1]) == schema_version &&
			DatumGetBool(DirectFunctionCall2(jsonb_eq,
											 es_plain_data(v[Anum_events_data - 1],
														   v[Anum_events_metadata - 1]),
											 JsonbPGetDatum(data))))
			result = EVENT_ID_SAME_EVENT;
		else
			result = EVENT_ID_OTHER_EVENT;
	}
	ExecDropSingleTupleTableSlot(slot);
	return result;
}

/*
 * What the table's triggers allow, in one pass over them:
 *
 * *last: is our trigger the last BEFORE INSERT row trigger of the table?
 * Then a row it returns is inserted, or the statement fails: no later
 * trigger can skip it.  (Triggers fire in the order of their names, the
 * order of the relation's trigger array.)  Disabled triggers count too.
 *
 * *guarded: can no row of the table be updated or deleted?  So while both
 * append-only guards fire ALWAYS: the statement-level append_only and the
 * row-level append_only_rows (the only one the logical-replication apply
 * worker fires), both BEFORE UPDATE OR DELETE of every row (no WHEN, no
 * UPDATE OF), with the same function.  A superuser who disables them may
 * delete a stream's newest event, which no entry of the cache of heads
 * would learn of.  (Enabling them again is an ALTER TABLE, which empties
 * the cache.)  Before the update to 0.2.0 there is no row guard: no cache.
 */
static void
examine_triggers(Relation events, Trigger *ours, bool *last, bool *guarded)
{
	TriggerDesc *td = events->trigdesc;
	bool		after_ours = false;
	Oid			statement_fn = InvalidOid;
	Oid			row_fn = InvalidOid;
	int			i;

	*last = true;
	for (i = 0; td != NULL && i < td->numtriggers; i++)
	{
		Trigger    *t = &td->triggers[i];

		if (after_ours && TRIGGER_FOR_ROW(t->tgtype) && TRIGGER_FOR_BEFORE(t->tgtype) &&
			TRIGGER_FOR_INSERT(t->tgtype))
			*last = false;
		if (t->tgoid == ours->tgoid)
			after_ours = true;
		if (t->tgenabled != TRIGGER_FIRES_ALWAYS || !TRIGGER_FOR_BEFORE(t->tgtype) ||
			!TRIGGER_FOR_UPDATE(t->tgtype) || !TRIGGER_FOR_DELETE(t->tgtype) ||
			t->tgqual != NULL || t->tgnattr != 0)
			continue;			/* (a WHEN clause or UPDATE OF columns lets rows pass) */
		if (!TRIGGER_FOR_ROW(t->tgtype) && strcmp(t->tgname, "append_only") == 0)
			statement_fn = t->tgfoid;
		else if (TRIGGER_FOR_ROW(t->tgtype) && strcmp(t->tgname, "append_only_rows") == 0)
			row_fn = t->tgfoid;
	}
	*guarded = OidIsValid(statement_fn) && statement_fn == row_fn;
}

/*
 * Does the frame know the stream's head, so that this row (call number
 * `call`) need not look it up?  It does when the previous call of the
 * trigger in this backend versioned a row of the frame's stream, in the
 * current subtransaction, and nothing can have kept that row out of the
 * table but an error that fails this subtransaction too: the row was one of
 * the frame's own INSERT (own_frame: our statement has no ON CONFLICT, so a
 * unique index refuses it only with an error; a row of a nested INSERT may
 * be skipped by its ON CONFLICT or undone with its subtransaction, and is
 * never the frame's), and our trigger fires last (no later trigger can
 * skip the row).  The row is in the
 * table when the next row's trigger fires: the executor inserts a
 * statement's rows one by one (COPY batches them, but runs in no frame).
 * And while our transaction has it in progress, no other can append to the
 * stream.  Usually the previous call is the statement's previous row.
 */
static bool
frame_knows_head(EsAppendFrame *frame, text *stream_id, uint64 call, bool last)
{
	return frame != NULL && last && frame->head_call != 0 && frame->head_call == call - 1 &&
		es_same_text(frame->stream_id, stream_id);
}

/*
 * The stream's head from the shared cache (stream_heads.c), if it has one
 * it can vouch for: committed, or the current transaction's.  A head of a
 * transaction in progress sets *wait_for instead (the caller waits and
 * looks again).  Either way the entry is removed (*taken): there is no
 * claim about the stream while its next event is inserted.  Not under
 * REPEATABLE READ or SERIALIZABLE, which need the head's xmin.
 */
static bool
cached_head(const EsHeadKey *key, StreamHead *head, bool *exists, TransactionId *wait_for,
			bool *taken)
{
	int64		version;
	TimestampTz recorded_at;
	TransactionId xid;

	if (IsolationUsesXactSnapshot())
		return false;
	*taken = true;
	if (!es_head_take(key, &version, &recorded_at, &xid))
		return false;
	if (xid != FrozenTransactionId && !TransactionIdIsCurrentTransactionId(xid))
	{
		/*
		 * Not settled at its transaction's end (that takes a crash, which
		 * empties shared memory): not looked up in pg_xact, which may be
		 * truncated.
		 */
		if (TransactionIdIsNormal(TransactionXmin) && TransactionIdPrecedes(xid, TransactionXmin))
			return false;
		if (TransactionIdIsInProgress(xid))
		{
			*wait_for = xid;
			return false;
		}
		if (!TransactionIdDidCommit(xid))
			return false;
	}
	head->version = version;
	head->recorded_at = recorded_at;
	head->xmin = InvalidTransactionId;	/* (not needed outside those levels) */
	*exists = true;
	return true;
}

/*
 * After append() or append_events() inserted its rows: publish the stream's
 * head to the shared cache, if the last trigger call was the frame's last
 * row, in the frame's subtransaction, with nothing after it that could have
 * kept the row out (see frame_knows_head), and the stream still locked.
 */
void
es_publish_frame_head(EsAppendFrame *frame)
{
	if (frame->head_cached && frame->head_call == trigger_calls &&
		frame->subid == GetCurrentSubTransactionId() &&
		es_lock_held_on(&stream_lock, ES_LOCKTAG_STREAM, frame->head_key.hash))
		es_head_publish(&frame->head_key, frame->head_version, frame->head_recorded_at);
}

/*
 * How deep in triggers this call is (pg_trigger_depth()).
 */
int
es_trigger_depth(void)
{
	LOCAL_FCINFO(fcinfo, 0);

	InitFunctionCallInfoData(*fcinfo, NULL, 0, InvalidOid, NULL, NULL);
	return DatumGetInt32(pg_trigger_depth(fcinfo));
}

/*
 * The frame of the running append() or append_events() if this call
 * versions a row of its own INSERT: in the INSERT's executor, not in a
 * statement nested in it (a function of a trigger, a constraint, a default
 * or an index expression running an INSERT, which ON CONFLICT may skip, or
 * a COPY); one trigger level below the statement; in its subtransaction
 * (not one a function started, which may be rolled back).
 */
static inline EsAppendFrame *
own_frame(void)
{
	EsAppendFrame *frame = es_append_frame;

	if (frame == NULL || frame->level != es_statement_level ||
		frame->depth != es_trigger_depth() ||
		frame->subid != GetCurrentSubTransactionId())
		return NULL;
	return frame;
}

/*
 * Tell the running append() or append_events() the version an event of its
 * stream got.
 */
static inline void
record_version(EsAppendFrame *frame, text *stream_id, int64 version)
{
	if (frame != NULL && frame->seen < frame->rows && es_same_text(frame->stream_id, stream_id))
	{
		frame->seen++;
		frame->version = Max(frame->version, version);
	}
}

/*
 * Raise the optimistic-concurrency error: the stream is not at the version
 * the caller expected.
 */
void
es_report_wrong_version(text *stream_id, int64 actual, int64 expected)
{
	ereport(ERROR,
			(errcode(ERRCODE_ES_WRONG_EXPECTED_VERSION),
			 errmsg("wrong expected version for stream \"%s\"", text_to_cstring(stream_id)),
			 errdetail("Stream \"%s\" is at version " INT64_FORMAT ", but version " INT64_FORMAT " was expected.",
					   text_to_cstring(stream_id), actual, expected),
			 errhint("Load the stream again, decide again, and retry with the version you loaded.")));
}

/*
 * A schema version is at least 1 (the trigger, and append_events for the
 * elements of a batch).
 */
void
es_check_schema_version(int32 schema_version)
{
	if (schema_version < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schema_version must be at least 1"),
				 errdetail("Got %d.", schema_version)));
}

/*
 * BEFORE INSERT FOR EACH ROW on event_store.events: validate the event, fill
 * in what the INSERT left out, skip a re-sent event, check the expected
 * version and assign the stream version.
 */
Datum
event_store_version_events(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	events;
	TupleDesc	tupdesc;
	Datum		values[Natts_events];
	bool		nulls[Natts_events];
	text	   *stream_id;
	text	   *event_type;
	Jsonb	   *data;
	int32		schema_version;
	Relation	stream_index;
	StreamHead	head;
	bool		exists = false;
	DuplicateCheck duplicate = EVENT_ID_NEW;
	int64		stored_version = 0;
	uint64		call = ++trigger_calls;
	EsAppendFrame *frame = own_frame();
	bool		known_head;
	uint64		stream_key;
	EsHeadKey	cache_key;
	bool		keyed;
	bool		cached;
	bool		taken = false;
	bool		last;
	bool		guarded;		/* no row can be updated or deleted */

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("event_store._version_events() must be fired BEFORE INSERT FOR EACH ROW")));

	events = trigdata->tg_relation;
	tupdesc = RelationGetDescr(events);
	if (RelationGetRelid(events) != es_catalog()->events_relid || tupdesc->natts != Natts_events)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("event_store._version_events() fired on relation \"%s\"",
						RelationGetRelationName(events)),
				 errdetail("It versions the rows of event_store.events only.")));
	if (es_in_inline_projection())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("an inline projection's handler cannot append events"),
				 errdetail("It runs inside the append of another event, which holds its stream until it is inserted."),
				 errhint("Append from an asynchronous projection's handler instead.")));

	heap_deform_tuple(trigdata->tg_trigtuple, tupdesc, values, nulls);

	/* validate and complete the event */
	stream_id = es_check_identifier(values[Anum_events_stream_id - 1],
								 nulls[Anum_events_stream_id - 1], "stream_id");
	event_type = es_check_identifier(values[Anum_events_event_type - 1],
								  nulls[Anum_events_event_type - 1], "event_type");
	values[Anum_events_stream_id - 1] = PointerGetDatum(stream_id);
	values[Anum_events_event_type - 1] = PointerGetDatum(event_type);
	check_stream_writer(stream_id);
	if (!nulls[Anum_events_recorded_at - 1])
		check_supplied_recorded_at(DatumGetTimestampTz(values[Anum_events_recorded_at - 1]));

	if (nulls[Anum_events_data - 1])
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event data must not be null"),
				 errhint("Use an empty JSON object for an event without data.")));
	data = check_object(values[Anum_events_data - 1], "event data");
	values[Anum_events_data - 1] = JsonbPGetDatum(data);

	if (nulls[Anum_events_metadata - 1])
	{
		values[Anum_events_metadata - 1] =
			DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
		nulls[Anum_events_metadata - 1] = false;
	}
	values[Anum_events_metadata - 1] =
		JsonbPGetDatum(add_trace_ids(check_object(values[Anum_events_metadata - 1],
												  "event metadata")));

	if (nulls[Anum_events_schema_version - 1])
	{
		/* the type's current version: where its upcaster chain ends */
		values[Anum_events_schema_version - 1] = Int32GetDatum(es_current_schema_version(event_type));
		nulls[Anum_events_schema_version - 1] = false;
	}
	schema_version = DatumGetInt32(values[Anum_events_schema_version - 1]);
	es_check_schema_version(schema_version);

	if (!nulls[Anum_events_stream_version - 1] &&
		DatumGetInt64(values[Anum_events_stream_version - 1]) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream_version must be at least 1"),
				 errdetail("Got " INT64_FORMAT ".",
						   DatumGetInt64(values[Anum_events_stream_version - 1])),
				 errhint("A stream's first event has version 1; leave stream_version out to append at the end.")));

	/* the previous row's event id lock: that row is in the index now */
	es_lock_release(&event_id_lock);

	/* encrypt protected fields (crypto_fields.c); `data` stays in clear for the idempotency check */
	es_protect_event(values, nulls);

	/* the previous row of our statement left the head: no need to look it up */
	examine_triggers(events, trigdata->tg_trigger, &last, &guarded);
	known_head = guarded && frame_knows_head(frame, stream_id, call, last) && trigger_calls == call;
	stream_key = stream_lock_key(stream_id);
	keyed = es_head_key(events, stream_id, stream_key, &cache_key);

	/*
	 * The cache is read and written only while no insert can pass the
	 * trigger (it fires ALWAYS, whatever session_replication_role) or be
	 * skipped after it (it fires last), and no row can be updated or
	 * deleted; every insert it sees removes the stream's entry regardless.
	 */
	cached = keyed && last && guarded && trigdata->tg_trigger->tgenabled == TRIGGER_FIRES_ALWAYS;

	/*
	 * From here until the row is in the indexes, the stream (and the event
	 * id) are ours: the locks are held until the next row's trigger or the
	 * end of the transaction (locks.c).  A row of a transaction in progress,
	 * of the stream or with the id, is waited for without our locks, then
	 * everything is checked again.
	 */
	for (;;)
	{
		TransactionId wait_for = InvalidTransactionId;

		taken = false;			/* (by cached_head, under this turn's lock) */
		es_lock_take(&stream_lock, ES_LOCKTAG_STREAM, stream_key);
		if (!nulls[Anum_events_event_id - 1])
		{
			es_lock_take(&event_id_lock, ES_LOCKTAG_EVENT_ID,
						 event_id_lock_key(values[Anum_events_event_id - 1]));
			duplicate = check_event_id(events, values[Anum_events_event_id - 1], stream_id,
									   event_type, schema_version, data, &stored_version,
									   &wait_for);
		}
		if (!TransactionIdIsValid(wait_for) && duplicate == EVENT_ID_NEW)
		{
			if (known_head)
			{
				head.version = frame->head_version;
				head.recorded_at = frame->head_recorded_at;
				head.xmin = InvalidTransactionId;	/* ours */
				exists = true;
			}
			else if (!(cached && cached_head(&cache_key, &head, &exists, &wait_for, &taken)) &&
					 !TransactionIdIsValid(wait_for))
			{
				stream_index = index_open(es_catalog()->stream_index, AccessShareLock);
				exists = probe_head(events, stream_index, stream_id, NULL, &head, &wait_for);
				index_close(stream_index, AccessShareLock);
			}
		}
		if (!TransactionIdIsValid(wait_for))
			break;
		es_lock_release(&event_id_lock);
		es_lock_release(&stream_lock);
		XactLockTableWait(wait_for, events, NULL, XLTW_None);
		known_head = false;		/* (still right, but rare enough to look again) */
	}

	/* no claim about the stream's head while its next event is being inserted */
	if (keyed && !taken)
	{
		int64		version;
		TimestampTz recorded_at;
		TransactionId xid;

		(void) es_head_take(&cache_key, &version, &recorded_at, &xid);
	}

	if (nulls[Anum_events_event_id - 1])
	{
		values[Anum_events_event_id - 1] = new_event_id();
		nulls[Anum_events_event_id - 1] = false;
	}
	else
	{
		switch (duplicate)
		{
			case EVENT_ID_NEW:
				break;
			case EVENT_ID_SAME_EVENT:
				/* re-sent: keep the original, insert nothing */
				record_version(frame, stream_id, stored_version);
				return PointerGetDatum(NULL);
			case EVENT_ID_OTHER_EVENT:
				ereport(ERROR,
						(errcode(ERRCODE_ES_EVENT_ID_CONFLICT),
						 errmsg("event id %s is already used by a different event",
								DatumGetCString(DirectFunctionCall1(uuid_out,
																	values[Anum_events_event_id - 1]))),
						 errdetail("An event may be re-sent with its id only with the same stream, type, schema version and data."),
						 errhint("Give a new event a new id.")));
		}
	}

	/*
	 * Under REPEATABLE READ and SERIALIZABLE, a head the snapshot cannot see
	 * is a serialization failure, checked first: a retry of the whole
	 * transaction is what helps, not reloading in the same snapshot.
	 */
	if (exists && !known_head && IsolationUsesXactSnapshot() &&
		!TransactionIdIsCurrentTransactionId(head.xmin) &&
		XidInMVCCSnapshot(head.xmin, GetTransactionSnapshot()))
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not serialize access due to concurrent append to stream \"%s\"",
						text_to_cstring(stream_id)),
				 errdetail("Version " INT64_FORMAT " of the stream was committed after this transaction's snapshot was taken.",
						   head.version),
				 errhint("The transaction might succeed if retried.")));

	if (!nulls[Anum_events_stream_version - 1])
	{
		int64		wanted = DatumGetInt64(values[Anum_events_stream_version - 1]);

		if (wanted != head.version + 1)
			es_report_wrong_version(stream_id, head.version, wanted - 1);
	}

	/*
	 * The recorded time: the transaction's start, never earlier than the
	 * stream's previous event, so that "as of" reads see a prefix of the
	 * stream.  A supplied time (an import, a restore) must keep that order.
	 */
	if (nulls[Anum_events_recorded_at - 1])
	{
		TimestampTz ts = GetCurrentTransactionStartTimestamp();

		values[Anum_events_recorded_at - 1] = TimestampTzGetDatum(Max(ts, head.recorded_at));
		nulls[Anum_events_recorded_at - 1] = false;
	}
	else if (exists &&
			 DatumGetTimestampTz(values[Anum_events_recorded_at - 1]) < head.recorded_at)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("recorded_at of an event must not be earlier than that of the previous event in its stream"),
				 errdetail("Stream \"%s\" version " INT64_FORMAT " was recorded at %s.",
						   text_to_cstring(stream_id), head.version,
						   timestamptz_to_str(head.recorded_at))));

	values[Anum_events_stream_version - 1] = Int64GetDatum(head.version + 1);
	nulls[Anum_events_stream_version - 1] = false;
	record_version(frame, stream_id, head.version + 1);
	es_xact_appended = true;	/* wake the pipeline worker at commit */

	/* inline projections (projection.c): their read models change with the append */
	es_apply_inline(values, nulls);
	if (!es_lock_held(&stream_lock))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("an inline projection released the lock of the append to stream \"%s\"",
						text_to_cstring(stream_id)),
				 errdetail("A handler called pg_advisory_unlock_all() or released the extension's advisory locks."),
				 errhint("Do not release advisory locks you did not take in an inline projection's handler.")));

	/* the head after this row, for the statement's next row (frame_knows_head) */
	if (frame != NULL && frame == es_append_frame && trigger_calls == call &&
		es_same_text(frame->stream_id, stream_id))
	{
		frame->head_call = call;
		frame->head_version = head.version + 1;
		frame->head_recorded_at = DatumGetTimestampTz(values[Anum_events_recorded_at - 1]);
		frame->head_cached = cached;
		if (frame->head_cached)
		{
			frame->head_key = cache_key;
			frame->head_key.id = VARDATA_ANY(frame->stream_id);	/* (outlives the row) */
		}
	}

	return PointerGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

/*
 * BEFORE UPDATE OR DELETE OR TRUNCATE FOR EACH STATEMENT on
 * event_store.events: the log is append-only.
 */
Datum
event_store_refuse_change(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	const char *op;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("event_store._refuse_change() must be called as a trigger")));

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		op = "UPDATE";
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		op = "DELETE";
	else if (TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
		op = "TRUNCATE";
	else
		op = "this operation";

	ereport(ERROR,
			(errcode(ERRCODE_ES_APPEND_ONLY),
			 errmsg("%s on event_store.%s is not allowed", op,
					RelationGetRelationName(trigdata->tg_relation)),
			 errdetail("The event log is append-only: events are never updated, deleted or truncated."),
			 errhint("Append an event that corrects or compensates instead.")));
	PG_RETURN_NULL();			/* not reached */
}
