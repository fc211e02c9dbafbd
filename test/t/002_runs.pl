# Manual runs: ordering, the run context, trigger rules and the propagation
# of upstream_failed and skipped, the run's state from its leaves, and
# tasks running with exactly their DAG owner's privileges.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = orch_node('runs');

# --- a chain runs in order, with its context, as its owner
query($node, q{
CREATE TABLE log (task text, setting_run_id text, logical_date text, ds text, dag_id text,
                  task_id text, try text, run_type text, who text, rendered text,
                  at timestamptz DEFAULT clock_timestamp());
SELECT orchestrator.create_dag('chain', params => '{"greeting": "hello"}');
SELECT orchestrator.add_task('chain', 'first', orchestrator.sql($$
    INSERT INTO log SELECT 'first', current_setting('orchestrator.run_id'),
        current_setting('orchestrator.logical_date'), current_setting('orchestrator.ds'),
        current_setting('orchestrator.dag_id'), current_setting('orchestrator.task_id'),
        current_setting('orchestrator.try_number'), current_setting('orchestrator.run_type'),
        current_user, '{{ params.greeting }} {{ ds_nodash }} {{ run_id }} {{ params.extra }}'$$));
SELECT orchestrator.add_task('chain', 'second', orchestrator.sql($$INSERT INTO log (task) VALUES ('second')$$),
                             upstream => '{first}');
});
my $run = query($node,
	"SELECT orchestrator.trigger_dag('chain', '{\"extra\": \"from conf\"}', '2021-01-02 06:00+00')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'a manual run succeeds');
is( query($node,
		"SELECT setting_run_id, logical_date, ds, dag_id, task_id, try, run_type, who, rendered FROM log WHERE task = 'first'"),
	"$run|2021-01-02T06:00:00+00:00|2021-01-02|chain|first|1|manual|postgres|hello 20210102 manual__2021-01-02T06:00:00+00:00 from conf",
	'the task sees its run context as settings, and its templates are rendered (conf overrides params)');
is(query($node, "SELECT string_agg(task, ',' ORDER BY at) FROM log"), 'first,second',
	'downstream runs after upstream');
is( query($node,
		"SELECT string_agg(task_id || ':' || state || ':' || try_number || ':' || (worker_pid IS NOT NULL) || ':' || (finished_at >= started_at), ',' ORDER BY task_id) FROM orchestrator.task_instances WHERE run_id = $run"
	),
	'first:success:1:true:true,second:success:1:true:true',
	'task instances record try, worker and times');
is( query($node,
		"SELECT run_type, state, started_at IS NOT NULL AND finished_at >= started_at FROM orchestrator.dag_runs WHERE run_id = $run"),
	'manual|success|t', 'the run records its type, state and times');

# the same logical date twice is refused
my ($rc, $out, $err) = $node->psql('postgres',
	"SELECT orchestrator.trigger_dag('chain', logical_date => '2021-01-02 06:00+00')");
like($err, qr/already has a run with logical date/, 'a second run for the same logical date is refused');

# --- trigger rules
query($node, q{
SELECT orchestrator.create_dag('rules');
SELECT orchestrator.add_task('rules', 'ok', orchestrator.sql('SELECT 1'));
SELECT orchestrator.add_task('rules', 'bad', orchestrator.sql('SELECT 1/0'));
SELECT orchestrator.add_task('rules', 'r_all_success', orchestrator.sql('SELECT 1'), '{ok,bad}');
SELECT orchestrator.add_task('rules', 'r_all_failed', orchestrator.sql('SELECT 1'), '{bad}', trigger_rule => 'all_failed');
SELECT orchestrator.add_task('rules', 'r_all_failed_skip', orchestrator.sql('SELECT 1'), '{ok}', trigger_rule => 'all_failed');
SELECT orchestrator.add_task('rules', 'r_all_done', orchestrator.sql('SELECT 1'), '{ok,bad}', trigger_rule => 'all_done');
SELECT orchestrator.add_task('rules', 'r_one_success', orchestrator.sql('SELECT 1'), '{ok,bad}', trigger_rule => 'one_success');
SELECT orchestrator.add_task('rules', 'r_one_failed', orchestrator.sql('SELECT 1'), '{ok,bad}', trigger_rule => 'one_failed');
SELECT orchestrator.add_task('rules', 'r_one_failed_skip', orchestrator.sql('SELECT 1'), '{ok}', trigger_rule => 'one_failed');
SELECT orchestrator.add_task('rules', 'r_none_failed', orchestrator.sql('SELECT 1'), '{ok,bad}', trigger_rule => 'none_failed');
SELECT orchestrator.add_task('rules', 'r_none_skipped', orchestrator.sql('SELECT 1'), '{ok,bad}', trigger_rule => 'none_skipped');
SELECT orchestrator.add_task('rules', 'r_nfmos', orchestrator.sql('SELECT 1'), '{ok,bad}', trigger_rule => 'none_failed_min_one_success');
SELECT orchestrator.add_task('rules', 'r_always', orchestrator.sql('SELECT 1'), '{bad}', trigger_rule => 'always');
-- propagation down a chain
SELECT orchestrator.add_task('rules', 'uf_1', orchestrator.sql('SELECT 1'), '{r_all_success}');
SELECT orchestrator.add_task('rules', 'uf_2', orchestrator.sql('SELECT 1'), '{uf_1}');
SELECT orchestrator.add_task('rules', 'sk_all_success', orchestrator.sql('SELECT 1'), '{r_all_failed_skip}');
SELECT orchestrator.add_task('rules', 'sk_none_skipped', orchestrator.sql('SELECT 1'), '{r_all_failed_skip}', trigger_rule => 'none_skipped');
SELECT orchestrator.add_task('rules', 'sk_none_failed', orchestrator.sql('SELECT 1'), '{r_all_failed_skip}', trigger_rule => 'none_failed');
SELECT orchestrator.add_task('rules', 'sk_one_success', orchestrator.sql('SELECT 1'), '{r_all_failed_skip}', trigger_rule => 'one_success');
SELECT orchestrator.add_task('rules', 'sk_nfmos', orchestrator.sql('SELECT 1'), '{r_all_failed_skip}', trigger_rule => 'none_failed_min_one_success');
});
$run = query($node, "SELECT orchestrator.trigger_dag('rules')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed',
	'a run with a failed leaf fails');
is( query($node,
		"SELECT string_agg(task_id || '=' || state, ' ' ORDER BY task_id) FROM orchestrator.task_instances WHERE run_id = $run"
	),
	join(' ',
		qw(bad=failed ok=success r_all_done=success r_all_failed=success
		  r_all_failed_skip=skipped r_all_success=upstream_failed r_always=success
		  r_nfmos=upstream_failed r_none_failed=upstream_failed r_none_skipped=success
		  r_one_failed=success r_one_failed_skip=skipped r_one_success=success
		  sk_all_success=skipped sk_nfmos=skipped sk_none_failed=success
		  sk_none_skipped=skipped sk_one_success=skipped uf_1=upstream_failed
		  uf_2=upstream_failed)),
	'each trigger rule, and upstream_failed and skipped propagate as in Airflow');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'bad'"),
	qr/division by zero/, 'a failed task records its real error');

# --- task logs: what each try says, kept per try
query($node, q{
SELECT orchestrator.create_dag('talky');
SELECT orchestrator.add_task('talky', 't', orchestrator.sql($q$
  DO $d$ BEGIN
    RAISE NOTICE 'notice from try %', current_setting('orchestrator.try_number');
    RAISE INFO 'an info line';
    RAISE WARNING 'a warning';
    IF current_setting('orchestrator.try_number') = '1' THEN RAISE EXCEPTION 'the first try fails'; END IF;
  END $d$ $q$), retries => 1, retry_delay => '0');
});
$run = query($node, "SELECT orchestrator.trigger_dag('talky', logical_date => '2021-05-01')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'a talkative task succeeds on its second try');
is( query($node,
		"SELECT string_agg(try_number || ' ' || level || ' ' || message, E'\n' ORDER BY id) FROM orchestrator.task_log WHERE run_id = $run"),
	join("\n",
		"1 INFO try 1 of task talky.t, run $run, logical date 2021-05-01T00:00:00+00:00",
		'1 NOTICE notice from try 1', '1 INFO an info line', '1 WARNING a warning', '1 ERROR the first try fails',
		"2 INFO try 2 of task talky.t, run $run, logical date 2021-05-01T00:00:00+00:00",
		'2 NOTICE notice from try 2', '2 INFO an info line', '2 WARNING a warning'),
	'task_log keeps each try\'s NOTICE, INFO and WARNING lines, and its error');
ok(!$node->log_contains('(NOTICE|INFO):  (notice from try|an info line)'), 'NOTICE and INFO stay out of the server log');
ok($node->log_contains('WARNING:  a warning'), 'WARNING goes there too');

# leaves that are all success or skipped: the run succeeds
query($node, q{
SELECT orchestrator.create_dag('skips');
SELECT orchestrator.add_task('skips', 'ok', orchestrator.sql('SELECT 1'));
SELECT orchestrator.add_task('skips', 'only_on_failure', orchestrator.sql('SELECT 1'), '{ok}', trigger_rule => 'all_failed');
});
$run = query($node, "SELECT orchestrator.trigger_dag('skips')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success',
	'a run whose leaves succeeded or were skipped succeeds');

# a DAG with no task gets no run
query($node, "SELECT orchestrator.create_dag('empty')");
($rc, $out, $err) = $node->psql('postgres', "SELECT orchestrator.trigger_dag('empty')");
like($err, qr/DAG "empty" has no tasks/, 'a DAG with no task cannot be triggered');

# --- run as owner: a non-superuser without LOGIN
query($node, q{
CREATE ROLE alice NOLOGIN;
GRANT USAGE ON SCHEMA orchestrator TO alice;
CREATE TABLE alice_t (who text, sess text);
ALTER TABLE alice_t OWNER TO alice;
CREATE TABLE secret (x int);
INSERT INTO secret VALUES (42);
});
query($node, q{
SET ROLE alice;
SELECT orchestrator.create_dag('alice_dag');
SELECT orchestrator.add_task('alice_dag', 'write', orchestrator.sql($$INSERT INTO alice_t SELECT current_user, session_user$$));
SELECT orchestrator.add_task('alice_dag', 'read_secret', orchestrator.sql('SELECT * FROM secret'));
SELECT orchestrator.add_task('alice_dag', 'set_role', orchestrator.sql('SET ROLE postgres'));
SELECT orchestrator.add_task('alice_dag', 'set_session', orchestrator.sql('SET SESSION AUTHORIZATION postgres'));
SELECT orchestrator.add_task('alice_dag', 'reset_role', orchestrator.sql('RESET ROLE; INSERT INTO secret VALUES (0)'));
SELECT orchestrator.add_task('alice_dag', 'read_file', orchestrator.sql($$SELECT pg_read_file('postgresql.conf')$$));
});
$run = query($node, "SET ROLE alice; SELECT orchestrator.trigger_dag('alice_dag')");
is(query($node, "SET ROLE alice; SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed',
	"a NOLOGIN role's run runs");
is(query($node, "SELECT who FROM alice_t"), 'alice', 'its task runs as the owner');
my %errors = split /\|/, join('|', split /\n/, query($node,
	"SELECT task_id, regexp_replace(coalesce(error, state), E'\\n.*', '', 's') FROM orchestrator.task_instances WHERE run_id = $run AND task_id <> 'write'"));
like($errors{read_secret}, qr/permission denied for table secret/, 'a table the owner may not read stays closed');
like($errors{set_role}, qr/cannot set parameter "role" within security-definer function/, 'SET ROLE cannot escape the owner');
like($errors{set_session}, qr/cannot set parameter "session_authorization" within security-definer function/,
	'nor SET SESSION AUTHORIZATION');
like($errors{reset_role}, qr/cannot set parameter "role" within security-definer function/, 'nor RESET ROLE');
like($errors{read_file}, qr/permission denied for function pg_read_file/, 'the owner cannot read server files');
is(query($node, "SELECT count(*) FROM secret"), '1', 'nothing was written where the owner may not write');
is(query($node, "SET ROLE alice; SELECT count(*) FROM orchestrator.task_instances"), '6',
	'alice sees her task instances');
is(query($node, "CREATE ROLE bob NOLOGIN; GRANT USAGE ON SCHEMA orchestrator TO bob; SET ROLE bob; SELECT count(*) FROM orchestrator.task_instances"),
	'0', 'bob sees none of them');

# a privilege lost after the definition: the task fails with the real error
query($node, q{
CREATE TABLE grants_t (x int);
GRANT INSERT ON grants_t TO alice;
SET ROLE alice;
SELECT orchestrator.create_dag('alice_grants');
SELECT orchestrator.add_task('alice_grants', 'ins', orchestrator.sql('INSERT INTO grants_t VALUES (1)'));
});
query($node, "REVOKE INSERT ON grants_t FROM alice");
$run = query($node, "SET ROLE alice; SELECT orchestrator.trigger_dag('alice_grants')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'a revoked privilege fails the task');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run"),
	qr/permission denied for table grants_t/, 'with the permission error');

# a dropped owner: the task fails with a clear error, the scheduler goes on
query($node, q{
CREATE ROLE carol NOLOGIN;
GRANT USAGE ON SCHEMA orchestrator TO carol;
SET ROLE carol;
SELECT orchestrator.create_dag('carol_dag');
SELECT orchestrator.add_task('carol_dag', 't', orchestrator.sql('SELECT 1'));
});
query($node, "ALTER SYSTEM SET orchestrator.enabled = off; SELECT pg_reload_conf()");
$run = query($node, "SET ROLE carol; SELECT orchestrator.trigger_dag('carol_dag')");
query($node, "REVOKE USAGE ON SCHEMA orchestrator FROM carol; DROP ROLE carol");
query($node, "ALTER SYSTEM RESET orchestrator.enabled; SELECT pg_reload_conf()");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', "a dropped owner's run fails");
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run"),
	qr/the owner of DAG "carol_dag" \(role OID \d+\) no longer exists/, 'saying the owner no longer exists');
$run = query($node, "SELECT orchestrator.trigger_dag('chain', '{\"extra\": 1}')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'and other DAGs still run');

ok(!$node->log_contains('lost its worker'), 'no live worker was ever taken for lost');

$node->stop;
done_testing();
