#!/usr/bin/env bash
# make test: installs what is missing, builds and installs the extension,
# starts a throwaway cluster with the library preloaded, runs the pg_regress
# suites against it and the TAP suites (which start clusters of their own),
# always stops what it started, and fails if any test fails.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh

orch_install_deps || exit 1
orch_build_install || exit 1

tmp=$(mktemp -d /tmp/orchestrator-test.XXXXXX)
chmod 755 "$tmp"
cleanup() {
	orch_cluster_stop "$tmp/regress"
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
failed=0

# the pure decisions (src/rules.c), without a server: tens of thousands of
# checks, counted here as one test
if make -s unit; then
	passed=$((passed + 1))
else
	failed=$((failed + 1))
fi

# pg_regress suites
port=$(orch_free_port) || exit 1
# the definition suites run with the scheduler idle, so that no run starts
# under them; the TAP suites run DAGs on clusters of their own
orch_cluster_start "$tmp/regress" "$port" "orchestrator.database = 'contrib_regression'" \
	"orchestrator.enabled = off" || exit 1
make -s installcheck PGHOST="$tmp/regress" PGPORT="$port" PGUSER=postgres 2>&1 | tee "$tmp/regress.out"
n=$(grep -cE '^(test| ) .* \.\.\. +ok' "$tmp/regress.out")
passed=$((passed + n))
n=$(grep -cE '\.\.\. +FAILED' "$tmp/regress.out")
failed=$((failed + n))
if [ "$n" -gt 0 ] && [ -f regression.diffs ]; then
	cat regression.diffs
fi
orch_cluster_stop "$tmp/regress"

# TAP suites, run as the cluster user in a directory it owns
if ls test/t/*.pl >/dev/null 2>&1; then
	mkdir -p "$tmp/tap"
	cp -r test/t test/http_server.pl test/gen_taxi.pl examples "$tmp/tap/"
	[ "$(id -u)" -eq 0 ] && chown -R postgres: "$tmp/tap"
	perl_lib="$(pg_config --pkglibdir)/pgxs/src/test/perl"
	(cd "$tmp/tap" && orch_as_cluster_user env TESTDIR="$tmp/tap" \
		PATH="$(orch_bindir):$PATH" PERL5LIB="$perl_lib" ORCH_SRC="$top" \
		PG_REGRESS="$(pg_config --pkglibdir)/pgxs/src/test/regress/pg_regress" \
		prove -v --ext=.pl t/) 2>&1 | tee "$tmp/tap.out"
	if grep -q '^Result: PASS' "$tmp/tap.out"; then
		n=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' "$tmp/tap.out")
		passed=$((passed + ${n:-0}))
	else
		n=$(sed -n 's/.*Failed \([0-9]*\)\/[0-9]* subtests.*/\1/p' "$tmp/tap.out" | awk '{s += $1} END {print s + 0}')
		total=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' "$tmp/tap.out")
		# a script that died counts as one failure
		[ -z "$n" ] || [ "$n" -eq 0 ] && n=1
		failed=$((failed + n))
		passed=$((passed + ${total:-0} - n))
		[ "$passed" -lt 0 ] && passed=0
		for f in "$tmp"/tap/tmp_check/log/*.log; do
			[ -f "$f" ] && { echo "==== $f"; tail -n 50 "$f"; }
		done
	fi
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
