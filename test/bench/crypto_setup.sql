-- Personal data benchmark (case "crypto"): UserRegistered has 2 protected
-- fields, UserRegisteredPlain is the same event unprotected.  Every one of
-- the 10,000 subjects gets its key here, so that the runs measure appends
-- with an existing key (the common case), not key creation.
SELECT event_store.protect('UserRegistered', '$.user_id', '{$.email, $.name}');
INSERT INTO event_store.events (stream_id, event_type, data)
SELECT 'pii-' || i, 'UserRegistered',
       jsonb_build_object('user_id', 'u-' || i, 'email', 'user' || i || '@example.com',
                          'name', 'User Number ' || i, 'plan', 'gold', 'country', 'NL')
  FROM generate_series(1, 10000) i;

-- 1,000 protected events and the same 1,000 unprotected ones to read.
SELECT event_store.append_events('pii-read',
       (SELECT jsonb_agg(jsonb_build_object('type', 'UserRegistered',
                                            'data', jsonb_build_object('user_id', 'u-read', 'email', 'reader@example.com',
                                                                       'name', 'Reader Number ' || i, 'plan', 'gold', 'country', 'NL'))
                         ORDER BY i)
          FROM generate_series(1, 1000) i));
SELECT event_store.append_events('plain-read',
       (SELECT jsonb_agg(jsonb_build_object('type', 'UserRegisteredPlain',
                                            'data', jsonb_build_object('user_id', 'u-read', 'email', 'reader@example.com',
                                                                       'name', 'Reader Number ' || i, 'plan', 'gold', 'country', 'NL'))
                         ORDER BY i)
          FROM generate_series(1, 1000) i));
