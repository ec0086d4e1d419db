#!/usr/bin/env bash
# The demo: a temporary PostgreSQL cluster, `flux proxy` in front of it (recording into a
# RocksDB store and receiving OTLP traces), the example shop (examples/shop: Flask + the
# OpenTelemetry SDK) behind the proxy's HTTP recorder, and its fake payment server. It
# sends a few requests, one a checkout whose payment call times out after writing, and
# prints what Flux answers about them: flux tail, flux why, flux trace, flux trace diff,
# flux state history and blame. Then it replays the incident on a scratch database twice:
# against the unchanged shop (still failing), and with a fix (resolved).
# Stays up until Ctrl-C when run from a terminal (or with DEMO_HOLD=1).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/flux-target}
PGBIN=$(pg_bin_dir)
PY=$(ensure_example_venv)
ensure_curl

echo "==> building flux" >&2
(cd "$here" && cargo build -q -p flux-cli)
FLUX="$CARGO_TARGET_DIR/debug/flux"

# PostgreSQL, flux proxy (capture, OTLP, HTTP recorder), the payment server, the shop; all
# stopped and removed on exit.
STACK_NAME=flux-demo
source "$here/scripts/shop-stack.sh"
trap 'exit 0' INT TERM

call() { # METHOD PATH [JSON]
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -X "$1" "http://127.0.0.1:$GW_PORT$2" \
    -H 'Content-Type: application/json' ${3:+--data "$3"})
  printf '    %-5s %-22s -> %s\n' "$1" "$2" "$code" >&2
}
echo "==> requests (through flux proxy's HTTP recorder)" >&2
FROM=$(date +%H:%M:%S)
call POST /users '{"id": 42, "email": "a@b.com"}'
call POST /users '{"id": 7, "email": "c@d.com", "name": "Carol"}'
call GET /users/42
call POST /checkout '{"user_id": 7, "amount": 25}'
call POST /checkout '{"user_id": 42, "amount": 5000}'  # the payment server stalls: 500
sleep 1
TO=$(date +%H:%M:%S)

# The SDK exports in batches; wait until all five requests' root spans are recorded.
for _ in $(seq 100); do
  n=$("$FLUX" tail --since 10m --no-follow --format json --data-dir "$DATA" |
    "$PY" -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin) if r["method"]))')
  [ "$n" -ge 5 ] && break
  sleep 0.2
done
failed=$("$FLUX" tail --since 10m --no-follow --errors-only --format json --data-dir "$DATA" |
  "$PY" -c 'import json,sys; print(json.load(sys.stdin)[-1]["request"])')
paid=$("$FLUX" tail --since 10m --no-follow --filter status=201 --filter path=/checkout --format json --data-dir "$DATA" |
  "$PY" -c 'import json,sys; print(json.load(sys.stdin)[-1]["request"])')

show() { echo; echo "\$ flux $*"; "$FLUX" "$@" --data-dir "$DATA"; }
show tail --since 10m --no-follow
show why "${failed:0:8}"
show trace "${failed:0:8}"
show trace diff "${paid:0:8}" "${failed:0:8}"
show state history users --id 42
show state blame users --id 42

# Replay the incident against the shop as it is: the timeout is still there.
replay() {
  echo; echo "\$ flux incident replay $FROM..$TO"
  (cd "$work/shop" && "$FLUX" incident replay "$FROM..$TO" --data-dir "$DATA" --database "$SCRATCH") || true
}
replay
# The fix: wait longer for the payment provider, and retry once.
sed -i 's/"PAYMENT_TIMEOUT", "1"/"PAYMENT_TIMEOUT", "5"/; s/^PAYMENT_ATTEMPTS = 1$/PAYMENT_ATTEMPTS = 2/' "$work/shop/app.py"
echo; echo "==> the fix:" >&2
diff -u "$here/examples/shop/app.py" "$work/shop/app.py" | sed -n '/^@@/,$p' | grep '^[-+]' | grep -v '^[-+][-+]' || true
replay

cat <<MSG

  The shop:        http://127.0.0.1:$GW_PORT   (through the HTTP recorder; POST /checkout {"user_id": 42, "amount": 5000} fails)
  DATABASE_URL:    $URL
  OTLP endpoint:   http://127.0.0.1:$OTLP_PORT
  Data dir:        $DATA   (flux tail --data-dir $DATA)
MSG
if [ -t 0 ] || [ "${DEMO_HOLD:-}" = 1 ]; then
  echo "  Press Ctrl-C to stop."
  wait "${pids[0]}"
fi
