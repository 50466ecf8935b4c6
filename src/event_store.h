/*-------------------------------------------------------------------------
 *
 * event_store.h
 *	  Shared declarations of the event_store extension.
 *
 * This header is installed with the extension (HEADERS_event_store) so that
 * other C extensions can build against the public parts: the layout of
 * event_store.events, the extension's SQLSTATEs and the upcast hook.  The
 * rest is internal to event_store.so, visible only with EVENT_STORE_INTERNAL
 * defined (the Makefile does so for the extension's own files).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_STORE_H
#define EVENT_STORE_H

#include "access/htup.h"
#include "access/sdir.h"
#include "fmgr.h"
#include "nodes/pg_list.h"
#include "utils/array.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"
#include "datatype/timestamp.h"
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
#define ERRCODE_ES_UPCASTER_CONFLICT		MAKE_SQLSTATE('V','E','0','0','4')
#define ERRCODE_ES_UPCASTER_SIGNATURE		MAKE_SQLSTATE('V','E','0','0','5')
#define ERRCODE_ES_UPCASTER_RESULT			MAKE_SQLSTATE('V','E','0','0','6')
/* raised by the upgrade script (CREATE EXTENSION, ALTER EXTENSION UPDATE) */
#define ERRCODE_ES_FOREIGN_SCHEMA			MAKE_SQLSTATE('V','E','0','0','7')

/* Aggregates, snapshots and execute() (aggregate.c, snapshot.c, command.c). */
#define ERRCODE_ES_UNKNOWN_AGGREGATE		MAKE_SQLSTATE('V','E','0','1','0')
#define ERRCODE_ES_WRONG_REDUCER			MAKE_SQLSTATE('V','E','0','1','1')
#define ERRCODE_ES_INVALID_STATE			MAKE_SQLSTATE('V','E','0','1','2')
#define ERRCODE_ES_WRONG_DECIDER			MAKE_SQLSTATE('V','E','0','1','3')
#define ERRCODE_ES_INVALID_DECISION			MAKE_SQLSTATE('V','E','0','1','4')
#define ERRCODE_ES_EXECUTE_GAVE_UP			MAKE_SQLSTATE('V','E','0','1','5')
#define ERRCODE_ES_SNAPSHOT_BEYOND_STREAM	MAKE_SQLSTATE('V','E','0','1','6')
#define ERRCODE_ES_REDUCER_MISSING			MAKE_SQLSTATE('V','E','0','1','7')

/* Personal data (crypto.c): VE030-VE039 */
#define ERRCODE_ES_SUBJECT_FORGOTTEN		MAKE_SQLSTATE('V','E','0','3','0')
#define ERRCODE_ES_CIPHERTEXT_AUTHENTICATION MAKE_SQLSTATE('V','E','0','3','1')
#define ERRCODE_ES_NO_KEK					MAKE_SQLSTATE('V','E','0','3','2')
#define ERRCODE_ES_INVALID_PATH				MAKE_SQLSTATE('V','E','0','3','3')
#define ERRCODE_ES_NO_SUBJECT				MAKE_SQLSTATE('V','E','0','3','4')
#define ERRCODE_ES_RESERVED_METADATA		MAKE_SQLSTATE('V','E','0','3','5')

/* Projections (projection.c, projector.c): VE040-VE049 */
#define ERRCODE_ES_UNKNOWN_PROJECTION		MAKE_SQLSTATE('V','E','0','4','0')
#define ERRCODE_ES_PROJECTION_EXISTS		MAKE_SQLSTATE('V','E','0','4','1')
#define ERRCODE_ES_WRONG_HANDLER			MAKE_SQLSTATE('V','E','0','4','2')
#define ERRCODE_ES_HANDLER_MISSING			MAKE_SQLSTATE('V','E','0','4','3')
#define ERRCODE_ES_PROJECTION_STATE			MAKE_SQLSTATE('V','E','0','4','4')
#define ERRCODE_ES_PROJECTION_RESTORED		MAKE_SQLSTATE('V','E','0','4','5')

/* The decoding pipeline (VE020-VE029). */
#define ERRCODE_ES_PLUGIN_OPTION			MAKE_SQLSTATE('V','E','0','2','0')
#define ERRCODE_ES_INVALID_MESSAGE			MAKE_SQLSTATE('V','E','0','2','1')
#define ERRCODE_ES_SLOT_INVALIDATED			MAKE_SQLSTATE('V','E','0','2','2')
#define ERRCODE_ES_FORGED_MESSAGE			MAKE_SQLSTATE('V','E','0','2','3')

/* The field4 of our advisory-class lock tags (pg_locks.objsubid); core uses 1 and 2. */
#define ES_LOCKTAG_STREAM			0x4553
/* ... of the subject lock taken when a subject key is created or forgotten */
#define ES_LOCKTAG_SUBJECT			0x4554
/* ... and of the event id lock taken while an event with a given id is appended */
#define ES_LOCKTAG_EVENT_ID			0x4555

/*
 * The upcast hook.  Another C extension can upcast events too: it saves the
 * previous value of event_store_upcast_hook in its _PG_init, installs its own
 * function and calls the previous one from it, as with Postgres's own hooks
 * (event_store must be loaded first: preload it, or list it first).  The
 * hook is called for every event a reader is handed, after the registered
 * SQL upcasters ran, and may replace event_type, schema_version and data
 * (palloc'd in the current memory context; data must stay a JSON object).
 */
typedef struct EventStoreUpcastEvent
{
	text	   *stream_id;		/* read-only */
	int64		stream_version; /* read-only */
	text	   *event_type;
	int32		schema_version;
	Jsonb	   *data;
} EventStoreUpcastEvent;

typedef void (*event_store_upcast_hook_type) (EventStoreUpcastEvent *event);
extern PGDLLIMPORT event_store_upcast_hook_type event_store_upcast_hook;

/*
 * What the hook does is part of the fingerprint that snapshots of aggregates
 * carry (state folded from upcast events is valid only for the same
 * upcasting).  A module that sets the hook adds a nonzero value of its own
 * to event_store_upcast_hook_fingerprint with ^=, and replaces it (^= old ^
 * new) whenever what it does changes: a new version of the module, a
 * setting it depends on.  While the hook is set and the fingerprint is 0,
 * snapshots are neither used nor written.
 */
extern PGDLLIMPORT uint64 event_store_upcast_hook_fingerprint;

/* Everything below is internal to event_store.so (built with -DEVENT_STORE_INTERNAL). */
#ifdef EVENT_STORE_INTERNAL

#include "storage/lock.h"

/*
 * locks.c: a slot for one short lock of ours at a time (see locks.c for the
 * protocol: held from a check to the write it allows, never while waiting
 * for another transaction).  Zero-initialise it (a static variable).
 */
typedef struct EsLock
{
	bool		registered;
	bool		held;
	LOCKTAG		tag;
	SubTransactionId subid;		/* the subtransaction that took it */
} EsLock;

extern void es_locks_init(void);
extern void es_lock_take(EsLock *lock, uint16 kind, uint64 key);
extern void es_lock_release(EsLock *lock);
extern bool es_lock_held(const EsLock *lock);

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
	Oid			owner;			/* owner of the event table: the extension's owner */
	Oid			log_relid;		/* global_log */
	Oid			log_pkey;		/* (global_position) */
	Oid			log_category_index; /* (category, global_position) */
	Oid			log_type_index; /* (event_type, global_position) */
} EsCatalog;

extern const EsCatalog *es_catalog(void);
extern void es_versioning_init(void);
extern int64 es_stream_head(Relation events, Relation stream_index, text *stream_id,
							Snapshot snapshot, TimestampTz *recorded_at);

/*
 * What append() and append_events() learn from the trigger: while one of them
 * runs its INSERT, es_append_frame points at its frame, and the trigger
 * records there the version of each of the first `rows` events of the frame's
 * stream it sees (the new version, or a re-sent event's original one).
 * Events of other streams, and events inserted later in the same statement by
 * other triggers (AFTER triggers), are not recorded.
 */
typedef struct EsAppendFrame
{
	text	   *stream_id;		/* the stream the statement appends to */
	int64		rows;			/* events the statement inserts */
	int64		seen;			/* events of the stream the trigger has recorded */
	int64		version;		/* the highest version recorded */
} EsAppendFrame;

extern EsAppendFrame *es_append_frame;
extern void es_report_wrong_version(text *stream_id, int64 actual, int64 expected) pg_attribute_noreturn();

/* append.c: append_events() for C callers */
extern int64 es_append_events(text *stream_id, Jsonb *batch, const int64 *expected);

/* aggregate.c, snapshot.c: aggregates, snapshots and execute() (more in aggregate.h) */
extern void es_aggregate_init(void);
extern int64 es_delete_snapshots(text *stream_id, text *aggregate);

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
	MemoryContext cxt;			/* where the scan lives (the index AM's state) */
	MemoryContext row_context;	/* what presenting the current event allocated */
	Datum		values[Natts_event];	/* the current event_store.event */
	bool		nulls[Natts_event];
} EsStreamScan;

extern void es_check_read_access(Relation rel);
extern void es_present_event(Datum *values, bool *nulls);
extern EsStreamScan *es_stream_scan_begin(text *stream_id, int64 lower, int64 upper,
										  bool backwards, const TimestampTz *as_of,
										  int64 max_count, Snapshot snapshot);
extern bool es_stream_scan_next(EsStreamScan *s);
extern void es_stream_scan_end(EsStreamScan *s);

/* read_all.c: the global log scan behind read_all and the projections */
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
	int			ntypes;
	text	  **types;			/* sorted, distinct */
	struct IndexScanDescData *event_scan;	/* the events' primary key, rescanned per row */
	struct TupleTableSlot *event_slot;
	bool		started;
	bool		ended;
	bool		blocked;		/* ended before a position whose event it cannot see */
	int64		remaining;		/* events still to return; -1: no limit */
	int64		position;		/* of the last event returned (at first: `after`) */
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
} EsLogScan;

extern EsLogScan *es_log_scan_begin(int64 after, ArrayType *categories, ArrayType *event_types,
									int64 max_count, Snapshot snapshot);
extern bool es_log_scan_next(EsLogScan *s);
extern void es_log_scan_end(EsLogScan *s);
extern int64 es_log_head(Snapshot snapshot);
extern int64 es_latest_log_head(void);
extern int64 es_interval_ms(Interval *interval, const char *what);
extern int	es_text_cmp(const void *a, const void *b);
extern int	es_name_array(ArrayType *arr, const char *what, text ***names);

/* crypto.c: personal data (protect, forget) */
extern void es_crypto_init(void);
extern void es_protect_event(Datum *values, bool *nulls);
extern void es_decrypt_event(Datum *values, bool *nulls);
extern Datum es_plain_data(Datum data, Datum metadata);
extern List *es_key_streams(const char *key_id);

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
extern text *es_check_identifier(Datum value, bool isnull, const char *what);
extern text *es_identifier_arg(FunctionCallInfo fcinfo, int argno, const char *name);

/*
 * event_store.c: run SQL (SPI) as the owner of the extension's tables, the
 * way referential-integrity triggers run as the table's owner.  Every write
 * of the registries (upcasters, aggregates, protected_types), the key tables
 * and the snapshots goes through here, so that callers need the function's
 * EXECUTE right and no right on the tables.  An error in between needs no
 * cleanup: (sub)transaction abort restores the user.
 */
typedef struct EsOwnerSave
{
	Oid			user;
	int			sec_context;
} EsOwnerSave;

extern void es_owner_begin(EsOwnerSave *save);
extern void es_owner_end(const EsOwnerSave *save);

/*
 * event_store.c: the function a stored signature names (registries keep
 * "schema.name(argtypes)" as format_procedure_qualified() wrote it), or
 * InvalidOid when it is gone or the text is not such a signature with
 * exactly these argument types.  Never raises for malformed text, so that a
 * bad registry row breaks only what needs it.
 */
extern Oid	es_resolve_signature(const char *signature, int nargs, const Oid *argtypes);

/* crypto.c (beyond the hooks above) */
extern bool es_may_read_personal_data(void);
extern void es_scrub_forgotten_keys(void);

/* upcast.c */
extern void es_upcast_init(void);
extern void es_upcast_event(Datum *values, bool *nulls);
extern int32 es_current_schema_version(text *event_type);
extern bool es_upcast_fingerprint(uint64 *fingerprint);

#endif							/* EVENT_STORE_INTERNAL */

#endif							/* EVENT_STORE_H */
