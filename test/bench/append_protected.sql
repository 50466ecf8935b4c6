\set sid random(1, 10000)
SELECT event_store.append('pii-' || :sid, 'UserRegistered', jsonb_build_object('user_id', 'u-' || :sid, 'email', 'user' || :sid || '@example.com', 'name', 'User Number ' || :sid, 'plan', 'gold', 'country', 'NL'));
