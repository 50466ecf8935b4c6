-- Personal data: protect, encryption at append, transparent decryption,
-- forget (crypto-shredding), keys wrapped by the key-encryption key.
\set SHOW_CONTEXT never
\set VERBOSITY default
-- pgcrypto is found at run time, wherever it is installed; event_store does not depend on it
CREATE EXTENSION pgcrypto;

-- no key-encryption key yet: protecting works, appending a protected event does not
SELECT event_store.protect('UserRegistered', '$.user_id', '{$.email, $.profile.name}');
SELECT event_store.append('user-0', 'UserRegistered', '{"user_id": "u0", "email": "zoe@example.com"}');
\echo :LAST_ERROR_SQLSTATE
-- a malformed one is refused without echoing it
SET event_store.key_encryption_key = 'not-a-key-zoe@example.com';
SELECT event_store.append('user-0', 'UserRegistered', '{"user_id": "u0", "email": "zoe@example.com"}');
\echo :LAST_ERROR_SQLSTATE
SET event_store.key_encryption_key = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
-- the setting is never shown
SHOW event_store.key_encryption_key;
SELECT count(*) FROM pg_settings WHERE name LIKE 'event_store.%key%';
-- ... never written into the data directory, never set by others
ALTER SYSTEM SET event_store.key_encryption_key = 'ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff';
\echo :LAST_ERROR_SQLSTATE
CREATE ROLE regress_crypto_nobody;
SET ROLE regress_crypto_nobody;
SET event_store.key_encryption_key = 'ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff';
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE regress_crypto_nobody;

-- protect: bad inputs
SELECT event_store.protect(NULL, '$.user_id', '{$.email}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('T', NULL, '{$.email}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('T', '$.user_id', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('', '$.user_id', '{$.email}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect(repeat('t', 1025), '$.user_id', '{$.email}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('T', '', '{$.email}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('T', 'user_id', '{$.email}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('T', '$', '{$.email}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('T', '$.user_id', '{$.}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('T', '$.user_id', '{$..email}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('T', '$.user_id', '{"$.e mail"}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('T', '$.user_id', '{"$.emails[0]"}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('T', '$.user_id', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('T', '$.user_id', ARRAY['$.email', NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('T', '$.user_id', '{{$.a}, {$.b}}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('T', '$.user_id', '{$.owner, $.owner.email}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('T', '$.user_id', '{$.email, $.email}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('T', '$.user_id', (SELECT array_agg('$.f' || i) FROM generate_series(1, 33) i));
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('T', '$.' || repeat('a.', 16) || 'b', '{$.email}');
\echo :LAST_ERROR_SQLSTATE
-- an event type that has no event yet can be protected (that is the normal order)
SELECT event_store.protect('NeverAppended', '$.id', '{$.secret}');
SELECT event_type, subject, fields FROM event_store.protected_types ORDER BY 1;

-- protect -> append -> read: two subjects
SELECT event_store.append('user-1', 'UserRegistered',
       '{"user_id": "u1", "email": "alice@example.com", "profile": {"name": "Alice", "age": 30}}');
SELECT event_store.append('user-2', 'UserRegistered',
       '{"user_id": "u2", "email": "bob@example.com", "profile": {"name": "Bob", "age": 40}}');
-- a plain INSERT is protected too; a missing field is left out
INSERT INTO event_store.events (stream_id, event_type, data)
VALUES ('user-1', 'UserRegistered', '{"user_id": "u1", "email": "alice@example.org"}');
-- an event type without a rule is stored as given
SELECT event_store.append('user-1', 'LoggedIn', '{"user_id": "u1", "ip": "192.0.2.1"}');

-- stored: ciphertext (base64), never the plaintext; the metadata names the key and fields
SELECT stream_id, stream_version,
       data->>'user_id' AS subject,
       data::text LIKE '%alice%' OR data::text LIKE '%Alice%' OR data::text LIKE '%bob%' AS plaintext_stored,
       data->>'email' ~ '^[A-Za-z0-9+/]{60,}={0,2}$' AS email_is_ciphertext,
       data->'profile'->'age' AS age,
       jsonb_typeof(metadata->'protected'->'key') AS key, metadata->'protected'->'fields' AS fields
  FROM event_store.events WHERE stream_id LIKE 'user-%' ORDER BY stream_id, stream_version;
-- read: in clear
SELECT stream_version, event_type, data, metadata ? 'redacted' AS redacted
  FROM event_store.read_stream('user-1');
SELECT stream_version, data FROM event_store.read_stream('user-2');
SELECT count(*) AS keys, count(DISTINCT key_id) AS distinct_keys,
       bool_and(length(wrapped_key) = 16 + 80 + 32) AS wrapped_64_byte_keys
  FROM event_store.subject_keys;
SELECT * FROM event_store.subject_streams('u1');

-- the same plaintext encrypted twice gives different ciphertext
SELECT event_store.append('user-3', 'UserRegistered', '{"user_id": "u3", "email": "carol@example.com"}');
SELECT event_store.append('user-3', 'UserRegistered', '{"user_id": "u3", "email": "carol@example.com"}');
SELECT count(DISTINCT data->>'email') AS distinct_ciphertexts
  FROM event_store.events WHERE stream_id = 'user-3';
SELECT count(DISTINCT data->>'email') AS distinct_plaintexts
  FROM event_store.read_stream('user-3');
-- ... also 100 times in one statement: the IVs come from a pool refilled every 32
-- IVs, and every one differs (rolled back: later tests count user-3's events)
BEGIN;
SELECT event_store.append_events('user-3',
       (SELECT jsonb_agg(jsonb_build_object('type', 'UserRegistered',
                                            'data', '{"user_id": "u3", "email": "carol@example.com"}'::jsonb))
          FROM generate_series(1, 100)));
SELECT count(*) AS events, count(DISTINCT data->>'email') AS distinct_ciphertexts,
       count(DISTINCT substr(decode(data->>'email', 'base64'), 1, 16)) AS distinct_ivs
  FROM event_store.events WHERE stream_id = 'user-3';
ROLLBACK;

-- a re-sent protected event is recognised (compared in clear), by append and by INSERT
SELECT event_store.append('user-3', 'UserRegistered', '{"user_id": "u3", "email": "carol@example.net"}',
       event_id => '00000000-0000-4000-8000-0000000c0001');
SELECT event_store.append('user-3', 'UserRegistered', '{"user_id": "u3", "email": "carol@example.net"}',
       event_id => '00000000-0000-4000-8000-0000000c0001');
INSERT INTO event_store.events (stream_id, event_type, data, event_id)
VALUES ('user-3', 'UserRegistered', '{"user_id": "u3", "email": "carol@example.net"}',
        '00000000-0000-4000-8000-0000000c0001');
SELECT event_store.append_events('user-3', '[{"type": "UserRegistered", "id": "00000000-0000-4000-8000-0000000c0001", "data": {"user_id": "u3", "email": "carol@example.net"}}]');
-- ... but the same id with other content is a conflict
SELECT event_store.append('user-3', 'UserRegistered', '{"user_id": "u3", "email": "mallory@example.net"}',
       event_id => '00000000-0000-4000-8000-0000000c0001');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.stream_version('user-3');

-- the subject: a number works, a missing, empty or non-scalar one is refused
SELECT event_store.protect('OrderPlaced', '$.customer.id', '{$.customer.address}');
SELECT event_store.append('pd-order-1', 'OrderPlaced', '{"customer": {"id": 42, "address": {"street": "Main St 1"}}}');
SELECT data FROM event_store.read_stream('pd-order-1');
SELECT event_store.append('pd-order-2', 'OrderPlaced', '{"customer": {"address": "Elm St 2"}}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('pd-order-2', 'OrderPlaced', '{"customer": {"id": "", "address": "Elm St 2"}}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('pd-order-2', 'OrderPlaced', '{"customer": {"id": {"x": 1}, "address": "Elm St 2"}}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('pd-order-2', 'OrderPlaced', '{"customer": {"id": null, "address": "Elm St 2"}}');
\echo :LAST_ERROR_SQLSTATE

-- a rule written around protect() (only the owner can) that protect() would
-- refuse: events of its type are refused (never stored in clear), others are not
INSERT INTO event_store.protected_types (event_type, subject, fields)
VALUES ('Garbled', 'not a path', '{$.email}'), ('Garbled2', '$.id', '{$.a, $.a.b}');
\c
SET event_store.key_encryption_key = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
SELECT event_store.append('garbled-1', 'Garbled', '{"id": "g1", "email": "g@example.com"}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('garbled-1', 'Garbled2', '{"id": "g1", "a": {"b": 1}}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append('garbled-1', 'Unprotected', '{"id": "g1"}');
SELECT event_store.append('user-3', 'UserRegistered', '{"user_id": "u3", "email": "carol@example.org"}');
SELECT data->>'email' AS email FROM event_store.read_stream('user-3', backwards => true, max_count => 1);
-- in a query the planner runs in parallel (the read functions run in its leader, in parallel
-- mode), from a new session: the rules and the key are read there
\c
SET event_store.key_encryption_key = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET enable_indexscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF)
SELECT r.data->>'email' FROM event_store.read_stream('user-3') r UNION ALL SELECT e.event_type FROM event_store.events e WHERE e.stream_id = 'user-3';
SELECT r.data->>'email' AS email_or_type FROM event_store.read_stream('user-3') r
UNION ALL SELECT e.event_type FROM event_store.events e WHERE e.stream_id = 'user-3' ORDER BY 1;
SELECT event_store.wait_for_pipeline('30 s');
SELECT r.data->>'email' AS email_or_type FROM event_store.read_all(0, 100000, categories => '{user}') r WHERE r.stream_id = 'user-3'
UNION ALL SELECT e.event_type FROM event_store.events e WHERE e.stream_id = 'user-3' ORDER BY 1;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
RESET enable_indexscan;
RESET enable_bitmapscan;
-- protect() sets it right: the rule applies again (here: no subject in the event)
SELECT event_store.protect('Garbled', '$.id', '{$.email}');
SELECT event_store.append('garbled-1', 'Garbled', '{"email": "g@example.com"}');
\echo :LAST_ERROR_SQLSTATE
DELETE FROM event_store.protected_types WHERE event_type LIKE 'Garbled%';
\c
SET event_store.key_encryption_key = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';

-- tampering fails loudly: a flipped byte, a truncated ciphertext, a ciphertext moved to another field
ALTER TABLE event_store.events DISABLE TRIGGER append_only;
ALTER TABLE event_store.events DISABLE TRIGGER append_only_rows;
SELECT event_store.append('tamper-1', 'UserRegistered', '{"user_id": "u4", "email": "dave@example.com", "profile": {"name": "Dave"}}',
       event_id => '00000000-0000-4000-8000-0000c0dee001');
SELECT event_store.append('tamper-2', 'UserRegistered', '{"user_id": "u4", "email": "dave@example.com", "profile": {"name": "Dave"}}',
       event_id => '00000000-0000-4000-8000-0000c0dee002');
SELECT event_store.append('tamper-3', 'UserRegistered', '{"user_id": "u4", "email": "dave@example.com", "profile": {"name": "Dave"}}',
       event_id => '00000000-0000-4000-8000-0000c0dee003');
UPDATE event_store.events
   SET data = jsonb_set(data, '{email}', to_jsonb(encode(set_byte(decode(data->>'email', 'base64'), 20,
                        get_byte(decode(data->>'email', 'base64'), 20) # 1), 'base64')))
 WHERE stream_id = 'tamper-1';
UPDATE event_store.events
   SET data = jsonb_set(data, '{email}', to_jsonb(substr(data->>'email', 1, 64)))
 WHERE stream_id = 'tamper-2';
UPDATE event_store.events
   SET data = jsonb_set(data, '{email}', data->'profile'->'name')
 WHERE stream_id = 'tamper-3';
ALTER TABLE event_store.events ENABLE ALWAYS TRIGGER append_only;
ALTER TABLE event_store.events ENABLE ALWAYS TRIGGER append_only_rows;
SELECT data FROM event_store.read_stream('tamper-1');
\echo :LAST_ERROR_SQLSTATE
SELECT data FROM event_store.read_stream('tamper-2');
\echo :LAST_ERROR_SQLSTATE
SELECT data FROM event_store.read_stream('tamper-3');
\echo :LAST_ERROR_SQLSTATE

-- a forged "protected" marker is refused (to anyone but a superuser, who restores dumps)
CREATE ROLE regress_crypto_writer;
GRANT USAGE ON SCHEMA event_store TO regress_crypto_writer;
GRANT INSERT ON event_store.events TO regress_crypto_writer;
GRANT EXECUTE ON FUNCTION event_store.append(text, text, jsonb, jsonb, bigint, uuid, integer) TO regress_crypto_writer;
SET ROLE regress_crypto_writer;
SELECT event_store.append('user-5', 'Note', '{}', '{"protected": {"key": "x", "fields": []}}');
\echo :LAST_ERROR_SQLSTATE
-- a writer with no right on the key table still appends protected events (a new subject too)
SELECT event_store.append('user-5', 'UserRegistered', '{"user_id": "u5", "email": "erin@example.com"}');
SELECT * FROM event_store.subject_keys;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- pgcrypto is called with the caller's EXECUTE right checked
REVOKE EXECUTE ON FUNCTION encrypt_iv(bytea, bytea, bytea, text) FROM PUBLIC;
SET ROLE regress_crypto_writer;
SELECT event_store.append('user-5', 'UserRegistered', '{"user_id": "u5", "email": "erin@example.org"}');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT EXECUTE ON FUNCTION encrypt_iv(bytea, bytea, bytea, text) TO PUBLIC;
SET ROLE regress_crypto_writer;
SELECT event_store.append('user-5', 'UserRegistered', '{"user_id": "u5", "email": "erin@example.org"}');
RESET ROLE;

-- forget: the protected fields read back as null, the rest intact, the metadata says so
SELECT event_store.forget('u1');
SELECT stream_version, event_type, data, metadata->>'redacted' AS redacted
  FROM event_store.read_stream('user-1');
-- the second subject is untouched
SELECT stream_version, data, metadata ? 'redacted' AS redacted FROM event_store.read_stream('user-2');
-- the key is gone, a tombstone (a hash) remains, the streams record is empty
SELECT count(*) FROM event_store.subject_keys WHERE subject = 'u1';
SELECT count(*) FROM event_store.forgotten_subjects
 WHERE subject_hash = sha256(convert_to('u1', 'UTF8'));
SELECT * FROM event_store.subject_streams('u1');
-- forget twice: nothing more happens
SELECT event_store.forget('u1');
-- the audit event holds no personal data
SELECT stream_version, event_type, data->>'subject_sha256' = encode(sha256(convert_to('u1', 'UTF8')), 'hex') AS hashed,
       data->'streams' AS streams, data::text LIKE '%u1%' AS names_subject
  FROM event_store.read_stream('event_store-subjects');
-- appending for a forgotten subject is refused, also after a new session
SELECT event_store.append('user-1', 'UserRegistered', '{"user_id": "u1", "email": "alice@example.com"}');
\echo :LAST_ERROR_SQLSTATE
\c
SET event_store.key_encryption_key = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
SELECT event_store.append('user-1', 'UserRegistered', '{"user_id": "u1", "email": "alice@example.com"}');
\echo :LAST_ERROR_SQLSTATE
SELECT data, metadata->>'redacted' AS redacted FROM event_store.read_stream('user-1', max_count => 1);
-- a subject never seen can be forgotten in advance
SELECT event_store.forget('u-never');
SELECT event_store.append('user-9', 'UserRegistered', '{"user_id": "u-never", "email": "x@example.com"}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.stream_version('event_store-subjects');
-- forget: bad inputs
SELECT event_store.forget(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.forget('');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.forget(repeat('s', 1025));
\echo :LAST_ERROR_SQLSTATE

-- a wrapped key that was altered fails loudly (and the cache is per session)
UPDATE event_store.subject_keys
   SET wrapped_key = set_byte(wrapped_key, 30, get_byte(wrapped_key, 30) # 1) WHERE subject = 'u2';
\c
SET event_store.key_encryption_key = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
\set VERBOSITY terse
SELECT data FROM event_store.read_stream('user-2');
\echo :LAST_ERROR_SQLSTATE
-- another key-encryption key cannot unwrap
SET event_store.key_encryption_key = 'ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100';
SELECT data FROM event_store.read_stream('user-3', max_count => 1);
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default

-- rotation: the new key current, the old one previous, rewrap, then the old one is not needed
SET event_store.previous_key_encryption_key = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
SELECT data FROM event_store.read_stream('user-3', max_count => 1);
-- (flip u2's altered byte back first)
UPDATE event_store.subject_keys
   SET wrapped_key = set_byte(wrapped_key, 30, get_byte(wrapped_key, 30) # 1) WHERE subject = 'u2';
SELECT event_store.rewrap_keys();
SELECT count(DISTINCT kek_id) FROM event_store.subject_keys;
\c
SET event_store.key_encryption_key = 'ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100';
SELECT data FROM event_store.read_stream('user-3', max_count => 1);
SELECT data FROM event_store.read_stream('user-2');
SELECT event_store.rewrap_keys();

-- privileges: nothing for PUBLIC; a role without the right cannot read keys or forget,
-- and a reader without personal_data_access() sees the fields redacted
CREATE ROLE regress_crypto_reader;
GRANT USAGE ON SCHEMA event_store TO regress_crypto_reader;
GRANT SELECT ON event_store.events TO regress_crypto_reader;
GRANT EXECUTE ON FUNCTION event_store.read_stream(text, bigint, integer, boolean, timestamptz) TO regress_crypto_reader;
SET ROLE regress_crypto_reader;
SELECT * FROM event_store.subject_keys;
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.protected_types;
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.forget('u2');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.protect('X', '$.a', '{$.b}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.rewrap_keys();
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.subject_streams('u2');
\echo :LAST_ERROR_SQLSTATE
SHOW event_store.key_encryption_key;
\echo :LAST_ERROR_SQLSTATE
SELECT data, metadata->>'redacted' AS redacted FROM event_store.read_stream('user-2');
RESET ROLE;
GRANT EXECUTE ON FUNCTION event_store.personal_data_access() TO regress_crypto_reader;
SET ROLE regress_crypto_reader;
SELECT data, metadata->>'redacted' AS redacted FROM event_store.read_stream('user-2');
RESET ROLE;
-- the admin of README.md, "Security"
CREATE ROLE regress_crypto_admin;
GRANT USAGE ON SCHEMA event_store TO regress_crypto_admin;
GRANT SELECT ON event_store.subject_keys, event_store.protected_types, event_store.forgotten_subjects TO regress_crypto_admin;
GRANT EXECUTE ON FUNCTION event_store.protect(text, text, text[]), event_store.forget(text),
                          event_store.rewrap_keys(), event_store.subject_streams(text) TO regress_crypto_admin;
SET ROLE regress_crypto_admin;
SELECT count(*) FROM event_store.subject_keys WHERE subject = 'u2';
-- subject_streams needs its EXECUTE only (the admin reads no events)
SELECT * FROM event_store.subject_streams('u2');
SELECT * FROM event_store.subject_streams(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM event_store.subject_streams('');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.forget('u2');
RESET ROLE;
SELECT data, metadata->>'redacted' AS redacted FROM event_store.read_stream('user-2');

DROP OWNED BY regress_crypto_writer, regress_crypto_reader, regress_crypto_admin;
DROP ROLE regress_crypto_writer, regress_crypto_reader, regress_crypto_admin;

-- forget deletes the snapshots of the subject's streams: a real aggregate
-- folded over protected events is folded again, from the redacted events
CREATE FUNCTION public.pd_emails(state jsonb, e event_store.event) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT jsonb_build_object('emails', coalesce(state->'emails', '[]') || jsonb_build_array(e.data->'email')) $$;
SELECT event_store.define_aggregate('pd_emails', 'public.pd_emails(jsonb, event_store.event)', '{}', 1);
SELECT event_store.protect('Signed', '$.user_id', '{$.email}');
SELECT event_store.append('pdsnap-1', 'Signed', '{"user_id": "snap-u", "email": "snap@example.com"}'),
       event_store.append('pdsnap-1', 'Signed', '{"user_id": "snap-u", "email": "snap2@example.com"}');
SELECT * FROM event_store.load_aggregate('pdsnap-1', 'pd_emails');
SELECT count(*) AS snapshots FROM event_store.snapshots WHERE stream_id = 'pdsnap-1';
SELECT event_store.forget('snap-u');
SELECT count(*) AS snapshots FROM event_store.snapshots WHERE stream_id = 'pdsnap-1';
SELECT * FROM event_store.load_aggregate('pdsnap-1', 'pd_emails');
-- snapshots never cross the right to read personal data: a fold by a role
-- without it (redacted fields) and one by a role with it (clear text) keep
-- snapshots of their own
CREATE ROLE regress_pd_handler;
GRANT USAGE ON SCHEMA event_store TO regress_pd_handler;
GRANT SELECT ON event_store.events, event_store.aggregates TO regress_pd_handler;
GRANT INSERT ON event_store.snapshots TO regress_pd_handler;
GRANT EXECUTE ON FUNCTION event_store.load_aggregate(text, text, timestamptz, bigint),
                          event_store.load_snapshot(text, text) TO regress_pd_handler;
SELECT event_store.append('pdsnap-2', 'Signed', '{"user_id": "snap-v", "email": "v@example.com"}'),
       event_store.append('pdsnap-2', 'Signed', '{"user_id": "snap-v", "email": "v2@example.com"}');
SET ROLE regress_pd_handler;
SELECT * FROM event_store.load_aggregate('pdsnap-2', 'pd_emails');
RESET ROLE;
SELECT * FROM event_store.load_aggregate('pdsnap-2', 'pd_emails');
SELECT count(*) AS snapshots, count(DISTINCT upcasters) AS views FROM event_store.snapshots WHERE stream_id = 'pdsnap-2';
SET ROLE regress_pd_handler;
SELECT * FROM event_store.load_aggregate('pdsnap-2', 'pd_emails');
SELECT * FROM event_store.load_snapshot('pdsnap-2', 'pd_emails');
-- the snapshot folded in clear is in the table, which only the functions read
SELECT state FROM event_store.snapshots WHERE stream_id = 'pdsnap-2';
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP OWNED BY regress_pd_handler;
DROP ROLE regress_pd_handler;
-- a numeric subject is its shortest decimal form: 7, 7.00 and 7e0 are the
-- subject "7" (so is the string "7"), with one key, forgotten by forget('7')
SELECT event_store.protect('Scored', '$.uid', '{$.name}');
SELECT event_store.append('score-1', 'Scored', '{"uid": 7, "name": "Ann"}'),
       event_store.append('score-1', 'Scored', '{"uid": 7.00, "name": "Ann"}'),
       event_store.append('score-1', 'Scored', '{"uid": 7e0, "name": "Ann"}'),
       event_store.append('score-1', 'Scored', '{"uid": "7", "name": "Ann"}'),
       event_store.append('score-2', 'Scored', '{"uid": 0.5e1, "name": "Bea"}'),
       event_store.append('score-3', 'Scored', '{"uid": -0.0, "name": "Cid"}');
SELECT stream_id, count(DISTINCT metadata->'protected'->>'key') AS keys
  FROM event_store.events WHERE stream_id LIKE 'score-%' GROUP BY 1 ORDER BY 1;
SELECT subject FROM event_store.subject_keys
 WHERE key_id::text IN (SELECT metadata->'protected'->>'key' FROM event_store.events WHERE stream_id LIKE 'score-%')
 ORDER BY 1;
SELECT event_store.forget('7');
SELECT event_store.append('score-1', 'Scored', '{"uid": 7.0, "name": "Ann"}');
\echo :LAST_ERROR_SQLSTATE
SELECT data->>'name' AS name, metadata->>'redacted' AS redacted FROM event_store.read_stream('score-1');
SELECT data->>'name' AS name FROM event_store.read_stream('score-2');

-- replacing fields writes the document's binary form directly: every kind of
-- value on and off the paths (strings, numbers, containers, booleans, null), paths
-- into nested objects and through values that are not objects, more than 32 keys
-- (entries holding offsets, not lengths), numbers after odd-length strings (padding).
-- Each event reads back equal to what was appended, key by key, and as large as the
-- same document parsed anew (the same layout; 6 has no protected field and is read as
-- stored, so it is left out of that); the stored one is encrypted.
SELECT event_store.protect('Shape', '$.sub',
       '{$.s, $.n, $.o, $.a.b.c, $.a.x, $.deep.l1.l2, $.k31, $.k33, $.k40, $.t, $.nul}');
CREATE TEMP TABLE shapes (i int, d jsonb);
INSERT INTO shapes VALUES
 (1, '{"sub": "s1", "s": "x", "n": 1.5, "o": {"p": [1, 2, {"q": null}]},
       "a": {"b": {"c": 12345678901234567890.5, "d": "e"}, "x": "odd"}, "z": 3}'),
 (2, '{"sub": "s2", "s": {"nested": true}, "n": "str", "pad": "abc", "t": true, "nul": null}'),
 (3, (SELECT jsonb_object_agg('k' || g, CASE g % 3 WHEN 0 THEN to_jsonb(g * 1.1)
                                                 WHEN 1 THEN to_jsonb(repeat('y', g))
                                                 ELSE jsonb_build_array(g) END)
             || '{"sub": "s3"}' FROM generate_series(1, 45) g)),
 (4, '{"sub": "s4", "deep": {"l1": {"l2": [1, "two", 3.0], "other": -1}, "m": 0.5},
       "a": "not an object", "n": false}'),
 (5, '{"sub": "s5", "a": {"b": [1]}, "n": {}, "s": [], "o": ""}'),
 (6, '{"sub": "s6", "x": 1}');
SELECT event_store.append('pdshape-' || i, 'Shape', d) FROM shapes ORDER BY i;
SELECT i, r.data = d AS equal, r.data::text = d::text AS same_text,
       CASE WHEN i < 6 THEN pg_column_size(r.data) = pg_column_size(d::text::jsonb) END AS same_size,
       (SELECT bool_and(r.data -> k = v) AND count(*) = (SELECT count(*) FROM jsonb_each(r.data))
          FROM jsonb_each(d) AS e(k, v)) AS each_key,
       r.data #> '{a,b,c}' AS abc, r.data #> '{deep,l1,l2}' AS l2, r.data -> 'k40' AS k40
  FROM shapes, event_store.read_stream('pdshape-' || i) r ORDER BY i;
SELECT i, e.data = d AS stored_equal, e.data ->> 's' ~ '^[A-Za-z0-9+/]{60,}={0,2}$' AS s_is_ciphertext,
       e.data -> 'z' AS z, e.data -> 'k2' AS k2
  FROM shapes JOIN event_store.events e ON e.stream_id = 'pdshape-' || i ORDER BY i;

-- forget refuses to run where commit could still fail after destroying the key
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT event_store.forget('snap-v');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
-- the key-encryption key can live in a file ("file:" and its path), so that it
-- is neither in postgresql.conf nor, when a reload changes it, in the server log
\getenv abs_builddir PG_ABS_BUILDDIR
\set kek_file :abs_builddir '/results/kek.hex'
COPY (SELECT 'ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100') TO :'kek_file';
SELECT set_config('event_store.key_encryption_key', 'file:' || :'kek_file', false) IS NOT NULL AS set;
SELECT data FROM event_store.read_stream('pdsnap-2');
SELECT set_config('event_store.key_encryption_key', 'file:' || :'kek_file' || '.missing', false) IS NOT NULL AS set;
DO $$ BEGIN
  PERFORM event_store.append('pdsnap-3', 'Signed', '{"user_id": "snap-w", "email": "w@example.com"}');
EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'refused with %', SQLSTATE;  -- the message names the (varying) path
END $$;
RESET event_store.key_encryption_key;
