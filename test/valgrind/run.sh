#!/usr/bin/env bash
# test/valgrind/run.sh: runs the whole suite (make test) with every server
# process under valgrind's memcheck.  PostgreSQL from Debian is used as it
# is, through a private copy of its binaries in which "postgres" starts the
# real server under valgrind (initdb's bootstrap and single-user runs are
# left alone, to keep the run to an hour or so).  The extension is
# installed into that copy only.  At the end it prints every valgrind
# report that holds an error; it fails if there is one.
#
# A stock build has no USE_VALGRIND: a use of palloc'd memory after its
# context was reset is not seen, reads of uninitialised memory, overruns of
# malloc'd blocks (libcurl, zlib) and invalid frees are.
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/test/lib.sh"
orch_install_deps || exit 1
command -v valgrind >/dev/null || orch_as_root env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -qq --no-install-recommends valgrind || exit 1

prefix=${ORCH_VALGRIND_PREFIX:-/tmp/orchestrator-valgrind}
logs=$prefix/logs
lib=/usr/lib/postgresql/15
share=/usr/share/postgresql/15
bin=$prefix$lib/bin
if [ ! -x "$bin/postgres.real" ]; then
	rm -rf "$prefix"
	mkdir -p "$prefix$lib" "$prefix$share" "$prefix/usr/include" || exit 1
	cp -a "$lib/." "$prefix$lib/" && cp -a "$share/." "$prefix$share/" || exit 1
	ln -s /usr/include/postgresql "$prefix/usr/include/postgresql"
	mv "$bin/postgres" "$bin/postgres.real"
	cat >"$bin/postgres" <<WRAP
#!/bin/sh
real="\$(dirname "\$0")/postgres.real"
for a in "\$@"; do
	case "\$a" in
	--boot|--single|-V|--version|-C|--describe-config) exec "\$real" "\$@" ;;
	esac
done
exec valgrind --quiet --trace-children=no --leak-check=no --num-callers=30 \\
	--error-limit=no --suppressions="$top/test/valgrind/postgres.supp" \\
	--log-file="$logs/%p.log" "\$real" "\$@"
WRAP
	chmod 755 "$bin/postgres"
fi
rm -rf "$logs"
mkdir -p "$logs" && chmod 777 "$logs"

# the servers are ten to fifty times slower: let the waits of the TAP
# suites (PostgreSQL::Test::Utils) run long
PATH="$bin:$PATH" PG_TEST_TIMEOUT_DEFAULT=${PG_TEST_TIMEOUT_DEFAULT:-1800} \
	bash "$top/test/run.sh"
suite=$?

# with --quiet, valgrind writes a report only when it has an error
bad=$(find "$logs" -name '*.log' -size +0 | sort)
n=$(ls "$logs" | wc -l)
if [ -n "$bad" ]; then
	for f in $bad; do echo "==== $f"; cat "$f"; done
	echo "valgrind: $(echo "$bad" | wc -l) of $n server processes reported errors"
	exit 1
fi
echo "valgrind: $n server processes, no errors (suite exit code $suite)"
exit $suite
