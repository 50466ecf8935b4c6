/*-------------------------------------------------------------------------
 *
 * internal.h
 *	  The internal layer of event_store.so, which every module uses: the
 *	  extension's objects and their invalidation (catalog.c), statements
 *	  run through SPI, as the caller or as the extension's owner (spi.c),
 *	  bounded locks and settled reads (locks.c), argument checks and
 *	  settings (event_store.c), and each module's start-up function.
 *
 * Not installed: other extensions include event_store.h only.  The map of
 * the modules and their locking rules is src/README.md.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_STORE_INTERNAL_H
#define EVENT_STORE_INTERNAL_H

#include "event_store.h"

#include "access/htup.h"
#include "access/sdir.h"
#include "access/tupdesc.h"
#include "datatype/timestamp.h"
#include "access/skey.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"

/* ---------------------------------------------------------------------
 * event_store.c: settings and argument checks
 * ---------------------------------------------------------------------
 */
extern int	es_max_stream_locks;
extern char *es_correlation_id;
extern char *es_causation_id;

extern void es_require_arg(FunctionCallInfo fcinfo, int argno, const char *name);
extern void es_require_value(bool isnull, const char *name);
extern text *es_check_identifier(Datum value, bool isnull, const char *what);
extern text *es_identifier_arg(FunctionCallInfo fcinfo, int argno, const char *name);
extern int	es_name_array(ArrayType *arr, const char *what, text ***names);
extern int	es_text_cmp(const void *a, const void *b);

/* Are two texts the same bytes? */
static inline bool
es_same_text(const text *a, const text *b)
{
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}
extern int64 es_interval_ms(Interval *interval, const char *what);
extern void es_check_not_negative(int64 value, const char *what, const char *hint);

/*
 * Random bytes: straight from pg_strong_random (keys), or from a pool of the
 * process's own for values public once used (event ids, IVs).
 */
extern void es_strong_random(uint8 *p, int len);
extern void es_random_bytes(uint8 *p, int len);

/* Each module's start-up, called once per process from _PG_init. */
extern void es_catalog_init(void);
extern void es_locks_init(void);
extern void es_versioning_init(void);
extern void es_upcast_init(void);
extern void es_aggregate_init(void);
extern void es_crypto_init(void);
extern void es_pipeline_init(void);
extern void es_projection_init(void);

/* ---------------------------------------------------------------------
 * catalog.c: the extension's objects, resolved once per backend
 * ---------------------------------------------------------------------
 */
typedef struct EsCatalog
{
	Oid			nsp;			/* the schema event_store */
	Oid			owner;			/* owner of the event table: the extension's owner */
	Oid			event_type;		/* the composite type event_store.event */
	/* the event log and the global log */
	Oid			events_relid;
	Oid			stream_index;	/* (stream_id, stream_version), the primary key */
	Oid			event_id_index; /* unique (event_id) */
	Oid			log_relid;		/* global_log */
	Oid			log_pkey;		/* (global_position) */
	Oid			log_event_key;	/* unique (event_id); (stream_id, stream_version) in 0.1.0 */
	Oid			log_category_index; /* (category, global_position) */
	/* aggregates */
	Oid			aggregates_relid;
	Oid			aggregates_pkey;	/* (name) */
	Oid			snapshots_relid;
	Oid			snapshots_pkey; /* (stream_id, aggregate, generation, upcasters, version) */
	Oid			snapshots_time_idx; /* (..., upcasters, recorded_at, version) */
	/* upcasting */
	Oid			upcasters_relid;
	/* personal data */
	Oid			keys_relid;		/* subject_keys */
	Oid			keys_pkey;		/* (key_id) */
	Oid			tomb_relid;		/* forgotten_subjects */
	Oid			tomb_pkey;		/* (subject_hash) */
	Oid			rules_relid;	/* protected_types */
	/* objects of version 0.2.0: InvalidOid while the extension is at 0.1.0 */
	Oid			keys_hash;		/* unique (_subject_hash(subject)) on subject_keys */
	Oid			scrubs_relid;	/* key_scrubs */
	Oid			publish_key_relid;	/* publish_key */
	Oid			projections_relid;	/* projections */
	Oid			parked_relid;	/* projection_parked */
	Oid			log_identity_relid; /* log_identity */
} EsCatalog;

/* The objects; "extension is not installed" (55000) when they are missing. */
extern const EsCatalog *es_catalog(void);

/* The same, or NULL when the extension is not installed (no error). */
extern const EsCatalog *es_catalog_if_installed(void);

/*
 * Which look-up es_catalog() returns: a new number whenever the objects
 * were looked up again (after an invalidation of one of them); 0 when they
 * must be.
 */
extern uint64 es_catalog_generation(void);

/* An installed extension's schema and version (either may be NULL); false if not installed. */
extern bool es_extension(const char *name, Oid *schema, char **version);

/* heap_deform_tuple() of a row of one of our tables, with room for natts columns. */
extern void es_deform_row(HeapTuple tuple, TupleDesc desc, int natts, Datum *values, bool *nulls);

/* Forget what was looked up (the output plugin, at start-up). */
extern void es_catalog_reset(void);
extern void es_catalog_modes_agree(bool agree);

/*
 * Invalidation.  A module that caches what it derived from one of the
 * objects above registers a reset function here, once, from its start-up;
 * the catalog's one relcache callback calls it when that relation changes
 * (or every relation: a relcache reset), and the one callback per system
 * cache calls it when that cache changes (PROCOID: a function was created,
 * replaced, dropped, its rights changed; AUTHMEMROLEMEM, AUTHOID: roles).
 * Reset functions only mark things stale: they run whenever a lock is
 * taken, and may not access the catalog.
 */
typedef void (*EsResetFunction) (void);

#define ES_WATCH_RELATION(field, fn) \
	es_watch_relation(offsetof(EsCatalog, field), (fn))
extern void es_watch_relation(size_t field_offset, EsResetFunction fn);
extern void es_watch_syscache(int cacheid, EsResetFunction fn);

/*
 * Functions that registries name.  A registry keeps a function by its
 * schema-qualified signature, "schema.name(argtypes)" as
 * format_procedure_qualified() writes it, so that definitions survive
 * pg_dump and pg_upgrade; each use resolves it again.
 */
typedef struct EsFunctionShape
{
	const char *role;			/* "reducer", "handler", ...: for messages */
	const char *signature;		/* in words: "(state jsonb, e event_store.event) RETURNS jsonb" */
	int			nargs;
	Oid			argtypes[2];
	Oid			rettype;
} EsFunctionShape;

/* The function a stored signature names with the shape's arguments, or InvalidOid (never raises). */
extern Oid	es_resolve_function(const char *signature, const EsFunctionShape *shape);

/* Is fn a plain function of the shape (not a procedure, not returning a set)? */
extern bool es_function_fits(Oid fn, const EsFunctionShape *shape);

/* Raise sqlstate unless fn fits; `of` (or NULL) follows the function's name, e.g. " of projection \"p\"". */
extern void es_check_function(Oid fn, const EsFunctionShape *shape, int sqlstate, const char *of);

/* The current user's EXECUTE right on fn (the usual 42501 error). */
extern void es_check_execute(Oid fn);

/* ---------------------------------------------------------------------
 * spi.c: statements, run as the caller or as the extension's owner
 * ---------------------------------------------------------------------
 */

/*
 * Running as the owner of the extension's tables, the way referential
 * integrity triggers run as the table's owner: every write of the
 * registries (upcasters, aggregates, protected_types, projections), the key
 * tables and the snapshots goes through here, so that callers need the
 * function's EXECUTE right and no right on the tables.  An error in between
 * needs no cleanup: (sub)transaction abort restores the user.
 */
typedef struct EsOwnerSave
{
	Oid			user;
	int			sec_context;
} EsOwnerSave;

extern void es_owner_begin(EsOwnerSave *save);
extern void es_owner_end(const EsOwnerSave *save);

/*
 * A statement of the extension: its text and parameter types, prepared on
 * first use and kept for the life of the backend (SPI_keepplan; the plan
 * cache re-plans it after DDL).  Declare them static:
 *
 *	static EsStatement delete_key = ES_STATEMENT("DELETE FROM ...", 1, UUIDOID);
 *
 * (with no parameter, ES_STATEMENT("...", 0, InvalidOid)).
 */
#define ES_MAX_STATEMENT_ARGS	12
#define ES_STATEMENT(sql, nargs, ...)	{(sql), (nargs), {__VA_ARGS__}, NULL}

typedef struct EsStatement
{
	const char *sql;
	int			nargs;
	Oid			argtypes[ES_MAX_STATEMENT_ARGS];
	SPIPlanPtr	plan;			/* NULL until first use */
} EsStatement;

/* How es_run() runs a statement. */
#define ES_RUN_AS_OWNER		0x01	/* as the extension's owner (es_owner_begin) */
#define ES_RUN_READ_ONLY	0x02	/* read-only (no CommandCounterIncrement) */
#define ES_RUN_LATEST		0x04	/* with a snapshot taken now (GetLatestSnapshot) */

/*
 * Run the statement (the caller is connected to SPI) with the parameters
 * (nulls as SPI wants them, or NULL), returning at most `count` rows (0: all)
 * in SPI_tuptable; returns SPI_processed.  A result code other than
 * `expect` is an internal error.
 */
extern uint64 es_run(EsStatement *st, const Datum *values, const char *nulls, int flags,
					 long count, int expect);

/* An internal subtransaction (see spi.c): what to come back to. */
typedef struct EsSubxact
{
	MemoryContext context;
	struct ResourceOwnerData *owner;
} EsSubxact;

extern void es_subxact_begin(EsSubxact *sx);
extern void es_subxact_commit(EsSubxact *sx);
extern ErrorData *es_subxact_abort(EsSubxact *sx);

/* ---------------------------------------------------------------------
 * locks.c: short locks of our own lock tags, bounded in number
 * ---------------------------------------------------------------------
 */

/*
 * The field4 of our advisory-class lock tags (pg_locks.objsubid; core uses
 * 1 and 2).  The key is a 64-bit hash, split over field2 and field3.
 */
#define ES_LOCKTAG_STREAM			0x4553	/* a stream, while its next event is checked and inserted */
#define ES_LOCKTAG_SUBJECT			0x4554	/* a subject, while its key is created or it is forgotten */
#define ES_LOCKTAG_EVENT_ID			0x4555	/* an event id, while an event with it is appended */
#define ES_LOCKTAG_PROJECTION		0x4560	/* a projection, while it is worked on (transaction) */

/*
 * A slot for one short lock at a time (see locks.c for the protocol: held
 * from a check to the write it allows, never while waiting for another
 * transaction).  Zero-initialise it (a static variable).
 */
typedef struct EsLock
{
	bool		registered;
	bool		held;
	LOCKTAG		tag;
	SubTransactionId subid;		/* the subtransaction that took it */
} EsLock;

extern void es_lock_take(EsLock *lock, uint16 kind, uint64 key);
extern void es_lock_release(EsLock *lock);
extern bool es_lock_held(const EsLock *lock);
extern bool es_lock_held_on(const EsLock *lock, uint16 kind, uint64 key);

/* A lock held to the end of the transaction; without wait, false if it is taken. */
extern bool es_xact_lock(uint16 kind, uint64 key, bool wait);
extern bool es_xact_lock_held(uint16 kind, uint64 key);

/*
 * A settled read: the rows of rel that an index scan finds under a dirty
 * snapshot, the committed ones and the own transaction's.  Returns the
 * first (in `dir` order) into slot (materialised), or false.  If a row
 * found is being inserted or deleted by a transaction in progress, returns
 * false with *wait_for set to it: the caller lets go of its locks, waits
 * for it (XactLockTableWait) and looks again.  With all_rows, every match
 * is looked at (a unique key with several row versions), else the first.
 */
extern bool es_read_settled(Relation rel, Relation index, ScanKey keys, int nkeys,
							ScanDirection dir, bool all_rows, TupleTableSlot *slot,
							TransactionId *wait_for);

#endif							/* EVENT_STORE_INTERNAL_H */
