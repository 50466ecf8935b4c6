/*-------------------------------------------------------------------------
 *
 * stream_heads.c
 *	  A shared cache of stream heads: the version and recorded_at of a
 *	  stream's newest event, and the transaction that appended it, so that
 *	  an append need not look its stream's head up in the primary key.
 *
 * An entry is a claim that the stream's newest event (committed, or of the
 * transaction named) has that version.  The versioning trigger keeps the
 * claims true under the stream's lock (versioning.c):
 *
 * - every row the trigger versions first removes its stream's entry, so
 *   while an event is being inserted there is no claim about its stream;
 * - append() and append_events() publish the new head only after their
 *   INSERT succeeded, with every row in the table (versioning.c says when),
 *   naming the (sub)transaction that inserted it;
 * - when that transaction commits, its entries are marked committed; when
 *   it (or the subtransaction) aborts or is prepared, they are removed.
 *   A reader that finds a transaction still named checks it: its own, in
 *   progress (wait for it, as for a row in progress), committed (the short
 *   time before the commit is noted here), or else not a head at all.
 *
 * So a reader under the stream's lock finds either no entry (it reads the
 * primary key, as without the cache) or the head the primary key would
 * give.  Entries are keyed by database, the event table's OID and file
 * number and the full stream id (ids longer than ES_HEAD_ID_MAX bytes are
 * not cached), in a fixed table of buckets of ES_HEAD_WAYS entries indexed
 * by the stream lock's hash (about 3.5 MB); a stream pushes the entry
 * published longest ago out of a full bucket, which only costs that stream
 * a lookup.  Rows written past the trigger, or deleted, would make entries
 * false: the cache is used only while the trigger fires ALWAYS and last and
 * the append-only guards fire ALWAYS (versioning.c),
 * and every entry is forgotten (es_heads_forget_all) after any statement
 * that may enable, disable or replace it or its function, or drop a table
 * or database (the utility hook: ALTER TABLE, CREATE TRIGGER, DROP, CREATE
 * or ALTER FUNCTION, ALTER EXTENSION, ..., run while it holds its locks, so
 * that no append publishes before it commits), and when a backend that
 * keyed entries by the event table receives an invalidation of it (VACUUM
 * FULL, its statistics) or of a function.  The unique primary key stays
 * the backstop.
 *
 * Locking: a spinlock per bucket, held to copy an entry in or out.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/inval.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "internal.h"
#include "write.h"

#define ES_HEAD_BUCKETS	8192	/* a power of two */
#define ES_HEAD_WAYS	4		/* entries per bucket */
#define ES_HEAD_ID_MAX	64
#define ES_HEAD_PUBLISHED_MAX 32	/* entries a transaction may publish */

typedef struct EsHeadSlot
{
	uint32		used;			/* the bucket's clock when last published */
	uint8		len;			/* of the stream id; 0: empty */
	uint32		epoch;
	Oid			dboid;
	Oid			relid;
	Oid			relfile;
	TransactionId xid;			/* FrozenTransactionId: committed */
	int64		version;
	TimestampTz recorded_at;
	char		id[ES_HEAD_ID_MAX];
} EsHeadSlot;

typedef struct EsHeadBucket
{
	slock_t		mutex;
	uint32		clock;
	EsHeadSlot	ways[ES_HEAD_WAYS];
} EsHeadBucket;

typedef struct EsHeads
{
	pg_atomic_uint32 epoch;
	EsHeadBucket buckets[ES_HEAD_BUCKETS];
} EsHeads;

static EsHeads *heads = NULL;

/* What this transaction published, to settle at its end. */
typedef struct Published
{
	int			bucket;
	TransactionId xid;
	SubTransactionId subid;
} Published;

static Published published[ES_HEAD_PUBLISHED_MAX];
static int	npublished = 0;

/* The event table this backend last keyed (for the invalidation callback). */
static Oid	keyed_relid = InvalidOid;

Size
es_heads_shmem_size(void)
{
	return MAXALIGN(sizeof(EsHeads));
}

void
es_heads_shmem_init(void)
{
	bool		found;
	int			i;

	heads = ShmemInitStruct("event_store stream heads", sizeof(EsHeads), &found);
	if (!found)
	{
		pg_atomic_init_u32(&heads->epoch, 1);
		memset(heads->buckets, 0, sizeof(heads->buckets));
		for (i = 0; i < ES_HEAD_BUCKETS; i++)
			SpinLockInit(&heads->buckets[i].mutex);
	}
}

/*
 * Forget every entry.
 */
void
es_heads_forget_all(void)
{
	if (heads != NULL)
		pg_atomic_fetch_add_u32(&heads->epoch, 1);
}

static inline EsHeadBucket *
bucket_of(const EsHeadKey *key)
{
	return &heads->buckets[(key->hash ^ (key->hash >> 32) ^ MyDatabaseId) & (ES_HEAD_BUCKETS - 1)];
}

/* The bucket's entry of the key's stream, or NULL.  Bucket locked. */
static inline EsHeadSlot *
find(EsHeadBucket *b, const EsHeadKey *key, uint32 epoch)
{
	int			i;

	for (i = 0; i < ES_HEAD_WAYS; i++)
	{
		EsHeadSlot *s = &b->ways[i];

		if (s->len == key->len && s->epoch == epoch && s->relid == key->relid &&
			s->relfile == key->relfile && s->dboid == MyDatabaseId &&
			memcmp(s->id, key->id, key->len) == 0)
			return s;
	}
	return NULL;
}

/*
 * The key of a stream of the event table; false if the stream is not
 * cached (no shared memory: the library was not preloaded; a long id).
 */
bool
es_head_key(Relation events, text *stream_id, uint64 hash, EsHeadKey *key)
{
	if (heads == NULL || VARSIZE_ANY_EXHDR(stream_id) > ES_HEAD_ID_MAX)
		return false;

	key->relid = RelationGetRelid(events);
	keyed_relid = key->relid;
	key->relfile = events->rd_node.relNode;
	key->hash = hash;
	key->len = VARSIZE_ANY_EXHDR(stream_id);
	key->id = VARDATA_ANY(stream_id);
	return true;
}

/*
 * Remove the stream's entry, if there is one, and return it; *xid is
 * FrozenTransactionId for a committed head.  Caller holds the stream's
 * lock (the trigger: no claim while the stream's next event is inserted).
 */
bool
es_head_take(const EsHeadKey *key, int64 *version, TimestampTz *recorded_at,
			 TransactionId *xid)
{
	EsHeadBucket *b = bucket_of(key);
	uint32		epoch = pg_atomic_read_u32(&heads->epoch);
	EsHeadSlot *s;

	SpinLockAcquire(&b->mutex);
	s = find(b, key, epoch);
	if (s != NULL)
	{
		*version = s->version;
		*recorded_at = s->recorded_at;
		*xid = s->xid;
		s->len = 0;
	}
	SpinLockRelease(&b->mutex);
	return s != NULL;
}

/*
 * Publish the stream's head, appended by the current (sub)transaction, in
 * an empty entry of its bucket or the one published longest ago.  Caller
 * holds the stream's lock (and the trigger removed the stream's entry).
 */
void
es_head_publish(const EsHeadKey *key, int64 version, TimestampTz recorded_at)
{
	EsHeadBucket *b = bucket_of(key);
	TransactionId xid = GetCurrentTransactionIdIfAny();
	uint32		epoch = pg_atomic_read_u32(&heads->epoch);
	EsHeadSlot *s;
	int			i;

	if (!TransactionIdIsValid(xid) || npublished == ES_HEAD_PUBLISHED_MAX)
		return;					/* (the trigger removed the stream's entry) */
	SpinLockAcquire(&b->mutex);
	s = find(b, key, epoch);
	for (i = 0; s == NULL && i < ES_HEAD_WAYS; i++)
		if (b->ways[i].len == 0 || b->ways[i].epoch != epoch)
			s = &b->ways[i];
	if (s == NULL)
	{
		s = &b->ways[0];
		for (i = 1; i < ES_HEAD_WAYS; i++)
			if ((int32) (b->ways[i].used - s->used) < 0)
				s = &b->ways[i];
	}
	s->used = ++b->clock;
	s->len = key->len;
	s->epoch = epoch;
	s->dboid = MyDatabaseId;
	s->relid = key->relid;
	s->relfile = key->relfile;
	s->xid = xid;
	s->version = version;
	s->recorded_at = recorded_at;
	memcpy(s->id, key->id, key->len);
	SpinLockRelease(&b->mutex);

	published[npublished].bucket = b - heads->buckets;
	published[npublished].xid = xid;
	published[npublished].subid = GetCurrentSubTransactionId();
	npublished++;
}

/*
 * Settle what this transaction published from index `from` on: mark it
 * committed, or remove it.  An entry replaced since (another stream's)
 * is left alone.
 */
static void
settle(int from, bool committed)
{
	int			i;

	for (i = from; i < npublished; i++)
	{
		EsHeadBucket *b = &heads->buckets[published[i].bucket];
		int			w;

		SpinLockAcquire(&b->mutex);
		for (w = 0; w < ES_HEAD_WAYS; w++)
		{
			EsHeadSlot *s = &b->ways[w];

			if (s->len != 0 && s->xid == published[i].xid && s->dboid == MyDatabaseId)
			{
				if (committed)
					s->xid = FrozenTransactionId;
				else
					s->len = 0;
			}
		}
		SpinLockRelease(&b->mutex);
	}
	npublished = from;
}

static void
heads_xact_callback(XactEvent event, void *arg)
{
	(void) arg;
	if (npublished == 0)
		return;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			settle(0, true);	/* (visible to all since ProcArrayEndTransaction) */
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:	/* it may stay prepared for long: no claim */
			settle(0, false);
			break;
		default:
			break;
	}
}

static void
heads_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	int			i;

	(void) arg;
	switch (event)
	{
		case SUBXACT_EVENT_COMMIT_SUB:
			for (i = 0; i < npublished; i++)
				if (published[i].subid >= mySubid)
					published[i].subid = parentSubid;
			break;
		case SUBXACT_EVENT_ABORT_SUB:
			for (i = 0; i < npublished; i++)
				if (published[i].subid >= mySubid)
					break;
			settle(i, false);	/* (published in order: the rest is the subtransaction's) */
			break;
		default:
			break;
	}
}

static void
heads_relcache_callback(Datum arg, Oid relid)
{
	(void) arg;
	if (relid == InvalidOid || relid == keyed_relid)
		es_heads_forget_all();
}

static void
heads_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	(void) arg;
	(void) cacheid;
	(void) hashvalue;
	es_heads_forget_all();
}

void
es_heads_init(void)
{
	RegisterXactCallback(heads_xact_callback, NULL);
	RegisterSubXactCallback(heads_subxact_callback, NULL);
	CacheRegisterRelcacheCallback(heads_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, heads_syscache_callback, (Datum) 0);
}
