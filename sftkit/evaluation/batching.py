"""The evaluation batch when the recipe sets none: the largest the memory estimator finds fits
the evaluation phase on the recipe's card; and whether a bf16 copy of a quantized model with
its adapters merged fits beside it (no torch; the estimator is arithmetic).

The evaluation phase holds the weights, the optimizer state the trainer still keeps, and the
largest evaluator's workload (KV cache, prefill, logits); `sftkit.memory.advice.largest`
searches the batch (exponential probe, then bisection) by re-estimating the recipe with that
evaluator's ``batch_size`` set. The batch never exceeds the number of problems, nor
`MAX_EVAL_BATCH`: past a few hundred rows a bigger batch buys nothing on any card, and on a
CPU the budget (host RAM) says little about speed.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sftkit.recipe.load import Component, ResolvedRecipe

MAX_EVAL_BATCH = 256
FALLBACK_BATCH = 8  # the recipe cannot be estimated (an unknown architecture offline)


def _located(resolved: ResolvedRecipe, component: Component[Any]) -> tuple[str, int] | None:
    """Where the recipe configures `component`: (``evaluators`` or ``during_training``,
    index), or None for an evaluator named on the command line only."""
    for section, components in (
        ("evaluators", resolved.evaluators),
        ("during_training", resolved.during_training),
    ):
        for index, configured in enumerate(components):
            if configured is component or configured.spec.name == component.spec.name:
                return section, index
    return None


def with_batch(resolved: ResolvedRecipe, component: Component[Any], batch: int) -> Any:
    """The recipe with `component`'s batch set to `batch` (a command-line evaluator becomes
    the recipe's only one), validated again; None if that makes it invalid."""
    from sftkit.errors import SftkitError
    from sftkit.recipe.load import validate_recipe_data

    data = copy.deepcopy(resolved.raw)
    evaluation = data.setdefault("evaluation", {}) or {}
    data["evaluation"] = evaluation
    options = {**component.options.model_dump(mode="json"), "batch_size": batch}
    entry = {"name": component.spec.name, "options": options}
    where = _located(resolved, component)
    if where is None:
        evaluation["evaluators"], evaluation["during_training"] = [entry], []
    else:
        evaluation[where[0]][where[1]] = entry
    try:
        return validate_recipe_data(data, registry=resolved.registry, source=resolved.source)
    except SftkitError:
        return None


def auto_batch_size(
    resolved: ResolvedRecipe, component: Component[Any], problems: int, extra_bytes: int = 0
) -> int | None:
    """The largest batch in [1, min(problems, MAX_EVAL_BATCH)] whose evaluation phase, plus
    `extra_bytes`, fits the recipe's card; None when even 1 does not (`FALLBACK_BATCH` when
    the recipe cannot be estimated)."""
    from sftkit.errors import SftkitError
    from sftkit.memory.advice import largest

    ceiling = max(1, min(problems, MAX_EVAL_BATCH))
    try:
        found, _, _ = largest(lambda b: _fit(resolved, component, b, extra_bytes), 1, ceiling)
    except (SftkitError, KeyError, ValueError, OSError):
        return min(FALLBACK_BATCH, ceiling)
    return found


def merged_copy_bytes(resolved: ResolvedRecipe) -> int:
    """What a bf16 copy of the model with the adapters merged adds to the evaluation phase
    (`sftkit.memory.evalcopy`), or 0 when the recipe's base is not quantized (no copy is
    made: a dense base gains nothing from one)."""
    if not resolved.strategy_parts.storage.quantized:
        return 0
    from sftkit.memory.estimator import shape_for
    from sftkit.memory.evalcopy import copy_bytes

    return copy_bytes(shape_for(resolved))


def plan(resolved: ResolvedRecipe, component: Component[Any], problems: int) -> tuple[int, bool]:
    """The evaluation's batch and whether it runs on a merged bf16 copy: the copy when the
    options allow it (``merged_copy``), the base is quantized and the evaluation phase fits
    with the copy at batch 1 at least (the batch then searched with the copy resident),
    otherwise the model as it is; a batch the options set is kept."""
    options = component.options
    fixed = getattr(options, "batch_size", None)
    copy = merged_copy_bytes(resolved) if getattr(options, "merged_copy", False) else 0
    if copy:
        from sftkit.errors import SftkitError

        try:
            if fixed is not None:
                fitting = _fit(resolved, component, fixed, copy)
                if fitting is not None and fitting.fits:
                    return fixed, True
            else:
                batch = auto_batch_size(resolved, component, problems, copy)
                if batch is not None:
                    return batch, True
        except (SftkitError, KeyError, ValueError, OSError):
            pass
    if fixed is not None:
        return fixed, False
    return auto_batch_size(resolved, component, problems) or 1, False


class _Fit:
    def __init__(self, estimate: Any, extra_bytes: int) -> None:
        from sftkit.memory.evalcopy import has_room

        self.fits = has_room(estimate.phases["evaluation"], extra_bytes, estimate.budget)


def _fit(
    resolved: ResolvedRecipe, component: Component[Any], batch: int, extra_bytes: int
) -> _Fit | None:
    from sftkit.memory.estimator import compute
    from sftkit.memory.evalcopy import without_merged_copy

    changed = with_batch(resolved, component, batch)
    if changed is None:
        return None
    with without_merged_copy():  # the copy is `extra_bytes` here, or not made
        return _Fit(compute(changed), extra_bytes)
