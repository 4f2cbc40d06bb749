#!/usr/bin/env bash
# Full benchmark run against the sandbox; prints everything bench/RESULTS.md records.
#   bench/run_all.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
echo "# $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname): $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM"
for bench in drop_burst pickup_latency prolog end_to_end idle user_commands service log_streams; do
  echo
  echo "## $bench"
  "$PY" "bench/$bench.py" "$@"
done
