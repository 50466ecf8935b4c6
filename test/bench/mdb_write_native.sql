SELECT event_store.append(:stream, 'Deposited', '{"amount": 1, "note": "benchmark event"}', event_id => :id::uuid) AS pos,
       gen_random_uuid() AS id, 'account-' || (1 + (random() * 9999)::int) AS stream \gset
