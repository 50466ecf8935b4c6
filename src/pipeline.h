/*-------------------------------------------------------------------------
 *
 * pipeline.h
 *	  Declarations of the logical-decoding pipeline: the output plugin
 *	  (decoder.c), publish (publish.c), the shared state and hooks
 *	  (shmem.c), the launcher (launcher.c), the per-database worker
 *	  (worker.c) and the pipeline seen from SQL (pipeline_status.c).
 *
 * Internal to event_store.so.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_STORE_PIPELINE_H
#define EVENT_STORE_PIPELINE_H

#include "postgres.h"

#include "access/xact.h"
#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "replication/reorderbuffer.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/uuid.h"

/* The prefix of the logical messages publish() writes. */
#define ES_MESSAGE_PREFIX			"event_store"

/* The name of the output plugin (the library's name). */
#define ES_PLUGIN_NAME				"event_store"

/* Slot and replication origin of a database's worker: "event_store_<dboid>". */
#define ES_PIPELINE_NAME_FORMAT		"event_store_%u"

/* NOTIFY channel of new positions: one notification per worker round (payload: the new head) */
#define ES_LOG_CHANNEL				"event_store_global_log"

/* Databases the pipeline can serve at once (workers). */
#define ES_MAX_PIPELINES			32

/* Projection workers per database at most (event_store.projection_workers). */
#define ES_MAX_PROJECTORS			8

/*
 * decoder.c: in the worker process the plugin hands decoded events to this
 * sink instead of writing JSON.  It is NULL in every other process, so a
 * walsender or pg_logical_slot_get_changes() always gets JSON.
 */
typedef struct EsDecoderSink
{
	void		(*event) (void *arg, ReorderBufferTXN *txn, Oid relid,
						  text *stream_id, int64 stream_version, const pg_uuid_t *event_id,
						  text *event_type);
	void		(*commit) (void *arg, ReorderBufferTXN *txn, XLogRecPtr commit_lsn);
	void	   *arg;
} EsDecoderSink;

extern EsDecoderSink *es_decoder_sink;

/*
 * decoder.c, for the worker: the decoded transactions that changed the
 * catalog (the worker waits for them to end; it stops decoding a round when
 * the array is full, so none is left out).
 */
#define ES_MAX_CATALOG_XIDS 64
extern TransactionId es_decoded_catalog_xids[ES_MAX_CATALOG_XIDS];
extern int	es_ndecoded_catalog_xids;

/* publish.c: signed messages */
extern void es_publish_init(void);
extern bool es_publish_signature(TransactionId xid, const char *body, Size len, char *hex);
extern char *es_publish_verify(TransactionId xid, const char *message, Size size);

/* The category of a stream: the part of its id before the first '-'. */
extern text *es_stream_category(const char *stream_id, int len);

/* shmem.c: one entry per database the pipeline serves */
typedef enum EsPipelineState
{
	ES_PIPE_FREE = 0,			/* unused entry */
	ES_PIPE_WANTED,				/* a worker should run; none is running */
	ES_PIPE_RUNNING				/* a worker runs (pid set) */
} EsPipelineState;

/* A projection worker's place in its database's entry. */
typedef struct EsProjectorSlot
{
	pid_t		pid;			/* 0: none */
	Latch	   *latch;
	TimestampTz start_requested;	/* the pipeline worker asked for one then */
} EsProjectorSlot;

typedef struct EsPipelineDb
{
	Oid			dboid;
	EsPipelineState state;
	pid_t		pid;			/* the worker, 0 if none */
	Latch	   *latch;			/* the worker's latch, NULL if none */
	RepOriginId origin;			/* the worker's replication origin */
	TimestampTz next_start;		/* launcher: not before this time */
	XLogRecPtr	decoded_lsn;	/* WAL read up to here */
	XLogRecPtr	applied_lsn;	/* everything committed before this is in the log */
	XLogRecPtr	confirmed_lsn;	/* the slot was confirmed up to here */
	TimestampTz last_commit_time;	/* commit time of the last ordered transaction */
	TimestampTz last_apply_time;	/* when the worker last committed positions */
	TimestampTz caught_up_time;	/* when the worker last had ordered all flushed WAL */
	int64		last_position;	/* highest position assigned */
	int64		rebuilds;		/* times the log was rebuilt from the event table */
	bool		want_again;		/* asked for while running: a stopping worker restarts */
	char		last_error[256];
	bool		projections_changed;	/* count the async projections again */
	pid_t		held_by;		/* a backend running a command that needs the database
								 * alone holds the workers off (0: none) */
	bool		cleanup;		/* start a worker even with the pipeline disabled: the
								 * extension may be gone, its slot and origin with it */
	bool		scrub_wanted;	/* a forget committed: overwrite its key rows */
	pg_atomic_uint64 commits;	/* appending transactions committed (es_pipeline_committed) */
	bool		sleeping;		/* the worker sleeps until woken: commits set its latch */
	EsProjectorSlot projectors[ES_MAX_PROJECTORS];
} EsPipelineDb;

/* Sessions restoring a database at once, in the whole server (restore.c). */
#define ES_MAX_RESTORES				64

typedef struct EsRestoringSession
{
	pid_t		pid;			/* 0: free */
	Oid			dboid;
} EsRestoringSession;

typedef struct EsPipelineShared
{
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	ConditionVariable progress_cv;	/* broadcast when a worker made progress */
	ConditionVariable projection_cv;	/* broadcast when a projection made progress */
	EsPipelineDb dbs[ES_MAX_PIPELINES];
	EsRestoringSession restores[ES_MAX_RESTORES];
} EsPipelineShared;

/*
 * A background worker's transaction: like a client's statement, it first sets
 * the statement start time, so that now() (and the recorded_at of events a
 * handler appends) is the time of this transaction, not the worker's start.
 */
static inline void
es_worker_begin(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
}

extern EsPipelineShared *es_pipeline;
extern LWLock *es_pipeline_lock;

extern bool es_xact_appended;	/* set by the trigger; the worker is woken at commit */
extern bool es_pipeline_available(void);
extern void es_require_pipeline(void);
extern void es_ensure_pipeline_worker(void);
extern EsPipelineDb *es_pipeline_find(Oid dboid);
extern bool es_pipeline_want(Oid dboid);
extern void es_pipeline_wake_db(Oid dboid);
extern void es_pipeline_committed(Oid dboid);
extern RepOriginId es_pipeline_own_origin(void);
extern void es_pipeline_wake_projectors(Oid dboid);
extern void es_pipeline_projections_changed(Oid dboid);
extern void es_pipeline_scrub_at_commit(void);

/* pipeline_status.c */
extern bool es_wait_for_pipeline_until(TimestampTz deadline);

/* worker_buffer.c: the pipeline worker's buffer of decoded events */
/* One buffered event. */
typedef struct EsBufEvent
{
	Oid			relid;			/* event_store.events as decoded */
	text	   *stream_id;
	int64		stream_version;
	pg_uuid_t	event_id;
	text	   *event_type;
} EsBufEvent;

/* One buffered committed transaction: events [first, first + n). */
typedef struct EsBufTxn
{
	TransactionId xid;			/* top-level */
	XLogRecPtr	end_lsn;
	XLogRecPtr	commit_lsn;
	TimestampTz commit_time;
	int64		first;
	int64		n;
} EsBufTxn;

extern EsDecoderSink es_buffer_sink;
extern void es_buffer_init(void);
extern void es_buffer_reset(void);
extern int	es_buffer_ntxns(void);
extern const EsBufTxn *es_buffer_txn(int t);
extern int64 es_buffer_nevents(void);
extern void es_buffer_rewind(void);
extern const EsBufEvent *es_buffer_event(int64 i);

/* restore.c: a restoring session holds its database's pipeline and projections */
extern bool es_restoring;
struct CopyStmt;
extern void es_restore_note_copy(struct CopyStmt *stmt);
extern int	es_restore_in_progress(Oid dboid);

/* health.c: the start-up checks */
extern void es_health_log(void);

/* worker_log.c: the worker's writes into the global log */
typedef struct EsLogWriter EsLogWriter;
extern EsLogWriter *es_log_writer_begin(int64 next);
extern bool es_log_writer_add(EsLogWriter *w, text *stream_id, int64 stream_version,
							  const pg_uuid_t *event_id, text *category, text *event_type,
							  XLogRecPtr commit_lsn, bool probe);
extern int64 es_log_writer_end(EsLogWriter *w);

/* launcher.c, worker.c */
extern bool es_pipeline_enabled;
extern bool es_pipeline_notify;
extern int	es_pipeline_naptime_ms;
extern int	es_pipeline_batch_events;
extern int	es_pipeline_max_lag_kb;
extern void es_launcher_register(void);
extern PGDLLEXPORT void event_store_launcher_main(Datum arg);
extern PGDLLEXPORT void event_store_worker_main(Datum arg);

#endif							/* EVENT_STORE_PIPELINE_H */
