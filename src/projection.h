/*-------------------------------------------------------------------------
 *
 * projection.h
 *	  Projections (read models): declarations shared by projection.c (the
 *	  registry, the SQL functions, inline application, running handlers as
 *	  their owner) and projector.c (the background workers that apply
 *	  asynchronous projections from the global log).  Internal to
 *	  event_store.so; not installed.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ES_PROJECTION_H
#define ES_PROJECTION_H

#include "internal.h"

#include "access/tupdesc.h"
#include "utils/array.h"

/* Settings (projection.c), documented in README.md, "Settings". */
extern int	es_projection_workers;
extern int	es_projection_batch_events;
extern int	es_projection_batch_time_ms;
extern int	es_projection_retries;
extern int	es_projection_retry_delay_ms;

/* Columns of event_store.projections (1-based). */
#define Anum_projections_name			1
#define Anum_projections_handler		2
#define Anum_projections_event_types	4
#define Anum_projections_categories		5
#define Anum_projections_mode			6
#define Anum_projections_on_error		7
#define Anum_projections_owner			8
#define Anum_projections_search_path	9

/* One row of event_store.projections, as the functions and workers use it. */
typedef struct EsProjection
{
	char	   *name;
	char	   *handler_signature;
	char	   *reset_signature;	/* NULL: none */
	ArrayType  *event_types;	/* NULL: every type */
	ArrayType  *categories;		/* NULL: every category */
	bool		inline_mode;
	bool		park;			/* on_error => 'park' (else 'stop') */
	Oid			owner;
	char	   *search_path;
	char	   *state;
	bool		restored;		/* its position refers to another database's log (pg_dump) */
	char	   *incarnation;	/* a uuid, new at creation and at every rebuild */
	bool		has_position;	/* inline projections have none */
	int64		position;
	int32		retries;
} EsProjection;

/* A handler resolved for calling. */
typedef struct EsHandler
{
	Oid			fn;
	FmgrInfo	flinfo;
	TupleDesc	event_desc;		/* of event_store.event */
} EsHandler;

/* What es_projection_enter saved. */
typedef struct EsAsOwner
{
	Oid			save_user;
	int			save_sec;
	int			nestlevel;
} EsAsOwner;

/* The event a handler is being called for, for error reports. */
typedef struct EsProjectionEvent
{
	const char *projection;
	int64		position;		/* 0: not ordered yet (inline) */
	Datum		stream_id;
	int64		stream_version;
} EsProjectionEvent;

/* projection.c: the registry */
extern Oid	es_projection_registry(void);
extern Oid	es_projection_require_registry(void);
extern uint64 es_projection_run(EsStatement *st, Datum *values, const char *nulls, int expect);
extern bool es_projection_read(const char *name, bool latest, EsProjection *p);
extern void es_projection_read_or_fail(const char *name, EsProjection *p);
extern bool es_projection_lock(const char *name, bool wait);
extern void es_projection_lock_for_change(const char *name, EsProjection *p);
extern void es_projection_check_owner(const EsProjection *p);
extern void es_projection_check_not_restored(const EsProjection *p);
extern const char *es_projection_name_arg(FunctionCallInfo fcinfo);
extern void es_projection_changed(void);

/* projection_handler.c: handlers, run as their owner; inline application */
extern void es_projection_check_function(Oid fn, bool reset, const char *projection);
extern void es_projection_check_owner_rights(Oid owner, Oid fn, bool inline_mode);
extern void es_projection_resolve(const EsProjection *p, EsHandler *h);
extern void es_projection_enter(const EsProjection *p, EsAsOwner *save);
extern void es_projection_leave(EsAsOwner *save);
extern void es_projection_call(const EsProjection *p, EsHandler *h, const EsProjectionEvent *ev,
							   Datum *values, bool *nulls);
extern void es_projection_call_reset(const EsProjection *p);
extern void es_projection_check_replay(const char *name);
extern int64 es_projection_replay_log(const EsProjection *p);
extern void es_projection_inline_reset(void);
extern void es_apply_inline(Datum *values, bool *nulls);
extern bool es_in_inline_projection(void);

/* projection_parked.c */
extern void es_projection_park(const char *projection, Datum stream_id, int64 stream_version,
							   int64 position, Datum event_type, ErrorData *edata);

/* projector.c */
extern PGDLLEXPORT void event_store_projector_main(Datum arg);
extern void es_supervise_projectors(bool recount);

#endif							/* ES_PROJECTION_H */
