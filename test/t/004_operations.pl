# Operations on runs: cancel_run, clear_task, execution_timeout, wait_run.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = orch_node('operations');

# --- cancel_run: the running task stops and rolls back, the rest is skipped
query($node, q{
CREATE TABLE c (x int);
SELECT orchestrator.create_dag('long');
SELECT orchestrator.add_task('long', 'sleep', orchestrator.sql('INSERT INTO c VALUES (1); SELECT pg_sleep(600)'));
SELECT orchestrator.add_task('long', 'after', orchestrator.sql('INSERT INTO c VALUES (2)'), '{sleep}');
});
my $run = query($node, "SELECT orchestrator.trigger_dag('long')");
wait_for($node, "SELECT count(*) FROM pg_stat_activity a JOIN orchestrator.task_instance ti ON ti.worker_pid = a.pid WHERE ti.run_id = $run AND ti.state = 'running' AND a.wait_event = 'PgSleep'",
	'1', 'a long task runs');
my $pid = query($node, "SELECT worker_pid FROM orchestrator.task_instance WHERE run_id = $run AND task_id = 'sleep'");
query($node, "SELECT orchestrator.cancel_run($run)");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'cancel_run fails the run');
is( query($node,
		"SELECT string_agg(task_id || ' ' || state || coalesce(' ' || error, ''), ', ' ORDER BY task_id) FROM orchestrator.task_instances WHERE run_id = $run"),
	'after skipped, sleep failed cancelled by cancel_run()',
	'the running task failed, the one not started is skipped');
wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid", '0', 'the worker is stopped');
is(query($node, "SELECT count(*) FROM c"), '0', 'what the cancelled task wrote is rolled back');
my ($rc, $out, $err) = $node->psql('postgres', "SELECT orchestrator.cancel_run($run)");
like($err, qr/NOTICE:  run $run has already ended \(failed\)/, 'cancelling an ended run only says so');

# --- clear_task: a task and its downstream run again, the run reopens
query($node, q{
CREATE TABLE cl (task text, try text);
SELECT orchestrator.create_dag('clearable');
SELECT orchestrator.add_task('clearable', 'a', orchestrator.sql($$INSERT INTO cl VALUES ('a', current_setting('orchestrator.try_number'))$$));
SELECT orchestrator.add_task('clearable', 'b', orchestrator.sql($$INSERT INTO cl VALUES ('b', current_setting('orchestrator.try_number'))$$), '{a}');
SELECT orchestrator.add_task('clearable', 'c', orchestrator.sql($$INSERT INTO cl VALUES ('c', current_setting('orchestrator.try_number'))$$), '{b}');
});
$run = query($node, "SELECT orchestrator.trigger_dag('clearable')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'a run succeeds');
is(query($node, "SELECT orchestrator.clear_task($run, 'b')"), '2', 'clear_task clears a task and its downstream');
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'the reopened run succeeds again');
is(query($node, "SELECT string_agg(task || try, ',' ORDER BY task, try) FROM cl"), 'a1,b1,b2,c1,c2',
	'the cleared tasks ran again, as their second try; the other did not');
is( query($node,
		"SELECT string_agg(task_id || ' ' || try_number || '/' || max_tries, ', ' ORDER BY task_id) FROM orchestrator.task_instances WHERE run_id = $run"),
	'a 1/1, b 2/2, c 2/2', 'with their tries counted');
is(query($node, "SELECT orchestrator.clear_task($run, 'a', downstream => false)"), '1', 'downstream => false clears one task');
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'which runs again');
is(query($node, "SELECT count(*) FROM cl"), '6', 'alone');
($rc, $out, $err) = $node->psql('postgres', "SELECT orchestrator.clear_task($run, 'nope')");
like($err, qr/run $run has no task "nope"/, 'clearing an unknown task is an error');

# clearing a failed task gives it its retries again
query($node, q{
CREATE TABLE flip (ok boolean);
INSERT INTO flip VALUES (false);
SELECT orchestrator.create_dag('fixable');
SELECT orchestrator.add_task('fixable', 't', orchestrator.sql($$SELECT 1 / ok::int FROM flip$$), retries => 1, retry_delay => '0');
});
$run = query($node, "SELECT orchestrator.trigger_dag('fixable')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'a run fails after its retry');
query($node, "UPDATE flip SET ok = true");
query($node, "SELECT orchestrator.clear_task($run, 't')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'fixed and cleared, it succeeds');
is(query($node, "SELECT try_number || '/' || max_tries FROM orchestrator.task_instances WHERE run_id = $run"), '3/4',
	'on its third try, with its retries anew');

# a running task cannot be cleared
$run = query($node, "SELECT orchestrator.trigger_dag('long')");
wait_for($node, "SELECT state FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'sleep'",
	'running', 'a task runs');
($rc, $out, $err) = $node->psql('postgres', "SELECT orchestrator.clear_task($run, 'sleep')");
like($err, qr/task "sleep" of run $run is queued or running/, 'clearing it is refused');
query($node, "SELECT orchestrator.cancel_run($run)");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'cancelled');

# --- execution_timeout: the task is stopped and the try counts as failed
query($node, q{
CREATE TABLE to_t (x int);
SELECT orchestrator.create_dag('timeouts');
SELECT orchestrator.add_task('timeouts', 'slow', orchestrator.sql('INSERT INTO to_t VALUES (1); SELECT pg_sleep(600)'),
                             execution_timeout => '1 second', retries => 1, retry_delay => '0');
});
$run = query($node, "SELECT orchestrator.trigger_dag('timeouts')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'a task past its execution_timeout fails');
is(query($node, "SELECT state || ' ' || try_number || ': ' || error FROM orchestrator.task_instances WHERE run_id = $run"),
	'failed 2: execution_timeout exceeded after 1.000 s', 'each try timed out, and says so');
is(query($node, "SELECT count(*) FROM to_t"), '0', 'what it wrote is rolled back');

# --- wait_run
($rc, $out, $err) = $node->psql('postgres', "SELECT orchestrator.wait_run(999999)");
like($err, qr/run 999999 does not exist/, 'wait_run on an unknown run is an error');

# --- the workers: at most orchestrator.max_workers at once, and none left idle
query($node, q{
CREATE TABLE par (n bigint);
SELECT orchestrator.create_dag('wide', max_active_tasks => 16);
SELECT orchestrator.add_task('wide', 't' || i, orchestrator.sql($$
    INSERT INTO par SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'orchestrator worker';
    SELECT pg_sleep(0.3)$$))
  FROM generate_series(1, 10) i;
});
$run = query($node, "SELECT orchestrator.trigger_dag('wide')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'ten tasks run');
cmp_ok(query($node, "SELECT max(n) FROM par"), '<=', 4, 'never more than orchestrator.max_workers = 4 workers');
wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'orchestrator worker'",
	'0', 'workers exit when nothing is queued');

# max_active_tasks limits a DAG's tasks at once
query($node, q{
CREATE TABLE mat (n bigint);
SELECT orchestrator.create_dag('narrow', max_active_tasks => 2);
SELECT orchestrator.add_task('narrow', 't' || i, orchestrator.sql($$
    INSERT INTO mat SELECT count(*) FROM orchestrator.task_instance ti JOIN orchestrator.dag_run r USING (run_id)
      WHERE r.dag_id = 'narrow' AND ti.state = 'running';
    SELECT pg_sleep(0.2)$$))
  FROM generate_series(1, 6) i;
});
$run = query($node, "SELECT orchestrator.trigger_dag('narrow')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'six tasks run');
cmp_ok(query($node, "SELECT max(n) FROM mat"), '<=', 2, 'never more than max_active_tasks = 2 at once');

# many short tasks: claims race each other and the scheduler; none is lost
query($node, q{
SELECT orchestrator.create_dag('many', max_active_tasks => 16);
SELECT orchestrator.add_task('many', 't' || i, orchestrator.sql('SELECT 1')) FROM generate_series(1, 200) i;
});
$run = query($node, "SELECT orchestrator.trigger_dag('many')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', '200 short tasks run');
is(query($node, "SELECT count(*) FILTER (WHERE try_number = 1 AND state = 'success') FROM orchestrator.task_instances WHERE run_id = $run"),
	'200', 'each once, at its first try');
ok(!$node->log_contains('lost its worker'), 'no live worker was ever taken for lost');

$node->stop;
done_testing();
