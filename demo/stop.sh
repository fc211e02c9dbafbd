#!/usr/bin/env bash
# make demo-stop: stops the demo's cluster and its HTTP server, and removes
# the cluster (the generated data stays in /tmp/orchestrator-demo-data for
# the next demo).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/test/lib.sh"
dir=/tmp/orchestrator-demo
if [ -d "$dir" ]; then
	if [ -f "$dir/http.pid" ]; then
		kill "$(cat "$dir/http.pid")" 2>/dev/null || true
	fi
	orch_cluster_stop "$dir"
	rm -rf "$dir"
	echo "demo stopped"
else
	echo "no demo running"
fi
