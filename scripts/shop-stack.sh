# Sourced by scripts/demo.sh and bench/replay.sh: starts, under $work, a temporary
# PostgreSQL, `flux proxy` in front of it (capture into $DATA, OTLP on $OTLP_PORT, the HTTP
# recorder on $GW_PORT in front of the shop), a scratch database (shop_scratch, $SCRATCH),
# the fake payment server and the example shop (run from a copy in $work/shop, so a
# script may change it). Needs $here, $FLUX, $PY, $PGBIN; sets $work (a temp dir named
# after $STACK_NAME) and stops and removes everything it started on exit.

work=$(mktemp -d "/tmp/${STACK_NAME:-flux-stack}.XXXXXX")
run_as_pg chown_work "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  as_pg "$PGBIN/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # FILE PATTERN WHAT
  for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return; sleep 0.1; done
  echo "error: $3 did not start; its log:" >&2; cat "$1" >&2; exit 1
}

PG_PORT=$(free_port)
echo "==> starting PostgreSQL ($("$PGBIN/postgres" --version | awk '{print $3}')) on 127.0.0.1:$PG_PORT" >&2
as_pg "$PGBIN/initdb" -D "$work/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
printf "listen_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n" "$work" >>"$work/data/postgresql.conf"
as_pg "$PGBIN/pg_ctl" -D "$work/data" -l "$work/postgres.log" -o "-p $PG_PORT" -w start >/dev/null

FLUX_PORT=$(free_port)
OTLP_PORT=$(free_port)
GW_PORT=$(free_port)
APP_PORT=$(free_port)
DATA="$work/flux-data"
echo "==> starting flux proxy on 127.0.0.1:$FLUX_PORT (OTLP on 127.0.0.1:$OTLP_PORT, HTTP recorder on 127.0.0.1:$GW_PORT)" >&2
"$FLUX" proxy --listen "127.0.0.1:$FLUX_PORT" --upstream "postgres://postgres@127.0.0.1:$PG_PORT/postgres" \
  --data-dir "$DATA" --otlp "127.0.0.1:$OTLP_PORT" \
  --http-listen "127.0.0.1:$GW_PORT" --http-upstream "http://127.0.0.1:$APP_PORT" 2>"$work/flux.log" &
pids+=($!)
wait_for "$work/flux.log" "listening on" "flux proxy"
URL="postgresql://postgres@127.0.0.1:$FLUX_PORT/postgres"
psql -X -q "$URL" -v ON_ERROR_STOP=1 -f "$here/examples/shop/schema.sql"
# The scratch database replays write to: the same schema, beside the recorded one.
SCRATCH="postgresql://postgres@127.0.0.1:$PG_PORT/shop_scratch"
psql -X -q "postgresql://postgres@127.0.0.1:$PG_PORT/postgres" -c 'CREATE DATABASE shop_scratch'
psql -X -q "$SCRATCH" -v ON_ERROR_STOP=1 -f "$here/examples/shop/schema.sql"
# The shop runs from a copy, so the demo can fix it without touching the checkout.
cp -r "$here/examples/shop" "$work/shop"
export PATH="$(dirname "$PY"):$PATH"

PAY_PORT=$(free_port)
"$PY" "$here/examples/shop/payments.py" "$PAY_PORT" 2>"$work/payments.log" &
pids+=($!)
echo "==> starting the example shop on 127.0.0.1:$APP_PORT (DATABASE_URL -> flux proxy)" >&2
DATABASE_URL="$URL" OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT" OTEL_BSP_SCHEDULE_DELAY=300 \
  PAYMENT_URL="http://127.0.0.1:$PAY_PORT" PORT="$APP_PORT" SHOP_OUTBOX="$work/outbox" \
  "$PY" "$work/shop/app.py" 2>"$work/app.log" &
pids+=($!)
wait_for "$work/app.log" "Running on" "the example shop"
