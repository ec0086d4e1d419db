#!/usr/bin/env bash
# What capture costs, side by side in one run per server (PostgreSQL 15 and 18): pgbench
# TPC-B (-M extended -c 8 -j 2, scale 10) against the server directly, through `flux proxy
# --capture off` (relay), through capture, and through PgBouncer (session pooling, when
# installed), ROUNDS rounds of DURATION seconds per target, interleaved. Prints per target:
# tps, the proxy's CPU per transaction (/proc/PID/stat utime+stime) and PostgreSQL's (the
# postmaster's own plus its live and reaped children's), each the median over rounds; the
# added CPU of capture over the relay; then the one-client latency per transaction and per
# statement (TPC-B runs 7 statements a transaction). Also `-S` (read-only) for the relay
# and PgBouncer. Not part of the test suite.
#   ROUNDS=3 DURATION=10 SCALE=10 SERVERS="15 18" PROFILE=release bench/capture-cost.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/flux-target}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
SCALE=${SCALE:-10}
SERVERS=${SERVERS:-15 18}
PROFILE=${PROFILE:-release}
ensure_postgres
FLUX=${FLUX:-$(build_flux "$PROFILE")}
PGBOUNCER=$(command -v pgbouncer || true)
[ -n "$PGBOUNCER" ] || echo "note: pgbouncer is not installed (apt-get install pgbouncer): its rows are left out" >&2

w=$(mktemp -d /tmp/flux-capture-cost.XXXXXX)
run_as_pg chown_work "$w"
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  for d in "$w"/data-*; do
    if [ -d "$d" ]; then as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true; fi
  done
  rm -rf "$w"
}
trap cleanup EXIT

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

for v in $SERVERS; do
  bench_cluster "$v" "$w" "$SCALE"
  data="$w/data-$v"
  declare -A port=() pid=()
  port[direct]=$P
  start_flux() { # name args...
    local name=$1 p; shift; p=$(free_port)
    "$FLUX" proxy --listen "127.0.0.1:$p" --upstream "postgres://postgres@127.0.0.1:$P/postgres?sslmode=disable" "$@" 2>"$w/$name-$v.log" &
    pid[$name]=$!; port[$name]=$p
    for _ in $(seq 100); do grep -q "listening on" "$w/$name-$v.log" && return; sleep 0.1; done
    cat "$w/$name-$v.log" >&2; exit 1
  }
  start_flux relay --capture off
  start_flux capture --data-dir "$w/store-$v"
  targets="direct relay capture"
  if [ -n "$PGBOUNCER" ]; then
    port[pgbouncer]=$(start_pgbouncer "$w" "pgbouncer-$v" "$P")
    pid[pgbouncer]=$(cat "$w/pgbouncer-$v.pid")
    targets="$targets pgbouncer"
  fi
  run() { # target mode clients -> "tps proxy_us pg_us latency_ms"
    local t=$1 mode=$2 c=$3 b_proxy=0 a_proxy=0 b_pg a_pg out tx tps lat
    [ -n "${pid[$t]:-}" ] && b_proxy=$(ticks "${pid[$t]}")
    b_pg=$(pg_ticks "$PM")
    out=$("$PGBENCH" -h 127.0.0.1 -p "${port[$t]}" -U postgres -M extended -c "$c" -j "$(( c < 2 ? 1 : 2 ))" -T "$DURATION" $mode postgres 2>/dev/null)
    sleep 0.5  # the backends' exit reaped into the postmaster's children time
    [ -n "${pid[$t]:-}" ] && a_proxy=$(ticks "${pid[$t]}")
    a_pg=$(pg_ticks "$PM")
    tx=$(awk '/number of transactions actually processed/ {print $NF}' <<<"$out" | cut -d/ -f1)
    tps=$(awk '/^tps/ {print $3; exit}' <<<"$out")
    lat=$(awk '/latency average/ {print $4}' <<<"$out")
    echo "$tps $(( (a_proxy - b_proxy) * 10000 / tx )) $(( (a_pg - b_pg) * 10000 / tx )) $lat"
  }
  declare -A res=()
  for r in $(seq "$ROUNDS"); do
    for t in $targets; do res[$t]+="$(run "$t" "" 8)"$'\n'; done
    for t in relay ${PGBOUNCER:+pgbouncer}; do res[$t-S]+="$(run "$t" -S 8)"$'\n'; done
    echo "  PostgreSQL $version: round $r/$ROUNDS done" >&2
  done
  col() { awk -v c="$2" 'NF {print $c}' <<<"${res[$1]}" | median; }
  echo
  echo "PostgreSQL $version, TPC-B (-M extended -c 8 -j 2, scale $SCALE, $ROUNDS x ${DURATION}s, medians)"
  printf '| %-26s | %8s | %12s | %17s |\n' "target" "tps" "proxy µs/tx" "PostgreSQL µs/tx"
  printf '|%s|%s|%s|%s|\n' "----------------------------" "----------" "--------------" "-------------------"
  for t in $targets; do
    name=$t
    case $t in relay) name="flux --capture off";; capture) name="flux capture on";; pgbouncer) name="pgbouncer (session)";; esac
    printf '| %-26s | %8.0f | %12s | %17s |\n' "$name" "$(col "$t" 1)" "$([ "$t" = direct ] && echo — || col "$t" 2)" "$(col "$t" 3)"
  done
  added=$(awk -v cp="$(col capture 2)" -v cg="$(col capture 3)" -v rp="$(col relay 2)" -v rg="$(col relay 3)" 'BEGIN {printf "%.0f (proxy %+.0f, PostgreSQL %+.0f)", (cp+cg)-(rp+rg), cp-rp, cg-rg}')
  echo "capture's added CPU per transaction over the relay: $added µs"
  echo
  echo "PostgreSQL $version, -S (select only), proxy µs/tx (medians): relay $(col relay-S 2)${PGBOUNCER:+, pgbouncer $(col pgbouncer-S 2)}; tps relay $(printf %.0f "$(col relay-S 1)")${PGBOUNCER:+, pgbouncer $(printf %.0f "$(col pgbouncer-S 1)")}"
  # One client: latency per transaction and per statement (7 a transaction).
  declare -A one=()
  for r in $(seq "$ROUNDS"); do
    for t in direct relay capture; do one[$t]+="$(run "$t" "" 1)"$'\n'; done
  done
  ocol() { awk 'NF {print $4}' <<<"${one[$1]}" | median; }
  d=$(ocol direct)
  echo "PostgreSQL $version, one client, latency per transaction (medians): direct ${d} ms, relay $(ocol relay) ms ($(awk -v a="$(ocol relay)" -v d="$d" 'BEGIN {printf "%+.0f", (a-d)*1000/7}') µs per statement), capture $(ocol capture) ms ($(awk -v a="$(ocol capture)" -v d="$d" 'BEGIN {printf "%+.0f", (a-d)*1000/7}') µs per statement)"
  kill "${pid[relay]}" "${pid[capture]}" ${pid[pgbouncer]:-} 2>/dev/null || true
  wait "${pid[relay]}" "${pid[capture]}" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$data" -m fast stop >/dev/null
  unset port pid res one
done
