# Assets and asset-triggered DAGs: an event from a task's outlets and from
# a copy_into's table, committed with the task's success; from a committed
# asset_updated() and none from a rolled-back one; a DAG waiting for two
# assets; events coalesced into one run; a DAG with a schedule and assets;
# the triggering events in templates; the views and the graph; and what
# one role learns of another's DAGs through assets: event times and its
# own runs, nothing more.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = orch_node('assets');

sub runs_of
{
	my ($dag) = @_;
	return query($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = '$dag'");
}

# a consumer that records what its templates see
query($node, q{
CREATE TABLE seen (dag_id text, run_id bigint, run_type text, events jsonb);
CREATE TABLE orders (id int);
CREATE TABLE loaded (id int);
SELECT orchestrator.create_dag('consumer', on_assets => '{orders}');
SELECT orchestrator.add_task('consumer', 'see', orchestrator.sql($$
    INSERT INTO seen VALUES ('{{ dag_id }}', current_setting('orchestrator.run_id')::bigint,
                             current_setting('orchestrator.run_type'),
                             {{ triggering_asset_events | tojson | quote_literal }}::jsonb)$$));
});

# --- an event from a task that succeeds, and from a copy_into's table
my $www = PostgreSQL::Test::Utils::tempdir;
open my $fh, '>', "$www/ids.csv" or die;
print $fh "id\n1\n2\n3\n";
close $fh;
my $port = start_http_server($www);
query($node, qq{
SELECT orchestrator.create_dag('producer', params => '{"base": "http://127.0.0.1:$port"}');
SELECT orchestrator.add_task('producer', 'write', orchestrator.sql('INSERT INTO orders VALUES (1)'),
                             outlets => '{orders, "{{ dag_id }}.done"}');
SELECT orchestrator.add_task('producer', 'load', orchestrator.copy_into('loaded', url => '{{ params.base }}/ids.csv'));
SELECT orchestrator.create_dag('on_table', on_assets => '{public.loaded}');
SELECT orchestrator.add_task('on_table', 'count', orchestrator.sql(\$\$INSERT INTO seen SELECT 'on_table', 0, 'rows', to_jsonb(count(*)) FROM loaded\$\$));
});
is(runs_of('consumer'), '0', 'a DAG on assets does not run by itself');
my $run = query($node, "SELECT orchestrator.trigger_dag('producer')");
is(query($node, "SELECT orchestrator.wait_run($run, '1 minute')"), 'success', 'the producer runs');
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'consumer' AND state = 'success'", '1',
	'its outlet starts the consumer');
is(query($node, "SELECT run_type FROM orchestrator.dag_runs WHERE dag_id = 'consumer'"), 'asset_triggered', 'an asset_triggered run');
is(query($node, "SELECT string_agg(asset || ' ' || coalesce(source_task_id, '-'), ', ' ORDER BY asset) FROM orchestrator.asset_events"),
	'orders write, producer.done write, public.loaded load', 'events of the outlets (rendered) and of the table loaded');
is(query($node, "SELECT r.logical_date = e.recorded_at AND r.data_interval_start = e.recorded_at
                 FROM orchestrator.dag_runs r, orchestrator.asset_events e WHERE r.dag_id = 'consumer' AND e.asset = 'orders'"),
	't', 'its logical date is the time of the event');
is(query($node, "SELECT run_type || ' ' || jsonb_array_length(events -> 'orders') || ' ' || (events #>> '{orders,0,asset}')
                 || ' ' || (events #>> '{orders,0,extra,data_interval_start}' IS NOT NULL) FROM seen WHERE dag_id = 'consumer'"),
	'asset_triggered 1 orders true', 'templates see the triggering event: asset, time and extra');
wait_for($node, "SELECT events FROM seen WHERE dag_id = 'on_table'", '3', 'a DAG on a copy_into\'s table runs once it is loaded');

# a task's event commits with its success only
query($node, q{
SELECT orchestrator.create_dag('failing');
SELECT orchestrator.add_task('failing', 'fail', orchestrator.sql('SELECT 1/0'), outlets => '{orders}');
});
$run = query($node, "SELECT orchestrator.trigger_dag('failing')");
is(query($node, "SELECT orchestrator.wait_run($run, '1 minute')"), 'failed', 'a producer that fails');
is(query($node, "SELECT count(*) FROM orchestrator.asset_events WHERE asset = 'orders'"), '1', 'records no event');

# a task's own SQL may record one too, in its transaction
query($node, q{
SELECT orchestrator.create_dag('announcer');
SELECT orchestrator.add_task('announcer', 'ok', orchestrator.sql($$SELECT orchestrator.asset_updated('announced', jsonb_build_object('day', {{ ds | quote_literal }}))$$));
SELECT orchestrator.add_task('announcer', 'fails', orchestrator.sql($$SELECT orchestrator.asset_updated('announced', '{"lost": true}'); SELECT 1/0$$));
});
$run = query($node, "SELECT orchestrator.trigger_dag('announcer')");
is(query($node, "SELECT orchestrator.wait_run($run, '1 minute')"), 'failed', 'a DAG whose tasks call asset_updated()');
is(query($node, "SELECT string_agg(extra::text, ' ') FROM orchestrator.asset_events WHERE asset = 'announced'"),
	'{"day": "' . query($node, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD')") . '"}',
	'records the event of the task that succeeded, not of the one that failed');

# --- asset_updated() in an application's transaction: committed, or not
query($node, q{
BEGIN;
INSERT INTO orders VALUES (2);
SELECT orchestrator.asset_updated('orders', '{"batch": 7}');
COMMIT;
});
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'consumer' AND state = 'success'", '2',
	'a committed asset_updated() starts the consumer');
is(query($node, "SELECT events #>> '{orders,0,extra,batch}' FROM seen WHERE dag_id = 'consumer' ORDER BY run_id DESC LIMIT 1"), '7',
	'with its extra');
query($node, q{
BEGIN;
INSERT INTO orders VALUES (3);
SELECT orchestrator.asset_updated('orders', '{"batch": 8}');
ROLLBACK;
});
sleep 2;
is(query($node, "SELECT count(*) FROM orchestrator.asset_events WHERE asset = 'orders'") . ' ' . runs_of('consumer'), '2 2',
	'a rolled-back asset_updated() records nothing and starts nothing');

# --- two assets: a run once both have had an event; several events make one run
query($node, q{
SELECT orchestrator.create_dag('both', on_assets => '{a, b}');
SELECT orchestrator.add_task('both', 'see', orchestrator.sql($$
    INSERT INTO seen VALUES ('both', current_setting('orchestrator.run_id')::bigint, 'x',
                             {{ triggering_asset_events | tojson | quote_literal }}::jsonb)$$));
SELECT orchestrator.asset_updated('a');
});
sleep 2;
is(runs_of('both'), '0', 'one of two assets is not enough');
query($node, "SELECT orchestrator.asset_updated('b', '{\"n\": 1}')");
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'both' AND state = 'success'", '1',
	'both assets: a run');
is(query($node, "SELECT (events -> 'a' -> 0 ->> 'asset') || ' ' || (events #>> '{b,0,extra,n}') FROM seen WHERE dag_id = 'both'"),
	'a 1', 'that sees the events of both');
# coalesced: while the DAG is paused, three events of a and two of b
query($node, q{
SELECT orchestrator.pause_dag('both');
SELECT orchestrator.asset_updated('a', jsonb_build_object('i', i)) FROM generate_series(1, 3) i;
SELECT orchestrator.asset_updated('b', jsonb_build_object('i', i)) FROM generate_series(1, 2) i;
});
query($node, "SELECT orchestrator.asset_updated('b', '{\"i\": 3}')");
sleep 2;
is(runs_of('both'), '1', 'a paused DAG starts nothing');
query($node, "SELECT orchestrator.unpause_dag('both')");
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'both' AND state = 'success'", '2',
	'unpaused, it runs');
sleep 2;
is(runs_of('both'), '2', 'once, for all six events');
is(query($node, "SELECT jsonb_array_length(events -> 'a') || ' ' || jsonb_array_length(events -> 'b') || ' ' || (events #>> '{b,2,extra,i}')
                 FROM seen WHERE dag_id = 'both' ORDER BY run_id DESC LIMIT 1"),
	'3 3 3', 'which sees every event, in order');
is(query($node, "SELECT data_interval_start < data_interval_end AND logical_date = data_interval_end FROM orchestrator.dag_runs
                 WHERE dag_id = 'both' ORDER BY run_id DESC LIMIT 1"),
	't', 'its data interval runs from the first event to the last, its logical date');

# --- a schedule and assets
query($node, q{
SELECT orchestrator.create_dag('timed', schedule => '@daily', start_date => now() - interval '3 days', on_assets => '{tick}');
SELECT orchestrator.add_task('timed', 't', orchestrator.sql('SELECT 1'));
});
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'timed' AND run_type = 'scheduled' AND state = 'success'", '1',
	'a DAG with a schedule and assets runs on its schedule');
query($node, "SELECT orchestrator.asset_updated('tick')");
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'timed' AND run_type = 'asset_triggered' AND state = 'success'", '1',
	'and on its assets');

# --- what roles learn of each other through assets
query($node, q{
CREATE ROLE alice NOLOGIN;
CREATE ROLE bob NOLOGIN;
CREATE ROLE carol NOLOGIN;
GRANT USAGE ON SCHEMA orchestrator TO alice, bob, carol;
GRANT CREATE ON SCHEMA public TO alice, bob;
SET ROLE alice;
CREATE TABLE alice_data (x int);
SELECT orchestrator.create_dag('alice_load');
SELECT orchestrator.add_task('alice_load', 'load', orchestrator.sql('INSERT INTO alice_data VALUES (1)'), outlets => '{shared}');
SELECT orchestrator.create_dag('alice_own_consumer', on_assets => '{shared}');
SELECT orchestrator.add_task('alice_own_consumer', 't', orchestrator.sql('SELECT 1'));
SET ROLE bob;
CREATE TABLE bob_seen (events text);
SELECT orchestrator.create_dag('bob_consume', on_assets => '{shared}');
SELECT orchestrator.add_task('bob_consume', 'see', orchestrator.sql($$INSERT INTO bob_seen VALUES ({{ triggering_asset_events | tojson | quote_literal }})$$));
RESET ROLE;
});
$run = query($node, "SELECT orchestrator.trigger_dag('alice_load')");
is(query($node, "SELECT orchestrator.wait_run($run, '1 minute')"), 'success', 'alice\'s DAG produces "shared"');
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id IN ('bob_consume', 'alice_own_consumer') AND state = 'success'", '2',
	'which starts her consumer and bob\'s');
my $bob_run = query($node, "SELECT run_id FROM orchestrator.dag_runs WHERE dag_id = 'bob_consume'");

sub as
{
	my ($role, $sql) = @_;
	return query($node, "SET ROLE $role; $sql");
}

is(as('bob', "SELECT asset || ' ' || (recorded_at IS NOT NULL) || ' ' || coalesce(source_dag_id, '-') || ' ' || coalesce(source_run_id::text, '-')
                || ' ' || coalesce(source_task_id, '-') || ' ' || triggered_runs::text FROM orchestrator.asset_events"),
	"shared true - - - {$bob_run}", 'bob sees the event\'s time and his own run, not alice\'s DAG, run or task');
is(as('bob', "SELECT name || ' ' || (last_event_at IS NOT NULL) || ' ' || events || ' ' || consumers::text FROM orchestrator.assets"),
	'shared true 1 {bob_consume}', 'and among its consumers only his own DAG');
unlike(as('bob', "SELECT events FROM bob_seen"), qr/alice|run_id|task|dag/, 'his templates see nothing of alice\'s either');
like(as('bob', "SELECT events FROM bob_seen"), qr/"data_interval_start"/, 'only the event\'s time, asset and extra');
is(as('alice', "SELECT source_dag_id || ' ' || source_run_id || ' ' || source_task_id || ' ' || triggered_runs::text FROM orchestrator.asset_events"),
	"alice_load $run load {" . query($node, "SELECT run_id FROM orchestrator.dag_runs WHERE dag_id = 'alice_own_consumer'") . "}",
	'alice sees her own source and runs');
is(as('alice', "SELECT consumers::text FROM orchestrator.assets"), '{alice_own_consumer}', 'and not bob\'s DAG among the consumers');

# carol records an event of an asset she does not consume: allowed, as in
# Airflow (an application's role must be able to start a pipeline), and it
# tells her nothing
is(as('carol', "SELECT orchestrator.asset_updated('shared', '{\"from\": \"carol\"}')"), '', 'carol may record an event of any asset');
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id IN ('bob_consume', 'alice_own_consumer') AND state = 'success'", '4',
	'which starts the consumers (its extra is input, to treat as such)');
is(as('carol', "SELECT asset || ' ' || triggered_runs::text || ' ' || coalesce(source_dag_id, '-') FROM orchestrator.asset_events"),
	'shared {} -', 'carol sees her own event, and no run it started');
is(as('carol', "SELECT name || ' ' || events || ' ' || consumers::text FROM orchestrator.assets"), 'shared 1 {}',
	'nor any consumer');
is(as('carol', "SELECT count(*) FROM orchestrator.dag_runs"), '0', 'nor any run');
my ($rc, $out, $err) = $node->psql('postgres', "SET ROLE carol; SELECT * FROM orchestrator.asset_event");
like($err, qr/permission denied for table asset_event/, 'the events table is not readable');
($rc, $out, $err) = $node->psql('postgres', "SET ROLE carol; SELECT * FROM orchestrator.asset_queue");
like($err, qr/permission denied for table asset_queue/, 'nor the queue');
($rc, $out, $err) = $node->psql('postgres', "SET ROLE carol; INSERT INTO orchestrator.asset_queue VALUES ('bob_consume', 1, 'shared')");
like($err, qr/permission denied for table asset_queue/, 'nor writable');
# a condition of carol's own sees no row the view would not show her
query($node, q{
CREATE FUNCTION public.peek(text) RETURNS boolean LANGUAGE plpgsql COST 0.0001 AS $$
BEGIN RAISE NOTICE 'peeked %', $1; RETURN true; END $$;
});
($rc, $out, $err) = $node->psql('postgres', "SET ROLE carol; SELECT count(*) FROM orchestrator.asset_events WHERE public.peek(extra::text)");
unlike($err, qr/alice|data_interval/, 'a leaky function of hers sees only her own rows (security_barrier)');
is(as('alice', "SELECT count(*) || ' ' || count(source_dag_id) || ' ' || count(*) FILTER (WHERE extra ->> 'from' = 'carol') FROM orchestrator.asset_events"),
	'2 1 1', 'alice, a consumer, sees carol\'s event, but not who recorded it');

# the graph: assets between DAGs, of the reader's own only
like(as('alice', "SELECT orchestrator.dag_graph('alice_load')"), qr/a0\[\("shared"\)\]\n.*d0\[\["DAG alice_own_consumer"\]\].*t1 --> a0\n.*a0 -.-> d0/s,
	'alice\'s graph draws "shared" between her DAGs');
unlike(as('alice', "SELECT orchestrator.dag_graph('alice_load')"), qr/bob/, 'and nothing of bob\'s');
like(as('bob', "SELECT orchestrator.dag_graph('bob_consume', 'dot')"), qr/a0 \[shape=cylinder, label="shared"\];\n.*a0 -> t1;/s,
	'bob\'s graph draws the asset into his first task');
unlike(as('bob', "SELECT orchestrator.dag_graph('bob_consume')"), qr/alice/, 'and nothing of alice\'s');

# definitions: bad asset names
($rc, $out, $err) = $node->psql('postgres', "SELECT orchestrator.create_dag('bad', on_assets => ARRAY['']);");
like($err, qr/invalid asset name ""/, 'an empty asset name is refused');
($rc, $out, $err) = $node->psql('postgres', "SELECT orchestrator.create_dag('bad', on_assets => ARRAY[NULL::text]);");
like($err, qr/on_assets must not contain nulls/, 'so is a null');
($rc, $out, $err) = $node->psql('postgres', "SELECT orchestrator.asset_updated(E'a\\nb')");
like($err, qr/An asset name has no control characters/, 'and a line break');
($rc, $out, $err) = $node->psql('postgres', "SELECT orchestrator.add_task('consumer', 'x', orchestrator.sql('SELECT 1'), outlets => '{\"{{ nope }}\"}')");
like($err, qr/unknown template variable "nope"/, 'an outlet is a template, checked when defined');
is(query($node, "SELECT on_assets::text FROM orchestrator.dags WHERE dag_id = 'both'"), '{a,b}', 'the dags view shows on_assets');
is(query($node, "SELECT outlets::text FROM orchestrator.tasks WHERE dag_id = 'producer' AND task_id = 'write'"), '{orders,"{{ dag_id }}.done"}',
	'the tasks view shows outlets');

ok(!$node->log_contains('TRAP|terminated by signal'), 'no crash');
$node->stop;
done_testing();
