/*-------------------------------------------------------------------------
 *
 * event_store.c
 *	  Module entry point: PG_MODULE_MAGIC, settings, start-up of the other
 *	  modules, and the argument checks every SQL function shares.
 *
 * _PG_init only defines the extension's GUCs (event_store.*) and delegates to
 * the modules; it takes no locks and touches no shared state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "internal.h"
#include "read.h"

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
	es_read_node_init();		/* likewise; and the planner hook */

	MarkGUCPrefixReserved("event_store");

	es_catalog_init();			/* before the modules that watch it */
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
	es_require_value(PG_ARGISNULL(argno), name);
}

/* The same for a value that is not a function's argument. */
void
es_require_value(bool isnull, const char *name)
{
	if (isnull)
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
 * Validate an identifier (a stream id, an event type, an aggregate's name, a
 * subject): not NULL, not empty, not longer than ES_MAX_ID_BYTES.  Returns it
 * detoasted.
 */
text *
es_check_identifier(Datum value, bool isnull, const char *what)
{
	text	   *t;
	int			len;

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	t = DatumGetTextPP(value);
	len = VARSIZE_ANY_EXHDR(t);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what)));
	if (len > ES_MAX_ID_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is too long", what),
				 errdetail("It has %d bytes; at most %d are allowed.", len, ES_MAX_ID_BYTES)));
	return t;
}

/*
 * A filter array of names (categories, event types): one-dimensional,
 * without NULLs, each a valid identifier (es_check_identifier).  Returns the
 * number of distinct names and them, sorted in byte order, in *names
 * (palloc'd texts), for bsearch with es_text_cmp.  `what` names the argument.
 */
int
es_name_array(ArrayType *arr, const char *what, text ***names)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	int			k = 0;
	bool		categories = strcmp(what, "categories") == 0;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array", what)));
	if (array_contains_nulls(arr))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not contain null", what),
				 errhint("Pass NULL instead of the array to select every %s.",
						 categories ? "category" : "event type")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	*names = palloc(sizeof(text *) * Max(n, 1));
	for (i = 0; i < n; i++)
		(*names)[i] = es_check_identifier(elems[i], false,
										  categories ? "a category" : "an event type");
	qsort(*names, n, sizeof(text *), es_text_cmp);
	for (i = 0; i < n; i++)
		if (k == 0 || es_text_cmp(&(*names)[k - 1], &(*names)[i]) != 0)
			(*names)[k++] = (*names)[i];
	return k;
}

/* Byte-order comparison of two texts (through pointers to them), for qsort and bsearch. */
int
es_text_cmp(const void *a, const void *b)
{
	const text *x = *(text *const *) a;
	const text *y = *(text *const *) b;
	int			lx = VARSIZE_ANY_EXHDR(x);
	int			ly = VARSIZE_ANY_EXHDR(y);
	int			c = memcmp(VARDATA_ANY(x), VARDATA_ANY(y), Min(lx, ly));

	return c != 0 ? c : (lx > ly) - (lx < ly);
}

/*
 * An interval argument in milliseconds; negative is an error (22023).  Any
 * negative interval counts, '-1 us' too.
 */
int64
es_interval_ms(Interval *interval, const char *what)
{
	int64		us = interval->time + (int64) interval->day * USECS_PER_DAY +
		(int64) interval->month * DAYS_PER_MONTH * USECS_PER_DAY;

	if (us < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be negative", what)));
	return us / 1000;
}


/*
 * A numeric argument that must not be negative (22023), with a hint of what
 * to pass instead (or NULL).
 */
void
es_check_not_negative(int64 value, const char *what, const char *hint)
{
	if (value < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be negative", what),
				 errdetail("Got " INT64_FORMAT ".", value),
				 hint ? errhint("%s", hint) : 0));
}

/* Random bytes straight from pg_strong_random() (keys, and the pool below). */
void
es_strong_random(uint8 *p, int len)
{
	if (!pg_strong_random(p, len))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random values")));
}

/*
 * Random bytes for values that are public once used -- the random part of
 * an event id, a ciphertext's IV -- drawn from a pool of the process's own,
 * refilled by pg_strong_random() RANDOM_POOL_BYTES at a time.  Each call of
 * pg_strong_random() costs about 8,500 instructions whatever it returns
 * (OpenSSL 3 takes its generator's lock and checks its state), which was 8 %
 * of a single append and more of a batch, one event id per event.  Bytes
 * are handed out once and zeroed in the pool; a pool filled in another
 * process (a parent before fork) is thrown away.  Key material does not
 * come from here (es_strong_random).
 */
#define RANDOM_POOL_BYTES	512

void
es_random_bytes(uint8 *p, int len)
{
	static uint8 pool[RANDOM_POOL_BYTES];
	static int	left = 0;
	static int	filled_by = 0;

	if (len > RANDOM_POOL_BYTES)
	{
		es_strong_random(p, len);
		return;
	}
	if (filled_by != MyProcPid)
	{
		explicit_bzero(pool, sizeof(pool));
		left = 0;
		filled_by = MyProcPid;
	}
	if (left < len)
	{
		es_strong_random(pool, RANDOM_POOL_BYTES);
		left = RANDOM_POOL_BYTES;
	}
	memcpy(p, pool + RANDOM_POOL_BYTES - left, len);
	explicit_bzero(pool + RANDOM_POOL_BYTES - left, len);
	left -= len;
}
