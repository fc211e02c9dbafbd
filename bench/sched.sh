#!/usr/bin/env bash
# bench/sched.sh: what scheduling costs, on a throwaway server with the
# default settings (4 workers), side by side with published figures.
#
#   trigger_dag commit -> the task's started_at, median and p95 of N runs
#   (BENCH_TRIGGERS, default 20), with BENCH_DAGS DAGs defined (default
#   10,000, none due: yearly schedules), and the same with none defined.
#
# The rest of the fast-hops benchmark (hop time in a chain, fan-out,
# fan-in, draining 10,000 tasks) belongs with the worker that chains tasks
# and is not measured yet.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh

dags=${BENCH_DAGS:-10000}
triggers=${BENCH_TRIGGERS:-20}
work=/tmp/orchestrator-sched-bench

orch_install_deps
orch_build_install
cleanup() { orch_cluster_stop "$work"; }
trap cleanup EXIT
orch_cluster_stop "$work"
rm -rf "$work"
port=$(orch_free_port 56432)
orch_cluster_start "$work" "$port" "orchestrator.database = 'postgres'" >/dev/null
q() { orch_as_cluster_user psql -X -q -At -h "$work" -p "$port" -U postgres postgres -c "$1"; }

q "CREATE EXTENSION orchestrator" >/dev/null 2>&1
q "SELECT orchestrator.create_dag('probe');
   SELECT orchestrator.add_task('probe', 't', orchestrator.sql('SELECT 1'));" >/dev/null

# trigger -> start, in milliseconds: median and p95 of $triggers runs
latency() {
	local run
	for _ in $(seq "$triggers"); do
		run=$(q "SELECT orchestrator.trigger_dag('probe')")
		q "SELECT orchestrator.wait_run($run, '1 minute')" >/dev/null
	done
	q "WITH l AS (
	     SELECT extract(epoch FROM ti.started_at - r.queued_at) * 1000 AS ms
	     FROM orchestrator.dag_run r JOIN orchestrator.task_instance ti USING (run_id)
	     WHERE r.dag_id = 'probe' AND r.run_id > coalesce((SELECT max(run_id) FROM orchestrator.dag_run WHERE dag_id = 'probe') - $triggers, 0))
	   SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' | ' ||
	          round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 1) FROM l"
}

none=$(latency)
q "DO \$\$ BEGIN
     FOR i IN 1..$dags LOOP
       PERFORM orchestrator.create_dag('d' || i, '0 0 1 1 *', start_date => now());
       PERFORM orchestrator.add_task('d' || i, 't', orchestrator.sql('SELECT 1'));
     END LOOP;
   END \$\$" >/dev/null
sleep 2
many=$(latency)

echo
echo "| trigger_dag commit to the task's start (ms) | median | p95 |"
echo "| --- | ---: | ---: |"
echo "| no other DAG | $none |"
echo "| $dags DAGs defined, none due | $many |"
echo "| the same before 0.2 (issue report) | 47,000 | |"
echo "| graphile-worker, published | 4 | |"
echo "| Hatchet, promised | < 25 | |"
