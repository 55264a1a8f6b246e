#!/usr/bin/env bash
# Every GPU measurement of docs/benchmarks.md in ONE device call that ends on its own inside
# 9 minutes (benchmarks/session.py says what it runs, in which order, and what it writes).
#
# Before, here (a machine with the package index), from the project's root:
#   bash benchmarks/prepare_carry.sh     # .whl/ (wheels the GPU image lacks), .gpu-shared/
#                                        # (the 8B config, GSM8K); checks the 64 MiB limit
# Then the device call, from the project's root, carrying .whl and .gpu-shared:
#   bash benchmarks/run_gpu.sh
# It writes exactly three files to $OUT, each as soon as there is something to write:
# points.jsonl (one line per finished point), run.log, report.md. Commit them under
# benchmarks/results/<device>-<date>/ (report.md names the folder).
#
# Settings (environment): DEVICE (cuda; cpu for the rehearsal), TINY=1 (the tiny model),
# BUDGET_S (420: start nothing after), DEADLINE_S (525: kill what still runs), STAGES
# (setup,model,cap,speed,fast,eval,rollout,grid,tests; rollout: GRPO's rollout phase by
# estimate-memory --measure), LIMIT (points per cap/fast/grid stage), BENCH_DIR (.bench:
# scratch, the model), SHARED_DIR (.gpu-shared). The rehearsal on a CPU, under 3 minutes:
#   DEVICE=cpu TINY=1 OUT=/tmp/rehearsal bash benchmarks/run_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/.bench/out}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
args=(--out "$OUT" --device "${DEVICE:-cuda}" --budget-s "${BUDGET_S:-420}"
      --deadline-s "${DEADLINE_S:-525}" --stages "${STAGES:-setup,model,cap,speed,fast,eval,rollout,grid,tests}"
      --bench-dir "${BENCH_DIR:-$ROOT/.bench}" --shared-dir "${SHARED_DIR:-$ROOT/.gpu-shared}")
[ "${TINY:-0}" = 1 ] && args+=(--tiny)
[ -n "${LIMIT:-}" ] && args+=(--limit "$LIMIT")
exec "$PYTHON" -m benchmarks.session "${args[@]}"
