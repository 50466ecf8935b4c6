/*-------------------------------------------------------------------------
 *
 * upcast_hook.c
 *	  Test module: a C upcaster through event_store_upcast_hook.
 *
 * For events of the type named by upcast_hook.event_type, at schema version
 * upcast_hook.from_version, it moves data->"amount" (a number of cents) to
 * data->"amount_cents" and raises the schema version by one.  It chains to
 * the previous hook like Postgres's own hooks do.  What it does depends on
 * those settings, so it declares them in event_store_upcast_hook_fingerprint
 * (unless upcast_hook.declare_fingerprint is off, which shows what
 * event_store does with a hook that declares nothing).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "common/hashfn.h"
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
static bool hook_declares = true;
static uint64 my_fingerprint = 0;

/*
 * Replace this module's share of the fingerprint (XOR, so that chained hooks
 * combine): a value of its settings, or nothing.
 */
static void
set_fingerprint(const char *type, int from, bool declares)
{
	uint64		fp = 0;

	if (declares)
		fp = hash_bytes_extended((const unsigned char *) (type ? type : ""),
								 type ? strlen(type) : 0, from) | 1;
	event_store_upcast_hook_fingerprint ^= my_fingerprint ^ fp;
	my_fingerprint = fp;
}

static void
assign_event_type(const char *newval, void *extra)
{
	(void) extra;
	set_fingerprint(newval, hook_from_version, hook_declares);
}

static void
assign_from_version(int newval, void *extra)
{
	(void) extra;
	set_fingerprint(hook_event_type, newval, hook_declares);
}

static void
assign_declares(bool newval, void *extra)
{
	(void) extra;
	set_fingerprint(hook_event_type, hook_from_version, newval);
}

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
							   &hook_event_type, "", PGC_USERSET, 0, NULL, assign_event_type, NULL);
	DefineCustomIntVariable("upcast_hook.from_version",
							"Schema version the test hook upcasts from.", NULL,
							&hook_from_version, 1, 1, INT_MAX, PGC_USERSET, 0, NULL, assign_from_version, NULL);
	DefineCustomBoolVariable("upcast_hook.declare_fingerprint",
							 "Whether the test hook declares its settings in event_store_upcast_hook_fingerprint.", NULL,
							 &hook_declares, true, PGC_USERSET, 0, NULL, assign_declares, NULL);
	MarkGUCPrefixReserved("upcast_hook");

	prev_hook = event_store_upcast_hook;
	event_store_upcast_hook = upcast_amount;
}
