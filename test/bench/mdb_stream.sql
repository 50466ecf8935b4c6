\set s random(0, 199)
SELECT * FROM message_store.get_stream_messages('mdbread-' || :s);
