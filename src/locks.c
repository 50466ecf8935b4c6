/*-------------------------------------------------------------------------
 *
 * locks.c
 *	  Short locks of the extension's own lock tags: a stream, an event id, a
 *	  subject.  Their number per backend is bounded, whatever a transaction
 *	  does.  And the two other things every writer of ours needs: the
 *	  settled read that goes with such a lock, and the transaction-level
 *	  lock of a projection.
 *
 * A lock of ours covers a check and the write that follows it: the check of
 * a stream's head and the insert of its next event (versioning.c), the check
 * of an event id and the insert of the event, the check of a subject's
 * tombstone and the insert of its key (crypto_keys.c).  Once the row is written,
 * the row itself makes later writers wait: they read with a dirty snapshot,
 * find the row of a transaction in progress, and wait for that transaction
 * (XactLockTableWait) before they check again.  So a lock need not be held
 * to the end of the transaction, only until the row is in its indexes, and
 * each EsLock slot holds at most one lock at a time: taking a slot's lock
 * for another key releases the one it held.  A transaction appending to a
 * million streams holds one stream lock, not a million (nor a table lock
 * that every other appender would queue behind).
 *
 * Rules that keep this free of new deadlocks: never wait for a transaction
 * while holding a slot's lock (release it, wait, take it again and check
 * again), and take a stream's lock before an event id's.
 *
 * The locks are session-level locks of the advisory class (field4 = the
 * kind, pg_locks.objsubid), because a session lock can be released from any
 * resource owner (a transaction-level one only from the owner that took it,
 * which portals and subtransactions change under our feet).  This file
 * releases them itself: at the end of the transaction (commit, abort,
 * prepare), and at the abort of the subtransaction that took them.
 *
 * A settled read (es_read_settled) is the check under such a lock: an index
 * scan with a dirty snapshot, which sees every committed row and the own
 * transaction's, and reports a row a transaction in progress is writing
 * instead of returning it, so that the caller waits for that transaction
 * (after letting go of its lock) and checks again.
 *
 * A projection's lock (es_xact_lock) is different: it serialises work on
 * the projection to the end of the transaction (projection.c), a
 * transaction-level lock of the advisory class, released by Postgres.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/snapmgr.h"

#include "internal.h"

/* The slots in use (each module has a few, static). */
#define MAX_SLOTS	8
static EsLock *slots[MAX_SLOTS];
static int	nslots = 0;

/*
 * Give up a slot's lock, if it holds one (and the lock is still there: a
 * user's pg_advisory_unlock_all() releases session advisory locks too).
 */
void
es_lock_release(EsLock *lock)
{
	if (!lock->held)
		return;
	lock->held = false;
	if (LockHeldByMe(&lock->tag, ExclusiveLock))
		LockRelease(&lock->tag, ExclusiveLock, true);
}

/*
 * Does the slot still hold its lock?  (Code that ran meanwhile may have
 * released it with pg_advisory_unlock_all().)
 */
bool
es_lock_held(const EsLock *lock)
{
	return lock->held && LockHeldByMe(&lock->tag, ExclusiveLock);
}

/* The tag of (kind, key) in this database. */
static inline void
lock_tag(LOCKTAG *tag, uint16 kind, uint64 key)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) (key >> 32), (uint32) key, kind);
}

/* Does the slot still hold the lock of (kind, key)? */
bool
es_lock_held_on(const EsLock *lock, uint16 kind, uint64 key)
{
	LOCKTAG		tag;

	lock_tag(&tag, kind, key);
	return es_lock_held(lock) && memcmp(&lock->tag, &tag, sizeof(LOCKTAG)) == 0;
}

/*
 * Lock (kind, key) exclusively in this database, in the slot: a no-op when
 * the slot holds that lock already, else the slot's previous lock is
 * released first.
 */
void
es_lock_take(EsLock *lock, uint16 kind, uint64 key)
{
	LOCKTAG		tag;

	lock_tag(&tag, kind, key);
	if (lock->held && memcmp(&lock->tag, &tag, sizeof(LOCKTAG)) == 0)
		return;
	es_lock_release(lock);
	if (!lock->registered)
	{
		if (nslots == MAX_SLOTS)
			elog(ERROR, "too many event_store lock slots");
		slots[nslots++] = lock;
		lock->registered = true;
	}
	(void) LockAcquire(&tag, ExclusiveLock, true, false);
	lock->tag = tag;
	lock->subid = GetCurrentSubTransactionId();
	lock->held = true;
}

/*
 * The transaction ended: give up every slot's lock.
 */
static void
locks_xact_callback(XactEvent event, void *arg)
{
	int			i;

	(void) arg;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PRE_PREPARE:
			for (i = 0; i < nslots; i++)
				es_lock_release(slots[i]);
			break;
		default:
			break;
	}
}

/*
 * A subtransaction ended: an aborted one gives up the locks it took (its
 * rows are gone); a committed one hands them to its parent.
 */
static void
locks_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	int			i;

	(void) arg;
	for (i = 0; i < nslots; i++)
	{
		EsLock	   *lock = slots[i];

		if (!lock->held)
			continue;
		if (event == SUBXACT_EVENT_ABORT_SUB && lock->subid >= mySubid)
			es_lock_release(lock);
		else if (event == SUBXACT_EVENT_COMMIT_SUB && lock->subid == mySubid)
			lock->subid = parentSubid;
	}
}

/*
 * Called once per process from _PG_init.
 */
void
es_locks_init(void)
{
	RegisterXactCallback(locks_xact_callback, NULL);
	RegisterSubXactCallback(locks_subxact_callback, NULL);
}

/*
 * A transaction-level lock of ours: (kind, key) in this database,
 * exclusively, until the transaction ends.  Without wait, returns false at
 * once if another transaction holds it.
 */
bool
es_xact_lock(uint16 kind, uint64 key, bool wait)
{
	LOCKTAG		tag;

	lock_tag(&tag, kind, key);
	return LockAcquire(&tag, ExclusiveLock, false, !wait) != LOCKACQUIRE_NOT_AVAIL;
}

/* Does this transaction hold the lock? */
bool
es_xact_lock_held(uint16 kind, uint64 key)
{
	LOCKTAG		tag;

	lock_tag(&tag, kind, key);
	return LockHeldByMe(&tag, ExclusiveLock);
}

/*
 * See internal.h.
 */
bool
es_read_settled(Relation rel, Relation index, ScanKey keys, int nkeys, ScanDirection dir,
				bool all_rows, TupleTableSlot *slot, TransactionId *wait_for)
{
	SnapshotData dirty;
	IndexScanDesc scan;
	TupleTableSlot *probe = slot;
	TupleTableSlot *extra = NULL;
	bool		found = false;

	InitDirtySnapshot(dirty);
	scan = index_beginscan(rel, index, &dirty, nkeys, 0);
	index_rescan(scan, keys, nkeys, NULL, 0);
	while (index_getnext_slot(scan, dir, probe))
	{
		if (TransactionIdIsValid(dirty.xmin) || TransactionIdIsValid(dirty.xmax))
		{
			/* inserted, or being deleted, by a transaction in progress */
			*wait_for = TransactionIdIsValid(dirty.xmin) ? dirty.xmin : dirty.xmax;
			found = false;
			break;
		}
		if (!found)
		{
			ExecMaterializeSlot(slot);
			found = true;
			if (!all_rows)
				break;
			/* look at the other matches without overwriting the first */
			extra = table_slot_create(rel, NULL);
			probe = extra;
		}
	}
	if (extra)
		ExecDropSingleTupleTableSlot(extra);
	index_endscan(scan);
	return found;
}
