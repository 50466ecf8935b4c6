/*
 * abort_at_commit: a test-only module whose pre-commit transaction callback
 * raises an error while abort_at_commit.enabled is on, so that a transaction
 * aborts after the other modules' pre-commit work (when it is listed before
 * them in shared_preload_libraries: the callbacks registered last run first).
 * TAP test 016_forget_abort uses it to abort a forget() at the latest point
 * it can abort at, short of a crash.
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static bool enabled = false;

static void
abort_at_pre_commit(XactEvent event, void *arg)
{
	(void) arg;
	if (event == XACT_EVENT_PRE_COMMIT && enabled)
		ereport(ERROR,
				(errcode(ERRCODE_TRANSACTION_ROLLBACK),
				 errmsg("abort_at_commit: the transaction aborts at pre-commit")));
}

void
_PG_init(void)
{
	DefineCustomBoolVariable("abort_at_commit.enabled",
							 "Makes every transaction abort at pre-commit.",
							 NULL, &enabled, false, PGC_USERSET, 0, NULL, NULL, NULL);
	MarkGUCPrefixReserved("abort_at_commit");
	RegisterXactCallback(abort_at_pre_commit, NULL);
}
