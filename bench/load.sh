#!/usr/bin/env bash
# bench/load.sh: one month of yellow-taxi trips (1,369,765 rows, the real
# January 2021 count; BENCH_ROWS=N to change) loaded six ways, side by side:
#
#   COPY (local CSV)         server-side COPY of the uncompressed file: the floor
#   COPY PROGRAM gzip -dc    server-side COPY of the .gz through gzip
#   copy_into(url)           this extension: http -> gunzip -> COPY, streamed
#   fetch, gunzip, copy      this extension: three tasks through artifacts
#   pandas to_sql            the course's script: read_csv + to_sql, 100k a chunk
#
# then copy_into(url) with on_error => 'skip' against 'stop' (the default):
# on the same clean file, and on the file with 1% bad rows (gen_taxi.pl
# --bad), each the median of three runs, with the ratios to 'stop'.
#
# and prints seconds, rows per second and peak memory (resident set) of the
# process that did the work.  The task worker's peak is also measured for a
# ten times smaller file, to show that memory does not grow with the data.
# Installs what is missing (pandas, SQLAlchemy and psycopg2 from Debian).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh

rows=${BENCH_ROWS:-1369765}
small=$((rows / 10))
work=/tmp/orchestrator-bench
data=$work/www

orch_install_deps
for p in python3-pandas python3-sqlalchemy python3-psycopg2; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing_py="${missing_py:-} $p"
done
if [ -n "${missing_py:-}" ]; then
	echo "installing the peers:$missing_py"
	orch_as_root apt-get update -qq
	orch_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing_py >/dev/null
fi
orch_build_install

cleanup() {
	[ -f "$work/http.pid" ] && kill "$(cat "$work/http.pid")" 2>/dev/null || true
	orch_cluster_stop "$work"
}
trap cleanup EXIT
orch_cluster_stop "$work" 2>/dev/null || true
rm -rf "$work/data"
mkdir -p "$data"
chmod 755 "$work" "$data"

echo "generating $rows and $small rows"
perl test/gen_taxi.pl --month 2021-01 --rows "$rows" >"$data/jan.csv"
gzip -6 -c "$data/jan.csv" >"$data/jan.csv.gz"
perl test/gen_taxi.pl --month 2021-01 --rows "$small" | gzip -6 >"$data/small.csv.gz"
bad=$((rows / 100))
perl test/gen_taxi.pl --month 2021-01 --rows "$rows" --bad "$bad" | gzip -6 >"$data/jan_bad.csv.gz"
chmod 644 "$data"/*

port=$(orch_free_port 55440)
orch_cluster_start "$work" "$port" "orchestrator.database = 'postgres'"
rm -f "$data/port"
perl test/http_server.pl --root "$data" --port-file "$data/port" >"$work/http.log" 2>&1 &
echo $! >"$work/http.pid"
for _ in $(seq 50); do [ -s "$data/port" ] && break; sleep 0.1; done
base="http://127.0.0.1:$(cat "$data/port")"

q() { psql -X -q -At -h "$work" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
q -c "CREATE EXTENSION orchestrator"

columns='"VendorID" bigint, tpep_pickup_datetime timestamp, tpep_dropoff_datetime timestamp,
	passenger_count bigint, trip_distance float8, "RatecodeID" bigint, store_and_fwd_flag text,
	"PULocationID" bigint, "DOLocationID" bigint, payment_type bigint, fare_amount float8,
	extra float8, mta_tax float8, tip_amount float8, tolls_amount float8,
	improvement_surcharge float8, total_amount float8, congestion_surcharge float8'

# peak resident set (kB) of a process, sampled until it exits or $2 is done
peak_of() {
	local pid=$1 peak=0 v
	while kill -0 "$pid" 2>/dev/null; do
		v=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
		[ "${v:-0}" -gt "$peak" ] && peak=$v
		sleep 0.1
	done
	echo "$peak"
}

results=()
record() {
	local name=$1 secs=$2 peak_kb=$3
	results+=("$(awk -v n="$name" -v s="$secs" -v r="$rows" -v p="$peak_kb" \
		'BEGIN { printf "%-26s %8.2f s %12.0f rows/s %8d MB", n, s, r / s, p / 1024 }')")
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { print b - a }'; }

# a server-side COPY, timed, with its backend's peak memory
copy_bench() {
	local name=$1 sql=$2
	q -c "DROP TABLE IF EXISTS bench_t; CREATE TABLE bench_t ($columns)"
	local pidfile=$work/copy.pid
	(q -c "SELECT pg_backend_pid()" -c "$sql" >"$pidfile") &
	local shell=$!
	local pid=""
	for _ in $(seq 100); do pid=$(head -1 "$pidfile" 2>/dev/null || true); [ -n "$pid" ] && break; sleep 0.05; done
	local t0=$(now)
	local peak=$(peak_of "$pid")
	wait "$shell"
	local t1=$(now)
	[ "$(q -c "SELECT count(*) FROM bench_t")" = "$rows" ] || { echo "$name: wrong row count" >&2; exit 1; }
	record "$name" "$(elapsed "$t0" "$t1")" "$peak"
}

# a DAG run, timed from its tasks' start to end, with its worker's peak
# memory (left in last_peak)
last_peak=0
dag_bench() {
	local name=$1 dag=$2 file=$3 expect=$4
	q -c "DROP TABLE IF EXISTS bench_t; CREATE TABLE bench_t ($columns)"
	local run=$(q -c "SELECT orchestrator.trigger_dag('$dag', jsonb_build_object('file', '$file'))")
	local pid=""
	last_peak=0
	for _ in $(seq 2000); do
		pid=$(q -c "SELECT worker_pid FROM orchestrator.task_instance WHERE run_id = $run AND state = 'running'")
		[ -n "$pid" ] && break
		[ "$(q -c "SELECT state FROM orchestrator.dag_runs WHERE run_id = $run")" = success ] && break
		sleep 0.01
	done
	[ -n "$pid" ] && last_peak=$(peak_of "$pid")
	if [ "$(q -c "SELECT orchestrator.wait_run($run, '30 minutes')")" != success ]; then
		echo "$name failed:" >&2
		q -c "SELECT task_id, state, error FROM orchestrator.task_instances WHERE run_id = $run" >&2
		exit 1
	fi
	[ "$(q -c "SELECT count(*) FROM bench_t")" = "$expect" ] || { echo "$name: wrong row count" >&2; exit 1; }
	local secs=$(q -c "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM orchestrator.task_instances WHERE run_id = $run")
	if [ "$expect" = "$rows" ]; then record "$name" "$secs" "$last_peak"; fi
}

q <<SQL >/dev/null
SELECT orchestrator.create_dag('bench_stream', params => '{"base": "$base"}');
SELECT orchestrator.add_task('bench_stream', 'load', orchestrator.copy_into('bench_t', url => '{{ params.base }}/files/{{ params.file }}'));
SELECT orchestrator.create_dag('bench_tasks', params => '{"base": "$base"}');
SELECT orchestrator.add_task('bench_tasks', 'download', orchestrator.http_fetch('{{ params.base }}/files/{{ params.file }}'));
SELECT orchestrator.add_task('bench_tasks', 'unzip', orchestrator.gunzip('download'));
SELECT orchestrator.add_task('bench_tasks', 'load', orchestrator.copy_into('bench_t', input => 'unzip'));
SELECT orchestrator.create_dag('bench_skip', params => '{"base": "$base"}');
SELECT orchestrator.add_task('bench_skip', 'load', orchestrator.copy_into('bench_t', url => '{{ params.base }}/files/{{ params.file }}', on_error => 'skip'));
SQL

echo "loading"
copy_bench "COPY (local CSV)" "COPY bench_t FROM '$data/jan.csv' (FORMAT csv, HEADER)"
copy_bench "COPY PROGRAM gzip -dc" "COPY bench_t FROM PROGRAM 'gzip -dc $data/jan.csv.gz' (FORMAT csv, HEADER)"
dag_bench "copy_into(url)" bench_stream jan.csv.gz "$rows"
big_peak=$last_peak
dag_bench "fetch, gunzip, copy" bench_tasks jan.csv.gz "$rows"
dag_bench "copy_into(url), small" bench_stream small.csv.gz "$small"
small_peak=$last_peak

# on_error => 'skip' against 'stop': the median of three runs each, into a
# table that takes only January's trips (NOT NULL and CHECK on the pickup),
# so that every bad row is one
median3() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
skip_secs() {
	local dag=$1 file=$2 expect=$3 t=()
	for _ in 1 2 3; do
		q -c "DROP TABLE IF EXISTS bench_t; CREATE TABLE bench_t ($columns,
			CHECK (tpep_pickup_datetime >= '2021-01-01' AND tpep_pickup_datetime < '2021-02-01'))"
		q -c "ALTER TABLE bench_t ALTER tpep_pickup_datetime SET NOT NULL"
		local run=$(q -c "SELECT orchestrator.trigger_dag('$dag', jsonb_build_object('file', '$file'))")
		[ "$(q -c "SELECT orchestrator.wait_run($run, '30 minutes')")" = success ] || { echo "$dag $file failed" >&2; exit 1; }
		[ "$(q -c "SELECT count(*) FROM bench_t")" = "$expect" ] || { echo "$dag $file: wrong row count" >&2; exit 1; }
		t+=("$(q -c "SELECT extract(epoch FROM finished_at - started_at) FROM orchestrator.task_instances WHERE run_id = $run")")
	done
	median3 "${t[@]}"
}
echo "on_error: stop and skip"
stop_clean=$(skip_secs bench_stream jan.csv.gz "$rows")
skip_clean=$(skip_secs bench_skip jan.csv.gz "$rows")
skip_bad=$(skip_secs bench_skip jan_bad.csv.gz "$rows")
rejected=$(q -c "SELECT rows_rejected FROM orchestrator.task_instances ti JOIN orchestrator.dag_runs r USING (run_id) WHERE r.dag_id = 'bench_skip' ORDER BY run_id DESC LIMIT 1")

# the course's ingest script: pandas read_csv in chunks, then to_sql
q -c "DROP TABLE IF EXISTS bench_t"
cat >"$work/pandas_ingest.py" <<'PY'
import resource, sys, time
import pandas as pd
from sqlalchemy import create_engine
host, port, path = sys.argv[1], sys.argv[2], sys.argv[3]
engine = create_engine(f"postgresql://postgres@/postgres?host={host}&port={port}")
t0 = time.time()
for df in pd.read_csv(path, iterator=True, chunksize=100000):
    df.tpep_pickup_datetime = pd.to_datetime(df.tpep_pickup_datetime)
    df.tpep_dropoff_datetime = pd.to_datetime(df.tpep_dropoff_datetime)
    df.to_sql(name="bench_t", con=engine, if_exists="append")
print(time.time() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
PY
# Debian's python, which has the packages above (not another one on PATH)
read -r secs peak < <(/usr/bin/python3 "$work/pandas_ingest.py" "$work" "$port" "$data/jan.csv.gz")
[ "$(q -c "SELECT count(*) FROM bench_t")" = "$rows" ] || { echo "pandas: wrong row count" >&2; exit 1; }
record "pandas read_csv + to_sql" "$secs" "$peak"

echo
echo "$rows rows, $(du -h "$data/jan.csv" | cut -f1) of CSV, $(du -h "$data/jan.csv.gz" | cut -f1) gzipped; PostgreSQL $(q -c 'SHOW server_version'), fsync off; $(nproc) cores"
printf '%-26s %10s %19s %11s\n' "method" "time" "rate" "peak RSS"
printf '%s\n' "${results[@]}"
echo
echo "task worker's peak RSS, copy_into(url): $((small_peak / 1024)) MB for $small rows, $((big_peak / 1024)) MB for $rows rows"
echo
echo "copy_into(url), median of 3 runs:"
awk -v a="$stop_clean" -v b="$skip_clean" -v c="$skip_bad" -v n="$bad" -v r="$rejected" 'BEGIN {
	printf "  on_error => stop, clean file         %7.2f s\n", a
	printf "  on_error => skip, clean file         %7.2f s   %.2fx stop (the bound: 1.10x)\n", b, b / a
	printf "  on_error => skip, 1%% bad rows        %7.2f s   %.2fx stop (the bound: 2x); %d bad rows, %d set aside\n", c, c / a, n, r
}'
