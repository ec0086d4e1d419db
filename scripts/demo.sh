#!/usr/bin/env bash
# The demo: a temporary PostgreSQL cluster, `flux proxy` in front of it, a few
# statements through the proxy, and the DATABASE_URL for your own app. Stays up until
# Ctrl-C when run from a terminal (or with DEMO_HOLD=1); otherwise cleans up and exits.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/flux-target}
PGBIN=$(pg_bin_dir)

echo "==> building flux" >&2
(cd "$here" && cargo build -q -p flux-cli)
FLUX="$CARGO_TARGET_DIR/debug/flux"

work=$(mktemp -d /tmp/flux-demo.XXXXXX)
run_as_pg chown_work "$work"
flux_pid=
cleanup() {
  [ -n "$flux_pid" ] && kill "$flux_pid" 2>/dev/null && wait "$flux_pid" 2>/dev/null
  as_pg "$PGBIN/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

PG_PORT=$(free_port)
echo "==> starting PostgreSQL ($("$PGBIN/postgres" --version | awk '{print $3}')) on 127.0.0.1:$PG_PORT" >&2
as_pg "$PGBIN/initdb" -D "$work/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
printf "listen_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n" "$work" >>"$work/data/postgresql.conf"
as_pg "$PGBIN/pg_ctl" -D "$work/data" -l "$work/postgres.log" -o "-p $PG_PORT" -w start >/dev/null

FLUX_PORT=$(free_port)
echo "==> starting flux proxy on 127.0.0.1:$FLUX_PORT" >&2
"$FLUX" proxy --listen "127.0.0.1:$FLUX_PORT" --upstream "postgres://postgres@127.0.0.1:$PG_PORT/postgres" \
  --data-dir "$work/flux-data" 2>"$work/flux.log" &
flux_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/flux.log" && break; sleep 0.1; done
grep -q "listening on" "$work/flux.log" || { cat "$work/flux.log" >&2; exit 1; }

URL="postgres://postgres@127.0.0.1:$FLUX_PORT/postgres"
echo "==> four requests through the proxy (the fourth one's transaction rolls back)" >&2
psql -X -q "$URL" -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE users (id int PRIMARY KEY, email text, name text, plan text NOT NULL DEFAULT 'free');
INSERT INTO users (id, email) VALUES (42, 'a@b.com') /*traceparent='00-4f9a3b2c0d1e4f5a8b9c0d1e2f3a4b5c-00f067aa0ba902b7-01'*/;
BEGIN;
SET LOCAL flux.request_id = 'a3c91ef0-6d1b-4a53-9d3e-6f1f4f0e2a11';
UPDATE users SET name = 'Alice Smith' WHERE id = 42;
COMMIT;
UPDATE users SET plan = 'pro' WHERE id = 42 /*request_id='c0ffee00-1111'*/;
SQL
psql -X -q "$URL" <<'SQL' 2>/dev/null || true
BEGIN;
SET LOCAL flux.request_id = '550e8400-e29b-41d4-a716-446655440000';
UPDATE users SET plan = 'enterprise' WHERE id = 42;
SELECT 1 / 0;
COMMIT;
SQL
sleep 0.3 # the store writer batches; give it a moment
echo "==> flux state history users --id 42" >&2
"$FLUX" state history users --id 42 --data-dir "$work/flux-data"
echo "==> flux state blame users --id 42" >&2
"$FLUX" state blame users --id 42 --data-dir "$work/flux-data"

cat <<MSG

  DATABASE_URL=$URL

  Point your app at it; the proxy relays every session to the PostgreSQL above.
  Proxy log: $work/flux.log
MSG
if [ -t 0 ] || [ "${DEMO_HOLD:-}" = 1 ]; then
  echo "  Press Ctrl-C to stop." 
  wait "$flux_pid"
fi
