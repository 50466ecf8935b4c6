/*-------------------------------------------------------------------------
 *
 * event_store.h
 *	  The public C interface of the event_store extension.
 *
 * The public header, installed with the extension (HEADERS_event_store):
 * what another C extension needs to build against event_store -- the
 * layout of event_store.events, the extension's SQLSTATEs and the upcast
 * hook.  Nothing here is internal; the extension's own declarations are in
 * internal.h and the subsystem headers (see src/README.md).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_STORE_H
#define EVENT_STORE_H

#include "fmgr.h"
#include "utils/jsonb.h"

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
 * SQLSTATEs of the extension, class "VE" (implementation-defined range), in
 * code order, one meaning each; documented in README.md, "SQLSTATEs".
 */
/* The event log and upcasting (versioning.c, upcast*.c), the install scripts */
#define ERRCODE_ES_WRONG_EXPECTED_VERSION	MAKE_SQLSTATE('V','E','0','0','1')
#define ERRCODE_ES_EVENT_ID_CONFLICT		MAKE_SQLSTATE('V','E','0','0','2')
#define ERRCODE_ES_APPEND_ONLY				MAKE_SQLSTATE('V','E','0','0','3')
#define ERRCODE_ES_UPCASTER_CONFLICT		MAKE_SQLSTATE('V','E','0','0','4')
#define ERRCODE_ES_UPCASTER_SIGNATURE		MAKE_SQLSTATE('V','E','0','0','5')
#define ERRCODE_ES_UPCASTER_RESULT			MAKE_SQLSTATE('V','E','0','0','6')
#define ERRCODE_ES_FOREIGN_SCHEMA			MAKE_SQLSTATE('V','E','0','0','7')	/* raised by the scripts */
#define ERRCODE_ES_UPCASTER_MISSING			MAKE_SQLSTATE('V','E','0','0','8')

/* Aggregates, snapshots and execute() (aggregate.c, snapshot.c, command.c) */
#define ERRCODE_ES_UNKNOWN_AGGREGATE		MAKE_SQLSTATE('V','E','0','1','0')
#define ERRCODE_ES_WRONG_REDUCER			MAKE_SQLSTATE('V','E','0','1','1')
#define ERRCODE_ES_INVALID_STATE			MAKE_SQLSTATE('V','E','0','1','2')
#define ERRCODE_ES_WRONG_DECIDER			MAKE_SQLSTATE('V','E','0','1','3')
#define ERRCODE_ES_INVALID_DECISION			MAKE_SQLSTATE('V','E','0','1','4')
#define ERRCODE_ES_EXECUTE_GAVE_UP			MAKE_SQLSTATE('V','E','0','1','5')
#define ERRCODE_ES_SNAPSHOT_BEYOND_STREAM	MAKE_SQLSTATE('V','E','0','1','6')
#define ERRCODE_ES_REDUCER_MISSING			MAKE_SQLSTATE('V','E','0','1','7')

/* The decoding pipeline (decoder.c, publish.c, worker.c); VE021 is retired (0.1.0 only) */
#define ERRCODE_ES_PLUGIN_OPTION			MAKE_SQLSTATE('V','E','0','2','0')
#define ERRCODE_ES_SLOT_INVALIDATED			MAKE_SQLSTATE('V','E','0','2','2')
#define ERRCODE_ES_FORGED_MESSAGE			MAKE_SQLSTATE('V','E','0','2','3')
#define ERRCODE_ES_SLOT_MOVED				MAKE_SQLSTATE('V','E','0','2','4')

/* Personal data (crypto*.c) */
#define ERRCODE_ES_SUBJECT_FORGOTTEN		MAKE_SQLSTATE('V','E','0','3','0')
#define ERRCODE_ES_CIPHERTEXT_AUTHENTICATION MAKE_SQLSTATE('V','E','0','3','1')
#define ERRCODE_ES_NO_KEK					MAKE_SQLSTATE('V','E','0','3','2')
#define ERRCODE_ES_INVALID_PATH				MAKE_SQLSTATE('V','E','0','3','3')
#define ERRCODE_ES_NO_SUBJECT				MAKE_SQLSTATE('V','E','0','3','4')
#define ERRCODE_ES_RESERVED_METADATA		MAKE_SQLSTATE('V','E','0','3','5')

/* Projections (projection*.c, projector.c) */
#define ERRCODE_ES_UNKNOWN_PROJECTION		MAKE_SQLSTATE('V','E','0','4','0')
#define ERRCODE_ES_PROJECTION_EXISTS		MAKE_SQLSTATE('V','E','0','4','1')
#define ERRCODE_ES_WRONG_HANDLER			MAKE_SQLSTATE('V','E','0','4','2')
#define ERRCODE_ES_HANDLER_MISSING			MAKE_SQLSTATE('V','E','0','4','3')
#define ERRCODE_ES_PROJECTION_STATE			MAKE_SQLSTATE('V','E','0','4','4')
#define ERRCODE_ES_PROJECTION_RESTORED		MAKE_SQLSTATE('V','E','0','4','5')

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

#endif							/* EVENT_STORE_H */
