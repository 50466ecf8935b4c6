# Installing and updating: no role but a superuser can drop the log through a
# dependency (a database owner's DROP SCHEMA public CASCADE once took
# pgcrypto and the extension with it), the schema event_store is the
# extension owner's own (a schema made beforehand by another role is
# refused, VE007), and ALTER EXTENSION UPDATE walks 0.1.0 to the current
# version with the events in place.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $kek = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
my $node = PostgreSQL::Test::Cluster->new('install');
$node->init;
$node->append_conf('postgresql.conf', "event_store.key_encryption_key = '$kek'");
$node->start;
$node->safe_psql('postgres', q{
	CREATE ROLE dbowner LOGIN;
	CREATE ROLE mallory LOGIN;
	CREATE DATABASE owned OWNER dbowner;
	CREATE DATABASE owned_old OWNER dbowner;
});

my $has_extension = q{SELECT count(*) FROM pg_extension WHERE extname = 'event_store'};
my $depends_on_pgcrypto = q{
	SELECT count(*) FROM pg_depend d
	  JOIN pg_extension e ON d.classid = 'pg_extension'::regclass AND d.objid = e.oid
	  JOIN pg_extension r ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = r.oid
	 WHERE e.extname = 'event_store' AND r.extname = 'pgcrypto'};

# 1. A database owner (not a superuser) drops the schema public with
#    everything in it, pgcrypto included: the log stays.
$node->safe_psql('owned', q{
	CREATE EXTENSION pgcrypto;
	CREATE EXTENSION event_store CASCADE;
	SELECT event_store.protect('Registered', '$.uid', '{$.email}');
	SELECT event_store.append('user-1', 'Registered', '{"uid": "u1", "email": "a@example.com"}');
	SELECT event_store.append('order-1', 'Placed', '{}');
});
is($node->safe_psql('owned', $depends_on_pgcrypto), '0', 'event_store does not depend on pgcrypto');
$node->safe_psql('owned', 'DROP SCHEMA public CASCADE', extra_params => [ '-U', 'dbowner' ]);
is($node->safe_psql('owned', q{SELECT count(*) FROM pg_extension WHERE extname = 'pgcrypto'}), '0',
	'the database owner dropped pgcrypto');
is($node->safe_psql('owned', $has_extension), '1', 'but not event_store');
is($node->safe_psql('owned', q{SELECT count(*) FROM event_store.events}), '2', 'nor its events');
is($node->safe_psql('owned', q{SELECT event_store.append('order-1', 'Paid', '{}')}), '2',
	'the log works without pgcrypto');
my ($rc, $out, $err) = $node->psql('owned', q{\set VERBOSITY verbose
SELECT data FROM event_store.read_stream('user-1')});
like($err, qr/55000: extension "pgcrypto" is not installed/, 'personal data without pgcrypto: 55000');
like($err, qr/HINT:  Run CREATE EXTENSION pgcrypto/, 'with a hint');
($rc, $out, $err) = $node->psql('owned', q{SELECT event_store.append('user-2', 'Registered', '{"uid": "u2", "email": "b@example.com"}')});
like($err, qr/extension "pgcrypto" is not installed/, 'appending a protected event too');
# pgcrypto back, in another schema: found at run time
is($node->safe_psql('owned', q{
	CREATE SCHEMA crypto;
	CREATE EXTENSION pgcrypto SCHEMA crypto;
	SELECT data->>'email' FROM event_store.read_stream('user-1')}), 'a@example.com',
	'pgcrypto reinstalled elsewhere is found');

# 2. An install of 0.1.0 made with the control file it shipped with
#    (requires = 'pgcrypto') depends on pgcrypto; ALTER EXTENSION UPDATE
#    removes that dependency.
$node->safe_psql('owned_old', q{
	CREATE EXTENSION pgcrypto;
	CREATE EXTENSION event_store VERSION '0.1.0';
	SELECT event_store.append('acct-1', 'Opened', '{}');
	SELECT event_store.append('acct-1', 'Deposited', '{"amount": 5}');
});
# what the shipped control file recorded (this tree's control file no longer does)
$node->safe_psql('owned_old', qq{
	INSERT INTO pg_depend (classid, objid, objsubid, refclassid, refobjid, refobjsubid, deptype)
	SELECT 'pg_extension'::regclass, e.oid, 0, 'pg_extension'::regclass, r.oid, 0, 'n'
	  FROM pg_extension e, pg_extension r
	 WHERE e.extname = 'event_store' AND r.extname = 'pgcrypto' AND ($depends_on_pgcrypto) = 0});
is($node->safe_psql('owned_old', $depends_on_pgcrypto), '1', '0.1.0 as shipped depends on pgcrypto');
# this library over the tables of 0.1.0: no key is created until the update
$node->safe_psql('owned_old', q{SELECT event_store.protect('Registered', '$.uid', '{$.email}')});
($rc, $out, $err) = $node->psql('owned_old', q{\set VERBOSITY verbose
SELECT event_store.append('user-1', 'Registered', '{"uid": "u1", "email": "a@example.com"}')});
like($err, qr/55000: the personal-data tables of extension "event_store" are those of version 0\.1\.0/,
	'personal data before the update: 55000');
like($err, qr/HINT:  Run ALTER EXTENSION event_store UPDATE/, 'with a hint');
is($node->safe_psql('owned_old', qq{BEGIN; DROP SCHEMA public CASCADE; $has_extension; ROLLBACK},
		extra_params => [ '-U', 'dbowner' ]), '0',
	'so the database owner could drop the log (rolled back)');
# the grants the README of 0.1.0 gave: direct writes of the registries, reads of snapshots
my $grants = q{
	SELECT coalesce(string_agg(c.relname || ':' || a.privilege_type, ' ' ORDER BY c.relname, a.privilege_type), 'none')
	  FROM pg_class c, aclexplode(c.relacl) a
	 WHERE c.relnamespace = 'event_store'::regnamespace AND a.grantee = 'dbowner'::regrole};
$node->safe_psql('owned_old', q{
	GRANT INSERT, UPDATE ON event_store.aggregates TO dbowner;
	GRANT SELECT, INSERT, DELETE ON event_store.upcasters TO dbowner;
	GRANT SELECT, INSERT, UPDATE, DELETE ON event_store.snapshots TO dbowner;
	GRANT SELECT ON event_store.aggregates, event_store.events TO dbowner;
});
$node->safe_psql('owned_old', 'ALTER EXTENSION event_store UPDATE');
is($node->safe_psql('owned_old', $grants),
	'aggregates:SELECT events:SELECT snapshots:INSERT upcasters:SELECT',
	'the update revokes direct writes of the registries and reads of snapshots');
is($node->safe_psql('owned_old', q{SELECT extversion FROM pg_extension WHERE extname = 'event_store'}),
	'0.2.0', 'updated to 0.2.0');
is($node->safe_psql('owned_old', $depends_on_pgcrypto), '0', 'the update removed the dependency');
$node->safe_psql('owned_old', 'DROP SCHEMA public CASCADE', extra_params => [ '-U', 'dbowner' ]);
is($node->safe_psql('owned_old', $has_extension), '1', 'the database owner cannot drop the log any more');
is($node->safe_psql('owned_old', q{SELECT string_agg(stream_version || ':' || event_type, ' ' ORDER BY stream_version) FROM event_store.read_stream('acct-1')}),
	'1:Opened 2:Deposited', 'the events survived the update');
is($node->safe_psql('owned_old', q{SELECT event_store.append('acct-1', 'Withdrawn', '{}', expected_version => 2)}),
	'3', 'and appends continue');
is($node->safe_psql('owned_old', q{
	CREATE SCHEMA crypto;
	CREATE EXTENSION pgcrypto SCHEMA crypto;
	SELECT event_store.append('user-1', 'Registered', '{"uid": "u1", "email": "a@example.com"}');
	SELECT string_agg(s, ',') FROM event_store.subject_streams('u1') s;
	SELECT event_store.forget('u1');
	SELECT event_store.forget('u1');
	SELECT coalesce(data->>'email', 'null') || ' ' || (metadata->>'redacted') FROM event_store.read_stream('user-1')}),
	"1\nuser-1\nt\nf\nnull forgotten", 'personal data after the update: append, subject_streams, forget');

# 3. A schema event_store made before the install by another role is
#    refused: its owner could add objects (an overload of append, a fake
#    forget) that run as whoever calls them.
$node->safe_psql('postgres', q{
	CREATE DATABASE planted;
	GRANT CREATE ON DATABASE planted TO mallory;
});
$node->safe_psql('planted', q{
	CREATE SCHEMA event_store;
	CREATE FUNCTION event_store.append(text, text, text) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint';
}, extra_params => [ '-U', 'mallory' ]);
($rc, $out, $err) = $node->psql('planted', q{\set VERBOSITY verbose
CREATE EXTENSION event_store});
like($err, qr/VE007: schema "event_store" belongs to role "mallory", not to the extension's owner/,
	'a schema of another role: VE007');
is($node->safe_psql('planted', $has_extension), '0', 'nothing is installed');
# a superuser's schema where another role may create objects, or holding foreign objects
$node->safe_psql('planted', q{
	DROP SCHEMA event_store CASCADE;
	CREATE SCHEMA event_store;
	GRANT CREATE ON SCHEMA event_store TO mallory;
});
($rc, $out, $err) = $node->psql('planted', q{\set VERBOSITY verbose
CREATE EXTENSION event_store});
like($err, qr/VE007: schema "event_store" lets role "mallory" create objects in it/,
	'a schema another role may create objects in: VE007');
$node->safe_psql('planted', q{
	CREATE FUNCTION event_store.forget(subject text, really boolean DEFAULT true) RETURNS boolean
	  LANGUAGE sql AS 'SELECT true';
}, extra_params => [ '-U', 'mallory' ]);
$node->safe_psql('planted', 'REVOKE CREATE ON SCHEMA event_store FROM mallory');
($rc, $out, $err) = $node->psql('planted', q{\set VERBOSITY verbose
CREATE EXTENSION event_store});
like($err, qr/VE007: schema "event_store" holds objects that are not the extension's/,
	'a schema holding foreign objects: VE007');
like($err, qr/Found: function event_store\.forget\(pg_catalog\.text,boolean\)\./, 'the detail names them');
$node->safe_psql('planted', q{DROP FUNCTION event_store.forget(text, boolean)});
$node->safe_psql('planted', q{CREATE EXTENSION event_store});
is($node->safe_psql('planted', q{SELECT n.nspowner::regrole FROM pg_namespace n WHERE n.nspname = 'event_store'}),
	$node->safe_psql('planted', q{SELECT extowner::regrole FROM pg_extension WHERE extname = 'event_store'}),
	'an empty schema of the installing superuser is accepted');

# ALTER EXTENSION UPDATE checks the schema too: an 0.1.0 install that went
# into another role's schema is refused until the schema is the owner's.
$node->safe_psql('postgres', q{CREATE DATABASE planted_old; GRANT CREATE ON DATABASE planted_old TO mallory});
$node->safe_psql('planted_old', q{CREATE SCHEMA event_store}, extra_params => [ '-U', 'mallory' ]);
$node->safe_psql('planted_old', q{
	CREATE EXTENSION event_store VERSION '0.1.0';
	SELECT event_store.append('acct-1', 'Opened', '{}');
});
($rc, $out, $err) = $node->psql('planted_old', q{\set VERBOSITY verbose
ALTER EXTENSION event_store UPDATE});
like($err, qr/VE007: schema "event_store" belongs to role "mallory"/, 'the update refuses it: VE007');
is($node->safe_psql('planted_old', q{SELECT extversion FROM pg_extension WHERE extname = 'event_store'}),
	'0.1.0', 'and leaves 0.1.0 in place');
$node->safe_psql('planted_old', q{ALTER SCHEMA event_store OWNER TO CURRENT_USER; ALTER EXTENSION event_store UPDATE});
is($node->safe_psql('planted_old', q{SELECT extversion || ' ' || event_store.stream_version('acct-1') FROM pg_extension WHERE extname = 'event_store'}),
	'0.2.0 1', 'updated once the schema is the owner\'s');

$node->stop;
done_testing();
