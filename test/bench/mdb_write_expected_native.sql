SELECT event_store.append(:fstream, 'Opened', '{"amount": 1, "note": "benchmark event"}', expected_version => 0, event_id => :fid::uuid) AS pos,
       gen_random_uuid() AS fid, 'fresh-' || gen_random_uuid() AS fstream \gset
