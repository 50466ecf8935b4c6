/*-------------------------------------------------------------------------
 *
 * write.h
 *	  The write path: the BEFORE INSERT trigger every append goes through
 *	  (versioning.c) and append() / append_events() (append.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_STORE_WRITE_H
#define EVENT_STORE_WRITE_H

#include "internal.h"

#include "datatype/timestamp.h"

/* stream_heads.c: the shared cache of stream heads */
typedef struct EsHeadKey
{
	Oid			relid;			/* the event table */
	Oid			relfile;
	uint64		hash;			/* of the stream id: the stream lock's key */
	int			len;
	const char *id;				/* the stream id (not terminated) */
} EsHeadKey;

extern Size es_heads_shmem_size(void);
extern void es_heads_shmem_init(void);
extern void es_heads_init(void);
extern void es_heads_forget_all(void);
extern bool es_head_key(Relation events, text *stream_id, uint64 hash, EsHeadKey *key);
extern bool es_head_take(const EsHeadKey *key, int64 *version, TimestampTz *recorded_at,
						 TransactionId *xid);
extern void es_head_publish(const EsHeadKey *key, int64 version, TimestampTz recorded_at);

/*
 * What append() and append_events() learn from the trigger: while one of them
 * runs its INSERT, es_append_frame points at its frame, and the trigger
 * records there the version of each of the first `rows` events of the frame's
 * stream it sees (the new version, or a re-sent event's original one).
 * Events of other streams, and events inserted during the statement by
 * other triggers (nested INSERTs, at a deeper trigger level, which ON
 * CONFLICT may skip or a subtransaction roll back) are not recorded.
 *
 * The trigger also keeps there the stream's head after the row it versioned
 * last, so that the next row of the statement need not look it up again
 * (versioning.c says when that is safe).
 */
typedef struct EsAppendFrame
{
	text	   *stream_id;		/* the stream the statement appends to */
	int64		rows;			/* events the statement inserts */
	int64		seen;			/* events of the stream the trigger has recorded */
	int64		version;		/* the highest version recorded */
	SubTransactionId subid;		/* the subtransaction the statement runs in */
	int			depth;			/* the trigger depth of its rows' triggers */
	int			level;			/* and the statement level (es_statement_level) */
	uint64		head_call;		/* the trigger call that left the head below; 0: none */
	int64		head_version;	/* the stream's version after that call's row */
	TimestampTz head_recorded_at;	/* and that row's recorded_at */
	bool		head_cached;	/* the head may go to the shared cache (stream_heads.c) */
	EsHeadKey	head_key;		/* under this key */
} EsAppendFrame;

/* versioning.c */
extern EsAppendFrame *es_append_frame;
extern void es_report_wrong_version(text *stream_id, int64 actual, int64 expected) pg_attribute_noreturn();
extern void es_check_schema_version(int32 schema_version);
extern void es_publish_frame_head(EsAppendFrame *frame);
extern int	es_trigger_depth(void);

/*
 * How many statements (executor runs and finishes, utility commands) are
 * running in this backend, one inside another.
 */
extern int	es_statement_level;
extern int64 es_stream_head(Relation events, Relation stream_index, text *stream_id,
							Snapshot snapshot, TimestampTz *recorded_at);

/* append.c: append_events() for C callers, in two steps (execute() in command.c) */
typedef struct EsBatch EsBatch;
extern EsBatch *es_read_batch(Jsonb *batch);
extern int64 es_append_batch(text *stream_id, EsBatch *batch, const int64 *expected);

#endif							/* EVENT_STORE_WRITE_H */
