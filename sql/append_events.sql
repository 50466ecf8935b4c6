-- append_events: all-or-nothing batches.
\set SHOW_CONTEXT errors

SELECT event_store.append_events('account-201', '[
  {"type": "AccountCreated", "data": {"owner": "Carol"}},
  {"type": "Deposited", "data": {"amount": 50}, "metadata": {"source": "atm"}},
  {"type": "Withdrawn", "data": {"amount": 20}, "schema_version": 2, "id": "00000000-0000-4000-8000-00000000a001"}
]', expected_version => 0);
SELECT stream_version, event_type, schema_version, data, metadata FROM event_store.read_stream('account-201');
SELECT event_id FROM event_store.read_stream('account-201', from_version => 3);

-- expected version checked for the whole batch
SELECT event_store.append_events('account-201', '[{"type": "Deposited", "data": {"amount": 1}}]', expected_version => 2);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('account-201', '[{"type": "Deposited", "data": {"amount": 1}}, {"type": "Deposited", "data": {"amount": 2}}]', expected_version => 3);
SELECT event_store.append_events('account-201', '[{"type": "Deposited", "data": {"amount": 3}}]');

-- all or nothing: a bad element anywhere writes nothing, and says which one
SELECT event_store.append_events('account-201', '[{"type": "Deposited", "data": {"amount": 4}}, {"type": "Deposited", "data": [4]}]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('account-201', '[{"type": "Deposited", "data": {"amount": 4}}, {"type": "Deposited", "data": {}, "id": "00000000-0000-4000-8000-00000000a001"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.stream_version('account-201');

-- an empty batch appends nothing, checks the expected version and returns the version
SELECT event_store.append_events('account-201', '[]');
SELECT event_store.append_events('account-201', '[]', expected_version => 6);
SELECT event_store.append_events('account-201', '[]', expected_version => 5);
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('nobody-1', '[]', expected_version => 0);

-- re-sent batch: nothing duplicated, the version of its last event returned
SELECT event_store.append_events('order-301', '[
  {"type": "OrderPlaced", "data": {"total": 5}, "id": "00000000-0000-4000-8000-00000000b001"},
  {"type": "OrderPaid", "data": {"total": 5}, "id": "00000000-0000-4000-8000-00000000b002"}
]', expected_version => 0);
SELECT event_store.append_events('order-301', '[
  {"type": "OrderPlaced", "data": {"total": 5}, "id": "00000000-0000-4000-8000-00000000b001"},
  {"type": "OrderPaid", "data": {"total": 5}, "id": "00000000-0000-4000-8000-00000000b002"}
]', expected_version => 0);
-- a retry that carries one more event: the known ones are skipped, the new one appended after them
SELECT event_store.append_events('order-301', '[
  {"type": "OrderPlaced", "data": {"total": 5}, "id": "00000000-0000-4000-8000-00000000b001"},
  {"type": "OrderPaid", "data": {"total": 5}, "id": "00000000-0000-4000-8000-00000000b002"},
  {"type": "OrderShipped", "data": {}, "id": "00000000-0000-4000-8000-00000000b003"}
]', expected_version => 0);
-- a batch whose last event is known returns that event's version
SELECT event_store.append_events('order-301', '[{"type": "OrderPaid", "data": {"total": 5}, "id": "00000000-0000-4000-8000-00000000b002"}]');
-- the same id twice in one batch: the second is the re-sent first
SELECT event_store.append_events('order-302', '[
  {"type": "OrderPlaced", "data": {}, "id": "00000000-0000-4000-8000-00000000c001"},
  {"type": "OrderPlaced", "data": {}, "id": "00000000-0000-4000-8000-00000000c001"}
]');
SELECT stream_id, stream_version, event_type FROM event_store.events WHERE stream_id LIKE 'order-30%' ORDER BY 1, 2;

-- malformed elements
SELECT event_store.append_events('bad-1', '{"type": "A", "data": {}}');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '"A"');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[1]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[[]]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"data": {}}]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"type": 7, "data": {}}]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"type": null, "data": {}}]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"type": "", "data": {}}]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"type": "A"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"type": "A", "data": null}]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"type": "A", "data": "x"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"type": "A", "data": {}, "metadata": [1]}]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"type": "A", "data": {}, "id": "not-a-uuid"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"type": "A", "data": {}, "id": 5}]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"type": "A", "data": {}, "schema_version": 1.5}]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"type": "A", "data": {}, "schema_version": "2"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"type": "A", "data": {}, "schema_version": 0}]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"type": "A", "data": {}, "schema_version": 99999999999}]');
\echo :LAST_ERROR_SQLSTATE
SELECT event_store.append_events('bad-1', '[{"type": "A", "data": {}, "Type": "B"}]');
\echo :LAST_ERROR_SQLSTATE
-- null metadata, id and schema_version mean "not given"
SELECT event_store.append_events('ok-1', '[{"type": "A", "data": {}, "metadata": null, "id": null, "schema_version": null}]');
SELECT stream_version, schema_version, metadata FROM event_store.read_stream('ok-1');
SELECT count(*) FROM event_store.events WHERE stream_id = 'bad-1';

-- 10,000 events in one batch, numbered 1..10000 in batch order
SELECT event_store.append_events('big-1',
       (SELECT jsonb_agg(jsonb_build_object('type', 'Tick', 'data', jsonb_build_object('i', i)) ORDER BY i)
          FROM generate_series(1, 10000) i));
SELECT count(*), min(stream_version), max(stream_version),
       bool_and((data->>'i')::bigint = stream_version) AS in_order
  FROM event_store.read_stream('big-1');

-- The rows of a batch after the first take the stream's head from the row
-- before, unless that row may not be in the table.  A trigger firing after
-- ours may skip a row: the next one is numbered on top of what is there.
CREATE FUNCTION skip_marked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.data ? 'skip' THEN RETURN NULL; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER zz_skip_marked BEFORE INSERT ON event_store.events
  FOR EACH ROW EXECUTE FUNCTION skip_marked();
SELECT event_store.append_events('after-skip-1',
  '[{"type": "A", "data": {}}, {"type": "B", "data": {"skip": 1}}, {"type": "C", "data": {}}]');
SELECT stream_version, event_type FROM event_store.read_stream('after-skip-1');
DROP TRIGGER zz_skip_marked ON event_store.events;
DROP FUNCTION skip_marked();
-- A row inserted in a subtransaction that is rolled back (an earlier
-- trigger's nested append, in an exception block, refused by an AFTER
-- trigger): the next row is numbered on top of what is there.
CREATE FUNCTION nest_marked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.data ? 'nest' THEN
    BEGIN
      INSERT INTO event_store.events (stream_id, event_type, data)
        VALUES (NEW.stream_id, 'Nested', '{}');
    EXCEPTION WHEN raise_exception THEN
      RAISE NOTICE 'nested append rolled back: %', SQLERRM;
    END;
  END IF;
  RETURN NEW;
END $$;
CREATE FUNCTION refuse_nested() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.event_type = 'Nested' THEN RAISE EXCEPTION 'no nested event'; END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER aa_nest_marked BEFORE INSERT ON event_store.events
  FOR EACH ROW EXECUTE FUNCTION nest_marked();
CREATE TRIGGER refuse_nested AFTER INSERT ON event_store.events
  FOR EACH ROW EXECUTE FUNCTION refuse_nested();
SELECT event_store.append_events('after-nest-1',
  '[{"type": "A", "data": {}}, {"type": "B", "data": {"nest": 1}}, {"type": "C", "data": {}}]');
SELECT stream_version, event_type FROM event_store.read_stream('after-nest-1');
-- ... and a nested append that stays: numbered between the rows of the batch
DROP TRIGGER refuse_nested ON event_store.events;
SELECT event_store.append_events('after-nest-2',
  '[{"type": "A", "data": {}}, {"type": "B", "data": {"nest": 1}}, {"type": "C", "data": {}}]');
SELECT stream_version, event_type FROM event_store.read_stream('after-nest-2');
DROP TRIGGER aa_nest_marked ON event_store.events;
DROP FUNCTION nest_marked();
DROP FUNCTION refuse_nested();

-- The shared cache of stream heads (stream_heads.c).  An insert that does
-- not publish its head (a plain INSERT) removes the stream's entry: the next
-- append reads the primary key.
BEGIN;
SELECT event_store.append('cached-1', 'A', '{}');
INSERT INTO event_store.events (stream_id, event_type, data) VALUES ('cached-1', 'B', '{}');
SELECT event_store.append('cached-1', 'C', '{}');
COMMIT;
SELECT stream_version, event_type FROM event_store.read_stream('cached-1');
-- a head rolled back with its transaction is no head
BEGIN;
SELECT event_store.append('cached-1', 'D', '{}');
ROLLBACK;
SELECT event_store.append('cached-1', 'D', '{}');
-- a row written past the trigger (a superuser, the trigger disabled): the
-- ALTER TABLE that enables the trigger again forgets the cache
ALTER TABLE event_store.events DISABLE TRIGGER version_events;
INSERT INTO event_store.events (stream_id, stream_version, event_id, event_type, schema_version, data, metadata, recorded_at)
VALUES ('cached-1', 5, gen_random_uuid(), 'E', 1, '{}', '{}', now());
ALTER TABLE event_store.events ENABLE ALWAYS TRIGGER version_events;
SELECT event_store.append('cached-1', 'F', '{}');
SELECT stream_version, event_type FROM event_store.read_stream('cached-1');
-- a stream id longer than the cache keeps (64 bytes): read from the key
SELECT event_store.append(repeat('x', 65), 'A', '{}'), event_store.append(repeat('x', 65), 'B', '{}');
-- A row inserted by another trigger during an append (a nested INSERT) is
-- not the append's: ON CONFLICT may skip it after our trigger numbered it.
-- Neither the next row of the batch nor the cache takes its version.
CREATE UNIQUE INDEX mirror_once ON event_store.events ((data->>'k')) WHERE event_type = 'Mirror';
CREATE FUNCTION mirror() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.event_type = 'Main' THEN
    INSERT INTO event_store.events (stream_id, event_type, data)
      VALUES (NEW.stream_id, 'Mirror', NEW.data) ON CONFLICT DO NOTHING;
  END IF;
  RETURN CASE WHEN TG_WHEN = 'BEFORE' THEN NEW END;
END $$;
CREATE TRIGGER mirror AFTER INSERT ON event_store.events FOR EACH ROW EXECUTE FUNCTION mirror();
SELECT event_store.append('mirror-1', 'Main', '{"k": 1}');
SELECT event_store.append('mirror-1', 'Main', '{"k": 1}');
SELECT event_store.append('mirror-1', 'Other', '{}');
SELECT stream_version, event_type FROM event_store.read_stream('mirror-1');
DROP TRIGGER mirror ON event_store.events;
CREATE TRIGGER a_mirror BEFORE INSERT ON event_store.events FOR EACH ROW EXECUTE FUNCTION mirror();
SELECT event_store.append_events('mirror-2', '[{"type": "Main", "data": {"k": 2}}, {"type": "Main", "data": {"k": 2}}, {"type": "Other", "data": {}}]');
SELECT event_store.append('mirror-2', 'Main', '{"k": 2}');
SELECT stream_version, event_type FROM event_store.read_stream('mirror-2');
DROP TRIGGER a_mirror ON event_store.events;
DROP FUNCTION mirror();
DROP INDEX event_store.mirror_once;
-- The trigger enabled for origin only (ENABLE TRIGGER, not ENABLE ALWAYS):
-- a session in replica role inserts past it, so the cache is not used
ALTER TABLE event_store.events ENABLE TRIGGER version_events;
SELECT event_store.append('origin-1', 'A', '{}');
SET session_replication_role = replica;
INSERT INTO event_store.events VALUES ('origin-1', 2, gen_random_uuid(), 'B', 1, '{}', '{}', now());
RESET session_replication_role;
SELECT event_store.append('origin-1', 'C', '{}');
ALTER TABLE event_store.events ENABLE ALWAYS TRIGGER version_events;
-- the trigger replaced for a while: rows inserted past it are seen after
CREATE FUNCTION pass() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
SELECT event_store.append('replaced-1', 'A', '{}');
CREATE OR REPLACE TRIGGER version_events BEFORE INSERT ON event_store.events FOR EACH ROW EXECUTE FUNCTION pass();
INSERT INTO event_store.events VALUES ('replaced-1', 2, gen_random_uuid(), 'B', 1, '{}', '{}', now());
CREATE OR REPLACE TRIGGER version_events BEFORE INSERT ON event_store.events FOR EACH ROW EXECUTE FUNCTION event_store._version_events();
ALTER TABLE event_store.events ENABLE ALWAYS TRIGGER version_events;
SELECT event_store.append('replaced-1', 'C', '{}');
DROP FUNCTION pass();
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'event_store.events'::regclass AND NOT tgisinternal ORDER BY 1;
-- A row a constraint's function inserts during an append (same trigger
-- depth, a nested statement) is not the append's either.  It comes before
-- the append's row is in the table and takes its version: the primary key
-- refuses the append (as without the shortcuts); no version is skipped.
CREATE UNIQUE INDEX mirror_once ON event_store.events (stream_id) WHERE event_type = 'Mirror';
CREATE FUNCTION mirror_check(s text, t text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF t = 'Main' THEN
    INSERT INTO event_store.events (stream_id, event_type, data) VALUES (s, 'Mirror', '{}')
      ON CONFLICT DO NOTHING;
  END IF;
  RETURN true;
END $$;
ALTER TABLE event_store.events ADD CONSTRAINT mirror_check CHECK (mirror_check(stream_id, event_type));
SELECT event_store.append('check-1', 'Main', '{}');
SELECT event_store.append('check-1', 'Main', '{}');
SELECT event_store.append_events('check-1', '[{"type": "Main", "data": {}}, {"type": "Other", "data": {}}]');
SELECT stream_version, event_type FROM event_store.read_stream('check-1');
ALTER TABLE event_store.events DROP CONSTRAINT mirror_check;
DROP FUNCTION mirror_check(text, text);
DROP INDEX event_store.mirror_once;
-- a session that never appended alters the table: the cache is emptied
-- all the same (the appending session is gone)
SELECT event_store.append('fresh-1', 'A', '{}');
\c
BEGIN;
ALTER TABLE event_store.events DISABLE TRIGGER version_events;
INSERT INTO event_store.events VALUES ('fresh-1', 2, gen_random_uuid(), 'B', 1, '{}', '{}', now());
ALTER TABLE event_store.events ENABLE ALWAYS TRIGGER version_events;
COMMIT;
\c
SELECT event_store.append('fresh-1', 'C', '{}');
