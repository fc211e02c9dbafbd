# Shared by the test runner (make test) and the demo (make demo): install
# what is missing on Debian 12, build and install the extension, and start
# or stop a throwaway cluster as an ordinary user.  Source it; it defines
# functions only.

ORCH_PACKAGES=(postgresql-15 postgresql-server-dev-15 libcurl4-openssl-dev
	zlib1g-dev libipc-run-perl make gcc)

# Runs a command as root (directly, or through sudo).
orch_as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		echo "error: need root (or sudo) to run: $*" >&2
		return 1
	fi
}

# Installs the Debian packages that are missing.
orch_install_deps() {
	local missing=() p
	for p in "${ORCH_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "installing missing packages: ${missing[*]}"
	# the tests and the demo run their own clusters: Debian's default one,
	# which postgresql-15 would otherwise create and start, is not wanted
	if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
		orch_as_root mkdir -p /etc/postgresql-common
		echo 'create_main_cluster = false' |
			orch_as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
	fi
	orch_as_root apt-get update -qq
	orch_as_root env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

orch_build_install() {
	make -s -j2 && orch_as_root make -s install
}

orch_bindir() {
	pg_config --bindir
}

# Runs a command as the user that owns the clusters: "postgres" when we are
# root (initdb and postgres refuse to run as root), else ourselves.
orch_as_cluster_user() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# A TCP port on 127.0.0.1 that nothing listens on.
orch_free_port() {
	local port
	for port in $(seq "${1:-55432}" "$((${1:-55432} + 200))"); do
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return 0
		fi
	done
	echo "error: no free port" >&2
	return 1
}

# orch_cluster_start DIR PORT [CONF_LINE...]: initdb in DIR/data and start
# a server on 127.0.0.1:PORT and a socket in DIR, with the library
# preloaded.  Logs go to DIR/server.log.
orch_cluster_start() {
	local dir=$1 port=$2 bindir
	shift 2
	bindir=$(orch_bindir)
	mkdir -p "$dir"
	[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
	orch_as_cluster_user "$bindir/initdb" -D "$dir/data" -U postgres -A trust \
		-E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 || {
		cat "$dir/initdb.log" >&2
		return 1
	}
	{
		echo "port = $port"
		echo "listen_addresses = '127.0.0.1'"
		echo "unix_socket_directories = '$dir'"
		echo "shared_preload_libraries = 'orchestrator'"
		echo "fsync = off"
		local line
		for line in "$@"; do echo "$line"; done
	} | orch_as_cluster_user tee -a "$dir/data/postgresql.conf" >/dev/null
	orch_as_cluster_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" \
		-w -t 120 start >/dev/null || {
		cat "$dir/server.log" >&2
		return 1
	}
}

# orch_cluster_stop DIR: stops the server in DIR/data, if it runs.
orch_cluster_stop() {
	local dir=$1 bindir
	bindir=$(orch_bindir)
	[ -f "$dir/data/postmaster.pid" ] || return 0
	orch_as_cluster_user "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 ||
		orch_as_cluster_user "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 ||
		true
}
