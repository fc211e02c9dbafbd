# Fast hops: the worker that finishes a task decides its downstream and
# runs the next one; idle workers wait for work and are handed it.
#
# The scheduler is frozen (SIGSTOP) while the workers go on, so that what
# the tests see is the workers' doing and not the scheduler's safety net: a
# join the workers missed would leave the run hanging.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = orch_node('hops', "orchestrator.worker_idle_timeout = '60s'\n");

sub scheduler_pid
{
	return query($node,
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'orchestrator scheduler'");
}

# --- 1. a whole run decided by its workers alone: a fan-out held back by
# max_active_tasks, a join, a failure propagating, one_failed, the end
query($node, q{
CREATE TABLE hits (task text);
SELECT orchestrator.create_dag('solo', max_active_tasks => 2);
SELECT orchestrator.add_task('solo', 'first', orchestrator.sql('SELECT pg_sleep(2)'));
SELECT orchestrator.add_task('solo', x, orchestrator.sql(format('INSERT INTO public.hits VALUES (%L)', x)),
                             upstream => ARRAY['first'])
  FROM unnest(ARRAY['a', 'b', 'c']) x;
SELECT orchestrator.add_task('solo', 'join', orchestrator.sql($$INSERT INTO public.hits VALUES ('join')$$),
                             upstream => ARRAY['a', 'b', 'c']);
SELECT orchestrator.add_task('solo', 'after', orchestrator.sql($$INSERT INTO public.hits VALUES ('after')$$),
                             upstream => ARRAY['join']);
SELECT orchestrator.add_task('solo', 'bad', orchestrator.sql('SELECT 1/0'), upstream => ARRAY['first']);
SELECT orchestrator.add_task('solo', 'not_run', orchestrator.sql('SELECT 1'), upstream => ARRAY['bad']);
SELECT orchestrator.add_task('solo', 'not_run_either', orchestrator.sql('SELECT 1'), upstream => ARRAY['not_run']);
SELECT orchestrator.add_task('solo', 'on_fail', orchestrator.sql($$INSERT INTO public.hits VALUES ('on_fail')$$),
                             upstream => ARRAY['bad'], trigger_rule => 'one_failed');
});
my $run = query($node, "SELECT orchestrator.trigger_dag('solo')");
wait_for($node, "SELECT state FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'first'",
	'running', 'the first task runs');
my $sched = scheduler_pid();
ok($sched, 'the scheduler runs');
kill 'STOP', $sched;
wait_for($node, "SELECT state FROM orchestrator.dag_runs WHERE run_id = $run", 'failed',
	'with the scheduler frozen, the workers take the run to its end');
is( query($node,
		"SELECT string_agg(task_id || ' ' || state, ', ' ORDER BY task_id) FROM orchestrator.task_instances WHERE run_id = $run"),
	'a success, after success, b success, bad failed, c success, first success, join success, '
	  . 'not_run upstream_failed, not_run_either upstream_failed, on_fail success',
	'each task as its trigger rule says; upstream_failed propagates two levels');
is(query($node, "SELECT string_agg(task, ' ' ORDER BY task) FROM hits"),
	'a after b c join on_fail', 'each task that ran, ran once');
is( query($node, qq{
WITH t AS (SELECT started_at, finished_at FROM orchestrator.task_instances
           WHERE run_id = $run AND started_at IS NOT NULL)
SELECT max((SELECT count(*) FROM t t2 WHERE t2.started_at <= t1.started_at AND t2.finished_at > t1.started_at))
FROM t t1}) <= 2 ? 'ok' : 'exceeded', 'ok',
	'the siblings held back by max_active_tasks = 2 ran as room freed, never more than two at once');
kill 'CONT', $sched;

# --- 2. siblings finishing at the same moment never miss their join
query($node, q{
SELECT orchestrator.create_dag('fanin', max_active_tasks => 16);
SELECT orchestrator.add_task('fanin', 'root', orchestrator.sql('SELECT 1'));
SELECT orchestrator.add_task('fanin', 's' || i,
         orchestrator.sql('SELECT pg_advisory_lock_shared(4242); SELECT pg_advisory_unlock_shared(4242)'),
         upstream => ARRAY['root'])
  FROM generate_series(1, 8) i;
SELECT orchestrator.add_task('fanin', 'join', orchestrator.sql('SELECT 1'),
         upstream => ARRAY(SELECT 's' || i FROM generate_series(1, 8) i));
SELECT orchestrator.add_task('fanin', 'join_done', orchestrator.sql('SELECT 1'),
         upstream => ARRAY(SELECT 's' || i FROM generate_series(1, 8) i), trigger_rule => 'all_done');
});
for my $round (1 .. 3)
{
	my $holder = $node->background_psql('postgres');
	$holder->query_safe('SELECT pg_advisory_lock(4242)');
	$run = query($node, "SELECT orchestrator.trigger_dag('fanin')");
	wait_for($node,
		"SELECT count(*) >= 4 FROM orchestrator.task_instances WHERE run_id = $run AND state = 'running' AND task_id LIKE 's%'",
		't', "round $round: four siblings wait on the lock, one per worker");
	$sched = scheduler_pid();
	kill 'STOP', $sched;
	# all four finish at once; the others follow on the same workers
	$holder->query_safe('SELECT pg_advisory_unlock(4242)');
	$holder->quit;
	wait_for($node, "SELECT state FROM orchestrator.dag_runs WHERE run_id = $run", 'success',
		"round $round: the join ran, with the scheduler frozen");
	is( query($node,
			"SELECT count(*) FROM orchestrator.task_instances WHERE run_id = $run AND state = 'success' AND try_number = 1"),
		'11', "round $round: every task once, at its first try");
	kill 'CONT', $sched;
}

# --- 3. limits hold while workers queue for each other, across runs
query($node, q{
SELECT orchestrator.create_dag('lim', max_active_tasks => 3, max_active_runs => 3);
SELECT orchestrator.add_task('lim', 'root', orchestrator.sql('SELECT pg_sleep(0.1)'));
SELECT orchestrator.add_task('lim', 'x' || i, orchestrator.sql('SELECT pg_sleep(0.1)'), upstream => ARRAY['root'])
  FROM generate_series(1, 8) i;
SELECT orchestrator.add_task('lim', 'y' || i, orchestrator.sql('SELECT pg_sleep(0.1)'), upstream => ARRAY['x' || i])
  FROM generate_series(1, 8) i;
});
my @runs = map { query($node, "SELECT orchestrator.trigger_dag('lim', logical_date => now() - interval '$_ days')") } 1 .. 3;
for my $r (@runs)
{
	is(query($node, "SELECT orchestrator.wait_run($r, '5 minutes')"), 'success', "run $r of lim ends");
}
# the most tries running at once, from their recorded start and end
is( query($node, qq{
WITH t AS (
  SELECT ti.started_at, ti.finished_at FROM orchestrator.task_instances ti
  WHERE ti.run_id IN (@{[join(', ', @runs)]}))
SELECT max((SELECT count(*) FROM t t2 WHERE t2.started_at <= t1.started_at AND t2.finished_at > t1.started_at))
FROM t t1}) <= 3 ? 'ok' : 'exceeded', 'ok',
	'never more than max_active_tasks = 3 at once over three runs');
is(query($node, "SELECT count(*) FROM orchestrator.task_instances WHERE run_id IN (@{[join(', ', @runs)]}) AND state = 'success'"),
	'51', 'all 51 tasks ran');

# --- 4. an idle worker is handed the next task; it leaves after the idle timeout
query($node, q{
SELECT orchestrator.create_dag('one');
SELECT orchestrator.add_task('one', 't', orchestrator.sql('SELECT 1'));
});
$run = query($node, "SELECT orchestrator.trigger_dag('one')");
is(query($node, "SELECT orchestrator.wait_run($run, '1 minute')"), 'success', 'a task runs');
my $pid = query($node, "SELECT worker_pid FROM orchestrator.task_instances WHERE run_id = $run");
my $waiting = query($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'orchestrator worker' AND pid = $pid");
is($waiting, '1', 'its worker waits for more work');
$run = query($node, "SELECT orchestrator.trigger_dag('one', logical_date => now() + interval '1 day')");
is(query($node, "SELECT orchestrator.wait_run($run, '1 minute')"), 'success', 'the next run runs');
is(query($node, "SELECT worker_pid FROM orchestrator.task_instances WHERE run_id = $run"), $pid,
	'on the waiting worker: no new process');
$node->safe_psql('postgres', "ALTER SYSTEM SET orchestrator.worker_idle_timeout = '1s'; SELECT pg_reload_conf()");
wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'orchestrator worker'", '0',
	'idle workers leave after orchestrator.worker_idle_timeout');

# --- 5. a pass decides a batch of new runs at once (state_evaluate_batch):
# their first tasks queued under max_active_tasks across all the runs, and
# the runs it leaves to be decided one by one (a mapped task to expand, a
# task in a pool) in the same pass.  The instances held back for want of
# room are queued by the workers, as room frees: the scheduler is frozen
# once the pass made them.
query($node, q{
SELECT orchestrator.create_dag('wide', max_active_tasks => 2, max_active_runs => 30);
SELECT orchestrator.add_task('wide', 'r' || i, orchestrator.sql('SELECT pg_sleep(0.05)'))
  FROM generate_series(1, 3) i;
SELECT orchestrator.add_task('wide', 'j', orchestrator.sql('SELECT 1'), upstream => ARRAY['r1', 'r2', 'r3']);
SELECT orchestrator.create_dag('wide_map');
SELECT orchestrator.add_task('wide_map', 'm', orchestrator.sql('SELECT 1'), expand => '[1, 2, 3]');
SELECT orchestrator.create_pool('wide_pool', 1);
SELECT orchestrator.create_dag('wide_pooled');
SELECT orchestrator.add_task('wide_pooled', 'p' || i, orchestrator.sql('SELECT pg_sleep(0.05)'), pool => 'wide_pool')
  FROM generate_series(1, 3) i;
});
my $first = query($node, "SELECT coalesce(max(run_id), 0) FROM orchestrator.dag_run");
query($node, q{
BEGIN;
SELECT orchestrator.trigger_dag('wide', logical_date => now() - i * interval '1 day') FROM generate_series(1, 25) i;
SELECT orchestrator.trigger_dag('wide_map');
SELECT orchestrator.trigger_dag('wide_pooled');
COMMIT;
});
wait_for($node, "SELECT count(*) > 0 FROM orchestrator.task_instance WHERE run_id > $first AND state IN ('running', 'success')",
	't', 'the pass decided the runs: a worker runs their tasks');
is(query($node, "SELECT count(*) FROM orchestrator.task_instance ti JOIN orchestrator.dag_run r USING (run_id) WHERE r.run_id > $first AND r.dag_id = 'wide'"),
	'100', "the pass created every instance of the 25 runs of 'wide' at once");
kill 'STOP', $sched;
for my $r (split /\n/, query($node, "SELECT run_id FROM orchestrator.dag_run WHERE run_id > $first"))
{
	is(query($node, "SELECT orchestrator.wait_run($r, '5 minutes')"), 'success', "run $r of the batch ends");
}
kill 'CONT', $sched;
is( query($node, qq{
WITH t AS (
  SELECT ti.started_at, ti.finished_at FROM orchestrator.task_instances ti
  JOIN orchestrator.dag_runs r USING (run_id) WHERE r.dag_id = 'wide' AND r.run_id > $first)
SELECT max((SELECT count(*) FROM t t2 WHERE t2.started_at <= t1.started_at AND t2.finished_at > t1.started_at))
FROM t t1}) <= 2 ? 'ok' : 'exceeded', 'ok',
	'never more than max_active_tasks = 2 at once over 25 runs started in one pass');
is(query($node, "SELECT count(*) FROM orchestrator.task_instances ti JOIN orchestrator.dag_runs r USING (run_id) WHERE r.run_id > $first AND r.dag_id = 'wide' AND ti.state = 'success'"),
	'100', 'every task of the 25 runs ran once');
is(query($node, "SELECT string_agg(coalesce(map_index::text, '-'), ',' ORDER BY map_index) FROM orchestrator.task_instances ti JOIN orchestrator.dag_runs r USING (run_id) WHERE r.run_id > $first AND r.dag_id = 'wide_map'"),
	'0,1,2', 'the mapped task of the same pass expanded, each instance ran');
is( query($node, qq{
WITH t AS (
  SELECT ti.started_at, ti.finished_at FROM orchestrator.task_instances ti
  JOIN orchestrator.dag_runs r USING (run_id) WHERE r.dag_id = 'wide_pooled' AND r.run_id > $first)
SELECT count(*) || ' ' || max((SELECT count(*) FROM t t2 WHERE t2.started_at <= t1.started_at AND t2.finished_at > t1.started_at))
FROM t t1}), '3 1', 'the pooled tasks of the same pass ran one at a time, in their pool of one slot');

# the tables grew across powers of two: the scheduler ANALYZEd them (a
# manual ANALYZE to the statistics; autovacuum's count apart)
wait_for($node, "SELECT analyze_count > 0 FROM pg_stat_user_tables WHERE relid = 'orchestrator.task_instance'::regclass",
	't', 'the scheduler analyzed task_instance as it grew');

ok(!$node->log_contains('lost its worker'), 'no live worker was ever taken for lost');
ok(!$node->log_contains('could not decide'), 'the workers decided every downstream');

# --- 6. a waiting worker stopped by an administrator gives its slot up: the
# next task gets a new worker
$node->safe_psql('postgres', "ALTER SYSTEM SET orchestrator.worker_idle_timeout = '60s'; SELECT pg_reload_conf()");
$run = query($node, "SELECT orchestrator.trigger_dag('one', logical_date => now() + interval '2 days')");
is(query($node, "SELECT orchestrator.wait_run($run, '1 minute')"), 'success', 'a task runs again');
$pid = query($node, "SELECT worker_pid FROM orchestrator.task_instances WHERE run_id = $run");
wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid AND wait_event = 'Extension'", '1',
	'its worker waits for work');
query($node, "SELECT pg_terminate_backend($pid)");
wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid", '0', 'the waiting worker is stopped');
$run = query($node, "SELECT orchestrator.trigger_dag('one', logical_date => now() + interval '3 days')");
is(query($node, "SELECT orchestrator.wait_run($run, '1 minute')"), 'success', 'the next task runs');
isnt(query($node, "SELECT worker_pid FROM orchestrator.task_instances WHERE run_id = $run"), $pid,
	'on a new worker');
# and its slot is free: four tasks that wait for each other all run at once
# under orchestrator.max_workers = 4
query($node, q{
CREATE TABLE go ();
SELECT orchestrator.create_dag('four');
SELECT orchestrator.add_task('four', 'w' || i, orchestrator.sql($t$
    DO $do$ BEGIN WHILE NOT EXISTS (SELECT FROM public.go) LOOP PERFORM pg_sleep(0.05); END LOOP; END $do$$t$))
  FROM generate_series(1, 4) i;
});
$run = query($node, "SELECT orchestrator.trigger_dag('four')");
wait_for($node, "SELECT count(*) FROM orchestrator.task_instance WHERE run_id = $run AND state = 'running'", '4',
	'all four workers run: no slot was kept by the stopped worker');
query($node, "INSERT INTO go DEFAULT VALUES");
is(query($node, "SELECT orchestrator.wait_run($run, '1 minute')"), 'success', 'the four tasks end');

# --- 7. a worker killed in a task it chained to: the try is lost, counted
# as failed, retried, and what it wrote is not committed
query($node, q{
CREATE TABLE chained (x int);
SELECT orchestrator.create_dag('chain_kill');
SELECT orchestrator.add_task('chain_kill', 'a', orchestrator.sql('SELECT 1'));
SELECT orchestrator.add_task('chain_kill', 'b', orchestrator.sql($$
    INSERT INTO public.chained SELECT generate_series(1, 100);
    SELECT CASE WHEN current_setting('orchestrator.try_number') = '1' THEN pg_sleep(600) END$$),
    upstream => ARRAY['a'], retries => 1, retry_delay => '0');
});
$run = query($node, "SELECT orchestrator.trigger_dag('chain_kill')");
wait_for($node, "SELECT count(*) FROM pg_stat_activity a JOIN orchestrator.task_instance ti ON ti.worker_pid = a.pid WHERE ti.run_id = $run AND ti.task_id = 'b' AND ti.state = 'running' AND a.wait_event = 'PgSleep'",
	'1', 'the chained task runs its first try');
$pid = query($node, "SELECT worker_pid FROM orchestrator.task_instance WHERE run_id = $run AND task_id = 'b'");
is(query($node, "SELECT worker_pid FROM orchestrator.task_instance WHERE run_id = $run AND task_id = 'a'"), $pid,
	'on the worker that ran its upstream');
kill 'KILL', $pid;
# the server restarts after the crash
$node->poll_query_until('postgres', 'SELECT 1', '1');
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'after SIGKILL the chained task is retried');
is(query($node, "SELECT string_agg(task_id || ' ' || state || ' ' || try_number, ', ' ORDER BY task_id) FROM orchestrator.task_instances WHERE run_id = $run"),
	'a success 1, b success 2', 'the killed try counted as a failed try, the upstream not run again');
is(query($node, "SELECT count(*) FROM chained"), '100', 'the rows are loaded exactly once');
ok($node->log_contains("lost its worker \\(pid $pid\\); counting try 1 as failed"), 'the scheduler logged the lost try');
$node->stop;
done_testing();
