# Schedules, on the simulated clock: Airflow's data intervals, catchup and
# not, start_date and end_date, max_active_runs, @once, pause, backfill,
# time zones, retries with backoff, dagrun_timeout.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = orch_node('schedule');
query($node, "SET TimeZone = 'UTC'; ALTER DATABASE postgres SET TimeZone = 'UTC'");

sub runs
{
	my ($dag) = @_;
	return query($node,
		"SELECT string_agg(to_char(logical_date AT TIME ZONE 'UTC', 'MM-DD HH24:MI') || ' ' || run_type || ' ' || state, ', ' ORDER BY logical_date) FROM orchestrator.dag_runs WHERE dag_id = '$dag'"
	);
}

# --- the course DAG: monthly, catchup, one active run at a time, end_date
set_clock($node, '2021-04-03 00:00+00');
query($node, q{
CREATE TABLE seen (dag text, run_id bigint, running_runs bigint);
SELECT orchestrator.create_dag('monthly', '0 6 2 * *', start_date => '2021-01-01', end_date => '2021-03-28',
                               catchup => true, max_active_runs => 1);
SELECT orchestrator.add_task('monthly', 'note', orchestrator.sql($$
    INSERT INTO seen SELECT 'monthly', current_setting('orchestrator.run_id')::bigint,
        (SELECT count(*) FROM orchestrator.dag_run WHERE dag_id = 'monthly' AND state = 'running')$$));
});
wait_for($node, "SELECT count(*) FILTER (WHERE state = 'success') FROM orchestrator.dag_runs WHERE dag_id = 'monthly'",
	'3', 'catchup: one run per complete interval since start_date');
is(runs('monthly'), '01-02 06:00 scheduled success, 02-02 06:00 scheduled success, 03-02 06:00 scheduled success',
	'logical dates are the starts of the intervals; none after end_date');
is( query($node,
		"SELECT string_agg(to_char(data_interval_start AT TIME ZONE 'UTC', 'MM-DD') || '..' || to_char(data_interval_end AT TIME ZONE 'UTC', 'MM-DD'), ' ' ORDER BY logical_date) FROM orchestrator.dag_runs WHERE dag_id = 'monthly'"
	),
	'01-02..02-02 02-02..03-02 03-02..04-02',
	'each run covers its data interval');
is(query($node, "SELECT max(running_runs) FROM seen WHERE dag = 'monthly'"), '1',
	'max_active_runs => 1: never two runs at once');

# --- max_active_runs => 2
query($node, q{
SELECT orchestrator.create_dag('two_at_a_time', '@daily', start_date => '2021-03-01', end_date => '2021-03-08',
                               catchup => true, max_active_runs => 2);
SELECT orchestrator.add_task('two_at_a_time', 'note', orchestrator.sql($$
    INSERT INTO seen SELECT 'two', current_setting('orchestrator.run_id')::bigint,
        (SELECT count(*) FROM orchestrator.dag_run WHERE dag_id = 'two_at_a_time' AND state = 'running');
    SELECT pg_sleep(0.2)$$));
});
wait_for($node, "SELECT count(*) FILTER (WHERE state = 'success') FROM orchestrator.dag_runs WHERE dag_id = 'two_at_a_time'",
	'8', 'catchup over eight days');
cmp_ok(query($node, "SELECT max(running_runs) FROM seen WHERE dag = 'two'"), '<=', 2,
	'max_active_runs => 2: never more than two runs at once');

# --- without catchup: only the latest complete interval, then each next one
set_clock($node, '2021-01-10 12:00+00');
query($node, "SELECT orchestrator.create_dag('daily', '\@daily', start_date => '2021-01-01');
              SELECT orchestrator.add_task('daily', 't', orchestrator.sql('SELECT 1'))");
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'daily' AND state = 'success'",
	'1', 'catchup => false: one run');
is(runs('daily'), '01-09 00:00 scheduled success', 'for the latest complete interval');
set_clock($node, '2021-01-12 12:00+00');
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'daily' AND state = 'success'",
	'2', 'time passes: another run');
is(runs('daily'), '01-09 00:00 scheduled success, 01-11 00:00 scheduled success',
	'missed intervals are skipped without catchup');

# --- @once, and a start_date in the future
query($node, "SELECT orchestrator.create_dag('once', '\@once', start_date => '2021-01-05');
              SELECT orchestrator.add_task('once', 't', orchestrator.sql('SELECT 1'));
              SELECT orchestrator.create_dag('later', '\@daily', start_date => '2021-02-01', catchup => true);
              SELECT orchestrator.add_task('later', 't', orchestrator.sql('SELECT 1'))");
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'once' AND state = 'success'",
	'1', '@once runs once');
set_clock($node, '2021-01-20 12:00+00');
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'daily' AND state = 'success'",
	'3', 'the clock moves on');
is(runs('once'), '01-05 00:00 scheduled success', '@once did not run again');
is(runs('later'), '', 'no run before start_date');

# --- paused: no scheduled runs, and a manual run waits
query($node, "SELECT orchestrator.create_dag('sleepy', '\@daily', start_date => '2021-01-01', paused => true);
              SELECT orchestrator.add_task('sleepy', 't', orchestrator.sql('SELECT 1'))");
my $manual = query($node, "SELECT orchestrator.trigger_dag('sleepy', logical_date => '2021-01-15 08:00+00')");
is(query($node, "SELECT orchestrator.wait_run($manual, '2 seconds')"), 'queued',
	'a paused DAG starts no run (wait_run returns the state at its timeout)');
is(runs('sleepy'), '01-15 08:00 manual queued', 'and makes no scheduled run');
query($node, "SELECT orchestrator.unpause_dag('sleepy')");
is(query($node, "SELECT orchestrator.wait_run($manual, '3 minutes')"), 'success', 'unpaused, the manual run runs');
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'sleepy' AND state = 'success'",
	'2', 'and the schedule makes its run');

# --- backfill
query($node, "SELECT orchestrator.create_dag('hist', '\@daily', start_date => '2099-01-01');
              SELECT orchestrator.add_task('hist', 't', orchestrator.sql('SELECT 1'))");
is(query($node, "SELECT orchestrator.backfill('hist', '2021-01-01', '2021-01-05')"), '5',
	'backfill creates the runs of the intervals in the range');
is(query($node, "SELECT orchestrator.backfill('hist', '2021-01-03', '2021-01-06')"), '1',
	'and only those that do not exist');
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'hist' AND state = 'success'",
	'6', 'backfilled runs run');
is( query($node,
		"SELECT string_agg(to_char(logical_date AT TIME ZONE 'UTC', 'DD') || '-' || to_char(data_interval_end AT TIME ZONE 'UTC', 'DD') || ' ' || run_type, ', ' ORDER BY logical_date) FROM orchestrator.dag_runs WHERE dag_id = 'hist'"
	),
	'01-02 backfill, 02-03 backfill, 03-04 backfill, 04-05 backfill, 05-06 backfill, 06-07 backfill',
	'with their data intervals');

# --- a scheduled DAG gets no run before it has a task; then catchup starts
# from start_date as usual.  "witness", created after "tasks_later", shows
# that the scheduler has had a look at both.
query($node, "SELECT orchestrator.create_dag('tasks_later', '\@daily', start_date => '2021-01-15',
                                            end_date => '2021-01-18', catchup => true)");
query($node, "SELECT orchestrator.create_dag('witness', '\@daily', start_date => '2021-01-15',
                                            end_date => '2021-01-18', catchup => true);
              SELECT orchestrator.add_task('witness', 't', orchestrator.sql('SELECT 1'))");
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'witness' AND state = 'success'",
	'4', 'a DAG with a task gets its catchup runs');
is(runs('tasks_later'), '', 'a scheduled DAG without tasks gets no run');
query($node, "SELECT orchestrator.add_task('tasks_later', 't', orchestrator.sql('SELECT 1'))");
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'tasks_later' AND state = 'success'",
	'4', 'once it has a task, it gets its runs');
is(runs('tasks_later'),
	'01-15 00:00 scheduled success, 01-16 00:00 scheduled success, 01-17 00:00 scheduled success, 01-18 00:00 scheduled success',
	'from start_date on');

# --- time zones and daylight saving time
set_clock($node, '2021-03-20 00:00+00');
query($node, q{
SELECT orchestrator.create_dag('ny', '0 2 * * *', timezone => 'America/New_York', catchup => true,
                               start_date => '2021-03-13 00:00-05', end_date => '2021-03-15 12:00-04');
SELECT orchestrator.add_task('ny', 't', orchestrator.sql('SELECT 1'));
});
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'ny' AND state = 'success'",
	'3', 'a schedule in New York');
is(runs('ny'), '03-13 07:00 scheduled success, 03-14 07:00 scheduled success, 03-15 06:00 scheduled success',
	'runs at 02:00 local; on the spring-forward day at 03:00 EDT');

# --- retries, with exponential backoff capped by max_retry_delay
set_clock($node, '2021-06-01 00:00+00');
query($node, q{
SELECT orchestrator.create_dag('flaky');
SELECT orchestrator.add_task('flaky', 'flat', orchestrator.sql('SELECT 1/0'), retries => 2, retry_delay => '10 minutes');
SELECT orchestrator.add_task('flaky', 'backoff', orchestrator.sql('SELECT 1/0'), retries => 2, retry_delay => '10 minutes',
                             retry_exponential_backoff => true);
SELECT orchestrator.add_task('flaky', 'capped', orchestrator.sql('SELECT 1/0'), retries => 2, retry_delay => '10 minutes',
                             retry_exponential_backoff => true, max_retry_delay => '15 minutes');
});
my $run = query($node, "SELECT orchestrator.trigger_dag('flaky')");
my $states = "SELECT string_agg(task_id || ' ' || state || ' ' || try_number || coalesce(' ' || (next_try_at - finished_at)::text, ''), ', ' ORDER BY task_id) FROM orchestrator.task_instance WHERE run_id = $run";
wait_for($node, $states,
	'backoff up_for_retry 1 00:10:00, capped up_for_retry 1 00:10:00, flat up_for_retry 1 00:10:00',
	'a failed try is up for retry after retry_delay');
set_clock($node, '2021-06-01 00:10+00');
wait_for($node, $states,
	'backoff up_for_retry 2 00:20:00, capped up_for_retry 2 00:15:00, flat up_for_retry 2 00:10:00',
	'the second delay doubles with backoff, up to max_retry_delay');
set_clock($node, '2021-06-01 00:25+00');
wait_for($node, $states,
	'backoff up_for_retry 2 00:20:00, capped failed 3, flat failed 3',
	'no retry before its time; failed once the tries are spent');
set_clock($node, '2021-06-01 00:30+00');
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'the run fails');
is(query($node, "SELECT string_agg(task_id || ' ' || state || ' ' || try_number || '/' || max_tries, ', ' ORDER BY task_id) FROM orchestrator.task_instances WHERE run_id = $run"),
	'backoff failed 3/3, capped failed 3/3, flat failed 3/3', 'after three tries each');

# --- dagrun_timeout: the run fails, its running task is stopped and rolled back
query($node, q{
CREATE TABLE slow_t (x int);
SELECT orchestrator.create_dag('slow', dagrun_timeout => '1 hour');
SELECT orchestrator.add_task('slow', 'sleep', orchestrator.sql('INSERT INTO slow_t VALUES (1); SELECT pg_sleep(600)'));
});
$run = query($node, "SELECT orchestrator.trigger_dag('slow')");
wait_for($node, "SELECT count(*) FROM pg_stat_activity a JOIN orchestrator.task_instance ti ON ti.worker_pid = a.pid WHERE ti.run_id = $run AND ti.state = 'running' AND a.wait_event = 'PgSleep' AND a.query = 'task slow.sleep of run $run'",
	'1', 'a long task is running, and pg_stat_activity says which');
my $pid = query($node, "SELECT worker_pid FROM orchestrator.task_instance WHERE run_id = $run");
set_clock($node, '2021-06-01 02:00+00');
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'past dagrun_timeout the run fails');
is(query($node, "SELECT state || ': ' || error FROM orchestrator.task_instances WHERE run_id = $run"),
	'failed: dagrun_timeout exceeded', 'its running task fails');
wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid",
	'0', 'and its worker is stopped');
is(query($node, "SELECT count(*) FROM slow_t"), '0', 'what it wrote is rolled back');

# --- orchestrator.history_retention: the scheduler purges once a day
my $old = query($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE finished_at < '2021-05-26'");
my $recent = query($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE finished_at >= '2021-05-26' OR finished_at IS NULL");
cmp_ok($old, '>', 0, 'there are runs that ended before 2021-05-26');
my ($rc, $out, $err) = $node->psql('postgres', "ALTER SYSTEM SET orchestrator.history_retention = 'soon'");
like($err, qr/invalid value for parameter "orchestrator.history_retention": "soon"/, 'a retention that is not an interval is refused');
query($node, "ALTER SYSTEM SET orchestrator.history_retention = '45 days'; SELECT pg_reload_conf()");
set_clock($node, '2021-07-10 00:00+00');
# (the clock's jump also makes new runs: count what was there before)
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE finished_at < '2021-05-26'", '0',
	'with history_retention = 45 days, runs that ended before 2021-05-26 are purged');
cmp_ok(query($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE finished_at >= '2021-05-26' OR finished_at IS NULL"),
	'>=', $recent, 'the later ones stay');
cmp_ok(query($node, "SELECT count(*) FROM orchestrator.dags"), '>=', 10, 'the definitions stay');
ok($node->log_contains("orchestrator: removed $old runs that ended before"), 'the scheduler logs what it removed');

ok(!$node->log_contains('lost its worker'), 'no live worker was ever taken for lost');

$node->stop;

# --- the scheduler's cache of when each DAG is next due: a pass reads none
# of it while nothing in it can be due, and sleeps until then, so a DAG
# defined later, due before the others, must lower that bound (else
# nothing wakes the scheduler for it before the year is out)
my $c = orch_node('cache');
set_clock($c, '2030-01-01 00:00:00+00');
query($c, q{
SELECT orchestrator.create_dag('yearly', '0 0 1 1 *', start_date => '2030-01-01', timezone => 'UTC');
SELECT orchestrator.add_task('yearly', 't', orchestrator.sql('SELECT 1'));
SELECT orchestrator.create_dag('poke');
SELECT orchestrator.add_task('poke', 't', orchestrator.sql('SELECT 1'));
});
# (a trigger_dag changes no definition: its passes read the cache)
sub poke
{
	my ($n) = @_;
	my $run = query($c, "SELECT orchestrator.trigger_dag('poke', logical_date => '2029-01-01'::timestamptz + interval '$n days')");
	wait_for($c, "SELECT state FROM orchestrator.dag_runs WHERE run_id = $run", 'success', "poke $n ran");
}
poke(1);
poke(2);
query($c, q{
SELECT orchestrator.create_dag('hourly', '0 * * * *', start_date => '2030-01-01', timezone => 'UTC');
SELECT orchestrator.add_task('hourly', 't', orchestrator.sql('SELECT 1'));
});
poke(3);
is(query($c, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id IN ('yearly', 'hourly')"), '0',
	'nothing is due at midnight');
set_clock($c, '2030-01-01 01:30:00+00');
wait_for($c, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'hourly'", '1',
	'at 01:30, the hourly DAG has its run');
is(query($c, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'yearly'"), '0',
	'and the yearly one is still not due');

# --- an interval whose logical date another run already holds (a manual
# run given that date, a backfill ahead of the schedule) is that interval's
# run, as in Airflow: the schedule goes on past it instead of planning it
# again at every pass (one run at a time, the catchup stopped there)
query($c, q{
SELECT orchestrator.create_dag('held', '0 * * * *', start_date => '2030-01-01 01:00', catchup => true,
                               max_active_runs => 1, timezone => 'UTC');
SELECT orchestrator.add_task('held', 't', orchestrator.sql('SELECT 1'));
SELECT orchestrator.trigger_dag('held', logical_date => '2030-01-01 02:00+00');
SELECT orchestrator.backfill('held', '2030-01-01 03:00+00', '2030-01-01 03:00+00');
SELECT orchestrator.create_dag('held_once', '@once', start_date => '2030-01-01 05:00');
SELECT orchestrator.add_task('held_once', 't', orchestrator.sql('SELECT 1'));
SELECT orchestrator.trigger_dag('held_once', logical_date => '2030-01-01 05:00+00');
});
set_clock($c, '2030-01-01 05:30:00+00');
wait_for($c, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'held' AND state = 'success'", '4',
	'a catchup past intervals that other runs hold');
is( query($c,
		"SELECT string_agg(to_char(logical_date AT TIME ZONE 'UTC', 'HH24') || ' ' || run_type, ', ' ORDER BY logical_date) FROM orchestrator.dag_runs WHERE dag_id = 'held'"
	),
	'01 scheduled, 02 manual, 03 backfill, 04 scheduled',
	'the held intervals get no scheduled run; the next ones do');
wait_for($c, "SELECT state FROM orchestrator.dag_runs WHERE dag_id = 'held_once'", 'success',
	'an @once DAG whose date a manual run holds');
is(query($c, "SELECT string_agg(run_type, ', ') FROM orchestrator.dag_runs WHERE dag_id = 'held_once'"),
	'manual', 'has that run only');

# --- a pass reads nothing of the DAGs it knows to be due: it holds their
# definitions, as of their rows' versions, and so must never plan from one
# that changed since.  Three DAGs seen at 05:30, due at 06:00, then
# replaced: one by another schedule, one by none, one paused.
query($c, q{
SELECT orchestrator.create_dag(d, '0 * * * *', start_date => '2030-01-01 05:00', timezone => 'UTC')
  FROM unnest(ARRAY['redefined', 'unscheduled', 'paused_later']) d;
SELECT orchestrator.add_task(d, 't', orchestrator.sql('SELECT 1'))
  FROM unnest(ARRAY['redefined', 'unscheduled', 'paused_later']) d;
});
poke(4);
poke(5);
query($c, q{
SELECT orchestrator.create_dag('redefined', '30 * * * *', start_date => '2030-01-01 05:00', timezone => 'UTC');
SELECT orchestrator.add_task('redefined', 't', orchestrator.sql('SELECT 1'));
SELECT orchestrator.create_dag('unscheduled');
SELECT orchestrator.add_task('unscheduled', 't', orchestrator.sql('SELECT 1'));
SELECT orchestrator.pause_dag('paused_later');
});
poke(6);
set_clock($c, '2030-01-01 06:45:00+00');
wait_for($c, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'redefined' AND state = 'success'", '1',
	'a DAG given another schedule while the scheduler knew when it was due');
is( query($c,
		"SELECT to_char(logical_date AT TIME ZONE 'UTC', 'HH24:MI') FROM orchestrator.dag_runs WHERE dag_id = 'redefined'"),
	'05:30', 'runs by its new schedule');
poke(7);
is( query($c, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id IN ('unscheduled', 'paused_later')"),
	'0', 'one left without a schedule, or paused, gets no scheduled run');

# --- max_active_tasks when the scheduler creates a run while another run
# of the DAG is running (the new run's instances wait for room), and when
# it creates two runs of an idle DAG at once (they share its room)
query($c, q{
CREATE TABLE roomy_seen (dag text, active bigint);
CREATE FUNCTION roomy_note(dag text) RETURNS void LANGUAGE sql AS $$
  INSERT INTO roomy_seen SELECT dag, count(*) FROM orchestrator.task_instance ti
    JOIN orchestrator.dag_run r USING (run_id) WHERE r.dag_id = dag AND ti.state IN ('queued', 'running');
  SELECT pg_sleep(2) $$;
SELECT orchestrator.create_dag(d, '0 * * * *', start_date => '2030-01-01 06:00', catchup => true,
                               max_active_runs => 2, max_active_tasks => 3, timezone => 'UTC')
  FROM unnest(ARRAY['roomy', 'roomy_two']) d;
SELECT orchestrator.add_task(d, 't' || i, orchestrator.sql(format('SELECT roomy_note(%L)', d)))
  FROM unnest(ARRAY['roomy', 'roomy_two']) d, generate_series(1, 3) i;
SELECT orchestrator.pause_dag('roomy_two');
});
set_clock($c, '2030-01-01 07:30:00+00');
wait_for($c, "SELECT count(*) FROM orchestrator.task_instances WHERE dag_id = 'roomy' AND state = 'running'", '3',
	'the first run of a DAG with max_active_tasks => 3 runs its three tasks');
set_clock($c, '2030-01-01 08:30:00+00');
wait_for($c, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'roomy' AND state = 'success'", '2',
	'a second run created while they ran');
is(query($c, "SELECT max(active) FROM roomy_seen WHERE dag = 'roomy'"), '3',
	'waited for room: never more than three of its instances queued or running');
query($c, "SELECT orchestrator.unpause_dag('roomy_two')");
wait_for($c, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'roomy_two' AND state = 'success'", '2',
	'two runs of an idle DAG created at once');
is(query($c, "SELECT max(active) FROM roomy_seen WHERE dag = 'roomy_two'"), '3',
	'share its room: never more than three of their instances queued or running');

# --- a DAG that came by a way that fires no trigger (a data-only restore
# with triggers disabled) is listed at the first pass a minute or more
# after the last full listing: every DAG is listed again then when the
# cumulative statistics say that dag or task was written since (passes
# made by trigger_dag, every few seconds, until it is)
query($c, q{
SET session_replication_role = replica;
INSERT INTO orchestrator.dag
  SELECT (jsonb_populate_record(d, jsonb_build_object('dag_id', 'untriggered'))).*
  FROM orchestrator.dag d WHERE dag_id = 'hourly';
INSERT INTO orchestrator.task
  SELECT (jsonb_populate_record(t, jsonb_build_object('dag_id', 'untriggered'))).*
  FROM orchestrator.task t WHERE dag_id = 'hourly';
});
my $listed = 0;
for my $n (100 .. 140)
{
	poke($n);
	$listed = query($c, "SELECT count(*) > 0 FROM orchestrator.dag_runs WHERE dag_id = 'untriggered'") eq 't';
	last if $listed;
	sleep 5;
}
ok($listed, 'a DAG inserted with triggers disabled gets its runs');
$c->stop;
done_testing();
