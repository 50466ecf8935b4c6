SELECT NULL::bigint AS global_position, * FROM event_store.events WHERE stream_id = 'read-1' ORDER BY stream_version;
