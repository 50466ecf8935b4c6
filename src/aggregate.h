/*-------------------------------------------------------------------------
 *
 * aggregate.h
 *	  Aggregates, snapshots and command handling: declarations shared by
 *	  aggregate.c (registry and fold), snapshot.c (the snapshot table) and
 *	  command.c (execute).  Internal to event_store.so; not installed.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ES_AGGREGATE_H
#define ES_AGGREGATE_H

#include "internal.h"

/* Columns of event_store.aggregates (1-based). */
#define Anum_aggregates_name			1
#define Anum_aggregates_reducer			2
#define Anum_aggregates_initial_state	3
#define Anum_aggregates_snapshot_every	4
#define Anum_aggregates_generation		5
#define Anum_aggregates_defined_at		6

/* Columns of event_store.snapshots (1-based). */
#define Anum_snapshots_stream_id		1
#define Anum_snapshots_aggregate		2
#define Anum_snapshots_generation		3
#define Anum_snapshots_upcasters		4
#define Anum_snapshots_version			5
#define Anum_snapshots_state			6
#define Anum_snapshots_recorded_at		7

/* One row of event_store.aggregates, resolved for use. */
typedef struct EsAggregate
{
	text	   *name;
	Oid			reducer;		/* InvalidOid unless resolved */
	Jsonb	   *initial_state;
	int			snapshot_every; /* the setting when the row's is NULL; 0: never */
	int64		generation;
} EsAggregate;

/* A snapshot of an aggregate's state after `version` events. */
typedef struct EsSnapshot
{
	int64		version;
	Jsonb	   *state;
	TimestampTz recorded_at;	/* of the stream's event at `version` */
	int64		view;			/* es_snapshot_view() the state belongs to */
} EsSnapshot;

/* aggregate.c */
extern int	es_snapshot_every;
extern int	es_execute_retries;
extern void es_lookup_aggregate(text *name, Snapshot snapshot, bool with_reducer,
								EsAggregate *agg);
extern Datum es_reduce(FunctionCallInfo fcinfo, const EsAggregate *agg, Datum state,
					   TupleDesc tupdesc, Datum *values, bool *nulls, text *stream_id);
extern Jsonb *es_fold(text *stream_id, const EsAggregate *agg, const TimestampTz *as_of,
					  int64 at_version, Snapshot snapshot, int64 *version);

/* snapshot.c */
extern bool es_snapshot_view(int64 *view);
extern bool es_find_snapshot(text *stream_id, const EsAggregate *agg, const TimestampTz *as_of,
							 int64 at_version, Snapshot snapshot, EsSnapshot *found);
extern bool es_may_write_snapshots(void);
extern void es_write_snapshot(text *stream_id, const EsAggregate *agg, const EsSnapshot *snap,
							  bool replace);
extern int64 es_delete_snapshots(text *stream_id, text *aggregate);

#endif							/* ES_AGGREGATE_H */
