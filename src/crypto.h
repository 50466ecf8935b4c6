/*-------------------------------------------------------------------------
 *
 * crypto.h
 *	  Personal data: per-subject encryption and crypto-shredding.  What the
 *	  other modules call (first part), and what the personal-data files
 *	  share among themselves (second part).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_STORE_CRYPTO_H
#define EVENT_STORE_CRYPTO_H

#include "internal.h"

/* The write path encrypts the protected fields of an event (the trigger). */
extern void es_protect_event(Datum *values, bool *nulls);

/* Every read path decrypts them, or redacts them once forgotten (es_present_event). */
extern void es_decrypt_event(Datum *values, bool *nulls);

/* An event's data with its protected fields in clear, for the idempotency check. */
extern Datum es_plain_data(Datum data, Datum metadata);

/* May the current role read protected fields in clear (personal_data_access)? */
extern bool es_may_read_personal_data(void);

/* The pipeline worker overwrites the key rows forget() deleted, once committed. */
extern void es_scrub_forgotten_keys(void);

/* ---------------------------------------------------------------------
 * Between the personal-data files (crypto*.c)
 * ---------------------------------------------------------------------
 */
#include "access/htup.h"
#include "access/tupdesc.h"
#include "access/xact.h"
#include "common/sha2.h"
#include "nodes/pg_list.h"
#include "utils/uuid.h"

#define KEY_BYTES		64		/* a subject key: AES-256 key, then HMAC key */
#define HALF_KEY		32
#define IV_BYTES		16
#define TAG_BYTES		32
#define MAX_FIELDS		32		/* protected fields per event type */
#define MAX_PATH_DEPTH	16
#define PATH_KEY_LEN	(ES_MAX_ID_BYTES + 1)

#define PROTECTED_KEY	"protected" /* the metadata marker */
#define REDACTED_KEY	"redacted"
#define AUDIT_STREAM	"event_store-subjects"

/* Columns of event_store.subject_keys (1-based). */
#define Anum_keys_key_id		1
#define Anum_keys_subject		2
#define Anum_keys_wrapped_key	3
#define Anum_keys_kek_id		4
#define Natts_keys				5

/* A parsed JSON path: $.a.b -> {"a", "b"} */
typedef struct JsonPath
{
	char	   *text;			/* as written */
	int			depth;
	char	  **keys;
} JsonPath;

/* The rule of a protected event type (crypto_rules.c). */
typedef struct RuleEntry
{
	char		event_type[PATH_KEY_LEN];	/* hash key */
	bool		corrupt;		/* a row protect() would have refused */
	JsonPath	subject;
	int			nfields;
	JsonPath   *fields;
} RuleEntry;

/* crypto_bridge.c: pgcrypto */
extern void crypto_pgcrypto_reset(void);
extern void crypto_require_pgcrypto(void);
extern char *crypto_format_uuid(const pg_uuid_t *u);
extern bytea *crypto_bytea(const uint8 *p, int len);
extern void crypto_zero_bytea(bytea *b);
extern void crypto_hmac256(const uint8 *mac_key, const uint8 *msg, int len, uint8 *tag);
extern uint8 *crypto_seal(const uint8 *key, const uint8 *ad, int adlen, const uint8 *plain,
						  int len, int *outlen);
extern bytea *crypto_unseal(const uint8 *key, const uint8 *ad, int adlen, const uint8 *in,
							int inlen);
extern void crypto_sha256(const uint8 *p, size_t len, uint8 *out);

/* crypto_keys.c: the key-encryption key and the subject keys */
extern void crypto_define_kek_settings(void);
extern void crypto_drop_key_caches(void);
extern Snapshot crypto_register_latest_snapshot(Relation rel);
extern HeapTuple crypto_fetch_row(Oid relid, Oid indexid, RegProcedure eqproc, Datum value,
								  TupleDesc *desc);
extern Oid	crypto_keys_by_subject(const EsCatalog *c);
extern bool crypto_get_key(const pg_uuid_t *key_id, uint8 *key);
extern void crypto_subject_key(text *subject, const uint8 *hash, pg_uuid_t *key_id);
extern bool crypto_settled_subject(const uint8 *hash, HeapTuple *key_row, TupleDesc *desc);
extern void crypto_release_subject(void);
extern List *crypto_key_streams(const char *key_id);

/* crypto_paths.c: JSON paths */
extern bool crypto_parse_path(const char *s, JsonPath *p);
extern void crypto_check_path(const char *s, JsonPath *p, const char *what);
extern bool crypto_path_prefix(const JsonPath *a, const JsonPath *b);
extern JsonbValue *crypto_path_get(Jsonb *jb, const JsonPath *p);
extern Jsonb *crypto_replace_paths(Jsonb *doc, int n, const JsonPath **paths, Jsonb **vals);
extern char *crypto_jsonb_value_text(JsonbValue *v, int *len);
extern Jsonb *crypto_jsonb_string(const char *s, int len);
extern Jsonb *crypto_jsonb_null(void);

/* crypto_rules.c: protect() and its rules */
extern void crypto_drop_rules(void);
extern RuleEntry *crypto_find_rule(text *event_type);

/* crypto_fields.c: protecting and revealing fields */
extern void crypto_drop_plain_cache(void);
extern void crypto_access_reset(void);

/* crypto_forget.c: forget() */
extern void crypto_forget_xact_callback(XactEvent event);
extern void crypto_forget_subxact_abort(SubTransactionId mySubid);

#endif							/* EVENT_STORE_CRYPTO_H */
