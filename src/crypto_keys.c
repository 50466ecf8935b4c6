/*-------------------------------------------------------------------------
 *
 * crypto_keys.c
 *	  Personal data: the key-encryption key (its settings, wrapping and
 *	  unwrapping, rewrap_keys) and the subject keys (their caches, creating
 *	  one on a subject's first use, finding one by subject or id).
 *
 * Subject keys are 64 random bytes (32 for AES-256, 32 for HMAC-SHA256),
 * stored in event_store.subject_keys wrapped (encrypt-then-MAC) by the
 * key-encryption key, event_store.key_encryption_key, a superuser-only
 * setting that never lives in a table; a key's kek_id names the KEK that
 * wrapped it, so that after a rotation the previous one
 * (event_store.previous_key_encryption_key) still unwraps it until
 * rewrap_keys() moves it.
 *
 * Caches (per backend): subject -> key id, key id -> key (or "forgotten").
 * Dropped on a relcache invalidation of subject_keys or forgotten_subjects
 * (forget() and rewrap_keys() send one, delivered to every backend at
 * commit) and at every (sub)transaction abort (crypto.c).  Key bytes are
 * zeroed when dropped; what callers get is a copy, since an invalidation
 * can arrive whenever a lock is taken.
 *
 * Locking.  Creating a subject's key (and forgetting a subject,
 * crypto_forget.c) takes an ExclusiveLock on the subject's lock tag
 * (ES_LOCKTAG_SUBJECT, key = 64 bits of the subject's SHA-256) from the
 * checks to the writes (locks.c), so that a key is never created beside a
 * tombstone: under the lock, the tombstone and the key row are read settled
 * (es_read_settled), and a transaction in progress writing either is waited
 * for, without the lock, before looking again.  A backend holds one subject
 * lock at most.  Appends with a key that exists take no lock.  The tables
 * are read through their indexes with the latest snapshot and written as
 * their owner (ES_RUN_AS_OWNER).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/sha2.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "crypto.h"

PG_FUNCTION_INFO_V1(event_store_rewrap_keys);
PG_FUNCTION_INFO_V1(event_store_subject_hash);
PG_FUNCTION_INFO_V1(event_store_subject_streams);

#define KEK_HEX_CHARS	64		/* the key-encryption key: 32 bytes in hex */

/* The statements, each run as the extension's owner. */
static EsStatement insert_key = ES_STATEMENT(
	"INSERT INTO event_store.subject_keys (key_id, subject, wrapped_key, kek_id) "
	"VALUES ($1, $2, $3, $4) ON CONFLICT (event_store._subject_hash(subject)) DO NOTHING",
	4, UUIDOID, TEXTOID, BYTEAOID, TEXTOID);

static EsStatement key_streams = ES_STATEMENT(
	"SELECT DISTINCT e.stream_id FROM event_store.events e "
	"WHERE e.metadata OPERATOR(pg_catalog.?) 'protected' "
	"AND ((e.metadata OPERATOR(pg_catalog.->) 'protected') "
	"OPERATOR(pg_catalog.->>) 'key') OPERATOR(pg_catalog.=) $1 ORDER BY 1",
	1, TEXTOID);

static EsStatement keys_to_rewrap = ES_STATEMENT(
	"SELECT key_id, wrapped_key, kek_id FROM event_store.subject_keys "
	"WHERE kek_id OPERATOR(pg_catalog.<>) $1 FOR UPDATE",
	1, TEXTOID);

static EsStatement rewrap_key = ES_STATEMENT(
	"UPDATE event_store.subject_keys SET wrapped_key = $3, kek_id = $1 "
	"WHERE key_id OPERATOR(pg_catalog.=) $2",
	3, TEXTOID, UUIDOID, BYTEAOID);


/* Settings */
static char *kek_setting = NULL;
static char *previous_kek_setting = NULL;

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
static HTAB *subjects = NULL;
static HTAB *keys = NULL;

/* The lock of the subject whose key is being created or forgotten (locks.c). */
static EsLock subject_lock;

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
 * Define the key-encryption key settings (from es_crypto_init, before the
 * event_store prefix is reserved).  No check hook: a rejected value would
 * be echoed into the server log.  The value is checked when it is used.
 */
void
crypto_define_kek_settings(void)
{
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
}


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
	crypto_hmac256(raw, (const uint8 *) "event_store kek enc", 19, k->enc);
	crypto_hmac256(raw, (const uint8 *) "event_store kek mac", 19, k->mac);
	crypto_hmac256(raw, (const uint8 *) "event_store kek id", 18, id);
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

/* KEK subkeys in the layout crypto_seal() wants */
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
	w = crypto_seal(m, key_id->data, UUID_LEN, key, KEY_BYTES, &wlen);
	explicit_bzero(m, sizeof(m));
	r = crypto_bytea(w, wlen);
	pfree(w);
	return r;
}

static void
unwrap_key(const char *kek_id, const pg_uuid_t *key_id, bytea *wrapped, uint8 *key)
{
	Kek		   *k = current_kek();
	uint8		m[KEY_BYTES];
	bytea	   *plain;
	char	   *id = crypto_format_uuid(key_id);

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
	plain = crypto_unseal(m, key_id->data, UUID_LEN, (uint8 *) VARDATA_ANY(wrapped),
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

void
crypto_drop_key_caches(void)
{
	crypto_drop_plain_cache();
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
 * A snapshot taken now, registered (the caller unregisters it): the latest
 * snapshot -- or, in parallel mode, where GetLatestSnapshot() refuses to run
 * (a read function runs in the leader of a parallel query), the catalog
 * snapshot of the relation, which for a table that is no catalog is taken
 * anew (GetNonHistoricCatalogSnapshot) and which the registration copies.
 */
Snapshot
crypto_register_latest_snapshot(Relation rel)
{
	if (IsInParallelMode())
		return RegisterSnapshot(GetCatalogSnapshot(RelationGetRelid(rel)));
	return RegisterSnapshot(GetLatestSnapshot());
}

/*
 * Fetch one row of one of our tables through a unique index, by its first
 * column (eqproc: the equality of its type): with the latest snapshot, or,
 * settled, with es_read_settled (a row that a transaction in progress is
 * inserting or deleting is not returned: *wait_for is set to that
 * transaction instead, for the caller to wait for, holding no lock of ours,
 * before it looks again).  Returns a copy of the tuple or NULL.
 */
static HeapTuple
fetch_by_index(Oid relid, Oid indexid, RegProcedure eqproc, Datum value, bool settled,
			   TupleDesc *desc, TransactionId *wait_for)
{
	Relation	rel = table_open(relid, AccessShareLock);
	Relation	idx = index_open(indexid, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	ScanKeyData key;
	bool		found;
	HeapTuple	tuple;

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, eqproc, value);
	if (settled)
		found = es_read_settled(rel, idx, &key, 1, ForwardScanDirection, true, slot, wait_for);
	else
	{
		Snapshot	snapshot = crypto_register_latest_snapshot(rel);
		IndexScanDesc scan = index_beginscan(rel, idx, snapshot, 1, 0);

		index_rescan(scan, &key, 1, NULL, 0);
		found = index_getnext_slot(scan, ForwardScanDirection, slot);
		index_endscan(scan);
		UnregisterSnapshot(snapshot);
	}
	tuple = found ? ExecCopySlotHeapTuple(slot) : NULL;
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, AccessShareLock);
	if (desc)
		*desc = RelationGetDescr(rel);
	table_close(rel, AccessShareLock);
	return tuple;
}

/* with the latest snapshot */
HeapTuple
crypto_fetch_row(Oid relid, Oid indexid, RegProcedure eqproc, Datum value, TupleDesc *desc)
{
	return fetch_by_index(relid, indexid, eqproc, value, false, desc, NULL);
}

/* settled (see fetch_by_index) */
static HeapTuple
fetch_settled_row(Oid relid, Oid indexid, RegProcedure eqproc, Datum value,
				  TupleDesc *desc, TransactionId *wait_for)
{
	return fetch_by_index(relid, indexid, eqproc, value, true, desc, wait_for);
}

/*
 * The index finding a subject's key, by the SHA-256 of the subject.  A
 * library of 0.2.0 over the tables of 0.1.0 (installed, not yet updated)
 * appends and reads, but creates, finds by subject and forgets no key until
 * the update.
 */
Oid
crypto_keys_by_subject(const EsCatalog *c)
{
	if (!OidIsValid(c->keys_hash))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the personal-data tables of extension \"event_store\" are those of version 0.1.0"),
				 errdetail("This library finds subject keys through the index subject_keys_subject_hash of version 0.2.0."),
				 errhint("Run ALTER EXTENSION event_store UPDATE.")));
	return c->keys_hash;
}

/*
 * The key with this id into *key; false when it does not exist (forgotten).
 */
bool
crypto_get_key(const pg_uuid_t *key_id, uint8 *key)
{
	const EsCatalog *c = es_catalog();
	KeyEntry   *e;
	bool		found;

	ensure_key_caches();
	e = hash_search(keys, key_id, HASH_FIND, &found);
	if (!found)
	{
		TupleDesc	desc;
		HeapTuple	tup = crypto_fetch_row(c->keys_relid, c->keys_pkey, F_UUID_EQ,
									UUIDPGetDatum(key_id), &desc);
		uint8		k[KEY_BYTES];
		bool		exists = false;

		if (tup)
		{
			Datum		v[Natts_keys];
			bool		n[Natts_keys];

			es_deform_row(tup, desc, Natts_keys, v, n);
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

/* The subject's lock has served: its rows are written. */
void
crypto_release_subject(void)
{
	es_lock_release(&subject_lock);
}

/*
 * Is there a tombstone for the subject?  Under the subject's lock, with
 * *wait_for set (and false returned) when a forget() in progress is writing
 * it.
 */
static bool
is_forgotten(const uint8 *hash, TransactionId *wait_for)
{
	const EsCatalog *c = es_catalog();
	HeapTuple	tup = fetch_settled_row(c->tomb_relid, c->tomb_pkey, F_BYTEAEQ,
										PointerGetDatum(crypto_bytea(hash, PG_SHA256_DIGEST_LENGTH)),
										NULL, wait_for);

	return tup != NULL;
}

/*
 * Under the subject's lock: whether the subject is forgotten, and its key
 * row (or NULL), once no transaction in progress is writing either.
 */
bool
crypto_settled_subject(const uint8 *hash, HeapTuple *key_row, TupleDesc *desc)
{
	const EsCatalog *c = es_catalog();

	for (;;)
	{
		TransactionId wait_for = InvalidTransactionId;
		bool		forgotten;

		lock_subject(hash);
		forgotten = is_forgotten(hash, &wait_for);
		*key_row = NULL;
		if (!TransactionIdIsValid(wait_for))
			*key_row = fetch_settled_row(c->keys_relid, crypto_keys_by_subject(c), F_BYTEAEQ,
										 PointerGetDatum(crypto_bytea(hash, PG_SHA256_DIGEST_LENGTH)),
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
void
crypto_subject_key(text *subject, const uint8 *hash, pg_uuid_t *key_id)
{
	const EsCatalog *c = es_catalog();
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

	tup = crypto_fetch_row(c->keys_relid, crypto_keys_by_subject(c), F_BYTEAEQ,
					PointerGetDatum(crypto_bytea(hash, PG_SHA256_DIGEST_LENGTH)), &desc);
	if (tup == NULL &&
		crypto_settled_subject(hash, &tup, &desc))
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

		es_strong_random(key_id->data, UUID_LEN);
		key_id->data[6] = (key_id->data[6] & 0x0f) | 0x40;
		key_id->data[8] = (key_id->data[8] & 0x3f) | 0x80;
		es_strong_random(k, KEY_BYTES);
		args[0] = UUIDPGetDatum(key_id);
		args[1] = PointerGetDatum(subject);
		args[2] = PointerGetDatum(wrap_key(kek, key_id, k));
		args[3] = CStringGetTextDatum(kek->id);
		explicit_bzero(k, sizeof(k));
		SPI_connect();
		es_run(&insert_key, args, NULL, ES_RUN_AS_OWNER, 0, SPI_OK_INSERT);
		SPI_finish();
		/* a concurrent first use may have won: use what is stored */
		tup = crypto_fetch_row(c->keys_relid, crypto_keys_by_subject(c), F_BYTEAEQ,
						PointerGetDatum(crypto_bytea(hash, PG_SHA256_DIGEST_LENGTH)), &desc);
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

/*
 * The streams that hold protected events of the key, from the partial index
 * events_protected_key (read as the extension's owner; the caller is
 * connected to SPI).  What forget() deletes the snapshots of.
 */
List *
crypto_key_streams(const char *key_id)
{
	List	   *streams = NIL;
	Datum		args[1];
	uint64		n;
	uint64		i;

	args[0] = CStringGetTextDatum(key_id);
	n = es_run(&key_streams, args, NULL, ES_RUN_AS_OWNER | ES_RUN_READ_ONLY, 0, SPI_OK_SELECT);
	for (i = 0; i < n; i++)
		streams = lappend(streams, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	return streams;
}

/*
 * rewrap_keys() RETURNS bigint: wrap every subject key that the previous
 * key-encryption key wraps with the current one; returns how many.
 */
Datum
event_store_rewrap_keys(PG_FUNCTION_ARGS)
{
	const EsCatalog *c = es_catalog();
	Kek		   *cur = current_kek();
	Datum		args[3];
	uint64		done = 0;
	uint64		i;
	uint64		n;
	SPITupleTable *tt;

	(void) fcinfo;
	SPI_connect();
	args[0] = CStringGetTextDatum(cur->id);
	n = es_run(&keys_to_rewrap, args, NULL, ES_RUN_AS_OWNER, 0, SPI_OK_SELECT);
	tt = SPI_tuptable;
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
		es_run(&rewrap_key, args, NULL, ES_RUN_AS_OWNER, 0, SPI_OK_UPDATE);
		done++;
	}
	SPI_finish();
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

	crypto_sha256((uint8 *) VARDATA_ANY(subject), VARSIZE_ANY_EXHDR(subject), hash);
	PG_RETURN_BYTEA_P(crypto_bytea(hash, PG_SHA256_DIGEST_LENGTH));
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
	const EsCatalog *c = es_catalog();
	uint8		hash[PG_SHA256_DIGEST_LENGTH];
	HeapTuple	tup;
	TupleDesc	desc;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	crypto_sha256((uint8 *) VARDATA_ANY(subject), VARSIZE_ANY_EXHDR(subject), hash);
	tup = crypto_fetch_row(c->keys_relid, crypto_keys_by_subject(c), F_BYTEAEQ,
					PointerGetDatum(crypto_bytea(hash, PG_SHA256_DIGEST_LENGTH)), &desc);
	if (tup)
	{
		bool		isnull;
		char	   *key_id = crypto_format_uuid(DatumGetUUIDP(heap_getattr(tup, Anum_keys_key_id, desc, &isnull)));
		List	   *streams;
		ListCell   *lc;

		SPI_connect();
		streams = crypto_key_streams(key_id);
		foreach(lc, streams)
		{
			Datum		v = CStringGetTextDatum(lfirst(lc));
			bool		n = false;

			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &v, &n);
		}
		SPI_finish();
	}
	return (Datum) 0;
}
