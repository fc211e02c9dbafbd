#!/usr/bin/env bash
# make demo: installs what is missing, builds and installs the extension,
# starts a throwaway cluster with the library preloaded, defines the course
# pipeline (examples/yellow_taxi.sql) and shows what it will do.  The
# cluster keeps running for you to look around; make demo-stop stops it.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh

dir=/tmp/orchestrator-demo
orch_install_deps
orch_build_install

# a demo from before is replaced
if [ -d "$dir" ]; then
	orch_cluster_stop "$dir"
	rm -rf "$dir"
fi
port=$(orch_free_port 55433)
orch_cluster_start "$dir" "$port" "orchestrator.database = 'postgres'"
echo "$port" >"$dir/port"

psql_demo() {
	psql -X -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"
}

echo
echo "== CREATE EXTENSION orchestrator, then examples/yellow_taxi.sql"
psql_demo -c 'CREATE EXTENSION orchestrator'
psql_demo -f examples/yellow_taxi.sql >/dev/null

psql_demo <<'SQL'
\pset footer off
\echo
\echo == SELECT * FROM orchestrator.dags
SELECT dag_id, owner, schedule, timezone, start_date, end_date, catchup,
	   max_active_runs, task_count
  FROM orchestrator.dags;
\echo == SELECT * FROM orchestrator.tasks
SELECT task_id, operator, upstream, downstream, retries, trigger_rule
  FROM orchestrator.tasks ORDER BY position;
\echo == The runs the schedule makes (catchup from start_date to end_date): their
\echo == logical dates, the URL each downloads and the table each loads
SELECT t AS logical_date,
	   orchestrator.render(dl.spec->>'url', t, d.params) AS url,
	   orchestrator.render_table(ld.spec->>'target', t, d.params) AS target_table
  FROM orchestrator.dag d
  JOIN orchestrator.task dl ON dl.dag_id = d.dag_id AND dl.task_id = 'download'
  JOIN orchestrator.task ld ON ld.dag_id = d.dag_id AND ld.task_id = 'ingest'
 CROSS JOIN LATERAL orchestrator.cron_next(d.schedule, d.start_date - interval '1 second', d.timezone, 12) t
 WHERE d.dag_id = 'yellow_taxi' AND t <= d.end_date;
SQL

cat <<MSG

The DAG is defined.  Running it (the scheduler and the data tasks) comes
with the next issues; today the demo stops at the definitions.

Look around:   psql -h $dir -p $port -U postgres postgres
Stop it:       make demo-stop
MSG
