/*-------------------------------------------------------------------------
 *
 * upcast_hook.c
 *	  Test module: a C upcaster through event_store_upcast_hook.
 *
 * For events of the type named by upcast_hook.event_type, at schema version
 * upcast_hook.from_version, it moves data->"amount" (a number of cents) to
 * data->"amount_cents" and raises the schema version by one.  It chains to
 * the previous hook like Postgres's own hooks do.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"

#include "event_store.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static event_store_upcast_hook_type prev_hook = NULL;
static char *hook_event_type = NULL;
static int	hook_from_version = 1;

/*
 * Rename "amount" to "amount_cents" with jsonb operators.
 */
static void
upcast_amount(EventStoreUpcastEvent *event)
{
	if (prev_hook)
		prev_hook(event);

	if (hook_event_type == NULL || hook_event_type[0] == '\0' ||
		event->schema_version != hook_from_version ||
		strcmp(text_to_cstring(event->event_type), hook_event_type) != 0)
		return;

	{
		Jsonb	   *data = event->data;
		JsonbValue *amount = getKeyJsonValueFromContainer(&data->root, "amount", 6, NULL);
		StringInfoData added;
		Datum		rest;

		if (amount == NULL)
			return;
		initStringInfo(&added);
		appendStringInfoString(&added, "{\"amount_cents\": ");
		appendStringInfoString(&added, JsonbToCString(NULL, &JsonbValueToJsonb(amount)->root, 0));
		appendStringInfoChar(&added, '}');
		rest = DirectFunctionCall2(jsonb_delete, JsonbPGetDatum(data), CStringGetTextDatum("amount"));
		event->data = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, rest,
														 DirectFunctionCall1(jsonb_in, CStringGetDatum(added.data))));
		event->schema_version++;
	}
}

void
_PG_init(void)
{
	DefineCustomStringVariable("upcast_hook.event_type",
							   "Event type the test hook upcasts.", NULL,
							   &hook_event_type, "", PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("upcast_hook.from_version",
							"Schema version the test hook upcasts from.", NULL,
							&hook_from_version, 1, 1, INT_MAX, PGC_USERSET, 0, NULL, NULL, NULL);
	MarkGUCPrefixReserved("upcast_hook");

	prev_hook = event_store_upcast_hook;
	event_store_upcast_hook = upcast_amount;
}
