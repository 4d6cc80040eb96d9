#!/usr/bin/env bash
# Read-path throughput of a TaskOverflow API with wrk (Debian package): the health check, one
# todo by id and the list of 100 todos. Makes the server hold exactly 100 todos first (with
# jobs_client.py beside this script; $PYTHON must have aiohttp). One JSON line per path.
#   ops/bench/api_rps.sh http://127.0.0.1:6402 [SECONDS]
set -euo pipefail
base=$1
seconds=${2:-8}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
"$python" "$here/jobs_client.py" "$base" --jobs 1 --concurrency 1 --todos 100 >/dev/null
first_id=$(curl -fs "$base/api/v1/todos" | "$python" -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')
for path in /api/v1/health "/api/v1/todos/$first_id" /api/v1/todos; do
  report=$(wrk -t2 -c32 -d"${seconds}s" --latency "$base$path")
  field() { echo "$report" | awk "$1"; }
  rps=$(field '/Requests\/sec/ {print $2}')
  p50=$(field '$1 == "50%" {print $2}')
  p99=$(field '$1 == "99%" {print $2}')
  non2xx=$(field '/Non-2xx/ {print $4}')
  printf '{"path": "%s", "rps": %s, "p50": "%s", "p99": "%s", "non2xx": %s}\n' \
    "$path" "$rps" "$p50" "$p99" "${non2xx:-0}"
done
