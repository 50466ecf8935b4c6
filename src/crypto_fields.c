/*-------------------------------------------------------------------------
 *
 * crypto_fields.c
 *	  Personal data: protecting the fields of an event on the write path,
 *	  and revealing them (or redacting them, once forgotten) on every read
 *	  path.
 *
 * For an event type with a rule (crypto_rules.c), the BEFORE INSERT
 * trigger calls es_protect_event(): each listed field of data is replaced
 * by a JSON string holding the sealed field (crypto_bridge.c: the JSON text
 * of the field, sealed with the subject's key, the key id and the path as
 * associated data), and the metadata gets {"protected": {"key": <key id>,
 * "fields": [paths]}}.  Every reader's event passes through
 * es_decrypt_event() (from es_present_event()): it verifies and decrypts,
 * for roles with EXECUTE on personal_data_access(), or, once the key is
 * gone, puts JSON null in the fields and "redacted" in the metadata.
 *
 * Decrypted values are cached by ciphertext (a re-read pays no
 * decryption); an entry matches only the same ciphertext, key and path, so
 * a ciphertext copied elsewhere is still authenticated.  The cache is
 * dropped with the keys (crypto.c) and whenever it outgrows
 * PLAIN_CACHE_BYTES, its values zeroed first.  Errors never carry plaintext
 * field values, subjects or key bytes.
 *
 * Locking: none of its own (the keys' are in crypto_keys.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/base64.h"
#include "common/hashfn.h"
#include "common/sha2.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "crypto.h"
#include "read.h"

PG_FUNCTION_INFO_V1(event_store_personal_data_access);

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

/* How many of a ciphertext's last characters its cache entry is hashed by. */
#define CT_HASH_CHARS	16

static MemoryContext plain_cxt = NULL;
static HTAB *plain_cache = NULL;
static Size plain_bytes = 0;

/* Who may read protected fields in clear: cached per role. */
static Oid	access_checked_user = InvalidOid;
static bool access_granted = false;

void
crypto_drop_plain_cache(void)
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
	char	   *plain = crypto_jsonb_value_text(v, &plen);
	int			adlen;
	uint8	   *ad = field_ad(key_id, path, &adlen);
	int			clen;
	uint8	   *ct = crypto_seal(key, ad, adlen, (uint8 *) plain, plen, &clen);
	int			blen = pg_b64_enc_len(clen);
	char	   *b64 = palloc(blen + 1);

	explicit_bzero(plain, plen);
	blen = pg_b64_encode((char *) ct, clen, b64, blen);
	if (blen < 0)
		elog(ERROR, "could not encode a ciphertext");
	return crypto_jsonb_string(b64, blen);
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
		/*
		 * The hash of the ciphertext's last characters: the base64 of its
		 * tag, random, so as good a hash as the whole (1,000 instructions
		 * fewer per field read); an entry still matches only the whole.
		 */
		h = hash_bytes_extended((const unsigned char *) v->val.string.val +
								Max(v->val.string.len - CT_HASH_CHARS, 0),
								Min(v->val.string.len, CT_HASH_CHARS), 0);
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

			plain = crypto_unseal(key, ad, adlen, ct, clen);
		}
	}
	if (plain == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_ES_CIPHERTEXT_AUTHENTICATION),
				 errmsg("protected field %s of %s failed authentication", path,
						event_id ? psprintf("event %s", crypto_format_uuid(DatumGetUUIDP(*event_id))) : "the stored event"),
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
		crypto_drop_plain_cache();
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

	rule = crypto_find_rule(event_type);
	if (rule == NULL)
		return;
	if (rule->corrupt)
		ereport(ERROR,
				(errcode(ERRCODE_ES_INVALID_PATH),
				 errmsg("the personal-data rule of event type \"%s\" is invalid", rule->event_type),
				 errdetail("Its row in event_store.protected_types was not written by event_store.protect(); events of the type are refused rather than stored in clear."),
				 errhint("Set the rule again with event_store.protect().")));

	sv = crypto_path_get(data, &rule->subject);
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
	crypto_sha256((uint8 *) subject, slen, hash);
	crypto_subject_key(cstring_to_text_with_len(subject, slen), hash, &key_id);
	if (!crypto_get_key(&key_id, key))
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
		JsonbValue *fv = crypto_path_get(data, &rule->fields[i]);

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
	data = crypto_replace_paths(data, done, paths, vals);

	/* metadata || {"protected": {"key": id, "fields": [...]}} */
	id = crypto_format_uuid(&key_id);
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
			if (!crypto_parse_path(s, p))
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
	bool		have_key = permitted && crypto_get_key(key_id, key);
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
		JsonbValue *v = crypto_path_get(data, p);

		if (v == NULL)
			continue;
		ps[n] = p;
		vals[n++] = have_key ? decrypt_field(key, key_id, p->text, v, event_id) : crypto_jsonb_null();
	}
	explicit_bzero(key, sizeof(key));
	return crypto_replace_paths(data, n, ps, vals);
}

/*
 * May the current role read protected fields in clear?  Those with EXECUTE
 * on event_store.personal_data_access() may; cached per role.
 */
static bool
crypto_may_read(void)
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
	return crypto_may_read();
}

/*
 * Called by es_present_event() (scan.c) on every event handed to a reader
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
				  crypto_may_read(), &redacted,
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
 * personal_data_access() RETURNS boolean.  Its EXECUTE privilege is the
 * right to read protected fields in clear; whoever can call it has it.
 */
Datum
event_store_personal_data_access(PG_FUNCTION_ARGS)
{
	(void) fcinfo;
	PG_RETURN_BOOL(true);
}

/* Roles or functions changed: check the right to read in clear again. */
void
crypto_access_reset(void)
{
	access_checked_user = InvalidOid;
}
