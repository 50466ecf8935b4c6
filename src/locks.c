/*-------------------------------------------------------------------------
 *
 * locks.c
 *	  Short locks of the extension's own lock tags: a stream, an event id, a
 *	  subject.  Their number per backend is bounded, whatever a transaction
 *	  does.
 *
 * A lock of ours covers a check and the write that follows it: the check of
 * a stream's head and the insert of its next event (versioning.c), the check
 * of an event id and the insert of the event, the check of a subject's
 * tombstone and the insert of its key (crypto.c).  Once the row is written,
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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"

#include "event_store.h"

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

/*
 * Lock (kind, key) exclusively in this database, in the slot: a no-op when
 * the slot holds that lock already, else the slot's previous lock is
 * released first.
 */
void
es_lock_take(EsLock *lock, uint16 kind, uint64 key)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (key >> 32), (uint32) key, kind);
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
