# Bob's key row is stored first, alice's after it, at a lower address of the
# page: when vacuum compacts the page, nothing is moved over alice's bytes,
# which is the case where a deleted row's bytes would survive in free space.
#
# Crypto-shredding leaves nothing behind in the table files: after forget(),
# VACUUM and CHECKPOINT, neither a forgotten subject's plaintext nor its key
# (wrapped or raw) is in the files of the key table (heap, TOAST, indexes),
# and the plaintext was never in the event table's files.  A subject that is
# not forgotten is a positive control: its wrapped key is found.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $kek = '0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0';
my $node = PostgreSQL::Test::Cluster->new('shred');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'event_store'");
$node->append_conf('postgresql.conf', "event_store.key_encryption_key = '$kek'");
$node->start;

my $alice_email = 'alice.liddell.secret@example.com';
my $alice_name  = 'Alice Pleasance Liddell';
my $bob_email   = 'bob.builder.secret@example.com';

$node->safe_psql('postgres', qq{
	CREATE EXTENSION pgcrypto;
	CREATE EXTENSION event_store;
	SELECT event_store.protect('UserRegistered', '\$.user_id', '{\$.email, \$.name}');
	SELECT event_store.append('user-bob', 'UserRegistered',
	       jsonb_build_object('user_id', 'subject-bob', 'email', '$bob_email', 'name', 'Bob'));
	SELECT event_store.append('user-alice', 'UserRegistered',
	       jsonb_build_object('user_id', 'subject-alice', 'email', '$alice_email', 'name', '$alice_name'));
	SELECT event_store.append('user-alice', 'UserRegistered',
	       jsonb_build_object('user_id', 'subject-alice', 'email', '$alice_email', 'name', '$alice_name'));
});
is($node->safe_psql('postgres', q{SELECT data->>'email' FROM event_store.read_stream('user-alice', max_count => 1)}),
	$alice_email, 'alice reads back in clear before forget');

# The wrapped keys as stored, and alice's raw key unwrapped with pgcrypto
# from the documented format: iv(16) || AES-256-CBC || HMAC-SHA256(32), with
# the AES key HMAC-SHA256(kek, 'event_store kek enc').
my $wrapped = sub {
	$node->safe_psql('postgres', qq{SELECT encode(wrapped_key, 'hex') FROM event_store.subject_keys WHERE subject = '$_[0]'});
};
my $alice_wrapped = $wrapped->('subject-alice');
my $bob_wrapped = $wrapped->('subject-bob');
is(length($alice_wrapped), 2 * (16 + 80 + 32), 'alice has a wrapped key');
my $alice_raw = $node->safe_psql('postgres', qq{
	SELECT encode(decrypt_iv(substr(w, 17, length(w) - 48),
	                         hmac('event_store kek enc'::bytea, decode('$kek', 'hex'), 'sha256'),
	                         substr(w, 1, 16), 'aes-cbc'), 'hex')
	  FROM (SELECT decode('$alice_wrapped', 'hex') AS w) s});
is(length($alice_raw), 128, 'alice raw key (64 bytes) unwrapped with the documented format');

is($node->safe_psql('postgres', q{SELECT event_store.forget('subject-alice')}), 't', 'forget');
is($node->safe_psql('postgres', q{SELECT data FROM event_store.read_stream('user-alice', max_count => 1)}),
	'{"name": null, "email": null, "user_id": "subject-alice"}', 'alice redacted after forget');
$node->safe_psql('postgres', 'VACUUM event_store.subject_keys');
$node->safe_psql('postgres', 'VACUUM event_store.events');
$node->safe_psql('postgres', 'CHECKPOINT');

# every file of a relation, its TOAST table and their indexes
my $pgdata = $node->data_dir;
sub relation_files
{
	my ($rel) = @_;
	my $paths = $node->safe_psql('postgres', qq{
		WITH r AS (SELECT '$rel'::regclass::oid AS oid
		           UNION ALL SELECT reltoastrelid FROM pg_class WHERE oid = '$rel'::regclass AND reltoastrelid <> 0),
		     i AS (SELECT oid FROM r UNION ALL SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT oid FROM r))
		SELECT pg_relation_filepath(oid) FROM i});
	my @files;
	for my $p (split /\n/, $paths)
	{
		push @files, grep { -f $_ } glob("$pgdata/$p $pgdata/$p.* $pgdata/${p}_*");
	}
	return @files;
}

sub found_in
{
	my ($needle, @files) = @_;
	for my $f (@files)
	{
		my $bytes = slurp_file($f);
		return $f if index($bytes, $needle) >= 0;
	}
	return '';
}

my @key_files = relation_files('event_store.subject_keys');
my @event_files = relation_files('event_store.events');
ok(scalar(@key_files) >= 3, 'key table files found (' . scalar(@key_files) . ')');
ok(scalar(@event_files) >= 3, 'event table files found (' . scalar(@event_files) . ')');

# positive control: the search finds what is there
is(found_in('user-alice', @event_files) ne '', 1, 'control: a stream id is found in the event files');
is(found_in(pack('H*', $bob_wrapped), @key_files) ne '', 1, 'control: bob\'s wrapped key is found in the key table files');

is(found_in(pack('H*', $alice_wrapped), @key_files), '', 'alice\'s wrapped key is not in the key table files');
is(found_in(pack('H*', $alice_raw), @key_files), '', 'alice\'s raw key is not in the key table files');
is(found_in(pack('H*', $alice_raw), @event_files), '', 'alice\'s raw key is not in the event table files');
for my $plain ($alice_email, $alice_name, $bob_email)
{
	is(found_in($plain, @key_files), '', "plaintext '$plain' is not in the key table files");
	is(found_in($plain, @event_files), '', "plaintext '$plain' is not in the event table files");
}
# the subject itself: overwritten in the key table's heap, and never in its
# indexes (they hold its SHA-256, which the tombstone keeps anyway)
my $heap = $pgdata . '/' . $node->safe_psql('postgres', q{SELECT pg_relation_filepath('event_store.subject_keys')});
is(found_in('subject-alice', $heap), '', 'the forgotten subject is not in the key table heap');
is(found_in('subject-alice', @key_files), '', 'nor in any file of the key table (indexes included)');
is(found_in('subject-bob', @key_files) ne '', 1, 'control: a subject not forgotten is found');

# a forget that rolls back destroys nothing
$node->safe_psql('postgres', q{BEGIN; SELECT event_store.forget('subject-bob'); ROLLBACK;});
is($node->safe_psql('postgres', q{SELECT data->>'email' FROM event_store.read_stream('user-bob')}),
	$bob_email, 'a rolled-back forget leaves the key intact');
$node->safe_psql('postgres', q{BEGIN; SAVEPOINT s; SELECT event_store.forget('subject-bob'); ROLLBACK TO s; COMMIT;});
is($node->safe_psql('postgres', q{SELECT data->>'email' FROM event_store.read_stream('user-bob')}),
	$bob_email, 'a forget rolled back to a savepoint leaves the key intact');

# Errors never put personal data into the server log.  The values are
# computed inside the server (md5 of a seed), so that they are not in any
# logged statement text: if one shows up in the log, a message carried it.
my $secret = $node->safe_psql('postgres', q{SELECT 'zq' || md5('log-seed') || '@example.com'});
my $log_offset = -s $node->logfile;
$node->psql('postgres', q{
	CREATE TEMP TABLE pii AS SELECT 'zq' || md5('log-seed') || '@example.com' AS email;
	-- refused: the subject is forgotten
	INSERT INTO event_store.events (stream_id, event_type, data)
	SELECT 'user-alice', 'UserRegistered', jsonb_build_object('user_id', 'subject-alice', 'email', email) FROM pii;
}, on_error_stop => 0);
$node->psql('postgres', q{
	CREATE TEMP TABLE pii AS SELECT 'zq' || md5('log-seed') || '@example.com' AS email;
	-- refused: no subject
	INSERT INTO event_store.events (stream_id, event_type, data)
	SELECT 'user-x', 'UserRegistered', jsonb_build_object('email', email) FROM pii;
	-- refused: the same id with other content
	SELECT event_store.append('user-log', 'UserRegistered', jsonb_build_object('user_id', 'subject-log', 'email', 'a@b.c'),
	                          event_id => '00000000-0000-4000-8000-00000000f001');
	INSERT INTO event_store.events (stream_id, event_type, data, event_id)
	SELECT 'user-log', 'UserRegistered', jsonb_build_object('user_id', 'subject-log', 'email', email),
	       '00000000-0000-4000-8000-00000000f001' FROM pii;
	-- appended, then tampered with, then read: authentication fails
	INSERT INTO event_store.events (stream_id, event_type, data)
	SELECT 'user-log2', 'UserRegistered', jsonb_build_object('user_id', 'subject-log', 'email', email) FROM pii;
	ALTER TABLE event_store.events DISABLE TRIGGER append_only;
	ALTER TABLE event_store.events DISABLE TRIGGER append_only_rows;
	UPDATE event_store.events SET data = jsonb_set(data, '{email}', to_jsonb(substr(data->>'email', 1, 60)))
	 WHERE stream_id = 'user-log2';
	ALTER TABLE event_store.events ENABLE ALWAYS TRIGGER append_only;
	ALTER TABLE event_store.events ENABLE ALWAYS TRIGGER append_only_rows;
	SELECT * FROM event_store.read_stream('user-log2');
}, on_error_stop => 0);
my $log = slurp_file($node->logfile, $log_offset);
like($log, qr/has been forgotten/, 'the log has the refused append');
like($log, qr/failed authentication/, 'the log has the failed authentication');
like($log, qr/has no subject/, 'the log has the missing subject');
like($log, qr/already used by a different event/, 'the log has the id conflict');
is(index($log, $secret), -1, 'no personal data in the server log');
is(index($log, $kek), -1, 'no key-encryption key in the server log');
is(index($log, $alice_raw), -1, 'no key in the server log');
# control: the search would find the value had a message carried it
$node->safe_psql('postgres', q{DO $$BEGIN RAISE WARNING '%', 'zq' || md5('log-seed') || '@example.com'; END$$});
isnt(index(slurp_file($node->logfile, $log_offset), $secret), -1, 'control: a message carrying the value is found');

# pg_dump and restore: protected events are restored as stored (not
# encrypted again), keys and tombstones come along, reads work as before.
my $dumpdir = PostgreSQL::Test::Utils::tempdir;
command_ok([ 'pg_dump', '-h', $node->host, '-p', $node->port, '-Fc', '-f', "$dumpdir/db.dump", 'postgres' ], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
command_ok([ 'pg_restore', '-h', $node->host, '-p', $node->port, '--exit-on-error', '-d', 'restored', "$dumpdir/db.dump" ], 'pg_restore');
is($node->safe_psql('restored', q{SELECT count(*) FROM event_store.events}),
	$node->safe_psql('postgres', q{SELECT count(*) FROM event_store.events}), 'every event restored');
is($node->safe_psql('restored', q{SELECT md5(string_agg(data::text, ',' ORDER BY event_id)) FROM event_store.events}),
	$node->safe_psql('postgres', q{SELECT md5(string_agg(data::text, ',' ORDER BY event_id)) FROM event_store.events}),
	'restored ciphertexts are the stored ones');
is($node->safe_psql('restored', q{SELECT data->>'email' FROM event_store.read_stream('user-bob')}),
	$bob_email, 'restored: bob reads in clear');
is($node->safe_psql('restored', q{SELECT metadata->>'redacted' FROM event_store.read_stream('user-alice', max_count => 1)}),
	'forgotten', 'restored: alice stays forgotten');
my ($rc, $out, $err) = $node->psql('restored',
	q{SELECT event_store.append('user-alice', 'UserRegistered', jsonb_build_object('user_id', 'subject-alice', 'email', 'x@example.com'))});
like($err, qr/has been forgotten/, 'restored: the tombstone refuses alice');

# forget deletes the snapshots of the subject's streams.  event_store.snapshots
# belongs to the aggregates (another module): when it is not installed, a
# stand-in with its key columns shows the deletion; when it is, the test
# leaves it alone.
SKIP:
{
	skip 'event_store.snapshots is installed: covered by the aggregate tests', 2
	  if $node->safe_psql('postgres', q{SELECT to_regclass('event_store.snapshots') IS NOT NULL}) eq 't';
	$node->safe_psql('postgres', q{
		CREATE TABLE event_store.snapshots (stream_id text, aggregate text, version bigint, state jsonb);
		INSERT INTO event_store.snapshots VALUES ('user-bob', 'user', 1, '{}'), ('user-other', 'user', 1, '{}');
	});
	is($node->safe_psql('postgres', q{SELECT event_store.forget('subject-bob')}), 't', 'forget bob');
	is($node->safe_psql('postgres', q{SELECT string_agg(stream_id, ',') FROM event_store.snapshots}),
		'user-other', 'the snapshots of the streams holding bob\'s events are deleted, no others');
	$node->safe_psql('postgres', q{DROP TABLE event_store.snapshots});
}

$node->stop;
done_testing();
