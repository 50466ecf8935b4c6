/*-------------------------------------------------------------------------
 *
 * projection_parked.c
 *	  Projections: parked events -- the events a projection with on_error
 *	  => 'park' could not apply, set aside so that it goes on -- and
 *	  replay_parked() / discard_parked().
 *
 * A parked event is a row of event_store.projection_parked (projection,
 * stream, version, position, error).  replay_parked() applies the parked
 * events again, in log order, each in a subtransaction: those that now
 * succeed leave the table, those that fail again stay with the new error.
 * discard_parked() drops them (all, a stream's, or one).
 *
 * Locking: the projection's lock (projection.c), so that a worker's batch
 * and a replay never apply the same projection at once.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"

#include "projection.h"
#include "read.h"

PG_FUNCTION_INFO_V1(event_store_replay_parked);
PG_FUNCTION_INFO_V1(event_store_discard_parked);

static EsStatement park_statement = ES_STATEMENT(
	"INSERT INTO event_store.projection_parked AS k "
	"  (projection, stream_id, stream_version, global_position, event_type, error, error_sqlstate) "
	"VALUES ($1, $2, $3, $4, $5, $6, $7) "
	"ON CONFLICT (projection, stream_id, stream_version) DO UPDATE "
	"SET error = EXCLUDED.error, error_sqlstate = EXCLUDED.error_sqlstate, "
	"    global_position = COALESCE(EXCLUDED.global_position, k.global_position), "
	"    parked_at = pg_catalog.now()",
	7, TEXTOID, TEXTOID, INT8OID, INT8OID, TEXTOID, TEXTOID, TEXTOID);

static EsStatement list_parked = ES_STATEMENT(
	"SELECT k.stream_id, k.stream_version, COALESCE(k.global_position, g.global_position) "
	"  FROM event_store.projection_parked k "
	"  LEFT JOIN event_store.events e "
	"    ON e.stream_id OPERATOR(pg_catalog.=) k.stream_id "
	"   AND e.stream_version OPERATOR(pg_catalog.=) k.stream_version "
	"  LEFT JOIN event_store.global_log g ON g.event_id OPERATOR(pg_catalog.=) e.event_id "
	" WHERE k.projection OPERATOR(pg_catalog.=) $1 "
	" ORDER BY 3 NULLS LAST, k.parked_at, k.stream_id, k.stream_version",
	1, TEXTOID);

static EsStatement delete_parked = ES_STATEMENT(
	"DELETE FROM event_store.projection_parked "
	" WHERE projection OPERATOR(pg_catalog.=) $1 "
	"   AND stream_id OPERATOR(pg_catalog.=) $2 "
	"   AND stream_version OPERATOR(pg_catalog.=) $3",
	3, TEXTOID, TEXTOID, INT8OID);

static EsStatement discard_statement = ES_STATEMENT(
	"DELETE FROM event_store.projection_parked "
	" WHERE projection OPERATOR(pg_catalog.=) $1 "
	"   AND ($2 IS NULL OR stream_id OPERATOR(pg_catalog.=) $2) "
	"   AND ($3::pg_catalog.int8 IS NULL OR stream_version OPERATOR(pg_catalog.=) $3)",
	3, TEXTOID, TEXTOID, INT8OID);


/*
 * Record a parked event (its handler failed): in the registry, as the owner
 * of the extension.
 */
void
es_projection_park(const char *projection, Datum stream_id, int64 stream_version, int64 position,
		   Datum event_type, ErrorData *edata)
{
	Datum		args[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

	args[0] = CStringGetTextDatum(projection);
	args[1] = stream_id;
	args[2] = Int64GetDatum(stream_version);
	args[3] = Int64GetDatum(position);
	nulls[3] = position > 0 ? ' ' : 'n';
	args[4] = event_type;
	args[5] = CStringGetTextDatum(edata->message ? edata->message : "");
	args[6] = CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode));
	SPI_connect();
	es_projection_run(&park_statement, args, nulls, SPI_OK_INSERT);
	SPI_finish();
}

/*
 * replay_parked(name) RETURNS bigint: apply the projection's parked events
 * again, oldest position first, in this transaction, as its owner; those
 * that succeed are removed from the parked list, the others stay with their
 * new error.  Returns how many succeeded.
 */
Datum
event_store_replay_parked(PG_FUNCTION_ARGS)
{
	const char *name = es_projection_name_arg(fcinfo);
	EsProjection p;
	EsHandler	h;
	Datum		args[3];
	MemoryContext caller = CurrentMemoryContext;
	int			n;
	int			i;
	int64		replayed = 0;
	Datum	   *streams;
	int64	   *versions;
	int64	   *positions;

	es_projection_lock_for_change(name, &p);
	es_projection_check_not_restored(&p);
	es_projection_resolve(&p, &h);
	args[0] = CStringGetTextDatum(name);
	SPI_connect();
	n = es_projection_run(&list_parked, args, NULL, SPI_OK_SELECT);
	streams = MemoryContextAlloc(caller, sizeof(Datum) * Max(n, 1));
	versions = MemoryContextAlloc(caller, sizeof(int64) * Max(n, 1));
	positions = MemoryContextAlloc(caller, sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		bool		isnull;
		HeapTuple	tup = SPI_tuptable->vals[i];
		Datum		d;
		MemoryContext spi;

		d = SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull);
		spi = MemoryContextSwitchTo(caller);
		streams[i] = PointerGetDatum(DatumGetTextPCopy(d));
		MemoryContextSwitchTo(spi);
		versions[i] = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
		d = SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull);
		positions[i] = isnull ? 0 : DatumGetInt64(d);
	}
	SPI_finish();
	MemoryContextSwitchTo(caller);

	for (i = 0; i < n; i++)
	{
		EsProjectionEvent ev;
		volatile Datum event_type = (Datum) 0;
		EsSubxact	sx;

		ev.projection = name;
		ev.position = positions[i];
		ev.stream_id = streams[i];
		ev.stream_version = versions[i];
		MemoryContextSwitchTo(caller);
		es_subxact_begin(&sx);
		PG_TRY();
		{
			EsAsOwner	save;
			EsStreamScan *s;
			bool		found;

			es_projection_enter(&p, &save);
			s = es_stream_scan_begin(DatumGetTextPP(streams[i]), versions[i], versions[i], false,
									 NULL, 1, GetActiveSnapshot());
			found = es_stream_scan_next(s);
			if (found)
			{
				event_type = PointerGetDatum(DatumGetTextPCopy(s->values[Anum_events_event_type]));
				s->values[0] = Int64GetDatum(positions[i]);
				s->nulls[0] = positions[i] == 0;
				es_projection_call(&p, &h, &ev, s->values, s->nulls);
			}
			es_stream_scan_end(s);
			es_projection_leave(&save);
			args[1] = streams[i];
			args[2] = Int64GetDatum(versions[i]);
			SPI_connect();
			es_projection_run(&delete_parked, args, NULL, SPI_OK_DELETE);
			SPI_finish();
			es_subxact_commit(&sx);
			if (found)
				replayed++;
		}
		PG_CATCH();
		{
			ErrorData  *edata = es_subxact_abort(&sx);

			es_projection_park(name, streams[i], versions[i], positions[i],
					   event_type != (Datum) 0 ? event_type : CStringGetTextDatum(""), edata);
		}
		PG_END_TRY();
	}
	PG_RETURN_INT64(replayed);
}

/*
 * discard_parked(name, stream_id, stream_version) RETURNS bigint: forget the
 * projection's parked events (all, a stream's, or one); returns how many.
 */
Datum
event_store_discard_parked(PG_FUNCTION_ARGS)
{
	const char *name = es_projection_name_arg(fcinfo);
	EsProjection p;
	Datum		args[3];
	char		nulls[3] = {' ', 'n', 'n'};
	int			n;

	if (PG_ARGISNULL(1) && !PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream_version needs a stream_id"),
				 errhint("Pass the stream of the parked event too.")));
	es_projection_lock_for_change(name, &p);
	args[0] = CStringGetTextDatum(name);
	if (!PG_ARGISNULL(1))
	{
		args[1] = PointerGetDatum(es_identifier_arg(fcinfo, 1, "stream_id"));
		nulls[1] = ' ';
	}
	if (!PG_ARGISNULL(2))
	{
		args[2] = PG_GETARG_DATUM(2);
		nulls[2] = ' ';
	}
	SPI_connect();
	n = es_projection_run(&discard_statement, args, nulls, SPI_OK_DELETE);
	SPI_finish();
	PG_RETURN_INT64(n);
}
