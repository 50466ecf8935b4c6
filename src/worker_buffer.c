/*-------------------------------------------------------------------------
 *
 * worker_buffer.c
 *	  The pipeline worker's buffer: the events of one round, as the output
 *	  plugin hands them over, per committed transaction, in decoding order.
 *
 * Memory holds at most SPILL_EVENTS events: before more arrive (one large
 * transaction delivers all of its events at its commit), those in memory
 * are appended to a temporary file, so that the worker's memory stays
 * bounded whatever the transaction's size; the first `nspilled` events are
 * read back from the file, in order, when their positions are written
 * (es_buffer_event).  Per event the buffer keeps its stream id, version, id
 * and type: about 1 MB for SPILL_EVENTS events with short ids.
 *
 * Locking: none (one process).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "storage/buffile.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "pipeline.h"

#define SPILL_EVENTS	10000

typedef struct DecodeBuffer
{
	MemoryContext context;		/* the transactions */
	MemoryContext events_context;	/* the events in memory, and their texts */
	EsBufEvent *events;			/* events [nspilled, nspilled + nevents) */
	int			nevents;
	int			maxevents;
	int64		nspilled;
	BufFile    *spill;
	EsBufTxn   *txns;
	int			ntxns;
	int			maxtxns;
	int64		txn_first;		/* first event of the transaction being decoded */
	int64		next_read;		/* es_buffer_event: the next event to hand out */
	EsBufEvent	spilled;		/* ... and the last one read back from the file */
} DecodeBuffer;

/* Events buffered in the round, in memory and spilled. */
#define BUF_TOTAL()		(buf.nspilled + buf.nevents)

static DecodeBuffer buf;

static void
spill_write(const void *p, size_t len)
{
	BufFileWrite(buf.spill, (void *) p, len);
}

/* Move the events in memory to the end of the spill file. */
static void
spill_events(void)
{
	int			i;

	if (buf.spill == NULL)
	{
		ResourceOwner save = CurrentResourceOwner;
		MemoryContext old = MemoryContextSwitchTo(buf.context);

		/* the file lives across the round's transactions: no transaction owns it */
		CurrentResourceOwner = NULL;
		buf.spill = BufFileCreateTemp(true);
		CurrentResourceOwner = save;
		MemoryContextSwitchTo(old);
	}
	for (i = 0; i < buf.nevents; i++)
	{
		EsBufEvent   *e = &buf.events[i];
		uint32		slen = VARSIZE_ANY_EXHDR(e->stream_id);
		uint32		tlen = VARSIZE_ANY_EXHDR(e->event_type);

		spill_write(&e->relid, sizeof(e->relid));
		spill_write(&e->stream_version, sizeof(e->stream_version));
		spill_write(&e->event_id, sizeof(e->event_id));
		spill_write(&slen, sizeof(slen));
		spill_write(VARDATA_ANY(e->stream_id), slen);
		spill_write(&tlen, sizeof(tlen));
		spill_write(VARDATA_ANY(e->event_type), tlen);
	}
	buf.nspilled += buf.nevents;
	buf.nevents = 0;
	MemoryContextReset(buf.events_context);
	buf.events = MemoryContextAlloc(buf.events_context, sizeof(EsBufEvent) * buf.maxevents);
}

/* Read back the next spilled event into *e (its texts palloc'd in the current context). */
static void
spill_read(EsBufEvent *e)
{
	uint32		len;

	if (BufFileRead(buf.spill, &e->relid, sizeof(e->relid)) != sizeof(e->relid) ||
		BufFileRead(buf.spill, &e->stream_version, sizeof(e->stream_version)) != sizeof(e->stream_version) ||
		BufFileRead(buf.spill, &e->event_id, sizeof(e->event_id)) != sizeof(e->event_id) ||
		BufFileRead(buf.spill, &len, sizeof(len)) != sizeof(len))
		elog(ERROR, "event_store pipeline: could not read the spilled events");
	e->stream_id = palloc(VARHDRSZ + len);
	SET_VARSIZE(e->stream_id, VARHDRSZ + len);
	if (BufFileRead(buf.spill, VARDATA(e->stream_id), len) != len ||
		BufFileRead(buf.spill, &len, sizeof(len)) != sizeof(len))
		elog(ERROR, "event_store pipeline: could not read the spilled events");
	e->event_type = palloc(VARHDRSZ + len);
	SET_VARSIZE(e->event_type, VARHDRSZ + len);
	if (BufFileRead(buf.spill, VARDATA(e->event_type), len) != len)
		elog(ERROR, "event_store pipeline: could not read the spilled events");
}

/* Sink: one event of the transaction being committed. */
static void
sink_event(void *arg, ReorderBufferTXN *txn, Oid relid, text *stream_id,
		   int64 stream_version, const pg_uuid_t *event_id, text *event_type)
{
	MemoryContext old;
	EsBufEvent   *e;

	(void) arg;
	(void) txn;
	if (buf.nevents == SPILL_EVENTS)
		spill_events();
	old = MemoryContextSwitchTo(buf.events_context);
	if (buf.nevents == buf.maxevents)
	{
		buf.maxevents *= 2;
		buf.events = repalloc_huge(buf.events, sizeof(EsBufEvent) * buf.maxevents);
	}
	e = &buf.events[buf.nevents++];
	e->relid = relid;
	e->stream_id = palloc(VARSIZE_ANY(stream_id));
	memcpy(e->stream_id, stream_id, VARSIZE_ANY(stream_id));
	e->stream_version = stream_version;
	e->event_id = *event_id;
	e->event_type = palloc(VARSIZE_ANY(event_type));
	memcpy(e->event_type, event_type, VARSIZE_ANY(event_type));
	MemoryContextSwitchTo(old);
}

/* Sink: a transaction committed; its events (if any) form one EsBufTxn. */
static void
sink_commit(void *arg, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
	(void) arg;
	if (BUF_TOTAL() > buf.txn_first)
	{
		EsBufTxn	   *t;

		if (buf.ntxns == buf.maxtxns)
		{
			buf.maxtxns *= 2;
			buf.txns = repalloc_huge(buf.txns, sizeof(EsBufTxn) * buf.maxtxns);
		}
		t = &buf.txns[buf.ntxns++];
		t->xid = txn->xid;
		t->end_lsn = txn->end_lsn;
		t->commit_lsn = commit_lsn;
		t->commit_time = txn->xact_time.commit_time;
		t->first = buf.txn_first;
		t->n = BUF_TOTAL() - buf.txn_first;
	}
	buf.txn_first = BUF_TOTAL();
}

EsDecoderSink es_buffer_sink = {sink_event, sink_commit, NULL};

/* Empty the buffer for the next round. */
void
es_buffer_reset(void)
{
	if (buf.spill != NULL)
	{
		BufFileClose(buf.spill);
		buf.spill = NULL;
	}
	MemoryContextReset(buf.context);
	MemoryContextReset(buf.events_context);
	buf.maxevents = 1024;
	buf.events = MemoryContextAlloc(buf.events_context, sizeof(EsBufEvent) * buf.maxevents);
	buf.maxtxns = 256;
	buf.txns = MemoryContextAlloc(buf.context, sizeof(EsBufTxn) * buf.maxtxns);
	buf.nevents = buf.ntxns = 0;
	buf.nspilled = buf.txn_first = 0;
	buf.next_read = 0;
}

/* Once per worker: the buffer's memory. */
void
es_buffer_init(void)
{
	buf.context = AllocSetContextCreate(TopMemoryContext, "event_store pipeline buffer",
										ALLOCSET_DEFAULT_SIZES);
	buf.events_context = AllocSetContextCreate(TopMemoryContext, "event_store pipeline events",
											   ALLOCSET_DEFAULT_SIZES);
	es_buffer_reset();
}

/* The round's committed transactions with events. */
int
es_buffer_ntxns(void)
{
	return buf.ntxns;
}

const EsBufTxn *
es_buffer_txn(int t)
{
	return &buf.txns[t];
}

/* The events buffered so far. */
int64
es_buffer_nevents(void)
{
	return BUF_TOTAL();
}

/* Start handing the events out again, from the first. */
void
es_buffer_rewind(void)
{
	if (buf.spill != NULL && BufFileSeek(buf.spill, 0, 0, SEEK_SET) != 0)
		elog(ERROR, "event_store pipeline: could not rewind the spilled events");
	buf.next_read = 0;
}

/*
 * Event i of the round; they must be asked for in order, each once, after
 * es_buffer_rewind().  Valid until the next call; a spilled event's texts
 * are palloc'd in the current memory context.
 */
const EsBufEvent *
es_buffer_event(int64 i)
{
	if (i != buf.next_read)
		elog(ERROR, "event_store pipeline: buffered events read out of order");
	buf.next_read++;
	if (i < buf.nspilled)
	{
		spill_read(&buf.spilled);
		return &buf.spilled;
	}
	return &buf.events[i - buf.nspilled];
}
