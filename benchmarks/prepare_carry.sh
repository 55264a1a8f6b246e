#!/usr/bin/env bash
# Fill the two git-ignored folders a GPU call carries, on a machine with the package index,
# from the project's root, then check their size (benchmarks/carry.py):
#   .whl/         the wheels the GPU image lacks (../shared/gpu/README.md), one version each
#   .gpu-shared/  the 8B architecture config and GSM8K (files beside the checkout do not
#                 reach the GPU machine)
# Usage: bash benchmarks/prepare_carry.sh [SHARED_DIR]   (default ../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${1:-../shared}
PYTHON=${PYTHON:-python3}
mkdir -p .whl .gpu-shared/models .gpu-shared/data/gsm8k
# The list of ../shared/gpu/fetch-wheels.sh, plus xxhash (a dependency of datasets that the
# image's list does not name). --no-deps: the image has everything else.
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  bitsandbytes==0.50.2 trl==1.16.0 datasets==5.2.0 "dill<0.4.2" "multiprocess<0.70.20" \
  liger-kernel==0.8.5 pydantic pydantic-core annotated-types typing-inspection xxhash
cp "$SHARED/models/deepseek-r1-distill-llama-8b.json" .gpu-shared/models/
# GSM8K's train split (4 MB): the tokenizer is trained on it and the speed runs read it.
cp "$SHARED/data/gsm8k/train.jsonl" .gpu-shared/data/gsm8k/
"$PYTHON" -m benchmarks.carry >/dev/null
