#!/usr/bin/env bash
# bench/sched.sh: what scheduling costs, on a throwaway server with the
# default settings (4 workers, max_active_tasks 16), SQL tasks of SELECT 1,
# side by side with published figures:
#
#   hop time in a chain of 100 tasks (first start to last finish / 100)
#   trigger_dag commit -> the task's started_at, median and p95 of
#     BENCH_TRIGGERS runs (default 100), with no other DAG, and with
#     BENCH_DAGS DAGs defined (default 10,000, none due)
#   one DAG of 1,000 independent tasks, trigger to run end
#   a fan-out/fan-in of 100 x 10 (ten stages of 100 parallel tasks, each
#     stage joined before the next), trigger to run end
#   draining 10,000 queued tasks spread over 100 runs, in tasks per second
#   the scheduler's pass with BENCH_DAGS DAGs defined: idle, and when 1,000
#     of them are due in the same minute (the median of three days, and
#     each); and its CPU time over a minute with nothing due
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh

dags=${BENCH_DAGS:-10000}
triggers=${BENCH_TRIGGERS:-100}
work=/tmp/orchestrator-sched-bench

orch_install_deps
orch_build_install
cleanup() { orch_cluster_stop "$work"; }
trap cleanup EXIT
orch_cluster_stop "$work"
rm -rf "$work"
port=$(orch_free_port 56432)
# (a history kept for years: the due pass jumps the test clock a year
# ahead, and would otherwise also purge every run the bench made before)
orch_cluster_start "$work" "$port" "orchestrator.database = 'postgres'" \
	"log_min_messages = debug1" "orchestrator.history_retention = '10 years'" >/dev/null
q() { orch_as_cluster_user psql -X -q -At -h "$work" -p "$port" -U postgres postgres -c "$1"; }
wait_run() { q "SELECT orchestrator.wait_run($1, '30 minutes')" >/dev/null; }

q "CREATE EXTENSION orchestrator" >/dev/null 2>&1

# --- a chain of 100
q "SELECT orchestrator.create_dag('chain');
   SELECT orchestrator.add_task('chain', 't' || i, orchestrator.sql('SELECT 1'),
                                upstream => CASE WHEN i > 1 THEN ARRAY['t' || (i - 1)] END)
   FROM generate_series(1, 100) i" >/dev/null
run=$(q "SELECT orchestrator.trigger_dag('chain')")
wait_run "$run"
hop=$(q "SELECT round((extract(epoch FROM max(finished_at) - min(started_at)) * 1000 / 100)::numeric, 2)
         FROM orchestrator.task_instance WHERE run_id = $run")

# --- trigger -> start, in milliseconds: median and p95
q "SELECT orchestrator.create_dag('probe');
   SELECT orchestrator.add_task('probe', 't', orchestrator.sql('SELECT 1'))" >/dev/null
# (one session, as an application's: a new connection per trigger costs
# the server a process and cold caches, on the same two cores. The commit's
# time is read by the next statement, in a transaction of its own.)
latency() {
	local first
	first=$(q "SELECT coalesce(max(run_id), 0) FROM orchestrator.dag_run")
	{
		echo "CREATE TEMP TABLE committed (run_id bigint, at timestamptz);"
		for i in $(seq "$triggers"); do
			echo "SELECT orchestrator.trigger_dag('probe', logical_date => now() + interval '$i seconds') AS run \\gset"
			echo "INSERT INTO committed VALUES (:run, clock_timestamp());"
			echo "SELECT orchestrator.wait_run(:run, '30 minutes');"
		done
		echo "WITH l AS (
		        SELECT extract(epoch FROM ti.started_at - c.at) * 1000 AS ms,
		               extract(epoch FROM ti.started_at - r.queued_at) * 1000 AS from_start
		        FROM committed c JOIN orchestrator.dag_run r USING (run_id)
		        JOIN orchestrator.task_instance ti USING (run_id)
		        WHERE r.run_id > $first)
		      SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' ms (p95 ' ||
		             round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' ms; from the trigger_dag call''s start ' ||
		             round(percentile_cont(0.5) WITHIN GROUP (ORDER BY from_start)::numeric, 1) || ' ms)' FROM l;"
	} | orch_as_cluster_user psql -X -q -At -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres postgres | tail -n 1
}
none=$(latency)
echo "hop $hop ms; trigger->start $none" >&2

# --- 1,000 independent tasks
q "SELECT orchestrator.create_dag('fan');
   SELECT orchestrator.add_task('fan', 't' || i, orchestrator.sql('SELECT 1')) FROM generate_series(1, 1000) i" >/dev/null
run=$(q "SELECT orchestrator.trigger_dag('fan')")
wait_run "$run"
fan=$(q "SELECT round(extract(epoch FROM finished_at - queued_at)::numeric, 2) FROM orchestrator.dag_run WHERE run_id = $run")

# --- ten stages of 100, joined
q "SELECT orchestrator.create_dag('stages');
   SELECT orchestrator.add_task('stages', 'j0', orchestrator.sql('SELECT 1'));
   DO \$\$ BEGIN
     FOR k IN 1..10 LOOP
       PERFORM orchestrator.add_task('stages', format('s%s_%s', k, i), orchestrator.sql('SELECT 1'),
                                     upstream => ARRAY['j' || (k - 1)])
       FROM generate_series(1, 100) i;
       PERFORM orchestrator.add_task('stages', 'j' || k, orchestrator.sql('SELECT 1'),
                                     upstream => ARRAY(SELECT format('s%s_%s', k, i) FROM generate_series(1, 100) i));
     END LOOP;
   END \$\$" >/dev/null
run=$(q "SELECT orchestrator.trigger_dag('stages')")
wait_run "$run"
stages=$(q "SELECT round(extract(epoch FROM finished_at - queued_at)::numeric, 2) FROM orchestrator.dag_run WHERE run_id = $run")

# --- draining 10,000 tasks over 100 runs
q "SELECT orchestrator.create_dag('drain', max_active_runs => 100, max_active_tasks => 10000);
   SELECT orchestrator.add_task('drain', 't' || i, orchestrator.sql('SELECT 1')) FROM generate_series(1, 100) i" >/dev/null
first=$(q "SELECT coalesce(max(run_id), 0) FROM orchestrator.dag_run")
q "BEGIN; SELECT orchestrator.trigger_dag('drain', logical_date => now() - i * interval '1 hour')
   FROM generate_series(1, 100) i; COMMIT" >/dev/null
for r in $(q "SELECT run_id FROM orchestrator.dag_run WHERE run_id > $first"); do wait_run "$r"; done
drain=$(q "SELECT round(count(*) / extract(epoch FROM max(ti.finished_at) - min(r.queued_at)))
           FROM orchestrator.dag_run r JOIN orchestrator.task_instance ti USING (run_id)
           WHERE r.run_id > $first")

# --- many DAGs defined, none due yet: 1,000 fire at 12:30 every day and
# the rest once a year, all from a start date a year ahead
start=$(q "SELECT date_trunc('day', now() + interval '1 year')")
q "DO \$\$ BEGIN
     FOR i IN 1..$dags LOOP
       PERFORM orchestrator.create_dag('d' || i,
                 CASE WHEN i <= 1000 THEN '30 12 * * *' ELSE '0 0 1 1 *' END,
                 start_date => '$start', timezone => 'UTC');
       PERFORM orchestrator.add_task('d' || i, 't', orchestrator.sql('SELECT 1'));
     END LOOP;
   END \$\$" >/dev/null
sleep 2
many=$(latency)
echo "fan $fan s; stages $stages s; drain $drain tasks/s; with $dags DAGs: trigger->start $many" >&2

# the scheduler's passes, from its DEBUG1 lines; its CPU time from /proc
sched_pid=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'orchestrator scheduler'")
cpu() { awk '{print $14 + $15}' "/proc/$sched_pid/stat"; }
tick=$(getconf CLK_TCK)
passes() { grep -o 'pass took [0-9.]* ms, [0-9]* DAGs due' "$work/server.log" || true; }
# a pass with nothing due: wake the scheduler with a trigger_dag (a reload
# would make it look at every DAG again)
sleep 2
before=$(passes | wc -l)
q "SELECT orchestrator.trigger_dag('probe', logical_date => now() - interval '1 year')" >/dev/null
sleep 2
# (awk reads to the end: an early exit would kill the pipe's writer, and
# pipefail the script)
idle_pass=$(passes | tail -n +$((before + 1)) | awk '$5 == 0 && !p {print $3; p = 1}')
cpu0=$(cpu)
sleep 60
idle_cpu=$(( ($(cpu) - cpu0) * 1000 / tick ))
# the minute the 1,000 come due (on the scheduler's test clock), on three
# days in a row: the first day's pass also grows the run tables from the
# bench's few hundred runs (ANALYZEs, plans made again), and this 2-core
# machine's figures vary by a third from one pass to the next
due_passes=""
for day in 1 2 3; do
	before=$(passes | wc -l)
	q "ALTER SYSTEM SET orchestrator.test_clock = '$(q "SELECT ('$start'::timestamptz + interval '$day day 12 hours 31 minutes')")'" >/dev/null
	q "SELECT pg_reload_conf()" >/dev/null
	for _ in $(seq 120); do
		[ "$(q "SELECT count(*) FROM orchestrator.dag_run WHERE dag_id ~ '^d[0-9]+$' AND state = 'success'")" -ge $((day * 1000)) ] && break
		sleep 1
	done
	sleep 2
	due_passes="$due_passes $(passes | tail -n +$((before + 1)) | awk '$5 >= 1000 && !p {print $3; p = 1}')"
done
# the median of the three, and all three in order
due_pass="$(echo $due_passes | tr ' ' '\n' | sort -n | sed -n 2p) ms (days 1-3: $(echo $due_passes | sed 's/ /, /g') ms)"
q "ALTER SYSTEM RESET orchestrator.test_clock" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null

cat <<EOF

| case | orchestrator | published, for comparison |
| --- | ---: | --- |
| chain of 100 tasks, time per hop | $hop ms | Airflow: seconds between dependent tasks |
| trigger_dag commit to the task's start, median (p95), no other DAG | $none | graphile-worker 4 ms; Hatchet < 25 ms |
| the same with $dags DAGs defined, none due | $many | before 0.2: 47,000 ms |
| 1,000 independent tasks, trigger to run end | $fan s | before 0.2: 4.1 s |
| fan-out/fan-in, 10 stages of 100, trigger to run end | $stages s | |
| draining 10,000 tasks over 100 runs | $drain tasks/s | |
| a scheduler pass, $dags DAGs defined, none due | ${idle_pass:-?} ms | |
| a scheduler pass when 1,000 of them are due, median of 3 days | ${due_pass:-?} | |
| the idle scheduler's CPU time over 60 s | ${idle_cpu} ms | |
EOF
