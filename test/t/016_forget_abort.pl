# forget() destroys a key only once its transaction has committed: the key
# row is overwritten in the table's file by the pipeline worker after the
# commit, never at pre-commit, where a later abort (a failing NOTIFY, another
# module's pre-commit error, a crash before the commit record) could no longer
# undo it and would leave the subject unreadable but not forgotten.  The test
# module abort_at_commit, preloaded before event_store, aborts a transaction
# after event_store's pre-commit work, the latest point short of a crash.
use strict;
use warnings;
use Cwd;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $kek = '11223344556677889900aabbccddeeff11223344556677889900aabbccddeeff';
my $module = getcwd() . '/test/modules/abort_at_commit/abort_at_commit.so';
ok(-f $module, 'the test module is built');

my $node = PostgreSQL::Test::Cluster->new('forget_abort');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = '$module, event_store'
event_store.key_encryption_key = '$kek'
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION pgcrypto;
	CREATE EXTENSION event_store;
	SELECT event_store.protect('Registered', '$.user_id', '{$.email}');
	SELECT event_store.append('user-carol', 'Registered', '{"user_id": "carol", "email": "carol.secret@example.com"}');
});
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'pipeline ready');

# a forget that aborts after every module's pre-commit work
my ($rc, $out, $err) = $node->psql('postgres', q{
	SET abort_at_commit.enabled = on;
	SELECT event_store.forget('carol');});
like($err, qr/abort_at_commit: the transaction aborts at pre-commit/, 'the forget aborted at pre-commit');
is($node->safe_psql('postgres', q{SELECT data->>'email' FROM event_store.read_stream('user-carol')}),
	'carol.secret@example.com', 'the key is intact: the subject reads in clear, not VE031');
is($node->safe_psql('postgres', q{SELECT count(*) FROM event_store.forgotten_subjects}), '0', 'no tombstone');

# a forget that commits: the key row is overwritten once it has
my $wrapped = $node->safe_psql('postgres', q{SELECT encode(wrapped_key, 'hex') FROM event_store.subject_keys WHERE subject = 'carol'});
is(length($wrapped), 2 * 128, 'carol has a wrapped key');
is($node->safe_psql('postgres', q{SELECT event_store.forget('carol')}), 't', 'forget commits');
is($node->safe_psql('postgres', q{SELECT data FROM event_store.read_stream('user-carol')}),
	'{"email": null, "user_id": "carol"}', 'carol is redacted');
is($node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('60 s')}), 't', 'the worker has done its round');
is($node->safe_psql('postgres', q{SELECT count(*) FROM event_store.key_scrubs}), '0', 'and overwritten the queued key row');
$node->safe_psql('postgres', 'CHECKPOINT');
my $heap = $node->data_dir . '/' . $node->safe_psql('postgres', q{SELECT pg_relation_filepath('event_store.subject_keys')});
ok(index(slurp_file($heap), pack('H*', $wrapped)) < 0, 'the wrapped key is gone from the key table\'s file');

# a crash after a forget's commit, before the worker ran: the queue survives, and a new worker overwrites
$node->safe_psql('postgres', q{
	SELECT event_store.append('user-dave', 'Registered', '{"user_id": "dave", "email": "dave.secret@example.com"}')});
$wrapped = $node->safe_psql('postgres', q{SELECT encode(wrapped_key, 'hex') FROM event_store.subject_keys WHERE subject = 'dave'});
$node->safe_psql('postgres', q{ALTER SYSTEM SET event_store.pipeline_enabled = off; SELECT pg_reload_conf()});
$node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'event_store pipeline'})
  or die 'the worker did not stop';
$node->safe_psql('postgres', q{SELECT event_store.forget('dave')});
is($node->safe_psql('postgres', q{SELECT count(*) FROM event_store.key_scrubs}), '0',
	'with the pipeline disabled, forget overwrites at pre-commit itself (nothing queued)');
$node->safe_psql('postgres', q{ALTER SYSTEM SET event_store.pipeline_enabled = on; SELECT pg_reload_conf()});
$node->safe_psql('postgres', q{SELECT event_store.wait_for_pipeline('60 s')});
$node->safe_psql('postgres', q{
	SELECT event_store.append('user-erin', 'Registered', '{"user_id": "erin", "email": "erin.secret@example.com"}')});
$wrapped = $node->safe_psql('postgres', q{SELECT encode(wrapped_key, 'hex') FROM event_store.subject_keys WHERE subject = 'erin'});
# stop the worker between the commit and its round: kill it (the postmaster restarts everything)
my $worker = $node->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'event_store pipeline'});
kill 'STOP', $worker;
$node->safe_psql('postgres', q{SELECT event_store.forget('erin')});
is($node->safe_psql('postgres', q{SELECT count(*) FROM event_store.key_scrubs}), '1', 'the committed forget queued its key row');
kill 'KILL', $worker;
kill 'CONT', $worker;
$node->poll_query_until('postgres', q{SELECT event_store.wait_for_pipeline('60 s')})
  or die 'the server did not come back';
is($node->safe_psql('postgres', q{SELECT count(*) FROM event_store.key_scrubs}), '0', 'after the crash, the new worker overwrote it');
$node->safe_psql('postgres', 'CHECKPOINT');
ok(index(slurp_file($heap), pack('H*', $wrapped)) < 0, 'erin\'s wrapped key is gone from the file');

$node->stop;
done_testing();
