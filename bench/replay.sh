#!/usr/bin/env bash
# How long `flux incident replay` takes for N recorded requests (default 100), and what the
# time is made of: the app's start-up, the app's own time answering (the sum of its
# response times), and Flux's own time (selecting, the scratch restore, starting the
# replay proxy, gateway, OTLP receiver and stub, sending, waiting for the spans, judging).
# Records N requests of the example shop through `flux proxy --http-listen` (creating,
# reading and upgrading users, and paid checkouts), then replays the window once.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/flux-target}
N=${N:-100}
PROFILE=${PROFILE:-release}
PGBIN=$(pg_bin_dir)
PY=$(ensure_example_venv)
ensure_curl
FLUX=$(build_flux "$PROFILE")

STACK_NAME=flux-bench-replay
source "$here/scripts/shop-stack.sh"
trap 'exit 1' INT TERM

post() { curl -s -o /dev/null -X POST "http://127.0.0.1:$GW_PORT$1" -H 'Content-Type: application/json' --data "$2"; }
echo "==> recording $N requests through the HTTP recorder" >&2
FROM=$(date +%H:%M:%S)
sleep 1
for i in $(seq 1 "$N"); do
  u=$((1000 + (i + 3) / 4))
  case $((i % 4)) in
    1) post /users "{\"id\": $u, \"email\": \"u$u@example.com\"}" ;;
    2) curl -s -o /dev/null "http://127.0.0.1:$GW_PORT/users/$u" ;;
    3) post "/users/$u/upgrade" '{"plan": "team"}' ;;
    0) post /checkout "{\"user_id\": $u, \"amount\": 10}" ;;
  esac
done
sleep 1
TO=$(date +%H:%M:%S)
for _ in $(seq 150); do
  n=$("$FLUX" tail --since 1h --no-follow --format json --data-dir "$DATA" |
    "$PY" -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin) if r["spans"] >= 3))')
  [ "$n" -ge "$N" ] && break
  sleep 0.2
done

echo "==> flux incident replay $FROM..$TO ($PROFILE build)" >&2
start=$(date +%s.%N)
(cd "$work/shop" && "$FLUX" incident replay "$FROM..$TO" --data-dir "$DATA" --database "$SCRATCH" --format json) \
  >"$work/report.json" || true
end=$(date +%s.%N)
"$PY" - "$work/report.json" "$start" "$end" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
wall = float(sys.argv[3]) - float(sys.argv[2])
app = sum(x["duration_ms"] for x in r["results"]) / 1000
start = r["app_start_ms"] / 1000
own = wall - app - start
print(f"replayed {r['replayed']} requests ({r['passing']} passing) in {wall:.2f} s wall clock:")
print(f"  app start-up            {start:6.2f} s")
print(f"  app answering           {app:6.2f} s  (sum of its response times)")
print(f"  flux's own              {own:6.2f} s  (restore, services, sending, waiting for spans, judging, process start/exit)")
PY
