# Isolation: attacks by an ordinary DAG author (a NOLOGIN role with only the
# documented grant), each followed, in the same worker session
# (orchestrator.max_workers = 1), by a probe task of another role that
# records what it sees of its session.  After every attack: the author is
# still not a superuser, none of the author's code ran as anyone else, and
# the probe sees exactly what it saw before any attack.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = orch_node('isolation', "orchestrator.max_workers = 1\n");

# alice attacks; bob is the other role whose tasks share alice's worker
query($node, q{
CREATE ROLE alice NOLOGIN;
CREATE ROLE bob NOLOGIN;
GRANT USAGE ON SCHEMA orchestrator TO alice, bob;
CREATE SCHEMA alice AUTHORIZATION alice;
CREATE SCHEMA bob AUTHORIZATION bob;
});

# alice's payload: records who ran it, and makes alice a superuser if it
# runs as one.  Planted where a worker's own query could resolve to it.
query($node, q{
SET ROLE alice;
CREATE TABLE alice.seen (who name, what text);
GRANT INSERT, SELECT ON alice.seen TO PUBLIC;
CREATE FUNCTION alice.evil(what text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO alice.seen VALUES (current_user, what);
  IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
    EXECUTE 'ALTER ROLE alice SUPERUSER';
  END IF;
  RETURN true;
END $$;
CREATE FUNCTION alice.eq_text(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM alice.evil('=(text, text)'); RETURN a OPERATOR(pg_catalog.=) b; END $$;
CREATE FUNCTION alice.eq_int8(a int8, b int8) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM alice.evil('=(int8, int8)'); RETURN a OPERATOR(pg_catalog.=) b; END $$;
CREATE FUNCTION alice.eq_int4(a int4, b int4) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM alice.evil('=(int4, int4)'); RETURN a OPERATOR(pg_catalog.=) b; END $$;
CREATE OPERATOR alice.= (LEFTARG = text, RIGHTARG = text, FUNCTION = alice.eq_text);
CREATE OPERATOR alice.= (LEFTARG = int8, RIGHTARG = int8, FUNCTION = alice.eq_int8);
CREATE OPERATOR alice.= (LEFTARG = int4, RIGHTARG = int4, FUNCTION = alice.eq_int4);
CREATE FUNCTION alice.pg_backend_pid() RETURNS int LANGUAGE plpgsql AS $$
BEGIN PERFORM alice.evil('pg_backend_pid()'); RETURN pg_catalog.pg_backend_pid(); END $$;
CREATE FUNCTION alice.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM alice.evil('now()'); RETURN pg_catalog.now(); END $$;
-- for code that runs at commit
CREATE FUNCTION alice.evil_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM alice.evil('deferred trigger'); RETURN NULL; END $$;
CREATE TABLE alice.deferred (x int);
CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON alice.deferred
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION alice.evil_trigger();
CREATE TABLE alice.results (attack text, sqlstate text, message text);
});

# bob's probe: what a task sees of its session
query($node, q{
SET ROLE bob;
CREATE TABLE bob.state (run_id bigint, pid int, state jsonb);
SELECT orchestrator.create_dag('probe');
SELECT orchestrator.add_task('probe', 'look', orchestrator.sql($$
INSERT INTO bob.state SELECT current_setting('orchestrator.run_id')::bigint, pg_backend_pid(),
  jsonb_build_object(
    'user', current_user,
    'search_path', current_setting('search_path'),
    'TimeZone', current_setting('TimeZone'),
    'DateStyle', current_setting('DateStyle'),
    'statement_timeout', current_setting('statement_timeout'),
    'lock_timeout', current_setting('lock_timeout'),
    'work_mem', current_setting('work_mem'),
    'custom', coalesce(current_setting('alice.planted', true), ''),
    'temp_objects', (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema())
                  + (SELECT count(*) FROM pg_proc WHERE pronamespace = pg_my_temp_schema())
                  + (SELECT count(*) FROM pg_type WHERE typnamespace = pg_my_temp_schema()),
    'prepared', (SELECT count(*) FROM pg_prepared_statements),
    'cursors', (SELECT count(*) FROM pg_cursors),
    'listening', (SELECT count(*) FROM pg_listening_channels()),
    'advisory_locks', (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()))
$$));
});

my $n = 0;

# Runs alice's attack (a DAG of one task "t", defined by $define, run with
# bob's probe queued behind it); returns the attack task's state and error
# and the probe's recorded state.
sub attack
{
	my ($name, $define) = @_;
	$n++;
	query($node, qq{
SET ROLE alice;
$define
});
	my $runs = query($node, qq{
BEGIN;
SET LOCAL ROLE alice;
SELECT orchestrator.trigger_dag('$name', logical_date => '2021-01-01'::timestamptz + $n * interval '1 day');
SET LOCAL ROLE bob;
SELECT orchestrator.trigger_dag('probe', logical_date => '2021-01-01'::timestamptz + $n * interval '1 day');
COMMIT;
});
	my ($arun, $prun) = split /\n/, $runs;
	query($node, "SELECT orchestrator.wait_run($_, '3 minutes')") for ($arun, $prun);
	my $attack = query($node, "SELECT state || ' ' || coalesce(error, '') FROM orchestrator.task_instances WHERE run_id = $arun AND task_id = 't'");
	my $same = query($node, qq{
SELECT a.worker_pid = p.worker_pid FROM orchestrator.task_instance a, orchestrator.task_instance p
WHERE a.run_id = $arun AND a.task_id = 't' AND p.run_id = $prun});
	my $state = query($node, "SELECT state FROM bob.state WHERE run_id = $prun");
	return ($attack, $same, $state);
}

my $superuser_calls = q{SELECT count(*) FROM alice.seen WHERE who <> 'alice'};

# the probe's view of a clean session, before any attack
my (undef, undef, $clean) = attack('warmup', q{
SELECT orchestrator.create_dag('warmup');
SELECT orchestrator.add_task('warmup', 't', orchestrator.sql('SELECT 1'));
});
like($clean, qr/"user": "bob"/, 'the probe runs as bob');

sub check_attack
{
	my ($what, $name, $define, $expect_state) = @_;
	my ($attack, $same, $state) = attack($name, $define);
	like($attack, $expect_state, "$what: the attack task ran ($attack)");
	is($same, 't', "$what: the probe ran in the same worker session");
	is(query($node, "SELECT rolsuper FROM pg_roles WHERE rolname = 'alice'"), 'f', "$what: alice is not a superuser");
	is(query($node, $superuser_calls), '0', "$what: none of alice's code ran as another role");
	is($state, $clean, "$what: the next task of another role sees a clean session");
	# each attack on its own, should one succeed
	query($node, "ALTER ROLE alice NOSUPERUSER; DELETE FROM alice.seen WHERE who <> 'alice'");
}

# 1. the planted operators and functions, through every way to leave a
# setting behind
my %leave_setting = (
	'task SET' => 'SET search_path = alice, pg_catalog',
	'set_config' => q{SELECT set_config('search_path', 'alice, pg_catalog', false)},
	'SET LOCAL' => 'SET LOCAL search_path = alice, pg_catalog',
	'function SET clause' => q{CREATE FUNCTION alice.f() RETURNS void LANGUAGE sql SET search_path = alice, pg_catalog AS 'SELECT'; SELECT alice.f(); SET search_path = alice, pg_catalog},
	'TimeZone and friends' => q{SET TimeZone = 'Pacific/Kiritimati'; SET DateStyle = 'SQL, DMY'; SET statement_timeout = '1ms'; SET lock_timeout = '1ms'; SET work_mem = '64kB'; SET alice.planted = 'yes'},
	'RESET ALL' => 'SET search_path = alice, pg_catalog; RESET ALL; SET search_path = alice, pg_catalog',
	'a failing task' => 'SET search_path = alice, pg_catalog; SELECT 1/0',
	'read-only transaction' => 'SET transaction_read_only = on; SET default_transaction_read_only = on',
);
for my $what (sort keys %leave_setting)
{
	(my $name = "set_$what") =~ s/\W+/_/g;
	my $sql = $leave_setting{$what};
	check_attack($what, $name, qq{
SELECT orchestrator.create_dag('$name');
SELECT orchestrator.add_task('$name', 't', orchestrator.sql(\$q\$$sql\$q\$));
}, $what eq 'a failing task' ? qr/^failed division by zero/ : qr/^success/);
}

check_attack('callback', 'cb', q{
SELECT orchestrator.create_dag('cb');
SELECT orchestrator.add_task('cb', 't', orchestrator.sql('SELECT 1'),
  on_success_callback => orchestrator.sql('SET search_path = alice, pg_catalog; SELECT set_config(''TimeZone'', ''Asia/Tokyo'', false)'));
}, qr/^success/);

# 2. session state that outlives a transaction
my %leave_state = (
	'temp table named like a catalog table' =>
	  q{CREATE TEMP TABLE task_instance (run_id bigint, task_id text, state text); CREATE TEMP TABLE dag_run (run_id bigint); CREATE TEMP TABLE callback (id bigint); SET search_path = pg_temp, alice, pg_catalog},
	'temp function and type' => q{CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'; CREATE TYPE pg_temp.t AS (x int)},
	'advisory lock' => q{SELECT pg_advisory_lock(42); SELECT pg_advisory_lock_shared(43)},
	'prepared statement' => q{PREPARE alice_stmt AS SELECT 1},
	'WITH HOLD cursor' => q{DECLARE alice_cursor CURSOR WITH HOLD FOR SELECT 1},
);
check_attack('LISTEN', 'listen', q{
SELECT orchestrator.create_dag('listen');
SELECT orchestrator.add_task('listen', 't', orchestrator.sql('LISTEN alice_channel'));
}, qr/^failed cannot execute LISTEN within a background process/);
for my $what (sort keys %leave_state)
{
	(my $name = "state_$what") =~ s/\W+/_/g;
	my $sql = $leave_state{$what};
	check_attack($what, $name, qq{
SELECT orchestrator.create_dag('$name');
SELECT orchestrator.add_task('$name', 't', orchestrator.sql(\$q\$$sql\$q\$));
}, qr/^success/);
}
is(query($node, 'SELECT pg_try_advisory_lock(42)'), 't', "alice's advisory lock was released");

# 3. code that runs at commit, as whoever commits
check_attack('deferred constraint trigger', 'deferred', q{
SELECT orchestrator.create_dag('deferred');
SELECT orchestrator.add_task('deferred', 't', orchestrator.sql('INSERT INTO alice.deferred VALUES (1)'));
}, qr/^success/);
is(query($node, "SELECT count(*) FROM alice.seen WHERE who = 'alice' AND what = 'deferred trigger'"), '1',
	'the deferred trigger ran, as alice');
check_attack('WITH HOLD cursor over alice\'s function', 'hold', q{
SELECT orchestrator.create_dag('hold');
SELECT orchestrator.add_task('hold', 't', orchestrator.sql('DECLARE c CURSOR WITH HOLD FOR SELECT alice.evil(''cursor'') FROM generate_series(1, 3)'));
}, qr/^success/);
check_attack('deferred trigger in a callback', 'cbdeferred', q{
SELECT orchestrator.create_dag('cbdeferred');
SELECT orchestrator.add_task('cbdeferred', 't', orchestrator.sql('SELECT 1'),
  on_success_callback => orchestrator.sql('INSERT INTO alice.deferred VALUES (2); DECLARE c CURSOR WITH HOLD FOR SELECT alice.evil(''callback cursor'')'));
}, qr/^success/);
check_attack('deferred trigger, then a failure', 'deferredfail', q{
SELECT orchestrator.create_dag('deferredfail');
SELECT orchestrator.add_task('deferredfail', 't', orchestrator.sql('INSERT INTO alice.deferred VALUES (3); DECLARE c CURSOR WITH HOLD FOR SELECT alice.evil(''cursor'') ; SELECT 1/0'));
}, qr/^failed division by zero/);

# 4. the ways to a superuser's powers: each refused as for a session of alice
my $written = PostgreSQL::Test::Utils::tempdir . '/alice-was-here';
my $scheduler_pid = query($node, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'orchestrator scheduler'");
my %escalate = (
	'SET ROLE' => 'SET ROLE postgres',
	'SET SESSION AUTHORIZATION' => 'SET SESSION AUTHORIZATION postgres',
	'RESET ROLE' => 'RESET ROLE',
	'RESET SESSION AUTHORIZATION' => 'RESET SESSION AUTHORIZATION',
	'set_config role' => q{SELECT set_config('role', 'postgres', false)},
	'set_config session_authorization' => q{SELECT set_config('session_authorization', 'postgres', false)},
	'SECURITY DEFINER with SET role' => q{CREATE OR REPLACE FUNCTION alice.sd() RETURNS text LANGUAGE sql SECURITY DEFINER SET role = 'postgres' AS 'SELECT current_user::text'; SELECT alice.sd()},
	'SECURITY DEFINER SET ROLE' => q{CREATE OR REPLACE FUNCTION alice.sd2() RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS 'BEGIN SET ROLE postgres; END'; SELECT alice.sd2()},
	'LOAD' => q{LOAD 'auto_explain'},
	'superuser-only setting' => q{SET session_replication_role = replica},
	'ALTER SYSTEM' => q{ALTER SYSTEM SET orchestrator.http_allowed_hosts = ''},
	'ALTER ROLE' => q{ALTER ROLE alice SUPERUSER},
	'COPY TO PROGRAM' => q{COPY (SELECT 1) TO PROGRAM 'true'},
	'COPY FROM PROGRAM' => q{COPY alice.results FROM PROGRAM 'echo x'},
	'COPY FROM a server file' => q{COPY alice.results FROM '/etc/passwd'},
	'COPY TO a server file' => "COPY (SELECT 1) TO '$written'",
	'lo_import' => q{SELECT lo_import('/etc/passwd')},
	'lo_export' => "SELECT lo_export(lo_create(0), '$written')",
	'pg_read_file' => q{SELECT pg_read_file('/etc/passwd')},
	'pg_read_binary_file' => q{SELECT pg_read_binary_file('postgresql.conf')},
	'pg_ls_dir' => q{SELECT pg_ls_dir('.')},
	'terminate the scheduler' => "SELECT pg_terminate_backend($scheduler_pid)",
	'cancel the scheduler' => "SELECT pg_cancel_backend($scheduler_pid)",
	'read pg_authid' => q{SELECT 1 FROM pg_authid},
);
my @escalations = sort keys %escalate;
my $i = 0;
my $tasks = join("\n", map {
	my $name = $_;
	(my $sql = $escalate{$name}) =~ s/'/''/g;
	(my $label = $name) =~ s/'/''/g;
	$i++;
	qq{SELECT orchestrator.add_task('escalate', '} . ($i == 1 ? 't' : "e$i") . qq{', orchestrator.sql(\$q\$DO \$do\$ BEGIN EXECUTE '$sql'; INSERT INTO alice.results VALUES ('$label', 'allowed', current_user); EXCEPTION WHEN others THEN INSERT INTO alice.results VALUES ('$label', SQLSTATE, SQLERRM); END \$do\$\$q\$));}
} @escalations);
check_attack('escalations', 'escalate', qq{
SELECT orchestrator.create_dag('escalate');
$tasks
}, qr/^success/);
for my $what (@escalations)
{
	my $got = query($node, qq{SELECT sqlstate || ' ' || message FROM alice.results WHERE attack = \$\$$what\$\$});
	# ALTER SYSTEM cannot run in a transaction at all
	my $sqlstate = $what eq 'ALTER SYSTEM' ? '25001' : '42501';
	like($got, qr/^$sqlstate /, "$what: refused ($got)");
}
ok(!-e $written, 'no server file was written');
is(query($node, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'orchestrator scheduler'"), $scheduler_pid,
	'the scheduler still runs');

# 5. progress: each role sees only its own running tasks
query($node, q{
SET ROLE alice;
SELECT orchestrator.create_dag('slow');
SELECT orchestrator.add_task('slow', 't', orchestrator.sql('SELECT pg_sleep(600)'));
SELECT orchestrator.trigger_dag('slow');
});
wait_for($node, "SELECT count(*) FROM orchestrator.progress", '1', 'a superuser sees the running task');
is(query($node, "SET ROLE alice; SELECT count(*) FROM orchestrator.progress"), '1', 'its owner sees it');
is(query($node, "SET ROLE bob; SELECT count(*) FROM orchestrator.progress"), '0', 'another role does not');
is(query($node, "SET ROLE bob; SELECT count(*) FROM orchestrator.worker_progress()"), '0',
	'nor through the function behind the view');
query($node, q{SELECT orchestrator.cancel_run(run_id) FROM orchestrator.dag_runs WHERE dag_id = 'slow'});
wait_for($node, "SELECT count(*) FROM orchestrator.progress", '0', 'the slow task is stopped');

# 7. a cancel can be caught; a termination cannot.  A task that catches the
# cancel at its execution_timeout, or cancel_run's, is stopped for good a few
# seconds later, and the try recorded as what it was.
my $stubborn = q{DO $d$ BEGIN LOOP BEGIN PERFORM pg_sleep(0.2); EXCEPTION WHEN query_canceled THEN RAISE NOTICE 'caught'; END; END LOOP; END $d$};
query($node, qq{
SET ROLE alice;
SELECT orchestrator.create_dag('stubborn');
SELECT orchestrator.add_task('stubborn', 't', orchestrator.sql(\$q\$$stubborn\$q\$), execution_timeout => '2 seconds');
SELECT orchestrator.create_dag('stubborn2');
SELECT orchestrator.add_task('stubborn2', 't', orchestrator.sql(\$q\$$stubborn\$q\$));
});
my $run = query($node, q{SET ROLE alice; SELECT orchestrator.trigger_dag('stubborn')});
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'a task that catches its timeout is stopped');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run"),
	qr/^execution_timeout exceeded: the task went on after it was cancelled at its timeout, so its worker was terminated after \d+\.\d+ s$/,
	'and recorded as timed out');
is(query($node, "SELECT finished_at - started_at >= interval '2 seconds' FROM orchestrator.task_instances WHERE run_id = $run"),
	't', 'with its real duration');
$run = query($node, q{SET ROLE alice; SELECT orchestrator.trigger_dag('stubborn2')});
wait_for($node, "SELECT count(*) FROM orchestrator.task_instances WHERE run_id = $run AND state = 'running'", '1', 'a stubborn task runs');
my $pid = query($node, "SELECT worker_pid FROM orchestrator.task_instances WHERE run_id = $run");
query($node, "SET ROLE alice; SELECT orchestrator.cancel_run($run)");
wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid", '0', 'a task that catches cancel_run is stopped');
is(query($node, "SELECT state || ' ' || error FROM orchestrator.task_instances WHERE run_id = $run"),
	'failed cancelled by cancel_run()', 'and recorded as cancelled');
my (undef, undef, $state) = attack('warmup', '');
is($state, $clean, 'the next task runs in a clean session');

# 6. our own SQL is pinned from the first statement, whatever the database's
# defaults say (as a database owner could set them).  The test's own
# sessions keep a safe path.
{
	local $ENV{PGOPTIONS} = '-c search_path=pg_catalog';
	query($node, q{ALTER DATABASE postgres SET search_path = alice, pg_catalog});
	$node->restart;
	query($node, q{
SET ROLE alice;
SELECT orchestrator.create_dag('dbpath');
SELECT orchestrator.add_task('dbpath', 't', orchestrator.sql('SELECT 1'));
SELECT orchestrator.add_task('dbpath', 'u', orchestrator.sql('SELECT 1'), '{t}');
});
	my $run = query($node, q{SET ROLE alice; SELECT orchestrator.trigger_dag('dbpath')});
	is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success',
		'with alice first in the database default search_path, a DAG runs');
	is(query($node, $superuser_calls), '0', "the scheduler and the worker never reached alice's operators");
	is(query($node, "SELECT rolsuper FROM pg_roles WHERE rolname = 'alice'"), 'f', 'alice is not a superuser');
	query($node, q{ALTER DATABASE postgres RESET search_path});
}

# 8. no lock a task can take stalls the scheduler: alice's task keeps a row
# lock on her DAG "lockme" (unpause_dag holds it to the end of the task)
# and catches cancels, while "lockme" becomes due; bob's run still starts.
query($node, "ALTER SYSTEM SET orchestrator.max_workers = 2; SELECT pg_reload_conf()");
set_clock($node, '2030-01-01 00:00:00+00');
query($node, qq{
SET ROLE alice;
SELECT orchestrator.create_dag('lockme', schedule => '\@daily', start_date => '2030-01-01', catchup => true);
SELECT orchestrator.add_task('lockme', 't', orchestrator.sql('SELECT 1'));
SELECT orchestrator.create_dag('locker');
SELECT orchestrator.add_task('locker', 't', orchestrator.sql(\$q\$SELECT orchestrator.unpause_dag('lockme'); $stubborn\$q\$));
SET ROLE bob;
SELECT orchestrator.create_dag('bobdag');
SELECT orchestrator.add_task('bobdag', 't', orchestrator.sql('SELECT 1'));
});
my $locker = query($node, q{SET ROLE alice; SELECT orchestrator.trigger_dag('locker')});
wait_for($node, "SELECT count(*) FROM pg_locks l JOIN orchestrator.task_instance ti ON ti.worker_pid = l.pid "
	  . "WHERE ti.run_id = $locker AND ti.state = 'running' AND l.locktype = 'transactionid'",
	'1', "alice's task runs, holding its locks");
set_clock($node, '2030-01-03 00:00:00+00');
my $bobrun = query($node, q{SET ROLE bob; SELECT orchestrator.trigger_dag('bobdag')});
is(query($node, "SELECT orchestrator.wait_run($bobrun, '3 minutes')"), 'success',
	"another role's run finishes while alice's task holds a lock on her due DAG");
is(query($node, "SELECT state FROM orchestrator.task_instances WHERE run_id = $locker"), 'running',
	'the lock was held all along');
is(query($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'lockme' AND run_type = 'scheduled'"), '0',
	'the locked DAG was skipped');
query($node, "SELECT orchestrator.cancel_run($locker)");
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'lockme' AND run_type = 'scheduled'", '2',
	'once the lock is gone, the skipped DAG gets its runs');
set_clock($node, '');

$node->stop;
done_testing();
