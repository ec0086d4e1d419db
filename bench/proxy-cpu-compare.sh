#!/usr/bin/env bash
# Proxy CPU per transaction of two flux builds side by side in one run (relay and capture,
# TPC-B and -S, alternating), CPU from /proc/PID/stat (utime + stime) over transactions.
# Not part of the test suite. Usage: OLD=path/to/flux NEW=path/to/flux bench/proxy-cpu-compare.sh
#   DURATION=10 (seconds per run), ROUNDS=2, SCALE=10; FLUX_PG_BIN for another server;
#   OLD_ARGS / NEW_ARGS: extra `flux proxy` flags for one side (OLD=NEW=flux NEW_ARGS="--admin 0"
#   measures what serving metrics costs).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
ensure_postgres
PGBIN=${FLUX_PG_BIN:-$(pg_bin_dir)}
: "${OLD:?set OLD to the baseline flux binary}" "${NEW:?set NEW to the flux binary to compare}"
w=$(mktemp -d /tmp/flux-measure.XXXXXX)
run_as_pg chown_work "$w"
trap 'kill $(jobs -p) 2>/dev/null; as_pg $PGBIN/pg_ctl -D $w/data -m immediate stop >/dev/null 2>&1; rm -rf $w' EXIT
as_pg $PGBIN/initdb -D $w/data -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
printf "listen_addresses='127.0.0.1'\nunix_socket_directories='$w'\nmax_connections=200\nshared_buffers=512MB\n" >> $w/data/postgresql.conf
P=$(free_port); as_pg $PGBIN/pg_ctl -D $w/data -l $w/pg.log -o "-p $P" -w start >/dev/null
pgbench -h 127.0.0.1 -p $P -U postgres -i -s "${SCALE:-10}" -q postgres >/dev/null 2>&1
declare -A port pid
start() { # name bin args...
  local name=$1 bin=$2; shift 2; local p=$(free_port)
  $bin proxy --listen 127.0.0.1:$p --upstream "postgres://postgres@127.0.0.1:$P/postgres?sslmode=disable" "$@" 2>$w/$name.log &
  pid[$name]=$!; port[$name]=$p
  for _ in $(seq 100); do grep -q "listening on" $w/$name.log && return; sleep 0.1; done; cat $w/$name.log; exit 1
}
# shellcheck disable=SC2086 # the extra flags are meant to split
start old-relay $OLD --capture off ${OLD_ARGS:-}; start new-relay $NEW --capture off ${NEW_ARGS:-}
# shellcheck disable=SC2086
start old-capture $OLD --data-dir $w/oc ${OLD_ARGS:-}; start new-capture $NEW --data-dir $w/nc ${NEW_ARGS:-}
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
run() { # name mode
  local name=$1 mode=$2 before after tx out
  before=$(ticks ${pid[$name]})
  # pgbench's output kept, not piped: under pipefail a failing pgbench in $(… | …) would
  # end the script silently.
  if ! out=$(pgbench -h 127.0.0.1 -p ${port[$name]} -U postgres -M extended -c 8 -j 2 -T ${DURATION:-10} $mode postgres 2>&1); then
    echo "error: pgbench through $name failed:" >&2; echo "$out" >&2; exit 1
  fi
  tx=$(awk '/number of transactions actually processed/ {print $NF}' <<<"$out" | cut -d/ -f1)
  [ -n "$tx" ] && [ "$tx" -gt 0 ] || { echo "error: pgbench through $name processed no transactions:" >&2; echo "$out" >&2; exit 1; }
  after=$(ticks ${pid[$name]})
  echo "$name ${mode:-tpcb} tx=$tx us_per_tx=$(( (after-before)*10000 / tx ))"
}
for round in $(seq "${ROUNDS:-2}"); do
  for n in old-relay new-relay old-capture new-capture; do run $n ""; done
  for n in new-relay old-relay; do run $n -S; done
done
