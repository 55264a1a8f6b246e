#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md, on the (offline) device machine.
#
# Before, on a machine with the package index, from the project's root:
#   ../shared/gpu/fetch-wheels.sh                       # wheels the GPU image lacks -> .whl/
#   mkdir -p .gpu-shared/models .gpu-shared/data
#   cp ../shared/models/deepseek-r1-distill-llama-8b.json .gpu-shared/models/
#   cp -r ../shared/data/gsm8k .gpu-shared/data/        # optional: else GSM8K-length rows
# Then on the device machine (carry .whl and .gpu-shared), from the project's root:
#   bash benchmarks/run_gpu.sh [STAGE ...]        default stages: setup cap core speed
#
# Stages: setup (install the wheels, build the random 8B model once), cap (the seed's case
# under a 40 GiB cap), core (15 grid points), full (all 42), speed (seed baseline vs sftkit's
# QLoRA recipe), gpu-tests (pytest -m gpu), report. Results accumulate in .bench/results
# (kept between calls while the machine stays warm); every call copies them to $OUT and prints
# the tables. A grid stage starts no point after BUDGET_S seconds (default 480), so each call
# fits the 10-minute command limit: repeat the same command until it reports nothing left.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=${BENCH_DIR:-$ROOT/.bench}
SHARED=${SHARED_DIR:-$ROOT/.gpu-shared}
CONFIG=$SHARED/models/deepseek-r1-distill-llama-8b.json
GSM8K=$SHARED/data/gsm8k
MODEL=$BENCH/r1-8b-random
RESULTS=$BENCH/results
SITE=$BENCH/site
BUDGET_S=${BUDGET_S:-480}
OUT=${OUT:-$BENCH/out}
export PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export SFTKIT_DISABLE_PLUGIN_AUTOLOAD=1 PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-}
mkdir -p "$RESULTS" "$OUT"

install() {
  [ -f "$SITE/.installed" ] && return 0
  ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/: run ../shared/gpu/fetch-wheels.sh and carry .whl" >&2; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl
  touch "$SITE/.installed"
}

versions() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 - <<'PY'
import importlib
for name in ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets", "liger_kernel", "triton"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as exc:  # noqa: BLE001 - a missing package is reported, not fatal
        print(f"{name} missing ({type(exc).__name__})")
PY
}

setup() {
  install
  versions
  [ -f "$CONFIG" ] || { echo "missing $CONFIG: copy ../shared/models into .gpu-shared/models" >&2; exit 1; }
  data_arg=()
  [ -d "$GSM8K" ] && data_arg=(--data "$GSM8K")
  python3 -m benchmarks.build_random_model --config "$CONFIG" --out "$MODEL" --device cuda "${data_arg[@]}"
}

grid() {
  install
  [ -f "$MODEL/random_model.json" ] || setup
  python3 -m benchmarks.grid --model-dir "$MODEL" --out "$RESULTS/grid" --device cuda \
    --select "$1" --budget-s "$BUDGET_S"
}

speed() {
  install
  [ -f "$MODEL/random_model.json" ] || setup
  data_arg=()
  [ -d "$GSM8K" ] && data_arg=(--data "$GSM8K")
  python3 -m benchmarks.compare_speed --model-dir "$MODEL" --out "$RESULTS/speed" --device cuda \
    "${data_arg[@]}"
}

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(setup cap core speed)
for stage in "${stages[@]}"; do
  echo "=== $stage ==="
  case $stage in
    setup) setup ;;
    cap|core|full) grid "$stage" ;;
    speed) speed ;;
    gpu-tests) install; python3 -m pytest -m gpu -q tests ;;
    report) ;;
    *) echo "unknown stage $stage (setup cap core full speed gpu-tests report)" >&2; exit 2 ;;
  esac
done
python3 -m benchmarks.report "$RESULTS" --out "$RESULTS/report.md" >/dev/null
cp -r "$RESULTS" "$OUT/"
cat "$RESULTS/report.md"
