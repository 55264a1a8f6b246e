"""Floating-point dtypes by name: the names a recipe may use, the bytes per element, and the
torch dtype. The one table; torch is imported only when `torch_dtype` is called."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import torch

#: ``model.dtype``, a quantized base's ``compute_dtype``, an export's ``--dtype``.
DtypeName = Literal["bfloat16", "float16", "float32"]
#: ``training.precision``: the dtype matmuls run in under autocast.
Precision = Literal["bf16", "fp16", "fp32"]

DTYPE_NAMES: tuple[str, ...] = get_args(DtypeName)
DTYPE_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}
PRECISION_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}


def torch_dtype(name: str) -> torch.dtype:
    """``"bfloat16"`` -> ``torch.bfloat16`` (and float16, float32)."""
    import torch

    dtypes: dict[str, torch.dtype] = {
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "float32": torch.float32,
    }
    return dtypes[name]
