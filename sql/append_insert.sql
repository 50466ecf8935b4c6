-- append() and append_events() insert their rows themselves when the INSERT
-- they stand for would do no more than fire the BEFORE ROW triggers, check
-- NOT NULL and insert into the heap and the indexes (append.c).  Whatever
-- else applies to an INSERT into event_store.events applies to them too,
-- exactly as to the INSERT: each case below takes it.
\set VERBOSITY default
CREATE ROLE regress_ins_writer;
CREATE ROLE regress_ins_columns;
GRANT USAGE ON SCHEMA event_store TO regress_ins_writer, regress_ins_columns;
GRANT EXECUTE ON FUNCTION event_store.append(text, text, jsonb, jsonb, bigint, uuid, integer),
                          event_store.append_events(text, jsonb, bigint)
   TO regress_ins_writer, regress_ins_columns;
GRANT INSERT ON event_store.events TO regress_ins_writer;

-- the plain case: a writer with INSERT (and no SELECT) appends
SET ROLE regress_ins_writer;
SELECT event_store.append('ins-1', 'A', '{}'), event_store.append('ins-1', 'B', '{}', expected_version => 1);
SELECT event_store.append_events('ins-1', '[{"type": "C", "data": {}}, {"type": "D", "data": {}}]', 2);
RESET ROLE;
SELECT stream_version, event_type FROM event_store.events WHERE stream_id = 'ins-1' ORDER BY 1;

-- a read-only transaction
BEGIN READ ONLY;
SELECT event_store.append('ins-ro', 'A', '{}');
ROLLBACK;
BEGIN READ ONLY;
SELECT event_store.append_events('ins-ro', '[{"type": "A", "data": {}}]');
ROLLBACK;

-- no INSERT right; then INSERT on the columns an append names
SET ROLE regress_ins_columns;
SELECT event_store.append('ins-col', 'A', '{}');
RESET ROLE;
GRANT INSERT (stream_id, stream_version, event_id, event_type, schema_version, data, metadata)
   ON event_store.events TO regress_ins_columns;
SET ROLE regress_ins_columns;
SELECT event_store.append('ins-col', 'A', '{}');
SELECT event_store.append_events('ins-col', '[{"type": "B", "data": {}}]');
RESET ROLE;

-- a NOT NULL violation (a trigger after ours clears data): the failing row is shown
-- with the columns the writer inserted, not those it may not read
CREATE FUNCTION ins_clear_data() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.data ? 'clear' THEN NEW.data := NULL; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER zz_ins_clear_data BEFORE INSERT ON event_store.events
  FOR EACH ROW EXECUTE FUNCTION ins_clear_data();
SET ROLE regress_ins_writer;
SELECT event_store.append('ins-null', 'A', '{"clear": 1}', event_id => 'a1b2c3d4-0000-4000-8000-00000000fa01');
SELECT event_store.append_events('ins-null', '[{"type": "A", "data": {}, "id": "a1b2c3d4-0000-4000-8000-00000000fa02"},
                                               {"type": "B", "data": {"clear": 1}, "id": "a1b2c3d4-0000-4000-8000-00000000fa03"}]');
RESET ROLE;
DROP TRIGGER zz_ins_clear_data ON event_store.events;
DROP FUNCTION ins_clear_data();
SELECT count(*) AS half_written FROM event_store.events WHERE stream_id = 'ins-null';

-- row-level security: a policy refuses the writer's rows
ALTER TABLE event_store.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY ins_own ON event_store.events FOR INSERT TO regress_ins_writer
  WITH CHECK (stream_id LIKE 'ins-rls-ok-%');
SET ROLE regress_ins_writer;
SELECT event_store.append('ins-rls-ok-1', 'A', '{}');
SELECT event_store.append('ins-rls-no-1', 'A', '{}');
SELECT event_store.append_events('ins-rls-no-1', '[{"type": "A", "data": {}}]');
RESET ROLE;
DROP POLICY ins_own ON event_store.events;
ALTER TABLE event_store.events DISABLE ROW LEVEL SECURITY;

-- a rule
CREATE TABLE ins_audit (stream_id text, event_type text);
CREATE RULE ins_audit AS ON INSERT TO event_store.events
  DO ALSO INSERT INTO ins_audit VALUES (NEW.stream_id, NEW.event_type);
SELECT event_store.append('ins-rule', 'A', '{}');
SELECT event_store.append_events('ins-rule', '[{"type": "B", "data": {}}, {"type": "C", "data": {}}]');
DROP RULE ins_audit ON event_store.events;
SELECT * FROM ins_audit ORDER BY event_type;

-- a CHECK constraint (the failing row, with its new id and time, left out)
\set VERBOSITY terse
ALTER TABLE event_store.events ADD CONSTRAINT ins_short_ids CHECK (length(stream_id) < 20) NOT VALID;
SELECT event_store.append('ins-check-a-long-stream-id', 'A', '{}');
SELECT event_store.append_events('ins-check-a-long-stream-id', '[{"type": "A", "data": {}}]');
SELECT event_store.append('ins-check-1', 'A', '{}');
ALTER TABLE event_store.events DROP CONSTRAINT ins_short_ids;
\set VERBOSITY default

-- a default, for the column an append leaves out (recorded_at)
ALTER TABLE event_store.events ALTER COLUMN recorded_at SET DEFAULT '2000-01-01 00:00:00+00';
SELECT event_store.append('ins-default', 'A', '{}');
SELECT event_store.append_events('ins-default', '[{"type": "B", "data": {}}]');
ALTER TABLE event_store.events ALTER COLUMN recorded_at DROP DEFAULT;
SELECT stream_version, recorded_at = '2000-01-01 00:00:00+00' AS defaulted
  FROM event_store.events WHERE stream_id = 'ins-default' ORDER BY 1;

-- statement-level triggers fire once per append, each on its own
CREATE FUNCTION ins_notice() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_LEVEL = 'ROW' THEN
    RAISE NOTICE '% % INSERT: % %', TG_WHEN, TG_LEVEL, NEW.stream_version, NEW.event_type;
  ELSE
    RAISE NOTICE '% % INSERT', TG_WHEN, TG_LEVEL;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER ins_before_statement BEFORE INSERT ON event_store.events
  FOR EACH STATEMENT EXECUTE FUNCTION ins_notice();
SELECT event_store.append('ins-statement', 'A', '{}');
SELECT event_store.append_events('ins-statement', '[{"type": "B", "data": {}}, {"type": "C", "data": {}}]');
DROP TRIGGER ins_before_statement ON event_store.events;
CREATE TRIGGER ins_after_statement AFTER INSERT ON event_store.events
  FOR EACH STATEMENT EXECUTE FUNCTION ins_notice();
SELECT event_store.append('ins-statement', 'D', '{}');
SELECT event_store.append_events('ins-statement', '[{"type": "E", "data": {}}, {"type": "F", "data": {}}]');
DROP TRIGGER ins_after_statement ON event_store.events;
-- an AFTER ROW trigger (a foreign key's is one) sees every row, versioned
CREATE TRIGGER ins_after_row AFTER INSERT ON event_store.events
  FOR EACH ROW EXECUTE FUNCTION ins_notice();
SELECT event_store.append('ins-statement', 'G', '{}');
SELECT event_store.append_events('ins-statement', '[{"type": "H", "data": {}}, {"type": "I", "data": {}}]');
DROP TRIGGER ins_after_row ON event_store.events;
DROP FUNCTION ins_notice();

-- a column changed: an identity column refuses the value an append gives
BEGIN;
ALTER TABLE event_store.events ALTER COLUMN schema_version ADD GENERATED ALWAYS AS IDENTITY;
SELECT event_store.append('ins-identity', 'A', '{}');
ROLLBACK;
BEGIN;
ALTER TABLE event_store.events ALTER COLUMN schema_version ADD GENERATED ALWAYS AS IDENTITY;
SELECT event_store.append_events('ins-identity', '[{"type": "A", "data": {}}]');
ROLLBACK;

-- a deferred constraint (an exclusion constraint, as strict as a unique
-- key: one event of each type per stream, for these streams) is checked at
-- commit
ALTER TABLE event_store.events ADD CONSTRAINT ins_once
  EXCLUDE USING btree (stream_id WITH =, event_type WITH =) WHERE (stream_id LIKE 'ins-deferred-%')
  DEFERRABLE INITIALLY DEFERRED;
BEGIN;
SELECT event_store.append('ins-deferred-1', 'A', '{}');
SELECT event_store.append('ins-deferred-1', 'A', '{}');
COMMIT;
BEGIN;
SELECT event_store.append_events('ins-deferred-2', '[{"type": "A", "data": {}}, {"type": "A", "data": {}}]');
COMMIT;
SELECT event_store.append_events('ins-deferred-3', '[{"type": "A", "data": {}}, {"type": "B", "data": {}}]');
ALTER TABLE event_store.events DROP CONSTRAINT ins_once;

-- what it leaves: every row once, in the log's indexes
SET enable_seqscan = off;
SELECT stream_id, count(*) FROM event_store.events WHERE stream_id LIKE 'ins-%'
 GROUP BY 1 ORDER BY 1;
RESET enable_seqscan;

DROP TABLE ins_audit;
REVOKE ALL ON event_store.events FROM regress_ins_writer, regress_ins_columns;
REVOKE ALL ON FUNCTION event_store.append(text, text, jsonb, jsonb, bigint, uuid, integer),
                       event_store.append_events(text, jsonb, bigint)
  FROM regress_ins_writer, regress_ins_columns;
REVOKE ALL ON SCHEMA event_store FROM regress_ins_writer, regress_ins_columns;
DROP ROLE regress_ins_writer;
DROP ROLE regress_ins_columns;
