"""The memory estimator: from a recipe alone, peak device memory per phase and a verdict.

Pure arithmetic, no torch. `estimate()` answers; `preflight()` raises `DoesNotFitError`
(exit 3) with the same rejection text `sftkit estimate-memory` prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sftkit.errors import DoesNotFitError
from sftkit.memory.budget import MemoryBudget
from sftkit.memory.result import Estimate, Suggestion
from sftkit.memory.terms import PHASE_LABELS, PHASES, MemoryTerm

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe

__all__ = [
    "PHASES",
    "PHASE_LABELS",
    "Estimate",
    "MemoryBudget",
    "MemoryTerm",
    "Suggestion",
    "estimate",
    "preflight",
]


def estimate(
    resolved: ResolvedRecipe,
    *,
    gpu: str | None = None,
    model: str | None = None,
    advise: bool = True,
) -> Estimate:
    """Estimate `resolved` on `gpu` (default: the recipe's ``hardware.gpu``) for `model`
    (default: the recipe's ``model.name_or_path``). When it does not fit and `advise` is on,
    the estimate carries the cheapest changes that fit, each re-estimated."""
    from sftkit.memory.compute import compute

    result = compute(resolved, gpu=gpu, model=model)
    if advise and not result.fits and result.on_gpu:
        from sftkit.memory.advice import suggest

        result.suggestions = suggest(resolved, result, gpu=gpu, model=model)
    return result


def preflight(resolved: ResolvedRecipe, *, gpu: str | None = None) -> Estimate:
    """The check `sftkit run` makes before loading anything: returns the estimate when the
    run fits (or runs on ``cpu``, where the verdict is informational), else raises
    `DoesNotFitError` whose message is the rejection `estimate-memory` prints."""
    result = estimate(resolved, gpu=gpu)
    if result.fits or not result.on_gpu:
        return result
    raise DoesNotFitError(
        result.rejection(),
        hint="Apply one of the changes above as an override, or run anyway with `--force`.",
    )
