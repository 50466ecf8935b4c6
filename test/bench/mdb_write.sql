SELECT message_store.write_message(:id, :stream, 'Deposited', '{"amount": 1, "note": "benchmark event"}') AS pos,
       gen_random_uuid() AS id, 'account-' || (1 + (random() * 9999)::int) AS stream \gset
