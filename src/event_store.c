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
#include "miscadmin.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
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
	/*
	 * Obsolete since 0.2.0, when a backend came to hold one stream lock at a
	 * time (locks.c); still defined so that configurations setting it load.
	 */
	DefineCustomIntVariable("event_store.max_stream_locks",
							"No effect (obsolete since event_store 0.2.0).",
							"Appends hold one stream lock and one subject lock at a time, whatever the "
							"number of streams a transaction writes.",
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

	es_locks_init();
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
 * Parse one identifier as quote_identifier() writes it: lowercase letters,
 * digits, "_" and "$" (not starting with a digit or "$"), or a double-quoted
 * string with "" for a quote.  Returns the position after it, or NULL.
 */
static const char *
parse_identifier(const char *p, char **out)
{
	StringInfoData buf;

	initStringInfo(&buf);
	if (*p == '"')
	{
		for (p++;; p++)
		{
			if (*p == '\0')
				return NULL;
			if (*p == '"')
			{
				if (p[1] != '"')
					break;
				p++;
			}
			appendStringInfoChar(&buf, *p);
		}
		p++;
	}
	else
	{
		if (!((*p >= 'a' && *p <= 'z') || *p == '_'))
			return NULL;
		while ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '$')
			appendStringInfoChar(&buf, *p++);
	}
	if (buf.len == 0 || buf.len >= NAMEDATALEN)
		return NULL;
	*out = buf.data;
	return p;
}

/*
 * See event_store.h.  The text must be exactly schema.name followed by the
 * argument types as format_procedure_qualified() writes them; nothing else
 * is parsed (to_regprocedure() would raise on malformed text in PG15).
 */
Oid
es_resolve_signature(const char *signature, int nargs, const Oid *argtypes)
{
	StringInfoData args;
	const char *p = signature;
	char	   *schema;
	char	   *name;
	size_t		rest;
	int			i;

	initStringInfo(&args);
	appendStringInfoChar(&args, '(');
	for (i = 0; i < nargs; i++)
	{
		if (i > 0)
			appendStringInfoChar(&args, ',');
		appendStringInfoString(&args, format_type_be_qualified(argtypes[i]));
	}
	appendStringInfoChar(&args, ')');

	p = parse_identifier(p, &schema);
	if (p == NULL || *p != '.')
		return InvalidOid;
	p = parse_identifier(p + 1, &name);
	if (p == NULL)
		return InvalidOid;
	rest = strlen(p);
	if (rest != (size_t) args.len || memcmp(p, args.data, rest) != 0)
		return InvalidOid;
	return LookupFuncName(list_make2(makeString(schema), makeString(name)), nargs, argtypes, true);
}
