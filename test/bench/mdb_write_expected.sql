SELECT message_store.write_message(:fid, :fstream, 'Opened', '{"amount": 1, "note": "benchmark event"}', NULL, -1) AS pos,
       gen_random_uuid() AS fid, 'fresh-' || gen_random_uuid() AS fstream \gset
