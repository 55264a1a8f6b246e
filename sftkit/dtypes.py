"""Dtypes by name: the names a recipe may use, the bytes per element, the short name the
estimate prints, and the torch dtype. The one table; torch-free (torch is imported only when
`torch_dtype` is called)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import torch

FP32 = 4
INT64 = 8
INT32 = 4

#: ``model.dtype``, a quantized base's ``compute_dtype``, an export's ``--dtype`` (torch's
#: spelling).
DtypeName = Literal["bfloat16", "float16", "float32"]
#: ``training.precision``: the dtype matmuls run in under autocast.
Precision = Literal["bf16", "fp16", "fp32"]

DTYPES: tuple[str, ...] = get_args(DtypeName)
DTYPE_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}
PRECISION_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}
# element size -> the short name the estimate prints
DTYPE_NAMES: dict[int, str] = {1: "int8", 2: "bf16", 4: "fp32"}


def torch_dtype(name: str) -> torch.dtype:
    """``"bfloat16"`` -> ``torch.bfloat16`` (and float16, float32)."""
    import torch

    dtypes: dict[str, torch.dtype] = {
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "float32": torch.float32,
    }
    return dtypes[name]
