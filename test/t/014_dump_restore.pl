# Dump and restore into another cluster: definitions, history and artifacts
# come back, the sequences continue, and each DAG belongs to the role of the
# same name there, or to no one; never to the role that happens to get its
# old owner's OID.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $www = PostgreSQL::Test::Utils::tempdir;
open my $fh, '>', "$www/data.csv" or die;
print $fh "id,name\n" . join('', map { "$_,row $_\n" } 1 .. 1000);
close $fh;
# with a bad row, which a load sets aside in orchestrator.rejects
open $fh, '>', "$www/bad.csv" or die;
print $fh "id,name\n1,one\nx,not a number\n3,three\n";
close $fh;
my $port = start_http_server($www);

# the first cluster: alice, bob and carol each own a DAG
my $a = orch_node('first');
query($a, qq{
CREATE ROLE alice NOLOGIN;
CREATE ROLE bob NOLOGIN;
CREATE ROLE carol NOLOGIN;
GRANT USAGE ON SCHEMA orchestrator TO alice, bob, carol;
CREATE TABLE public.t (x text);
GRANT INSERT, SELECT ON public.t TO alice, bob, carol;
CREATE TABLE public.loaded (id int, name text);
GRANT INSERT ON public.loaded TO alice;
SET ROLE alice;
SELECT orchestrator.create_dag('alice_dag');
SELECT orchestrator.add_task('alice_dag', 'fetch', orchestrator.http_fetch('http://127.0.0.1:$port/data.csv'));
SELECT orchestrator.add_task('alice_dag', 'note', orchestrator.sql(\$\$INSERT INTO public.t VALUES ('alice')\$\$), '{fetch}');
SELECT orchestrator.add_task('alice_dag', 'load', orchestrator.copy_into('public.loaded', url => 'http://127.0.0.1:$port/bad.csv', on_error => 'skip'));
SET ROLE bob;
SELECT orchestrator.create_dag('bob_dag');
SELECT orchestrator.add_task('bob_dag', 'note', orchestrator.sql(\$\$INSERT INTO public.t VALUES ('bob')\$\$));
SET ROLE carol;
SELECT orchestrator.create_dag('carol_dag');
SELECT orchestrator.add_task('carol_dag', 'note', orchestrator.sql(\$\$INSERT INTO public.t VALUES ('carol')\$\$));
});
for my $who (qw(alice bob carol))
{
	for my $day (1 .. 2)
	{
		my $run = query($a, "SET ROLE $who; SELECT orchestrator.trigger_dag('${who}_dag', logical_date => '2021-01-0$day')");
		is(query($a, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', "$who\'s run $day");
	}
}
my $max_run = query($a, 'SELECT max(run_id) FROM orchestrator.dag_run');
my $history_sql = q{
SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (
  SELECT format('%s/%s/%s/%s', d.dag_id, d.owner_name, d.schedule, d.params) AS x FROM orchestrator.dag d
  UNION ALL SELECT format('%s', r) FROM orchestrator.dag_run r
  UNION ALL SELECT format('%s/%s/%s/%s', run_id, task_id, state, try_number) FROM orchestrator.task_instance
  UNION ALL SELECT format('%s/%s/%s', run_id, task_id, sha256) FROM orchestrator.artifact
  UNION ALL SELECT format('%s', j) FROM orchestrator.rejects j) h};
my $history = query($a, $history_sql);
is(query($a, 'SELECT count(*) FROM orchestrator.rejects'), '2', "alice's loads set a row aside each");
my $dump = $a->basedir . '/first.dump';
$a->command_ok(['pg_dump', '-Fc', '-f', $dump, '--dbname', $a->connstr('postgres')], 'pg_dump of the first cluster');
my $alice_oid = query($a, "SELECT 'alice'::regrole::oid");
$a->stop;

# the second cluster: another role takes alice's old OID; carol is missing
my $b = PostgreSQL::Test::Cluster->new('second');
$b->init;
$b->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'orchestrator'
orchestrator.database = 'restored'
orchestrator.history_retention = ''
});
$b->start;
query($b, qq{
CREATE DATABASE restored;
-- OIDs are taken until the next one is alice's old one: mallory's
DO \$\$
DECLARE o oid;
BEGIN
  LOOP
    CREATE ROLE filler;
    SELECT oid INTO o FROM pg_roles WHERE rolname = 'filler';
    DROP ROLE filler;
    EXIT WHEN o >= $alice_oid - 1;
  END LOOP;
END \$\$;
CREATE ROLE mallory NOLOGIN;
CREATE ROLE bob NOLOGIN;
CREATE ROLE alice NOLOGIN;
});
is(query($b, "SELECT 'mallory'::regrole::oid"), $alice_oid, "mallory has alice's old OID");
my ($stdout, $stderr) = run_command(['pg_restore', '--dbname', $b->connstr('restored'), $dump]);
my @errors = grep { /ERROR/ } split /\n/, $stderr;
ok(@errors > 0 && !(grep { !/role "carol" does not exist/ } @errors),
	'pg_restore into the second cluster: only what names the missing role fails')
  or diag($stderr);
sub bq { return $b->safe_psql('restored', $_[0]); }

# the scheduler maps owners when the restore's rows commit (a trigger on
# orchestrator.dag wakes it; no reload, no polling)
# (the dump's one GRANT to alice, bob and carol failed for carol)
bq('GRANT USAGE ON SCHEMA orchestrator TO mallory, alice, bob; GRANT INSERT, SELECT ON public.t TO alice, bob');

is(bq($history_sql), $history, 'definitions, history and artifacts are restored');
ok($b->wait_for_log(qr/DAG "carol_dag" was restored from another cluster: it belongs to no one: role "carol" does not exist here/),
	'the scheduler maps restored owners, and says who has none');
is(bq(q{SELECT string_agg(dag_id || '=' || coalesce(pg_get_userbyid(owner), 'no one'), ', ' ORDER BY dag_id) FROM orchestrator.dag}),
	'alice_dag=alice, bob_dag=bob, carol_dag=no one', 'each DAG belongs to the role of the same name, or to no one');
is(bq(q{SET ROLE mallory; SELECT count(*) FROM orchestrator.dags}), '0', "mallory sees none of alice's DAGs");
is(bq(q{SET ROLE mallory; SELECT count(*) FROM orchestrator.dag_runs}), '0', 'nor their runs');
is(bq(q{SET ROLE alice; SELECT string_agg(dag_id, ',') FROM orchestrator.dags}), 'alice_dag', 'alice sees hers');
is(bq(q{SET ROLE alice; SELECT count(*) FROM orchestrator.dag_runs}), '2', 'with their history');
is(bq(q{SELECT count(*) FROM orchestrator.artifact a WHERE encode(sha256(lo_get(a.loid)), 'hex') = a.sha256}), '2',
	'the artifacts are restored, byte for byte');

my $run = bq(q{SET ROLE alice; SELECT orchestrator.trigger_dag('alice_dag')});
cmp_ok($run, '>', $max_run, 'run ids continue after the restored ones');
is(bq("SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'a restored DAG runs, as its owner');
is(bq(q{SELECT count(*) FROM public.t WHERE x = 'alice'}), '3', 'and does its work');
my ($rc, $out, $err) = $b->psql('restored', q{SET ROLE mallory; SELECT orchestrator.trigger_dag('alice_dag')});
like($err, qr/DAG "alice_dag" does not exist/, "mallory cannot run alice's DAG");
$run = bq(q{SELECT orchestrator.trigger_dag('carol_dag')});
is(bq("SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', "an ownerless DAG's tasks do not run");
like(bq("SELECT error FROM orchestrator.task_instances WHERE run_id = $run"),
	qr/DAG "carol_dag" has no owner: role "carol" does not exist/, 'and the error says why');

# a role created later gets its DAG when it commits: with the scheduler's
# clock stopped, no periodic pass could do it
$b->safe_psql('restored', "ALTER SYSTEM SET orchestrator.test_clock = '2030-01-01 00:00:00+00'; SELECT pg_reload_conf()");
$b->safe_psql('restored', 'CREATE ROLE carol NOLOGIN');
ok($b->poll_query_until('restored',
		q{SELECT pg_get_userbyid(owner) FROM orchestrator.dag WHERE dag_id = 'carol_dag'}, 'carol'),
	'a role created later gets its DAG at once');

# a renamed owner's new name is kept (for the next restore), at its commit
$b->safe_psql('restored', 'ALTER ROLE carol RENAME TO caroline');
ok($b->poll_query_until('restored',
		q{SELECT owner_name || ' ' || pg_get_userbyid(owner) FROM orchestrator.dag WHERE dag_id = 'carol_dag'},
		'caroline caroline'),
	"a renamed owner's new name is kept");
is($b->safe_psql('restored', q{SELECT string_agg(dag_id || '=' || owner_name, ', ' ORDER BY dag_id) FROM orchestrator.dag}),
	'alice_dag=alice, bob_dag=bob, carol_dag=caroline', "and the other DAGs' names are left alone");

$b->stop;
done_testing();
