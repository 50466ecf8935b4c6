/*-------------------------------------------------------------------------
 *
 * command.c
 *	  execute(): command handling in one call.
 *
 * Load the aggregate's state (aggregate.c), ask the decider what happens
 * (decider(state jsonb, command jsonb) RETURNS jsonb, a JSON array of events
 * in append_events' format), and append those events expecting the version
 * that was loaded, through append_events' own path (es_read_batch and
 * es_append_batch in append.c).  What the decider returned is read first:
 * an event append_events would refuse is the decider's fault (VE014);
 * errors of the append itself (a trigger's, say) pass through.  When another writer appended to the stream in between, the
 * append fails with VE001: the whole attempt (load, decision, append) is
 * rolled back in its subtransaction, as a PL/pgSQL exception block does, and
 * tried again with a fresh snapshot, at most event_store.execute_retries
 * times.  Every other error (the decider's business errors above all) passes
 * through unchanged.
 *
 * Under REPEATABLE READ and SERIALIZABLE the transaction's snapshot cannot
 * move, so a retry could only fail again: the conflict is reported as a
 * serialization failure (40001), for the client to retry the transaction.
 *
 * Locking: that of the load (AccessShareLock) and of the append (the
 * stream's lock, held to the end of the transaction).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "aggregate.h"
#include "write.h"

PG_FUNCTION_INFO_V1(event_store_execute);

/* What an attempt is doing, to tell whose an error is. */
typedef enum CommandPhase
{
	PHASE_LOAD,
	PHASE_DECIDE,
	PHASE_READ_DECISION,		/* the decider's events, read as append_events reads them */
	PHASE_APPEND
} CommandPhase;

/* A decider: a plain function (state jsonb, command jsonb) RETURNS jsonb. */
static const EsFunctionShape decider_shape = {
	"decider", "(state jsonb, command jsonb) RETURNS jsonb", 2, {JSONBOID, JSONBOID}, JSONBOID
};

/*
 * The JSON type of a document, in words, for messages.
 */
static const char *
json_kind(Jsonb *jb)
{
	if (JB_ROOT_IS_SCALAR(jb))
		return "scalar";
	return JB_ROOT_IS_OBJECT(jb) ? "object" : "array";
}

/*
 * One attempt: load, decide, append.  Returns the stream's new version.
 * *phase tells the caller, after an error, which step raised it.
 */
static int64
attempt_command(text *stream_id, text *name, FmgrInfo *decider, const char *decider_name,
				Jsonb *command, volatile CommandPhase *phase)
{
	EsAggregate agg;
	Jsonb	   *state;
	Jsonb	   *events;
	EsBatch    *batch;
	int64		version;
	int64		new_version;
	LOCAL_FCINFO(fcinfo, 2);
	Datum		decision;

	/* a fresh snapshot (under READ COMMITTED), seeing our own earlier writes */
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());

	*phase = PHASE_LOAD;
	es_lookup_aggregate(name, GetActiveSnapshot(), true, &agg);
	state = es_fold(stream_id, &agg, NULL, -1, GetActiveSnapshot(), &version);

	*phase = PHASE_DECIDE;
	InitFunctionCallInfoData(*fcinfo, decider, 2, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = JsonbPGetDatum(state);
	fcinfo->args[0].isnull = false;
	fcinfo->args[1].value = JsonbPGetDatum(command);
	fcinfo->args[1].isnull = false;
	decision = FunctionCallInvoke(fcinfo);
	if (fcinfo->isnull)
		ereport(ERROR,
				(errcode(ERRCODE_ES_INVALID_DECISION),
				 errmsg("decider %s returned null", decider_name),
				 errhint("Return [] when there is nothing to do, or [{\"type\": ..., \"data\": {...}}, ...].")));
	events = DatumGetJsonbP(decision);
	if (!JB_ROOT_IS_ARRAY(events) || JB_ROOT_IS_SCALAR(events))
		ereport(ERROR,
				(errcode(ERRCODE_ES_INVALID_DECISION),
				 errmsg("decider %s returned something other than a JSON array of events",
						decider_name),
				 errdetail("It returned a JSON %s.", json_kind(events)),
				 errhint("Return [] when there is nothing to do, or [{\"type\": ..., \"data\": {...}}, ...].")));

	*phase = PHASE_READ_DECISION;
	batch = es_read_batch(events);

	*phase = PHASE_APPEND;
	if (JB_ROOT_COUNT(events) == 0)
		new_version = version;
	else
		new_version = es_append_batch(stream_id, batch, &version);
	PopActiveSnapshot();
	return new_version;
}

/*
 * execute(stream_id, aggregate, decider, command) RETURNS bigint: handle a
 * command against the aggregate's current state; returns the stream's new
 * version (the loaded one when the decider returned []).
 */
Datum
event_store_execute(PG_FUNCTION_ARGS)
{
	text	   *stream_id = es_identifier_arg(fcinfo, 0, "stream_id");
	text	   *name = es_identifier_arg(fcinfo, 1, "aggregate");
	Oid			decider;
	Jsonb	   *command;
	FmgrInfo	flinfo;
	char	   *decider_name;
	int			attempts = es_execute_retries + 1;
	volatile int attempt;
	volatile int64 result = 0;
	volatile bool done = false;
	volatile CommandPhase phase = PHASE_LOAD;

	es_require_arg(fcinfo, 2, "decider");
	es_require_arg(fcinfo, 3, "command");
	decider = PG_GETARG_OID(2);
	command = PG_GETARG_JSONB_P(3);
	es_check_function(decider, &decider_shape, ERRCODE_ES_WRONG_DECIDER, NULL);
	es_check_execute(decider);
	decider_name = format_procedure(decider);
	fmgr_info(decider, &flinfo);

	for (attempt = 1; !done; attempt++)
	{
		EsSubxact	sx;

		/* the decider may have gone since the last attempt (fmgr would fail to find it) */
		if (attempt > 1)
			es_check_function(decider, &decider_shape, ERRCODE_ES_WRONG_DECIDER, NULL);
		es_subxact_begin(&sx);
		PG_TRY();
		{
			result = attempt_command(stream_id, name, &flinfo, decider_name, command, &phase);
			es_subxact_commit(&sx);
			done = true;
		}
		PG_CATCH();
		{
			ErrorData  *edata = es_subxact_abort(&sx);

			if (phase == PHASE_READ_DECISION &&
				ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_DATA_EXCEPTION)
			{
				/* what the decider returned is no batch append_events takes */
				edata->sqlerrcode = ERRCODE_ES_INVALID_DECISION;
				edata->message = psprintf("decider %s returned an invalid event: %s",
										  decider_name, edata->message);
				ReThrowError(edata);
			}
			if (phase != PHASE_APPEND || edata->sqlerrcode != ERRCODE_ES_WRONG_EXPECTED_VERSION)
				ReThrowError(edata);
			if (IsolationUsesXactSnapshot())
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("could not serialize access due to concurrent append to stream \"%s\"",
								text_to_cstring(stream_id)),
						 errdetail("%s", edata->detail ? edata->detail : edata->message),
						 errhint("The transaction might succeed if retried.")));
			if (attempt >= attempts)
				ereport(ERROR,
						(errcode(ERRCODE_ES_EXECUTE_GAVE_UP),
						 errmsg_plural("execute gave up on stream \"%s\" after %d attempt",
										"execute gave up on stream \"%s\" after %d attempts",
										attempts, text_to_cstring(stream_id), attempts),
						 errdetail("Every attempt was overtaken by a concurrent append to the stream. Last: %s",
								   edata->detail ? edata->detail : edata->message),
						 errhint("Retry the command later, or raise event_store.execute_retries.")));
			FreeErrorData(edata);
		}
		PG_END_TRY();
	}
	PG_RETURN_INT64(result);
}
