/*-------------------------------------------------------------------------
 *
 * crypto_bridge.c
 *	  Personal data: the pgcrypto bridge -- the ciphers, MACs and random
 *	  bytes the other personal-data files use, all from pgcrypto.
 *
 * pgcrypto is called through fmgr: its schema is looked up in pg_extension,
 * its functions by name and argument types, EXECUTE is checked for the
 * current user, and the FmgrInfos live in a long-lived context, dropped on
 * any pg_proc or pg_namespace invalidation (crypto_pgcrypto_reset).
 *
 * seal() is encrypt-then-MAC: base64 of iv || AES-256-CBC ciphertext ||
 * HMAC-SHA256 tag, the tag covering the associated data too (a key id and a
 * path, so that a ciphertext cannot be moved to another field or subject).
 * The copies of keys and plaintexts handed to pgcrypto are zeroed once it
 * returns.
 *
 * Locking: none.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "crypto.h"

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

/*
 * pgcrypto's schema, from pg_extension.
 */
static Oid
pgcrypto_schema(void)
{
	Oid			nsp;

	if (!es_extension("pgcrypto", &nsp, NULL))
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

char *
crypto_format_uuid(const pg_uuid_t *u)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(u)));
}

bytea *
crypto_bytea(const uint8 *p, int len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	if (len > 0)
		memcpy(VARDATA(b), p, len);
	return b;
}

/*
 * Zero a copy of secret bytes we handed to crypto_pgcrypto (a key, a plaintext),
 * once pgcrypto is done with it.
 */
void
crypto_zero_bytea(bytea *b)
{
	explicit_bzero(VARDATA(b), VARSIZE(b) - VARHDRSZ);
}

/* HMAC-SHA256 of msg with mac_key (32 bytes) into tag */
void
crypto_hmac256(const uint8 *mac_key, const uint8 *msg, int len, uint8 *tag)
{
	bytea	   *r;
	bytea	   *k = crypto_bytea(mac_key, HALF_KEY);
	bytea	   *m = crypto_bytea(msg, len);

	r = DatumGetByteaPP(FunctionCall3Coll(&pgcrypto()->hmac, InvalidOid,
										  PointerGetDatum(m), PointerGetDatum(k),
										  CStringGetTextDatum("sha256")));
	crypto_zero_bytea(k);
	crypto_zero_bytea(m);				/* key material when deriving the KEK's subkeys */
	Assert(VARSIZE_ANY_EXHDR(r) == TAG_BYTES);
	memcpy(tag, VARDATA_ANY(r), TAG_BYTES);
}

/*
 * Encrypt-then-MAC: iv || AES-256-CBC(plain) || HMAC-SHA256(ad || iv || ct).
 * key is KEY_BYTES: the AES key, then the HMAC key.  Returns palloc'd bytes.
 */
uint8 *
crypto_seal(const uint8 *key, const uint8 *ad, int adlen, const uint8 *plain, int len, int *outlen)
{
	uint8		iv[IV_BYTES];
	bytea	   *ct;
	int			ctlen;
	uint8	   *msg;
	uint8	   *out;
	bytea	   *p = crypto_bytea(plain, len);
	bytea	   *k = crypto_bytea(key, HALF_KEY);

	es_random_bytes(iv, IV_BYTES);	/* public in the ciphertext: from the pool */
	ct = DatumGetByteaPP(FunctionCall4Coll(&pgcrypto()->encrypt_iv, InvalidOid,
										   PointerGetDatum(p), PointerGetDatum(k),
										   PointerGetDatum(crypto_bytea(iv, IV_BYTES)),
										   CStringGetTextDatum("aes-cbc/pad:pkcs")));
	crypto_zero_bytea(p);
	crypto_zero_bytea(k);
	ctlen = VARSIZE_ANY_EXHDR(ct);
	msg = palloc(adlen + IV_BYTES + ctlen);
	memcpy(msg, ad, adlen);
	memcpy(msg + adlen, iv, IV_BYTES);
	memcpy(msg + adlen + IV_BYTES, VARDATA_ANY(ct), ctlen);
	out = palloc(IV_BYTES + ctlen + TAG_BYTES);
	memcpy(out, msg + adlen, IV_BYTES + ctlen);
	crypto_hmac256(key + HALF_KEY, msg, adlen + IV_BYTES + ctlen, out + IV_BYTES + ctlen);
	pfree(msg);
	*outlen = IV_BYTES + ctlen + TAG_BYTES;
	return out;
}

/*
 * Verify and decrypt what crypto_seal() produced.  Returns NULL when the tag does
 * not match (tampered, truncated, or another key, field or subject).
 */
bytea *
crypto_unseal(const uint8 *key, const uint8 *ad, int adlen, const uint8 *in, int inlen)
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
	crypto_hmac256(key + HALF_KEY, msg, adlen + IV_BYTES + ctlen, tag);
	pfree(msg);
	for (i = 0; i < TAG_BYTES; i++)
		diff |= tag[i] ^ in[IV_BYTES + ctlen + i];	/* constant time */
	if (diff != 0)
		return NULL;
	k = crypto_bytea(key, HALF_KEY);
	plain = DatumGetByteaPP(FunctionCall4Coll(&pgcrypto()->decrypt_iv, InvalidOid,
											  PointerGetDatum(crypto_bytea(in + IV_BYTES, ctlen)),
											  PointerGetDatum(k),
											  PointerGetDatum(crypto_bytea(in, IV_BYTES)),
											  CStringGetTextDatum("aes-cbc/pad:pkcs")));
	crypto_zero_bytea(k);
	return plain;
}

void
crypto_sha256(const uint8 *p, size_t len, uint8 *out)
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

/* A function or a schema changed: look pgcrypto up again. */
void
crypto_pgcrypto_reset(void)
{
	pgc.valid = false;
}

/* Fail now if pgcrypto is missing or not executable (protect(), before its first use). */
void
crypto_require_pgcrypto(void)
{
	(void) pgcrypto();
}
