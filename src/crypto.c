/*-------------------------------------------------------------------------
 *
 * crypto.c
 *	  Personal data: per-subject encryption and crypto-shredding.  This file
 *	  starts the subsystem and ends its transactions; the work is in
 *
 *	  crypto_bridge.c  the pgcrypto bridge: seal, unseal, MACs, randomness
 *	  crypto_keys.c    the key-encryption key, subject keys and their caches
 *	  crypto_rules.c   protect() and the rules of protected event types
 *	  crypto_paths.c   the JSON paths of the rules
 *	  crypto_fields.c  protecting fields on append, revealing them on read
 *	  crypto_forget.c  forget(), and overwriting the keys it deletes
 *
 * The idea: protect(event_type, subject, fields) marks fields of an event
 * type as personal data of the subject its `subject` path names.  Appends
 * encrypt those fields with a key of the subject's own, itself stored
 * wrapped by the key-encryption key (a setting, never in a table); readers
 * with EXECUTE on personal_data_access() see them in clear, others see the
 * stored ciphertext.  forget(subject) destroys the subject's key: its
 * fields read as JSON null ever after, in every copy of the log -- backups
 * and replicas included -- without rewriting one event.
 *
 * Caches (per backend): the rules by event type (crypto_rules.c), subject
 * -> key id and key id -> key (crypto_keys.c), decrypted field values by
 * ciphertext (crypto_fields.c), the pgcrypto functions (crypto_bridge.c)
 * and the right to read in clear.  They are dropped on an invalidation of
 * what they derive from (watched through catalog.c: protect(), forget()
 * and rewrap_keys() send one for their table, delivered to every backend
 * at commit) and at every (sub)transaction abort, so that nothing an
 * aborted transaction created survives in them.  Key bytes and decrypted
 * values are zeroed when dropped, and so are the copies handed to pgcrypto
 * once it returns (what pgcrypto and OpenSSL copy internally, and the
 * decrypted values handed on to readers, are beyond reach: README, "What
 * remains").
 *
 * Errors never carry plaintext field values, subjects or key bytes.
 *
 * Locking: see crypto_keys.c (the subject's lock) and crypto_forget.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/syscache.h"

#include "crypto.h"

/* The subject keys or the tombstones changed: every key cache goes. */
static void
drop_key_caches(void)
{
	crypto_drop_key_caches();
	crypto_drop_plain_cache();
}

/* A function, schema or role changed: look pgcrypto and the read right up again. */
static void
functions_or_roles_changed(void)
{
	crypto_pgcrypto_reset();
	crypto_access_reset();
}

static void
crypto_xact_callback(XactEvent event, void *arg)
{
	(void) arg;
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		drop_key_caches();
		crypto_drop_rules();
	}
	crypto_forget_xact_callback(event);
}

static void
crypto_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	(void) parentSubid;
	(void) arg;
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		drop_key_caches();
		crypto_drop_rules();
		crypto_forget_subxact_abort(mySubid);
	}
}

/*
 * Called once per process from _PG_init, before the event_store prefix is
 * reserved: settings, invalidation and transaction callbacks.
 */
void
es_crypto_init(void)
{
	crypto_define_kek_settings();

	ES_WATCH_RELATION(keys_relid, drop_key_caches);
	ES_WATCH_RELATION(tomb_relid, drop_key_caches);
	ES_WATCH_RELATION(rules_relid, crypto_drop_rules);
	es_watch_syscache(PROCOID, functions_or_roles_changed);
	es_watch_syscache(NAMESPACEOID, functions_or_roles_changed);
	es_watch_syscache(AUTHMEMROLEMEM, functions_or_roles_changed);
	RegisterXactCallback(crypto_xact_callback, NULL);
	RegisterSubXactCallback(crypto_subxact_callback, NULL);
}
