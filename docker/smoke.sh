#!/usr/bin/env bash
# Builds the image and runs docker/compose.yml end to end where Docker is available (not
# part of ./dev test: CI has no Docker daemon). Prints the image size and how long
# `docker compose up` took, sends requests through the HTTP recorder, and checks that
# flux recorded them and serves metrics. Cleans up (containers and volume) on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
compose=(docker compose -f "$here/docker/compose.yml")
docker info >/dev/null 2>&1 || { echo "error: no Docker daemon here" >&2; exit 2; }
trap '"${compose[@]}" down -v >/dev/null 2>&1 || true' EXIT

echo "==> building" >&2
"${compose[@]}" build
size=$(docker image inspect -f '{{.Size}}' flux:latest)
echo "image flux:latest: $((size / 1024 / 1024)) MiB" >&2

echo "==> docker compose up" >&2
start=$(date +%s.%N)
"${compose[@]}" up -d --wait
up=$(echo "$(date +%s.%N) - $start" | bc)
echo "docker compose up (built images): ${up} s" >&2

call() { curl -sf -o /dev/null -w '%{http_code}' -X "$1" "http://127.0.0.1:8080$2" -H 'Content-Type: application/json' ${3:+--data "$3"}; }
for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:8080/health && break; sleep 0.2; done
[ "$(call POST /users '{"id": 42, "email": "a@b.com"}')" = 201 ]
[ "$(call POST /checkout '{"user_id": 42, "amount": 25}')" = 201 ]

echo "==> what flux recorded" >&2
for _ in $(seq 50); do
  # `grep -o` finds nothing until the spans arrive: `|| true`, or pipefail ends the wait.
  n=$("${compose[@]}" exec -T flux flux tail --no-follow --format json | { grep -o '"status":201' || true; } | wc -l)
  [ "$n" -ge 2 ] && break
  sleep 0.2
done
"${compose[@]}" exec -T flux flux tail --no-follow
"${compose[@]}" exec -T flux flux state history users --id 42
curl -sf http://127.0.0.1:9187/metrics | grep -E '^flux_capture_rows_total|^flux_proxy_statements_total\{command="INSERT"\}'
curl -sf http://127.0.0.1:9187/readyz
echo "smoke: ok" >&2
