# Upgrades: an installation at 0.1, with DAGs and history, under the new
# library.  Before the update the API says what to do and the scheduler
# waits (and says so once); ALTER EXTENSION ... UPDATE, with the server
# running, gives the schema of a fresh install, keeps the history, and the
# DAGs run on.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $www = PostgreSQL::Test::Utils::tempdir;
open my $fh, '>', "$www/small.csv" or die;
print $fh "id,name\n1,one\n2,two\n";
close $fh;
my $port = start_http_server($www);

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'orchestrator'
orchestrator.database = 'postgres'
orchestrator.history_retention = ''
});
$node->start;

query($node, q{
CREATE ROLE alice NOLOGIN;
CREATE EXTENSION orchestrator VERSION '0.1';
GRANT USAGE ON SCHEMA orchestrator TO alice;
CREATE TABLE public.loaded (run text);
GRANT INSERT ON public.loaded TO alice;
GRANT CREATE ON SCHEMA public TO alice;
});
is(query($node, "SELECT extversion FROM pg_extension WHERE extname = 'orchestrator'"), '0.1',
	'an installation at 0.1');

# its DAGs and history, as the 0.1 library wrote them (that library is not
# at hand: the rows are written directly, in 0.1's columns)
query($node, qq{
INSERT INTO orchestrator.dag (dag_id, owner, timezone, schedule, start_date, catchup, params)
VALUES ('old', 'alice'::regrole, 'UTC', '\@daily', '2021-01-01', false, '{"x": 1}');
INSERT INTO orchestrator.task (dag_id, task_id, spec, position)
VALUES ('old', 'load', '{"operator": "sql", "query": "INSERT INTO public.loaded VALUES (current_setting(''orchestrator.run_id''))"}', 0);
-- a copy_into as 0.1's constructor wrote it, with "create" for create_table
INSERT INTO orchestrator.dag (dag_id, owner, timezone)
VALUES ('old_copy', 'alice'::regrole, 'UTC');
INSERT INTO orchestrator.task (dag_id, task_id, spec, position)
VALUES ('old_copy', 'ingest', jsonb_build_object('operator', 'copy_into', 'target', 'public.created_{{ ds_nodash }}',
        'input', null, 'url', 'http://127.0.0.1:$port/files/small.csv', 'format', 'csv', 'header', true,
        'delimiter', null, 'null_string', null, 'compression', 'auto', 'mode', 'append',
        'create', true, 'columns', null), 0);
INSERT INTO orchestrator.dag_run (dag_id, run_type, logical_date, data_interval_start, data_interval_end,
                                  state, started_at, finished_at)
SELECT 'old', 'scheduled', d, d, d + interval '1 day', 'success', d + interval '1 day', d + interval '1 day'
FROM generate_series('2021-01-01'::timestamptz, '2021-01-10', '1 day') d;
INSERT INTO orchestrator.task_instance (run_id, task_id, state, try_number, max_tries, started_at, finished_at)
SELECT run_id, 'load', 'success', 1, 1, started_at, finished_at FROM orchestrator.dag_run;
INSERT INTO orchestrator.log (run_id, task_id, try_number, logged_at, level, message)
SELECT run_id, 'load', 1, finished_at, 'INFO', 'loaded' FROM orchestrator.dag_run;
});
# (the runs of 2021: the schedule adds one for yesterday once updated)
my $history_sql = q{
SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (
  SELECT format('%s', r) AS x FROM orchestrator.dag_run r WHERE run_id <= 10
  UNION ALL SELECT format('%s/%s/%s/%s/%s', run_id, task_id, state, try_number, finished_at)
    FROM orchestrator.task_instance WHERE run_id <= 10
  UNION ALL SELECT format('%s/%s/%s/%s/%s/%s/%s', l.id, l.run_id, l.task_id, l.try_number, l.logged_at, l.level, l.message)
    FROM orchestrator.log l WHERE run_id <= 10
  UNION ALL SELECT format('%s/%s/%s', dag_id, task_id, spec) FROM orchestrator.task) h};
my $history = query($node, $history_sql);

# the new library over the old catalog
my ($rc, $out, $err) = $node->psql('postgres', "SELECT orchestrator.trigger_dag('old')");
like($err, qr/ERROR:  the orchestrator catalog is at version 0\.1, but the installed library needs version 0\.2\nHINT:  Run ALTER EXTENSION orchestrator UPDATE\./,
	'before the update, the API says what to run');
($rc, $out, $err) = $node->psql('postgres', "SELECT orchestrator.create_dag('new')");
like($err, qr/catalog is at version 0\.1/, 'for every write');
ok($node->wait_for_log(qr/orchestrator: the catalog of database "postgres" is at version 0\.1 and this library needs 0\.2: nothing runs until it is updated/),
	'the scheduler says it waits');
query($node, 'SELECT pg_reload_conf()');
query($node, 'SELECT pg_reload_conf()');
sleep 1;
my $said = () = slurp_file($node->logfile) =~ /is at version 0\.1 and this library needs/g;
is($said, 1, 'once');
is(query($node, 'SELECT count(*) FROM orchestrator.dag_run WHERE logical_date > \'2021-01-10\''), '0',
	'and schedules nothing meanwhile');

# the update, with the server running
query($node, 'ALTER EXTENSION orchestrator UPDATE');
is(query($node, "SELECT extversion FROM pg_extension WHERE extname = 'orchestrator'"), '0.2', 'updated to 0.2');
is(query($node, $history_sql), $history, 'the definitions and history are intact');
# (issue 15: instances are keyed by map_index too; 0.1's are not mapped)
is( query($node,
		"SELECT count(*) FILTER (WHERE ti.map_index = -1) || ' ' || count(l.*) FILTER (WHERE l.map_index = -1) || ' ' "
		  . "|| (SELECT count(*) FROM orchestrator.task_instances WHERE map_index IS NULL AND run_id <= 10) "
		  . "FROM orchestrator.task_instance ti LEFT JOIN orchestrator.log l USING (run_id, task_id, map_index) WHERE ti.run_id <= 10"),
	'10 10 10', 'the old instances and their logs are the unmapped ones (-1 inside, NULL in the views), still joined');
is(query($node, "SELECT DISTINCT owner_name || ' ' || (owner_sysid = orchestrator.system_identifier()) FROM orchestrator.dag"),
	'alice true', "each DAG records its owner's name and cluster");

# the same schema as a fresh install
query($node, 'CREATE DATABASE fresh');
$node->safe_psql('fresh', q{
CREATE EXTENSION orchestrator;
GRANT USAGE ON SCHEMA orchestrator TO alice;
CREATE TABLE public.loaded (run text);
GRANT INSERT ON public.loaded TO alice;
GRANT CREATE ON SCHEMA public TO alice;
});
sub schema
{
	my ($db) = @_;
	my ($dump, $stderr) = run_command(['pg_dump', '--schema-only', '--binary-upgrade',
		'--dbname', $node->connstr($db)]);
	# what differs between any two databases: OIDs, xids, dump keys, and
	# where the sequences are
	return join("\n", grep {
		!/binary_upgrade_set_next|binary_upgrade_create_empty_extension|relfrozenxid|^WHERE oid = |^\\(un)?restrict|pg_catalog\.setval|^--|^$/
	} split(/\n/, $dump));
}
my ($upgraded, $fresh) = (schema('postgres'), schema('fresh'));
ok(length($fresh) > 10000, 'the schema dump lists the extension\'s objects');
is($upgraded, $fresh, 'the updated schema is identical to a fresh install\'s');

# and the DAGs run on
my $run = query($node, "SET ROLE alice; SELECT orchestrator.trigger_dag('old', logical_date => '2022-01-01')");
cmp_ok($run, '>', 10, 'run ids continue');
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'an updated DAG runs');
is(query($node, "SELECT count(*) FROM public.loaded WHERE run = '$run'"), '1', 'and does its work');
$run = query($node, "SET ROLE alice; SELECT orchestrator.trigger_dag('old_copy', logical_date => '2022-01-01')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'a copy_into defined under 0.1 runs');
is(query($node, "SELECT count(*) FROM public.created_20220101"), '2',
	'and with "create" still creates its table');
is(query($node, "SET ROLE alice; SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'old' AND logical_date <= '2021-01-10'"),
	'10', 'its owner sees its history');
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE run_type = 'scheduled' AND logical_date > '2021-01-10'",
	'1', 'and its schedule goes on (the latest interval, without catchup)');

$node->stop;
done_testing();
