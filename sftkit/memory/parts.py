"""A contribution to one phase (a `Part`), before parts with the same name are merged into
`MemoryTerm`s, and the small helpers every part-builder uses."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sftkit.memory.terms import Category, Pool

DTYPE_NAMES = {1: "int8", 2: "bf16", 4: "fp32"}


def count_words(n: int) -> str:
    """8030261248 -> '8.0 B'; 41943040 -> '41.9 M'."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(n)


@dataclass(frozen=True)
class Part:
    """One contribution to one phase, before parts are merged into terms."""

    name: str
    bytes: int
    category: Category
    formula: str = ""
    pool: Pool = "device"


def div(n: int, k: int) -> int:
    return math.ceil(n / k) if k > 1 else n
