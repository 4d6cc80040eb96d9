#!/usr/bin/env bash
# Builds both images with podman (on ops/images/base-image.sh's base), then runs them for real against
# this machine's Postgres and Redis (host network): migrate, the API, two workers; drives a
# calendar job through the API container; SIGTERMs the worker that is busy with a big job and
# checks it stops cleanly and the job still completes. Tears everything down. `make images-smoke`.
set -euo pipefail
cd "$(dirname "$0")/../.."

PG=${SMOKE_PG:-postgresql://postgres@127.0.0.1:5432}
DB=taskoverflow_smoke
PORT=${SMOKE_PORT:-6411}
API="http://127.0.0.1:$PORT"
NS="taskoverflow-smoke-$$"
podman=(podman --runtime runc)
# Podman schedules HEALTHCHECKs with systemd timers, absent here; the smoke runs the image's
# healthcheck itself (`podman healthcheck run`), so hide that one complaint.
quiet_systemd() { grep -v 'unable to get systemd connection' >&2 || true; }
names=(to-smoke-api to-smoke-worker-1 to-smoke-worker-2)

say() { printf '\n== %s\n' "$*"; }
fail() { echo "SMOKE FAILED: $*" >&2; for n in "${names[@]}"; do echo "--- logs of $n" >&2; "${podman[@]}" logs "$n" 2>&1 | tail -20 >&2 || true; done; exit 1; }
psql_() { psql -qtA "$PG/$DB" -c "$1"; }
cleanup() {
  "${podman[@]}" rm -f -t 0 "${names[@]}" >/dev/null 2>&1 || true
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "base image"
base=$(ops/images/base-image.sh | tail -n 1)
echo "$base"

say "build (the worker build reuses the API build's dependency layer)"
for image in api worker; do
  start=$(date +%s)
  "${podman[@]}" build -q --format docker --network host --build-arg "BASE_IMAGE=$base" \
    -f "Dockerfile.$image" -t "taskoverflow-$image:smoke" . >/dev/null
  echo "taskoverflow-$image:smoke built in $(( $(date +%s) - start )) s"
done

cleanup
psql -q "$PG/postgres" -c "CREATE DATABASE $DB"
env_args=(-e "DATABASE_URL=$PG/$DB" -e "BROKER_URL=redis://127.0.0.1:6379/0"
          -e "BROKER_NAMESPACE=$NS" -e "REDIS_HEARTBEAT_TIMEOUT_MS=5000")

say "migrate (one-shot, from the API image)"
"${podman[@]}" run --rm --network host "${env_args[@]}" taskoverflow-api:smoke alembic upgrade head \
  2> >(quiet_systemd)

say "start the API and two workers"
"${podman[@]}" run -d --name to-smoke-api --network host "${env_args[@]}" -e "UVICORN_PORT=$PORT" \
  taskoverflow-api:smoke >/dev/null 2> >(quiet_systemd)
for i in 1 2; do
  "${podman[@]}" run -d --name "to-smoke-worker-$i" --network host "${env_args[@]}" \
    -e DRAMATIQ_THREADS=2 -e WORKER_SHUTDOWN_TIMEOUT_MS=20000 -e LOG_LEVEL=DEBUG \
    taskoverflow-worker:smoke \
    >/dev/null 2> >(quiet_systemd)
done
for _ in $(seq 60); do curl -fs "$API/api/v1/health" >/dev/null && break; sleep 0.5; done

say "health, answered from inside the API container"
"${podman[@]}" exec to-smoke-api python -c \
  "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$PORT/api/v1/health').read().decode())" \
  | grep -q '"status":"ok"' || fail "health check from the API container"
"${podman[@]}" healthcheck run to-smoke-api || fail "the image's HEALTHCHECK"
echo "ok (and the image's HEALTHCHECK passes)"

say "non-root users"
for n in "${names[@]}"; do
  uid=$("${podman[@]}" exec "$n" id -u)
  echo "$n runs as uid $uid"
  [ "$uid" != 0 ] || fail "$n runs as root"
done

wait_status() {  # job_id wanted... -> prints the status reached, fails after 90 s
  local id=$1; shift
  for _ in $(seq 900); do
    s=$(psql_ "SELECT status FROM jobs WHERE id = '$id'")
    for w in "$@"; do [ "$s" = "$w" ] && { echo "$s"; return 0; }; done
    sleep 0.1
  done
  fail "job $id stuck in $s"
}

say "a calendar job through the API container"
curl -fs -X POST "$API/api/v1/todos" -H 'content-type: application/json' \
  -d '{"title": "Smoke; test, todo", "deadline_at": "2030-01-01T09:00:00"}' >/dev/null
task_url=$(curl -fs -X POST "$API/api/v1/todos/ical" | python3 -c 'import json,sys; print(json.load(sys.stdin)["task_url"])')
job_id=${task_url%/status}; job_id=${job_id##*/}
[ "$(wait_status "$job_id" SUCCESS FAILURE)" = SUCCESS ] || fail "job $job_id failed"
curl -fs "${task_url%/status}/result" | grep -q 'SUMMARY:Smoke\\; test\\, todo' || fail "calendar content"
echo "job $job_id: SUCCESS, calendar served"

say "SIGTERM to the worker busy with a big job"
psql_ "INSERT INTO todos (title, completed, deadline_at, created_at, updated_at)
       SELECT 'Todo ' || i, false, now() + i * interval '1 minute', now(), now()
       FROM generate_series(1, 600000) AS i"
task_url=$(curl -fs -X POST "$API/api/v1/todos/ical" | python3 -c 'import json,sys; print(json.load(sys.stdin)["task_url"])')
job_id=${task_url%/status}; job_id=${job_id##*/}
wait_status "$job_id" STARTED SUCCESS >/dev/null
busy=""  # the workers run at LOG_LEVEL=DEBUG here: "job started" is a DEBUG line
for _ in $(seq 50); do
  for i in 1 2; do
    "${podman[@]}" logs "to-smoke-worker-$i" 2>&1 | grep '"job started"' | grep -q "$job_id" && busy="to-smoke-worker-$i"
  done
  [ -n "$busy" ] && break; sleep 0.1
done
[ -n "$busy" ] || fail "no worker logged job $job_id as started"
start=$(date +%s.%N)
"${podman[@]}" stop -t 30 "$busy" >/dev/null
took=$(python3 -c "print(round($(date +%s.%N) - $start, 1))")
code=$("${podman[@]}" inspect -f '{{.State.ExitCode}}' "$busy")
echo "$busy stopped in $took s with exit code $code"
[ "$code" = 0 ] || fail "$busy exited $code (137 = killed after the stop timeout)"
[ "$(wait_status "$job_id" SUCCESS FAILURE)" = SUCCESS ] || fail "handed-back job $job_id failed"
attempts=$(psql_ "SELECT attempts FROM jobs WHERE id = '$job_id'")
echo "job $job_id: SUCCESS after the SIGTERM (attempts: $attempts)"
[ "$attempts" = 2 ] || fail "the job was not handed back mid-run (attempts: $attempts)"

say "images-smoke passed"
