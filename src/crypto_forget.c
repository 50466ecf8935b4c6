/*-------------------------------------------------------------------------
 *
 * crypto_forget.c
 *	  Personal data: forget() -- crypto-shredding a subject -- and the
 *	  overwriting of the key rows it deletes.
 *
 * forget(subject) deletes the subject's key row, keeps a tombstone of the
 * subject's SHA-256 in event_store.forgotten_subjects (so that no key is
 * created for it again), deletes the snapshots of the subject's streams
 * (they may hold its fields in clear) and appends an audit event
 * SubjectForgotten to the stream event_store-subjects, all in the caller's
 * transaction, as the extension's owner.
 *
 * A deleted row's bytes stay in the table's files until overwritten: vacuum
 * frees the space without clearing it.  So the key row is overwritten in
 * place, and its page's free space zeroed (WAL-logged), once the forget has
 * committed: forget queues the row in event_store.key_scrubs, and the
 * pipeline worker, woken at commit, overwrites the rows of committed
 * forgets (es_scrub_forgotten_keys); an aborted forget destroys nothing.
 * Without a running pipeline the row is overwritten at pre-commit in this
 * backend (crypto_forget_xact_callback), after which an abort cannot bring
 * the key back.
 *
 * Locking: the subject's lock (crypto_keys.c) from the settled check to the
 * writes; RowExclusiveLock on subject_keys while overwriting.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xloginsert.h"
#include "catalog/pg_type.h"
#include "common/sha2.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/uuid.h"

#include "crypto.h"
#include "pipeline.h"

PG_FUNCTION_INFO_V1(event_store_forget);

/* The statements, each run as the extension's owner but take_scrubs (the worker's). */
static EsStatement delete_stream_snapshots = ES_STATEMENT(
	"DELETE FROM event_store.snapshots WHERE stream_id OPERATOR(pg_catalog.=) ANY ($1)",
	1, TEXTARRAYOID);

static EsStatement delete_key = ES_STATEMENT(
	"DELETE FROM event_store.subject_keys WHERE key_id OPERATOR(pg_catalog.=) $1 RETURNING ctid",
	1, UUIDOID);

static EsStatement queue_scrub = ES_STATEMENT(
	"INSERT INTO event_store.key_scrubs (tid) VALUES ($1)",
	1, TIDOID);

static EsStatement take_scrubs = ES_STATEMENT(
	"DELETE FROM event_store.key_scrubs RETURNING tid",
	0, InvalidOid);

static EsStatement insert_tombstone = ES_STATEMENT(
	"INSERT INTO event_store.forgotten_subjects (subject_hash) VALUES ($1)",
	1, BYTEAOID);

static EsStatement audit_event = ES_STATEMENT(
	"INSERT INTO event_store.events (stream_id, event_type, data) "
	"VALUES ('" AUDIT_STREAM "', 'SubjectForgotten', $1)",
	1, JSONBOID);

/*
 * Key rows forget() deleted in this transaction: overwritten in place at
 * commit (see scrub_forgotten_keys), dropped with an aborted
 * (sub)transaction.  In TopTransactionContext.
 */
typedef struct PendingScrub
{
	ItemPointerData tid;
	SubTransactionId subid;
} PendingScrub;

static List *pending_scrubs = NIL;

/*
 * At commit of a transaction that called forget(): overwrite, in place, the
 * wrapped key (with zeros) and the subject (with "x") of every key row it
 * deleted.  A deleted row stays in the heap until vacuum, and vacuum only
 * marks its space free without clearing it: without this, the wrapped key
 * could stay in the table's files, readable with the key-encryption key.
 * The overwrite is WAL-logged, so standbys overwrite it too.  Not
 * transactional: it runs at pre-commit, after which the transaction can no
 * longer abort short of a crash.
 */
static void scrub_key_row(Relation rel, ItemPointer tid);

static void
overwrite_varlena(char *p, int c)
{
	/* a key row's values are small: stored inline, never compressed */
	if (VARATT_IS_SHORT(p))
		memset(VARDATA_SHORT(p), c, VARSIZE_SHORT(p) - VARHDRSZ_SHORT);
	else if (VARATT_IS_4B_U(p))
		memset(VARDATA(p), c, VARSIZE(p) - VARHDRSZ);
	else
		elog(ERROR, "unexpected compressed or external value in event_store.subject_keys");
}

static void
scrub_forgotten_keys(void)
{
	const EsCatalog *c = es_catalog();
	Relation	rel = table_open(c->keys_relid, RowExclusiveLock);
	ListCell   *lc;

	foreach(lc, pending_scrubs)
	{
		PendingScrub *ps = lfirst(lc);

		scrub_key_row(rel, &ps->tid);
	}
	table_close(rel, RowExclusiveLock);
	pending_scrubs = NIL;
}

/*
 * Are forgotten keys overwritten after commit, by the pipeline worker?  Yes
 * where it runs (preloaded, wal_level logical, the pipeline enabled) and the
 * installed version has the queue; otherwise at pre-commit, in this backend.
 */
static bool
scrub_after_commit(void)
{
	return es_pipeline_available() && es_pipeline_enabled &&
		OidIsValid(es_catalog()->scrubs_relid);
}

/*
 * Overwrite what is left of a deleted key row: the row itself, in place,
 * if it is still there (WAL-logged), and the free space of its page, where a
 * vacuum or a prune may have left its bytes (a full-page image in the WAL:
 * a replayed page gets its free space zeroed too).
 */
static void
scrub_key_row(Relation rel, ItemPointer tid)
{
	TupleDesc	desc = RelationGetDescr(rel);
	HeapTupleData tuple;
	Buffer		buf;
	Page		page;
	PageHeader	ph;

	if (ItemPointerGetBlockNumber(tid) >= RelationGetNumberOfBlocks(rel))
		return;					/* truncated away by vacuum: nothing left */
	tuple.t_self = *tid;
	if (heap_fetch(rel, SnapshotAny, &tuple, &buf, false))
	{
		HeapTuple	copy = heap_copytuple(&tuple);
		bool		isnull;
		Datum		d;

		ReleaseBuffer(buf);
		d = heap_getattr(copy, Anum_keys_wrapped_key, desc, &isnull);
		if (!isnull)
			overwrite_varlena(DatumGetPointer(d), 0);
		d = heap_getattr(copy, Anum_keys_subject, desc, &isnull);
		if (!isnull)
			overwrite_varlena(DatumGetPointer(d), 'x');
		heap_inplace_update(rel, copy);
		heap_freetuple(copy);
	}

	buf = ReadBuffer(rel, ItemPointerGetBlockNumber(tid));
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	page = BufferGetPage(buf);
	ph = (PageHeader) page;
	if (!PageIsNew(page) && ph->pd_lower <= ph->pd_upper && ph->pd_upper <= BLCKSZ)
	{
		START_CRIT_SECTION();
		memset((char *) page + ph->pd_lower, 0, ph->pd_upper - ph->pd_lower);
		MarkBufferDirty(buf);
		if (RelationNeedsWAL(rel))
			log_newpage_buffer(buf, true);
		END_CRIT_SECTION();
	}
	UnlockReleaseBuffer(buf);
}

/*
 * The pipeline worker's part of forget(): overwrite the key rows that
 * committed forgets deleted (event_store.key_scrubs), in a transaction of
 * its own.  Rows of a forget still in progress are not visible yet; those of
 * one that aborted never will be.
 */
void
es_scrub_forgotten_keys(void)
{
	const EsCatalog *c = es_catalog_if_installed();
	Relation	rel;
	uint64		i;
	uint64		n;

	if (c == NULL || !OidIsValid(c->scrubs_relid))
		return;
	SPI_connect();
	n = es_run(&take_scrubs, NULL, NULL, 0, 0, SPI_OK_DELETE_RETURNING);
	if (n > 0)
	{
		rel = table_open(c->keys_relid, RowExclusiveLock);
		for (i = 0; i < n; i++)
		{
			bool		isnull;
			ItemPointer tid = (ItemPointer) DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[i],
																	   SPI_tuptable->tupdesc, 1, &isnull));

			scrub_key_row(rel, tid);
		}
		table_close(rel, RowExclusiveLock);
	}
	SPI_finish();
}

/*
 * Delete the snapshots of these streams (as the extension's owner; the
 * caller is connected to SPI): they may hold the subject's fields in clear.
 */
static uint64
delete_snapshots(List *streams)
{
	Datum	   *d;
	ListCell   *lc;
	int			i = 0;
	Datum		args[1];

	if (streams == NIL)
		return 0;
	d = palloc(sizeof(Datum) * list_length(streams));
	foreach(lc, streams)
		d[i++] = CStringGetTextDatum(lfirst(lc));
	args[0] = PointerGetDatum(construct_array(d, i, TEXTOID, -1, false, TYPALIGN_INT));
	return es_run(&delete_stream_snapshots, args, NULL, ES_RUN_AS_OWNER, 0, SPI_OK_DELETE);
}

/*
 * forget(subject text) RETURNS boolean: true when the subject is forgotten
 * now, false when it already was.
 */
Datum
event_store_forget(PG_FUNCTION_ARGS)
{
	text	   *subject = es_identifier_arg(fcinfo, 0, "subject");
	const EsCatalog *c = es_catalog();
	uint8		hash[PG_SHA256_DIGEST_LENGTH];
	char		hex[2 * PG_SHA256_DIGEST_LENGTH + 1];
	HeapTuple	tup;
	TupleDesc	desc;
	char	   *key_id = NULL;
	List	   *streams = NIL;
	uint64		nsnap = 0;
	bool		was_forgotten;
	int			i;

	/*
	 * The key row is overwritten in place at pre-commit, which cannot be
	 * undone; a SERIALIZABLE transaction can still fail after that point (the
	 * commit-time serialization check), so forget() refuses to run in one.
	 */
	if (IsolationIsSerializable())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("event_store.forget() cannot run in a SERIALIZABLE transaction"),
				 errdetail("Forgetting destroys the key at commit, which a serialization failure could no longer undo."),
				 errhint("Call it in a READ COMMITTED or REPEATABLE READ transaction.")));

	crypto_sha256((uint8 *) VARDATA_ANY(subject), VARSIZE_ANY_EXHDR(subject), hash);
	for (i = 0; i < PG_SHA256_DIGEST_LENGTH; i++)
		snprintf(hex + 2 * i, 3, "%02x", hash[i]);
	/* the subject is ours until its key is deleted and its tombstone written */
	was_forgotten = crypto_settled_subject(hash, &tup, &desc);
	if (tup)
	{
		bool		isnull;

		key_id = crypto_format_uuid(DatumGetUUIDP(heap_getattr(tup, Anum_keys_key_id, desc, &isnull)));
	}
	if (was_forgotten && key_id == NULL)
	{
		crypto_release_subject();
		PG_RETURN_BOOL(false);
	}

	SPI_connect();
	if (key_id)
	{
		Datum		args[1];
		uint64		ndeleted;

		streams = crypto_key_streams(key_id);
		nsnap = delete_snapshots(streams);
		args[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(key_id));
		ndeleted = es_run(&delete_key, args, NULL, ES_RUN_AS_OWNER, 0, SPI_OK_DELETE_RETURNING);
		if (ndeleted == 0)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to a concurrent creation of a subject key"),
					 errdetail("The subject's key was created after this transaction's snapshot was taken."),
					 errhint("The transaction might succeed if retried.")));
		if (scrub_after_commit())
		{
			/* overwritten by the pipeline worker once this commits (nothing if it aborts) */
			Datum		tids[1];
			SPITupleTable *deleted = SPI_tuptable;
			uint64		j;

			for (j = 0; j < ndeleted; j++)
			{
				bool		isnull;

				tids[0] = SPI_getbinval(deleted->vals[j], deleted->tupdesc, 1, &isnull);
				es_run(&queue_scrub, tids, NULL, ES_RUN_AS_OWNER, 0, SPI_OK_INSERT);
			}
			es_pipeline_scrub_at_commit();
		}
		else
			for (i = 0; i < (int) ndeleted; i++)
			{
				bool		isnull;
				MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
				PendingScrub *ps = palloc(sizeof(PendingScrub));

				ps->tid = *(ItemPointer) DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[i],
																		SPI_tuptable->tupdesc, 1, &isnull));
				ps->subid = GetCurrentSubTransactionId();
				pending_scrubs = lappend(pending_scrubs, ps);
				MemoryContextSwitchTo(old);
			}
	}
	if (!was_forgotten)
	{
		Datum		args[2];
		StringInfoData d;

		initStringInfo(&d);
		appendStringInfo(&d, "{\"subject_sha256\": \"%s\", \"key\": %s%s%s, \"streams\": %d, \"snapshots_deleted\": " UINT64_FORMAT "}",
						 hex, key_id ? "\"" : "", key_id ? key_id : "null", key_id ? "\"" : "",
						 list_length(streams), nsnap);
		args[0] = PointerGetDatum(crypto_bytea(hash, PG_SHA256_DIGEST_LENGTH));
		args[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(d.data));
		es_run(&insert_tombstone, args, NULL, ES_RUN_AS_OWNER, 0, SPI_OK_INSERT);
		es_run(&audit_event, args + 1, NULL, ES_RUN_AS_OWNER, 0, SPI_OK_INSERT);
	}
	SPI_finish();
	crypto_release_subject();
	CacheInvalidateRelcacheByRelid(c->keys_relid);
	PG_RETURN_BOOL(true);
}

/*
 * The transaction's end, for the key rows this transaction's forget()
 * deleted without a pipeline to overwrite them (pending_scrubs): overwritten
 * at pre-commit, refused in a prepared transaction, dropped at abort.
 */
void
crypto_forget_xact_callback(XactEvent event)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (pending_scrubs != NIL)
				scrub_forgotten_keys();
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (pending_scrubs != NIL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that called event_store.forget()"),
						 errhint("Call forget() in a transaction of its own.")));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			pending_scrubs = NIL;
			break;
		default:
			break;
	}
}

/* A subtransaction aborted: its forget()s deleted nothing. */
void
crypto_forget_subxact_abort(SubTransactionId mySubid)
{
	ListCell   *lc;

	/* the aborted subtransaction and its children have ids >= mySubid */
	foreach(lc, pending_scrubs)
	{
		PendingScrub *ps = lfirst(lc);

		if (ps->subid >= mySubid)
			pending_scrubs = foreach_delete_current(pending_scrubs, lc);
	}
}
