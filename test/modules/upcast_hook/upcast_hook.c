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
 * Rename the key "amount" to "amount_cents", in one pass over the object.
 */
static void
upcast_amount(EventStoreUpcastEvent *event)
{
	JsonbParseState *state = NULL;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	JsonbValue *result = NULL;
	int			len = hook_event_type ? strlen(hook_event_type) : 0;

	if (prev_hook)
		prev_hook(event);

	if (len == 0 || event->schema_version != hook_from_version ||
		VARSIZE_ANY_EXHDR(event->event_type) != len ||
		memcmp(VARDATA_ANY(event->event_type), hook_event_type, len) != 0)
		return;

	it = JsonbIteratorInit(&event->data->root);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if (tok == WJB_KEY && v.val.string.len == 6 && memcmp(v.val.string.val, "amount", 6) == 0)
		{
			v.val.string.val = "amount_cents";
			v.val.string.len = 12;
		}
		result = pushJsonbValue(&state, tok, tok < WJB_BEGIN_ARRAY ? &v : NULL);
	}
	event->data = JsonbValueToJsonb(result);
	event->schema_version++;
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
