"""The evaluation phase's merged copy: a bf16 copy of a quantized model with its adapters
merged, which sftkit's evaluators generate with when it fits (`sftkit.evaluation.merged`).

Priced as one term of the evaluation phase, 2 bytes per parameter, when the recipe's base is
quantized, one of its evaluators allows the copy (a ``merged_copy`` option that is true) and
the evaluation phase, estimated without it, has room for it (`estimator.compute` asks, once
the other terms are summed); otherwise the evaluators run on the quantized model and nothing
is added. The evaluators' own batch search estimates without the copy
(`without_merged_copy`) and adds its bytes itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from sftkit.memory.terms import MemoryTerm

if TYPE_CHECKING:
    from sftkit.memory.budget import MemoryBudget
    from sftkit.modelshape import ModelShape
    from sftkit.recipe.load import ResolvedRecipe

NAME = "bf16 copy with adapters merged, for evaluation"
_EXCLUDED: ContextVar[bool] = ContextVar("sftkit_merged_copy_excluded", default=False)


@contextmanager
def without_merged_copy() -> Iterator[None]:
    """Estimates made inside leave the merged copy out."""
    token = _EXCLUDED.set(True)
    try:
        yield
    finally:
        _EXCLUDED.reset(token)


def copy_bytes(shape: ModelShape) -> int:
    return 2 * shape.parameters


def has_room(evaluation_bytes: int, extra_bytes: int, budget: MemoryBudget) -> bool:
    """Does an evaluation phase of `evaluation_bytes` (device used, without the copy) fit
    `budget` with `extra_bytes` more, the allocator's margin on them included on a GPU?"""
    from sftkit.memory.budget import allocator_margin

    margin = allocator_margin(extra_bytes) if budget.is_gpu else 0
    return evaluation_bytes + extra_bytes + margin <= budget.total_bytes


def wants_copy(resolved: ResolvedRecipe) -> bool:
    """A quantized base and an evaluator whose ``merged_copy`` option is true."""
    if not resolved.strategy_parts.storage.quantized:
        return False
    components = (*resolved.evaluators, *resolved.during_training)
    return any(getattr(c.options, "merged_copy", False) for c in components)


def merged_copy_term(
    resolved: ResolvedRecipe, shape: ModelShape, evaluation_bytes: int, budget: MemoryBudget
) -> MemoryTerm | None:
    """The copy's term, or None (not wanted, or no room beside the `evaluation_bytes` the
    evaluation phase holds without it)."""
    if _EXCLUDED.get() or not wants_copy(resolved):
        return None
    size = copy_bytes(shape)
    if not has_room(evaluation_bytes, size, budget):
        return None
    return MemoryTerm(
        NAME, size, ("evaluation",), category="weights", formula="2 bytes x parameters"
    )
