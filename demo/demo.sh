#!/usr/bin/env bash
# make demo: the course pipeline, end to end.  Installs what is missing,
# builds and installs the extension, starts a throwaway cluster with the
# library preloaded, generates three months of yellow-taxi trips (full
# size by default; DEMO_ROWS=N for N rows a month) and serves them on
# 127.0.0.1, defines examples/yellow_taxi.sql, shows progress while its
# three runs catch up, and prints the runs, the task instances and the
# tables.  The cluster and the server keep running for you to look
# around; make demo-stop stops them.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh

dir=/tmp/orchestrator-demo
data=/tmp/orchestrator-demo-data
months="2021-01 2021-02 2021-03"

orch_install_deps
orch_build_install

# a demo from before is replaced
bash demo/stop.sh >/dev/null
port=$(orch_free_port 55433)
orch_cluster_start "$dir" "$port" "orchestrator.database = 'postgres'"
echo "$port" >"$dir/port"

psql_demo() {
	psql -X -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"
}

# the data: generated once, kept for the next demo
mkdir -p "$data"
for m in $months; do
	f="$data/yellow_tripdata_$m.csv.gz"
	rows_file="$data/yellow_tripdata_$m.rows"
	want="${DEMO_ROWS:-full}"
	if [ ! -s "$f" ] || [ "$(cat "$rows_file" 2>/dev/null)" != "$want" ]; then
		echo "generating $(basename "$f") (${DEMO_ROWS:-full-size} rows)"
		perl test/gen_taxi.pl --month "$m" ${DEMO_ROWS:+--rows "$DEMO_ROWS"} | gzip -6 >"$f.tmp"
		mv "$f.tmp" "$f"
		echo "$want" >"$rows_file"
	fi
done
rm -f "$data/port"
perl test/http_server.pl --root "$data" --port-file "$data/port" >"$dir/http.log" 2>&1 &
echo $! >"$dir/http.pid"
for _ in $(seq 50); do [ -s "$data/port" ] && break; sleep 0.1; done
http_port=$(cat "$data/port")
echo "serving $data on http://127.0.0.1:$http_port/"
ls -l "$data"/*.csv.gz | awk '{print "  " $NF ": " $5 " bytes"}'

echo
echo "== CREATE EXTENSION orchestrator; then examples/yellow_taxi.sql"
psql_demo -c 'CREATE EXTENSION orchestrator'
sed "s|http://127.0.0.1:8000|http://127.0.0.1:$http_port|" examples/yellow_taxi.sql | psql_demo >/dev/null
psql_demo <<'SQL'
\pset footer off
SELECT dag_id, schedule, start_date, end_date, catchup, max_active_runs, task_count FROM orchestrator.dags;
SELECT task_id, operator, upstream, retries FROM orchestrator.tasks ORDER BY position;
SQL

echo "== the scheduler catches up: one run per month (SELECT * FROM orchestrator.progress)"
start=$(date +%s)
while :; do
	line=$(psql_demo -At -c "
		SELECT coalesce((SELECT string_agg(format('%s %s: %s rows, %s MB read, %s rows/s',
		                  to_char(r.logical_date, 'YYYY-MM'), p.task_id, p.rows_loaded,
		                  round(p.bytes_read / 1e6, 1), coalesce(p.rows_per_second, 0)), '; ')
		                 FROM orchestrator.progress p JOIN orchestrator.dag_runs r USING (run_id)), 'between tasks')
		       || '  |  runs: ' || coalesce((SELECT string_agg(state || ' ' || n, ', ')
		            FROM (SELECT state, count(*) n FROM orchestrator.dag_runs GROUP BY 1 ORDER BY 1) s), 'none yet')")
	echo "  [$(($(date +%s) - start))s] $line"
	done_runs=$(psql_demo -At -c "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'yellow_taxi' AND state IN ('success', 'failed')")
	[ "$done_runs" -ge 3 ] && break
	if [ $(($(date +%s) - start)) -gt 1800 ]; then
		echo "the runs did not finish in 30 minutes" >&2
		exit 1
	fi
	sleep 2
done

# the summary DAG runs on each loaded month's asset
for _ in $(seq 1 60); do
	[ "$(psql_demo -At -c "SELECT (SELECT count(*) FROM orchestrator.asset_events WHERE cardinality(triggered_runs) > 0)
	                            - (SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'yellow_taxi_monthly' AND state IN ('queued', 'running'))")" = 3 ] && break
	sleep 1
done

psql_demo <<'SQL'
\pset footer off
\echo
\echo == SELECT * FROM orchestrator.dag_runs
SELECT run_id, dag_id, run_type, logical_date, data_interval_end, state,
       finished_at - started_at AS took
  FROM orchestrator.dag_runs ORDER BY logical_date;
\echo == SELECT * FROM orchestrator.task_instances
SELECT run_id, task_id, state, try_number, duration, rows_loaded
  FROM orchestrator.task_instances ORDER BY run_id, started_at;
\echo == the artifacts (downloads and their unzipped contents, as large objects)
SELECT run_id, task_id, pg_size_pretty(size) AS size, left(sha256, 16) AS sha256, http_status
  FROM orchestrator.artifacts ORDER BY run_id, task_id;
\echo == the tables, created from the data
SELECT c.relname AS "table", pg_size_pretty(pg_total_relation_size(c.oid)) AS size
  FROM pg_class c WHERE c.relname LIKE 'yellow_taxi_2021_%' AND c.relkind = 'r' ORDER BY 1;
SQL
for t in yellow_taxi_2021_01 yellow_taxi_2021_02 yellow_taxi_2021_03; do
	echo "  $t: $(psql_demo -At -c "SELECT count(*) FROM $t") rows"
done
psql_demo <<'SQL'
\pset footer off
\echo == the assets, and the summary built on them (DAG yellow_taxi_monthly)
SELECT name, last_event_at, events, consumers FROM orchestrator.assets ORDER BY name;
SELECT * FROM yellow_taxi_monthly ORDER BY month;
SQL
echo
echo "== SELECT * FROM orchestrator.grid('yellow_taxi')"
psql_demo -At -c "SELECT * FROM orchestrator.grid('yellow_taxi')" | sed 's/^/  /'
echo
last_run=$(psql_demo -At -c "SELECT max(run_id) FROM orchestrator.dag_runs WHERE dag_id = 'yellow_taxi'")
echo "== SELECT orchestrator.dag_graph('yellow_taxi', run_id => $last_run)   -- Mermaid; 'dot' for Graphviz"
psql_demo -At -c "SELECT orchestrator.dag_graph('yellow_taxi', run_id => $last_run)" | sed 's/^/  /'
failed=$(psql_demo -At -c "SELECT count(*) FROM orchestrator.dag_runs WHERE state <> 'success'")

cat <<MSG

Look around:   psql -h $dir -p $port -U postgres postgres
               (SELECT * FROM orchestrator.dag_runs; \d yellow_taxi_2021_01; ...)
Stop it:       make demo-stop
MSG
[ "$failed" -eq 0 ]
