\set p random(:lo, :hi)
SELECT * FROM message_store.get_category_messages('mdbread', :p, 100, NULL, 1, 4);
