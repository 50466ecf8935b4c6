/*-------------------------------------------------------------------------
 *
 * publish.c
 *	  publish(topic, payload, key): an integration event, written into the
 *	  WAL as a transactional logical decoding message (prefix
 *	  ES_MESSAGE_PREFIX) and delivered by the output plugin at the
 *	  transaction's commit, in commit order; never if it rolls back.
 *
 * No table is written: there is no outbox to poll or to clean up.  The
 * message body is a JSON object {"topic", "key", "payload"}.  No locks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "replication/message.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/pg_lsn.h"

#include "event_store.h"
#include "pipeline.h"

PG_FUNCTION_INFO_V1(event_store_publish);

/*
 * A topic or key: not empty, at most ES_MAX_ID_BYTES bytes.
 */
static char *
check_name(text *t, const char *what)
{
	int			len = VARSIZE_ANY_EXHDR(t);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_ES_INVALID_MESSAGE),
				 errmsg("%s must not be empty", what)));
	if (len > ES_MAX_ID_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_ES_INVALID_MESSAGE),
				 errmsg("%s is too long", what),
				 errdetail("It has %d bytes; at most %d are allowed.", len, ES_MAX_ID_BYTES)));
	return text_to_cstring(t);
}

/*
 * publish(topic text, payload jsonb, key text DEFAULT NULL) RETURNS pg_lsn:
 * the LSN of the message.
 */
Datum
event_store_publish(PG_FUNCTION_ARGS)
{
	char	   *topic;
	Jsonb	   *payload;
	StringInfoData body;
	XLogRecPtr	lsn;

	es_require_arg(fcinfo, 0, "topic");
	es_require_arg(fcinfo, 1, "payload");
	if (wal_level < WAL_LEVEL_LOGICAL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("publish needs wal_level = logical"),
				 errdetail("The current wal_level is \"%s\": the message could not be decoded.",
						   GetConfigOption("wal_level", false, false)),
				 errhint("Set wal_level = logical in postgresql.conf and restart the server.")));

	topic = check_name(PG_GETARG_TEXT_PP(0), "topic");
	payload = PG_GETARG_JSONB_P(1);

	initStringInfo(&body);
	appendStringInfoString(&body, "{\"topic\": ");
	escape_json(&body, topic);
	appendStringInfoString(&body, ", \"key\": ");
	if (PG_ARGISNULL(2))
		appendStringInfoString(&body, "null");
	else
		escape_json(&body, check_name(PG_GETARG_TEXT_PP(2), "key"));
	appendStringInfoString(&body, ", \"payload\": ");
	JsonbToCString(&body, &payload->root, VARSIZE(payload));
	appendStringInfoChar(&body, '}');

	lsn = LogLogicalMessage(ES_MESSAGE_PREFIX, body.data, body.len, true);
	PG_RETURN_LSN(lsn);
}
