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
use Encode ();
use JSON::PP;

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

# a webhook body built with tojson: whatever the error says, it arrives as
# valid JSON and decodes to the exact error text
my $nasty = qq{it's "quoted", back\\slash, \\n is not a newline,\nline two,\r\n\ttabbed, \x01, caf\x{e9} \x{2603} \x{1F600}};
my $nasty_hex = unpack('H*', Encode::encode('UTF-8', $nasty));
query($node, qq{
SELECT orchestrator.create_dag('cb_json', params => '{"base": "$base", "note": "a\\r\\nX-Injected: 1", "lf": "a\\nb"}');
SELECT orchestrator.add_task('cb_json', 'nasty', orchestrator.sql(\$q\$DO \$do\$BEGIN RAISE EXCEPTION '%', convert_from(decode('$nasty_hex', 'hex'), 'UTF8'); END\$do\$\$q\$),
  on_failure_callback => orchestrator.http_fetch('{{ params.base }}/hook/json', method => 'POST',
      headers => '{"Content-Type": "application/json", "X-Error": "{{ error | tojson }}"}',
      body => '{"task": {{ task_id | tojson }}, "error": {{ error | tojson }}, "note": {{ params.absent | default("none") | tojson }}}'));
SELECT orchestrator.add_task('cb_json', 'header_error', orchestrator.sql('SELECT 1/0'),
  on_failure_callback => orchestrator.http_fetch('{{ params.base }}/hook/header-error', headers => '{"X-Error": "{{ error }}, and {{ params.lf }}"}'));
SELECT orchestrator.add_task('cb_json', 'header_crlf', orchestrator.http_fetch('{{ params.base }}/hook/header-crlf', headers => '{"X-Note": "{{ params.note }}"}'));
SELECT orchestrator.add_task('cb_json', 'header_lf', orchestrator.http_fetch('{{ params.base }}/hook/header-lf', headers => '{"X-Note": "{{ params.lf }}"}'));
});
$run = query($node, "SELECT orchestrator.trigger_dag('cb_json')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'a run whose task fails with a hostile error text');
wait_for($node, "SELECT count(*) FROM orchestrator.callback", '0', 'its callbacks ran');
is(query($node, "SELECT error = convert_from(decode('$nasty_hex', 'hex'), 'UTF8') FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'nasty'"),
	't', 'the task failed with the hostile text as its error');
my $raw = do { local $/; open my $fh, '<:raw', "$www/hook-json.log" or die "no webhook call: $!"; <$fh> };
my ($method, $type, $json) = $raw =~ /^(\S+) (\S+) (.*)\n\z/s or diag("hook log: $raw");
is("$method $type", 'POST application/json', 'the webhook was called once, with its JSON body');
my $body = eval { JSON::PP->new->utf8->decode($json) };
ok($body, 'the body is valid JSON') or diag("$@: $json");
is($body->{error}, $nasty, 'and its error round-trips exactly: quotes, backslashes, newlines, tab, controls, non-ASCII');
is($body->{task}, 'nasty', 'with the task id');
is($body->{note}, 'none', 'and a default for an absent parameter');

# a rendered header value with a line break is an error, never a second header
my %error = map { split /\|/, $_, 2 } split /\n(?=\w+\|)/,
  query($node, "SELECT task_id || '|' || coalesce(error, state) FROM orchestrator.task_instances WHERE run_id = $run");
like($error{header_crlf}, qr/^header "X-Note" of task "header_crlf" renders with a line break/, 'a header rendered with CR LF fails the task');
like($error{header_lf}, qr/^header "X-Note" of task "header_lf" renders with a line break/, 'and one with LF only');
like(query($node, "SELECT string_agg(level || ' ' || message, E'\\n' ORDER BY id) FROM orchestrator.task_log WHERE run_id = $run AND task_id = 'header_error'"),
	qr/WARNING on_failure_callback failed: header "X-Error" of task "header_error" renders with a line break/,
	'as does a webhook header that renders the error with a line break');
ok(!-e "$www/hook-header-crlf.log" && !-e "$www/hook-header-lf.log" && !-e "$www/hook-header-error.log",
	'none of them made a request');
unlike(do { local $/; open my $fh, '<', "$www/requests.log" or die; <$fh> }, qr/header-(crlf|lf|error)/, 'not even a partial one');

# definitions: callbacks are checked
my ($rc, $out, $err) = $node->psql('postgres',
	"SELECT orchestrator.add_task('cb3', 'x', orchestrator.sql('SELECT 1'), on_failure_callback => orchestrator.gunzip('sleep'))");
like($err, qr/on_failure_callback cannot be a gunzip operator/, 'a callback is a sql or http_fetch operator');
($rc, $out, $err) = $node->psql('postgres',
	"SELECT orchestrator.create_dag('cb4', on_failure_callback => '{\"operator\": \"sql\", \"query\": \"{{ nope }}\"}')");
like($err, qr/unknown template variable "nope"/, 'its templates are checked');

$node->stop;
done_testing();
