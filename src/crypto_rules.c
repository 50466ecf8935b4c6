/*-------------------------------------------------------------------------
 *
 * crypto_rules.c
 *	  Personal data: protect() and the rules it records -- which fields of
 *	  an event type are personal data, and whose (the subject path).
 *
 * protect(event_type, subject, fields) records a rule in
 * event_store.protected_types.  The rules are cached per backend by event
 * type, read with the latest snapshot; protect() sends a relcache
 * invalidation of the table, delivered to every backend at commit, which
 * only marks the cache stale (crypto_drop_rules): it is reloaded by the next
 * crypto_find_rule(), never under the feet of an es_protect_event() that is
 * using a rule (an invalidation can arrive whenever a lock is taken).  A
 * (sub)transaction abort marks it stale too (crypto.c).  A row protect()
 * would have refused (written by hand) is kept as "corrupt": events of that
 * type are refused, the others unaffected.
 *
 * Locking: the rules are written as the extension's owner
 * (ES_RUN_AS_OWNER), an INSERT ... ON CONFLICT on the table.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "crypto.h"

PG_FUNCTION_INFO_V1(event_store_protect);

/* Columns of event_store.protected_types: event_type, subject, fields, created_at. */
#define Natts_protected_types	4

static EsStatement store_rule = ES_STATEMENT(
	"INSERT INTO event_store.protected_types (event_type, subject, fields) "
	"VALUES ($1, $2, $3) ON CONFLICT (event_type) DO UPDATE "
	"SET subject = EXCLUDED.subject, fields = EXCLUDED.fields, "
	"created_at = pg_catalog.now()",
	3, TEXTOID, TEXTOID, TEXTARRAYOID);

static MemoryContext crypto_cxt = NULL;
static HTAB *rules = NULL;		/* NULL: not loaded */
static bool rules_stale = false;
static long nrules = 0;

/*
 * Mark the rules stale; they are reloaded (and their memory reset) by the
 * next crypto_find_rule(), never under the feet of an es_protect_event() that is
 * using one (an invalidation can arrive whenever a lock is taken).
 */
void
crypto_drop_rules(void)
{
	rules_stale = true;
}

static void
load_rules(void)
{
	const EsCatalog *c = es_catalog();
	HASHCTL		ctl;
	Relation	rel;
	SysScanDesc scan;
	Snapshot	snapshot;
	HeapTuple	tup;
	MemoryContext old;

	if (crypto_cxt == NULL)
		crypto_cxt = AllocSetContextCreate(CacheMemoryContext, "event_store protect rules",
										   ALLOCSET_SMALL_SIZES);
	MemoryContextReset(crypto_cxt);
	rules = NULL;
	rules_stale = false;
	ctl.keysize = PATH_KEY_LEN;
	ctl.entrysize = sizeof(RuleEntry);
	ctl.hcxt = crypto_cxt;
	rules = hash_create("event_store protect rules", 16, &ctl,
						HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	nrules = 0;

	rel = table_open(c->rules_relid, AccessShareLock);
	snapshot = crypto_register_latest_snapshot(rel);
	scan = systable_beginscan(rel, InvalidOid, false, snapshot, 0, NULL);
	while ((tup = systable_getnext(scan)) != NULL)
	{
		Datum		v[Natts_protected_types];
		bool		n[Natts_protected_types];
		char	   *type;
		RuleEntry  *e;
		ArrayType  *arr;
		Datum	   *elems;
		bool	   *enulls;
		int			nelems;
		int			i;

		es_deform_row(tup, RelationGetDescr(rel), Natts_protected_types, v, n);
		if (n[0] || n[1] || n[2])
			continue;
		old = MemoryContextSwitchTo(crypto_cxt);
		type = TextDatumGetCString(v[0]);
		if (strlen(type) >= PATH_KEY_LEN)
		{
			/* no event has such a type */
			MemoryContextSwitchTo(old);
			continue;
		}
		e = hash_search(rules, type, HASH_ENTER, NULL);
		e->nfields = 0;
		e->fields = NULL;
		e->corrupt = !crypto_parse_path(TextDatumGetCString(v[1]), &e->subject);
		arr = DatumGetArrayTypeP(v[2]);
		if (!e->corrupt && ARR_NDIM(arr) == 1 && ARR_ELEMTYPE(arr) == TEXTOID)
		{
			deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &nelems);
			e->fields = palloc(sizeof(JsonPath) * Max(nelems, 1));
			e->corrupt = (nelems == 0 || nelems > MAX_FIELDS);
			for (i = 0; i < nelems && !e->corrupt; i++)
			{
				int			j;

				e->corrupt = enulls[i] || !crypto_parse_path(TextDatumGetCString(elems[i]), &e->fields[i]);
				for (j = 0; j < i && !e->corrupt; j++)
					e->corrupt = crypto_path_prefix(&e->fields[j], &e->fields[i]) ||
						crypto_path_prefix(&e->fields[i], &e->fields[j]);
			}
			e->nfields = e->corrupt ? 0 : nelems;
		}
		else
			e->corrupt = true;
		MemoryContextSwitchTo(old);
		nrules++;
	}
	systable_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);
}

RuleEntry *
crypto_find_rule(text *event_type)
{
	char		key[PATH_KEY_LEN];
	int			len = VARSIZE_ANY_EXHDR(event_type);

	if (rules == NULL || rules_stale)
		load_rules();
	if (nrules == 0 || len >= PATH_KEY_LEN)
		return NULL;
	memcpy(key, VARDATA_ANY(event_type), len);
	key[len] = '\0';
	return hash_search(rules, key, HASH_FIND, NULL);
}

/*
 * protect(event_type text, subject text, fields text[]) RETURNS void
 */
Datum
event_store_protect(PG_FUNCTION_ARGS)
{
	const EsCatalog *c;
	text	   *event_type = es_identifier_arg(fcinfo, 0, "event_type");
	text	   *subject = es_identifier_arg(fcinfo, 1, "subject");
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *enulls;
	int			n;
	JsonPath	sp;
	JsonPath   *fp;
	int			i,
				j;
	Datum		args[3];

	es_require_arg(fcinfo, 2, "fields");
	arr = PG_GETARG_ARRAYTYPE_P(2);
	crypto_check_path(text_to_cstring(subject), &sp, "subject");
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ES_INVALID_PATH),
				 errmsg("fields must be a one-dimensional array of paths")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_ES_INVALID_PATH),
				 errmsg("fields must name at least one path"),
				 errhint("For example '{$.email}'.")));
	if (n > MAX_FIELDS)
		ereport(ERROR,
				(errcode(ERRCODE_ES_INVALID_PATH),
				 errmsg("too many protected fields"),
				 errdetail("Got %d; at most %d are allowed.", n, MAX_FIELDS)));
	fp = palloc(sizeof(JsonPath) * n);
	for (i = 0; i < n; i++)
	{
		if (enulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_ES_INVALID_PATH),
					 errmsg("fields must not contain NULL")));
		crypto_check_path(TextDatumGetCString(elems[i]), &fp[i], "field");
		for (j = 0; j < i; j++)
			if (crypto_path_prefix(&fp[j], &fp[i]) || crypto_path_prefix(&fp[i], &fp[j]))
				ereport(ERROR,
						(errcode(ERRCODE_ES_INVALID_PATH),
						 errmsg("protected fields %s and %s overlap", fp[j].text, fp[i].text),
						 errdetail("No field may be the same as, or contain, another.")));
	}
	crypto_require_pgcrypto();			/* fail now, not at the first append */

	c = es_catalog();
	args[0] = PointerGetDatum(event_type);
	args[1] = CStringGetTextDatum(sp.text);
	args[2] = PointerGetDatum(arr);
	SPI_connect();
	es_run(&store_rule, args, NULL, ES_RUN_AS_OWNER, 0, SPI_OK_INSERT);
	SPI_finish();
	CacheInvalidateRelcacheByRelid(c->rules_relid);
	PG_RETURN_VOID();
}
