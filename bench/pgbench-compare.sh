#!/usr/bin/env bash
# Direct vs flux (relay only, --capture off) vs flux-capture (recording every write into
# its RocksDB store) vs pgbouncer in session mode (when installed), measured side by side
# in one run: pgbench TPC-B and select-only (-S), -M extended, 8 clients, rounds
# alternating the targets. Prints each target's median TPS and its ratio to direct.
#
# Not part of the test suite. Tunables (environment):
#   ROUNDS=5 DURATION=15 CLIENTS=8 THREADS=2 SCALE=10 MODE=extended
#   FLUX_PG_BIN=/usr/lib/postgresql/15/bin  CARGO_TARGET_DIR=/var/tmp/flux-target
#   FLUX_ARGS="..."   extra arguments for `flux proxy`
#   UNIX=1            also measure flux-unix: flux reaching PostgreSQL over its Unix socket
#                     (the sidecar-on-the-database-host layout; direct and pgbouncer stay on TCP)
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-15}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
MODE=${MODE:-extended}
FLUX_ARGS=${FLUX_ARGS:-}
here=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/flux-target}

# shellcheck source=../scripts/lib.sh
source "$here/scripts/lib.sh"
ensure_postgres
PGBIN=$(pg_bin_dir)

echo "building flux (release)…" >&2
(cd "$here" && cargo build --release -q -p flux-cli)
FLUX="$CARGO_TARGET_DIR/release/flux"

work=$(mktemp -d /tmp/flux-bench.XXXXXX)
run_as_pg chown_work "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # pgbouncer daemonizes (-d): stop it by its pid file.
  [ -f "$work/pgbouncer.pid" ] && kill "$(cat "$work/pgbouncer.pid")" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

PG_PORT=$(free_port)
as_pg "$PGBIN/initdb" -D "$work/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
max_connections = 200
shared_buffers = 512MB
CONF
as_pg "$PGBIN/pg_ctl" -D "$work/data" -l "$work/pg.log" -o "-p $PG_PORT" -w start >/dev/null

PGBENCH=$(command -v pgbench || echo "$PGBIN/pgbench")
"$PGBENCH" -h 127.0.0.1 -p "$PG_PORT" -U postgres -i -s "$SCALE" -q postgres >/dev/null 2>&1

FLUX_PORT=$(free_port)
"$FLUX" proxy --listen "127.0.0.1:$FLUX_PORT" --upstream "postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable" \
  --capture off $FLUX_ARGS 2>"$work/flux.log" &
pids+=($!)
CAPTURE_PORT=$(free_port)
"$FLUX" proxy --listen "127.0.0.1:$CAPTURE_PORT" --upstream "postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable" \
  --data-dir "$work/flux-capture" $FLUX_ARGS 2>"$work/flux-capture.log" &
pids+=($!)

targets=(direct flux flux-capture)
declare -A port=([direct]=$PG_PORT [flux]=$FLUX_PORT [flux-capture]=$CAPTURE_PORT)
if [ "${UNIX:-}" = 1 ]; then
  FLUX_UNIX_PORT=$(free_port)
  "$FLUX" proxy --listen "127.0.0.1:$FLUX_UNIX_PORT" --upstream "postgres:///postgres?host=$work&port=$PG_PORT" \
    --capture off $FLUX_ARGS 2>"$work/flux-unix.log" &
  pids+=($!)
  targets+=(flux-unix)
  port[flux-unix]=$FLUX_UNIX_PORT
fi
if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then
  PGB_PORT=$(start_pgbouncer "$work" pgbouncer "$PG_PORT")
  targets+=(pgbouncer)
  port[pgbouncer]=$PGB_PORT
fi

for t in "${targets[@]}"; do
  for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p "${port[$t]}" && break; sleep 0.1; done
done

run_pgbench() { # target, extra args…
  local t=$1 out; shift
  # Kept whole, not piped: a failing pgbench is said, with its output, never a silent exit.
  if ! out=$("$PGBENCH" -h 127.0.0.1 -p "${port[$t]}" -U postgres -M "$MODE" -c "$CLIENTS" -j "$THREADS" -T "$DURATION" -n "$@" postgres 2>&1); then
    echo "error: pgbench against $t failed:" >&2
    echo "$out" >&2
    exit 1
  fi
  awk '/^tps = / {print $3}' <<<"$out"
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

echo "pgbench -M $MODE -c $CLIENTS -j $THREADS -T $DURATION, scale $SCALE, $ROUNDS rounds alternating: ${targets[*]}"
echo "machine: $(nproc) cores; PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}')"
# After the run: what capture recorded (so a capture-on number is not a silent no-op).
report_capture() {
  echo "flux-capture store: $(du -sh "$work/flux-capture" | cut -f1); its log's warnings:"
  grep -E 'WARN|ERROR' "$work/flux-capture.log" | tail -n 5 || echo "  (none)"
}
trap 'report_capture; cleanup' EXIT
for workload in tpcb select; do
  extra=()
  [ "$workload" = select ] && extra=(-S)
  declare -A results=()
  for r in $(seq "$ROUNDS"); do
    # Alternate the order each round so drift (caches, checkpoints) hits every target.
    order=("${targets[@]}")
    if (( r % 2 == 0 )); then order=($(printf '%s\n' "${targets[@]}" | tac)); fi
    for t in "${order[@]}"; do
      tps=$(run_pgbench "$t" "${extra[@]}")
      results[$t]+="$tps "
      printf '  %-7s round %d %-12s %10.1f tps\n' "$workload" "$r" "$t" "$tps" >&2
    done
  done
  # `grep .` exits 1 on no input, which pipefail would turn into a silent exit: `|| true`,
  # and an empty result is said.
  direct=$(echo "${results[direct]}" | tr ' ' '\n' | { grep . || true; } | median)
  [ -n "$direct" ] || { echo "error: no direct $workload result" >&2; exit 1; }
  for t in "${targets[@]}"; do
    m=$(echo "${results[$t]}" | tr ' ' '\n' | { grep . || true; } | median)
    awk -v w="$workload" -v t="$t" -v m="$m" -v d="$direct" 'BEGIN { printf "%-7s %-12s median %10.1f tps   ratio %s/direct = %.3f\n", w, t, m, t, m / d }'
  done
done
