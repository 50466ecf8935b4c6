/*-------------------------------------------------------------------------
 *
 * snapshot.c
 *	  The snapshot table: finding the newest valid snapshot (one index
 *	  probe), writing one, and save_snapshot / load_snapshot /
 *	  delete_snapshots for callers who manage snapshots themselves.
 *
 * A snapshot is an aggregate's state after the first `version` events of a
 * stream, computed under the aggregate's `generation` from events upcast by
 * the registry whose fingerprint is `upcasters`; only snapshots of the
 * current generation and registry are valid.  event_store.snapshots has two indexes on
 * (stream_id, aggregate, generation, ...): by version, and by the recorded_at
 * of the event at that version, so that the newest valid snapshot, at or
 * before a version or a time, is found by a single backward index probe.
 * Snapshots are derived data: deleting any of them changes no result.
 *
 * Locking and rights: reads take AccessShareLock on the table and index, as
 * a SELECT does.  The table is read by the functions only, for callers with
 * SELECT on event_store.events (a snapshot is derived from the events, and
 * its state may hold a protected field in clear: no role is granted SELECT
 * on it).  Writes go through SPI as the extension's owner (ES_RUN_AS_OWNER),
 * so that EXECUTE on save_snapshot and delete_snapshots is the right to call
 * them, and INSERT on event_store.snapshots the right of a load to write
 * one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "aggregate.h"
#include "crypto.h"
#include "read.h"
#include "upcast.h"

PG_FUNCTION_INFO_V1(event_store_save_snapshot);
PG_FUNCTION_INFO_V1(event_store_load_snapshot);
PG_FUNCTION_INFO_V1(event_store_delete_snapshots);

#define SNAPSHOT_INSERT \
"INSERT INTO event_store.snapshots AS s " \
"(stream_id, aggregate, generation, upcasters, version, state, recorded_at) " \
"VALUES ($1, $2, $3, $4, $5, $6, $7) " \
"ON CONFLICT (stream_id, aggregate, generation, upcasters, version) "

#define SNAPSHOT_TYPES TEXTOID, TEXTOID, INT8OID, INT8OID, INT8OID, JSONBOID, TIMESTAMPTZOID

static EsStatement write_statement = ES_STATEMENT(SNAPSHOT_INSERT "DO NOTHING", 7, SNAPSHOT_TYPES);
static EsStatement replace_statement = ES_STATEMENT(
	SNAPSHOT_INSERT
	"DO UPDATE SET state = EXCLUDED.state, recorded_at = EXCLUDED.recorded_at, "
	"created_at = pg_catalog.now()",
	7, SNAPSHOT_TYPES);

static EsStatement delete_statement = ES_STATEMENT(
	"DELETE FROM event_store.snapshots s "
	"WHERE ($1::pg_catalog.text IS NULL OR s.stream_id OPERATOR(pg_catalog.=) $1) "
	"AND ($2::pg_catalog.text IS NULL OR s.aggregate OPERATOR(pg_catalog.=) $2)",
	2, TEXTOID, TEXTOID);

/*
 * What the events a fold sees depend on, besides the aggregate: the upcaster
 * registry (its fingerprint), and whether protected fields reach the reducer
 * decrypted or redacted (the caller's right to read personal data).  State
 * folded under one view is never served under another: it is the
 * `upcasters` column of the snapshot key.  0 is the plain view: no
 * upcasters, personal data readable (or none protected).  Returns false when
 * the view cannot be fingerprinted (a C upcast hook that declares nothing):
 * then no snapshot is used or written.
 */
bool
es_snapshot_view(int64 *view)
{
	uint64		v;

	if (!es_upcast_fingerprint(&v))
		return false;
	if (!es_may_read_personal_data())
		v ^= UINT64CONST(0x9e3779b97f4a7c15);
	*view = (int64) v;
	return true;
}

/*
 * Find the newest snapshot of the aggregate's current generation for the
 * stream with version <= at_version (-1: any) and recorded at or before
 * *as_of (NULL: any time), visible to the snapshot.  One backward index
 * probe: by version, or by time when as_of is given (recorded_at never
 * decreases along a stream, so the newest by time is the newest by version).
 */
bool
es_find_snapshot(text *stream_id, const EsAggregate *agg, const TimestampTz *as_of,
				 int64 at_version, Snapshot snapshot, EsSnapshot *found)
{
	const EsCatalog *cat = es_catalog();
	Relation	rel = table_open(cat->snapshots_relid, AccessShareLock);
	Relation	idx;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData keys[6];
	int			nkeys = 0;
	bool		ok;

	/*
	 * No privilege check: only the functions read the table (a state may hold
	 * what the reducer copied from a protected field, in clear), for callers
	 * who may read the events the state is folded from.
	 */
	idx = index_open(as_of ? cat->snapshots_time_idx : cat->snapshots_pkey, AccessShareLock);
	ScanKeyInit(&keys[nkeys++], 1, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(stream_id));
	ScanKeyInit(&keys[nkeys++], 2, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(agg->name));
	ScanKeyInit(&keys[nkeys++], 3, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(agg->generation));
	/* state folded under another view of the events is not valid here */
	ScanKeyInit(&keys[nkeys++], 4, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(found->view));
	if (as_of)
	{
		ScanKeyInit(&keys[nkeys++], 5, BTLessEqualStrategyNumber, F_TIMESTAMPTZ_LE,
					TimestampTzGetDatum(*as_of));
		if (at_version >= 0)
			ScanKeyInit(&keys[nkeys++], 6, BTLessEqualStrategyNumber, F_INT8LE,
						Int64GetDatum(at_version));
	}
	else if (at_version >= 0)
		ScanKeyInit(&keys[nkeys++], 5, BTLessEqualStrategyNumber, F_INT8LE,
					Int64GetDatum(at_version));

	slot = table_slot_create(rel, NULL);
	scan = index_beginscan(rel, idx, snapshot, nkeys, 0);
	index_rescan(scan, keys, nkeys, NULL, 0);
	ok = index_getnext_slot(scan, BackwardScanDirection, slot);
	if (ok)
	{
		slot_getallattrs(slot);
		found->version = DatumGetInt64(slot->tts_values[Anum_snapshots_version - 1]);
		found->state = DatumGetJsonbPCopy(slot->tts_values[Anum_snapshots_state - 1]);
		found->recorded_at = DatumGetTimestampTz(slot->tts_values[Anum_snapshots_recorded_at - 1]);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
	return ok;
}

/*
 * May load_aggregate write a snapshot here?  Not in a read-only transaction
 * or on a standby, and not for a caller without INSERT on the snapshot table
 * (a snapshot is served to every reader, so writing one is a privilege):
 * such loads simply write none.
 */
bool
es_may_write_snapshots(void)
{
	if (XactReadOnly || RecoveryInProgress())
		return false;
	return pg_class_aclcheck(es_catalog()->snapshots_relid, GetUserId(),
							 ACL_INSERT) == ACLCHECK_OK;
}

/*
 * Store a snapshot of the aggregate's current generation.  An existing one at
 * the same version is kept, or with `replace`, replaced.
 */
void
es_write_snapshot(text *stream_id, const EsAggregate *agg, const EsSnapshot *snap, bool replace)
{
	Datum		values[7];

	values[0] = PointerGetDatum(stream_id);
	values[1] = PointerGetDatum(agg->name);
	values[2] = Int64GetDatum(agg->generation);
	values[3] = Int64GetDatum(snap->view);
	values[4] = Int64GetDatum(snap->version);
	values[5] = JsonbPGetDatum(snap->state);
	values[6] = TimestampTzGetDatum(snap->recorded_at);
	SPI_connect();
	es_run(replace ? &replace_statement : &write_statement, values, NULL, ES_RUN_AS_OWNER, 0,
		   SPI_OK_INSERT);
	SPI_finish();
}

/*
 * save_snapshot(stream_id, aggregate, version, state) RETURNS void: store
 * the caller's own snapshot of the aggregate after `version` events
 * (replacing one at the same version).  The stream must have that version.
 */
Datum
event_store_save_snapshot(PG_FUNCTION_ARGS)
{
	text	   *stream_id = es_identifier_arg(fcinfo, 0, "stream_id");
	text	   *name = es_identifier_arg(fcinfo, 1, "aggregate");
	EsAggregate agg;
	EsSnapshot	snap;
	EsStreamScan *s;
	bool		exists;

	es_require_arg(fcinfo, 2, "version");
	es_require_arg(fcinfo, 3, "state");
	snap.version = PG_GETARG_INT64(2);
	snap.state = PG_GETARG_JSONB_P(3);
	if (snap.version < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("version must be at least 1"),
				 errdetail("Got " INT64_FORMAT ".", snap.version),
				 errhint("A snapshot is the state after the stream's first version events; the state at version 0 is the aggregate's initial state.")));
	es_lookup_aggregate(name, GetActiveSnapshot(), false, &agg);

	s = es_stream_scan_begin(stream_id, snap.version, snap.version, false, NULL, 1,
							 GetActiveSnapshot());
	exists = es_stream_scan_next(s);
	if (exists)
		snap.recorded_at = DatumGetTimestampTz(s->values[Anum_events_recorded_at]);
	es_stream_scan_end(s);
	if (!exists)
	{
		int64		head = 0;

		s = es_stream_scan_begin(stream_id, 0, 0, true, NULL, 1, GetActiveSnapshot());
		if (es_stream_scan_next(s))
			head = DatumGetInt64(s->values[Anum_events_stream_version]);
		es_stream_scan_end(s);
		ereport(ERROR,
				(errcode(ERRCODE_ES_SNAPSHOT_BEYOND_STREAM),
				 errmsg("snapshot version " INT64_FORMAT " is beyond the end of stream \"%s\"",
						snap.version, text_to_cstring(stream_id)),
				 errdetail("Stream \"%s\" is at version " INT64_FORMAT ".",
						   text_to_cstring(stream_id), head),
				 errhint("Save a snapshot only of a version the stream has.")));
	}
	if (!es_snapshot_view(&snap.view))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("snapshots cannot be saved while an upcast hook without a fingerprint is loaded"),
				 errdetail("A C module sets event_store_upcast_hook but declares nothing in event_store_upcast_hook_fingerprint, so the state could not be told apart from state folded under other upcasting."),
				 errhint("Have the module declare a fingerprint, or save the snapshot in a session that does not load it.")));
	es_write_snapshot(stream_id, &agg, &snap, true);
	PG_RETURN_VOID();
}

/*
 * load_snapshot(stream_id, aggregate) RETURNS TABLE(version bigint, state
 * jsonb): the newest valid snapshot, or no row.
 */
Datum
event_store_load_snapshot(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	text	   *stream_id;
	text	   *name;
	EsAggregate agg;
	EsSnapshot	snap;

	stream_id = es_identifier_arg(fcinfo, 0, "stream_id");
	name = es_identifier_arg(fcinfo, 1, "aggregate");
	InitMaterializedSRF(fcinfo, 0);
	es_lookup_aggregate(name, GetActiveSnapshot(), false, &agg);
	{
		/* the right to read a state is the right to read its events */
		Relation	events = table_open(es_catalog()->events_relid, AccessShareLock);

		es_check_read_access(events);
		table_close(events, AccessShareLock);
	}
	if (es_snapshot_view(&snap.view) &&
		es_find_snapshot(stream_id, &agg, NULL, -1, GetActiveSnapshot(), &snap))
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = Int64GetDatum(snap.version);
		values[1] = JsonbPGetDatum(snap.state);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * Delete the snapshots of a stream, of an aggregate, of both, or (both NULL)
 * all, as the extension's owner; returns how many.  For other modules too:
 * whatever changes the events readers are handed (a new upcaster, a
 * forgotten subject) must delete the snapshots derived from them, or
 * "snapshot + later events = full replay" no longer holds.
 */
int64
es_delete_snapshots(text *stream_id, text *aggregate)
{
	Datum		values[2];
	char		nulls[2];
	uint64		deleted;

	values[0] = PointerGetDatum(stream_id);
	nulls[0] = stream_id ? ' ' : 'n';
	values[1] = PointerGetDatum(aggregate);
	nulls[1] = aggregate ? ' ' : 'n';
	SPI_connect();
	deleted = es_run(&delete_statement, values, nulls, ES_RUN_AS_OWNER, 0, SPI_OK_DELETE);
	SPI_finish();
	return (int64) deleted;
}

/*
 * delete_snapshots(stream_id, aggregate) RETURNS bigint: delete the
 * snapshots of a stream, of an aggregate, of both, or (both NULL) all;
 * returns how many.  Naming an unknown aggregate is an error (a typo would
 * otherwise delete nothing silently).
 */
Datum
event_store_delete_snapshots(PG_FUNCTION_ARGS)
{
	text	   *stream_id = NULL;
	text	   *aggregate = NULL;

	if (!PG_ARGISNULL(0))
		stream_id = es_identifier_arg(fcinfo, 0, "stream_id");
	if (!PG_ARGISNULL(1))
	{
		EsAggregate agg;

		aggregate = es_identifier_arg(fcinfo, 1, "aggregate");
		es_lookup_aggregate(aggregate, GetActiveSnapshot(), false, &agg);
	}
	PG_RETURN_INT64(es_delete_snapshots(stream_id, aggregate));
}
