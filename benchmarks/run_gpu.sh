#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md, on the (offline) device machine.
#
# Before, on a machine with the package index, from the project's root:
#   ../shared/gpu/fetch-wheels.sh                       # wheels the GPU image lacks -> .whl/
#   mkdir -p .gpu-shared/models .gpu-shared/data
#   cp ../shared/models/deepseek-r1-distill-llama-8b.json .gpu-shared/models/
#   cp -r ../shared/data/gsm8k .gpu-shared/data/        # optional: else GSM8K-length rows
# Then on the device machine (carry .whl and .gpu-shared), from the project's root, one or two
# stages per call:
#   bash benchmarks/run_gpu.sh setup cap      # install, build the random 8B model, seed's case
#   bash benchmarks/run_gpu.sh speed          # seed baseline vs sftkit's QLoRA recipe (+ ablations)
#   bash benchmarks/run_gpu.sh core           # 15 grid points; repeat until nothing is left
#   bash benchmarks/run_gpu.sh full           # all 42 points (optional)
#   bash benchmarks/run_gpu.sh gpu-tests      # pytest -m gpu
#
# Results accumulate in .bench/results (kept between calls while the machine stays warm);
# every call copies them to $OUT and prints the tables (benchmarks/report.py). A grid or speed
# stage starts no run after BUDGET_S seconds (default 300) and gives each run at most
# RUN_TIMEOUT_S (default 240), so a call fits the 10-minute command limit; runs that finished
# are skipped when the same command runs again. DEVICE=cpu TINY=1 runs the same stages with a
# tiny model on a CPU (how this script is checked without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEVICE=${DEVICE:-cuda}
TINY=${TINY:-0}
BENCH=${BENCH_DIR:-$ROOT/.bench}
SHARED=${SHARED_DIR:-$ROOT/.gpu-shared}
CONFIG=$SHARED/models/deepseek-r1-distill-llama-8b.json
GSM8K=$SHARED/data/gsm8k
RESULTS=$BENCH/results
SITE=$BENCH/site
BUDGET_S=${BUDGET_S:-300}
RUN_TIMEOUT_S=${RUN_TIMEOUT_S:-240}
OUT=${OUT:-$BENCH/out}
if [ "$TINY" = 1 ]; then
  MODEL=$BENCH/tiny-random
  GRID_ARGS=(--seq-lens 96,128 --steps 2 --override training.liger_kernels=false)
  SPEED_ARGS=(--steps 2 --warmup-steps 1 --rows 80 --variants sftkit-no-packing
              --override training.max_seq_length=256 --override training.liger_kernels=false
              --override training.gradient_accumulation_steps=1
              --override data.format.options.dev_size=4
              --baseline-override gradient_accumulation_steps=1 --baseline-override max_length=256)
else
  MODEL=$BENCH/r1-8b-random
  GRID_ARGS=()
  SPEED_ARGS=()
fi
export PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export SFTKIT_DISABLE_PLUGIN_AUTOLOAD=1
mkdir -p "$RESULTS" "$OUT"

install() {
  # The GPU image lacks trl, bitsandbytes, datasets, liger-kernel and pydantic (see
  # ../shared/gpu/README.md); install the carried wheels once, next to the checkout.
  python3 -c "import trl, bitsandbytes, datasets, pydantic" 2>/dev/null && return 0
  ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/: run ../shared/gpu/fetch-wheels.sh and carry .whl" >&2; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl
}

versions() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  python3 - <<'PY'
from importlib import metadata
for name in ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets", "liger-kernel", "triton"):
    try:
        print(name, metadata.version(name))
    except metadata.PackageNotFoundError:
        print(name, "missing")
PY
}

model() {
  [ -f "$MODEL/random_model.json" ] && return 0
  data_arg=()
  [ -d "$GSM8K" ] && data_arg=(--data "$GSM8K")
  if [ "$TINY" = 1 ]; then
    python3 -m benchmarks.build_random_model --tiny --out "$MODEL" --device "$DEVICE" "${data_arg[@]}"
  else
    [ -f "$CONFIG" ] || { echo "missing $CONFIG: copy ../shared/models into .gpu-shared/models" >&2; exit 1; }
    python3 -m benchmarks.build_random_model --config "$CONFIG" --out "$MODEL" --device "$DEVICE" "${data_arg[@]}"
  fi
}

grid() {
  install; model
  python3 -m benchmarks.grid --model-dir "$MODEL" --out "$RESULTS/grid" --device "$DEVICE" \
    --select "$1" --budget-s "$BUDGET_S" --timeout-s "$RUN_TIMEOUT_S" "${GRID_ARGS[@]}"
}

speed() {
  install; model
  data_arg=()
  [ -d "$GSM8K" ] && data_arg=(--data "$GSM8K")
  python3 -m benchmarks.compare_speed --model-dir "$MODEL" --out "$RESULTS/speed" --device "$DEVICE" \
    --budget-s "$BUDGET_S" --timeout-s "$RUN_TIMEOUT_S" "${data_arg[@]}" "${SPEED_ARGS[@]}"
}

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(setup cap)
for stage in "${stages[@]}"; do
  echo "=== $stage ==="
  case $stage in
    setup) install; versions; model ;;
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
