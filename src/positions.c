/*-------------------------------------------------------------------------
 *
 * positions.c
 *	  save_position() and load_position(): the global-log positions of named
 *	  consumers, kept in event_store.consumer_positions, so that a consumer
 *	  whose effects are in this database stores its position in the same
 *	  transaction as them (and a consumer elsewhere has a place to keep it).
 *
 * Rights: the statements run as the caller, who needs SELECT (load), or
 * SELECT, INSERT and UPDATE (save) on event_store.consumer_positions, and
 * SELECT on the global log (save: the position is checked against its
 * head).  A consumer's row belongs to the role that saved it first: only
 * that role and its members move it, so that one service cannot move
 * another's position.  The table is dumped with the global log, whose
 * positions a restore keeps.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

#include "internal.h"
#include "read.h"

PG_FUNCTION_INFO_V1(event_store_save_position);
PG_FUNCTION_INFO_V1(event_store_load_position);

/* a consumer's row is written by its owner, or a member of the owner */
static EsStatement save_statement = ES_STATEMENT(
	"INSERT INTO event_store.consumer_positions AS p (consumer, global_position, owner, saved_at) "
	"VALUES ($1, $2, $3, pg_catalog.now()) "
	"ON CONFLICT (consumer) DO UPDATE "
	"SET global_position = EXCLUDED.global_position, saved_at = EXCLUDED.saved_at "
	"WHERE pg_catalog.pg_has_role(p.owner::pg_catalog.oid, 'USAGE')",
	3, TEXTOID, INT8OID, REGROLEOID);

static EsStatement load_statement = ES_STATEMENT(
	"SELECT p.global_position FROM event_store.consumer_positions p "
	" WHERE p.consumer OPERATOR(pg_catalog.=) $1",
	1, TEXTOID);

/*
 * save_position(consumer text, global_position bigint) RETURNS void: the
 * consumer has handled the global log up to `global_position`.  A position
 * beyond the head of the log the caller's snapshot sees cannot have been
 * read: refused.
 * Moving back is allowed (to read again from an earlier point).
 */
Datum
event_store_save_position(PG_FUNCTION_ARGS)
{
	text	   *consumer = es_identifier_arg(fcinfo, 0, "consumer");
	int64		position;
	int64		head;
	Relation	log;
	Datum		values[3];

	es_require_arg(fcinfo, 1, "global_position");
	position = PG_GETARG_INT64(1);
	es_check_not_negative(position, "global_position", "Pass 0 to read again from the first event.");
	log = table_open(es_catalog()->log_relid, AccessShareLock);
	es_check_read_access(log);
	table_close(log, AccessShareLock);
	head = es_log_head(GetActiveSnapshot());
	if (position > head)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("global_position " INT64_FORMAT " is beyond the head of the global log", position),
				 errdetail("The last position is " INT64_FORMAT ".", head),
				 errhint("Save the global_position of the last event the consumer handled.")));
	values[0] = PointerGetDatum(consumer);
	values[1] = Int64GetDatum(position);
	values[2] = ObjectIdGetDatum(GetUserId());
	SPI_connect();
	if (es_run(&save_statement, values, NULL, 0, 0, SPI_OK_INSERT) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("consumer \"%s\" belongs to another role", text_to_cstring(consumer)),
				 errdetail("A consumer's position is saved by the role that saved it first, and by the members of that role."),
				 errhint("Give each service its own consumer names, or grant it membership in the role that owns them.")));
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * load_position(consumer text) RETURNS bigint: the consumer's saved
 * position, 0 for a consumer that saved none (read_all from there reads
 * from the first event).
 */
Datum
event_store_load_position(PG_FUNCTION_ARGS)
{
	text	   *consumer = es_identifier_arg(fcinfo, 0, "consumer");
	Datum		value = PointerGetDatum(consumer);
	int64		position = 0;

	SPI_connect();
	if (es_run(&load_statement, &value, NULL, ES_RUN_READ_ONLY, 1, SPI_OK_SELECT) == 1)
	{
		bool		isnull;

		position = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	PG_RETURN_INT64(position);
}
