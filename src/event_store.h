/*-------------------------------------------------------------------------
 *
 * event_store.h
 *	  Shared declarations of the event_store extension.
 *
 * This header is installed with the extension (HEADERS_event_store) so that
 * other C extensions can build against the public parts: the layout of
 * event_store.events and the extension's SQLSTATEs.  Everything else here is
 * internal to event_store.so.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_STORE_H
#define EVENT_STORE_H

#include "postgres.h"

#include "access/htup.h"
#include "access/sdir.h"
#include "fmgr.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/* Columns of event_store.events, in table order (1-based attribute numbers). */
#define Anum_events_stream_id		1
#define Anum_events_stream_version	2
#define Anum_events_event_id		3
#define Anum_events_event_type		4
#define Anum_events_schema_version	5
#define Anum_events_data			6
#define Anum_events_metadata		7
#define Anum_events_recorded_at		8
#define Natts_events				8

/*
 * The composite type event_store.event is the table row with the commit-ordered
 * global position in front: attribute n of the table is attribute n + 1 of
 * the type.
 */
#define Natts_event					(Natts_events + 1)

/* Limits on identifiers (bytes). They keep every index entry well below the btree limit. */
#define ES_MAX_ID_BYTES				1024

/*
 * SQLSTATEs of the extension, class "VE" (implementation-defined range).
 * Documented in README.md, "SQLSTATEs".
 */
#define ERRCODE_ES_WRONG_EXPECTED_VERSION	MAKE_SQLSTATE('V','E','0','0','1')
#define ERRCODE_ES_EVENT_ID_CONFLICT		MAKE_SQLSTATE('V','E','0','0','2')
#define ERRCODE_ES_APPEND_ONLY				MAKE_SQLSTATE('V','E','0','0','3')

/* The decoding pipeline (VE020-VE029). */
#define ERRCODE_ES_PLUGIN_OPTION			MAKE_SQLSTATE('V','E','0','2','0')
#define ERRCODE_ES_INVALID_MESSAGE			MAKE_SQLSTATE('V','E','0','2','1')
#define ERRCODE_ES_SLOT_INVALIDATED			MAKE_SQLSTATE('V','E','0','2','2')

/* The field4 of our advisory-class lock tags (pg_locks.objsubid); core uses 1 and 2. */
#define ES_LOCKTAG_STREAM			0x4553

#ifndef EVENT_STORE_PUBLIC_ONLY

/* event_store.c: settings */
extern int	es_max_stream_locks;
extern char *es_correlation_id;
extern char *es_causation_id;

/* versioning.c: the event table and its indexes, resolved once per backend */
typedef struct EsCatalog
{
	Oid			events_relid;
	Oid			stream_index;	/* (stream_id, stream_version), the primary key */
	Oid			event_id_index; /* unique (event_id) */
} EsCatalog;

extern const EsCatalog *es_catalog(void);
extern void es_versioning_init(void);
extern int64 es_stream_head(Relation events, Relation stream_index, text *stream_id,
							Snapshot snapshot, TimestampTz *recorded_at);

/*
 * What append() and append_events() learn from the trigger: while one of them
 * runs its INSERT, es_append_frame points at its frame, and the trigger
 * records the version of each of the first `rows` events it sees there (the
 * new version, or a re-sent event's original one).  Events inserted later in
 * the same statement by other triggers (AFTER triggers) are not recorded.
 */
typedef struct EsAppendFrame
{
	int64		rows;			/* events the statement inserts */
	int64		seen;			/* events the trigger has recorded */
	int64		version;		/* version of the last one recorded */
} EsAppendFrame;

extern EsAppendFrame *es_append_frame;
extern void es_report_wrong_version(text *stream_id, int64 actual, int64 expected) pg_attribute_noreturn();

/* read.c: the stream scan behind every read path */
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
	Datum		values[Natts_event];	/* the current event_store.event */
	bool		nulls[Natts_event];
} EsStreamScan;

extern void es_check_read_access(Relation events);
extern void es_present_event(Datum *values, bool *nulls);
extern EsStreamScan *es_stream_scan_begin(text *stream_id, int64 lower, int64 upper,
										  bool backwards, const TimestampTz *as_of,
										  int64 max_count, Snapshot snapshot);
extern bool es_stream_scan_next(EsStreamScan *s);
extern void es_stream_scan_end(EsStreamScan *s);

/*
 * decoder.c: true while the output plugin has es_present_event() present an
 * event, i.e. inside logical decoding, under a historic catalog snapshot:
 * there only catalog tables (and tables marked user_catalog_table) may be
 * read, and nothing may be written.  Presentation steps that read other
 * tables must take another path (a cache) when it is set.
 */
extern bool es_presenting_in_decoding;

/* shmem.c: the decoding pipeline (see pipeline.h) */
extern bool es_xact_appended;	/* set by the trigger; the worker is woken at commit */
extern void es_pipeline_init(void);

/* Argument checks shared by the SQL-callable functions. */
extern void es_require_arg(FunctionCallInfo fcinfo, int argno, const char *name);

#endif							/* EVENT_STORE_PUBLIC_ONLY */

#endif							/* EVENT_STORE_H */
