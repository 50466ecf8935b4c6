/*-------------------------------------------------------------------------
 *
 * worker_log.c
 *	  The pipeline worker's writes into event_store.global_log: positions
 *	  given in bulk, without SQL.
 *
 * Each buffered event gets the next position: its row is added to a batch
 * of slots, and every BATCH_ROWS rows the batch goes into the heap in one
 * table_multi_insert() (one WAL record per page, as COPY does) and into the
 * log's indexes, through the executor's index insertion, which keeps the
 * unique indexes the backstop they are: an event given a second position
 * would fail the worker, never be stored twice.
 *
 * An event can only be in the log already where a rebuild ordered it from
 * the event table, or a restore brought the dumped log: the transactions
 * that committed before the worker started, before its rebuild, or before a
 * restore it waited for.  For those (probe), the log's unique key is looked
 * up first and an event found there keeps its position; everything later is
 * inserted without a look.
 *
 * The key is the event's id (version 0.2.0): ids are time-ordered (UUIDv7,
 * unless the application chose them), so each insertion lands at the
 * index's right edge, as the positions do, where the key of 0.1.0,
 * (stream_id, stream_version), put each event on the page of its stream --
 * a page written once per event and, after each checkpoint, once in full
 * into the WAL.  The log of 0.1.0 (six columns, no event_id) is still
 * written until ALTER EXTENSION UPDATE.
 *
 * Locking: RowExclusiveLock on the log and its indexes, as an INSERT takes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/hio.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "parser/parsetree.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "internal.h"
#include "pipeline.h"

/* Rows per multi-insert. */
#define BATCH_ROWS	1000

/* Columns of event_store.global_log: 0.1.0 has no event_id (the 7th). */
#define Natts_log_0_1	6
#define Natts_log	7

struct EsLogWriter
{
	Relation	log;
	Relation	event_key;		/* unique (event_id), or (stream_id, stream_version) in 0.1.0 */
	bool		has_event_id;	/* the log of 0.2.0 */
	IndexScanDesc probe_scan;	/* on it, begun at the first probe */
	TupleTableSlot *probe_slot;
	EState	   *estate;
	ResultRelInfo *rri;
	BulkInsertStateData bistate;	/* the target page; a ring once the batch is large */
	CommandId	cid;
	TupleDesc	desc;			/* the log's columns, not reference-counted (below) */
	int			nslots;			/* slots made so far */
	int			nbuffered;		/* rows in the batch */
	MemoryContext context;		/* where the writer and its slots live */
	MemoryContext batch_context;	/* the rows' texts, reset after each batch */
	int64		next;			/* the next position */
	TupleTableSlot *slots[BATCH_ROWS];	/* last: not zeroed (es_log_writer_begin) */
};

/*
 * Start writing positions from `next`, in the current transaction (with an
 * active snapshot, which the probes read with).  The writer lives in the
 * current memory context; es_log_writer_add may be called in a shorter one.
 */
EsLogWriter *
es_log_writer_begin(int64 next)
{
	const EsCatalog *cat;
	EsLogWriter *w;
	RangeTblEntry *rte;

	/*
	 * All but the slots' array zeroed: zeroing it too (8 kB, filled as it
	 * is used) was 8,000 instructions per wakeup, a tenth of the worker's
	 * work per event with single appends by one client (callgrind).
	 */
	w = palloc(sizeof(EsLogWriter));
	memset(w, 0, offsetof(EsLogWriter, slots));

	/*
	 * The key's OID is looked up once the log is locked: an ALTER EXTENSION
	 * UPDATE that rebuilt it (and that the lock waited for) is seen then.
	 */
	w->log = table_open(es_catalog()->log_relid, RowExclusiveLock);
	cat = es_catalog();
	w->has_event_id = (RelationGetDescr(w->log)->natts == Natts_log);
	if (!w->has_event_id && RelationGetDescr(w->log)->natts != Natts_log_0_1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a table of extension \"event_store\" has %d columns where %d were expected",
						RelationGetDescr(w->log)->natts, Natts_log),
				 errhint("Reinstall the extension; its tables must not be altered.")));
	w->event_key = index_open(cat->log_event_key, RowExclusiveLock);

	/*
	 * The batch's slots share a copy of the log's descriptor, which is not
	 * reference-counted: a slot made with the relation's own descriptor pins
	 * it in the transaction's resource owner, once per slot, and a resource
	 * owner files up to BATCH_ROWS entries of the same pointer into one
	 * chain of its hash table, walked to its end by every new entry (1.9 %
	 * of the worker's time with single appends by 8 clients, perf).
	 */
	w->desc = CreateTupleDescCopy(RelationGetDescr(w->log));
	w->estate = CreateExecutorState();
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(w->log);
	rte->relkind = w->log->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(w->estate, list_make1(rte));
	w->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(w->rri, w->log, 1, NULL, 0);
	ExecOpenIndices(w->rri, false);
	w->cid = GetCurrentCommandId(true);
	w->estate->es_output_cid = w->cid;

	/*
	 * The heap's target page is kept pinned from one multi-insert to the
	 * next, as GetBulkInsertState() does, but a bulk-write ring of buffers
	 * is made only once a transaction writes a full batch of BATCH_ROWS (a
	 * rebuild, a backlog): GetBulkInsertState() makes one per call, 2,048
	 * buffer numbers zeroed, 8,700 instructions per wakeup of the worker
	 * (callgrind), more than its ordering of a single event, for a ring
	 * that a wakeup's few pages never go round.  (A ring kept for the
	 * process would go round as the log grows, the worker writing out each
	 * page it takes back.)
	 */
	w->bistate.strategy = NULL;
	w->bistate.current_buf = InvalidBuffer;
	w->batch_context = AllocSetContextCreate(CurrentMemoryContext, "event_store log batch",
											 ALLOCSET_DEFAULT_SIZES);
	w->context = CurrentMemoryContext;
	w->next = next;
	return w;
}

/* Is the event in the log already? */
static bool
in_log(EsLogWriter *w, text *stream_id, int64 stream_version, const pg_uuid_t *event_id)
{
	ScanKeyData keys[2];
	int			nkeys = w->has_event_id ? 1 : 2;

	if (w->probe_scan == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(w->context);

		w->probe_scan = index_beginscan(w->log, w->event_key, GetActiveSnapshot(), nkeys, 0);
		w->probe_slot = table_slot_create(w->log, NULL);
		MemoryContextSwitchTo(old);
	}
	if (w->has_event_id)
		ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(event_id));
	else
	{
		ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(stream_id));
		ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(stream_version));
	}
	index_rescan(w->probe_scan, keys, nkeys, NULL, 0);
	return index_getnext_slot(w->probe_scan, ForwardScanDirection, w->probe_slot);
}

/* Write the batch: heap, then indexes. */
static void
flush(EsLogWriter *w)
{
	int			i;

	if (w->nbuffered == 0)
		return;
	if (w->bistate.strategy == NULL && w->nbuffered == BATCH_ROWS)
	{
		MemoryContext old = MemoryContextSwitchTo(w->context);

		w->bistate.strategy = GetAccessStrategy(BAS_BULKWRITE);
		MemoryContextSwitchTo(old);
	}
	table_multi_insert(w->log, w->slots, w->nbuffered, w->cid, 0, &w->bistate);
	for (i = 0; i < w->nbuffered; i++)
	{
		List	   *rechecks = ExecInsertIndexTuples(w->rri, w->slots[i], w->estate,
													 false, false, NULL, NIL);

		list_free(rechecks);
		ExecClearTuple(w->slots[i]);
	}
	w->nbuffered = 0;
	MemoryContextReset(w->batch_context);
}

/*
 * Give the event the next position, unless (with probe) it has one already.
 * Returns whether it took one.
 */
bool
es_log_writer_add(EsLogWriter *w, text *stream_id, int64 stream_version,
				  const pg_uuid_t *event_id, text *category, text *event_type,
				  XLogRecPtr commit_lsn, bool probe)
{
	TupleTableSlot *slot;
	MemoryContext old;

	if (probe && in_log(w, stream_id, stream_version, event_id))
		return false;
	if (w->nbuffered == w->nslots)
	{
		old = MemoryContextSwitchTo(w->context);
		w->slots[w->nslots++] = MakeSingleTupleTableSlot(w->desc, table_slot_callbacks(w->log));
		MemoryContextSwitchTo(old);
	}
	slot = w->slots[w->nbuffered++];
	ExecClearTuple(slot);
	old = MemoryContextSwitchTo(w->batch_context);
	slot->tts_values[0] = Int64GetDatum(w->next);
	slot->tts_values[1] = PointerGetDatum(DatumGetTextPCopy(PointerGetDatum(stream_id)));
	slot->tts_values[2] = Int64GetDatum(stream_version);
	slot->tts_values[3] = PointerGetDatum(DatumGetTextPCopy(PointerGetDatum(category)));
	slot->tts_values[4] = PointerGetDatum(DatumGetTextPCopy(PointerGetDatum(event_type)));
	slot->tts_values[5] = LSNGetDatum(commit_lsn);
	if (w->has_event_id)
	{
		pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

		*id = *event_id;
		slot->tts_values[6] = UUIDPGetDatum(id);
	}
	MemoryContextSwitchTo(old);
	memset(slot->tts_isnull, 0, sizeof(bool) * (w->has_event_id ? Natts_log : Natts_log_0_1));
	ExecStoreVirtualTuple(slot);
	w->next++;
	if (w->nbuffered == BATCH_ROWS)
		flush(w);
	return true;
}

/*
 * Write what is buffered and close; returns the next position.
 */
int64
es_log_writer_end(EsLogWriter *w)
{
	int64		next;
	int			i;

	flush(w);
	if (w->probe_scan != NULL)
	{
		index_endscan(w->probe_scan);
		ExecDropSingleTupleTableSlot(w->probe_slot);
	}
	for (i = 0; i < w->nslots; i++)
		ExecDropSingleTupleTableSlot(w->slots[i]);
	FreeTupleDesc(w->desc);
	if (w->bistate.current_buf != InvalidBuffer)
		ReleaseBuffer(w->bistate.current_buf);
	if (w->bistate.strategy != NULL)
		FreeAccessStrategy(w->bistate.strategy);
	table_finish_bulk_insert(w->log, 0);
	ExecCloseIndices(w->rri);
	ExecResetTupleTable(w->estate->es_tupleTable, false);
	FreeExecutorState(w->estate);
	index_close(w->event_key, NoLock);
	table_close(w->log, NoLock);
	MemoryContextDelete(w->batch_context);
	next = w->next;
	pfree(w);
	return next;
}
