# Callbacks, as in Airflow: on_failure_callback, on_success_callback and
# on_retry_callback on tasks, on_failure_callback and on_success_callback on
# DAGs; SQL callbacks with the triggering task's context and error, webhook
# callbacks with a templated JSON body; a failing callback changes nothing.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = orch_node('callbacks');
my $www = PostgreSQL::Test::Utils::tempdir;
my $port = start_http_server($www);
my $base = "http://127.0.0.1:$port";

query($node, qq{
CREATE TABLE alerts (kind text, dag text, task text, try text, error text, setting_error text);
SELECT orchestrator.create_dag('cb', params => '{"base": "$base"}',
  on_failure_callback => orchestrator.sql(\$\$INSERT INTO alerts VALUES ('dag failed', '{{ dag_id }}', '{{ task_id }}', NULL, '{{ error }}', current_setting('orchestrator.error'))\$\$),
  on_success_callback => orchestrator.sql(\$\$INSERT INTO alerts VALUES ('dag succeeded', '{{ dag_id }}', NULL, NULL, NULL, NULL)\$\$));
SELECT orchestrator.add_task('cb', 'ok', orchestrator.sql('SELECT 1'),
  on_success_callback => orchestrator.sql(\$\$INSERT INTO alerts VALUES ('success', '{{ dag_id }}', '{{ task_id }}', current_setting('orchestrator.try_number'), NULL, NULL)\$\$));
SELECT orchestrator.add_task('cb', 'bad', orchestrator.sql('SELECT 1/0'), retries => 1, retry_delay => '0',
  on_retry_callback => orchestrator.sql(\$\$INSERT INTO alerts VALUES ('retry', '{{ dag_id }}', '{{ task_id }}', current_setting('orchestrator.try_number'), '{{ error }}', NULL)\$\$),
  on_failure_callback => orchestrator.http_fetch('{{ params.base }}/hook/alerts', method => 'POST',
      headers => '{"Content-Type": "application/json"}',
      body => '{"dag": "{{ dag_id }}", "task": "{{ task_id }}", "run": "{{ run_id }}", "error": "{{ error }}"}'));
});
my $run = query($node, "SELECT orchestrator.trigger_dag('cb', logical_date => '2021-01-02')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'a run with a failing task fails');
wait_for($node, "SELECT count(*) FROM alerts WHERE kind = 'dag failed'", '1', "the DAG's on_failure_callback runs");
is( query($node, "SELECT string_agg(concat_ws('|', kind, dag, task, try, error, setting_error), E'\\n' ORDER BY kind) FROM alerts"),
	"dag failed|cb||tasks bad failed|tasks bad failed\nretry|cb|bad|1|division by zero\nsuccess|cb|ok|1",
	'each callback ran once, with its context and error (as a template and as a setting)');
wait_for($node, "SELECT count(*) FROM orchestrator.callback", '0', 'no callback is left due');

my $hook = do { local $/; open my $fh, '<', "$www/hook-alerts.log" or die "no webhook call: $!"; <$fh> };
is($hook, qq{POST application/json {"dag": "cb", "task": "bad", "run": "manual__2021-01-02T00:00:00+00:00", "error": "division by zero"}\n},
	'the webhook callback reached the server once, with its JSON body');
like(query($node, "SELECT string_agg(level || ' ' || message, E'\\n' ORDER BY id) FROM orchestrator.task_log WHERE run_id = $run AND task_id = 'bad' AND try_number = 2"),
	qr/\nERROR division by zero\nINFO on_failure_callback ran$/,
	'the callback is in the try\'s log, after its error');

# a failing callback is logged and changes nothing
query($node, q{
TRUNCATE alerts;
SELECT orchestrator.create_dag('cb2', on_success_callback => orchestrator.sql('SELECT 1/0'));
SELECT orchestrator.add_task('cb2', 'ok', orchestrator.sql('INSERT INTO alerts (kind) VALUES (''work'')'),
  on_success_callback => orchestrator.sql('INSERT INTO missing_table VALUES (1)'));
});
$run = query($node, "SELECT orchestrator.trigger_dag('cb2')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'failing callbacks do not fail the run');
wait_for($node, "SELECT count(*) FROM orchestrator.callback", '0', 'they were run');
is(query($node, "SELECT state FROM orchestrator.task_instances WHERE run_id = $run"), 'success', 'nor the task');
like(query($node, "SELECT string_agg(level || ' ' || message, E'\\n' ORDER BY id) FROM orchestrator.task_log WHERE run_id = $run"),
	qr/WARNING on_success_callback failed: relation "missing_table" does not exist/, 'the failure is in the task log');
ok($node->log_contains('on_success_callback of DAG "cb2" \(run \d+\) on_success_callback failed: division by zero'),
	"and a DAG callback's failure in the server log");

# a lost worker's failure runs the failure callback too
query($node, q{
TRUNCATE alerts;
SELECT orchestrator.create_dag('cb3');
SELECT orchestrator.add_task('cb3', 'sleep', orchestrator.sql('SELECT pg_sleep(600)'),
  on_failure_callback => orchestrator.sql($$INSERT INTO alerts (kind, error) VALUES ('lost', '{{ error }}')$$));
});
$run = query($node, "SELECT orchestrator.trigger_dag('cb3')");
wait_for($node, "SELECT count(*) FROM pg_stat_activity a JOIN orchestrator.task_instance ti ON ti.worker_pid = a.pid WHERE ti.run_id = $run AND a.wait_event = 'PgSleep'",
	'1', 'a task runs');
my $pid = query($node, "SELECT worker_pid FROM orchestrator.task_instance WHERE run_id = $run");
kill 'KILL', $pid;
$node->poll_query_until('postgres', 'SELECT 1', '1');
wait_for($node, "SELECT count(*) FROM alerts WHERE kind = 'lost'", '1', 'a killed worker\'s try runs on_failure_callback');
like(query($node, "SELECT error FROM alerts WHERE kind = 'lost'"), qr/stopped without recording an outcome/, 'with the error');

# definitions: callbacks are checked
my ($rc, $out, $err) = $node->psql('postgres',
	"SELECT orchestrator.add_task('cb3', 'x', orchestrator.sql('SELECT 1'), on_failure_callback => orchestrator.gunzip('sleep'))");
like($err, qr/on_failure_callback cannot be a gunzip operator/, 'a callback is a sql or http_fetch operator');
($rc, $out, $err) = $node->psql('postgres',
	"SELECT orchestrator.create_dag('cb4', on_failure_callback => '{\"operator\": \"sql\", \"query\": \"{{ nope }}\"}')");
like($err, qr/unknown template variable "nope"/, 'its templates are checked');

$node->stop;
done_testing();
