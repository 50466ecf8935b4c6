/*-------------------------------------------------------------------------
 *
 * crypto.c
 *	  Personal data: per-subject encryption and crypto-shredding
 *	  (protect, forget, rewrap_keys, the pgcrypto bridge, subject keys).
 *
 * protect(event_type, subject, fields) records a rule in
 * event_store.protected_types.  The BEFORE INSERT trigger calls
 * es_protect_event() for every event: for an event type with a rule, each
 * listed field of data is replaced by a JSON string holding
 * base64(iv || AES-256-CBC ciphertext || HMAC-SHA256 tag) of the field's JSON
 * text (encrypt-then-MAC; the tag also covers the key id and the path, so a
 * ciphertext cannot be moved to another field or subject), and the metadata
 * gets {"protected": {"key": <key id>, "fields": [paths]}}.  Every reader's
 * event passes through es_decrypt_event() (from es_present_event()): it
 * verifies and decrypts, or, once the key is gone, puts JSON null in the
 * fields and "redacted" in the metadata.
 *
 * Subject keys are 64 random bytes (32 for AES-256, 32 for HMAC-SHA256),
 * stored in event_store.subject_keys wrapped (the same encrypt-then-MAC) by
 * the key-encryption key, event_store.key_encryption_key, a superuser-only
 * setting that never lives in a table.  forget(subject) deletes the key row,
 * keeps a tombstone of the subject's SHA-256 in event_store.forgotten_subjects,
 * deletes snapshots of the subject's streams and appends an audit event
 * SubjectForgotten to the stream event_store-subjects.
 *
 * pgcrypto is called through fmgr: its schema is looked up in pg_extension,
 * its functions by name and argument types, EXECUTE is checked for the
 * current user, and the FmgrInfos live in a long-lived context, dropped on any
 * pg_proc or pg_namespace invalidation.
 *
 * Caches (per backend): the rules by event type, subject -> key id, key
 * id -> key (or "forgotten"), and decrypted field values by ciphertext.
 * They are dropped on a relcache invalidation of their table (protect(),
 * forget() and rewrap_keys() send one, delivered to every backend at commit)
 * and at every (sub)transaction abort, so that nothing an aborted
 * transaction created survives in them.  Key bytes and decrypted values are
 * zeroed when dropped, and so are the copies of keys and plaintexts handed
 * to pgcrypto once it returns (what pgcrypto and OpenSSL copy internally,
 * and the decrypted values handed on to readers -- jsonb built per event,
 * rows of a result, a tuplestore that may spill to a temporary file -- are
 * beyond reach: README, "What remains").  Since an invalidation can arrive
 * whenever a lock is taken, what callers get from the key and value caches
 * is a copy, and the rules are only marked stale by an invalidation,
 * reloaded by the next find_rule().
 *
 * forget() deletes the key row and, at pre-commit, overwrites it in place
 * (heap_inplace_update): vacuum frees a dead row's space without clearing
 * it, and the wrapped key must not survive in the table's files.
 *
 * Locking.  Creating a subject's key and forgetting a subject take an
 * ExclusiveLock on the subject's lock tag (advisory class, field4 =
 * ES_LOCKTAG_SUBJECT, key = 64 bits of the subject's SHA-256) from their
 * checks to their writes (locks.c), so that a key is never created beside a
 * tombstone: under the lock, the tombstone and the key row are read with a
 * dirty snapshot, and a transaction in progress writing either is waited
 * for (without the lock) before looking again.  A backend holds one subject
 * lock at most, however many keys its transaction creates.  Appends with a
 * key that exists take no lock.  The extension's own tables are
 * read directly through their indexes with the latest snapshot and written
 * through SPI as their owner (like referential-integrity triggers), so that
 * writers and readers need no privilege on them.
 *
 * Errors never carry plaintext field values, subjects or key bytes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "common/base64.h"
#include "common/cryptohash.h"
#include "common/hashfn.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "port/pg_bswap.h"
#include "access/xloginsert.h"
#include "storage/bufmgr.h"
#include "storage/fd.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

#include "event_store.h"
#include "pipeline.h"

PG_FUNCTION_INFO_V1(event_store_protect);
PG_FUNCTION_INFO_V1(event_store_forget);
PG_FUNCTION_INFO_V1(event_store_rewrap_keys);
PG_FUNCTION_INFO_V1(event_store_personal_data_access);
PG_FUNCTION_INFO_V1(event_store_subject_hash);
PG_FUNCTION_INFO_V1(event_store_subject_streams);

#define KEY_BYTES		64		/* a subject key: AES-256 key, then HMAC key */
#define HALF_KEY		32
#define IV_BYTES		16
#define TAG_BYTES		32
#define KEK_HEX_CHARS	64		/* the key-encryption key: 32 bytes in hex */
#define MAX_FIELDS		32
#define MAX_PATH_DEPTH	16
#define PATH_KEY_LEN	(ES_MAX_ID_BYTES + 1)

#define PROTECTED_KEY	"protected"
#define REDACTED_KEY	"redacted"
#define AUDIT_STREAM	"event_store-subjects"

/* Settings */
static char *kek_setting = NULL;
static char *previous_kek_setting = NULL;

/* Our tables and indexes, resolved once per backend. */
typedef struct CryptoCatalog
{
	Oid			nsp;
	Oid			keys_relid;		/* subject_keys */
	Oid			keys_pkey;		/* (key_id) */
	Oid			keys_hash;		/* unique (_subject_hash(subject)) */
	Oid			tomb_relid;		/* forgotten_subjects */
	Oid			tomb_pkey;		/* (subject_hash) */
	Oid			rules_relid;	/* protected_types */
} CryptoCatalog;

static CryptoCatalog ccat;
static bool ccat_valid = false;

/* The pgcrypto functions we call. */
typedef struct Pgcrypto
{
	bool		valid;
	Oid			checked_user;	/* EXECUTE checked for this role */
	Oid			fn_oid[3];
	FmgrInfo	encrypt_iv;
	FmgrInfo	decrypt_iv;
	FmgrInfo	hmac;
} Pgcrypto;

static Pgcrypto pgc;

/* A parsed JSON path: $.a.b -> {"a", "b"} */
typedef struct JsonPath
{
	char	   *text;			/* as written */
	int			depth;
	char	  **keys;
} JsonPath;

typedef struct RuleEntry
{
	char		event_type[PATH_KEY_LEN];	/* hash key */
	bool		corrupt;		/* a row protect() would have refused */
	JsonPath	subject;
	int			nfields;
	JsonPath   *fields;
} RuleEntry;

typedef struct SubjectEntry
{
	uint8		hash[PG_SHA256_DIGEST_LENGTH];	/* hash key */
	pg_uuid_t	key_id;
} SubjectEntry;

typedef struct KeyEntry
{
	pg_uuid_t	key_id;			/* hash key */
	bool		exists;			/* false: forgotten (or never existed) */
	uint8		key[KEY_BYTES];
} KeyEntry;

/*
 * Decrypted field values, by ciphertext: a re-read (an aggregate replayed,
 * a stream read again) pays no decryption.  An entry matches only the same
 * ciphertext, key and path, so a ciphertext copied elsewhere is still
 * authenticated.  Dropped with the keys (forget() in any backend, an abort)
 * and whenever it outgrows PLAIN_CACHE_BYTES.
 */
typedef struct PlainEntry
{
	uint64		h;				/* hash key: hash of the ciphertext string */
	pg_uuid_t	key_id;
	char	   *path;
	char	   *ct;
	int			ctlen;
	Jsonb	   *plain;
} PlainEntry;

#define PLAIN_CACHE_BYTES	(8 * 1024 * 1024)

static MemoryContext plain_cxt = NULL;
static HTAB *plain_cache = NULL;
static Size plain_bytes = 0;

static MemoryContext crypto_cxt = NULL;
static HTAB *rules = NULL;		/* NULL: not loaded */
static bool rules_stale = false;
static long nrules = 0;
static HTAB *subjects = NULL;
static HTAB *keys = NULL;

/* The key-encryption keys, derived once per value of the settings. */
typedef struct Kek
{
	bool		valid;
	char		source[MAXPGPATH + 8];	/* the setting it was loaded from */
	uint8		enc[HALF_KEY];
	uint8		mac[HALF_KEY];
	char		id[17];			/* 8 bytes in hex */
} Kek;

static Kek kek_current;
static Kek kek_previous;

/*
 * Key rows forget() deleted in this transaction: overwritten in place at
 * commit (see scrub_forgotten_keys), dropped with an aborted
 * (sub)transaction.  In TopTransactionContext.
 */
typedef struct PendingScrub
{
	ItemPointerData tid;
	SubTransactionId subid;
} PendingScrub;

static List *pending_scrubs = NIL;

/* The lock of the subject whose key is being created or forgotten (locks.c). */
static EsLock subject_lock;

/* Who may read protected fields in clear: cached per role. */
static Oid	access_checked_user = InvalidOid;
static bool access_granted = false;

/* ---------------------------------------------------------------------
 * Caches and their invalidation
 * ---------------------------------------------------------------------
 */

static void
drop_plain_cache(void)
{
	if (plain_cxt)
	{
		/* the values are personal data: clear them before freeing */
		if (plain_cache)
		{
			HASH_SEQ_STATUS st;
			PlainEntry *e;

			hash_seq_init(&st, plain_cache);
			while ((e = hash_seq_search(&st)) != NULL)
				if (e->plain)
					explicit_bzero(e->plain, VARSIZE(e->plain));
		}
		MemoryContextDelete(plain_cxt);
	}
	plain_cxt = NULL;
	plain_cache = NULL;
	plain_bytes = 0;
}

static void
drop_key_caches(void)
{
	drop_plain_cache();
	if (keys)
	{
		HASH_SEQ_STATUS st;
		KeyEntry   *e;

		hash_seq_init(&st, keys);
		while ((e = hash_seq_search(&st)) != NULL)
			explicit_bzero(e->key, sizeof(e->key));
		hash_destroy(keys);
		keys = NULL;
	}
	if (subjects)
	{
		hash_destroy(subjects);
		subjects = NULL;
	}
}

/*
 * Mark the rules stale; they are reloaded (and their memory reset) by the
 * next find_rule(), never under the feet of an es_protect_event() that is
 * using one (an invalidation can arrive whenever a lock is taken).
 */
static void
drop_rules(void)
{
	rules_stale = true;
}

static void
crypto_relcache_callback(Datum arg, Oid relid)
{
	(void) arg;

	/*
	 * No early return when ccat is already invalid: ccat keeps the OIDs it
	 * had, and a later message (a forget) must still drop the key caches.
	 */
	if (relid == InvalidOid || relid == ccat.keys_relid || relid == ccat.tomb_relid)
		drop_key_caches();
	if (relid == InvalidOid || relid == ccat.rules_relid)
		drop_rules();
	if (relid == InvalidOid || relid == ccat.keys_relid || relid == ccat.keys_pkey ||
		relid == ccat.keys_hash || relid == ccat.tomb_relid || relid == ccat.tomb_pkey ||
		relid == ccat.rules_relid)
		ccat_valid = false;
}

static void
crypto_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	(void) arg;
	(void) cacheid;
	(void) hashvalue;
	pgc.valid = false;
	access_checked_user = InvalidOid;
}

static void scrub_forgotten_keys(void);
static void scrub_key_row(Relation rel, ItemPointer tid);

static void
crypto_xact_callback(XactEvent event, void *arg)
{
	(void) arg;
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (pending_scrubs != NIL)
				scrub_forgotten_keys();
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (pending_scrubs != NIL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that called event_store.forget()"),
						 errhint("Call forget() in a transaction of its own.")));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			drop_key_caches();
			drop_rules();
			pending_scrubs = NIL;
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			pending_scrubs = NIL;
			break;
		default:
			break;
	}
}

static void
crypto_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	(void) parentSubid;
	(void) arg;
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		ListCell   *lc;

		drop_key_caches();
		drop_rules();
		/* the aborted subtransaction and its children have ids >= mySubid */
		foreach(lc, pending_scrubs)
		{
			PendingScrub *ps = lfirst(lc);

			if (ps->subid >= mySubid)
				pending_scrubs = foreach_delete_current(pending_scrubs, lc);
		}
	}
}

/*
 * Mask the key-encryption keys wherever settings are shown.
 */
static const char *
show_kek(void)
{
	return (kek_setting && kek_setting[0]) ? "(set)" : "";
}

static const char *
show_previous_kek(void)
{
	return (previous_kek_setting && previous_kek_setting[0]) ? "(set)" : "";
}

/*
 * Called once per process from _PG_init: settings and callbacks.
 */
void
es_crypto_init(void)
{
	/*
	 * No check hook: a rejected value would be echoed into the server log.
	 * The value is checked when it is used.
	 */
	DefineCustomStringVariable("event_store.key_encryption_key",
							   "Key-encryption key that wraps the subject keys of protected personal data (64 hex digits).",
							   "Set it in postgresql.conf (outside the data directory) or for a session; never in a table.",
							   &kek_setting,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE |
							   GUC_DISALLOW_IN_AUTO_FILE,
							   NULL, NULL, show_kek);
	DefineCustomStringVariable("event_store.previous_key_encryption_key",
							   "The previous key-encryption key, while event_store.rewrap_keys() moves the subject keys to the new one.",
							   NULL,
							   &previous_kek_setting,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE |
							   GUC_DISALLOW_IN_AUTO_FILE,
							   NULL, NULL, show_previous_kek);

	CacheRegisterRelcacheCallback(crypto_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, crypto_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, crypto_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, crypto_syscache_callback, (Datum) 0);
	RegisterXactCallback(crypto_xact_callback, NULL);
	RegisterSubXactCallback(crypto_subxact_callback, NULL);
}

static const CryptoCatalog *
crypto_catalog(void)
{
	if (!ccat_valid)
	{
		CryptoCatalog c;

		c.nsp = es_catalog() ? get_namespace_oid("event_store", false) : InvalidOid;
		c.keys_relid = get_relname_relid("subject_keys", c.nsp);
		c.keys_pkey = get_relname_relid("subject_keys_pkey", c.nsp);
		c.keys_hash = get_relname_relid("subject_keys_subject_hash", c.nsp);
		c.tomb_relid = get_relname_relid("forgotten_subjects", c.nsp);
		c.tomb_pkey = get_relname_relid("forgotten_subjects_pkey", c.nsp);
		c.rules_relid = get_relname_relid("protected_types", c.nsp);
		/* the index of version 0.2.0; 0.1.0's is by subject (see keys_by_subject) */
		if (!OidIsValid(c.keys_hash) &&
			!OidIsValid(get_relname_relid("subject_keys_subject_key", c.nsp)))
			c.keys_relid = InvalidOid;
		if (!OidIsValid(c.keys_relid) || !OidIsValid(c.keys_pkey) ||
			!OidIsValid(c.tomb_relid) ||
			!OidIsValid(c.tomb_pkey) || !OidIsValid(c.rules_relid))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the personal-data tables of extension \"event_store\" are missing"),
					 errhint("Reinstall the extension: DROP EXTENSION event_store; CREATE EXTENSION event_store.")));
		ccat = c;
		ccat_valid = true;
	}
	return &ccat;
}

/* ---------------------------------------------------------------------
 * The pgcrypto bridge
 * ---------------------------------------------------------------------
 */

/*
 * pgcrypto's schema, from pg_extension.
 */
static Oid
pgcrypto_schema(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			nsp = InvalidOid;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("pgcrypto"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		nsp = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	if (!OidIsValid(nsp))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"pgcrypto\" is not installed"),
				 errdetail("event_store encrypts personal data with pgcrypto."),
				 errhint("Run CREATE EXTENSION pgcrypto.")));
	return nsp;
}

static Oid
lookup_pgcrypto(const char *schema, const char *name, int nargs, const Oid *argtypes)
{
	Oid			fn = LookupFuncName(list_make2(makeString(pstrdup(schema)), makeString(pstrdup(name))),
									nargs, argtypes, true);

	if (!OidIsValid(fn))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function %s.%s of extension \"pgcrypto\" does not exist", schema, name),
				 errhint("Update or reinstall pgcrypto.")));
	return fn;
}

/*
 * The pgcrypto functions, looked up once (again after a pg_proc or
 * pg_namespace change) and checked for EXECUTE by the current user.
 */
static Pgcrypto *
pgcrypto(void)
{
	Oid			user = GetUserId();
	int			i;

	if (!pgc.valid)
	{
		char	   *schema = get_namespace_name(pgcrypto_schema());
		Oid			bbbt[4] = {BYTEAOID, BYTEAOID, BYTEAOID, TEXTOID};
		Oid			bbt[3] = {BYTEAOID, BYTEAOID, TEXTOID};

		pgc.fn_oid[0] = lookup_pgcrypto(schema, "encrypt_iv", 4, bbbt);
		pgc.fn_oid[1] = lookup_pgcrypto(schema, "decrypt_iv", 4, bbbt);
		pgc.fn_oid[2] = lookup_pgcrypto(schema, "hmac", 3, bbt);
		fmgr_info_cxt(pgc.fn_oid[0], &pgc.encrypt_iv, TopMemoryContext);
		fmgr_info_cxt(pgc.fn_oid[1], &pgc.decrypt_iv, TopMemoryContext);
		fmgr_info_cxt(pgc.fn_oid[2], &pgc.hmac, TopMemoryContext);
		pgc.checked_user = InvalidOid;
		pgc.valid = true;
	}
	if (pgc.checked_user != user)
	{
		for (i = 0; i < 3; i++)
		{
			AclResult	acl = pg_proc_aclcheck(pgc.fn_oid[i], user, ACL_EXECUTE);

			if (acl != ACLCHECK_OK)
				aclcheck_error(acl, OBJECT_FUNCTION, get_func_name(pgc.fn_oid[i]));
		}
		pgc.checked_user = user;
	}
	return &pgc;
}

static char *
format_uuid(const pg_uuid_t *u)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(u)));
}

static bytea *
make_bytea(const uint8 *p, int len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	if (len > 0)
		memcpy(VARDATA(b), p, len);
	return b;
}

/*
 * Zero a copy of secret bytes we handed to pgcrypto (a key, a plaintext),
 * once pgcrypto is done with it.
 */
static void
zero_bytea(bytea *b)
{
	explicit_bzero(VARDATA(b), VARSIZE(b) - VARHDRSZ);
}

/* HMAC-SHA256 of msg with mac_key (32 bytes) into tag */
static void
hmac256(const uint8 *mac_key, const uint8 *msg, int len, uint8 *tag)
{
	bytea	   *r;
	bytea	   *k = make_bytea(mac_key, HALF_KEY);
	bytea	   *m = make_bytea(msg, len);

	r = DatumGetByteaPP(FunctionCall3Coll(&pgcrypto()->hmac, InvalidOid,
										  PointerGetDatum(m), PointerGetDatum(k),
										  CStringGetTextDatum("sha256")));
	zero_bytea(k);
	zero_bytea(m);				/* key material when deriving the KEK's subkeys */
	Assert(VARSIZE_ANY_EXHDR(r) == TAG_BYTES);
	memcpy(tag, VARDATA_ANY(r), TAG_BYTES);
}

static void
random_bytes(uint8 *p, int len)
{
	if (!pg_strong_random(p, len))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random values")));
}

/*
 * Encrypt-then-MAC: iv || AES-256-CBC(plain) || HMAC-SHA256(ad || iv || ct).
 * key is KEY_BYTES: the AES key, then the HMAC key.  Returns palloc'd bytes.
 */
static uint8 *
seal(const uint8 *key, const uint8 *ad, int adlen, const uint8 *plain, int len, int *outlen)
{
	uint8		iv[IV_BYTES];
	bytea	   *ct;
	int			ctlen;
	uint8	   *msg;
	uint8	   *out;
	bytea	   *p = make_bytea(plain, len);
	bytea	   *k = make_bytea(key, HALF_KEY);

	random_bytes(iv, IV_BYTES);
	ct = DatumGetByteaPP(FunctionCall4Coll(&pgcrypto()->encrypt_iv, InvalidOid,
										   PointerGetDatum(p), PointerGetDatum(k),
										   PointerGetDatum(make_bytea(iv, IV_BYTES)),
										   CStringGetTextDatum("aes-cbc/pad:pkcs")));
	zero_bytea(p);
	zero_bytea(k);
	ctlen = VARSIZE_ANY_EXHDR(ct);
	msg = palloc(adlen + IV_BYTES + ctlen);
	memcpy(msg, ad, adlen);
	memcpy(msg + adlen, iv, IV_BYTES);
	memcpy(msg + adlen + IV_BYTES, VARDATA_ANY(ct), ctlen);
	out = palloc(IV_BYTES + ctlen + TAG_BYTES);
	memcpy(out, msg + adlen, IV_BYTES + ctlen);
	hmac256(key + HALF_KEY, msg, adlen + IV_BYTES + ctlen, out + IV_BYTES + ctlen);
	pfree(msg);
	*outlen = IV_BYTES + ctlen + TAG_BYTES;
	return out;
}

/*
 * Verify and decrypt what seal() produced.  Returns NULL when the tag does
 * not match (tampered, truncated, or another key, field or subject).
 */
static bytea *
unseal(const uint8 *key, const uint8 *ad, int adlen, const uint8 *in, int inlen)
{
	uint8		tag[TAG_BYTES];
	uint8	   *msg;
	int			ctlen = inlen - IV_BYTES - TAG_BYTES;
	int			diff = 0;
	int			i;
	bytea	   *k;
	bytea	   *plain;

	if (ctlen < 16 || ctlen % 16 != 0)
		return NULL;
	msg = palloc(adlen + IV_BYTES + ctlen);
	memcpy(msg, ad, adlen);
	memcpy(msg + adlen, in, IV_BYTES + ctlen);
	hmac256(key + HALF_KEY, msg, adlen + IV_BYTES + ctlen, tag);
	pfree(msg);
	for (i = 0; i < TAG_BYTES; i++)
		diff |= tag[i] ^ in[IV_BYTES + ctlen + i];	/* constant time */
	if (diff != 0)
		return NULL;
	k = make_bytea(key, HALF_KEY);
	plain = DatumGetByteaPP(FunctionCall4Coll(&pgcrypto()->decrypt_iv, InvalidOid,
											  PointerGetDatum(make_bytea(in + IV_BYTES, ctlen)),
											  PointerGetDatum(k),
											  PointerGetDatum(make_bytea(in, IV_BYTES)),
											  CStringGetTextDatum("aes-cbc/pad:pkcs")));
	zero_bytea(k);
	return plain;
}

static void
sha256(const uint8 *p, size_t len, uint8 *out)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	if (ctx == NULL || pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, p, len) < 0 ||
		pg_cryptohash_final(ctx, out, PG_SHA256_DIGEST_LENGTH) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute a SHA-256 hash")));
	pg_cryptohash_free(ctx);
}

/* ---------------------------------------------------------------------
 * The key-encryption key
 * ---------------------------------------------------------------------
 */

static bool
parse_kek_hex(const char *hex, Kek *k)
{
	uint8		raw[HALF_KEY];
	uint8		id[TAG_BYTES];
	int			i;

	if (hex == NULL || strlen(hex) != KEK_HEX_CHARS)
		return false;
	for (i = 0; i < HALF_KEY; i++)
	{
		int			hi = hex[2 * i],
					lo = hex[2 * i + 1];

		if (!isxdigit(hi) || !isxdigit(lo))
		{
			explicit_bzero(raw, sizeof(raw));
			return false;
		}
		hi = isdigit(hi) ? hi - '0' : (tolower(hi) - 'a' + 10);
		lo = isdigit(lo) ? lo - '0' : (tolower(lo) - 'a' + 10);
		raw[i] = (uint8) (hi * 16 + lo);
	}
	/* independent subkeys for encryption, authentication and an id */
	hmac256(raw, (const uint8 *) "event_store kek enc", 19, k->enc);
	hmac256(raw, (const uint8 *) "event_store kek mac", 19, k->mac);
	hmac256(raw, (const uint8 *) "event_store kek id", 18, id);
	for (i = 0; i < 8; i++)
		snprintf(k->id + 2 * i, 3, "%02x", id[i]);
	explicit_bzero(raw, sizeof(raw));
	k->valid = true;
	return true;
}

/*
 * Load a key-encryption key from its setting: 64 hexadecimal digits, or
 * "file:" and the path of a file that holds them (so that the key never
 * appears in postgresql.conf or, when a reload changes it, in the server
 * log).  Cached until the setting changes; a new key file means a new path.
 */
static bool
parse_kek(const char *setting, Kek *k)
{
	bool		ok;

	if (setting == NULL)
		return false;
	if (k->valid && strcmp(k->source, setting) == 0)
		return true;
	k->valid = false;
	if (strncmp(setting, "file:", 5) == 0)
	{
		char		hex[KEK_HEX_CHARS + 8];
		size_t		n;
		FILE	   *f = AllocateFile(setting + 5, "r");

		if (f == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_ES_NO_KEK),
					 errmsg("could not open key-encryption key file \"%s\": %m", setting + 5),
					 errhint("Check the path in the setting, and that the server's user can read the file.")));
		n = fread(hex, 1, sizeof(hex) - 1, f);
		FreeFile(f);
		hex[n] = '\0';
		while (n > 0 && isspace((unsigned char) hex[n - 1]))
			hex[--n] = '\0';
		ok = parse_kek_hex(hex, k);
		explicit_bzero(hex, sizeof(hex));
	}
	else
		ok = parse_kek_hex(setting, k);
	if (ok)
		strlcpy(k->source, setting, sizeof(k->source));
	return ok;
}

static Kek *
current_kek(void)
{
	if (kek_setting == NULL || kek_setting[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_ES_NO_KEK),
				 errmsg("no key-encryption key is configured"),
				 errdetail("Protected personal data needs event_store.key_encryption_key to wrap and unwrap subject keys."),
				 errhint("Set event_store.key_encryption_key to 'file:' and the path of a file holding 64 hexadecimal digits, in postgresql.conf, and reload.")));
	if (!parse_kek(kek_setting, &kek_current))
		ereport(ERROR,
				(errcode(ERRCODE_ES_NO_KEK),
				 errmsg("event_store.key_encryption_key is not valid"),
				 errdetail("It must be 64 hexadecimal digits (32 bytes), or \"file:\" and the path of a file holding them."),
				 errhint("Generate one with: openssl rand -hex 32")));
	return &kek_current;
}

static Kek *
previous_kek(void)
{
	if (previous_kek_setting == NULL || previous_kek_setting[0] == '\0')
		return NULL;
	if (!parse_kek(previous_kek_setting, &kek_previous))
		ereport(ERROR,
				(errcode(ERRCODE_ES_NO_KEK),
				 errmsg("event_store.previous_key_encryption_key is not valid"),
				 errdetail("It must be 64 hexadecimal digits (32 bytes), or \"file:\" and the path of a file holding them.")));
	return &kek_previous;
}

/* KEK subkeys in the layout seal() wants */
static void
kek_material(const Kek *k, uint8 *out)
{
	memcpy(out, k->enc, HALF_KEY);
	memcpy(out + HALF_KEY, k->mac, HALF_KEY);
}

static bytea *
wrap_key(const Kek *k, const pg_uuid_t *key_id, const uint8 *key)
{
	uint8		m[KEY_BYTES];
	uint8	   *w;
	int			wlen;
	bytea	   *r;

	kek_material(k, m);
	w = seal(m, key_id->data, UUID_LEN, key, KEY_BYTES, &wlen);
	explicit_bzero(m, sizeof(m));
	r = make_bytea(w, wlen);
	pfree(w);
	return r;
}

static void
unwrap_key(const char *kek_id, const pg_uuid_t *key_id, bytea *wrapped, uint8 *key)
{
	Kek		   *k = current_kek();
	uint8		m[KEY_BYTES];
	bytea	   *plain;
	char	   *id = format_uuid(key_id);

	if (strcmp(k->id, kek_id) != 0)
	{
		k = previous_kek();
		if (k == NULL || strcmp(k->id, kek_id) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_ES_NO_KEK),
					 errmsg("a subject key is wrapped with an unknown key-encryption key"),
					 errdetail("Subject key %s was wrapped with the key-encryption key with id %s; the configured one has id %s.",
							   id, kek_id, current_kek()->id),
					 errhint("Set event_store.previous_key_encryption_key to the old key and run event_store.rewrap_keys().")));
	}
	kek_material(k, m);
	plain = unseal(m, key_id->data, UUID_LEN, (uint8 *) VARDATA_ANY(wrapped),
				   VARSIZE_ANY_EXHDR(wrapped));
	explicit_bzero(m, sizeof(m));
	if (plain == NULL || VARSIZE_ANY_EXHDR(plain) != KEY_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_ES_CIPHERTEXT_AUTHENTICATION),
				 errmsg("a wrapped subject key failed authentication"),
				 errdetail("Subject key %s was altered, or was not wrapped by this key-encryption key.", id)));
	memcpy(key, VARDATA_ANY(plain), KEY_BYTES);
	explicit_bzero(VARDATA_ANY(plain), KEY_BYTES);
}

/* ---------------------------------------------------------------------
 * Paths
 * ---------------------------------------------------------------------
 */

/*
 * Parse a path "$.a.b": "$" followed by one or more ".member", a member
 * being letters, digits, "_" or "-".  Returns false when it is not one.
 */
static bool
parse_path(const char *s, JsonPath *p)
{
	const char *c = s;
	char	   *keys[MAX_PATH_DEPTH];
	int			depth = 0;

	if (c[0] != '$' || c[1] != '.')
		return false;
	c++;
	while (*c == '.')
	{
		const char *start = ++c;

		while (isalnum((unsigned char) *c) || *c == '_' || *c == '-')
			c++;
		if (c == start || depth == MAX_PATH_DEPTH)
			return false;
		keys[depth++] = pnstrdup(start, c - start);
	}
	if (*c != '\0')
		return false;
	p->text = pstrdup(s);
	p->depth = depth;
	p->keys = palloc(sizeof(char *) * depth);
	memcpy(p->keys, keys, sizeof(char *) * depth);
	return true;
}

static void
check_path(const char *s, JsonPath *p, const char *what)
{
	if (strlen(s) > ES_MAX_ID_BYTES || !parse_path(s, p))
		ereport(ERROR,
				(errcode(ERRCODE_ES_INVALID_PATH),
				 errmsg("invalid %s path \"%s\"", what, strlen(s) > 64 ? "(too long)" : s),
				 errdetail("A path is \"$\" followed by one or more \".member\" (letters, digits, \"_\", \"-\"), at most %d deep.",
						   MAX_PATH_DEPTH),
				 errhint("For example '$.email' or '$.owner.name'.")));
}

/* Is a a prefix path of b (or equal)? */
static bool
path_prefix(const JsonPath *a, const JsonPath *b)
{
	int			i;

	if (a->depth > b->depth)
		return false;
	for (i = 0; i < a->depth; i++)
		if (strcmp(a->keys[i], b->keys[i]) != 0)
			return false;
	return true;
}

/* The value at the path, or NULL. */
static JsonbValue *
path_get(Jsonb *jb, const JsonPath *p)
{
	JsonbContainer *c = &jb->root;
	JsonbValue *v = NULL;
	int			i;

	for (i = 0; i < p->depth; i++)
	{
		JsonbValue	k;

		if (!JsonContainerIsObject(c))
			return NULL;
		k.type = jbvString;
		k.val.string.val = p->keys[i];
		k.val.string.len = strlen(p->keys[i]);
		v = findJsonbValueFromContainer(c, JB_FOBJECT, &k);
		if (v == NULL)
			return NULL;
		if (i + 1 < p->depth)
		{
			if (v->type != jbvBinary)
				return NULL;
			c = v->val.binary.data;
		}
	}
	return v;
}

/*
 * Push a replacement value: a scalar as itself, a container as binary.
 */
static void
push_replacement(JsonbParseState **st, Jsonb *value)
{
	JsonbValue	v;

	if (JB_ROOT_IS_SCALAR(value))
		JsonbExtractScalar(&value->root, &v);
	else
	{
		v.type = jbvBinary;
		v.val.binary.data = &value->root;
		v.val.binary.len = VARSIZE(value) - VARHDRSZ;
	}
	(void) pushJsonbValue(st, WJB_VALUE, &v);
}

/*
 * Rebuild the object container c (at depth `depth` of the paths) with the
 * values at the n paths replaced by vals: one pass over the document for
 * all fields, instead of one jsonb_set() per field.  Paths that do not
 * exist are ignored.
 */
static JsonbValue *
rebuild_object(JsonbParseState **st, JsonbContainer *c, int depth, int n,
			   const JsonPath **paths, Jsonb **vals)
{
	JsonbIterator *it = JsonbIteratorInit(c);
	JsonbValue	v;
	JsonbIteratorToken tok;
	JsonbValue *res = NULL;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		int			i;
		int			deeper = 0;
		int			replace = -1;
		JsonbValue	key;

		if (tok != WJB_KEY)
		{
			res = pushJsonbValue(st, tok, tok < WJB_BEGIN_ARRAY ? &v : NULL);
			continue;
		}
		key = v;
		for (i = 0; i < n; i++)
		{
			const JsonPath *p = paths[i];

			if (p->depth > depth && strlen(p->keys[depth]) == (size_t) key.val.string.len &&
				memcmp(p->keys[depth], key.val.string.val, key.val.string.len) == 0)
			{
				if (p->depth == depth + 1)
					replace = i;
				else
					deeper++;
			}
		}
		(void) pushJsonbValue(st, WJB_KEY, &key);
		tok = JsonbIteratorNext(&it, &v, true);
		Assert(tok == WJB_VALUE);
		if (replace >= 0)
			push_replacement(st, vals[replace]);
		else if (deeper > 0 && v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data))
		{
			/* only the paths going through this key, one level down */
			const JsonPath **sub = palloc(sizeof(JsonPath *) * deeper);
			Jsonb	  **subv = palloc(sizeof(Jsonb *) * deeper);
			int			m = 0;

			for (i = 0; i < n; i++)
				if (paths[i]->depth > depth + 1 &&
					strlen(paths[i]->keys[depth]) == (size_t) key.val.string.len &&
					memcmp(paths[i]->keys[depth], key.val.string.val, key.val.string.len) == 0)
				{
					sub[m] = paths[i];
					subv[m++] = vals[i];
				}
			rebuild_object(st, v.val.binary.data, depth + 1, m, sub, subv);
		}
		else
			(void) pushJsonbValue(st, WJB_VALUE, &v);
	}
	return res;
}

static Jsonb *
replace_paths(Jsonb *doc, int n, const JsonPath **paths, Jsonb **vals)
{
	JsonbParseState *st = NULL;

	if (n == 0)
		return doc;
	return JsonbValueToJsonb(rebuild_object(&st, &doc->root, 0, n, paths, vals));
}

static char *
jsonb_value_text(JsonbValue *v, int *len)
{
	StringInfoData buf;

	if (v->type == jbvBinary)
	{
		initStringInfo(&buf);
		JsonbToCString(&buf, v->val.binary.data, v->val.binary.len);
	}
	else
	{
		Jsonb	   *j = JsonbValueToJsonb(v);

		initStringInfo(&buf);
		JsonbToCString(&buf, &j->root, VARSIZE(j));
	}
	*len = buf.len;
	return buf.data;
}

static Jsonb *
jsonb_string(const char *s, int len)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) s;
	v.val.string.len = len;
	return JsonbValueToJsonb(&v);
}

static Jsonb *
jsonb_null(void)
{
	JsonbValue	v;

	v.type = jbvNull;
	return JsonbValueToJsonb(&v);
}

/* ---------------------------------------------------------------------
 * Rules
 * ---------------------------------------------------------------------
 */

static Snapshot
fresh_snapshot(void)
{
	return GetLatestSnapshot();
}

static void
load_rules(void)
{
	const CryptoCatalog *c = crypto_catalog();
	HASHCTL		ctl;
	Relation	rel;
	SysScanDesc scan;
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
	scan = systable_beginscan(rel, InvalidOid, false, fresh_snapshot(), 0, NULL);
	while ((tup = systable_getnext(scan)) != NULL)
	{
		Datum		v[3];
		bool		n[3];
		char	   *type;
		RuleEntry  *e;
		ArrayType  *arr;
		Datum	   *elems;
		bool	   *enulls;
		int			nelems;
		int			i;

		heap_deform_tuple(tup, RelationGetDescr(rel), v, n);
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
		e->corrupt = !parse_path(TextDatumGetCString(v[1]), &e->subject);
		arr = DatumGetArrayTypeP(v[2]);
		if (!e->corrupt && ARR_NDIM(arr) == 1 && ARR_ELEMTYPE(arr) == TEXTOID)
		{
			deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &nelems);
			e->fields = palloc(sizeof(JsonPath) * Max(nelems, 1));
			e->corrupt = (nelems == 0 || nelems > MAX_FIELDS);
			for (i = 0; i < nelems && !e->corrupt; i++)
			{
				int			j;

				e->corrupt = enulls[i] || !parse_path(TextDatumGetCString(elems[i]), &e->fields[i]);
				for (j = 0; j < i && !e->corrupt; j++)
					e->corrupt = path_prefix(&e->fields[j], &e->fields[i]) ||
						path_prefix(&e->fields[i], &e->fields[j]);
			}
			e->nfields = e->corrupt ? 0 : nelems;
		}
		else
			e->corrupt = true;
		MemoryContextSwitchTo(old);
		nrules++;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
}

static RuleEntry *
find_rule(text *event_type)
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

/* ---------------------------------------------------------------------
 * Keys
 * ---------------------------------------------------------------------
 */

static void
ensure_key_caches(void)
{
	HASHCTL		ctl;

	if (keys != NULL)
		return;
	ctl.keysize = sizeof(pg_uuid_t);
	ctl.entrysize = sizeof(KeyEntry);
	ctl.hcxt = CacheMemoryContext;
	keys = hash_create("event_store subject keys", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.keysize = PG_SHA256_DIGEST_LENGTH;
	ctl.entrysize = sizeof(SubjectEntry);
	subjects = hash_create("event_store subjects", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/*
 * Fetch one row of one of our tables through a unique index, by its first
 * column (eqproc: the equality of its type), with the snapshot.  Returns a
 * copy of the tuple or NULL.  With a dirty snapshot, a row that a
 * transaction in progress is inserting or deleting is not returned:
 * *wait_for is set to that transaction instead, for the caller to wait for
 * (holding no lock of ours) before it looks again.
 */
static HeapTuple
fetch_by_index(Oid relid, Oid indexid, RegProcedure eqproc, Datum value, Snapshot snapshot,
			   TupleDesc *desc, TransactionId *wait_for)
{
	Relation	rel = table_open(relid, AccessShareLock);
	Relation	idx = index_open(indexid, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	ScanKeyData key;
	IndexScanDesc scan;
	HeapTuple	found = NULL;
	bool		dirty = (snapshot->snapshot_type == SNAPSHOT_DIRTY);

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, eqproc, value);
	scan = index_beginscan(rel, idx, snapshot, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		if (dirty && (TransactionIdIsValid(snapshot->xmin) || TransactionIdIsValid(snapshot->xmax)))
		{
			*wait_for = TransactionIdIsValid(snapshot->xmin) ? snapshot->xmin : snapshot->xmax;
			if (found)
				heap_freetuple(found);
			found = NULL;
			break;
		}
		if (found == NULL)
			found = ExecCopySlotHeapTuple(slot);
		if (!dirty)
			break;
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, AccessShareLock);
	if (desc)
		*desc = RelationGetDescr(rel);
	table_close(rel, AccessShareLock);
	return found;
}

/* with the latest snapshot */
static HeapTuple
fetch_row(Oid relid, Oid indexid, RegProcedure eqproc, Datum value, TupleDesc *desc)
{
	return fetch_by_index(relid, indexid, eqproc, value, fresh_snapshot(), desc, NULL);
}

/* with a dirty snapshot (see fetch_by_index) */
static HeapTuple
fetch_settled_row(Oid relid, Oid indexid, RegProcedure eqproc, Datum value,
				  TupleDesc *desc, TransactionId *wait_for)
{
	SnapshotData dirty;

	InitDirtySnapshot(dirty);
	return fetch_by_index(relid, indexid, eqproc, value, &dirty, desc, wait_for);
}

/*
 * The index finding a subject's key, by the SHA-256 of the subject.  A
 * library of 0.2.0 over the tables of 0.1.0 (installed, not yet updated)
 * appends and reads, but creates, finds by subject and forgets no key until
 * the update.
 */
static Oid
keys_by_subject(const CryptoCatalog *c)
{
	if (!OidIsValid(c->keys_hash))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the personal-data tables of extension \"event_store\" are those of version 0.1.0"),
				 errdetail("This library finds subject keys through the index subject_keys_subject_hash of version 0.2.0."),
				 errhint("Run ALTER EXTENSION event_store UPDATE.")));
	return c->keys_hash;
}

/* Columns of subject_keys */
#define Anum_keys_key_id		1
#define Anum_keys_subject		2
#define Anum_keys_wrapped_key	3
#define Anum_keys_kek_id		4
#define Natts_keys				5

/*
 * The key with this id into *key; false when it does not exist (forgotten).
 */
static bool
get_key(const pg_uuid_t *key_id, uint8 *key)
{
	const CryptoCatalog *c = crypto_catalog();
	KeyEntry   *e;
	bool		found;

	ensure_key_caches();
	e = hash_search(keys, key_id, HASH_FIND, &found);
	if (!found)
	{
		TupleDesc	desc;
		HeapTuple	tup = fetch_row(c->keys_relid, c->keys_pkey, F_UUID_EQ,
									UUIDPGetDatum(key_id), &desc);
		uint8		k[KEY_BYTES];
		bool		exists = false;

		if (tup)
		{
			Datum		v[Natts_keys];
			bool		n[Natts_keys];

			heap_deform_tuple(tup, desc, v, n);
			unwrap_key(TextDatumGetCString(v[Anum_keys_kek_id - 1]), key_id,
					   DatumGetByteaPP(v[Anum_keys_wrapped_key - 1]), k);
			exists = true;
		}
		ensure_key_caches();	/* an invalidation may have dropped them meanwhile */
		e = hash_search(keys, key_id, HASH_ENTER, NULL);
		e->exists = exists;
		if (exists)
			memcpy(e->key, k, KEY_BYTES);
		explicit_bzero(k, sizeof(k));
	}
	if (e->exists)
		memcpy(key, e->key, KEY_BYTES);
	return e->exists;
}

/*
 * Serialise key creation and forget() for one subject: an ExclusiveLock on
 * the subject's lock tag (advisory class, field4 = ES_LOCKTAG_SUBJECT, key =
 * 64 bits of its SHA-256), from the checks (tombstone, key) to the write
 * (key, or tombstone and deletion); one at a time per backend (locks.c).
 * Later, a transaction in progress is found by its rows and waited for.
 */
static void
lock_subject(const uint8 *hash)
{
	uint64		key;

	memcpy(&key, hash, sizeof(key));
	es_lock_take(&subject_lock, ES_LOCKTAG_SUBJECT, key);
}

/*
 * Is there a tombstone for the subject?  Under the subject's lock, with
 * *wait_for set (and false returned) when a forget() in progress is writing
 * it.
 */
static bool
is_forgotten(const uint8 *hash, TransactionId *wait_for)
{
	const CryptoCatalog *c = crypto_catalog();
	HeapTuple	tup = fetch_settled_row(c->tomb_relid, c->tomb_pkey, F_BYTEAEQ,
										PointerGetDatum(make_bytea(hash, PG_SHA256_DIGEST_LENGTH)),
										NULL, wait_for);

	return tup != NULL;
}

/*
 * Under the subject's lock: whether the subject is forgotten, and its key
 * row (or NULL), once no transaction in progress is writing either.
 */
static bool
settled_subject(const uint8 *hash, HeapTuple *key_row, TupleDesc *desc)
{
	const CryptoCatalog *c = crypto_catalog();

	for (;;)
	{
		TransactionId wait_for = InvalidTransactionId;
		bool		forgotten;

		lock_subject(hash);
		forgotten = is_forgotten(hash, &wait_for);
		*key_row = NULL;
		if (!TransactionIdIsValid(wait_for))
			*key_row = fetch_settled_row(c->keys_relid, keys_by_subject(c), F_BYTEAEQ,
										 PointerGetDatum(make_bytea(hash, PG_SHA256_DIGEST_LENGTH)),
										 desc, &wait_for);
		if (!TransactionIdIsValid(wait_for))
			return forgotten;
		es_lock_release(&subject_lock);
		XactLockTableWait(wait_for, NULL, NULL, XLTW_None);
	}
}

/*
 * The key id of the subject (whose SHA-256 is hash), creating a random key on
 * first use.  A forgotten subject is refused.
 */
static void
subject_key(text *subject, const uint8 *hash, pg_uuid_t *key_id)
{
	const CryptoCatalog *c = crypto_catalog();
	SubjectEntry *se;
	bool		found;
	HeapTuple	tup;
	TupleDesc	desc;

	ensure_key_caches();
	se = hash_search(subjects, hash, HASH_FIND, &found);
	if (found)
	{
		*key_id = se->key_id;
		return;
	}

	tup = fetch_row(c->keys_relid, keys_by_subject(c), F_BYTEAEQ,
					PointerGetDatum(make_bytea(hash, PG_SHA256_DIGEST_LENGTH)), &desc);
	if (tup == NULL &&
		settled_subject(hash, &tup, &desc))
		ereport(ERROR,
				(errcode(ERRCODE_ES_SUBJECT_FORGOTTEN),
				 errmsg("the subject of this event has been forgotten"),
				 errdetail("event_store.forget() erased the subject's key; events about it cannot be appended any more."),
				 errhint("Do not record personal data of a subject that exercised the right to be forgotten.")));
	if (tup == NULL)
	{
		/* first use: a new random key, wrapped */
		uint8		k[KEY_BYTES];
		Kek		   *kek = current_kek();
		Datum		args[4];
		Oid			types[4] = {UUIDOID, TEXTOID, BYTEAOID, TEXTOID};
		int			rc;
		EsOwnerSave owner;

		random_bytes(key_id->data, UUID_LEN);
		key_id->data[6] = (key_id->data[6] & 0x0f) | 0x40;
		key_id->data[8] = (key_id->data[8] & 0x3f) | 0x80;
		random_bytes(k, KEY_BYTES);
		args[0] = UUIDPGetDatum(key_id);
		args[1] = PointerGetDatum(subject);
		args[2] = PointerGetDatum(wrap_key(kek, key_id, k));
		args[3] = CStringGetTextDatum(kek->id);
		explicit_bzero(k, sizeof(k));
		es_owner_begin(&owner);
		SPI_connect();
		rc = SPI_execute_with_args("INSERT INTO event_store.subject_keys (key_id, subject, wrapped_key, kek_id) "
								   "VALUES ($1, $2, $3, $4) ON CONFLICT (event_store._subject_hash(subject)) DO NOTHING",
								   4, types, args, NULL, false, 0);
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "could not store a subject key: %s", SPI_result_code_string(rc));
		SPI_finish();
		es_owner_end(&owner);
		/* a concurrent first use may have won: use what is stored */
		tup = fetch_row(c->keys_relid, keys_by_subject(c), F_BYTEAEQ,
						PointerGetDatum(make_bytea(hash, PG_SHA256_DIGEST_LENGTH)), &desc);
		if (tup == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to a concurrent creation of a subject key"),
					 errhint("The transaction might succeed if retried.")));
	}
	/* the key row is in the indexes: its lock has served */
	es_lock_release(&subject_lock);
	{
		bool		isnull;

		*key_id = *DatumGetUUIDP(heap_getattr(tup, Anum_keys_key_id, desc, &isnull));
	}
	ensure_key_caches();		/* an invalidation may have dropped them meanwhile */
	se = hash_search(subjects, hash, HASH_ENTER, NULL);
	se->key_id = *key_id;
}

/* ---------------------------------------------------------------------
 * Field encryption
 * ---------------------------------------------------------------------
 */

/* associated data of a field's ciphertext: version byte, key id, path */
static uint8 *
field_ad(const pg_uuid_t *key_id, const char *path, int *len)
{
	int			plen = strlen(path);
	uint8	   *ad = palloc(1 + UUID_LEN + plen);

	ad[0] = 1;
	memcpy(ad + 1, key_id->data, UUID_LEN);
	memcpy(ad + 1 + UUID_LEN, path, plen);
	*len = 1 + UUID_LEN + plen;
	return ad;
}

static Jsonb *
encrypt_field(const uint8 *key, const pg_uuid_t *key_id, const char *path, JsonbValue *v)
{
	int			plen;
	char	   *plain = jsonb_value_text(v, &plen);
	int			adlen;
	uint8	   *ad = field_ad(key_id, path, &adlen);
	int			clen;
	uint8	   *ct = seal(key, ad, adlen, (uint8 *) plain, plen, &clen);
	int			blen = pg_b64_enc_len(clen);
	char	   *b64 = palloc(blen + 1);

	explicit_bzero(plain, plen);
	blen = pg_b64_encode((char *) ct, clen, b64, blen);
	if (blen < 0)
		elog(ERROR, "could not encode a ciphertext");
	return jsonb_string(b64, blen);
}

/*
 * Decrypt one field; raises VE031 when it does not authenticate.
 */
static void *
copy_varlena(void *v)
{
	void	   *c = palloc(VARSIZE(v));

	memcpy(c, v, VARSIZE(v));
	return c;
}

static Jsonb *
decrypt_field(const uint8 *key, const pg_uuid_t *key_id, const char *path, JsonbValue *v,
			  const Datum *event_id)
{
	uint8	   *ct;
	int			clen = -1;
	bytea	   *plain = NULL;
	Jsonb	   *result;
	uint64		h = 0;
	PlainEntry *pe = NULL;

	if (v->type == jbvString)
	{
		bool		found;

		if (plain_cache == NULL)
		{
			HASHCTL		ctl;

			plain_cxt = AllocSetContextCreate(CacheMemoryContext, "event_store decrypted values",
											  ALLOCSET_DEFAULT_SIZES);
			ctl.keysize = sizeof(uint64);
			ctl.entrysize = sizeof(PlainEntry);
			ctl.hcxt = plain_cxt;
			plain_cache = hash_create("event_store decrypted values", 1024, &ctl,
									  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		}
		h = hash_bytes_extended((const unsigned char *) v->val.string.val, v->val.string.len, 0);
		pe = hash_search(plain_cache, &h, HASH_FIND, &found);
		if (found && pe->ctlen == v->val.string.len &&
			memcmp(pe->ct, v->val.string.val, pe->ctlen) == 0 &&
			memcmp(pe->key_id.data, key_id->data, UUID_LEN) == 0 &&
			strcmp(pe->path, path) == 0)
			return copy_varlena(pe->plain);	/* the cache may go before it is used */

		ct = palloc(pg_b64_dec_len(v->val.string.len) + 1);
		clen = pg_b64_decode(v->val.string.val, v->val.string.len, (char *) ct,
							 pg_b64_dec_len(v->val.string.len));
		if (clen >= 0)
		{
			int			adlen;
			uint8	   *ad = field_ad(key_id, path, &adlen);

			plain = unseal(key, ad, adlen, ct, clen);
		}
	}
	if (plain == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_ES_CIPHERTEXT_AUTHENTICATION),
				 errmsg("protected field %s of %s failed authentication", path,
						event_id ? psprintf("event %s", format_uuid(DatumGetUUIDP(*event_id))) : "the stored event"),
				 errdetail("The stored ciphertext was altered or truncated, or belongs to another field or subject."),
				 errhint("Restore the event from a backup; the log must not be modified.")));
	{
		char	   *json = text_to_cstring((text *) plain);

		result = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
		explicit_bzero(json, strlen(json));
	}
	explicit_bzero(VARDATA_ANY(plain), VARSIZE_ANY_EXHDR(plain));

	/* remember it (unless an invalidation dropped the cache meanwhile) */
	if (plain_bytes > PLAIN_CACHE_BYTES)
		drop_plain_cache();
	else if (plain_cache != NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(plain_cxt);

		pe = hash_search(plain_cache, &h, HASH_ENTER, NULL);
		pe->key_id = *key_id;
		pe->path = pstrdup(path);
		pe->ctlen = v->val.string.len;
		pe->ct = pnstrdup(v->val.string.val, v->val.string.len);
		pe->plain = palloc(VARSIZE(result));
		memcpy(pe->plain, result, VARSIZE(result));
		plain_bytes += sizeof(PlainEntry) + pe->ctlen + VARSIZE(result) + strlen(path) + 64;
		MemoryContextSwitchTo(old);
	}
	return result;
}

/* The last metadata marker read_marker() parsed. */
static struct
{
	int			len;			/* 0: none */
	char	   *bytes;
	pg_uuid_t	key_id;
	List	   *paths;
}			marker_memo;
static MemoryContext marker_cxt = NULL;

static bool
metadata_marker(Jsonb *metadata, JsonbValue *out)
{
	JsonbValue	k;
	JsonbValue *v;

	if (!JB_ROOT_IS_OBJECT(metadata))
		return false;
	k.type = jbvString;
	k.val.string.val = PROTECTED_KEY;
	k.val.string.len = strlen(PROTECTED_KEY);
	v = findJsonbValueFromContainer(&metadata->root, JB_FOBJECT, &k);
	if (v == NULL)
		return false;
	if (out)
		*out = *v;
	return true;
}

/*
 * Called by the BEFORE INSERT trigger (versioning.c) after validation, on
 * the row being inserted (Natts_events values): encrypts the protected
 * fields of data and marks the metadata.  An event of a type without a rule
 * costs one hash lookup.
 */
void
es_protect_event(Datum *values, bool *nulls)
{
	text	   *event_type = DatumGetTextPP(values[Anum_events_event_type - 1]);
	Jsonb	   *data = DatumGetJsonbP(values[Anum_events_data - 1]);
	Jsonb	   *metadata = DatumGetJsonbP(values[Anum_events_metadata - 1]);
	RuleEntry  *rule;
	JsonbValue *sv;
	char	   *subject;
	int			slen;
	uint8		hash[PG_SHA256_DIGEST_LENGTH];
	pg_uuid_t	key_id;
	uint8		key[KEY_BYTES];
	int			done = 0;
	int			i;
	char	   *id;
	StringInfoData fields;
	const JsonPath **paths;
	Jsonb	  **vals;

	(void) nulls;
	if (metadata_marker(metadata, NULL))
	{
		/* a restore or a replica copies events that are already protected */
		if (superuser())
			return;
		ereport(ERROR,
				(errcode(ERRCODE_ES_RESERVED_METADATA),
				 errmsg("metadata key \"%s\" is reserved", PROTECTED_KEY),
				 errdetail("event_store records in it which fields of an event are encrypted."),
				 errhint("Rename the key in the event's metadata.")));
	}

	rule = find_rule(event_type);
	if (rule == NULL)
		return;
	if (rule->corrupt)
		ereport(ERROR,
				(errcode(ERRCODE_ES_INVALID_PATH),
				 errmsg("the personal-data rule of event type \"%s\" is invalid", rule->event_type),
				 errdetail("Its row in event_store.protected_types was not written by event_store.protect(); events of the type are refused rather than stored in clear."),
				 errhint("Set the rule again with event_store.protect().")));

	sv = path_get(data, &rule->subject);
	if (sv == NULL || (sv->type != jbvString && sv->type != jbvNumeric))
		ereport(ERROR,
				(errcode(ERRCODE_ES_NO_SUBJECT),
				 errmsg("event of protected type \"%s\" has no subject at %s",
						rule->event_type, rule->subject.text),
				 errdetail("The subject path must name a string or a number in the event's data."),
				 errhint("Add the subject to the event, or change the rule with event_store.protect().")));
	if (sv->type == jbvString)
	{
		subject = pnstrdup(sv->val.string.val, sv->val.string.len);
		slen = sv->val.string.len;
	}
	else
	{
		/* a number is its shortest decimal form: 7, 7.0, 7.00 and 7e0 are the subject "7" */
		subject = DatumGetCString(DirectFunctionCall1(numeric_out,
													  DirectFunctionCall1(numeric_trim_scale,
																		  NumericGetDatum(sv->val.numeric))));
		slen = strlen(subject);
	}
	if (slen == 0 || slen > ES_MAX_ID_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_ES_NO_SUBJECT),
				 errmsg("subject at %s of an event of type \"%s\" is empty or too long",
						rule->subject.text, rule->event_type),
				 errdetail("A subject has 1 to %d bytes.", ES_MAX_ID_BYTES)));
	sha256((uint8 *) subject, slen, hash);
	subject_key(cstring_to_text_with_len(subject, slen), hash, &key_id);
	if (!get_key(&key_id, key))
		ereport(ERROR,
				(errcode(ERRCODE_ES_SUBJECT_FORGOTTEN),
				 errmsg("the subject of this event has been forgotten"),
				 errdetail("event_store.forget() erased the subject's key; events about it cannot be appended any more.")));

	initStringInfo(&fields);
	appendStringInfoChar(&fields, '[');
	paths = palloc(sizeof(JsonPath *) * rule->nfields);
	vals = palloc(sizeof(Jsonb *) * rule->nfields);
	for (i = 0; i < rule->nfields; i++)
	{
		JsonbValue *fv = path_get(data, &rule->fields[i]);

		if (fv == NULL)
			continue;
		paths[done] = &rule->fields[i];
		vals[done] = encrypt_field(key, &key_id, rule->fields[i].text, fv);
		if (done++ > 0)
			appendStringInfoChar(&fields, ',');
		escape_json(&fields, rule->fields[i].text);
	}
	appendStringInfoChar(&fields, ']');
	explicit_bzero(key, sizeof(key));
	if (done == 0)
		return;
	data = replace_paths(data, done, paths, vals);

	/* metadata || {"protected": {"key": id, "fields": [...]}} */
	id = format_uuid(&key_id);
	{
		StringInfoData m;

		initStringInfo(&m);
		appendStringInfo(&m, "{\"%s\": {\"key\": \"%s\", \"fields\": %s}}", PROTECTED_KEY, id, fields.data);
		metadata = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(metadata),
													  DirectFunctionCall1(jsonb_in, CStringGetDatum(m.data))));
	}
	values[Anum_events_data - 1] = JsonbPGetDatum(data);
	values[Anum_events_metadata - 1] = JsonbPGetDatum(metadata);
}

/*
 * Parse the metadata marker: key id and paths.  Returns false when there is
 * none.  A malformed marker is an error (only superusers can write one).
 */
static bool
read_marker(Jsonb *metadata, pg_uuid_t *key_id, List **paths)
{
	JsonbValue	mv;
	Jsonb	   *m;
	JsonbValue	k;
	JsonbValue *kv;
	JsonbValue *fv;
	JsonbIterator *it;
	JsonbValue	ev;
	JsonbIteratorToken tok;

	if (!metadata_marker(metadata, &mv))
		return false;
	*paths = NIL;
	if (mv.type != jbvBinary || !JsonContainerIsObject(mv.val.binary.data))
		goto bad;

	/*
	 * The events of a stream mostly carry the same marker (one subject, the
	 * same fields): remember the last one parsed, by its bytes.
	 */
	if (marker_memo.len == mv.val.binary.len &&
		memcmp(marker_memo.bytes, mv.val.binary.data, marker_memo.len) == 0)
	{
		*key_id = marker_memo.key_id;
		*paths = marker_memo.paths;
		return true;
	}
	m = JsonbValueToJsonb(&mv);
	k.type = jbvString;
	k.val.string.val = "key";
	k.val.string.len = 3;
	kv = findJsonbValueFromContainer(&m->root, JB_FOBJECT, &k);
	k.val.string.val = "fields";
	k.val.string.len = 6;
	fv = findJsonbValueFromContainer(&m->root, JB_FOBJECT, &k);
	if (kv == NULL || kv->type != jbvString || fv == NULL || fv->type != jbvBinary ||
		!JsonContainerIsArray(fv->val.binary.data))
		goto bad;
	{
		char	   *s = pnstrdup(kv->val.string.val, kv->val.string.len);
		Datum		u;

		/* uuid_in would echo bad input: check the shape first */
		if (strlen(s) != 36)
			goto bad;
		u = DirectFunctionCall1(uuid_in, CStringGetDatum(s));
		*key_id = *DatumGetUUIDP(u);
	}
	it = JsonbIteratorInit(fv->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &ev, true)) != WJB_DONE)
	{
		if (tok == WJB_ELEM)
		{
			JsonPath   *p = palloc(sizeof(JsonPath));
			char	   *s;

			if (ev.type != jbvString)
				goto bad;
			s = pnstrdup(ev.val.string.val, ev.val.string.len);
			if (!parse_path(s, p))
				goto bad;
			*paths = lappend(*paths, p);
		}
	}
	/* remember it (the paths are read-only for the callers) */
	if (marker_cxt == NULL)
		marker_cxt = AllocSetContextCreate(TopMemoryContext, "event_store protected marker",
										   ALLOCSET_SMALL_SIZES);
	MemoryContextReset(marker_cxt);
	marker_memo.len = 0;
	{
		MemoryContext old = MemoryContextSwitchTo(marker_cxt);
		List	   *copy = NIL;
		ListCell   *lc;

		foreach(lc, *paths)
		{
			JsonPath   *src = lfirst(lc);
			JsonPath   *dst = palloc(sizeof(JsonPath));
			int			i;

			dst->text = pstrdup(src->text);
			dst->depth = src->depth;
			dst->keys = palloc(sizeof(char *) * src->depth);
			for (i = 0; i < src->depth; i++)
				dst->keys[i] = pstrdup(src->keys[i]);
			copy = lappend(copy, dst);
		}
		marker_memo.bytes = palloc(mv.val.binary.len);
		memcpy(marker_memo.bytes, mv.val.binary.data, mv.val.binary.len);
		marker_memo.key_id = *key_id;
		marker_memo.paths = copy;
		marker_memo.len = mv.val.binary.len;
		MemoryContextSwitchTo(old);
	}
	return true;
bad:
	ereport(ERROR,
			(errcode(ERRCODE_ES_CIPHERTEXT_AUTHENTICATION),
			 errmsg("malformed \"%s\" marker in an event's metadata", PROTECTED_KEY),
			 errdetail("It must be an object with a key id and an array of paths, as event_store writes it.")));
	return false;
}

/*
 * Decrypt (or redact) data.  permitted: whether to decrypt at all.  Returns
 * the new data; *redacted is set when the fields were nulled, with the reason.
 */
static Jsonb *
reveal(Jsonb *data, const pg_uuid_t *key_id, List *paths, bool permitted,
	   const char **redacted, const Datum *event_id)
{
	uint8		key[KEY_BYTES];
	bool		have_key = permitted && get_key(key_id, key);
	const JsonPath **ps = palloc(sizeof(JsonPath *) * list_length(paths));
	Jsonb	  **vals = palloc(sizeof(Jsonb *) * list_length(paths));
	int			n = 0;
	ListCell   *lc;

	*redacted = NULL;
	if (!have_key)
		*redacted = permitted ? "forgotten" : "not permitted";
	foreach(lc, paths)
	{
		JsonPath   *p = lfirst(lc);
		JsonbValue *v = path_get(data, p);

		if (v == NULL)
			continue;
		ps[n] = p;
		vals[n++] = have_key ? decrypt_field(key, key_id, p->text, v, event_id) : jsonb_null();
	}
	explicit_bzero(key, sizeof(key));
	return replace_paths(data, n, ps, vals);
}

/*
 * May the current role read protected fields in clear?  Those with EXECUTE
 * on event_store.personal_data_access() may; cached per role.
 */
static bool
may_read_personal_data(void)
{
	Oid			user = GetUserId();

	if (access_checked_user != user)
	{
		Oid			argtypes[1];
		Oid			fn = LookupFuncName(list_make2(makeString("event_store"),
												   makeString("personal_data_access")),
										0, argtypes, true);

		access_granted = OidIsValid(fn) &&
			pg_proc_aclcheck(fn, user, ACL_EXECUTE) == ACLCHECK_OK;
		access_checked_user = user;
	}
	return access_granted;
}

/*
 * For other modules (snapshots): may the current role read personal data?
 */
bool
es_may_read_personal_data(void)
{
	return may_read_personal_data();
}

/*
 * Called by es_present_event() (read.c) on every event handed to a reader
 * (values/nulls: an event_store.event).  An event without the metadata
 * marker costs one key lookup in its metadata.
 */
void
es_decrypt_event(Datum *values, bool *nulls)
{
	static MemoryContext work = NULL;
	MemoryContext caller = CurrentMemoryContext;
	Jsonb	   *metadata;
	Jsonb	   *data;
	pg_uuid_t	key_id;
	List	   *paths;
	const char *redacted;

	/*
	 * Inside logical decoding the key table cannot be read (it is no
	 * catalog): the output plugin hands protected fields on as stored,
	 * ciphertext that no consumer can read.  Decrypting consumers read with
	 * read_all.
	 */
	if (es_presenting_in_decoding)
		return;
	if (nulls[Anum_events_metadata] || nulls[Anum_events_data])
		return;

	/*
	 * The fast path for the events nobody protected: a marker is the key
	 * "protected", stored verbatim in the jsonb; an inline, uncompressed
	 * metadata value without those bytes has none, and is not even copied.
	 */
	{
		struct varlena *raw = (struct varlena *) DatumGetPointer(values[Anum_events_metadata]);

		if (!VARATT_IS_EXTERNAL(raw) && !VARATT_IS_COMPRESSED(raw) &&
			memmem(VARDATA_ANY(raw), VARSIZE_ANY_EXHDR(raw), "protected", 9) == NULL)
			return;
	}
	metadata = DatumGetJsonbP(values[Anum_events_metadata]);
	if (!JB_ROOT_IS_OBJECT(metadata) || !metadata_marker(metadata, NULL))
		return;

	/*
	 * The work (decoding, pgcrypto's results, jsonb rebuilt per field) in a
	 * context of our own, reset per event; only the results are copied out.
	 */
	if (work == NULL)
		work = AllocSetContextCreate(TopMemoryContext, "event_store decryption",
									 64 * 1024, 64 * 1024, ALLOCSET_DEFAULT_MAXSIZE);
	MemoryContextReset(work);
	MemoryContextSwitchTo(work);
	read_marker(metadata, &key_id, &paths);
	data = reveal(DatumGetJsonbP(values[Anum_events_data]), &key_id, paths,
				  may_read_personal_data(), &redacted,
				  nulls[Anum_events_event_id] ? NULL : &values[Anum_events_event_id]);
	if (redacted)
	{
		StringInfoData m;

		initStringInfo(&m);
		appendStringInfo(&m, "{\"%s\": \"%s\"}", REDACTED_KEY, redacted);
		metadata = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(metadata),
													  DirectFunctionCall1(jsonb_in, CStringGetDatum(m.data))));
	}
	MemoryContextSwitchTo(caller);
	values[Anum_events_data] = PointerGetDatum(copy_varlena(data));
	if (redacted)
		values[Anum_events_metadata] = PointerGetDatum(copy_varlena(metadata));
}

/*
 * The stored data of an event in clear, for the trigger's idempotency check
 * (a re-sent event is compared with what was appended, not with its
 * ciphertext).  Unlike a reader's, this ignores the caller's right to read
 * personal data: the result is only compared, never returned.
 */
Datum
es_plain_data(Datum data, Datum metadata)
{
	pg_uuid_t	key_id;
	List	   *paths;
	const char *redacted;

	if (!read_marker(DatumGetJsonbP(metadata), &key_id, &paths))
		return data;
	return JsonbPGetDatum(reveal(DatumGetJsonbP(data), &key_id, paths, true, &redacted, NULL));
}

/*
 * At commit of a transaction that called forget(): overwrite, in place, the
 * wrapped key (with zeros) and the subject (with "x") of every key row it
 * deleted.  A deleted row stays in the heap until vacuum, and vacuum only
 * marks its space free without clearing it: without this, the wrapped key
 * could stay in the table's files, readable with the key-encryption key.
 * The overwrite is WAL-logged, so standbys overwrite it too.  Not
 * transactional: it runs at pre-commit, after which the transaction can no
 * longer abort short of a crash.
 */
static void
overwrite_varlena(char *p, int c)
{
	/* a key row's values are small: stored inline, never compressed */
	if (VARATT_IS_SHORT(p))
		memset(VARDATA_SHORT(p), c, VARSIZE_SHORT(p) - VARHDRSZ_SHORT);
	else if (VARATT_IS_4B_U(p))
		memset(VARDATA(p), c, VARSIZE(p) - VARHDRSZ);
	else
		elog(ERROR, "unexpected compressed or external value in event_store.subject_keys");
}

static void
scrub_forgotten_keys(void)
{
	const CryptoCatalog *c = crypto_catalog();
	Relation	rel = table_open(c->keys_relid, RowExclusiveLock);
	ListCell   *lc;

	foreach(lc, pending_scrubs)
	{
		PendingScrub *ps = lfirst(lc);

		scrub_key_row(rel, &ps->tid);
	}
	table_close(rel, RowExclusiveLock);
	pending_scrubs = NIL;
}

/*
 * Are forgotten keys overwritten after commit, by the pipeline worker?  Yes
 * where it runs (preloaded, wal_level logical, the pipeline enabled) and the
 * installed version has the queue; otherwise at pre-commit, in this backend.
 */
static bool
scrub_after_commit(void)
{
	Oid			nsp = get_namespace_oid("event_store", true);

	return es_pipeline_available() && es_pipeline_enabled && OidIsValid(nsp) &&
		OidIsValid(get_relname_relid("key_scrubs", nsp));
}

/*
 * Overwrite what is left of a deleted key row: the row itself, in place,
 * if it is still there (WAL-logged), and the free space of its page, where a
 * vacuum or a prune may have left its bytes (a full-page image in the WAL:
 * a replayed page gets its free space zeroed too).
 */
static void
scrub_key_row(Relation rel, ItemPointer tid)
{
	TupleDesc	desc = RelationGetDescr(rel);
	HeapTupleData tuple;
	Buffer		buf;
	Page		page;
	PageHeader	ph;

	if (ItemPointerGetBlockNumber(tid) >= RelationGetNumberOfBlocks(rel))
		return;					/* truncated away by vacuum: nothing left */
	tuple.t_self = *tid;
	if (heap_fetch(rel, SnapshotAny, &tuple, &buf, false))
	{
		HeapTuple	copy = heap_copytuple(&tuple);
		bool		isnull;
		Datum		d;

		ReleaseBuffer(buf);
		d = heap_getattr(copy, Anum_keys_wrapped_key, desc, &isnull);
		if (!isnull)
			overwrite_varlena(DatumGetPointer(d), 0);
		d = heap_getattr(copy, Anum_keys_subject, desc, &isnull);
		if (!isnull)
			overwrite_varlena(DatumGetPointer(d), 'x');
		heap_inplace_update(rel, copy);
		heap_freetuple(copy);
	}

	buf = ReadBuffer(rel, ItemPointerGetBlockNumber(tid));
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	page = BufferGetPage(buf);
	ph = (PageHeader) page;
	if (!PageIsNew(page) && ph->pd_lower <= ph->pd_upper && ph->pd_upper <= BLCKSZ)
	{
		START_CRIT_SECTION();
		memset((char *) page + ph->pd_lower, 0, ph->pd_upper - ph->pd_lower);
		MarkBufferDirty(buf);
		if (RelationNeedsWAL(rel))
			log_newpage_buffer(buf, true);
		END_CRIT_SECTION();
	}
	UnlockReleaseBuffer(buf);
}

/*
 * The pipeline worker's part of forget(): overwrite the key rows that
 * committed forgets deleted (event_store.key_scrubs), in a transaction of
 * its own.  Rows of a forget still in progress are not visible yet; those of
 * one that aborted never will be.
 */
void
es_scrub_forgotten_keys(void)
{
	const CryptoCatalog *c;
	Relation	rel;
	uint64		i;
	int			rc;

	if (!OidIsValid(get_namespace_oid("event_store", true)) ||
		!OidIsValid(get_relname_relid("key_scrubs", get_namespace_oid("event_store", true))))
		return;
	c = crypto_catalog();
	SPI_connect();
	rc = SPI_execute("DELETE FROM event_store.key_scrubs RETURNING tid", false, 0);
	if (rc != SPI_OK_DELETE_RETURNING)
		elog(ERROR, "could not read the key rows to overwrite: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
	{
		rel = table_open(c->keys_relid, RowExclusiveLock);
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			ItemPointer tid = (ItemPointer) DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[i],
																	   SPI_tuptable->tupdesc, 1, &isnull));

			scrub_key_row(rel, tid);
		}
		table_close(rel, RowExclusiveLock);
	}
	SPI_finish();
}

/* ---------------------------------------------------------------------
 * SQL functions
 * ---------------------------------------------------------------------
 */

/*
 * protect(event_type text, subject text, fields text[]) RETURNS void
 */
Datum
event_store_protect(PG_FUNCTION_ARGS)
{
	const CryptoCatalog *c;
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
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTARRAYOID};
	int			rc;
	EsOwnerSave owner;

	es_require_arg(fcinfo, 2, "fields");
	arr = PG_GETARG_ARRAYTYPE_P(2);
	check_path(text_to_cstring(subject), &sp, "subject");
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
		check_path(TextDatumGetCString(elems[i]), &fp[i], "field");
		for (j = 0; j < i; j++)
			if (path_prefix(&fp[j], &fp[i]) || path_prefix(&fp[i], &fp[j]))
				ereport(ERROR,
						(errcode(ERRCODE_ES_INVALID_PATH),
						 errmsg("protected fields %s and %s overlap", fp[j].text, fp[i].text),
						 errdetail("No field may be the same as, or contain, another.")));
	}
	(void) pgcrypto();			/* fail now, not at the first append */

	c = crypto_catalog();
	args[0] = PointerGetDatum(event_type);
	args[1] = CStringGetTextDatum(sp.text);
	args[2] = PointerGetDatum(arr);
	es_owner_begin(&owner);
	SPI_connect();
	rc = SPI_execute_with_args("INSERT INTO event_store.protected_types (event_type, subject, fields) "
							   "VALUES ($1, $2, $3) ON CONFLICT (event_type) DO UPDATE "
							   "SET subject = EXCLUDED.subject, fields = EXCLUDED.fields, "
							   "created_at = pg_catalog.now()",
							   3, types, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not store the rule: %s", SPI_result_code_string(rc));
	SPI_finish();
	es_owner_end(&owner);
	CacheInvalidateRelcacheByRelid(c->rules_relid);
	PG_RETURN_VOID();
}

/*
 * The streams that hold protected events of the key, from the partial index
 * events_protected_key.  What forget() deletes the snapshots of.
 */
List *
es_key_streams(const char *key_id)
{
	List	   *streams = NIL;
	Datum		args[1];
	Oid			types[1] = {TEXTOID};
	uint64		i;
	int			rc;

	args[0] = CStringGetTextDatum(key_id);
	rc = SPI_execute_with_args("SELECT DISTINCT e.stream_id FROM event_store.events e "
							   "WHERE e.metadata OPERATOR(pg_catalog.?) 'protected' "
							   "AND ((e.metadata OPERATOR(pg_catalog.->) 'protected') "
							   "OPERATOR(pg_catalog.->>) 'key') OPERATOR(pg_catalog.=) $1 ORDER BY 1",
							   1, types, args, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not list the streams of a subject: %s", SPI_result_code_string(rc));
	for (i = 0; i < SPI_processed; i++)
	{
		streams = lappend(streams, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	}
	return streams;
}

/*
 * Delete the snapshots of these streams, when the snapshot table exists
 * (issue 3 builds it: event_store.snapshots keyed by stream_id, aggregate).
 */
static uint64
delete_snapshots(List *streams, Oid nsp)
{
	Datum	   *d;
	ListCell   *lc;
	int			i = 0;
	Datum		args[1];
	Oid			types[1] = {TEXTARRAYOID};
	int			rc;

	if (streams == NIL || !OidIsValid(get_relname_relid("snapshots", nsp)))
		return 0;
	d = palloc(sizeof(Datum) * list_length(streams));
	foreach(lc, streams)
		d[i++] = CStringGetTextDatum(lfirst(lc));
	args[0] = PointerGetDatum(construct_array(d, i, TEXTOID, -1, false, TYPALIGN_INT));
	rc = SPI_execute_with_args("DELETE FROM event_store.snapshots "
							   "WHERE stream_id OPERATOR(pg_catalog.=) ANY ($1)",
							   1, types, args, NULL, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "could not delete snapshots: %s", SPI_result_code_string(rc));
	return SPI_processed;
}

/*
 * forget(subject text) RETURNS boolean: true when the subject is forgotten
 * now, false when it already was.
 */
Datum
event_store_forget(PG_FUNCTION_ARGS)
{
	text	   *subject = es_identifier_arg(fcinfo, 0, "subject");
	const CryptoCatalog *c = crypto_catalog();
	uint8		hash[PG_SHA256_DIGEST_LENGTH];
	char		hex[2 * PG_SHA256_DIGEST_LENGTH + 1];
	HeapTuple	tup;
	TupleDesc	desc;
	char	   *key_id = NULL;
	List	   *streams = NIL;
	uint64		nsnap = 0;
	bool		was_forgotten;
	int			i;
	int			rc;
	EsOwnerSave owner;

	/*
	 * The key row is overwritten in place at pre-commit, which cannot be
	 * undone; a SERIALIZABLE transaction can still fail after that point (the
	 * commit-time serialization check), so forget() refuses to run in one.
	 */
	if (IsolationIsSerializable())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("event_store.forget() cannot run in a SERIALIZABLE transaction"),
				 errdetail("Forgetting destroys the key at commit, which a serialization failure could no longer undo."),
				 errhint("Call it in a READ COMMITTED or REPEATABLE READ transaction.")));

	sha256((uint8 *) VARDATA_ANY(subject), VARSIZE_ANY_EXHDR(subject), hash);
	for (i = 0; i < PG_SHA256_DIGEST_LENGTH; i++)
		snprintf(hex + 2 * i, 3, "%02x", hash[i]);
	/* the subject is ours until its key is deleted and its tombstone written */
	was_forgotten = settled_subject(hash, &tup, &desc);
	if (tup)
	{
		bool		isnull;

		key_id = format_uuid(DatumGetUUIDP(heap_getattr(tup, Anum_keys_key_id, desc, &isnull)));
	}
	if (was_forgotten && key_id == NULL)
	{
		es_lock_release(&subject_lock);
		PG_RETURN_BOOL(false);
	}

	es_owner_begin(&owner);
	SPI_connect();
	if (key_id)
	{
		Datum		args[1];
		Oid			types[1] = {UUIDOID};

		streams = es_key_streams(key_id);
		nsnap = delete_snapshots(streams, c->nsp);
		args[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(key_id));
		rc = SPI_execute_with_args("DELETE FROM event_store.subject_keys WHERE key_id OPERATOR(pg_catalog.=) $1 "
								   "RETURNING ctid",
								   1, types, args, NULL, false, 0);
		if (rc != SPI_OK_DELETE_RETURNING)
			elog(ERROR, "could not delete a subject key: %s", SPI_result_code_string(rc));
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to a concurrent creation of a subject key"),
					 errdetail("The subject's key was created after this transaction's snapshot was taken."),
					 errhint("The transaction might succeed if retried.")));
		if (scrub_after_commit())
		{
			/* overwritten by the pipeline worker once this commits (nothing if it aborts) */
			Datum		tids[1];
			Oid			tid_type[1] = {TIDOID};
			SPITupleTable *deleted = SPI_tuptable;
			uint64		ndeleted = SPI_processed;
			uint64		j;

			for (j = 0; j < ndeleted; j++)
			{
				bool		isnull;

				tids[0] = SPI_getbinval(deleted->vals[j], deleted->tupdesc, 1, &isnull);
				rc = SPI_execute_with_args("INSERT INTO event_store.key_scrubs (tid) VALUES ($1)",
										   1, tid_type, tids, NULL, false, 0);
				if (rc != SPI_OK_INSERT)
					elog(ERROR, "could not queue a key row to overwrite: %s", SPI_result_code_string(rc));
			}
			es_pipeline_scrub_at_commit();
		}
		else
			for (i = 0; i < (int) SPI_processed; i++)
			{
				bool		isnull;
				MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
				PendingScrub *ps = palloc(sizeof(PendingScrub));

				ps->tid = *(ItemPointer) DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[i],
																		SPI_tuptable->tupdesc, 1, &isnull));
				ps->subid = GetCurrentSubTransactionId();
				pending_scrubs = lappend(pending_scrubs, ps);
				MemoryContextSwitchTo(old);
			}
	}
	if (!was_forgotten)
	{
		Datum		args[2];
		Oid			types[2] = {BYTEAOID, JSONBOID};
		StringInfoData d;

		initStringInfo(&d);
		appendStringInfo(&d, "{\"subject_sha256\": \"%s\", \"key\": %s%s%s, \"streams\": %d, \"snapshots_deleted\": " UINT64_FORMAT "}",
						 hex, key_id ? "\"" : "", key_id ? key_id : "null", key_id ? "\"" : "",
						 list_length(streams), nsnap);
		args[0] = PointerGetDatum(make_bytea(hash, PG_SHA256_DIGEST_LENGTH));
		args[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(d.data));
		rc = SPI_execute_with_args("INSERT INTO event_store.forgotten_subjects (subject_hash) VALUES ($1)",
								   1, types, args, NULL, false, 0);
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "could not record a forgotten subject: %s", SPI_result_code_string(rc));
		rc = SPI_execute_with_args("INSERT INTO event_store.events (stream_id, event_type, data) "
								   "VALUES ('" AUDIT_STREAM "', 'SubjectForgotten', $2)",
								   2, types, args, NULL, false, 0);
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "could not record the audit event: %s", SPI_result_code_string(rc));
	}
	SPI_finish();
	es_owner_end(&owner);
	es_lock_release(&subject_lock);
	CacheInvalidateRelcacheByRelid(c->keys_relid);
	PG_RETURN_BOOL(true);
}

/*
 * rewrap_keys() RETURNS bigint: wrap every subject key that the previous
 * key-encryption key wraps with the current one; returns how many.
 */
Datum
event_store_rewrap_keys(PG_FUNCTION_ARGS)
{
	const CryptoCatalog *c = crypto_catalog();
	Kek		   *cur = current_kek();
	Datum		args[3];
	Oid			types[3] = {TEXTOID, UUIDOID, BYTEAOID};
	uint64		done = 0;
	uint64		i;
	uint64		n;
	SPITupleTable *tt;
	int			rc;
	EsOwnerSave owner;

	(void) fcinfo;
	es_owner_begin(&owner);
	SPI_connect();
	args[0] = CStringGetTextDatum(cur->id);
	rc = SPI_execute_with_args("SELECT key_id, wrapped_key, kek_id FROM event_store.subject_keys "
							   "WHERE kek_id OPERATOR(pg_catalog.<>) $1 FOR UPDATE",
							   1, types, args, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read subject keys: %s", SPI_result_code_string(rc));
	tt = SPI_tuptable;
	n = SPI_processed;
	for (i = 0; i < n; i++)
	{
		bool		isnull;
		pg_uuid_t  *id = DatumGetUUIDP(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		bytea	   *w = DatumGetByteaPP(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
		char	   *kid = TextDatumGetCString(SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull));
		uint8		k[KEY_BYTES];

		unwrap_key(kid, id, w, k);
		args[0] = CStringGetTextDatum(cur->id);
		args[1] = UUIDPGetDatum(id);
		args[2] = PointerGetDatum(wrap_key(cur, id, k));
		explicit_bzero(k, sizeof(k));
		rc = SPI_execute_with_args("UPDATE event_store.subject_keys SET wrapped_key = $3, kek_id = $1 "
								   "WHERE key_id OPERATOR(pg_catalog.=) $2",
								   3, types, args, NULL, false, 0);
		if (rc != SPI_OK_UPDATE)
			elog(ERROR, "could not rewrap a subject key: %s", SPI_result_code_string(rc));
		done++;
	}
	SPI_finish();
	es_owner_end(&owner);
	CacheInvalidateRelcacheByRelid(c->keys_relid);
	PG_RETURN_INT64((int64) done);
}

/*
 * _subject_hash(subject text) RETURNS bytea: the SHA-256 of the subject's
 * bytes, the key of the unique index on event_store.subject_keys (the same
 * as a tombstone's), so that the index holds no subject in clear, not even
 * in its freed space after forget().
 */
Datum
event_store_subject_hash(PG_FUNCTION_ARGS)
{
	text	   *subject = PG_GETARG_TEXT_PP(0);
	uint8		hash[PG_SHA256_DIGEST_LENGTH];

	sha256((uint8 *) VARDATA_ANY(subject), VARSIZE_ANY_EXHDR(subject), hash);
	PG_RETURN_BYTEA_P(make_bytea(hash, PG_SHA256_DIGEST_LENGTH));
}

/*
 * subject_streams(subject text) RETURNS SETOF text: the streams holding the
 * subject's protected events, while it has a key.  Read as the extension's
 * owner, so that EXECUTE is the whole right (an admin of personal data need
 * not read the events).
 */
Datum
event_store_subject_streams(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	text	   *subject = es_identifier_arg(fcinfo, 0, "subject");
	const CryptoCatalog *c = crypto_catalog();
	uint8		hash[PG_SHA256_DIGEST_LENGTH];
	HeapTuple	tup;
	TupleDesc	desc;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	sha256((uint8 *) VARDATA_ANY(subject), VARSIZE_ANY_EXHDR(subject), hash);
	tup = fetch_row(c->keys_relid, keys_by_subject(c), F_BYTEAEQ,
					PointerGetDatum(make_bytea(hash, PG_SHA256_DIGEST_LENGTH)), &desc);
	if (tup)
	{
		bool		isnull;
		char	   *key_id = format_uuid(DatumGetUUIDP(heap_getattr(tup, Anum_keys_key_id, desc, &isnull)));
		EsOwnerSave owner;
		List	   *streams;
		ListCell   *lc;

		es_owner_begin(&owner);
		SPI_connect();
		streams = es_key_streams(key_id);
		foreach(lc, streams)
		{
			Datum		v = CStringGetTextDatum(lfirst(lc));
			bool		n = false;

			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &v, &n);
		}
		SPI_finish();
		es_owner_end(&owner);
	}
	return (Datum) 0;
}

/*
 * personal_data_access() RETURNS boolean.  Its EXECUTE privilege is the
 * right to read protected fields in clear; whoever can call it has it.
 */
Datum
event_store_personal_data_access(PG_FUNCTION_ARGS)
{
	(void) fcinfo;
	PG_RETURN_BOOL(true);
}
