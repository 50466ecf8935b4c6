/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The "event_store pipeline" background worker of one database: decodes
 *	  the WAL through the event_store output plugin, in process, and orders
 *	  the committed events into event_store.global_log, dense and gap-free,
 *	  in commit order.
 *
 * One round:
 *	 1. Decode, in a transaction of its own that writes nothing, the WAL
 *		flushed so far, through a decoding context that lives as long as the
 *		worker (core's logicalfuncs.c does the same per call).  The plugin
 *		hands each event's identifiers to the worker's sink, which buffers
 *		them per committed transaction.  Decoding stops at the first commit
 *		after event_store.pipeline_batch_events buffered events.
 *	 2. In a normal transaction, give each buffered event the next position
 *		(an event already in the log, from a rebuild or a restore, keeps its
 *		position and takes none), and record where decoding stopped as the
 *		progress of the worker's replication origin: it is WAL-logged with
 *		the commit, so the log and the progress cannot disagree after a
 *		crash.  Transactions at or below that LSN are skipped: the slot
 *		delivers at least once.
 *	 3. Once that commit is flushed, confirm the slot up to the progress.
 *		The slot is never confirmed beyond a flushed progress (a round
 *		without events records its progress on its own, confirm_round), so a
 *		slot found confirmed further was moved by another session.
 *
 * The worker's own transactions carry its origin; the plugin drops them.
 * Appending backends set the worker's latch at commit (shmem.c), so it sleeps
 * only when there is nothing to do.
 *
 * When the slot is new (first start, or an invalidated slot replaced) or was
 * moved by another session, every
 * event the slot will not deliver is ordered from the event table: events
 * missing from the log, by (recorded_at, stream_id, stream_version), after
 * the existing positions.  Their commit order is not known any more.
 *
 * Memory: the round's events are buffered by worker_buffer.c, bounded in
 * memory (beyond 10,000 events they go to a temporary file), so that no
 * transaction's size bounds the worker.  The reorder buffer spills
 * transactions larger than logical_decoding_work_mem to disk itself.
 *
 * Locking: RowExclusiveLock on global_log while a round's positions are
 * written (a DROP EXTENSION waits at most for one round); the replication
 * slot is held by the worker for its whole life.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/rmgr.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xloginsert.h"
#include "access/xlogutils.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/extension.h"
#include "storage/sinval.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/origin.h"
#include "replication/slot.h"
#include "storage/buffile.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "crypto.h"
#include "internal.h"
#include "pipeline.h"
#include "projection.h"
#include "read.h"


/*
 * Transactions that committed at or before this LSN may have their events
 * in the log already, ordered by a rebuild or brought by a restore: their
 * events are looked up before they are given a position (worker_log.c).
 * Set after a rebuild or a restore, and when a batch met an event in the
 * log (apply_buffer).
 */
static XLogRecPtr overlap_until = InvalidXLogRecPtr;

/* Commits counted when last looked at, and when the worker was last busy. */
static uint64 commits_seen = 0;
static TimestampTz last_busy = 0;

/* Where the current round's decoding stopped: the origin's progress once it is ordered. */
static XLogRecPtr round_end = InvalidXLogRecPtr;

/* The end of the WAL record (our commit, or origin_set_progress's) that set the origin's progress last. */
static XLogRecPtr progress_record_end = InvalidXLogRecPtr;

/*
 * The log's head after our last commit of positions, with the catalog
 * generation it was written under; -1: look it up.  Only this worker writes
 * the log but for a rebuild (ours), a restore (waited for) and an update
 * of the extension (which invalidates the catalog), and each of these, or
 * an error, makes the next round look the head up again.  (A restore the
 * worker did not see running brings positions that collide with the next
 * ones: a unique violation, retried with the head looked up.)
 */
static int64 known_head = -1;
static uint64 known_head_generation = 0;

/* The head last notified (notifications only ever raise it), and whether the queue was too full. */
static int64 notified_head = 0;
static bool notify_skipped = false;

static void write_positions(void);

/*
 * The system caches (pipeline_round): whether the last decoding left them
 * as of the present (no catalog change decoded; false until the first
 * round), the count of shared invalidation messages received when last
 * looked at, and the WAL insert position just after it last changed: every
 * catalog change whose invalidations this process has received has its WAL
 * (its commit record included) before it.
 */
static bool caches_clean = false;
static uint64 inval_count_seen = 0;
static XLogRecPtr inval_horizon = InvalidXLogRecPtr;

/* Note invalidations received since last looked at. */
static void
note_invalidations(void)
{
	if (SharedInvalidMessageCounter != inval_count_seen)
	{
		inval_count_seen = SharedInvalidMessageCounter;
		inval_horizon = GetXLogInsertRecPtr();
	}
}

/*
 * Slot confirmations waiting for the worker's own commits (asynchronous) to
 * be flushed: the slot is confirmed past decoded WAL only once the positions
 * written for it are durable.
 */
#define MAX_PENDING_CONFIRMS	64

typedef struct PendingConfirm
{
	XLogRecPtr	commit_end;		/* our commit that wrote the positions (0: none) */
	XLogRecPtr	confirm;		/* where the slot may then be confirmed */
} PendingConfirm;

static PendingConfirm pending[MAX_PENDING_CONFIRMS];
static int	npending = 0;

static EsPipelineDb *my_entry = NULL;
static char my_name[NAMEDATALEN];
static void worker_loop(void) pg_attribute_noreturn();
static void wait_for_restores(void);
static void confirm_flushed(void);
static MemoryContext round_context = NULL;	/* reset after each decoded record */
static MemoryContext apply_context = NULL;	/* reset after each event whose position is written */

/*
 * The end of the status errors that stay shown once the worker has caught
 * up: the log was completed from the event table, and commit order lost.
 */
#define REBUILT_FROM_EVENTS		"; rebuilt from event_store.events"

/* Record an error for the health view. */
static void
set_status_error(const char *msg)
{
	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	strlcpy(my_entry->last_error, msg ? msg : "", sizeof(my_entry->last_error));
	LWLockRelease(es_pipeline_lock);
}

/*
 * Record `lsn` as the origin's progress, durably, without a transaction of
 * our own to carry it: the WAL record pg_replication_origin_advance() writes,
 * written for the origin this session holds (which replorigin_advance()
 * refuses to touch).  Returns the record's end, to be flushed before the slot
 * is confirmed up to `lsn`.
 */
static XLogRecPtr
origin_set_progress(XLogRecPtr lsn)
{
	xl_replorigin_set xlrec;
	XLogRecPtr	end;

	memset(&xlrec, 0, sizeof(xlrec));
	xlrec.remote_lsn = lsn;
	xlrec.node_id = replorigin_session_origin;
	xlrec.force = false;

	/*
	 * As a commit record carrying an origin's progress: a checkpoint must not
	 * put its redo point after the record yet save the progress from before
	 * it (RecordTransactionCommit delays checkpoints the same way).
	 */
	START_CRIT_SECTION();
	MyProc->delayChkptFlags |= DELAY_CHKPT_START;
	XLogBeginInsert();
	XLogRegisterData((char *) &xlrec, sizeof(xlrec));
	end = XLogInsert(RM_REPLORIGIN_ID, XLOG_REPLORIGIN_SET);
	replorigin_session_advance(lsn, end);
	MyProc->delayChkptFlags &= ~DELAY_CHKPT_START;
	END_CRIT_SECTION();
	progress_record_end = end;
	return end;
}

/*
 * On exit: leave the entry for the launcher to restart, unless it was freed
 * (extension dropped, database being dropped).
 */
static void
worker_exit(int code, Datum arg)
{
	(void) code;
	(void) arg;
	if (my_entry == NULL)
		return;
	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	if (my_entry->pid == MyProcPid)
	{
		my_entry->pid = 0;
		my_entry->latch = NULL;
		if (my_entry->state == ES_PIPE_RUNNING)
		{
			my_entry->state = ES_PIPE_WANTED;
			my_entry->next_start = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
		}
	}
	LWLockRelease(es_pipeline_lock);
	ConditionVariableBroadcast(&es_pipeline->progress_cv);
}

/*
 * Is the extension installed?  In a transaction.  Looked up in pg_extension
 * once per look-up of its objects (catalog.c): dropping it drops them, and
 * the invalidation makes the next call look again.
 */
static bool
extension_installed(void)
{
	static uint64 verified = 0; /* the catalog generation it was found in */

	if (es_catalog_if_installed() == NULL)
		return false;
	if (verified != 0 && verified == es_catalog_generation())
		return true;
	if (!OidIsValid(get_extension_oid("event_store", true)) ||
		!OidIsValid(get_namespace_oid("event_store", true)))
		return false;
	verified = es_catalog_generation();
	return true;
}

/*
 * The extension is gone: drop the slot and origin, free the entry, exit.
 */
static void
shut_down_for_dropped_extension(void)
{
	if (MyReplicationSlot != NULL)
		ReplicationSlotRelease();
	if (SearchNamedReplicationSlot(my_name, true) != NULL)
		ReplicationSlotDrop(my_name, true);
	if (IsTransactionState())
		AbortCurrentTransaction();
	if (replorigin_session_origin != InvalidRepOriginId)
		replorigin_session_reset();	/* (a worker started only to clean up has none) */
	replorigin_session_origin = InvalidRepOriginId;
	es_worker_begin();
	replorigin_drop_by_name(my_name, true, false);
	CommitTransactionCommand();

	/*
	 * If someone asked for the pipeline meanwhile (CREATE EXTENSION right
	 * after a DROP), a new worker checks again; otherwise the entry is free.
	 */
	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	my_entry->pid = 0;
	my_entry->latch = NULL;
	my_entry->origin = InvalidRepOriginId;
	if (my_entry->want_again)
	{
		my_entry->want_again = false;
		my_entry->state = ES_PIPE_WANTED;
		my_entry->next_start = 0;
		if (es_pipeline->launcher_latch)
			SetLatch(es_pipeline->launcher_latch);
	}
	else
		my_entry->state = ES_PIPE_FREE;
	LWLockRelease(es_pipeline_lock);
	ConditionVariableBroadcast(&es_pipeline->progress_cv);
	ereport(LOG,
			(errmsg("event_store pipeline for database %u stops: the extension is not installed",
					MyDatabaseId)));
	proc_exit(0);
}

/*
 * The rebuild's statement: the events not in the log, after its head, by
 * (recorded_at, stream_id, stream_version); the log's extra column and its
 * value, and how an event is found in the log (0.1.0's log has no event_id).
 */
#define REBUILD_SQL(column, value, match) \
	"INSERT INTO event_store.global_log " \
	"  (global_position, stream_id, stream_version, category, event_type, commit_lsn" column ") " \
	"SELECT m.top OPERATOR(pg_catalog.+) pg_catalog.row_number() OVER " \
	"         (ORDER BY e.recorded_at, e.stream_id, e.stream_version), " \
	"       e.stream_id, e.stream_version, pg_catalog.split_part(e.stream_id, '-', 1), " \
	"       e.event_type, '0/0'::pg_catalog.pg_lsn" value " " \
	"  FROM event_store.events e, " \
	"       (SELECT COALESCE(pg_catalog.max(g.global_position), 0) AS top " \
	"          FROM event_store.global_log g) m " \
	" WHERE NOT EXISTS (SELECT 1 FROM event_store.global_log g WHERE " match ")"

/*
 * Order into the log every event of the table that is not in it yet (after
 * a new slot was created, or a slot moved by another session: the slot
 * delivers nothing committed before its confirmed position).  `why` ends the
 * log message's detail.  Returns the number of events ordered.
 */
static int64
rebuild_from_events(const char *why)
{
	int			ret;
	int64		added;
	int64		head;

	known_head = -1;			/* it writes positions */
	for (;;)
	{
		es_worker_begin();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (!extension_installed())
		{
			PopActiveSnapshot();
			shut_down_for_dropped_extension();
		}

		/*
		 * Not while a restore runs: looked at after the snapshot was taken,
		 * so that the events of a restore that began later are not in it.
		 */
		if (es_restore_in_progress(MyDatabaseId) != 0)
		{
			PopActiveSnapshot();
			CommitTransactionCommand();
			wait_for_restores();
			continue;
		}
		LockRelationOid(es_catalog()->log_relid, RowExclusiveLock);	/* its columns as of the lock */
		SPI_connect();
		if (get_attnum(es_catalog()->log_relid, "event_id") != InvalidAttrNumber)
			ret = SPI_execute(REBUILD_SQL(", event_id", ", e.event_id",
										  "g.event_id OPERATOR(pg_catalog.=) e.event_id"),
							  false, 0);
		else					/* the log of 0.1.0 */
			ret = SPI_execute(REBUILD_SQL("", "",
										  "g.stream_id OPERATOR(pg_catalog.=) e.stream_id "
										  "AND g.stream_version OPERATOR(pg_catalog.=) e.stream_version"),
							  false, 0);
		if (ret != SPI_OK_INSERT)
			elog(ERROR, "event_store pipeline: rebuilding the global log failed: %s",
				 SPI_result_code_string(ret));
		added = (int64) SPI_processed;
		SPI_finish();
		PopActiveSnapshot();

		/*
		 * The INSERT ran with a snapshot of its own (READ COMMITTED), taken
		 * later: a restore that began in between may have events in it, and
		 * its dumped log still to come.  Then undo, and wait for it.
		 */
		if (es_restore_in_progress(MyDatabaseId) == 0)
			break;
		AbortCurrentTransaction();
		wait_for_restores();
	}
	CommitTransactionCommand();
	overlap_until = GetXLogInsertRecPtr();	/* what the slot delivers next may be in the log now */

	es_worker_begin();
	PushActiveSnapshot(GetTransactionSnapshot());
	head = es_log_head(GetActiveSnapshot());
	PopActiveSnapshot();
	CommitTransactionCommand();

	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	my_entry->rebuilds++;
	my_entry->last_position = head;
	LWLockRelease(es_pipeline_lock);
	es_pipeline_wake_projectors(MyDatabaseId);	/* the rebuilt positions are new to them too */
	ereport(LOG,
			(errmsg("event_store pipeline: ordered " INT64_FORMAT " events from the event table into the global log", added),
			 errdetail("The replication slot \"%s\" %s, so events committed before it were read from event_store.events.",
					   my_name, why)));
	return added;
}

/*
 * Acquire our slot, creating it (and rebuilding the log) if it does not
 * exist or was invalidated.
 */
static void
acquire_slot(bool origin_is_new)
{
	ReplicationSlot *s;
	bool		create = false;

	s = SearchNamedReplicationSlot(my_name, true);
	if (s != NULL)
	{
		bool		invalidated;
		char		plugin[NAMEDATALEN];

		/*
		 * Our slot is made with our plugin, after our origin: a slot of that
		 * name made otherwise (by a role with REPLICATION, with another
		 * plugin, or before we ever ran) is not ours to decode from.
		 */
		SpinLockAcquire(&s->mutex);
		strlcpy(plugin, NameStr(s->data.plugin), sizeof(plugin));
		SpinLockRelease(&s->mutex);
		if (strcmp(plugin, ES_PLUGIN_NAME) != 0 || s->data.database != MyDatabaseId || origin_is_new)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("replication slot \"%s\" was not made by the event_store pipeline", my_name),
					 errdetail("It uses output plugin \"%s\"%s.", plugin,
							   origin_is_new ? ", and the pipeline's replication origin did not exist" : ""),
					 errhint("Drop the slot (pg_drop_replication_slot) to let the pipeline make its own; it then completes the global log from event_store.events.")));

		SpinLockAcquire(&s->mutex);
		invalidated = !XLogRecPtrIsInvalid(s->data.invalidated_at) &&
			XLogRecPtrIsInvalid(s->data.restart_lsn);
		SpinLockRelease(&s->mutex);
		if (invalidated)
		{
			ereport(WARNING,
					(errcode(ERRCODE_ES_SLOT_INVALIDATED),
					 errmsg("replication slot \"%s\" of the event_store pipeline was invalidated", my_name),
					 errdetail("The WAL it needed was removed (max_slot_wal_keep_size); events committed since were not decoded."),
					 errhint("The slot is replaced and the global log is completed from event_store.events; those events are ordered by recorded_at, not commit order. Raise max_slot_wal_keep_size to avoid this.")));
			set_status_error("slot invalidated" REBUILT_FROM_EVENTS);
			ReplicationSlotDrop(my_name, true);
			create = true;
		}
	}
	else
		create = true;

	if (create)
	{
		LogicalDecodingContext *ctx;

		es_worker_begin();
		CheckLogicalDecodingRequirements();
		ReplicationSlotCreate(my_name, true, RS_EPHEMERAL, false);
		ctx = CreateInitDecodingContext(ES_PLUGIN_NAME, NIL, false, InvalidXLogRecPtr,
										XL_ROUTINE(.page_read = read_local_xlog_page,
												   .segment_open = wal_segment_open,
												   .segment_close = wal_segment_close),
										NULL, NULL, NULL);
		DecodingContextFindStartpoint(ctx);
		FreeDecodingContext(ctx);
		CommitTransactionCommand();

		/*
		 * The slot stays ephemeral (dropped if we fail) until the events
		 * it will not deliver are in the log: a crash in between means a
		 * new slot and a new rebuild, never a slot without its rebuild.
		 */
		(void) rebuild_from_events("is new");

		/* the origin's progress is never behind the slot (see below) */
		XLogFlush(origin_set_progress(MyReplicationSlot->data.confirmed_flush));
		ReplicationSlotPersist();
	}
	else
	{
		XLogRecPtr	confirmed;

		/*
		 * The progress in shared memory outlives a worker: a previous one's
		 * last commit may not be flushed yet.  Flush it, so that confirming
		 * up to it is safe at once.
		 */
		XLogRecPtr	progress = replorigin_session_get_progress(true);

		ReplicationSlotAcquire(my_name, true);
		SpinLockAcquire(&MyReplicationSlot->mutex);
		confirmed = MyReplicationSlot->data.confirmed_flush;
		SpinLockRelease(&MyReplicationSlot->mutex);

		/*
		 * The worker confirms the slot only up to a progress of its origin
		 * that is flushed (confirm_after), and a crash loses no flushed
		 * progress, so a slot confirmed beyond it was moved by another
		 * session while no worker held it: a role with REPLICATION advanced
		 * it (pg_replication_slot_advance) or consumed it
		 * (pg_logical_slot_get_changes).  The slot will not deliver what
		 * was committed before; complete the log from the event table, as
		 * for a new slot, and say so if anything was missing.
		 */
		if (confirmed > progress)
		{
			int64		added = rebuild_from_events("was moved past the pipeline's progress by another session");

			if (added > 0)
			{
				ereport(WARNING,
						(errcode(ERRCODE_ES_SLOT_MOVED),
						 errmsg("replication slot \"%s\" of the event_store pipeline was moved by another session", my_name),
						 errdetail("It was confirmed up to %X/%X, past the pipeline's progress %X/%X; " INT64_FORMAT " events missing from the global log were ordered from event_store.events, by recorded_at, not commit order: those the slot skipped, and any committed since.",
								   LSN_FORMAT_ARGS(confirmed), LSN_FORMAT_ARGS(progress), added),
						 errhint("Let no role but the pipeline use the slot: REPLICATION lets a role advance or consume any slot.")));
				set_status_error("slot moved by another session" REBUILT_FROM_EVENTS);
			}
			XLogFlush(origin_set_progress(confirmed));
		}
	}
}

/* Output callbacks: the sink does the work, nothing is written. */
static void
noop_prepare_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid, bool last_write)
{
	(void) ctx;
	(void) lsn;
	(void) xid;
	(void) last_write;
}

static void
noop_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid, bool last_write)
{
	resetStringInfo(ctx->out);
	(void) lsn;
	(void) xid;
	(void) last_write;
}

/*
 * Confirm the slot up to `confirm` once our commit ending at `commit_end`
 * (InvalidXLogRecPtr: none) is flushed, and after every earlier one.
 */
static void
confirm_after(XLogRecPtr commit_end, XLogRecPtr confirm)
{
	if (npending == MAX_PENDING_CONFIRMS)
	{
		/* make room: flush the oldest commit and confirm what it covers */
		XLogFlush(pending[0].commit_end);
		confirm_flushed();
	}
	pending[npending].commit_end = commit_end;
	pending[npending].confirm = confirm;
	npending++;
}

/* Confirm the slot past what our flushed commits cover. */
static void
confirm_flushed(void)
{
	XLogRecPtr	flushed = GetFlushRecPtr(NULL);
	XLogRecPtr	confirm = InvalidXLogRecPtr;
	int			n = 0;
	int			i;

	while (n < npending && pending[n].commit_end <= flushed)
		confirm = pending[n++].confirm;
	if (n == 0)
		return;
	/*
	 * The rest moves to the front one by one: as memmove (the fortified
	 * __memmove_chk) this was reported by valgrind 3.19 as an overlapping
	 * memcpy, a false report that test/valgrind counts against us.
	 */
	for (i = n; i < npending; i++)
		pending[i - n] = pending[i];
	npending -= n;
	LogicalConfirmReceivedLocation(confirm);
	ReplicationSlotMarkDirty();
}

/*
 * While a session restores the database (restore.c), write no position:
 * the restore brings the dumped ones.  Waits until the last restoring
 * session has ended.
 */
static void
wait_for_restores(void)
{
	/*
	 * (Looked at after the buffered transactions committed: a restore that
	 * committed some of them registered before; one that has ended has
	 * committed the dumped log too.)
	 */
	int			pid;
	bool		said = false;

	while ((pid = es_restore_in_progress(MyDatabaseId)) != 0)
	{
		if (!said)
		{
			ereport(LOG,
					(errmsg("event_store pipeline for database %u waits for the restore in session %d to end",
							MyDatabaseId, pid)));
			said = true;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	if (said)
	{
		overlap_until = GetXLogInsertRecPtr();	/* its events may be in its log */
		known_head = -1;		/* and its positions */
	}
}

/*
 * Queue a notification of the log's new head, to be sent at our commit;
 * false if skipped.  A full notification queue would fail the commit (a
 * listener idle in a transaction holds the whole server's queue back):
 * positions come first, and notifications are only a wake-up, so they are
 * skipped while the queue is more than half full.
 */
static bool
notify_head(int64 head)
{
	LOCAL_FCINFO(usage_fcinfo, 0);
	double		usage;
	char		payload[32];

	InitFunctionCallInfoData(*usage_fcinfo, NULL, 0, InvalidOid, NULL, NULL);
	usage = DatumGetFloat8(pg_notification_queue_usage(usage_fcinfo));
	if (usage > 0.5)
	{
		if (!notify_skipped)
			ereport(LOG,
					(errmsg("event_store pipeline: not notifying %s while the notification queue is %.0f%% full",
							ES_LOG_CHANNEL, usage * 100),
					 errhint("A session that listens and stays in a transaction holds the queue back (pg_notification_queue_usage).")));
		notify_skipped = true;
		return false;
	}
	snprintf(payload, sizeof(payload), INT64_FORMAT, head);
	Async_Notify(ES_LOG_CHANNEL, payload);
	notify_skipped = false;
	return true;
}

/*
 * Write the buffered transactions' positions in one transaction, with the
 * origin's progress.  If the extension is gone, shuts the worker down
 * instead (does not return).
 */
static void
write_positions(void)
{
	XLogRecPtr	done = replorigin_session_get_progress(false);
	const EsCatalog *cat;
	EsLogWriter *writer;
	int64		next;
	const EsBufTxn *last = NULL;
	int64		notifying = 0;
	int			ntxns = es_buffer_ntxns();
	int			t;

	wait_for_restores();
	es_worker_begin();

	/*
	 * Publish a position only once its transaction is visible.  Its commit
	 * record is flushed (we decoded it), but the committing backend may still
	 * be waiting before it ends the transaction (for a synchronous standby):
	 * until then no reader sees its events, and a reader that saw a later
	 * position would pass this one for good.  Waited for without a snapshot,
	 * so that a long wait holds back nothing.
	 */
	for (t = 0; t < ntxns; t++)
	{
		const EsBufTxn *txn = es_buffer_txn(t);

		if (txn->end_lsn > done && TransactionIdIsValid(txn->xid) &&
			TransactionIdIsInProgress(txn->xid))
			XactLockTableWait(txn->xid, NULL, NULL, XLTW_None);
	}

	/*
	 * The log is locked before the snapshot is taken: an ALTER EXTENSION
	 * UPDATE that rewrote it (not MVCC-safe) and that the lock waited for is
	 * in the snapshot.
	 */
	cat = es_catalog_if_installed();
	if (cat != NULL)
		LockRelationOid(cat->log_relid, RowExclusiveLock);
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!extension_installed())
	{
		PopActiveSnapshot();
		shut_down_for_dropped_extension();
	}
	cat = es_catalog();
	if (known_head < 0 || known_head_generation != es_catalog_generation())
		known_head = es_log_head(GetActiveSnapshot());
	writer = es_log_writer_begin(known_head + 1);
	known_head = -1;			/* until this commits */

	es_buffer_rewind();
	for (t = 0; t < ntxns; t++)
	{
		const EsBufTxn *txn = es_buffer_txn(t);
		bool		probe = txn->end_lsn <= overlap_until;
		int64		i;

		for (i = txn->first; i < txn->first + txn->n; i++)
		{
			const EsBufEvent *e;

			MemoryContextReset(apply_context);
			MemoryContextSwitchTo(apply_context);
			e = es_buffer_event(i); /* read in order, also what is skipped below */
			if (txn->end_lsn <= done || e->relid != cat->events_relid)
			{
				/*
				 * Ordered before a crash (at-least-once delivery), or an event
				 * of a dropped incarnation of the extension.
				 */
				MemoryContextSwitchTo(TopTransactionContext);
				continue;
			}
			(void) es_log_writer_add(writer, e->stream_id, e->stream_version, &e->event_id,
									 es_stream_category(VARDATA_ANY(e->stream_id),
														VARSIZE_ANY_EXHDR(e->stream_id)),
									 e->event_type, txn->commit_lsn, probe);
			MemoryContextSwitchTo(TopTransactionContext);
		}
		if (txn->end_lsn > done)
			last = txn;
	}
	next = es_log_writer_end(writer);
	PopActiveSnapshot();

	/*
	 * Listeners learn of the new positions when they become visible, at our
	 * commit: one notification per round, however many events it ordered.
	 */
	if (last != NULL && es_pipeline_notify && next - 1 > notified_head && notify_head(next - 1))
		notifying = next - 1;

	/*
	 * The origin's progress goes into this commit's WAL record.  Only the
	 * LSN: with replorigin_session_origin_timestamp set, Postgres would
	 * record the ordered transaction's commit time as this transaction's
	 * commit timestamp (track_commit_timestamp), hiding when the events
	 * became visible; that commit time is in pipeline_status instead.
	 */
	replorigin_session_origin_lsn = round_end;	/* (recorded only if something was written) */
	replorigin_session_origin_timestamp = 0;	/* the commit sets it to its own time */
	known_head_generation = es_catalog_generation();
	CommitTransactionCommand();
	known_head = next - 1;
	replorigin_session_origin_lsn = InvalidXLogRecPtr;
	replorigin_session_origin_timestamp = 0;
	if (notifying > notified_head)
		notified_head = notifying;	/* sent with the commit */
	if (replorigin_session_get_progress(false) == round_end)
		progress_record_end = XactLastCommitEnd;	/* the commit recorded it */

	if (last != NULL)
	{
		LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
		my_entry->last_commit_time = last->commit_time;
		my_entry->last_apply_time = GetCurrentTimestamp();
		my_entry->last_position = next - 1;
		LWLockRelease(es_pipeline_lock);
		es_pipeline_wake_projectors(MyDatabaseId);	/* new positions to apply */
	}
}

/*
 * Write the buffered transactions' positions (write_positions), without a
 * look at the log first, as it is the rule: the slot delivers each event
 * once beyond the origin's progress.  Only a rebuild or a restore can have
 * ordered some of them already; if the unique index says so, the batch is
 * rolled back and written again looking each event up (worker_log.c).
 */
static void
apply_buffer(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool again = false;

	PG_TRY();
	{
		write_positions();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_UNIQUE_VIOLATION ||
			overlap_until >= es_buffer_txn(es_buffer_ntxns() - 1)->end_lsn)
			PG_RE_THROW();
		FlushErrorState();
		AbortCurrentTransaction();
		replorigin_session_origin_lsn = InvalidXLogRecPtr;
		replorigin_session_origin_timestamp = 0;
		overlap_until = es_buffer_txn(es_buffer_ntxns() - 1)->end_lsn;
		ereport(LOG,
				(errmsg("event_store pipeline: some events of database %u are in the global log already; looking each up",
						MyDatabaseId),
				 errdetail("A rebuild or a restore ordered them: %s", edata->message)));
		FreeErrorData(edata);
		again = true;
	}
	PG_END_TRY();
	if (again)
		write_positions();
}

/*
 * Confirm the slot up to the end of the round, once the origin's progress
 * that covers it is flushed.  The slot is never confirmed beyond a flushed
 * progress, so that a slot found confirmed beyond it when the worker starts
 * tells that another session moved it (acquire_slot).  A round that wrote
 * positions carried the progress in its commit; one that wrote none (WAL of
 * other tables, events already ordered) records it on its own, but only once
 * it is a segment ahead: until then the slot is confirmed up to the last
 * progress, and an idle database does not write a record per round.
 */
static void
confirm_round(void)
{
	XLogRecPtr	progress = replorigin_session_get_progress(false);

	if (progress < round_end && round_end - progress >= (XLogRecPtr) wal_segment_size)
	{
		(void) origin_set_progress(round_end);
		progress = round_end;
	}
	if (!XLogRecPtrIsInvalid(progress))
		confirm_after(progress_record_end, Min(progress, round_end));
}

/*
 * Decode what is flushed (up to a batch), order it, confirm the slot.
 * Returns true if it stopped early (more to do right away).
 */
static bool
pipeline_round(LogicalDecodingContext *ctx)
{
	XLogRecPtr	end_of_wal = GetFlushRecPtr(NULL);
	TimestampTz round_start = GetCurrentTimestamp();
	XLogRecPtr	start = ctx->reader->EndRecPtr;
	ResourceOwner old_owner;
	bool		more = false;

	if (XLogRecPtrIsInvalid(start) || start < end_of_wal)
	{
		es_buffer_reset();
		es_worker_begin();		/* receives pending invalidations */
		MemoryContextSwitchTo(round_context);
		old_owner = CurrentResourceOwner;

		/*
		 * Decoding reads the catalog as of each change (a historic snapshot),
		 * the rest of the round as of now, through the same system caches:
		 * an entry made for the one must not serve the other if the catalog
		 * changed in between, as core's logicalfuncs.c resets the caches
		 * around each call.  Here they are reset only when it may have: a
		 * rebuild of the caches is most of what a round of a few events
		 * costs.  A catalog change sends its invalidations (received here as
		 * shared invalidation messages) after its WAL is written, its commit
		 * record too, also when it commits asynchronously: the present this process knows
		 * is the catalog as of inval_horizon.  Decoding WAL from there on
		 * sees that catalog too, unless it decodes a catalog change (then
		 * the caches are reset after it, and before the next round).  So the
		 * caches are reset unless decoding starts at or after the horizon;
		 * after a change, rounds reset until decoding has passed it.  (A
		 * change is visible a moment before its committer sends its
		 * invalidations, as for any backend; DDL holds its locks until they
		 * are sent, and the worker locks what it writes.)
		 */
		note_invalidations();
		if (!caches_clean || XLogRecPtrIsInvalid(start) || start < inval_horizon)
			InvalidateSystemCaches();
		es_catalog_modes_agree(true);
		es_ndecoded_catalog_xids = 0;
		while (ctx->reader->EndRecPtr < end_of_wal)
		{
			XLogRecord *record;
			char	   *errm = NULL;

			/*
			 * An oversized record is palloc'd in the current context and
			 * freed by the next read, possibly in a later round: read in the
			 * decoding context, which outlives the rounds' transactions.
			 */
			MemoryContextSwitchTo(ctx->context);
			record = XLogReadRecord(ctx->reader, &errm);
			MemoryContextSwitchTo(round_context);
			if (errm)
				elog(ERROR, "event_store pipeline: could not read WAL for logical decoding: %s", errm);
			if (record != NULL)
				LogicalDecodingProcessRecord(ctx, ctx->reader);
			MemoryContextReset(round_context);
			CurrentResourceOwner = old_owner;
			if (es_buffer_nevents() >= es_pipeline_batch_events ||
				es_ndecoded_catalog_xids == ES_MAX_CATALOG_XIDS)
			{
				more = true;
				break;
			}
			CHECK_FOR_INTERRUPTS();
		}

		/*
		 * A decoded catalog change may not be visible yet, nor its
		 * invalidations sent: its commit waits for a synchronous standby
		 * after its record is flushed.  Wait for it to end (it sends them
		 * first), and receive them: the present then knows it.
		 */
		if (es_ndecoded_catalog_xids > 0)
		{
			int			i;

			for (i = 0; i < es_ndecoded_catalog_xids; i++)
				if (TransactionIdIsInProgress(es_decoded_catalog_xids[i]))
					XactLockTableWait(es_decoded_catalog_xids[i], NULL, NULL, XLTW_None);
			AcceptInvalidationMessages();
		}

		/*
		 * And the other way round: what decoding cached is as of the WAL it
		 * read, which is the present under the same condition (invalidations
		 * received meanwhile move the horizon).
		 */
		note_invalidations();
		if (es_ndecoded_catalog_xids > 0 || XLogRecPtrIsInvalid(start) || start < inval_horizon)
		{
			InvalidateSystemCaches();
			es_catalog_modes_agree(false);
		}
		caches_clean = (es_ndecoded_catalog_xids == 0);
		MemoryContextSwitchTo(TopTransactionContext);
		CommitTransactionCommand();

		round_end = ctx->reader->EndRecPtr;
		if (es_buffer_ntxns() > 0)
			apply_buffer();
		else
		{
			/* notice a dropped extension even when nothing is decoded */
			es_worker_begin();
			if (!extension_installed())
				shut_down_for_dropped_extension();
			CommitTransactionCommand();
		}
		confirm_round();
	}
	else
	{
		/* nothing new; still notice a dropped extension */
		es_worker_begin();
		if (!extension_installed())
			shut_down_for_dropped_extension();
		CommitTransactionCommand();
	}

	confirm_flushed();

	/* forgotten keys: overwritten once their forget has committed (crypto_forget.c) */
	{
		bool		scrub;

		LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
		scrub = my_entry->scrub_wanted;
		my_entry->scrub_wanted = false;
		LWLockRelease(es_pipeline_lock);
		if (scrub)
		{
			es_worker_begin();
			PushActiveSnapshot(GetTransactionSnapshot());
			es_scrub_forgotten_keys();
			PopActiveSnapshot();
			CommitTransactionCommand();
		}
	}

	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	my_entry->decoded_lsn = ctx->reader->EndRecPtr;
	my_entry->applied_lsn = ctx->reader->EndRecPtr;
	my_entry->confirmed_lsn = MyReplicationSlot->data.confirmed_flush;
	if (!more)
		my_entry->caught_up_time = round_start;
	if (!more && my_entry->last_error[0] != '\0' &&
		strstr(my_entry->last_error, REBUILT_FROM_EVENTS) == NULL)
		my_entry->last_error[0] = '\0';	/* a rebuild stays shown: commit order was lost */
	LWLockRelease(es_pipeline_lock);
	ConditionVariableBroadcast(&es_pipeline->progress_cv);
	return more;
}

/*
 * How long a busy worker waits before it looks again.  Each round costs a
 * part that does not depend on how many events it orders (two transactions
 * begun and committed, the sleep and the wake-up): looking every
 * millisecond pays it a thousand times a second whenever commits come.
 * Measured with single appends by 8 clients (synchronous_commit on, about
 * 10,000 a second): looking at most every 4 ms instead of every 1 took the
 * worker's CPU per event down by a quarter, time the appenders have on a
 * busy machine.  So the interval follows the rate of commits, measured over
 * windows of at least BUSY_WINDOW_MS: a millisecond up to one commit a
 * millisecond (the commit-to-visible delay at a moderate rate stays as it
 * was), one more per commit a millisecond above, up to BUSY_MAX_MS.  The
 * delay a reader sees grows with the rate, by at most that much; who needs
 * its own event ordered calls wait_for_pipeline(), which wakes the worker
 * at once.
 */
#define BUSY_MAX_MS		4
#define BUSY_WINDOW_MS	10

static long
busy_interval(uint64 commits, TimestampTz now)
{
	static uint64 window_commits;
	static TimestampTz window_start;
	static long interval = 1;
	long		elapsed_ms = (long) ((now - window_start) / 1000);

	if (window_start == 0 || elapsed_ms < 0 || elapsed_ms > 1000)
	{
		/* first time, or idle long since: start a window */
		window_start = now;
		window_commits = commits;
		interval = 1;
	}
	else if (elapsed_ms >= BUSY_WINDOW_MS)
	{
		uint64		per_ms = (commits - window_commits) / (uint64) elapsed_ms;

		interval = (long) Max(1, Min(per_ms, BUSY_MAX_MS));
		window_start = now;
		window_commits = commits;
	}
	return interval;
}

/*
 * Entry point of the per-database worker; arg is the database's OID.
 */
void
event_store_worker_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	snprintf(my_name, sizeof(my_name), ES_PIPELINE_NAME_FORMAT, dboid);
	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	my_entry = es_pipeline_find(dboid);
	if (my_entry == NULL || my_entry->pid != 0 || my_entry->held_by != 0)
	{
		LWLockRelease(es_pipeline_lock);
		my_entry = NULL;
		proc_exit(0);			/* not wanted any more, another runs, or held off */
	}
	my_entry->pid = MyProcPid;
	my_entry->latch = MyLatch;
	my_entry->state = ES_PIPE_RUNNING;
	LWLockRelease(es_pipeline_lock);
	before_shmem_exit(worker_exit, (Datum) 0);

	pgstat_report_appname("event_store pipeline");
	/*
	 * Our commits are asynchronous: they never wait for a flush of their own
	 * (appenders that commit synchronously flush them along).  The slot is
	 * confirmed past decoded WAL only once the positions written for it are
	 * flushed (confirm_flushed), so that a crash that loses our last commits
	 * decodes their transactions again, and gives the same positions.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Servers that restrict the output plugins REPLICATION users may name
	 * (output_plugin_libraries) must still let this worker use its own
	 * library's plugin: add it, in this process only.
	 */
	{
		const char *allowed = GetConfigOption("output_plugin_libraries", true, false);

		if (allowed != NULL)
			SetConfigOption("output_plugin_libraries",
							psprintf("%s%s%s", allowed, allowed[0] ? ", " : "", ES_PLUGIN_NAME),
							PGC_SUSET, PGC_S_OVERRIDE);
	}

	es_buffer_init();
	apply_context = AllocSetContextCreate(TopMemoryContext, "event_store pipeline apply",
										  ALLOCSET_SMALL_SIZES);
	round_context = AllocSetContextCreate(TopMemoryContext, "event_store pipeline record",
										  ALLOCSET_DEFAULT_SIZES);

	PG_TRY();
	{
		worker_loop();
	}
	PG_CATCH();
	{
		/* show the error in pipeline_status, then exit with it */
		MemoryContextSwitchTo(TopMemoryContext);
		if (!LWLockHeldByMe(es_pipeline_lock))
		{
			ErrorData  *edata = CopyErrorData();

			set_status_error(edata->message);
		}
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/*
 * The worker's life once it has its entry: origin, slot, decoding context,
 * rounds.
 */
static void
worker_loop(void)
{
	LogicalDecodingContext *ctx;
	MemoryContext ctx_context;
	RepOriginId origin;
	bool		origin_is_new;

	/* the replication origin: our progress, and the tag of our own writes */
	es_worker_begin();
	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	my_entry->want_again = false;
	LWLockRelease(es_pipeline_lock);
	if (!extension_installed())
		shut_down_for_dropped_extension();
	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	my_entry->cleanup = false;	/* the extension is there: nothing to clean up */
	LWLockRelease(es_pipeline_lock);
	if (!es_pipeline_enabled)
	{
		CommitTransactionCommand();
		proc_exit(0);			/* started only to look (pipeline disabled) */
	}
	origin = replorigin_by_name(my_name, true);
	origin_is_new = (origin == InvalidRepOriginId);
	if (origin_is_new)
		origin = replorigin_create(my_name);
	CommitTransactionCommand();
	es_worker_begin();
	replorigin_session_setup(origin);
	replorigin_session_origin = origin;
	CommitTransactionCommand();
	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	my_entry->origin = origin;
	LWLockRelease(es_pipeline_lock);

	acquire_slot(origin_is_new);

	/* key rows of forgets committed while no worker ran */
	LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
	my_entry->scrub_wanted = true;
	LWLockRelease(es_pipeline_lock);

	/* the head of the log, for pipeline_status until the first round orders more */
	es_worker_begin();
	PushActiveSnapshot(GetTransactionSnapshot());
	{
		int64		head = es_log_head(GetActiveSnapshot());

		LWLockAcquire(es_pipeline_lock, LW_EXCLUSIVE);
		my_entry->last_position = head;
		LWLockRelease(es_pipeline_lock);
	}
	PopActiveSnapshot();
	CommitTransactionCommand();

	ctx_context = AllocSetContextCreate(TopMemoryContext, "event_store pipeline decoding",
										ALLOCSET_DEFAULT_SIZES);
	es_worker_begin();
	{
		MemoryContext old = MemoryContextSwitchTo(ctx_context);

		ctx = CreateDecodingContext(InvalidXLogRecPtr, NIL, false,
									XL_ROUTINE(.page_read = read_local_xlog_page,
											   .segment_open = wal_segment_open,
											   .segment_close = wal_segment_close),
									noop_prepare_write, noop_write, NULL);
		MemoryContextSwitchTo(old);
	}
	CommitTransactionCommand();
	XLogBeginRead(ctx->reader, MyReplicationSlot->data.restart_lsn);
	es_decoder_sink = &es_buffer_sink;

	ereport(LOG,
			(errmsg("event_store pipeline started for database %u", MyDatabaseId)));
	commits_seen = pg_atomic_read_u64(&my_entry->commits);
	last_busy = GetCurrentTimestamp();

	for (;;)
	{
		bool		more;
		long		timeout;
		long		stats_wait;
		uint64		commits;
		TimestampTz now;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			if (!es_pipeline_enabled)
			{
				ereport(LOG,
						(errmsg("event_store pipeline for database %u stops: event_store.pipeline_enabled is off",
								MyDatabaseId)));
				proc_exit(0);	/* the entry stays wanted: started again when enabled */
			}
		}
		commits = pg_atomic_read_u64(&my_entry->commits);
		more = pipeline_round(ctx);
		es_supervise_projectors(false);	/* projector.c: start the projection workers */

		/*
		 * Report our inserts into the global log (and our WAL) to the
		 * statistics, as a backend does when it goes idle: autovacuum and
		 * autoanalyze decide on them, and the visibility map their vacuums
		 * set lets index-only scans of the log skip its heap.  At most once a
		 * second (pgstat_report_stat keeps the interval); what it holds back
		 * is sent when it asks (stats_wait ms), however long we would sleep.
		 */
		stats_wait = pgstat_report_stat(false);
		if (more)
			continue;
		now = GetCurrentTimestamp();
		if (commits != commits_seen)
		{
			commits_seen = commits;
			last_busy = now;
		}

		/*
		 * Busy a moment ago: look again in a millisecond or a few, unasked,
		 * so that a stream of commits need not wake us one by one (see
		 * busy_interval).  Otherwise sleep
		 * until a commit wakes us: say so, then look at the count again (a
		 * commit between the round and the flag would not have woken us).
		 */
		if (!TimestampDifferenceExceeds(last_busy, now, 20))
			timeout = busy_interval(commits, now);
		else
		{
			my_entry->sleeping = true;
			pg_memory_barrier();
			if (pg_atomic_read_u64(&my_entry->commits) != commits_seen)
			{
				my_entry->sleeping = false;
				continue;
			}

			/*
			 * Commits with synchronous_commit = off are readable only once
			 * the WAL writer has flushed them, and nobody wakes us then:
			 * look again soon while there is unflushed WAL.
			 */
			timeout = GetXLogInsertRecPtr() > GetFlushRecPtr(NULL) + SizeOfXLogLongPHD ?
				20 : es_pipeline_naptime_ms;
			if (stats_wait > 0 && stats_wait < timeout)
				timeout = stats_wait;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		my_entry->sleeping = false;
	}
}
