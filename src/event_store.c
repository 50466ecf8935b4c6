/*-------------------------------------------------------------------------
 *
 * event_store.c
 *	  Module entry point: PG_MODULE_MAGIC, settings, and start-up of the
 *	  other modules.
 *
 * _PG_init only defines the extension's GUCs (event_store.*) and delegates to
 * the modules; it takes no locks and touches no shared state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "utils/guc.h"

#include "event_store.h"
#include "projection.h"

PG_MODULE_MAGIC;

/* Settings, documented in README.md, "Settings". */
int			es_max_stream_locks = 1000;
char	   *es_correlation_id = NULL;
char	   *es_causation_id = NULL;

void		_PG_init(void);

/*
 * Define the settings and initialise the modules.
 */
void
_PG_init(void)
{
	DefineCustomIntVariable("event_store.max_stream_locks",
							"Stream locks one transaction takes before it locks the whole event table instead.",
							"A transaction that appends to more streams than this takes one table lock "
							"rather than filling the shared lock table with one lock per stream.",
							&es_max_stream_locks,
							1000, 1, INT_MAX,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("event_store.correlation_id",
							   "Correlation id added to the metadata of the events appended while it is set.",
							   "Kept as given; an event whose metadata already has \"correlation_id\" keeps its own.",
							   &es_correlation_id,
							   "",
							   PGC_USERSET, 0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("event_store.causation_id",
							   "Causation id added to the metadata of the events appended while it is set.",
							   "Kept as given; an event whose metadata already has \"causation_id\" keeps its own.",
							   &es_causation_id,
							   "",
							   PGC_USERSET, 0,
							   NULL, NULL, NULL);

	es_crypto_init();			/* defines its settings: before the reservation */
	es_pipeline_init();			/* likewise */
	es_projection_init();		/* likewise */

	MarkGUCPrefixReserved("event_store");

	es_versioning_init();
	es_upcast_init();
	es_aggregate_init();
}

/*
 * Raise the extension's error for a NULL argument that must not be NULL.
 */
void
es_require_arg(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
}

/*
 * An identifier argument: es_check_identifier() on argument argno.
 */
text *
es_identifier_arg(FunctionCallInfo fcinfo, int argno, const char *name)
{
	return es_check_identifier(PG_GETARG_DATUM(argno), PG_ARGISNULL(argno), name);
}
