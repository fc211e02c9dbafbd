# Dynamic task mapping (issue 15): expand from a JSON array and from a
# query run as the DAG's owner; {{ item }}, {{ item.NAME }} and
# {{ map_index }}; an empty expansion skips; mapped artifacts handed down
# (instance i reads instance i's); one mapped instance failing and retried
# alone; trigger rules counting instances one by one; clear_task of one
# instance; max_map_length; a hostile author's expand_query (writes,
# errors, a million rows, a sleep, another role's data); the grid and the
# graph of a mapped task; a mapped task in a pool (a slot per instance, an
# asset event per instance), a mapped sensor (instances poking and
# waiting one by one), and callbacks per instance.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = orch_node('mapping', "orchestrator.max_map_length = 50\norchestrator.expand_query_timeout = '1s'\n");

query($node, q{
CREATE ROLE alice NOLOGIN;
CREATE ROLE bob NOLOGIN;
GRANT USAGE ON SCHEMA orchestrator TO alice, bob;
CREATE SCHEMA alice AUTHORIZATION alice;
CREATE SCHEMA bob AUTHORIZATION bob;
CREATE TABLE bob.secret (colour text);
INSERT INTO bob.secret VALUES ('bob''s secret');
ALTER TABLE bob.secret OWNER TO bob;
SET ROLE alice;
CREATE TABLE alice.out (task text, map_index int, item text, who name);
CREATE TABLE alice.colours (colour text, n int);
INSERT INTO alice.colours VALUES ('yellow', 1), ('green', 2), ('fhv', 3);
CREATE TABLE alice.victim (x int);
INSERT INTO alice.victim VALUES (1);
CREATE SEQUENCE alice.fail_once;
CREATE FUNCTION alice.writes() RETURNS int LANGUAGE plpgsql AS $$
BEGIN DELETE FROM alice.victim; RETURN 1; END $$;
});

sub alice
{
	my ($sql) = @_;
	return query($node, "SET ROLE alice; $sql");
}

sub run_state
{
	my ($run, $state, $what) = @_;
	return wait_for($node, "SELECT state FROM orchestrator.dag_runs WHERE run_id = $run", $state, $what);
}

sub instances
{
	my ($run, $task) = @_;
	return query($node,
		"SELECT string_agg(coalesce(map_index::text, 'NULL') || ':' || state || ':' || try_number, ' ' ORDER BY map_index) "
		  . "FROM orchestrator.task_instances WHERE run_id = $run AND task_id = '$task'");
}

# --- 1. expand from a JSON array; the downstream waits for all instances
alice(q{
SELECT orchestrator.create_dag('json_map');
SELECT orchestrator.add_task('json_map', 'm',
  orchestrator.sql('INSERT INTO alice.out VALUES (''m'', {{ map_index }}, {{ item | quote_literal }}, current_user)'),
  expand => '["a", "b", "x''); DROP TABLE alice.out; --"]');
SELECT orchestrator.add_task('json_map', 'after',
  orchestrator.sql('INSERT INTO alice.out SELECT ''after'', count(*)::int, NULL, current_user FROM alice.out WHERE task = ''m'''),
  upstream => '{m}');
});
my $run = alice("SELECT orchestrator.trigger_dag('json_map')");
run_state($run, 'success', 'a run over a JSON array succeeds');
is(instances($run, 'm'), '0:success:1 1:success:1 2:success:1', 'one instance per element, each with its own try');
is(instances($run, 'after'), 'NULL:success:1', 'the unmapped downstream: one instance, map_index NULL');
is(query($node, "SELECT string_agg(task || ' ' || map_index || ' ' || coalesce(item, '-') || ' ' || who, ' | ' ORDER BY task DESC, map_index) FROM alice.out"),
	"m 0 a alice | m 1 b alice | m 2 x'); DROP TABLE alice.out; -- alice | after 3 - alice",
	'{{ map_index }} and {{ item }} rendered per instance, as the owner; the downstream ran after all three');
is(query($node, "SELECT map_item::text FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'm' AND map_index = 1"),
	'"b"', 'task_instances shows each instance\'s element');
is(query($node, "SELECT count(DISTINCT map_index) FROM orchestrator.task_log WHERE run_id = $run AND task_id = 'm'"),
	'3', 'each instance has its own log');

# --- 2. expand_query: rows as JSON objects, run as the owner
alice(q{
SELECT orchestrator.create_dag('query_map');
SELECT orchestrator.add_task('query_map', 'm',
  orchestrator.sql('INSERT INTO alice.out VALUES (''q'', {{ map_index }}, ''{{ item.colour }}/{{ item.n }}'', current_user)'),
  expand_query => 'SELECT colour, n FROM alice.colours ORDER BY n');
});
$run = alice("SELECT orchestrator.trigger_dag('query_map')");
run_state($run, 'success', 'a run over a query succeeds');
is(query($node, "SELECT string_agg(map_index || '=' || item, ' ' ORDER BY map_index) FROM alice.out WHERE task = 'q'"),
	'0=yellow/1 1=green/2 2=fhv/3', '{{ item.colour }}: each row an object');
is(query($node, "SELECT map_item->>'colour' FROM orchestrator.task_instances WHERE run_id = $run AND map_index = 2"),
	'fhv', 'the row is the element');

# --- 3. empty expansions skip the task (and all_success downstream)
alice(q{
SELECT orchestrator.create_dag('empty_map');
SELECT orchestrator.add_task('empty_map', 'm', orchestrator.sql('SELECT 1'), expand => '[]');
SELECT orchestrator.add_task('empty_map', 'q', orchestrator.sql('SELECT 1'),
  expand_query => 'SELECT colour FROM alice.colours WHERE false');
SELECT orchestrator.add_task('empty_map', 'after', orchestrator.sql('SELECT 1'), upstream => '{m}');
SELECT orchestrator.add_task('empty_map', 'always', orchestrator.sql('SELECT 1'), upstream => '{m,q}',
  trigger_rule => 'all_done');
});
$run = alice("SELECT orchestrator.trigger_dag('empty_map')");
run_state($run, 'success', 'a run with empty expansions ends');
is(instances($run, 'm') . ' ' . instances($run, 'q'), 'NULL:skipped:0 NULL:skipped:0',
	'an empty array and a query of no rows skip the task');
is(instances($run, 'after') . ' ' . instances($run, 'always'), 'NULL:skipped:0 NULL:success:1',
	'the skip propagates to all_success, all_done runs');

# --- 4. mapped artifacts handed down: instance i reads instance i's
my $www = PostgreSQL::Test::Utils::tempdir;
for my $c ('yellow', 'green')
{
	system("$^X $FindBin::Bin/../gen_taxi.pl --month 2021-01 --rows " . ($c eq 'yellow' ? 300 : 120)
		  . " --colour $c | gzip > $www/${c}_tripdata_2021-01.csv.gz") == 0
	  or die "generating $c failed";
}
my $port = start_http_server($www);
alice(qq{
SELECT orchestrator.create_dag('handed', params => '{"base": "http://127.0.0.1:$port"}');
SELECT orchestrator.add_task('handed', 'download',
  orchestrator.http_fetch('{{ params.base }}/{{ item }}_tripdata_2021-01.csv.gz'),
  expand => '["yellow", "green"]');
SELECT orchestrator.add_task('handed', 'unzip', orchestrator.gunzip('download'));
SELECT orchestrator.add_task('handed', 'ingest',
  orchestrator.copy_into('alice.{{ item }}_{{ map_index }}', input => 'unzip', create_table => true));
});
$run = alice("SELECT orchestrator.trigger_dag('handed')");
run_state($run, 'success', 'download -> unzip -> ingest mapped over two colours succeeds');
is(instances($run, 'unzip') . ' ' . instances($run, 'ingest'), '0:success:1 1:success:1 0:success:1 1:success:1',
	'unzip and ingest are mapped like the download they read');
is(query($node, "SELECT (SELECT count(*) FROM alice.yellow_0) || ' ' || (SELECT count(*) FROM alice.green_1)"),
	'300 120', 'instance i loaded instance i\'s file');
is(query($node, "SELECT count(DISTINCT sha256) || ' ' || count(*) FROM orchestrator.artifacts WHERE run_id = $run AND task_id = 'unzip'"),
	'2 2', 'each instance has its own artifact');

# --- 5. one instance fails and is retried alone; rules count instances
alice(q{
SELECT orchestrator.create_dag('retry_map');
SELECT orchestrator.add_task('retry_map', 'm',
  orchestrator.sql('SELECT 1 / (nextval(''alice.fail_once'') - 1) WHERE {{ map_index }} = 1'),
  expand => '[10, 20, 30]', retries => 1, retry_delay => '1 second');
SELECT orchestrator.add_task('retry_map', 'after', orchestrator.sql('SELECT 1'), upstream => '{m}');
});
$run = alice("SELECT orchestrator.trigger_dag('retry_map')");
run_state($run, 'success', 'a run with a failed instance retried succeeds');
is(instances($run, 'm'), '0:success:1 1:success:2 2:success:1', 'only the failed instance ran a second try');
is(query($node, "SELECT count(*) FROM orchestrator.task_log WHERE run_id = $run AND task_id = 'm' AND map_index = 1 AND level = 'ERROR'"),
	'1', 'its failed try is in its own log');

alice(q{
SELECT orchestrator.create_dag('rules_map');
SELECT orchestrator.add_task('rules_map', 'm',
  orchestrator.sql('SELECT CASE WHEN {{ item }} = 2 THEN 1/0 END'), expand => '[1, 2, 3]');
SELECT orchestrator.add_task('rules_map', 'all_success', orchestrator.sql('SELECT 1'), upstream => '{m}');
SELECT orchestrator.add_task('rules_map', 'one_failed', orchestrator.sql('SELECT 1'), upstream => '{m}',
  trigger_rule => 'one_failed');
SELECT orchestrator.add_task('rules_map', 'one_success', orchestrator.sql('SELECT 1'), upstream => '{m}',
  trigger_rule => 'one_success');
SELECT orchestrator.add_task('rules_map', 'all_failed', orchestrator.sql('SELECT 1'), upstream => '{m}',
  trigger_rule => 'all_failed');
});
$run = alice("SELECT orchestrator.trigger_dag('rules_map')");
run_state($run, 'failed', 'a run whose mapped instance fails for good fails');
is(instances($run, 'm'), '0:success:1 1:failed:1 2:success:1', 'one instance failed, the others succeeded');
is(query($node, "SELECT string_agg(task_id || ' ' || state, ', ' ORDER BY task_id) FROM orchestrator.task_instances WHERE run_id = $run AND task_id <> 'm'"),
	'all_failed skipped, all_success upstream_failed, one_failed success, one_success success',
	'trigger rules count the instances one by one');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'm' AND map_index = 1"),
	qr/division by zero/, 'the failed instance has its own error');

# --- 6. clear_task of one instance, then of all
my $json_run = alice("SELECT run_id FROM orchestrator.dag_runs WHERE dag_id = 'json_map'");
is(alice("SELECT orchestrator.clear_task($json_run, 'm', map_index => 1)"), '2',
	'clear_task(map_index => 1) clears that instance and its unmapped downstream');
run_state($json_run, 'success', 'the cleared run succeeds again');
is(instances($json_run, 'm'), '0:success:1 1:success:2 2:success:1', 'only instance 1 ran again');
is(instances($json_run, 'after'), 'NULL:success:2', 'and its downstream');
is(alice("SELECT orchestrator.clear_task($json_run, 'm', downstream => false)"), '3',
	'clear_task without map_index clears every instance');
run_state($json_run, 'success', 'and the run succeeds again');
is(instances($json_run, 'm'), '0:success:2 1:success:3 2:success:2', 'all three ran again, keeping their elements');
my ($rc, $out, $err) = $node->psql('postgres', "SET ROLE alice; SELECT orchestrator.clear_task($json_run, 'm', map_index => 7)");
like($err, qr/has no mapped instance 7/, 'clear_task of an instance that does not exist is refused');
($rc, $out, $err) = $node->psql('postgres', "SET ROLE alice; SELECT orchestrator.clear_task($json_run, 'm', map_index => -1)");
like($err, qr/map_index must be zero or more/, 'a negative map_index is refused');

# --- 7. definitions refused before anything is written
for my $bad (
	["expand => '{\"a\": 1}'", qr/must be a JSON array/, 'expand must be an array'],
	["expand => '[1]', expand_query => 'SELECT 1'", qr/cannot have both/, 'not both expand and expand_query'],
	["expand => (SELECT jsonb_agg(i) FROM generate_series(1, 51) i)", qr/more than orchestrator.max_map_length \(50\)/,
		'an array longer than max_map_length is refused'],
	["expand_query => 'DELETE FROM alice.victim'", qr/must be one SELECT/, 'expand_query must be a SELECT'],
	["expand_query => 'SELECT 1; SELECT 2'", qr/must be one SELECT/, 'one statement only'],
	["expand_query => 'SELECT 1 INTO alice.made'", qr/must be one SELECT/, 'SELECT INTO is refused'])
{
	($rc, $out, $err) = $node->psql('postgres',
		"SET ROLE alice; BEGIN; SELECT orchestrator.create_dag('bad_map'); SELECT orchestrator.add_task('bad_map', 'm', orchestrator.sql('SELECT 1'), $bad->[0]); COMMIT;");
	like($err, $bad->[1], $bad->[2]);
}
is(query($node, "SELECT count(*) FROM orchestrator.dag WHERE dag_id = 'bad_map'"), '0', 'nothing was left behind');

# --- 8. a hostile expand_query
alice(q{
SELECT orchestrator.create_dag('hostile', max_active_tasks => 60);
SELECT orchestrator.add_task('hostile', 'million', orchestrator.sql('SELECT 1'),
  expand_query => 'SELECT i FROM generate_series(1, 1000000) i');
SELECT orchestrator.add_task('hostile', 'errors', orchestrator.sql('SELECT 1'),
  expand_query => 'SELECT 1/0 AS x');
SELECT orchestrator.add_task('hostile', 'sleeps', orchestrator.sql('SELECT 1'),
  expand_query => 'SELECT pg_sleep(600) AS x');
SELECT orchestrator.add_task('hostile', 'cte_write', orchestrator.sql('SELECT 1'),
  expand_query => 'WITH d AS (DELETE FROM alice.victim RETURNING x) SELECT x FROM d');
SELECT orchestrator.add_task('hostile', 'func_write', orchestrator.sql('INSERT INTO alice.out VALUES (''fw'', {{ map_index }}, ''{{ item.w }}'', current_user)'),
  expand_query => 'SELECT alice.writes() AS w');
SELECT orchestrator.add_task('hostile', 'bobs', orchestrator.sql('SELECT 1'),
  expand_query => 'SELECT colour FROM bob.secret');
SELECT orchestrator.add_task('hostile', 'whoami', orchestrator.sql('INSERT INTO alice.out VALUES (''who'', {{ map_index }}, ''{{ item.u }}/{{ item.s }}'', current_user)'),
  expand_query => 'SELECT current_user AS u, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS s');
SELECT orchestrator.add_task('hostile', 'fifty', orchestrator.sql('SELECT {{ item.i }}'),
  expand_query => 'SELECT i FROM generate_series(1, 50) i');
});
$run = alice("SELECT orchestrator.trigger_dag('hostile')");
run_state($run, 'failed', 'the hostile run ends');
my %err = map { split /\|/, $_, 2 } split /\n/, query($node,
	"SELECT task_id, state || ': ' || coalesce(error, '') FROM orchestrator.task_instances WHERE run_id = $run AND map_index IS NULL");
like($err{million}, qr/^failed: task "million" would expand into more than 50 instances/, 'a million rows: failed at max_map_length + 1');
like($err{errors}, qr/^failed: the expand_query of task "errors" failed: division by zero/, 'a failing query: failed with its error');
like($err{sleeps}, qr/^failed: the expand_query of task "sleeps" failed: canceling statement due to statement timeout/,
	'a query that sleeps: stopped at expand_query_timeout');
like($err{cte_write}, qr/^failed: .*expand_query must only read/, 'a query that writes is refused');
like($err{bobs}, qr/^failed: .*permission denied for schema bob/, 'another role\'s data: the owner\'s rights only');
is(instances($run, 'func_write'), '0:success:1', 'a query through a volatile function expands');
is(query($node, "SELECT count(*) FROM alice.victim"), '1', 'but what it wrote was rolled back');
is(query($node, "SELECT item FROM alice.out WHERE task = 'who'"), 'alice/false', 'expand_query runs as the owner, not a superuser');
is(query($node, "SELECT count(*) FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'fifty' AND state = 'success'"),
	'50', 'max_map_length elements expand');
unlike(query($node, "SELECT string_agg(coalesce(error, ''), ' ') FROM orchestrator.task_instances"), qr/secret/,
	'no error shows bob\'s data');

# --- 9. the grid and the graph
my $grid = alice("SELECT string_agg(g, E'\\n') FROM orchestrator.grid('retry_map') g");
like($grid, qr/^m \[3\/3\] +\| #$/m, 'the grid: a mapped task is one line, one cell per run, with its count');
like($grid, qr/^  m\[1\] +\| #\n  m\[2\] +\| #$/m, 'and each instance on a line of its own');
my $mapped = alice("SELECT string_agg(g, E'\\n') FROM orchestrator.grid('rules_map') g");
like($mapped, qr/^m \[2\/3\] +\| X$/m, 'a partly failed mapped task shows how many succeeded, in its most telling state');
like(alice("SELECT orchestrator.dag_graph('retry_map')"), qr/t1\[\["m \[ \]"\]\]/, 'the graph shows a mapped task as a stack');
like(alice("SELECT orchestrator.dag_graph('handed', 'dot')"), qr/label="unzip \[ \]", shape=box3d/, 'also one mapped by the artifact it reads, in DOT');
my $run_graph = alice("SELECT orchestrator.dag_graph('rules_map', run_id => (SELECT run_id FROM orchestrator.dag_runs WHERE dag_id = 'rules_map'))");
like($run_graph, qr/t1\[\["m \[2\/3\]"\]\]/, 'the graph of a run counts its instances');
like($run_graph, qr/class t1 failed/, 'and colours the task by its most telling state');
is(alice("SELECT count(*) FROM orchestrator.task_instances WHERE dag_id = 'rules_map' AND task_id = 'm'"), '3',
	'each instance is a row of task_instances');

# --- 10. with pools, sensors and assets: each mapped instance takes its own
# pool slot, pokes and waits on its own, and records its own asset events
query($node, q{
SELECT orchestrator.create_pool('two', 2);
CREATE TABLE public.flags (f text);
SELECT orchestrator.create_dag('mapped_pool', max_active_tasks => 16);
SELECT orchestrator.add_task('mapped_pool', 'nap', orchestrator.sql('SELECT pg_sleep(0.3)'),
    outlets => ARRAY['colour_{{ item }}'], expand => '["a", "b", "c", "d", "e", "f"]',
    pool => 'two', priority_weight => 5);
});
my $prun = query($node, "SELECT orchestrator.trigger_dag('mapped_pool')");
is(query($node, "SELECT orchestrator.wait_run($prun, '3 minutes')"), 'success',
	'a mapped task in a pool runs all its instances');
is(query($node, "SELECT count(*) || ' ' || count(*) FILTER (WHERE pool = 'two' AND pool_slots = 1) || ' ' || count(claim_at) "
	  . "FROM orchestrator.task_instance WHERE run_id = $prun AND task_id = 'nap'"),
	'6 6 6', 'each instance took its own slot of the pool, with its claim order');
# a slot is taken from queueing to the commit of the outcome: a try that
# started while another ran overlaps it, and never more than the slots do
cmp_ok(query($node, "SELECT max((SELECT count(*) FROM orchestrator.task_instance o "
	  . "  WHERE o.run_id = i.run_id AND o.task_id = i.task_id "
	  . "    AND o.started_at <= i.started_at AND o.finished_at > i.started_at)) "
	  . "FROM orchestrator.task_instance i WHERE i.run_id = $prun AND i.task_id = 'nap'"),
	'<=', 2, 'never more instances running than the pool has slots');
is(query($node, "SELECT string_agg(asset || ':' || source_map_index, ' ' ORDER BY source_map_index) "
	  . "FROM orchestrator.asset_events WHERE source_run_id = $prun"),
	'colour_a:0 colour_b:1 colour_c:2 colour_d:3 colour_e:4 colour_f:5',
	'each instance recorded its own asset event, its outlet rendered with its item');

# a mapped sensor (in a pool): each instance pokes and waits on its own
query($node, q{
SELECT orchestrator.create_dag('mapped_sensor');
SELECT orchestrator.add_task('mapped_sensor', 'wait',
    orchestrator.sql_sensor('SELECT EXISTS (SELECT 1 FROM public.flags WHERE f = {{ item | quote_literal }})',
                            poke_interval => '1 second', timeout => '1 hour'),
    expand => '["a", "b"]', pool => 'two');
SELECT orchestrator.add_task('mapped_sensor', 'after', orchestrator.sql('SELECT 1'), upstream => '{wait}');
});
my $srun = query($node, "SELECT orchestrator.trigger_dag('mapped_sensor')");
wait_for($node, "SELECT count(DISTINCT map_index) FROM orchestrator.task_log "
	  . "WHERE run_id = $srun AND task_id = 'wait' AND message LIKE 'poke: false%'",
	'2', 'both instances of a mapped sensor poke');
query($node, "INSERT INTO public.flags VALUES ('a')");
wait_for($node, "SELECT string_agg(map_index || ':' || state, ' ' ORDER BY map_index) "
	  . "FROM orchestrator.task_instances WHERE run_id = $srun AND task_id = 'wait'",
	'0:success 1:up_for_reschedule', 'the instance whose condition holds succeeds, the other waits for its next poke');
is(query($node, "SELECT state FROM orchestrator.task_instances WHERE run_id = $srun AND task_id = 'after'"),
	'scheduled', 'the downstream waits for every instance');
query($node, "INSERT INTO public.flags VALUES ('b')");
is(query($node, "SELECT orchestrator.wait_run($srun, '1 minute')"), 'success', 'then the run ends');
is(query($node, "SELECT string_agg(map_index || ':' || try_number || ':' || (first_poke_at IS NULL), ' ' ORDER BY map_index) "
	  . "FROM orchestrator.task_instance WHERE run_id = $srun AND task_id = 'wait'"),
	'0:1:true 1:1:true', 'each in its first try, all its pokes in it');

# callbacks follow each mapped instance, with its item and map_index
query($node, q{
CREATE TABLE public.cb_seen (kind text, map_index text, item text);
SELECT orchestrator.create_dag('mapped_cb');
SELECT orchestrator.add_task('mapped_cb', 'm',
    orchestrator.sql($$SELECT 1 / (CASE WHEN {{ item | quote_literal }} = 'b' THEN 0 ELSE 1 END)$$),
    expand => '["a", "b"]',
    on_failure_callback => orchestrator.sql($$INSERT INTO public.cb_seen VALUES ('failure', '{{ map_index }}', {{ item | quote_literal }})$$),
    on_success_callback => orchestrator.sql($$INSERT INTO public.cb_seen VALUES ('success', '{{ map_index }}', {{ item | quote_literal }})$$));
});
my $crun = query($node, "SELECT orchestrator.trigger_dag('mapped_cb')");
is(query($node, "SELECT orchestrator.wait_run($crun, '1 minute')"), 'failed', 'a run whose mapped instance fails fails');
wait_for($node, "SELECT string_agg(kind || ':' || map_index || ':' || item, ' ' ORDER BY map_index) FROM public.cb_seen",
	'success:0:a failure:1:b', 'each instance\'s callback ran with its own map_index and item');

done_testing();
