/*-------------------------------------------------------------------------
 *
 * scan.c
 *	  The read engine: the stream scan and the log scan behind every reader
 *	  (read_stream, read_all, aggregates, projections), and the
 *	  presentation each event passes through on its way out.
 *
 * Both scans are direct index scans with the caller's snapshot, no SQL in
 * between, one row in memory at a time: what presenting a row allocates
 * lives in the scan's row context, reset before the next row, so a reader
 * of a million events holds one.  The stream scan reads a stream through
 * the primary key (stream_id, stream_version) of event_store.events.  The
 * log scan reads event_store.global_log in position order through its
 * primary key, or, filtered, through the (category, global_position) and
 * (event_type, global_position) indexes (one ordered index scan per
 * category or type, merged by position), and fetches each event through
 * the event table's primary key.  Every event passes es_present_event().
 *
 * Because they bypass the executor, the scans check the current role's
 * SELECT right on the tables they read and refuse to run where row-level
 * security would apply (es_check_read_access).
 *
 * Positions are committed by the pipeline worker in increasing order, in
 * one transaction per batch, so a snapshot sees a prefix of the log: a
 * reader that passes the last position it saw never skips an event.
 *
 * Locking: AccessShareLock on the tables and indexes, as a SELECT takes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_index.h"
#include "catalog/pg_opfamily.h"
#include "catalog/pg_type.h"
#include "common/md5.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

#include "crypto.h"
#include "read.h"
#include "upcast.h"

/*
 * The caller must be allowed to SELECT from a table a read function reads
 * directly (the event table, the global log), and no row-level security
 * policy may apply to it (the read functions could not honour it).
 */
void
es_check_read_access(Relation rel)
{
	AclResult	acl = pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), ACL_SELECT);

	if (acl != ACLCHECK_OK)
		aclcheck_error(acl, OBJECT_TABLE, RelationGetRelationName(rel));
	if (check_enable_rls(RelationGetRelid(rel), InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("event_store read functions do not support row-level security on event_store.%s",
						RelationGetRelationName(rel)),
				 errhint("Query event_store.%s with SELECT, or disable row-level security on it.",
						 RelationGetRelationName(rel))));
}

/*
 * Turn a stored event into what readers are handed: the one place every read
 * path (read_stream, aggregates, read_all, projections, the output plugin
 * when asked) passes each event through.  values/nulls are an
 * event_store.event (Natts_event attributes); the function may replace any
 * of them with newly palloc'd datums.  Decryption comes first: the protected
 * paths refer to the stored shape, and upcasters need the plaintext (or the
 * nulls a forgotten subject leaves).  Then upcasting to the newest schema.
 * An event they do not concern pays close to nothing.
 */
void
es_present_event(Datum *values, bool *nulls)
{
	es_decrypt_event(values, nulls);	/* crypto.c: protected fields, in the stored shape */
	es_upcast_event(values, nulls);		/* upcast.c: then the newest shape */
}

/* Did presenting leave the event's stored values (those of the slot) as they were? */
static bool
as_stored(const Datum *values, const bool *nulls, TupleTableSlot *slot)
{
	return memcmp(&values[1], slot->tts_values, sizeof(Datum) * Natts_events) == 0 &&
		memcmp(&nulls[1], slot->tts_isnull, sizeof(bool) * Natts_events) == 0;
}

/*
 * Put the current event (values/nulls, read from the slot's row) into a
 * tuplestore of event_store.event.  Where presenting left the row as it was
 * stored, the tuple is the stored row's data area behind a new header: the
 * event's attributes are the row's, after the global position, which takes
 * no room when NULL and 8 bytes as an int8 -- a multiple of every
 * alignment, so each later attribute keeps the offset it had relative to
 * its neighbours.  That is one copy of the area where forming the tuple
 * from the values (tuplestore_putvalues) measures, aligns and copies each
 * attribute: that was 12 % of a read_stream of 1,000 events.  A row of
 * another shape than the table's (written before a column was added) is
 * formed from the values.
 */
static void
put_event(Tuplestorestate *store, TupleDesc desc, TupleTableSlot *slot, bool stored_as_is,
		  const Datum *values, const bool *nulls, EsTupleBuffer *buf, MemoryContext cxt)
{
	HeapTuple	row;
	HeapTupleHeader src;
	HeapTupleHeader dst;
	HeapTupleData tuple;
	bits8	   *bits;
	Size		data_len;
	Size		prefix;
	Size		hoff;
	Size		len;
	int			i;

	row = stored_as_is && desc->natts == Natts_event ? ExecFetchSlotHeapTuple(slot, false, NULL) : NULL;
	if (row == NULL || HeapTupleHeaderGetNatts(row->t_data) != Natts_events)
	{
		tuplestore_putvalues(store, desc, (Datum *) values, (bool *) nulls);
		return;
	}
	src = row->t_data;
	data_len = row->t_len - src->t_hoff;
	prefix = nulls[0] ? 0 : sizeof(int64);
	hoff = MAXALIGN(SizeofHeapTupleHeader + BITMAPLEN(Natts_event));
	len = hoff + prefix + data_len;
	if (buf->size < len)
	{
		if (buf->data != NULL)
			pfree(buf->data);
		buf->size = Max(len, 1024);
		buf->data = MemoryContextAlloc(cxt, buf->size);
	}
	dst = (HeapTupleHeader) buf->data;
	memset(dst, 0, hoff);
	HeapTupleHeaderSetDatumLength(dst, len);
	HeapTupleHeaderSetTypeId(dst, desc->tdtypeid);
	HeapTupleHeaderSetTypMod(dst, desc->tdtypmod);
	HeapTupleHeaderSetNatts(dst, Natts_event);
	dst->t_hoff = hoff;
	dst->t_infomask = HEAP_HASNULL | (src->t_infomask & (HEAP_HASVARWIDTH | HEAP_HASEXTERNAL));
	ItemPointerSetInvalid(&dst->t_ctid);
	bits = dst->t_bits;
	for (i = 0; i < Natts_event; i++)
		if (!nulls[i])
			bits[i >> 3] |= (bits8) (1 << (i & 7));
	if (prefix > 0)
	{
		int64		position = DatumGetInt64(values[0]);

		memcpy((char *) dst + hoff, &position, sizeof(int64));
	}
	memcpy((char *) dst + hoff + prefix, (char *) src + src->t_hoff, data_len);
	tuple.t_len = len;
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = dst;
	tuplestore_puttuple(store, &tuple);
}

/*
 * Start reading a stream's events visible to the snapshot, in version order
 * (descending when backwards), with versions in [lower, upper] (0: no bound),
 * recorded at or before *as_of (NULL: any time), at most max_count of them
 * (-1: all).  Checks the caller's right to read.  Every read path (read
 * functions, aggregates) goes through here, so that what it hands out is
 * the same everywhere.
 */
EsStreamScan *
es_stream_scan_begin(text *stream_id, int64 lower, int64 upper, bool backwards,
					 const TimestampTz *as_of, int64 max_count, Snapshot snapshot)
{
	const EsCatalog *cat = es_catalog();
	EsStreamScan *s = palloc0(sizeof(EsStreamScan));
	ScanKeyData keys[3];
	int			nkeys = 0;

	s->events = table_open(cat->events_relid, AccessShareLock);
	es_check_read_access(s->events);
	s->index = index_open(cat->stream_index, AccessShareLock);

	ScanKeyInit(&keys[nkeys++], 1, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(stream_id));
	if (lower > 0)
		ScanKeyInit(&keys[nkeys++], 2, BTGreaterEqualStrategyNumber, F_INT8GE, Int64GetDatum(lower));
	if (upper > 0)
		ScanKeyInit(&keys[nkeys++], 2, BTLessEqualStrategyNumber, F_INT8LE, Int64GetDatum(upper));
	s->scan = index_beginscan(s->events, s->index, snapshot, nkeys, 0);
	index_rescan(s->scan, keys, nkeys, NULL, 0);
	s->slot = table_slot_create(s->events, NULL);
	s->dir = backwards ? BackwardScanDirection : ForwardScanDirection;
	s->has_as_of = (as_of != NULL);
	s->as_of = as_of ? *as_of : 0;
	s->remaining = max_count;
	s->cxt = CurrentMemoryContext;
	s->row_context = AllocSetContextCreate(CurrentMemoryContext, "event_store stream scan",
										   ALLOCSET_DEFAULT_SIZES);
	/* the global position is assigned by the decoding pipeline; NULL until then */
	s->nulls[0] = true;
	return s;
}

/*
 * The next event into s->values/s->nulls (an event_store.event, as
 * es_present_event hands it out), or false at the end.  The values may point
 * into the scan's current tuple: valid until the next call.  The caller may
 * call this in a short-lived memory context that it resets between events
 * (the fold of load_aggregate does): the index scan keeps its own state in
 * the context the scan began in, and only what es_present_event allocates
 * goes into the caller's.
 */
bool
es_stream_scan_next(EsStreamScan *s)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext old;

	if (s->remaining == 0)
		return false;
	for (;;)
	{
		bool		found;

		CHECK_FOR_INTERRUPTS();
		MemoryContextSwitchTo(s->cxt);
		found = index_getnext_slot(s->scan, s->dir, s->slot);
		if (found)
			slot_getallattrs(s->slot);
		MemoryContextSwitchTo(caller);
		if (!found)
			break;
		if (s->has_as_of &&
			DatumGetTimestampTz(s->slot->tts_values[Anum_events_recorded_at - 1]) > s->as_of)
		{
			/* recorded_at never decreases along a stream: forwards, we are done */
			if (ScanDirectionIsForward(s->dir))
				return false;
			continue;
		}
		memcpy(&s->values[1], s->slot->tts_values, sizeof(Datum) * Natts_events);
		memcpy(&s->nulls[1], s->slot->tts_isnull, sizeof(bool) * Natts_events);
		/* what presenting an event allocates lives until the next one */
		MemoryContextReset(s->row_context);
		old = MemoryContextSwitchTo(s->row_context);
		es_present_event(s->values, s->nulls);
		MemoryContextSwitchTo(old);
		s->as_stored = as_stored(s->values, s->nulls, s->slot);
		if (s->remaining > 0)
			s->remaining--;
		return true;
	}
	return false;
}

/* Put the current event into a tuplestore of event_store.event (put_event). */
void
es_stream_scan_put(EsStreamScan *s, Tuplestorestate *store, TupleDesc desc)
{
	put_event(store, desc, s->slot, s->as_stored, s->values, s->nulls, &s->tuple, s->cxt);
}

/*
 * Finish a stream scan: release the scan, its relations and its memory.
 */
void
es_stream_scan_end(EsStreamScan *s)
{
	MemoryContextDelete(s->row_context);
	if (s->tuple.data != NULL)
		pfree(s->tuple.data);
	ExecDropSingleTupleTableSlot(s->slot);
	index_endscan(s->scan);
	index_close(s->index, AccessShareLock);
	table_close(s->events, AccessShareLock);
	pfree(s);
}

/* A bound on how far ahead one descent of the event table's key reads a run (es_log_scan_next). */
#define RUN_AHEAD_MAX	(INT64CONST(1) << 40)

/* Columns of event_store.global_log (1-based). */
#define Anum_log_global_position	1
#define Anum_log_stream_id			2
#define Anum_log_stream_version		3
#define Anum_log_category			4
#define Anum_log_event_type			5

/* One ordered index scan of the log, merged with the others by position. */
typedef struct LogSubScan
{
	IndexScanDesc scan;
	TupleTableSlot *slot;		/* the scan's current row, when `have` */
	bool		have;
	bool		done;
	int64		position;		/* of the current row */
	bool		cut;			/* stopped at the pass limit */
	int64		npassed;		/* rows rejected so far */
	int64		seen;			/* position of the last row rejected */
} LogSubScan;

/*
 * The log's optional event-type index, if there is one the type filter can
 * read (opened, locked), else NULL.  Looked up by name at each scan, so that
 * an index made, dropped or renamed since the last is seen.  It must be an
 * index of the log (not a relation of another table that took the name),
 * not dropped meanwhile, valid, with the keys (event_type, global_position),
 * ascending, in the default btree operator families (which make it a btree)
 * and the column's collation, neither partial nor on expressions,
 * and, if it was built over rows the snapshot may still see as other
 * versions (indcheckxmin: a HOT chain it indexed by its newest version),
 * built before the snapshot's oldest transaction -- the planner's rule.
 * Each type's positions then come in order, all of them.  An index of
 * another shape is left to whatever it was made for.
 */
static Relation
open_type_index(Relation log, Snapshot snapshot)
{
	Oid			oid = get_relname_relid("global_log_event_type_idx", RelationGetNamespace(log));
	Relation	index;
	Form_pg_index form;

	if (!OidIsValid(oid))
		return NULL;
	index = try_relation_open(oid, AccessShareLock);	/* NULL: dropped */
	if (index == NULL)
		return NULL;
	form = index->rd_index;
	if (index->rd_rel->relkind == RELKIND_INDEX &&
		form->indrelid == RelationGetRelid(log) &&
		form->indisvalid && form->indisready && form->indislive &&
		(!form->indcheckxmin ||
		 TransactionIdPrecedes(HeapTupleHeaderGetXmin(index->rd_indextuple->t_data),
							   snapshot->xmin)) &&
		form->indnkeyatts == 2 &&
		form->indkey.values[0] == Anum_log_event_type &&
		form->indkey.values[1] == Anum_log_global_position &&
		index->rd_opfamily[0] == TEXT_BTREE_FAM_OID &&
		index->rd_opfamily[1] == INTEGER_BTREE_FAM_OID &&
		index->rd_indcollation[0] == C_COLLATION_OID &&
		index->rd_indoption[0] == 0 && index->rd_indoption[1] == 0 &&
		heap_attisnull(index->rd_indextuple, Anum_pg_index_indpred, NULL) &&
		heap_attisnull(index->rd_indextuple, Anum_pg_index_indexprs, NULL))
		return index;
	relation_close(index, AccessShareLock);
	return NULL;
}

/*
 * Start reading the global log after position `after`, in position order,
 * through the snapshot: every event, or only those of the given categories
 * and/or event types (NULL: no filter; an empty array matches nothing), at
 * most max_count (-1: no limit).  One ordered index scan per category of
 * the log's (category, global_position) index, merged by position, the
 * types (if any) checked on its rows; with types only, one scan of the log
 * in position order, the types checked on its rows -- or, where the log has
 * the optional (event_type, global_position) index (not created since
 * 0.2.0: each index costs the pipeline worker an insertion per event), one
 * ordered scan of it per type, merged.  Each row's event is fetched through
 * the event table's primary key.
 * Checks the current role's right to read both tables.
 *
 * A snapshot sees a prefix of the log (the pipeline commits positions in
 * increasing order, one transaction at a time), so a reader that passes the
 * last position it saw skips nothing.  Should a position's event not be
 * visible (it cannot be: the pipeline publishes a position only once its
 * transaction is visible), the scan ends before it rather than skip it.
 */
EsLogScan *
es_log_scan_begin(int64 after, ArrayType *categories, ArrayType *event_types,
				  int64 max_count, Snapshot snapshot)
{
	const EsCatalog *cat = es_catalog();
	EsLogScan  *s = palloc0(sizeof(EsLogScan));
	text	  **names = NULL;
	int			nnames = 0;
	Oid			index;
	int			i;

	s->log = table_open(cat->log_relid, AccessShareLock);
	s->events = table_open(cat->events_relid, AccessShareLock);
	cat = es_catalog();			/* the indexes as of the locks (an update rebuilds them) */
	es_check_read_access(s->events);
	es_check_read_access(s->log);
	s->snapshot = snapshot;
	s->remaining = max_count;
	s->position = after;
	s->passed = after;
	s->cxt = CurrentMemoryContext;
	s->row_context = AllocSetContextCreate(CurrentMemoryContext, "event_store log scan",
										   ALLOCSET_DEFAULT_SIZES);
	if (categories != NULL)
	{
		/* one scan per category; with types too, the types are checked on its rows */
		nnames = es_name_array(categories, "categories", &names);
		index = cat->log_category_index;
		if (event_types != NULL)
		{
			s->ntypes = es_name_array(event_types, "event_types", &s->types);
			s->filter_types = true;
		}
	}
	else if (event_types != NULL)
	{
		nnames = es_name_array(event_types, "event_types", &names);
		/* one scan per event type, where the log has the index */
		s->log_index = open_type_index(s->log, snapshot);
		index = (s->log_index != NULL) ? RelationGetRelid(s->log_index) : cat->log_pkey;
		if (index == cat->log_pkey)
		{
			/* else one scan of the whole log, the types checked on its rows */
			s->types = names;
			s->ntypes = nnames;
			s->filter_types = true;
		}
	}
	else
		index = cat->log_pkey;	/* one scan of the whole log */

	if (s->log_index == NULL)
		s->log_index = index_open(index, AccessShareLock);
	s->events_index = index_open(cat->stream_index, AccessShareLock);
	if (s->filter_types && s->ntypes == 0)
		s->nsubs = 0;			/* no type: nothing to read */
	else
		s->nsubs = (index != cat->log_pkey) ? nnames : 1;
	s->subs = palloc0(sizeof(LogSubScan) * Max(s->nsubs, 1));
	for (i = 0; i < s->nsubs; i++)
	{
		LogSubScan *sub = &s->subs[i];
		ScanKeyData keys[2];
		int			nkeys = 0;

		if (index != cat->log_pkey)
			ScanKeyInit(&keys[nkeys++], 1, BTEqualStrategyNumber, F_TEXTEQ,
						PointerGetDatum(names[i]));
		ScanKeyInit(&keys[nkeys], nkeys + 1, BTGreaterStrategyNumber, F_INT8GT,
					Int64GetDatum(after));
		nkeys++;
		sub->scan = index_beginscan(s->log, s->log_index, snapshot, nkeys, 0);
		index_rescan(sub->scan, keys, nkeys, NULL, 0);
		sub->slot = table_slot_create(s->log, NULL);
	}
	s->event_scan = index_beginscan(s->events, s->events_index, snapshot, 3, 0);
	s->event_slot = table_slot_create(s->events, NULL);
	s->values[0] = Int64GetDatum(0);
	return s;
}

/*
 * The consumer-group hash of a stream: message-db's hash_64 of the stream's
 * cardinal id, i.e. the first 8 bytes of the MD5 of the cardinal id, read
 * as a big-endian signed 64-bit integer (in SQL: ('x' || left(md5(id), 16))
 * ::bit(64)::bigint).  The cardinal id is the part of the stream id after
 * its first '-', up to the first '+' ("account-7+2024" -> "7"), so that the
 * streams of one entity go to the same member; a stream id without '-' is
 * its own cardinal id.
 */
int64
es_stream_hash(const char *stream_id, int len)
{
	const char *id = memchr(stream_id, '-', len);
	const char *end;
	uint8		digest[16];
	const char *errstr = NULL;
	uint64		h = 0;
	int			i;

	if (id != NULL)
	{
		id++;
		len -= id - stream_id;
		end = memchr(id, '+', len);
		if (end != NULL)
			len = end - id;
	}
	else
		id = stream_id;
	if (!pg_md5_binary(id, len, digest, &errstr))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),	/* e.g. MD5 disabled (FIPS) */
				 errmsg("could not compute the MD5 hash of a stream id: %s", errstr)));
	for (i = 0; i < 8; i++)
		h = (h << 8) | digest[i];
	return (int64) h;
}

/*
 * The member of a consumer group of `size` members that a stream belongs to:
 * |hash| mod size, as message-db computes it (MOD(@hash_64(...), size)).
 */
static int32
stream_group_member(const char *stream_id, int len, int32 size)
{
	int64		h = es_stream_hash(stream_id, len);
	uint64		magnitude = h < 0 ? -(uint64) h : (uint64) h;

	return (int32) (magnitude % (uint64) size);
}

/*
 * Return only the events of the streams of consumer group member `member`
 * (0-based) of a group of `size`: before the first es_log_scan_next.  The
 * filter is applied to the log's rows, before their events are fetched.
 */
void
es_log_scan_set_group(EsLogScan *s, int32 member, int32 size)
{
	Assert(!s->started && size > 0 && member >= 0 && member < size);
	s->group_member = member;
	s->group_size = size;
}

/* Is the event scan's next entry the run stream's event of that version? */
static bool
next_event_is(EsLogScan *s, int64 version)
{
	bool		isnull;

	return index_getnext_slot(s->event_scan, ForwardScanDirection, s->event_slot) &&
		DatumGetInt64(slot_getattr(s->event_slot, Anum_events_stream_version, &isnull)) == version;
}

/* Is the stream of the log row in the slot one of the group member's? */
static bool
group_ours(EsLogScan *s, TupleTableSlot *slot)
{
	bool		isnull;
	text	   *stream = DatumGetTextPP(slot_getattr(slot, Anum_log_stream_id, &isnull));
	MemoryContext old;

	/* a stream's events often come in runs: remember the last one */
	if (s->group_last_stream != NULL && es_same_text(stream, s->group_last_stream))
		return s->group_last_ours;
	s->group_last_ours = stream_group_member(VARDATA_ANY(stream), VARSIZE_ANY_EXHDR(stream),
											 s->group_size) == s->group_member;
	if (s->group_last_stream != NULL)
		pfree(s->group_last_stream);
	old = MemoryContextSwitchTo(s->cxt);
	s->group_last_stream = (text *) pg_detoast_datum_copy((struct varlena *) stream);
	MemoryContextSwitchTo(old);
	return s->group_last_ours;
}

/* Do the filters checked on the log's rows (types, group member) reject the row? */
static bool
rejected(EsLogScan *s, TupleTableSlot *slot)
{
	if (s->filter_types)
	{
		bool		isnull;
		text	   *type = DatumGetTextPP(slot_getattr(slot, Anum_log_event_type, &isnull));

		if (bsearch(&type, s->types, s->ntypes, sizeof(text *), es_text_cmp) == NULL)
			return true;
	}
	return s->group_size > 0 && !group_ours(s, slot);
}

/* Advance a sub-scan to its next row (of an accepted type and group member). */
static void
sub_advance(EsLogScan *s, LogSubScan *sub)
{
	while (!sub->done)
	{
		bool		isnull;

		if (!index_getnext_slot(sub->scan, ForwardScanDirection, sub->slot))
		{
			sub->done = true;
			sub->have = false;
			return;
		}
		if (rejected(s, sub->slot))
		{
			if (s->pass_limit > 0 && ++sub->npassed >= s->pass_limit)
			{
				/* enough for now: every position of its range up to here is dealt with */
				sub->seen = DatumGetInt64(slot_getattr(sub->slot, Anum_log_global_position, &isnull));
				sub->done = true;
				sub->have = false;
				sub->cut = true;
				s->cut = true;
				return;
			}
			continue;
		}
		sub->position = DatumGetInt64(slot_getattr(sub->slot, Anum_log_global_position, &isnull));
		sub->have = true;
		return;
	}
}

/*
 * Stop the scan once one of its index scans has passed over `limit` rows
 * the filters reject (before the first es_log_scan_next): s->cut then says
 * it stopped so, and s->passed is the position up to which every event was
 * returned or rejected, where the caller may go on from.  A filter that
 * matches little then costs a bounded time per call.  The scans stopped so
 * have dealt with their ranges up to where they stopped, the others up to
 * their next row: the merge goes on while its next event comes before the
 * first of those stops, and ends there.
 */
void
es_log_scan_set_pass_limit(EsLogScan *s, int64 limit)
{
	Assert(!s->started && limit > 0);
	s->pass_limit = limit;
}

/*
 * The next event into s->values/s->nulls (an event_store.event with its
 * global position, as es_present_event hands it out), or false at the end.
 * s->position is then the event's position; the values are valid until the
 * next call.  While the event is presented, s->current identifies it (for
 * an error handler: presentation can fail, e.g. a tampered ciphertext).
 */
bool
es_log_scan_next(EsLogScan *s)
{
	MemoryContext caller = CurrentMemoryContext;
	LogSubScan *best = NULL;
	ScanKeyData keys[3];
	bool		isnull;
	bool		continuing;
	bool		found;
	text	   *stream;
	int			i;

	s->have_current = false;
	if (s->remaining == 0 || s->ended)
		return false;
	CHECK_FOR_INTERRUPTS();
	MemoryContextSwitchTo(s->cxt);
	if (!s->started)
	{
		for (i = 0; i < s->nsubs; i++)
			sub_advance(s, &s->subs[i]);
		s->started = true;
	}
	for (i = 0; i < s->nsubs; i++)
		if (s->subs[i].have && (best == NULL || s->subs[i].position < best->position))
			best = &s->subs[i];
	if (s->cut)
	{
		int64		passed = PG_INT64_MAX;

		for (i = 0; i < s->nsubs; i++)
			if (s->subs[i].cut)
				passed = Min(passed, s->subs[i].seen);
		if (best != NULL && best->position > passed)
			best = NULL;		/* beyond what a stopped scan has looked at */
		if (best == NULL)
			s->passed = passed;
	}
	if (best == NULL)
	{
		MemoryContextSwitchTo(caller);
		s->ended = true;
		return false;
	}

	/* the event of this position */
	s->current.position = best->position;
	s->current.stream_id = slot_getattr(best->slot, Anum_log_stream_id, &isnull);
	s->current.stream_version = DatumGetInt64(slot_getattr(best->slot, Anum_log_stream_version, &isnull));
	s->have_current = true;
	stream = DatumGetTextPP(s->current.stream_id);

	/*
	 * The event table's key is read from (stream, version) on: where the
	 * log goes on with the next version of the same stream (a transaction's
	 * events come in such runs), the scan's next entry is that event, found
	 * without a descent from the root.  Anything else (or, should it ever
	 * be, another entry there) starts again from the root.  The key's
	 * stream is a copy: the scan compares it with every entry it returns.
	 *
	 * The versions are bounded above: a btree scan reads every matching
	 * entry of the leaf page it lands on at once, and without a bound that
	 * is the rest of the stream on the page (up to a few hundred entries,
	 * each compared with both keys) for every event of a log whose streams
	 * interleave -- 47,000 of the 52,900 instructions an event of a
	 * category read of 100-event streams took (callgrind), where the descent
	 * itself is about 10,000.  So a descent for a new run reads one version ahead, and one
	 * that continues a run twice as far as the last: a run of n events
	 * costs about log2(n) descents, and what a descent reads beyond the run
	 * is never more than the run so far.  Measured per event read_all returns
	 * (callgrind): of 100-event streams interleaved, 52,900 -> 21,900
	 * instructions; of one stream, 4,650 -> 4,990.
	 */
	continuing = s->run_open && s->current.stream_version == s->run_version + 1 &&
		es_same_text(stream, s->run_stream);
	found = continuing && next_event_is(s, s->current.stream_version);
	if (!found)
	{
		int64		ahead = continuing ? Min(s->run_ahead * 2, RUN_AHEAD_MAX) : 1;
		int64		upper = s->current.stream_version > PG_INT64_MAX - ahead ?
			PG_INT64_MAX : s->current.stream_version + ahead;

		if (s->run_stream != NULL)
			pfree(s->run_stream);
		s->run_stream = (text *) pg_detoast_datum_copy((struct varlena *) stream);
		ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(s->run_stream));
		ScanKeyInit(&keys[1], 2, BTGreaterEqualStrategyNumber, F_INT8GE,
					Int64GetDatum(s->current.stream_version));
		ScanKeyInit(&keys[2], 2, BTLessEqualStrategyNumber, F_INT8LE, Int64GetDatum(upper));
		index_rescan(s->event_scan, keys, 3, NULL, 0);
		s->run_ahead = ahead;
		found = next_event_is(s, s->current.stream_version);
	}
	s->run_open = found;
	s->run_version = s->current.stream_version;
	if (found)
		slot_getallattrs(s->event_slot);
	MemoryContextSwitchTo(caller);
	if (!found)
	{
		s->ended = true;		/* never skip a position: stop before it */
		s->blocked = true;
		return false;
	}

	s->values[0] = Int64GetDatum(best->position);
	s->nulls[0] = false;
	memcpy(&s->values[1], s->event_slot->tts_values, sizeof(Datum) * Natts_events);
	memcpy(&s->nulls[1], s->event_slot->tts_isnull, sizeof(bool) * Natts_events);
	MemoryContextReset(s->row_context);
	MemoryContextSwitchTo(s->row_context);
	es_present_event(s->values, s->nulls);
	MemoryContextSwitchTo(caller);
	s->as_stored = as_stored(s->values, s->nulls, s->event_slot);

	/* the log row's datum goes with its slot, which moves on below: keep the event's */
	s->current.stream_id = s->values[Anum_events_stream_id];
	s->position = best->position;
	if (s->remaining > 0)
		s->remaining--;
	MemoryContextSwitchTo(s->cxt);
	sub_advance(s, best);
	MemoryContextSwitchTo(caller);
	return true;
}

/* Put the current event into a tuplestore of event_store.event (put_event). */
void
es_log_scan_put(EsLogScan *s, Tuplestorestate *store, TupleDesc desc)
{
	put_event(store, desc, s->event_slot, s->as_stored, s->values, s->nulls, &s->tuple, s->cxt);
}

/*
 * Finish a log scan: release the scans, relations and memory.
 */
void
es_log_scan_end(EsLogScan *s)
{
	int			i;

	for (i = 0; i < s->nsubs; i++)
	{
		index_endscan(s->subs[i].scan);
		ExecDropSingleTupleTableSlot(s->subs[i].slot);
	}
	index_endscan(s->event_scan);
	ExecDropSingleTupleTableSlot(s->event_slot);
	index_close(s->events_index, AccessShareLock);
	index_close(s->log_index, AccessShareLock);
	table_close(s->events, AccessShareLock);
	table_close(s->log, AccessShareLock);
	MemoryContextDelete(s->row_context);
	if (s->tuple.data != NULL)
		pfree(s->tuple.data);
	if (s->run_stream != NULL)
		pfree(s->run_stream);
	if (s->group_last_stream != NULL)
		pfree(s->group_last_stream);
	pfree(s);
}

/*
 * The highest position of the global log the snapshot sees (0: none); with
 * the log a prefix, every position up to it is visible too.
 */
int64
es_log_head(Snapshot snapshot)
{
	Relation	log = table_open(es_catalog()->log_relid, AccessShareLock);
	Relation	idx = index_open(es_catalog()->log_pkey, AccessShareLock);	/* as of the lock */
	IndexScanDesc scan = index_beginscan(log, idx, snapshot, 0, 0);
	TupleTableSlot *slot = table_slot_create(log, NULL);
	int64		head = 0;

	index_rescan(scan, NULL, 0, NULL, 0);
	if (index_getnext_slot(scan, BackwardScanDirection, slot))
	{
		bool		isnull;

		head = DatumGetInt64(slot_getattr(slot, Anum_log_global_position, &isnull));
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, AccessShareLock);
	table_close(log, AccessShareLock);
	return head;
}

/* The head of the log as the latest snapshot sees it. */
int64
es_latest_log_head(void)
{
	Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
	int64		head = es_log_head(snap);

	UnregisterSnapshot(snap);
	return head;
}

