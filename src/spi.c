/*-------------------------------------------------------------------------
 *
 * spi.c
 *	  The extension's SQL statements: prepared once per backend, run
 *	  through SPI as the caller or as the extension's owner; and the
 *	  internal subtransactions that isolate one step's failure.
 *
 * Where the extension writes its own tables with SQL (the registries, the
 * keys, the snapshots, the global log) the statement is an EsStatement: a
 * constant text with its parameter types, prepared on first use and kept
 * (SPI_keepplan), so that each call costs an execution, not a parse and a
 * plan.  The plan cache revalidates kept plans after DDL, and the texts
 * schema-qualify every name and operator, so that no search_path can
 * change what they mean.
 *
 * Statements that write the extension's tables for a caller run as the
 * owner of the tables (es_owner_begin), as referential-integrity triggers
 * do: no role needs a right on them besides EXECUTE on our functions.
 * Statements that append events run as the caller, whose INSERT right on
 * event_store.events they need.
 *
 * Locking: what the statements take.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "internal.h"

/*
 * Switch to the owner of the extension's tables (see EsOwnerSave).  No
 * SET ROLE or SET SESSION AUTHORIZATION can happen in between, and
 * row-level security forced on our tables would not apply to their owner.
 */
void
es_owner_begin(EsOwnerSave *save)
{
	Oid			owner = es_catalog()->owner;

	GetUserIdAndSecContext(&save->user, &save->sec_context);
	SetUserIdAndSecContext(owner, save->sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_NOFORCE_RLS);
}

/*
 * Back to the caller's identity.
 */
void
es_owner_end(const EsOwnerSave *save)
{
	SetUserIdAndSecContext(save->user, save->sec_context);
}

/*
 * The statement's plan, prepared and kept on first use.
 */
static SPIPlanPtr
statement_plan(EsStatement *st)
{
	if (st->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(st->sql, st->nargs, st->argtypes);

		if (plan == NULL)
			elog(ERROR, "event_store: could not prepare \"%s\": %s", st->sql,
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "event_store: could not keep the plan of \"%s\"", st->sql);
		st->plan = plan;
	}
	return st->plan;
}

/*
 * See internal.h.
 */
uint64
es_run(EsStatement *st, const Datum *values, const char *nulls, int flags, long count,
	   int expect)
{
	SPIPlanPtr	plan = statement_plan(st);
	bool		read_only = (flags & ES_RUN_READ_ONLY) != 0;
	EsOwnerSave save;
	int			rc;

	if (flags & ES_RUN_AS_OWNER)
		es_owner_begin(&save);
	if (flags & ES_RUN_LATEST)
	{
		Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());

		rc = SPI_execute_snapshot(plan, (Datum *) values, nulls, snap, InvalidSnapshot,
								  read_only, false, count);
		UnregisterSnapshot(snap);
	}
	else
		rc = SPI_execute_plan(plan, (Datum *) values, nulls, read_only, count);
	if (flags & ES_RUN_AS_OWNER)
		es_owner_end(&save);
	if (rc != expect)
		elog(ERROR, "event_store: \"%s\" failed: %s", st->sql, SPI_result_code_string(rc));
	return SPI_processed;
}

/*
 * Internal subtransactions, the way PL/pgSQL runs an exception block:
 *
 *	EsSubxact sx;
 *	es_subxact_begin(&sx);
 *	PG_TRY(); { ...; es_subxact_commit(&sx); }
 *	PG_CATCH(); { ErrorData *e = es_subxact_abort(&sx); ... }
 *	PG_END_TRY();
 *
 * Both ends come back to the memory context and resource owner of the
 * begin; the abort returns the error (in that context), cleared.
 */
void
es_subxact_begin(EsSubxact *sx)
{
	sx->context = CurrentMemoryContext;
	sx->owner = CurrentResourceOwner;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(sx->context);
}

void
es_subxact_commit(EsSubxact *sx)
{
	ReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(sx->context);
	CurrentResourceOwner = sx->owner;
}

ErrorData *
es_subxact_abort(EsSubxact *sx)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(sx->context);
	edata = CopyErrorData();
	FlushErrorState();
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(sx->context);
	CurrentResourceOwner = sx->owner;
	return edata;
}
