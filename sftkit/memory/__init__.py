"""The memory estimator: from a recipe alone, peak device memory per phase and a verdict.

Pure arithmetic, no torch. `estimate()` answers; `preflight()` raises `DoesNotFitError`
(exit 3) with the same rejection text `sftkit estimate-memory` prints.

The modules, in the order an estimate uses them: `setup` (what the estimator reads from a
recipe), `layout` (every tensor the built model holds, from the strategy's parts),
`optimizer` (gradients and optimizer state), `activations` and `moments` (what backward
keeps, and the peak moments of a step), `phases` (the terms of each phase), `estimator`
(`estimate()`, `preflight()`), `terms` (terms, phases, units), `result` (the estimate and
its rendering), `budget` (the device and its overheads), `advice` (the cheapest changes and
the fit search).
"""

from __future__ import annotations

from sftkit.memory.budget import MemoryBudget
from sftkit.memory.estimator import estimate, preflight
from sftkit.memory.result import Estimate, Suggestion
from sftkit.memory.terms import PHASE_LABELS, PHASES, MemoryTerm

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
