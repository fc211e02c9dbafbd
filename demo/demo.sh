#!/usr/bin/env bash
# make demo: installs what is missing, builds and installs the extension,
# starts a throwaway cluster with the library preloaded, defines the course
# pipeline (examples/yellow_taxi.sql) and shows what it will do, and runs a
# small SQL pipeline through the scheduler.  The cluster keeps running for
# you to look around; make demo-stop stops it.
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
# its download, unzip and load tasks cannot run yet: paused in the same
# transaction that defines it, so that no run starts
sed "s/^COMMIT;/SELECT orchestrator.pause_dag('yellow_taxi');\nCOMMIT;/" examples/yellow_taxi.sql |
	psql_demo >/dev/null

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

echo
echo "== A pipeline of SQL tasks, run by the scheduler: trips -> daily summary -> check"
psql_demo <<'SQL'
\pset footer off
CREATE TABLE trips AS
SELECT timestamptz '2021-01-01' + (i * interval '7 minutes') AS pickup,
       round((1 + (i * 7919) % 300 / 10.0)::numeric, 2) AS fare
  FROM generate_series(1, 20000) i;
SELECT orchestrator.create_dag('trips_summary', description => 'daily trip counts and fares');
SELECT orchestrator.add_task('trips_summary', 'summarize', orchestrator.sql($$
    CREATE TABLE IF NOT EXISTS trips_daily (day date PRIMARY KEY, trips bigint, fares numeric);
    DELETE FROM trips_daily;
    INSERT INTO trips_daily SELECT pickup::date, count(*), sum(fare) FROM trips GROUP BY 1$$), retries => 2);
SELECT orchestrator.add_task('trips_summary', 'check', orchestrator.sql($q$
    DO $c$ BEGIN
      IF (SELECT sum(trips) FROM trips_daily) <> (SELECT count(*) FROM trips) THEN
        RAISE EXCEPTION 'summary does not add up';
      END IF;
    END $c$ $q$), upstream => '{summarize}');
SELECT orchestrator.trigger_dag('trips_summary') AS run_id \gset
SELECT orchestrator.wait_run(:run_id, '5 minutes') AS run_state;
SELECT run_id, dag_id, run_type, state, finished_at - started_at AS took FROM orchestrator.dag_runs;
SELECT task_id, state, try_number, duration, worker_pid FROM orchestrator.task_instances ORDER BY started_at;
SELECT * FROM trips_daily ORDER BY day LIMIT 5;
SQL

cat <<MSG

The yellow-taxi DAG is defined and paused: its download, unzip and load
operators run once the data stages land.  The SQL pipeline above ran
through the scheduler and its workers.

Look around:   psql -h $dir -p $port -U postgres postgres
Stop it:       make demo-stop
MSG
