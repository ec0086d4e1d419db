#!/usr/bin/env bash
# How fast `flux why` and `flux trace` answer on a big record: generates N requests
# (default 100,000; 5 spans each: an HTTP server root, a handler, two statements and a
# payment call, every 50th failing) as OTLP/JSON lines, loads them with `flux ingest` into a
# fresh data dir, then times each command RUNS times (wall clock of the whole process:
# opening the store, resolving an 8-character prefix, answering) for requests at the start,
# middle and end of the record. Prints the median and max per command.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/flux-target}
N=${N:-100000}
RUNS=${RUNS:-20}
PROFILE=${PROFILE:-release}  # PROFILE=debug measures the debug build (an upper bound)
FLUX=$(build_flux "$PROFILE")
work=$(mktemp -d /tmp/flux-lookup.XXXXXX)
trap 'rm -rf "$work"' EXIT

python3 - "$N" "$work/traces.jsonl" <<'PY'
import json, sys, random
n, path = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(7)
base = 1_764_000_000_000_000_000
def kv(k, v):
    key = "intValue" if isinstance(v, int) else "stringValue"
    return {"key": k, "value": {key: str(v) if key == "intValue" else v}}
with open(path, "w") as out:
    per_line = 100
    for line in range(0, n, per_line):
        spans = []
        for i in range(line, min(n, line + per_line)):
            trace = "%032x" % rnd.getrandbits(128)
            ids = ["%016x" % rnd.getrandbits(64) for _ in range(5)]
            t0 = base + i * 10_000_000
            fail = i % 50 == 0
            def span(k, parent, name, a, b, kind=1, attrs=(), status=None):
                s = {"traceId": trace, "spanId": ids[k], "name": name, "kind": kind,
                     "startTimeUnixNano": str(t0 + a * 1000), "endTimeUnixNano": str(t0 + b * 1000),
                     "attributes": list(attrs)}
                if parent is not None: s["parentSpanId"] = ids[parent]
                if status: s["status"] = {"code": 2, "message": status}
                return s
            spans += [
                span(0, None, "POST /checkout", 0, 9000, 2, [kv("http.request.method", "POST"), kv("http.route", "/checkout"), kv("http.response.status_code", 500 if fail else 201)]),
                span(1, 0, "create_order", 100, 8000),
                span(2, 1, "INSERT", 200, 900, 3, [kv("db.statement", "INSERT INTO orders (user_id, amount) VALUES (%s, %s)")]),
                span(3, 1, "UPDATE", 1000, 1500, 3, [kv("db.statement", "UPDATE users SET plan = 'pro' WHERE id = %s")]),
                span(4, 1, "payment.charge", 1600, 7000, 3, [kv("code.filepath", "shop/payments.py"), kv("code.lineno", 42)], "payment timeout" if fail else None),
            ]
        out.write(json.dumps({"resourceSpans": [{"resource": {"attributes": [kv("service.name", "shop")]}, "scopeSpans": [{"spans": spans}]}]}) + "\n")
PY
echo "==> $(du -h "$work/traces.jsonl" | cut -f1) of OTLP/JSON for $N requests; ingesting" >&2
start=$(date +%s.%N)
"$FLUX" ingest "$work/traces.jsonl" --data-dir "$work/data" --log warn
echo "==> ingested in $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s; store $(du -sh "$work/data" | cut -f1)" >&2

ids=$("$FLUX" tail --no-follow --format json --data-dir "$work/data" --errors-only |
  python3 -c 'import json,sys; r=json.load(sys.stdin); print(r[0]["request"], r[len(r)//2]["request"], r[-1]["request"])')
[ "$(echo "$ids" | wc -w)" = 3 ] || { echo "error: expected failed requests in the record" >&2; exit 1; }
time_cmd() { # LABEL ARGS...
  local label=$1; shift
  python3 - "$RUNS" "$label" "$@" <<'PY'
import subprocess, sys, time, statistics
runs, label, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
times = []
for _ in range(runs):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    times.append((time.perf_counter() - t) * 1000)
print(f"{label:<24} median {statistics.median(times):6.1f} ms   max {max(times):6.1f} ms   ({runs} runs)")
PY
}
echo "requests in the record: $N"
for id in $ids; do
  short=${id:0:8}
  time_cmd "flux why $short" "$FLUX" why "$short" --data-dir "$work/data"
  time_cmd "flux trace $short" "$FLUX" trace "$short" --data-dir "$work/data"
done
