#!/usr/bin/env bash
# make demo-stop: stops the demo's cluster and removes it.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/test/lib.sh"
dir=/tmp/orchestrator-demo
if [ -d "$dir" ]; then
	orch_cluster_stop "$dir"
	rm -rf "$dir"
	echo "demo stopped"
else
	echo "no demo running"
fi
