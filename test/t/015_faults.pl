# Faults: the worker survives its own, and always records the real error.
# A huge hostile error text, rows that cannot be read, callbacks that hang or
# are cancelled, settings reloaded under a busy worker, a database that does
# not exist yet: each ends in a recorded state, other runs go on, and the
# server log shows no crash and no restart loop.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $www = PostgreSQL::Test::Utils::tempdir;
open my $fh, '>', "$www/x.csv" or die;
print $fh "1\n";
close $fh;
my $port = start_http_server($www);

my $node = orch_node('faults', "orchestrator.max_workers = 1\norchestrator.events = on\n");
query($node, q{
SELECT orchestrator.create_dag('ok');
SELECT orchestrator.add_task('ok', 't', orchestrator.sql('SELECT 1'));
});
sub ok_run_completes
{
	my ($what) = @_;
	my $run = query($node, "SELECT orchestrator.trigger_dag('ok')");
	is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', "$what: other runs complete");
}

# 1. an error too long for NOTICE, full of quotes, backslashes, newlines and
# non-ASCII: recorded with its own text (cut at 16 kB), never as "lost"
query($node, q{
SELECT orchestrator.create_dag('loud');
SELECT orchestrator.add_task('loud', 't', orchestrator.sql($q$DO $d$ BEGIN RAISE EXCEPTION '%', repeat('"quoted" ' || chr(92) || ' back' || chr(10) || 'slash é ☃ ', 3000); END $d$$q$));
});
my $run = query($node, "SELECT orchestrator.trigger_dag('loud')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'a task with a huge hostile error fails');
my $err = query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run");
like($err, qr/^"quoted" \\ back\nslash é ☃ "quoted"/, 'with its own error text');
cmp_ok(length($err), '<=', 16384 + 10, 'bounded');
like($err, qr/ \[\.\.\.\]$/, 'and marked as cut');
ok_run_completes('after a huge error');

# 2. rows that cannot be read: failed (or dropped) once, no crash loop
query($node, q{
SELECT orchestrator.create_dag('poison');
SELECT orchestrator.add_task('poison', 't', orchestrator.sql('SELECT 1'));
});
$run = query($node, "SELECT orchestrator.trigger_dag('poison')");
query($node, "SELECT orchestrator.wait_run($run, '3 minutes')");
query($node, "INSERT INTO orchestrator.callback (run_id, task_id, kind, spec, try_number) VALUES ($run, 't', 'on_success_callback', '{\"operator\": 42}', 1)");
query($node, "SELECT orchestrator.check_setup()");
wait_for($node, "SELECT count(*) FROM orchestrator.callback", '0', 'a callback that cannot run is dropped');
like(query($node, "SELECT message FROM orchestrator.task_log WHERE run_id = $run AND level = 'WARNING'"),
	qr/^on_success_callback failed: /, 'with a line in its try\'s log');
ok_run_completes('after a poison callback');

# 3. callbacks: bounded by callback_timeout, visible, stopped by cancel_run
query($node, q{
ALTER SYSTEM SET orchestrator.callback_timeout = '2s';
SELECT pg_reload_conf();
SELECT orchestrator.create_dag('hang');
SELECT orchestrator.add_task('hang', 't', orchestrator.sql('SELECT 1'),
  on_success_callback => orchestrator.sql($q$DO $d$ BEGIN LOOP BEGIN PERFORM pg_sleep(0.2); EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $d$$q$));
SELECT orchestrator.create_dag('sleepy');
SELECT orchestrator.add_task('sleepy', 't', orchestrator.sql('SELECT 1'),
  on_success_callback => orchestrator.sql('SELECT pg_sleep(600)'));
});
$run = query($node, "SELECT orchestrator.trigger_dag('hang')");
wait_for($node, "SELECT what FROM orchestrator.progress WHERE run_id = $run", 'on_success_callback',
	'a running callback shows in progress');
wait_for($node, "SELECT count(*) FROM orchestrator.callback", '0', 'a callback that catches its timeout is stopped');
like(query($node, "SELECT message FROM orchestrator.task_log WHERE run_id = $run AND level = 'WARNING'"),
	qr/^on_success_callback dropped: its worker \(pid \d+\) was stopped/, 'and says so in the log');
$run = query($node, "SELECT orchestrator.trigger_dag('sleepy')");
wait_for($node, "SELECT count(*) FROM orchestrator.task_log WHERE run_id = $run AND level = 'WARNING'", '1',
	'a callback past its timeout is cancelled');
like(query($node, "SELECT message FROM orchestrator.task_log WHERE run_id = $run AND level = 'WARNING'"),
	qr/^on_success_callback failed: orchestrator\.callback_timeout \(2000 ms\) exceeded$/, 'and says why');
query($node, "ALTER SYSTEM SET orchestrator.callback_timeout = '10min'; SELECT pg_reload_conf()");
$run = query($node, "SELECT orchestrator.trigger_dag('sleepy')");
wait_for($node, "SELECT what FROM orchestrator.progress WHERE run_id = $run", 'on_success_callback', 'a long callback runs');
query($node, "SELECT orchestrator.cancel_run($run)");
wait_for($node, "SELECT count(*) FROM orchestrator.progress", '0', 'cancel_run stops it');
is(query($node, "SELECT count(*) FROM orchestrator.callback"), '0', 'and drops it');
ok_run_completes('after hanging callbacks');

# 4. settings reload between tasks: a busy worker applies a new allowed-hosts
# list to its next task
query($node, qq{
SELECT orchestrator.create_dag('reload');
SELECT orchestrator.add_task('reload', 'a_slow', orchestrator.sql('SELECT pg_sleep(2)'));
SELECT orchestrator.add_task('reload', 'b_fetch', orchestrator.http_fetch('http://127.0.0.1:$port/x.csv'));
});
$run = query($node, "SELECT orchestrator.trigger_dag('reload')");
wait_for($node, "SELECT state FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'a_slow'", 'running',
	'a worker is busy (its next task queued behind it)');
query($node, "ALTER SYSTEM SET orchestrator.http_allowed_hosts = 'example.invalid'; SELECT pg_reload_conf()");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'its next task');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'b_fetch'"),
	qr/host "127\.0\.0\.1" is not allowed/, 'obeys the reloaded setting');
is(query($node, "SELECT count(DISTINCT worker_pid) FROM orchestrator.task_instances WHERE run_id = $run"), '1',
	'in the same worker');
query($node, "ALTER SYSTEM RESET orchestrator.http_allowed_hosts; SELECT pg_reload_conf()");

my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal|server process .* was terminated/, 'no worker crashed');
my $starts = () = $log =~ /orchestrator scheduler started/g;
is($starts, 1, 'the scheduler never restarted');
$node->stop;

# 5. a database that does not exist yet is waited for, with one log line
my $late = PostgreSQL::Test::Cluster->new('late');
$late->init;
$late->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'orchestrator'
orchestrator.database = 'later'
});
$late->start;
ok($late->wait_for_log(qr/orchestrator launcher: database "later" does not exist; waiting for it/),
	'a missing database is waited for');
sleep 12;
$log = slurp_file($late->logfile);
my $said = () = $log =~ /does not exist; waiting for it/g;
is($said, 1, 'said once');
unlike($log, qr/FATAL:  database "later" does not exist/, 'no restart loop');
$late->safe_psql('postgres', 'CREATE DATABASE later');
$late->safe_psql('later', q{
CREATE EXTENSION orchestrator;
SELECT orchestrator.create_dag('d');
SELECT orchestrator.add_task('d', 't', orchestrator.sql('SELECT 1'));
});
$run = $late->safe_psql('later', "SELECT orchestrator.trigger_dag('d')");
is($late->safe_psql('later', "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success',
	'once it exists, its DAGs run');
$late->stop;

done_testing();
