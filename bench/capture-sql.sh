#!/usr/bin/env bash
# What capture's appended RETURNING costs PostgreSQL alone, without a proxy: pgbench runs
# TPC-B directly as written and with the image expressions capture appends (and
# alternatives), ROUNDS interleaved rounds of DURATION seconds, -M extended -c 8 -j 2, and
# prints PostgreSQL's CPU per transaction (the postmaster's and its children's, from
# /proc) per variant, with the difference to plain TPC-B. PG 15 variants use the snapshot
# subquery for the before image; PG 18 ones RETURNING old/new.
#   ROUNDS=3 DURATION=8 SERVERS="15 18" bench/capture-sql.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
SERVERS=${SERVERS:-15 18}
ensure_postgres
w=$(mktemp -d /tmp/flux-capture-sql.XXXXXX)
run_as_pg chown_work "$w"
cleanup() {
  for d in "$w"/data-*; do
    if [ -d "$d" ]; then as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true; fi
  done
  rm -rf "$w"
}
trap cleanup EXIT

# The variants: how each write returns its images.
python3 - "$w" <<'PY'
import sys
w = sys.argv[1]
head = "\\set aid random(1, 100000 * :scale)\n\\set bid random(1, 1 * :scale)\n\\set tid random(1, 10 * :scale)\n\\set delta random(-5000, 5000)\nBEGIN;\n"
def script(ret):
    s = head
    for t, col, key in [("pgbench_accounts", "abalance", "aid"), ("pgbench_tellers", "tbalance", "tid"), ("pgbench_branches", "bbalance", "bid")]:
        s += f"UPDATE {t} SET {col} = {col} + :delta WHERE {key} = :{key}{ret('u', t, key)};\n"
        if t == "pgbench_accounts":
            s += "SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n"
    s += f"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP){ret('i', 'pgbench_history', None)};\n"
    return s + "END;\n"
def image(fn, r):
    return f"({r}.*)::text" if fn == "text" else f"pg_catalog.{fn}({r}.*)"
def snapshot(fn, t, key):
    inner = "__flux_o::text" if fn == "text" else f"pg_catalog.{fn}(__flux_o.*)"
    return f'(SELECT {inner} FROM public.{t} __flux_o WHERE (__flux_o."{key}") = ({t}."{key}"))'
def variant(fn, pg18, oid=True):
    def ret(kind, t, key):
        o = f"{t}.tableoid" if oid else "NULL::oid"
        if pg18:
            return f" RETURNING {image(fn, 'old')} AS __flux_b, {image(fn, 'new')} AS __flux_a, {o} AS __flux_t"
        before = snapshot(fn, t, key) if kind == "u" else "NULL"
        return f" RETURNING {before} AS __flux_b, {image(fn, t)} AS __flux_a, {o} AS __flux_t"
    return ret
out = {"plain": lambda *a: ""}
for fn in ["to_jsonb", "to_json", "text"]:
    out[f"15-{fn}"] = variant(fn, False)
    out[f"18-{fn}"] = variant(fn, True)
out["15-to_json-no-oid"] = variant("to_json", False, oid=False)
out["18-to_json-no-oid"] = variant("to_json", True, oid=False)
out["15-after-only"] = lambda k, t, key: f" RETURNING NULL AS __flux_b, pg_catalog.to_json({t}.*) AS __flux_a, NULL::oid AS __flux_t"
# The fixed cost of returning anything at all, and of three constant columns.
for v in ("15", "18"):
    out[f"{v}-returning-1"] = lambda k, t, key: " RETURNING 1"
    out[f"{v}-three-nulls"] = lambda k, t, key: " RETURNING NULL::json AS __flux_b, NULL::json AS __flux_a, NULL::oid AS __flux_t"
for name, ret in out.items():
    open(f"{w}/{name}.sql", "w").write(script(ret))
PY


for v in $SERVERS; do
  bench_cluster "$v" "$w" 10
  data="$w/data-$v"
  variants="plain $(cd "$w" && ls "$v"-*.sql | sed 's/\.sql$//' | tr '\n' ' ')"
  declare -A res=()
  for r in $(seq "$ROUNDS"); do
    for x in $variants; do
      b=$(pg_ticks "$PM")
      out=$("$PGBENCH" -h 127.0.0.1 -p "$P" -U postgres -M extended -c 8 -j 2 -T "$DURATION" -f "$w/$x.sql" postgres 2>/dev/null)
      sleep 0.5
      a=$(pg_ticks "$PM")
      tx=$(awk '/number of transactions actually processed/ {print $NF}' <<<"$out" | cut -d/ -f1)
      res[$x]+="$(( (a - b) * 10000 / tx ))"$'\n'
    done
  done
  base=$(median <<<"${res[plain]}")
  echo "PostgreSQL $version: CPU per TPC-B transaction (3 UPDATEs and an INSERT captured), medians of $ROUNDS"
  for x in $variants; do
    m=$(median <<<"${res[$x]}")
    printf '  %-22s %6.0f µs  (%+.0f)\n' "$x" "$m" "$(awk -v a="$m" -v b="$base" 'BEGIN {print a-b}')"
  done
  as_pg "$PGBIN/pg_ctl" -D "$data" -m fast stop >/dev/null
  unset res
done
