\set p random(:mlo, :mhi)
SELECT g.global_position, e.*
  FROM event_store.global_log g
  JOIN event_store.events e ON e.stream_id = g.stream_id AND e.stream_version = g.stream_version
 WHERE g.category = 'mix' AND g.global_position > :p
 ORDER BY g.global_position
 LIMIT 100;
