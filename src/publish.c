/*-------------------------------------------------------------------------
 *
 * publish.c
 *	  publish(topic, payload, key): an integration event, written into the
 *	  WAL as a transactional logical decoding message (prefix
 *	  ES_MESSAGE_PREFIX) and delivered by the output plugin at the
 *	  transaction's commit, in commit order; never if it rolls back.
 *
 * No table is written: there is no outbox to poll or to clean up.  The
 * message body is a JSON object {"topic", "key", "payload"}.  No locks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "common/hmac.h"
#include "common/sha2.h"
#include "port.h"
#include "replication/message.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"

#include "internal.h"
#include "pipeline.h"

PG_FUNCTION_INFO_V1(event_store_publish);

/* Hex digits of a message's signature, in front of its JSON body. */
#define SIGNATURE_HEX	(2 * PG_SHA256_DIGEST_LENGTH)

/*
 * The database's publish key, read once per backend, and again after a
 * relcache invalidation of its table (the extension dropped and created
 * anew: a new key).
 */
static uint8 key_bytes[64];
static int	key_len = -1;		/* -1: not read yet; 0: none (installed at 0.1.0) */

static void
invalidate_key(void)
{
	explicit_bzero(key_bytes, sizeof(key_bytes));
	key_len = -1;
}

/* Called once per process from es_pipeline_init. */
void
es_publish_init(void)
{
	ES_WATCH_RELATION(publish_key_relid, invalidate_key);
}

/*
 * Read the key from event_store.publish_key: with the catalog snapshot, so
 * that it works inside logical decoding (a user_catalog_table).
 */
static int
publish_key(void)
{
	if (key_len < 0)
	{
		const EsCatalog *cat = es_catalog_if_installed();
		Oid			relid = cat ? cat->publish_key_relid : InvalidOid;

		key_len = 0;
		if (OidIsValid(relid))
		{
			Relation	rel = table_open(relid, AccessShareLock);
			SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
			HeapTuple	tup = systable_getnext(scan);

			if (HeapTupleIsValid(tup))
			{
				bool		isnull;
				bytea	   *k = DatumGetByteaPP(heap_getattr(tup, 1, RelationGetDescr(rel), &isnull));

				if (!isnull && VARSIZE_ANY_EXHDR(k) >= 16 && VARSIZE_ANY_EXHDR(k) <= (int) sizeof(key_bytes))
				{
					key_len = VARSIZE_ANY_EXHDR(k);
					memcpy(key_bytes, VARDATA_ANY(k), key_len);
				}
			}
			systable_endscan(scan);
			table_close(rel, AccessShareLock);
		}
	}
	return key_len;
}

/*
 * The signature of a message body published by transaction xid: HMAC-SHA256
 * of the xid (4 bytes, big-endian) and the body, with the database's key, in
 * hex (SIGNATURE_HEX digits and a NUL).  False if there is no key.
 */
bool
es_publish_signature(TransactionId xid, const char *body, Size len, char *hex)
{
	uint8		tag[PG_SHA256_DIGEST_LENGTH];
	uint8		x[4];
	pg_hmac_ctx *ctx;
	int			i;

	if (publish_key() <= 0)
		return false;
	x[0] = (uint8) (xid >> 24);
	x[1] = (uint8) (xid >> 16);
	x[2] = (uint8) (xid >> 8);
	x[3] = (uint8) xid;
	ctx = pg_hmac_create(PG_SHA256);
	if (ctx == NULL || pg_hmac_init(ctx, key_bytes, key_len) < 0 ||
		pg_hmac_update(ctx, x, sizeof(x)) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) body, len) < 0 ||
		pg_hmac_final(ctx, tag, sizeof(tag)) < 0)
		elog(ERROR, "event_store: could not compute a message signature: %s",
			 ctx ? pg_hmac_error(ctx) : "out of memory");
	pg_hmac_free(ctx);
	for (i = 0; i < PG_SHA256_DIGEST_LENGTH; i++)
		snprintf(hex + 2 * i, 3, "%02x", tag[i]);
	return true;
}

/*
 * A message of ours in the WAL: its signature and the JSON body, checked
 * against the transaction that wrote it.  Returns the body (NUL-terminated,
 * palloc'd), or NULL if publish() did not write it in that transaction (a
 * forged message, one copied from another transaction, or malformed).
 */
char *
es_publish_verify(TransactionId xid, const char *message, Size size)
{
	char		expected[SIGNATURE_HEX + 1];

	if (size <= SIGNATURE_HEX + 1 || message[SIGNATURE_HEX] != ' ')
		return NULL;
	if (!es_publish_signature(xid, message + SIGNATURE_HEX + 1, size - SIGNATURE_HEX - 1, expected))
		return NULL;
	if (timingsafe_bcmp(expected, message, SIGNATURE_HEX) != 0)
		return NULL;
	return pnstrdup(message + SIGNATURE_HEX + 1, size - SIGNATURE_HEX - 1);
}

/* A topic or key: an identifier (not empty, at most ES_MAX_ID_BYTES bytes). */
static char *
check_name(text *t, const char *what)
{
	return text_to_cstring(es_check_identifier(PointerGetDatum(t), false, what));
}

/*
 * publish(topic text, payload jsonb, key text DEFAULT NULL) RETURNS pg_lsn:
 * the LSN of the message.
 */
Datum
event_store_publish(PG_FUNCTION_ARGS)
{
	char	   *topic;
	Jsonb	   *payload;
	StringInfoData body;
	XLogRecPtr	lsn;

	es_require_arg(fcinfo, 0, "topic");
	es_require_arg(fcinfo, 1, "payload");
	if (wal_level < WAL_LEVEL_LOGICAL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("publish needs wal_level = logical"),
				 errdetail("The current wal_level is \"%s\": the message could not be decoded.",
						   GetConfigOption("wal_level", false, false)),
				 errhint("Set wal_level = logical in postgresql.conf and restart the server.")));

	topic = check_name(PG_GETARG_TEXT_PP(0), "topic");
	payload = PG_GETARG_JSONB_P(1);

	initStringInfo(&body);
	appendStringInfoString(&body, "{\"topic\": ");
	escape_json(&body, topic);
	appendStringInfoString(&body, ", \"key\": ");
	if (PG_ARGISNULL(2))
		appendStringInfoString(&body, "null");
	else
		escape_json(&body, check_name(PG_GETARG_TEXT_PP(2), "key"));
	appendStringInfoString(&body, ", \"payload\": ");
	JsonbToCString(&body, &payload->root, VARSIZE(payload));
	appendStringInfoChar(&body, '}');

	/* signed, with this transaction's id: the plugin delivers nothing else */
	{
		char		signature[SIGNATURE_HEX + 1];
		StringInfoData msg;

		if (!es_publish_signature(GetTopTransactionId(), body.data, body.len, signature))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the installed version of extension \"event_store\" cannot sign messages"),
					 errhint("Run ALTER EXTENSION event_store UPDATE.")));
		initStringInfo(&msg);
		appendStringInfo(&msg, "%s %s", signature, body.data);
		lsn = LogLogicalMessage(ES_MESSAGE_PREFIX, msg.data, msg.len, true);
	}
	PG_RETURN_LSN(lsn);
}
