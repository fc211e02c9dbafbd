# Events: every run and task state change is published with NOTIFY on
# orchestrator_events at commit, with a JSON payload; nothing for a change
# that rolled back; orchestrator.events = 'ids' (the default, since any role
# can LISTEN) leaves dag_id and error out.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = orch_node('events');
is(query($node, 'SHOW orchestrator.events'), 'ids', "events default to 'ids'");
query($node, "ALTER SYSTEM SET orchestrator.events = 'on'; SELECT pg_reload_conf()");
query($node, q{
SELECT orchestrator.create_dag('ev');
SELECT orchestrator.add_task('ev', 'a', orchestrator.sql('SELECT 1'));
SELECT orchestrator.add_task('ev', 'b', orchestrator.sql('SELECT 1/0'), '{a}');
});

# a listener that triggers a run, waits for it, and prints what it heard
sub listen_to_run
{
	my ($logical_date) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', qq{
LISTEN orchestrator_events;
BEGIN;
SELECT orchestrator.trigger_dag('ev', logical_date => '2020-12-31');
ROLLBACK;
SELECT orchestrator.trigger_dag('ev', logical_date => '$logical_date') AS run \\gset
SELECT orchestrator.wait_run(:run, '3 minutes');
SELECT pg_sleep(0.5);
});
	my @events = $out =~ /Asynchronous notification "orchestrator_events" with payload "(.*)" received/g;
	s/\\"/"/g for @events;
	return @events;
}

my @events = listen_to_run('2021-01-01');
ok(scalar(@events) > 0, 'a listener hears events');
my $run = query($node, "SELECT max(run_id) FROM orchestrator.dag_runs");
my @expected = (
	qq{{"dag_id": "ev", "run_id": $run, "task_id": null, "state": "queued", "try_number": null, "error": null}},
	qq{{"dag_id": "ev", "run_id": $run, "task_id": null, "state": "running", "try_number": null, "error": null}},
	qq{{"dag_id": "ev", "run_id": $run, "task_id": "a", "state": "scheduled", "try_number": 0, "error": null}},
	qq{{"dag_id": "ev", "run_id": $run, "task_id": "a", "state": "queued", "try_number": 0, "error": null}},
	qq{{"dag_id": "ev", "run_id": $run, "task_id": "a", "state": "running", "try_number": 1, "error": null}},
	qq{{"dag_id": "ev", "run_id": $run, "task_id": "a", "state": "success", "try_number": 1, "error": null}},
	qq{{"dag_id": "ev", "run_id": $run, "task_id": "b", "state": "running", "try_number": 1, "error": null}},
	qq{{"dag_id": "ev", "run_id": $run, "task_id": "b", "state": "failed", "try_number": 1, "error": "division by zero"}},
	qq{{"dag_id": "ev", "run_id": $run, "task_id": null, "state": "failed", "try_number": null, "error": null}});
my %heard = map { $_ => 1 } @events;
ok($heard{$_}, "heard: $_") for @expected;
ok(!(grep { /"queued"/ && /"run_id": (\d+)/ && $1 != $run } @events), 'nothing from the run that rolled back');
my @run_states = map { /"task_id": null, "state": "(\w+)"/ ? $1 : () } @events;
is(join(' ', @run_states), 'queued running failed', "the run's changes, each once, in order");

# a scheduled run, which the scheduler creates running and decides as it
# creates its instances: a listener hears the same changes, in order
my ($rc_s, $out_s, $err_s) = $node->psql('postgres', q{
LISTEN orchestrator_events;
SELECT orchestrator.create_dag('ev_once', '@once', start_date => '2021-01-01');
SELECT orchestrator.add_task('ev_once', 'a', orchestrator.sql('SELECT 1'));
DO $$ BEGIN
  WHILE NOT EXISTS (SELECT FROM orchestrator.dag_run WHERE dag_id = 'ev_once') LOOP
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;
SELECT orchestrator.wait_run((SELECT run_id FROM orchestrator.dag_run WHERE dag_id = 'ev_once'), '3 minutes');
SELECT pg_sleep(0.5);
});
my @once = $out_s =~ /Asynchronous notification "orchestrator_events" with payload "(.*)" received/g;
s/\\"/"/g for @once;
is(join(' ', map { /"dag_id": "ev_once", .*"task_id": null, "state": "(\w+)"/ ? $1 : () } @once),
	'queued running success', "a scheduled run's changes, each once, in order");
is(join(' ', map { /"dag_id": "ev_once", .*"task_id": "a", "state": "(\w+)"/ ? $1 : () } @once),
	'scheduled queued running success', "its task's changes, each once, in order");
is(query($node, q{
SELECT r.run_type || ' ' || (r.queued_at = r.started_at) || ' ' || ti.state || ' ' || (ti.queued_at >= r.started_at)
FROM orchestrator.dag_run r JOIN orchestrator.task_instance ti USING (run_id) WHERE r.dag_id = 'ev_once'}),
	'scheduled true success true', 'the run created started, its instance queued after');

# orchestrator.events = 'ids'
query($node, "ALTER SYSTEM SET orchestrator.events = 'ids'; SELECT pg_reload_conf()");
@events = listen_to_run('2021-01-02');
ok(scalar(@events) > 0 && !(grep { !/"dag_id": null/ || !/"error": null/ } @events),
	"with events = 'ids', no payload names the DAG or carries an error");
query($node, "ALTER SYSTEM SET orchestrator.events = 'off'; SELECT pg_reload_conf()");
@events = listen_to_run('2021-01-03');
is(scalar(@events), 0, "with events = 'off', nothing");
my ($rc, $out, $err) = $node->psql('postgres', "ALTER SYSTEM SET orchestrator.events = 'loud'");
like($err, qr/invalid value for parameter "orchestrator.events"/, 'events takes on, ids or off');

$node->stop;
done_testing();
