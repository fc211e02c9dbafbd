# Sensors: sql_sensor and http_sensor poke in short worker visits and,
# between pokes, are up_for_reschedule, holding no worker, with their try
# number kept; they succeed once true, time out (failed, not retried) or
# with soft_fail are skipped; cancel_run, clear_task and a kill -9 of the
# scheduler while one waits; the query runs as the DAG's owner, never as
# the superuser; an http_sensor obeys http_fetch's URL rules; 200 sensors
# waiting hold no worker.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;

# workers leave as soon as nothing is queued: a worker seen between pokes
# would be one a sensor holds
my $node = orch_node('sensors', "orchestrator.worker_idle_timeout = 0\n");

sub state_of
{
	my ($run, $task) = @_;
	return query($node, "SELECT state FROM orchestrator.task_instances WHERE run_id = $run AND task_id = '$task'");
}

sub workers
{
	return query($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'orchestrator worker'");
}

sub pokes
{
	my ($run, $task, $what) = @_;
	return query($node, "SELECT count(*) FROM orchestrator.task_log WHERE run_id = $run AND task_id = '$task' AND message LIKE 'poke: $what%'");
}

# --- a sql_sensor succeeds after several pokes, holding no worker between them
query($node, q{
CREATE TABLE flag (ok boolean);
INSERT INTO flag VALUES (false);
CREATE TABLE after_sensor (run_id bigint, at timestamptz);
SELECT orchestrator.create_dag('wait_flag');
SELECT orchestrator.add_task('wait_flag', 'sensor',
    orchestrator.sql_sensor('SELECT ok FROM flag WHERE {{ ds | quote_literal }} IS NOT NULL', poke_interval => '1 second', timeout => '1 hour'));
SELECT orchestrator.add_task('wait_flag', 'after',
    orchestrator.sql($$INSERT INTO after_sensor VALUES (current_setting('orchestrator.run_id')::bigint, now())$$),
    upstream => '{sensor}');
});
my $run = query($node, "SELECT orchestrator.trigger_dag('wait_flag')");
wait_for($node, "SELECT count(*) >= 3 FROM orchestrator.task_log WHERE run_id = $run AND task_id = 'sensor' AND message LIKE 'poke: false%'",
	't', 'the sensor pokes again and again while its query is false');
# between two pokes: up_for_reschedule, no worker at all
wait_for($node, "SELECT (SELECT state FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'sensor') || ' '
                 || (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'orchestrator worker')",
	'up_for_reschedule 0', 'between pokes the sensor is up_for_reschedule and no worker runs');
is(query($node, "SELECT try_number || ' ' || (next_try_at IS NOT NULL) || ' ' || (first_poke_at = started_at)
                 FROM orchestrator.task_instance WHERE run_id = $run AND task_id = 'sensor'"),
	'1 true true', 'it keeps its try number and its start, with the time of its next poke');
my $started = query($node, "SELECT started_at FROM orchestrator.task_instance WHERE run_id = $run AND task_id = 'sensor'");
is(state_of($run, 'after'), 'scheduled', 'its downstream waits');
query($node, "UPDATE flag SET ok = true");
is(query($node, "SELECT orchestrator.wait_run($run, '1 minute')"), 'success', 'once true, the sensor succeeds and the run ends');
is(query($node, "SELECT try_number || ' ' || (started_at = '$started') || ' ' || (first_poke_at IS NULL) FROM orchestrator.task_instance WHERE run_id = $run AND task_id = 'sensor'"),
	'1 true true', 'in its first try, started at its first poke');
cmp_ok(pokes($run, 'sensor', 'false'), '>=', 3, 'after several false pokes');
is(pokes($run, 'sensor', 'true'), '1', 'and one true');
is(query($node, "SELECT count(*) FROM after_sensor WHERE run_id = $run"), '1', 'its downstream ran once');
is(query($node, "SELECT count(*) FROM orchestrator.task_log WHERE run_id = $run AND task_id = 'sensor' AND message LIKE 'try 1 of task%'"),
	'1', 'the try is logged once, each poke on a line of its own');

# --- timeout: failed for good, whatever its retries; soft_fail: skipped
query($node, q{
SELECT orchestrator.create_dag('never', max_active_tasks => 4);
SELECT orchestrator.add_task('never', 'strict',
    orchestrator.sql_sensor('SELECT false', poke_interval => '1 second', timeout => '3 seconds'),
    retries => 2, retry_delay => '0');
SELECT orchestrator.add_task('never', 'soft',
    orchestrator.sql_sensor('SELECT NULL::boolean', poke_interval => '1 second', timeout => '3 seconds', soft_fail => true));
SELECT orchestrator.add_task('never', 'after_soft', orchestrator.sql('SELECT 1'), upstream => '{soft}');
SELECT orchestrator.add_task('never', 'always_after', orchestrator.sql('SELECT 1'), upstream => '{soft}', trigger_rule => 'all_done');
});
$run = query($node, "SELECT orchestrator.trigger_dag('never')");
is(query($node, "SELECT orchestrator.wait_run($run, '1 minute')"), 'failed', 'a sensor that never comes true fails its run at its timeout');
is(query($node, "SELECT state || ' ' || try_number || '/' || max_tries FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'strict'"),
	'failed 1/3', 'failed in its first try: a timeout is not retried');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'strict'"),
	qr/sensor "strict" timed out: its condition was not met within 00:00:03 of its first poke/, 'saying it timed out');
cmp_ok(query($node, "SELECT extract(epoch FROM finished_at - started_at) FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'strict'"),
	'>=', 3, 'its timeout counted from its first poke');
is(query($node, "SELECT string_agg(task_id || ' ' || state, ', ' ORDER BY task_id) FROM orchestrator.task_instances WHERE run_id = $run AND task_id <> 'strict'"),
	'after_soft skipped, always_after success, soft skipped', 'soft_fail: skipped, and its downstream follows its trigger rule');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'soft'"),
	qr/timed out/, 'the skipped sensor says why');

# --- cancel_run while a sensor waits between pokes
query($node, q{
SELECT orchestrator.create_dag('cancel_me');
SELECT orchestrator.add_task('cancel_me', 'sensor',
    orchestrator.sql_sensor('SELECT false', poke_interval => '1 hour'));
SELECT orchestrator.add_task('cancel_me', 'after', orchestrator.sql('SELECT 1'), upstream => '{sensor}');
});
$run = query($node, "SELECT orchestrator.trigger_dag('cancel_me')");
wait_for($node, "SELECT state FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'sensor'",
	'up_for_reschedule', 'a sensor waits for its next poke, an hour away');
query($node, "SELECT orchestrator.cancel_run($run)");
is(query($node, "SELECT state FROM orchestrator.dag_runs WHERE run_id = $run"), 'failed', 'cancel_run fails the run');
is(query($node, "SELECT string_agg(task_id || ' ' || state || ' ' || coalesce(error, '-'), ', ' ORDER BY task_id) FROM orchestrator.task_instances WHERE run_id = $run"),
	'after skipped -, sensor failed cancelled by cancel_run()', 'the waiting sensor fails as cancelled (its try had begun), its downstream is skipped');
is(query($node, "SELECT count(*) FROM orchestrator.task_instance WHERE run_id = $run AND (next_try_at IS NOT NULL OR first_poke_at IS NOT NULL)"),
	'0', 'and it is poked no more');

# --- clear_task while rescheduled: a new try, its timeout anew
query($node, q{
CREATE TABLE flag2 (ok boolean);
INSERT INTO flag2 VALUES (false);
SELECT orchestrator.create_dag('clear_me');
SELECT orchestrator.add_task('clear_me', 'sensor',
    orchestrator.sql_sensor('SELECT ok FROM flag2', poke_interval => '2 seconds'));
});
$run = query($node, "SELECT orchestrator.trigger_dag('clear_me')");
wait_for($node, "SELECT state FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'sensor'",
	'up_for_reschedule', 'another sensor waits');
my $first = query($node, "SELECT first_poke_at FROM orchestrator.task_instance WHERE run_id = $run");
is(query($node, "SELECT orchestrator.clear_task($run, 'sensor')"), '1', 'clear_task clears a sensor between pokes');
wait_for($node, "SELECT state || ' ' || try_number || ' ' || (first_poke_at > '$first') FROM orchestrator.task_instance WHERE run_id = $run",
	'up_for_reschedule 2 true', 'which pokes again in a new try, with a new first poke');

# --- kill -9 while rescheduled: the server restarts, the sensor goes on in its try
my $sched = query($node, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'orchestrator scheduler'");
kill 'KILL', $sched;
$node->poll_query_until('postgres', 'SELECT 1', '1');
wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'orchestrator scheduler' AND pid <> $sched", '1',
	'after a kill -9 of the scheduler, the server restarts it');
wait_for($node, "SELECT count(*) >= 2 FROM orchestrator.task_log WHERE run_id = $run AND try_number = 2 AND message LIKE 'poke: false%'
                 AND logged_at > (SELECT backend_start FROM pg_stat_activity WHERE backend_type = 'orchestrator scheduler')",
	't', 'the sensor is poked again after the restart');
query($node, "UPDATE flag2 SET ok = true");
is(query($node, "SELECT orchestrator.wait_run($run, '1 minute')"), 'success', 'and succeeds once true');
is(query($node, "SELECT state || ' ' || try_number FROM orchestrator.task_instances WHERE run_id = $run"), 'success 2',
	'in the same try as before the crash');

# --- the query runs as the DAG's owner, in the sandbox, never as the superuser
query($node, q{
CREATE ROLE sensor_owner NOLOGIN;
GRANT USAGE ON SCHEMA orchestrator TO sensor_owner;
CREATE TABLE secret (x int);
SET ROLE sensor_owner;
SELECT orchestrator.create_dag('owned', max_active_tasks => 4);
SELECT orchestrator.add_task('owned', 'as_owner',
    orchestrator.sql_sensor($$SELECT current_user = 'sensor_owner' AND session_user <> current_user
                              AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)$$, poke_interval => '1 second'));
SELECT orchestrator.add_task('owned', 'no_secret', orchestrator.sql_sensor('SELECT count(*) > 0 FROM secret', poke_interval => '1 second'));
SELECT orchestrator.add_task('owned', 'no_set_role', orchestrator.sql_sensor($$SELECT set_config('role', 'postgres', false) IS NOT NULL$$, poke_interval => '1 second'));
SELECT orchestrator.add_task('owned', 'not_boolean', orchestrator.sql_sensor('SELECT 1', poke_interval => '1 second'));
RESET ROLE;
});
$run = query($node, "SELECT orchestrator.trigger_dag('owned')");
is(query($node, "SELECT orchestrator.wait_run($run, '1 minute')"), 'failed', 'a run of a role\'s sensors ends');
is(state_of($run, 'as_owner'), 'success', 'the sensor\'s query runs as its owner, who is no superuser');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'no_secret'"),
	qr/permission denied for table secret/, 'with exactly its rights');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'no_set_role'"),
	qr/cannot set parameter "role"/, 'and no way to another role');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'not_boolean'"),
	qr/returns integer, not boolean/, 'a query that is not boolean is an error, not a guess');

# --- http_sensor: waits for the month's file; http_fetch's URL rules
my $www = PostgreSQL::Test::Utils::tempdir;
my $port = start_http_server($www);
query($node, qq{
ALTER SYSTEM SET orchestrator.http_allowed_hosts = '127.0.0.1';
SELECT pg_reload_conf();
SELECT orchestrator.create_dag('wait_file', params => '{"base": "http://127.0.0.1:$port", "local": "http://localhost:$port"}', max_active_tasks => 8);
SELECT orchestrator.add_task('wait_file', 'file',
    orchestrator.http_sensor('{{ params.base }}/files/data_{{ ds_nodash }}.csv', poke_interval => '1 second', timeout => '1 hour'));
SELECT orchestrator.add_task('wait_file', 'get', orchestrator.http_sensor('{{ params.base }}/data_{{ ds_nodash }}.csv', method => 'GET', poke_interval => '1 second'));
SELECT orchestrator.add_task('wait_file', 'redirected', orchestrator.http_sensor('{{ params.base }}/redirect/2/data_{{ ds_nodash }}.csv', poke_interval => '1 second'));
SELECT orchestrator.add_task('wait_file', 'other_host', orchestrator.http_sensor('{{ params.base }}/redirect-to/{{ params.local }}/files/x', poke_interval => '1 second'));
SELECT orchestrator.add_task('wait_file', 'file_scheme', orchestrator.http_sensor('{{ params.base }}/redirect-to/file:///etc/passwd', poke_interval => '1 second'));
SELECT orchestrator.add_task('wait_file', 'loop', orchestrator.http_sensor('{{ params.base }}/loop', poke_interval => '1 second'));
});
my $day = query($node, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')");
$run = query($node, "SELECT orchestrator.trigger_dag('wait_file')");
wait_for($node, "SELECT count(*) >= 2 FROM orchestrator.task_log WHERE run_id = $run AND task_id = 'file' AND message LIKE 'poke: HEAD %: HTTP 404, not yet'",
	't', 'an http_sensor pokes with HEAD, a 404 is "not yet"');
is(state_of($run, 'file'), 'up_for_reschedule', 'and it waits between pokes');
open my $fh, '>', "$www/data_$day.csv" or die;
print $fh "x\n" x 100000;
close $fh;
wait_for($node, "SELECT string_agg(task_id || ' ' || state, ', ' ORDER BY task_id) FROM orchestrator.task_instances WHERE run_id = $run AND task_id IN ('file', 'get', 'redirected')",
	'file success, get success, redirected success', 'once the file is there: a 2xx answer, also through redirects and with GET');
is(query($node, "SELECT orchestrator.wait_run($run, '1 minute')"), 'failed', 'the run ends');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'other_host'"),
	qr/redirect to "http:\/\/localhost:\d+\/files\/x" is not allowed/, 'a redirect to a host not allowed fails the try');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'file_scheme'"),
	qr/redirect to "file:\/\/\/etc\/passwd" is not allowed/, 'a redirect to file:// too');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'loop'"),
	qr/more than 10 redirects/, 'redirects are bounded');
my ($rc, $out, $err) = $node->psql('postgres', "SELECT orchestrator.http_sensor('file:///etc/passwd')");
like($err, qr/URL scheme "file" is not allowed/, 'an http_sensor of a file:// URL is refused when defined');
($rc, $out, $err) = $node->psql('postgres', "SELECT orchestrator.http_sensor('http://x/', method => 'POST')");
like($err, qr/invalid method argument of operator http_sensor: "POST"/, 'an http_sensor only reads: HEAD or GET');
($rc, $out, $err) = $node->psql('postgres', "SELECT orchestrator.sql_sensor('SELECT true', poke_interval => '0')");
like($err, qr/invalid poke_interval argument of operator sql_sensor: it must be positive/, 'poke_interval must be positive');
query($node, "ALTER SYSTEM RESET orchestrator.http_allowed_hosts; SELECT pg_reload_conf();");

# --- 200 sensors waiting hold no worker between pokes
query($node, q{
CREATE TABLE go (ok boolean);
INSERT INTO go VALUES (false);
SELECT orchestrator.create_dag('many', max_active_tasks => 200);
SELECT orchestrator.add_task('many', 's' || i, orchestrator.sql_sensor('SELECT ok FROM go', poke_interval => '5 seconds'))
  FROM generate_series(1, 200) i;
});
$run = query($node, "SELECT orchestrator.trigger_dag('many')");
wait_for($node, "SELECT (SELECT count(*) FILTER (WHERE state = 'up_for_reschedule') || ' ' || count(*) FILTER (WHERE state IN ('queued', 'running'))
                         FROM orchestrator.task_instance WHERE run_id = $run)
                 || ' ' || (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'orchestrator worker')",
	'200 0 0', '200 sensors wait between pokes with no worker running');
query($node, "UPDATE go SET ok = true");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'and all succeed once true');
is(query($node, "SELECT count(*) FILTER (WHERE try_number = 1 AND state = 'success') FROM orchestrator.task_instance WHERE run_id = $run"),
	'200', 'each in its first try');

# --- the grid and the graph know them
is((grep { /legend:.*@ up_for_reschedule/ } split /\n/, query($node, "SELECT * FROM orchestrator.grid('wait_flag')")) ? 1 : 0, 1,
	'the grid shows up_for_reschedule');

ok(!$node->log_contains('TRAP|server process .* was terminated by signal 11'), 'no crash');
$node->stop;
done_testing();
