"""A contribution to one phase (a `Part`), before parts with the same name are merged into
`MemoryTerm`s, and the small helpers every part-builder uses."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sftkit.components.storage import count_words
from sftkit.memory.terms import Category, Pool

__all__ = ["Part", "count_words", "div"]


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
