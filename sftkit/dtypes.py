"""Element sizes of the dtypes a recipe can name: one table, torch-free."""

from __future__ import annotations

FP32 = 4
INT64 = 8

# model.dtype / compute_dtype names (torch's spelling)
DTYPE_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}
# training.precision names
PRECISION_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}
# element size -> the short name the estimate prints
DTYPE_NAMES: dict[int, str] = {1: "int8", 2: "bf16", 4: "fp32"}
