"""The vocabulary strategy parts speak: a laid-out tensor and the precision it is laid in."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from sftkit.dtypes import FP32

TensorKind = Literal["base", "quant_constants", "unquantized", "adapter", "copy", "buffer"]


@dataclass(frozen=True)
class Precision:
    """The dtypes a run builds its model in: ``model_bytes`` is ``model.dtype``'s element
    size, ``compute_bytes`` that of ``training.precision`` (the matmul dtype under autocast)."""

    model_bytes: int
    compute_bytes: int

    @property
    def autocast(self) -> bool:
        """HF Trainer (accelerate) runs the forward under autocast for bf16/fp16 precision."""
        return self.compute_bytes < FP32

    @property
    def matmul_bytes(self) -> int:
        """The dtype a dense linear layer computes and returns in."""
        return self.compute_bytes if self.autocast else self.model_bytes


@dataclass(frozen=True)
class LaidTensor:
    """One tensor (or `count` identical ones, one per layer) a built model holds."""

    name: str
    kind: TensorKind
    shape: tuple[int, ...]
    count: int
    bytes_each: int
    dtype_bytes: int  # element size for trainable tensors (gradients/optimizer pricing)
    trainable: bool = False
    on_host: bool = False  # kept in host memory once the model is loaded (a frozen lookup)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def total_bytes(self) -> int:
        return self.bytes_each * self.count
