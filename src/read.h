/*-------------------------------------------------------------------------
 *
 * read.h
 *	  The read path: the one read engine (scan.c) behind every reader --
 *	  read_stream, read_all (read.c), aggregates, projections -- and the
 *	  presentation every event passes through on its way out.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_STORE_READ_H
#define EVENT_STORE_READ_H

#include "internal.h"

#include "datatype/timestamp.h"
#include "utils/array.h"

/*
 * Turn a stored event (values/nulls: an event_store.event) into what
 * readers are handed: decrypted, then upcast.  Every read path calls it.
 */
extern void es_present_event(Datum *values, bool *nulls);

/*
 * decoder.c: true while the output plugin has es_present_event() present an
 * event, i.e. inside logical decoding, under a historic catalog snapshot:
 * there only catalog tables (and tables marked user_catalog_table) may be
 * read, and nothing may be written.  Presentation steps that read other
 * tables must take another path (a cache) when it is set.
 */
extern bool es_presenting_in_decoding;

/* The caller's SELECT right on a table read directly, and no row-level security on it. */
extern void es_check_read_access(Relation rel);

/* Where a scan builds the tuples it puts into a tuplestore (scan.c). */
typedef struct EsTupleBuffer
{
	char	   *data;
	Size		size;
} EsTupleBuffer;

/* scan.c: the stream scan, through the primary key of the event table */
typedef struct EsStreamScan
{
	Relation	events;
	Relation	index;
	struct IndexScanDescData *scan;
	struct TupleTableSlot *slot;
	ScanDirection dir;
	bool		has_as_of;
	TimestampTz as_of;
	int64		remaining;		/* events still to return; -1: no limit */
	MemoryContext cxt;			/* where the scan lives (the index AM's state) */
	MemoryContext row_context;	/* what presenting the current event allocated */
	Datum		values[Natts_event];	/* the current event_store.event */
	bool		nulls[Natts_event];
	bool		as_stored;		/* presenting changed none of the stored values */
	EsTupleBuffer tuple;		/* es_stream_scan_put's */
} EsStreamScan;

extern EsStreamScan *es_stream_scan_begin(text *stream_id, int64 lower, int64 upper,
										  bool backwards, const TimestampTz *as_of,
										  int64 max_count, Snapshot snapshot);
extern bool es_stream_scan_next(EsStreamScan *s);
extern void es_stream_scan_put(EsStreamScan *s, struct Tuplestorestate *store, TupleDesc desc);
extern void es_stream_scan_end(EsStreamScan *s);

/* read.c: read_stream(stream_id, from_version, max_count, backwards, as_of) */
#define ES_READ_STREAM_NARGS 5
extern EsStreamScan *es_read_stream_begin(const Datum *args, const bool *nulls, Snapshot snapshot);

/* read_node.c: the scan node of FROM read_stream(...) */
extern bool es_read_stream_node;
extern void es_read_node_init(void);

/* scan.c: the log scan, through the global log's indexes */
typedef struct EsLogScan
{
	Relation	log;
	Relation	events;
	Relation	log_index;
	Relation	events_index;
	Snapshot	snapshot;
	int			nsubs;
	struct LogSubScan *subs;	/* one ordered index scan per category or type */
	bool		filter_types;	/* check the rows' types against `types` */
	int32		group_member;	/* consumer group: only streams of this member ... */
	int32		group_size;		/* ... of a group of this size (0: no group) */
	text	   *group_last_stream;	/* the last stream looked at, and whether it is ours */
	bool		group_last_ours;
	int			ntypes;
	text	  **types;			/* sorted, distinct */
	struct IndexScanDescData *event_scan;	/* the events' primary key, from (stream, version) on */
	struct TupleTableSlot *event_slot;
	bool		run_open;		/* event_scan is at (run_stream, run_version) */
	text	   *run_stream;		/* a copy: the scan's key */
	int64		run_version;
	int64		run_ahead;		/* how many versions the last descent read ahead */
	bool		started;
	bool		ended;
	bool		blocked;		/* ended before a position whose event it cannot see */
	int64		remaining;		/* events still to return; -1: no limit */
	int64		position;		/* of the last event returned (at first: `after`) */
	int64		pass_limit;		/* rejected rows after which an index scan stops (0: none) */
	bool		cut;			/* one did: the scan ends at `passed` */
	int64		passed;			/* when the scan ended at a cut: every event up to it
								 * returned or rejected; else `after` */
	bool		have_current;	/* `current` identifies the row being fetched */
	struct
	{
		int64		position;
		Datum		stream_id;
		int64		stream_version;
	}			current;		/* the row being fetched and presented, then returned */
	MemoryContext cxt;			/* where the scan lives */
	MemoryContext row_context;	/* what presenting the current event allocated */
	Datum		values[Natts_event];	/* the current event_store.event */
	bool		nulls[Natts_event];
	bool		as_stored;		/* presenting changed none of the stored values */
	EsTupleBuffer tuple;		/* es_log_scan_put's */
} EsLogScan;

extern EsLogScan *es_log_scan_begin(int64 after, ArrayType *categories, ArrayType *event_types,
									int64 max_count, Snapshot snapshot);
extern void es_log_scan_set_pass_limit(EsLogScan *s, int64 limit);
extern void es_log_scan_set_group(EsLogScan *s, int32 member, int32 size);
extern bool es_log_scan_next(EsLogScan *s);
extern void es_log_scan_put(EsLogScan *s, struct Tuplestorestate *store, TupleDesc desc);
extern void es_log_scan_end(EsLogScan *s);
extern int64 es_stream_hash(const char *stream_id, int len);
extern int64 es_log_head(Snapshot snapshot);
extern int64 es_latest_log_head(void);
#endif							/* EVENT_STORE_READ_H */
