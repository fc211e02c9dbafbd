# One install serves every database of the cluster: the launcher starts a
# scheduler in each database with the extension; they share
# orchestrator.max_workers fairly; CREATE EXTENSION, DROP EXTENSION,
# DROP DATABASE and ALTER DATABASE ... RENAME work while they run; a
# template never gets a scheduler; one scheduler's death stops no other.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;

# every database with the extension (orch_node names one: undone here)
my $node = orch_node('dbs', "orchestrator.database = ''\norchestrator.worker_idle_timeout = '1s'\n");

sub q_in
{
	my ($db, $sql) = @_;
	return $node->safe_psql($db, $sql);
}

# polls in database $db until the query returns $expected; one test
sub wait_in
{
	my ($db, $sql, $expected, $what) = @_;
	my $ok = $node->poll_query_until($db, $sql, $expected);
	ok($ok, $what);
	diag("last result of: $sql\n" . q_in($db, $sql)) unless $ok;
	return $ok;
}

sub scheduler_of
{
	my ($db) = @_;
	return q_in('postgres', "SELECT pid FROM orchestrator.schedulers WHERE datname = '$db'");
}

# a DAG of a fan-out of $n tasks sleeping $secs each, then a join
sub define_dag
{
	my ($db, $dag, $n, $secs) = @_;
	q_in($db, qq{
SELECT orchestrator.create_dag('$dag', max_active_tasks => 100);
SELECT orchestrator.add_task('$dag', 't' || i, orchestrator.sql('SELECT pg_sleep($secs)'))
  FROM generate_series(1, $n) i;
SELECT orchestrator.add_task('$dag', 'join', orchestrator.sql('SELECT 1'),
                             upstream => (SELECT array_agg('t' || i) FROM generate_series(1, $n) i));
});
}

# --- 1. three databases with DAGs running at once, all finishing
my %run;
for my $db (qw(db1 db2 db3))
{
	q_in('postgres', "CREATE DATABASE $db");
	q_in($db, 'CREATE EXTENSION orchestrator');
	define_dag($db, 'd', 4, 0.5);
}
for my $db (qw(db1 db2 db3))
{
	wait_in('postgres', "SELECT count(*) FROM orchestrator.schedulers WHERE datname = '$db'",
		'1', "$db gets a scheduler without a restart");
}
$run{$_} = q_in($_, "SELECT orchestrator.trigger_dag('d')") for qw(db1 db2 db3);
for my $db (qw(db1 db2 db3))
{
	is(q_in($db, "SELECT orchestrator.wait_run($run{$db}, '3 minutes')"), 'success',
		"the run in $db finishes");
}
is( q_in('postgres', "SELECT string_agg(datname, ' ' ORDER BY datname) FROM orchestrator.schedulers"),
	'db1 db2 db3 postgres', 'a superuser sees every scheduler');
q_in('postgres', 'CREATE ROLE alice LOGIN');
q_in('db1', 'GRANT USAGE ON SCHEMA orchestrator TO alice');
is($node->safe_psql('db1', 'SELECT datname FROM orchestrator.schedulers', extra_params => [ '-U', 'alice' ]),
	'db1', 'another role sees its own database\'s scheduler only');
is(q_in('db2', "SELECT count(*) FROM orchestrator.dag_runs"), '1',
	'each database runs its own DAGs');

# --- 2. a template never gets a scheduler; a copy of it does
q_in('postgres', 'CREATE DATABASE tmpl IS_TEMPLATE true');
my ($ret, $out, $err) = $node->psql('tmpl', 'CREATE EXTENSION orchestrator');
like($err, qr/DAGs in database "tmpl" will not run: it is a template/, 'check_setup says why');

# --- 3. CREATE EXTENSION in a fourth while the others run
define_dag($_, 'long', 8, 1) for qw(db1 db2 db3);
$run{$_} = q_in($_, "SELECT orchestrator.trigger_dag('long')") for qw(db1 db2 db3);
wait_in('db1', "SELECT count(*) > 0 FROM orchestrator.task_instances WHERE run_id = $run{db1} AND state = 'running'",
	't', 'db1 is running tasks');
q_in('postgres', 'CREATE DATABASE db4 TEMPLATE tmpl');
wait_in('postgres', "SELECT count(*) FROM orchestrator.schedulers WHERE datname = 'db4'",
	'1', 'a copy of a template with the extension gets a scheduler');
q_in('postgres', 'CREATE DATABASE db5');
q_in('db5', 'CREATE EXTENSION orchestrator');
wait_in('postgres', "SELECT count(*) FROM orchestrator.schedulers WHERE datname = 'db5'",
	'1', 'CREATE EXTENSION in a new database starts its scheduler');
define_dag('db5', 'd', 2, 0.1);
my $run5 = q_in('db5', "SELECT orchestrator.trigger_dag('d')");
is(q_in('db5', "SELECT orchestrator.wait_run($run5, '3 minutes')"), 'success', 'and its DAGs run');
is(q_in('postgres', "SELECT count(*) FROM orchestrator.schedulers WHERE datname = 'tmpl'"), '0',
	'the template has none (the launcher has looked since: db4 and db5 have theirs)');

# --- 4. DROP DATABASE of one mid-run; the others unaffected
# (fresh runs, so that they run whatever the machine's speed: db3's task
# sleeps until its database goes)
define_dag('db3', 'sleeper', 1, 600);
$run{db3} = q_in('db3', "SELECT orchestrator.trigger_dag('sleeper')");
$run{$_} = q_in($_, "SELECT orchestrator.trigger_dag('long', logical_date => now() + interval '1 day')")
  for qw(db1 db2);
wait_in('db3', "SELECT count(*) > 0 FROM orchestrator.task_instances WHERE run_id = $run{db3} AND state = 'running'",
	't', 'db3 is running tasks');
my %pid = map { $_ => scheduler_of($_) } qw(db1 db2);
q_in('postgres', 'DROP DATABASE db3');
pass('DROP DATABASE of a database with a running scheduler and tasks succeeds');
for my $db (qw(db1 db2))
{
	is(q_in($db, "SELECT orchestrator.wait_run($run{$db}, '3 minutes')"), 'success',
		"the run in $db still finishes");
	is(scheduler_of($db), $pid{$db}, "the scheduler of $db never restarted");
}
wait_in('postgres', "SELECT count(*) FROM orchestrator.schedulers WHERE datname = 'db3'", '0',
	'the dropped database\'s scheduler is gone');

# a role that may not drop a database stops nothing there by trying
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE db1', extra_params => [ '-U', 'alice' ]);
like($err, qr/must be owner of database db1/, 'DROP DATABASE by another role fails');
is(scheduler_of('db1'), $pid{db1}, 'and leaves its scheduler alone');

# --- 5. ALTER DATABASE ... RENAME; the scheduler comes back under the new name
q_in('postgres', 'ALTER DATABASE db2 RENAME TO db2b');
pass('ALTER DATABASE ... RENAME succeeds');
wait_in('postgres', "SELECT count(*) FROM orchestrator.schedulers WHERE datname = 'db2b'", '1',
	'the renamed database has its scheduler again');
my $run2 = q_in('db2b', "SELECT orchestrator.trigger_dag('d')");
is(q_in('db2b', "SELECT orchestrator.wait_run($run2, '3 minutes')"), 'success', 'and its DAGs run');

# --- 6. the budget shared under load: orchestrator.max_workers = 4 for all
define_dag('db1', 'big', 60, 0.5);
define_dag('db5', 'small', 1, 0.5);
my $big = q_in('db1', "SELECT orchestrator.trigger_dag('big')");
wait_in('db1', "SELECT count(*) FROM orchestrator.task_instances WHERE run_id = $big AND state = 'running'",
	'4', 'the busy database takes the whole budget while alone');
my $small = q_in('db5', "SELECT orchestrator.trigger_dag('small')");
is(q_in('db5', "SELECT orchestrator.wait_run($small, '3 minutes')"), 'success', 'the small run finishes');
my $small_start = q_in('db5',
	"SELECT min(started_at) FROM orchestrator.task_instances WHERE run_id = $small AND task_id = 't1'");
is(q_in('db1', "SELECT orchestrator.wait_run($big, '3 minutes')"), 'success', 'the big run finishes');
my $after = q_in('db1',
	"SELECT count(*) FROM orchestrator.task_instances WHERE run_id = $big AND started_at > '$small_start'");
# (without a share it would wait for the whole queue: none would start after it)
cmp_ok($after, '>=', 15,
	"the small database did not wait for the big one's queue (it got its share; $after of 61 big tasks started after its task)");

# at no time more than orchestrator.max_workers tasks in all databases together
my @iv;
for my $pair ([ 'db1', $big ], [ 'db5', $small ])
{
	push @iv, map { [ split /\|/ ] } split /\n/, q_in($pair->[0], qq{
SELECT extract(epoch FROM started_at), extract(epoch FROM finished_at)
  FROM orchestrator.task_instances WHERE run_id = $pair->[1] AND started_at IS NOT NULL});
}
my $max = 0;
for my $a (@iv)
{
	my $n = grep { $_->[0] <= $a->[0] && $_->[1] > $a->[0] } @iv;
	$max = $n if $n > $max;
}
cmp_ok($max, '<=', 4, "at most orchestrator.max_workers tasks at once in the cluster (saw $max)");

# a per-database cap, set with ALTER DATABASE, applies without a restart
q_in('postgres', 'ALTER DATABASE db1 SET orchestrator.max_workers_per_database = 1');
$big = q_in('db1', "SELECT orchestrator.trigger_dag('d')");
is(q_in('db1', "SELECT orchestrator.wait_run($big, '3 minutes')"), 'success', 'a capped database runs');
is( q_in('db1', qq{
WITH t AS (SELECT started_at, finished_at FROM orchestrator.task_instances WHERE run_id = $big)
SELECT max((SELECT count(*) FROM t t2 WHERE t2.started_at <= t1.started_at AND t2.finished_at > t1.started_at))
  FROM t t1}), '1', 'one task at a time under max_workers_per_database = 1');
is(q_in('postgres', "SELECT max_workers_per_database FROM orchestrator.schedulers WHERE datname = 'db1'"),
	'1', 'the view shows the cap');

# --- 7. a scheduler's death stops no other; it comes back
%pid = map { $_ => scheduler_of($_) } qw(db1 db2b db5);
q_in('postgres', "SELECT pg_terminate_backend($pid{db1})");
wait_in('postgres', "SELECT pid NOT IN (0, $pid{db1}) FROM orchestrator.schedulers WHERE datname = 'db1'",
	't', 'the killed scheduler is started again');
is(scheduler_of($_), $pid{$_}, "the scheduler of $_ went on") for qw(db2b db5);

# --- 8. a launcher that dies is started again (by the postmaster, 10 s
# later); it replaces the schedulers of the one before, one per database
my $launcher = q_in('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'orchestrator launcher'");
q_in('postgres', "SELECT pg_terminate_backend($launcher)");
wait_in('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'orchestrator launcher' AND pid <> $launcher",
	'1', 'the launcher is started again');
wait_in('postgres', "SELECT count(*) FROM orchestrator.schedulers WHERE pid NOT IN ($pid{db2b}, $pid{db5})"
	  . " AND datname IN ('db2b', 'db5')", '2', 'with schedulers of its own');
wait_in('postgres', "SELECT count(*) FROM orchestrator.schedulers", '5',
	'every database has its scheduler again (postgres, db1, db2b, db4, db5)');
is(q_in('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'orchestrator scheduler'"),
	'5', 'one scheduler per database, no more');
$run5 = q_in('db5', "SELECT orchestrator.trigger_dag('d')");
is(q_in('db5', "SELECT orchestrator.wait_run($run5, '3 minutes')"), 'success', 'and DAGs run');

# --- 9. DROP EXTENSION stops the database's scheduler; CREATE EXTENSION starts it again
q_in('db5', 'DROP EXTENSION orchestrator CASCADE');
wait_in('postgres', "SELECT count(*) FROM orchestrator.schedulers WHERE datname = 'db5'", '0',
	'DROP EXTENSION stops the scheduler');
q_in('db5', 'CREATE EXTENSION orchestrator');
wait_in('postgres', "SELECT count(*) FROM orchestrator.schedulers WHERE datname = 'db5'", '1',
	'CREATE EXTENSION starts it again');

my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal|server process .* was terminated/, 'nothing crashed');
unlike($log, qr/scheduler started for database "tmpl"/, 'never a scheduler in the template');
$node->stop;

done_testing();
