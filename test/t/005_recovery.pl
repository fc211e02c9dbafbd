# Recovery: a worker killed with SIGKILL, or an immediate shutdown, in the
# middle of a task; the try counts as failed, nothing it did is committed,
# and the retry loads exactly once.  The scheduler survives bad
# definitions, dropped tables, and DROP and CREATE EXTENSION.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = orch_node('recovery');

# the first try loads 1000 rows and then hangs; the retry loads and ends
query($node, q{
CREATE TABLE k (x int);
SELECT orchestrator.create_dag('killme');
SELECT orchestrator.add_task('killme', 'load', orchestrator.sql($$
    INSERT INTO k SELECT generate_series(1, 1000);
    SELECT CASE WHEN current_setting('orchestrator.try_number') = '1' THEN pg_sleep(600) END$$),
    retries => 1, retry_delay => '0');
});

# --- SIGKILL of the worker
my $run = query($node, "SELECT orchestrator.trigger_dag('killme')");
wait_for($node, "SELECT count(*) FROM pg_stat_activity a JOIN orchestrator.task_instance ti ON ti.worker_pid = a.pid WHERE ti.run_id = $run AND ti.state = 'running' AND a.wait_event = 'PgSleep'",
	'1', 'the first try is running, its rows inserted');
my $pid = query($node, "SELECT worker_pid FROM orchestrator.task_instance WHERE run_id = $run");
kill 'KILL', $pid;
# the server restarts after the crash
$node->poll_query_until('postgres', 'SELECT 1', '1');
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'after SIGKILL the task is retried and succeeds');
is(query($node, "SELECT count(*) FROM k"), '1000', 'the rows are loaded exactly once');
is(query($node, "SELECT state || ' ' || try_number || '/' || max_tries FROM orchestrator.task_instances WHERE run_id = $run"),
	'success 2/2', 'the killed try counted as a failed try');
ok($node->log_contains("lost its worker \\(pid $pid\\); counting try 1 as failed"), 'the scheduler logged the lost try');

# --- an immediate shutdown in the middle of a task
query($node, "TRUNCATE k");
$run = query($node, "SELECT orchestrator.trigger_dag('killme')");
wait_for($node, "SELECT count(*) FROM pg_stat_activity a JOIN orchestrator.task_instance ti ON ti.worker_pid = a.pid WHERE ti.run_id = $run AND ti.state = 'running' AND a.wait_event = 'PgSleep'",
	'1', 'the first try is running again');
$node->stop('immediate');
$node->start;
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'after an immediate shutdown and restart the task is retried');
is(query($node, "SELECT count(*) FROM k"), '1000', 'and loads exactly once');

# a try lost with no tries left fails the task, with a clear error
query($node, q{
SELECT orchestrator.create_dag('killme_once');
SELECT orchestrator.add_task('killme_once', 'load', orchestrator.sql('SELECT pg_sleep(600)'));
});
$run = query($node, "SELECT orchestrator.trigger_dag('killme_once')");
wait_for($node, "SELECT count(*) FROM pg_stat_activity a JOIN orchestrator.task_instance ti ON ti.worker_pid = a.pid WHERE ti.run_id = $run AND ti.state = 'running' AND a.wait_event = 'PgSleep'",
	'1', 'a task without retries runs');
$pid = query($node, "SELECT worker_pid FROM orchestrator.task_instance WHERE run_id = $run");
kill 'KILL', $pid;
$node->poll_query_until('postgres', 'SELECT 1', '1');
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'without retries the run fails');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run"),
	qr/the worker \(pid $pid\) stopped without recording an outcome/, 'saying the worker was lost');

# --- bad definitions do not stop the scheduler
# (in one transaction, so that the scheduler sees both DAGs due at once)
query($node, q{
BEGIN;
SELECT orchestrator.create_dag('broken', '@daily', start_date => '2021-01-01');
SELECT orchestrator.add_task('broken', 't', orchestrator.sql('SELECT 1'));
UPDATE orchestrator.dag SET schedule = 'not a schedule' WHERE dag_id = 'broken';
SELECT orchestrator.create_dag('daily_next_to_broken', '@daily', start_date => '2021-01-01');
SELECT orchestrator.add_task('daily_next_to_broken', 't', orchestrator.sql('SELECT 1'));
COMMIT;
SELECT orchestrator.create_dag('ok');
SELECT orchestrator.add_task('ok', 't', orchestrator.sql('SELECT 1'));
SELECT orchestrator.add_task('ok', 'dropped', orchestrator.sql('INSERT INTO gone VALUES (1)'));
});
$run = query($node, "SELECT orchestrator.trigger_dag('ok')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'a DAG runs next to a broken one');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'dropped'"),
	qr/relation "gone" does not exist/, 'a missing table fails its task with a clear error');
ok($node->log_contains('cannot schedule DAG "broken": invalid cron schedule "not a schedule"'),
	'the broken DAG is reported in the log');
# (both due in the same pass: their batch fails, and each goes on its own)
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM orchestrator.dag_run WHERE dag_id = 'daily_next_to_broken'"),
	'a scheduled DAG due with the broken one gets its run');

# --- DROP EXTENSION and CREATE EXTENSION while the scheduler runs
query($node, "DROP EXTENSION orchestrator");
query($node, "CREATE EXTENSION orchestrator");
query($node, q{
SELECT orchestrator.create_dag('again');
SELECT orchestrator.add_task('again', 't', orchestrator.sql('SELECT 1'));
});
$run = query($node, "SELECT orchestrator.trigger_dag('again')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success',
	'after DROP and CREATE EXTENSION, DAGs run again');
is(query($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'orchestrator scheduler'"), '1',
	'one scheduler runs');

$node->stop;
done_testing();
