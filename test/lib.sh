# Shared by test/run, test/demo and test/bench/run: packages, build, and
# running as the postgres user (PostgreSQL refuses to run as root).

PG_MAJOR=15
# ES_PG_BIN points at another PostgreSQL 15 installation's bin directory
# (e.g. a relocated copy of the Debian one); default: the system's.
PG_BIN=${ES_PG_BIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
export PATH="$PG_BIN:$PATH"

# Debian packages the build and the suites need.
ES_PACKAGES="postgresql-$PG_MAJOR postgresql-contrib postgresql-server-dev-$PG_MAJOR
             build-essential libipc-run-perl"

# Install what is missing (as root, from Debian's archive).
ensure_packages() {
	local missing=() p
	for p in $ES_PACKAGES; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	if [[ $EUID -ne 0 ]]; then
		echo "missing packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
		exit 1
	fi
	echo "== installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Build and install the extension into the system PostgreSQL.
build_and_install() {
	make -s PG_CONFIG="$PG_BIN/pg_config" >/dev/null
	if [[ $EUID -eq 0 ]]; then
		make -s PG_CONFIG="$PG_BIN/pg_config" install >/dev/null
	else
		sudo make -s PG_CONFIG="$PG_BIN/pg_config" install >/dev/null
	fi
}

# Run a command as the postgres user when we are root, else as ourselves.
as_pg() {
	if [[ $EUID -eq 0 ]]; then
		su postgres -s /bin/bash -c "export PATH='$PATH'; $*"
	else
		bash -c "$*"
	fi
}

# A scratch directory the postgres user may write.
pg_scratch() {
	local d
	d=$(mktemp -d "${TMPDIR:-/tmp}/event_store.XXXXXX")
	[[ $EUID -eq 0 ]] && chown postgres: "$d"
	echo "$d"
}

# Start a throwaway cluster in $1 on port $2 with the settings of the file
# $3 (readable by postgres); extra settings may follow as further arguments.
start_cluster() {
	local dir=$1 port=$2 conf=$3; shift 3
	as_pg "initdb -D '$dir/data' -A trust -U postgres >/dev/null"
	as_pg "cat '$conf' >> '$dir/data/postgresql.conf'"
	as_pg "printf '%s\n' \"port = $port\" \"unix_socket_directories = '$dir'\" \"listen_addresses = ''\" $(printf "'%s' " "$@") >> '$dir/data/postgresql.conf'"
	as_pg "pg_ctl -D '$dir/data' -l '$dir/server.log' -w start >/dev/null"
}

stop_cluster() {
	as_pg "pg_ctl -D '$1/data' -m fast -w stop >/dev/null" || true
}
