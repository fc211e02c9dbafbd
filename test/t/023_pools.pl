# Pools and priorities (issue 15, points 2 and 3).
#
# 1. Who may do what: only a superuser manages pools; an author uses a
#    pool only once granted, learns nothing of pools not granted, and sees
#    counts only through orchestrator.pools; pool_slots beyond the pool's
#    slots, drop_pool and revoke_pool of a pool in use are refused.
# 2. The limit under load: two DAGs of two owners, twelve tasks in a pool
#    of two slots, six workers.  A sampler counts, many times a second, the
#    tasks really inside their SQL (a shared advisory lock each holds) and
#    the pool's queued and running instances: never more than the slots,
#    and the waiting instances are scheduled, holding no worker.
# 3. Weights: Airflow's three rules on a diamond; a pool of one slot hands
#    its slot out by weight; one worker claims queued tasks by weight.
# 4. No starvation: with one worker, a task of weight 1 that is ready while
#    tasks of weight 50 keep arriving is claimed before the flood ends,
#    ahead of tasks of weight 50 queued before it started.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = orch_node('pools', "orchestrator.max_workers = 6\n");

query($node, q{
CREATE ROLE alice NOLOGIN;
CREATE ROLE bob NOLOGIN;
CREATE ROLE carol NOLOGIN;
GRANT USAGE ON SCHEMA orchestrator TO alice, bob, carol;
CREATE TABLE public.done_order (seq bigserial, task text);
GRANT INSERT, SELECT ON public.done_order TO alice, bob, carol;
GRANT USAGE ON SEQUENCE public.done_order_seq_seq TO alice, bob, carol;
});

# psql's error for a statement, or '' if it succeeded
sub fails
{
	my ($sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', $sql,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return $rc == 0 ? '' : $err;
}

# --- 1. who may do what ---------------------------------------------------

like(fails("SET ROLE alice; SELECT orchestrator.create_pool('mine', 5)"),
	qr/42501/, 'an author cannot create a pool');
query($node, "SELECT orchestrator.create_pool('p', 2, 'two at a time')");
like(fails("SET ROLE alice; SELECT orchestrator.grant_pool('p', 'alice')"),
	qr/42501/, 'an author cannot grant a pool');
like(fails("SET ROLE alice; SELECT orchestrator.drop_pool('p')"),
	qr/42501/, 'an author cannot drop a pool');
like(fails("SELECT orchestrator.create_pool('p', 3)"), qr/42710/,
	'a pool name is taken once');
like(fails("SELECT orchestrator.create_pool('z', 0)"), qr/22023/,
	'a pool has a slot or more');
query($node, "SELECT orchestrator.grant_pool('p', 'alice'), orchestrator.grant_pool('p', 'bob')");

my $not_granted = fails(q{SET ROLE carol;
SELECT orchestrator.create_dag('c');
SELECT orchestrator.add_task('c', 't', orchestrator.sql('SELECT 1'), pool => 'p')});
like($not_granted, qr/42501/, 'a role not granted a pool cannot put a task in it');
my $no_such = fails(q{SET ROLE carol;
SELECT orchestrator.create_dag('c');
SELECT orchestrator.add_task('c', 't', orchestrator.sql('SELECT 1'), pool => 'nosuch')});
(my $a = $not_granted) =~ s/"p"/"X"/;
(my $b = $no_such) =~ s/"nosuch"/"X"/;
is($a, $b, 'nor tell a pool it was not granted from one that does not exist');
is(query($node, "SET ROLE carol; SELECT count(*) FROM orchestrator.pools"), '0',
	'the pools view shows a role only the pools granted to it');
like(fails("SET ROLE alice; SELECT * FROM orchestrator.pool"), qr/42501/,
	'the pool table itself is not readable');
like(fails("SET ROLE alice; SELECT * FROM orchestrator.pool_grant"), qr/42501/,
	'nor the grants');
like(fails(q{SET ROLE alice;
SELECT orchestrator.create_dag('big');
SELECT orchestrator.add_task('big', 't', orchestrator.sql('SELECT 1'), pool => 'p', pool_slots => 3)}),
	qr/22023.*more than pool "p" has/s, 'pool_slots beyond the pool\'s slots is refused at add_task');
like(fails(q{SET ROLE alice;
SELECT orchestrator.create_dag('big');
SELECT orchestrator.add_task('big', 't', orchestrator.sql('SELECT 1'), weight_rule => 'sideways')}),
	qr/22023.*unknown weight rule/s, 'an unknown weight rule is refused');

# --- 2. the limit under load: two DAGs, two owners, more workers than slots --

for my $who ([ 'alice', 'a' ], [ 'bob', 'b' ])
{
	my ($role, $dag) = @$who;
	my $sql = "SET ROLE $role; SELECT orchestrator.create_dag('$dag', max_active_tasks => 16);\n";
	$sql .= "SELECT orchestrator.add_task('$dag', 't$_', orchestrator.sql("
	  . "'SELECT pg_advisory_xact_lock_shared(4242), pg_sleep(0.3)'), pool => 'p');\n"
	  for 1 .. 6;
	query($node, $sql);
}
like(fails("SELECT orchestrator.drop_pool('p')"), qr/2BP01.*in use/s,
	'drop_pool of a pool in use is refused');
like(fails("SELECT orchestrator.revoke_pool('p', 'bob')"), qr/2BP01/,
	'revoke_pool while the role has tasks in the pool is refused');

# the sampler: one session, a fresh look each time, until all twelve end
query($node, "CREATE TABLE samples (inside int, running int, queued int, waiting int)");
my $sampler = $node->background_psql('postgres');
$sampler->query_until(qr/start/, q{
\echo start
DO $$
DECLARE
  i int := 0;
BEGIN
  LOOP
    INSERT INTO samples
    SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted),
           (SELECT count(*) FROM orchestrator.task_instance WHERE pool = 'p' AND state = 'running'),
           (SELECT count(*) FROM orchestrator.task_instance WHERE pool = 'p' AND state = 'queued'),
           (SELECT count(*) FROM orchestrator.task_instance WHERE pool = 'p' AND ready_at IS NOT NULL
                                                             AND state = 'scheduled');
    EXIT WHEN (SELECT count(*) FROM orchestrator.task_instance WHERE pool = 'p' AND state = 'success') = 12;
    i := i + 1;
    EXIT WHEN i > 20000;
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
\echo sampled
});
query($node, "SET ROLE alice; SELECT orchestrator.trigger_dag('a')");
query($node, "SET ROLE bob; SELECT orchestrator.trigger_dag('b')");
$sampler->query_until(qr/sampled/, '');
$sampler->quit;

is(query($node, "SELECT count(*) FROM orchestrator.task_instance WHERE pool = 'p' AND state = 'success'"),
	'12', 'all twelve pooled tasks of both owners ran');
my ($inside, $running, $taken, $waiting, $nsamples) = split /\|/, query($node,
	"SELECT max(inside), max(running), max(running + queued), max(waiting), count(*) FROM samples");
note("samples: $nsamples; most inside $inside, running $running, taken $taken, waiting $waiting");
ok($inside <= 2, "never more than the pool's two slots inside a task ($inside)");
ok($running <= 2 && $taken <= 2, "never more than two queued or running in the pool ($running, $taken)");
is($inside, '2', 'the pool\'s two slots were both used');
ok($waiting > 0, 'the others waited, scheduled (no worker holds them, none queued)');
is(query($node, "SELECT running || '/' || queued || '/' || waiting FROM orchestrator.pools WHERE pool = 'p'"),
	'0/0/0', 'the pools view counts nothing once they ended');
is(query($node, "SET ROLE carol; SELECT count(*) FROM orchestrator.pools"), '0',
	'still nothing for a role not granted');
is(query($node, "SET ROLE alice; SELECT pool, slots, description FROM orchestrator.pools"),
	'p|2|two at a time', 'a granted role sees the pool, counts only');

# --- 3. weights ----------------------------------------------------------

query($node, q{SET ROLE alice;
SELECT orchestrator.create_dag('w');
SELECT orchestrator.add_task('w', 'a', orchestrator.sql('SELECT 1'), priority_weight => 1);
SELECT orchestrator.add_task('w', 'b', orchestrator.sql('SELECT 1'), '{a}', priority_weight => 2);
SELECT orchestrator.add_task('w', 'c', orchestrator.sql('SELECT 1'), '{a}', priority_weight => 3,
                             weight_rule => 'absolute');
SELECT orchestrator.add_task('w', 'd', orchestrator.sql('SELECT 1'), '{b,c}', priority_weight => 10);
SELECT orchestrator.add_task('w', 'e', orchestrator.sql('SELECT 1'), '{d}', priority_weight => 4,
                             weight_rule => 'upstream');
});
is(query($node, "SET ROLE alice; SELECT string_agg(task_id || '=' || priority_weight_total, ' ' ORDER BY task_id) FROM orchestrator.tasks WHERE dag_id = 'w'"),
	# a: 1 + b 2 + c 3 + d 10 + e 4 (d counted once); b: 2 + 10 + 4; c: absolute;
	# d: 10 + 4; e: 4 + a, b, c, d
	'a=20 b=16 c=3 d=14 e=20',
	'effective weights by Airflow\'s rules (downstream, upstream, absolute)');
# a task added later, in a transaction of its own: its ancestors' weights
# change at its commit (the weights are the whole DAG's, computed then)
query($node, "SET ROLE alice; SELECT orchestrator.add_task('w', 'f', orchestrator.sql('SELECT 1'), '{e}', priority_weight => 5)");
is(query($node, "SET ROLE alice; SELECT string_agg(task_id || '=' || priority_weight_total, ' ' ORDER BY task_id) FROM orchestrator.tasks WHERE dag_id = 'w'"),
	'a=25 b=21 c=3 d=19 e=20 f=5',
	'a task added later weighs on every ancestor whose rule counts it');

# a pool of one slot: a gate holds it; the waiters get it by weight
query($node, q{
SELECT orchestrator.create_pool('one', 1);
SELECT orchestrator.grant_pool('one', 'alice');
CREATE TABLE public.gate (open boolean);
GRANT SELECT ON public.gate TO alice;
});
query($node, q{SET ROLE alice;
SELECT orchestrator.create_dag('prio');
SELECT orchestrator.add_task('prio', 'gate', orchestrator.sql($q$
DO $d$ BEGIN WHILE NOT EXISTS (SELECT FROM public.gate) LOOP PERFORM pg_sleep(0.05); END LOOP; END $d$$q$),
  pool => 'one', priority_weight => 1000);
SELECT orchestrator.add_task('prio', 'low', orchestrator.sql($$INSERT INTO public.done_order (task) VALUES ('low')$$),
  pool => 'one', priority_weight => 1);
SELECT orchestrator.add_task('prio', 'high', orchestrator.sql($$INSERT INTO public.done_order (task) VALUES ('high')$$),
  pool => 'one', priority_weight => 30);
SELECT orchestrator.add_task('prio', 'mid', orchestrator.sql($$INSERT INTO public.done_order (task) VALUES ('mid')$$),
  pool => 'one', priority_weight => 10);
SELECT orchestrator.trigger_dag('prio');
});
wait_for($node, "SELECT count(*) FROM orchestrator.task_instance ti JOIN orchestrator.dag_run r USING (run_id)
                  WHERE r.dag_id = 'prio' AND ti.state = 'scheduled' AND ti.ready_at IS NOT NULL", '3',
	'the pool of one slot holds three waiters back');
query($node, "INSERT INTO public.gate VALUES (true)");
wait_for($node, "SELECT count(*) FROM public.done_order", '3', 'then they ran');
is(query($node, "SELECT string_agg(task, ' ' ORDER BY seq) FROM public.done_order"),
	'high mid low', 'a pool hands its slot out by weight');

# --- 3b and 4: the claim's order, with one worker -------------------------

my $one = orch_node('one_worker', "orchestrator.max_workers = 1\norchestrator.priority_weight_age = '100ms'\n");
$one->safe_psql('postgres', q{
CREATE TABLE public.done_order (seq bigserial, task text);
CREATE TABLE public.gate (open boolean);
SELECT orchestrator.create_dag('claim');
SELECT orchestrator.add_task('claim', 'gate', orchestrator.sql($q$
DO $d$ BEGIN WHILE NOT EXISTS (SELECT FROM public.gate) LOOP PERFORM pg_sleep(0.05); END LOOP; END $d$$q$),
  priority_weight => 1000, weight_rule => 'absolute');
SELECT orchestrator.add_task('claim', 'low', orchestrator.sql($$INSERT INTO public.done_order (task) VALUES ('low')$$),
  priority_weight => 1);
SELECT orchestrator.add_task('claim', 'high', orchestrator.sql($$INSERT INTO public.done_order (task) VALUES ('high')$$),
  priority_weight => 30);
SELECT orchestrator.add_task('claim', 'mid', orchestrator.sql($$INSERT INTO public.done_order (task) VALUES ('mid')$$),
  priority_weight => 10);
SELECT orchestrator.trigger_dag('claim');
});
$one->poll_query_until('postgres', "SELECT count(*) FROM orchestrator.task_instance WHERE state = 'queued'", '3')
  or die 'the three were not queued behind the gate';
$one->safe_psql('postgres', "INSERT INTO public.gate VALUES (true)");
$one->poll_query_until('postgres', "SELECT count(*) FROM public.done_order", '3');
is($one->safe_psql('postgres', "SELECT string_agg(task, ' ' ORDER BY seq) FROM public.done_order"),
	'high mid low', 'one worker claims queued tasks by weight');

# the starvation case: weight 50 keeps arriving; weight 1 waits, then goes
$one->safe_psql('postgres', q{
SELECT orchestrator.create_dag('flood', max_active_runs => 1000);
SELECT orchestrator.add_task('flood', 'f', orchestrator.sql('SELECT pg_sleep(0.3)'), priority_weight => 50);
SELECT orchestrator.create_dag('old');
SELECT orchestrator.add_task('old', 'o', orchestrator.sql('SELECT 1'), priority_weight => 1);
});
$one->safe_psql('postgres', "SELECT orchestrator.trigger_dag('flood')") for 1 .. 5;
$one->safe_psql('postgres', "SELECT orchestrator.trigger_dag('old')");
my $old_done = 0;
# (a backlog of three or four flood runs at all times: the flood always has
# tasks of weight 50 ready and younger than the old one)
for my $i (1 .. 2000)
{
	my ($backlog, $done) = split /\|/, $one->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'flood' AND state IN ('queued', 'running')),
       (SELECT count(*) FROM orchestrator.task_instances WHERE dag_id = 'old' AND state = 'success')});
	$old_done = $done;
	last if $old_done;
	if ($backlog < 4)
	{
		$one->safe_psql('postgres', "SELECT orchestrator.trigger_dag('flood')");
	}
	else
	{
		select(undef, undef, undef, 0.02);
	}
}
is($old_done, '1', 'the old task of weight 1 ran while the flood of weight 50 went on')
  or diag($one->safe_psql('postgres', "SELECT ti.run_id, ti.task_id, ti.state, ti.queued_at, ti.claim_at, ti.started_at, r.state FROM orchestrator.task_instance ti JOIN orchestrator.dag_run r USING (run_id) ORDER BY ti.run_id"));
my ($overtaken, $waited) = split /\|/, $one->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE f.queued_at > o.queued_at AND f.started_at < o.started_at),
       count(*) FILTER (WHERE f.queued_at < o.started_at
                          AND (f.started_at > o.started_at OR f.state = 'queued'))
  FROM orchestrator.task_instances f, orchestrator.task_instances o
 WHERE f.dag_id = 'flood' AND o.dag_id = 'old'});
ok($overtaken > 0, "heavier tasks queued after it went first ($overtaken)");
ok($waited > 0, "but it went ahead of heavier tasks queued before it started ($waited): ageing");

done_testing();
