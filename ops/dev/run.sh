#!/usr/bin/env bash
# The whole system in the foreground: migrations, then the API and a worker pool side by side.
# Ctrl-C (or either process exiting) stops everything. Used by `make run`.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${VENV:-.venv}/bin
port=${PORT:-6400}; processes=${PROCESSES:-1}; threads=${THREADS:-4}

"$bin/python" ops/dev/create_database.py
"$bin/alembic" upgrade head

pids=()
stop() {
  trap - INT TERM EXIT
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

"$bin/uvicorn" --factory api.app:create_app_from_env --host 127.0.0.1 --port "$port" --no-access-log --no-proxy-headers &
pids+=($!)
WORKER_PROCESSES=$processes DRAMATIQ_THREADS=$threads "$bin/python" -m workers &
pids+=($!)

echo "TaskOverflow: API on http://127.0.0.1:$port/api/v1/todos (docs: /schema), $processes worker process(es) x $threads threads. Ctrl-C to stop."
wait -n "${pids[@]}"
