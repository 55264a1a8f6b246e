"""What to change when a recipe does not fit, each change re-estimated.

Variants: modified copies of a resolved recipe; the estimator re-runs on each instead of
guessing what a change would save.

The fit search: the largest micro-batch, sequence length, or the fewest GPUs that fit.
Memory is monotone in each of them (tests/test_memory_properties.py checks it), so an
exponential probe followed by a binary search finds the boundary in O(log n) estimates.

The cheapest changes that make a rejected recipe fit:
Candidates come from the registry and the recipe, never from a list of names: every other
registered optimizer and strategy, gradient checkpointing, a smaller micro-batch (with more
accumulation, so the effective batch stays), a shorter sequence, and more GPUs with
sharding. They are listed in that order of disruption, and only those that fit.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sftkit.engine import engine_of
from sftkit.errors import SftkitError
from sftkit.memory.estimator import compute
from sftkit.memory.result import Suggestion

if TYPE_CHECKING:
    from sftkit.memory.result import Estimate
    from sftkit.recipe.load import ResolvedRecipe
    from sftkit.specs import OptionSearch


DELETE = object()


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            if value is DELETE:
                return
            child = node[part] = {}
        node = child
    if value is DELETE:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


def variant(resolved: ResolvedRecipe, changes: Mapping[str, Any]) -> ResolvedRecipe | None:
    """The recipe with `changes` (dotted path -> value, or DELETE) applied and validated
    again; None when the change makes it invalid (e.g. an incompatible combination)."""
    from sftkit.recipe.load import validate_recipe_data

    data = copy.deepcopy(resolved.raw)
    for path, value in changes.items():
        _set(data, path, value)
    try:
        return validate_recipe_data(data, registry=resolved.registry, source=resolved.source)
    except SftkitError:
        return None


def render_override(path: str, value: Any) -> str:
    if value is DELETE:
        return f"~{path}"
    if isinstance(value, bool):
        return f"{path}={'true' if value else 'false'}"
    return f"{path}={value}"


def component_switch(resolved: ResolvedRecipe, key: str, name: str) -> dict[str, Any]:
    """Changes that switch component `key` (strategy/optimizer) to `name`, keeping the options
    the new component accepts and deleting the rest."""
    catalog = resolved.registry.strategies if key == "strategy" else resolved.registry.optimizers
    fields = set(catalog.get(name).options_model.model_fields)
    raw = resolved.raw.get(key, {})
    options = raw.get("options", {}) if isinstance(raw, dict) else {}
    changes: dict[str, Any] = {f"{key}.name": name}
    for option in options or {}:
        if option not in fields:
            changes[f"{key}.options.{option}"] = DELETE
    return changes


class Fits(Protocol):
    """What a search needs of a probe's answer: an `Estimate`, or anything that says fits."""

    @property
    def fits(self) -> bool: ...


Probe = Callable[[int], "Fits | None"]


def largest(probe: Probe, lo: int, hi: int, step: int = 1) -> tuple[int | None, Any, Any]:
    """The largest multiple of `step` in [lo, hi] whose estimate fits, found with an
    exponential probe then a binary search: (value, its estimate, (next value up, its
    estimate) or None when the search hit `hi`)."""
    k_lo, k_hi = -(-lo // step), hi // step
    cache: dict[int, Any] = {}

    def fits(k: int) -> bool:
        if k not in cache:
            cache[k] = probe(k * step)
        est = cache[k]
        return est is not None and est.fits

    if k_lo > k_hi or not fits(k_lo):
        return None, cache.get(k_lo), None
    good, bad = k_lo, None
    while bad is None and good < k_hi:
        k = min(good * 2, k_hi)
        if fits(k):
            good = k
        else:
            bad = k
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    nxt = (bad * step, cache[bad]) if bad is not None else None
    return good * step, cache[good], nxt


def _result(
    key: str, found: tuple[int | None, Any, Any], limit: int, smallest: int
) -> dict[str, Any]:
    value, est, nxt = found
    out: dict[str, Any] = {"value": value, "limit": limit, "smallest_tried": smallest}
    if value is not None:
        out["peak_bytes"] = est.peak_bytes
        out["peak_phase"] = est.peak_phase
    if nxt is not None and nxt[1] is not None:
        out["next"] = nxt[0]
        out["next_peak_bytes"] = nxt[1].peak_bytes
    return out


def search(
    resolved: ResolvedRecipe,
    path: str,
    lo: int,
    hi: int,
    step: int = 1,
    *,
    gpu: str | None = None,
    model: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    def probe(value: int) -> Estimate | None:
        changed = variant(resolved, {path: value, **(extra or {})})
        return None if changed is None else compute(changed, gpu=gpu, model=model)

    return _result(path, largest(probe, lo, hi, step), hi, lo)


MAX_MICRO_BATCH = 4096
MAX_SEQ_SEARCH = 1 << 20  # 1,048,576 tokens
MAX_GPUS = 64


def fit_search(
    resolved: ResolvedRecipe, *, gpu: str | None = None, model: str | None = None
) -> dict[str, Any]:
    """Largest micro-batch and, separately, largest sequence length that fit."""
    from sftkit.memory.estimator import shape_for

    shape = shape_for(resolved, model)
    # Memory decides the row length searched; the model's position window is said beside it
    # (rows past it run on positions the model never saw unless its rope is scaled).
    max_seq = MAX_SEQ_SEARCH
    batch_step = _micro_batch_step(resolved)
    results = {
        "training.micro_batch_size": search(
            resolved,
            "training.micro_batch_size",
            batch_step,
            MAX_MICRO_BATCH,
            batch_step,
            gpu=gpu,
            model=model,
        ),
        "training.max_seq_length": search(
            resolved,
            "training.max_seq_length",
            min(64, max_seq),
            max_seq,
            step=64 if max_seq >= 64 else 1,
            gpu=gpu,
            model=model,
        ),
    }
    if shape.max_position_embeddings:
        results["training.max_seq_length"]["window"] = shape.max_position_embeddings
    r = resolved.recipe
    objective = resolved.registry.objectives.get(r.training.objective)
    for wanted in objective.fit_searches:  # what the objective declares (grpo: completions)
        path = f"training.objective_options.{wanted.option}"
        if wanted.per_prompt:
            results[path] = per_prompt_search(resolved, wanted, gpu=gpu, model=model)
        else:
            results[path] = search(
                resolved, path, wanted.lowest, wanted.highest, wanted.step, gpu=gpu, model=model
            )
    if engine_of(r).searches_gpu_counts(r.distributed):
        results["hardware.num_gpus"] = _gpu_search(resolved, gpu=gpu, model=model)
    return results


ACCUMULATION = "training.gradient_accumulation_steps"


def per_prompt_search(
    resolved: ResolvedRecipe,
    wanted: OptionSearch,
    *,
    gpu: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """The largest value of a per-prompt option (`OptionSearch.per_prompt`: sequences per
    prompt in the batch of micro_batch x accumulation x GPUs) that fits at the recipe's
    prompts per batch: each value v is tried with accumulation prompts x v / (micro_batch x
    GPUs), so only the v that make that whole (multiples of `step`, below) are tried. Memory
    grows with v (a larger batch generated at once, the training micro-batch unchanged)."""
    r = resolved.recipe
    t = r.training
    path = f"training.objective_options.{wanted.option}"
    objective = resolved.registry.objectives.get(t.objective)
    current = int(
        getattr(objective.options_model.model_validate(t.objective_options), wanted.option)
    )
    per_step = t.micro_batch_size * r.hardware.num_gpus  # sequences per accumulation step
    prompts = per_step * t.gradient_accumulation_steps // current
    step = math.lcm(per_step // math.gcd(prompts, per_step), wanted.step)

    def accumulation(value: int) -> int:
        return prompts * value // per_step

    def probe(value: int) -> Estimate | None:
        changed = variant(resolved, {path: value, ACCUMULATION: accumulation(value)})
        return None if changed is None else compute(changed, gpu=gpu, model=model)

    lowest = -(-wanted.lowest // step) * step
    out = _result(path, largest(probe, lowest, wanted.highest, step), wanted.highest, lowest)
    out["prompts"] = prompts
    if out["value"] is not None:
        out["with"] = {ACCUMULATION: accumulation(out["value"])}
    return out


def _micro_batch_step(resolved: ResolvedRecipe) -> int:
    """The micro-batches worth trying: an objective that generates in groups (`Rollout.group`)
    needs micro_batch x accumulation x GPUs to be whole groups."""
    t = resolved.recipe.training
    objective = resolved.registry.objectives.get(t.objective)
    if objective.rollout is None:
        return 1
    group = objective.rollout(objective.options_model.model_validate(t.objective_options)).group
    per_micro_batch = t.gradient_accumulation_steps * resolved.recipe.hardware.num_gpus
    return group // math.gcd(group, per_micro_batch)


def _gpu_search(resolved: ResolvedRecipe, *, gpu: str | None, model: str | None) -> dict[str, Any]:
    """The fewest GPUs that fit with the recipe's own sharding engine (per-GPU memory only
    falls as GPUs are added)."""
    found = fewest_gpus(resolved, {}, gpu=gpu, model=model)
    one = variant(resolved, {"hardware.num_gpus": 1})
    if one is not None and compute(one, gpu=gpu, model=model).fits:
        est = compute(one, gpu=gpu, model=model)
        return {
            "fewest": 1,
            "peak_bytes": est.peak_bytes,
            "peak_phase": est.peak_phase,
            "limit": MAX_GPUS,
        }
    if found is None:
        return {"fewest": None, "limit": MAX_GPUS}
    n, est = found
    return {
        "fewest": n,
        "peak_bytes": est.peak_bytes,
        "peak_phase": est.peak_phase,
        "limit": MAX_GPUS,
    }


def fewest_gpus(
    resolved: ResolvedRecipe,
    engine_changes: dict[str, Any],
    *,
    gpu: str | None = None,
    model: str | None = None,
    limit: int = MAX_GPUS,
) -> tuple[int, Estimate] | None:
    """The smallest GPU count in 2..limit that fits with `engine_changes`."""
    for n in range(2, limit + 1):
        changed = variant(resolved, {"hardware.num_gpus": n, **engine_changes})
        if changed is None:
            return None
        est = compute(changed, gpu=gpu, model=model)
        if est.fits:
            return n, est
    return None


PER_CATEGORY = 3
GPUS = 5  # the category of more GPUs: the most disruptive change


@dataclass(frozen=True)
class Candidate:
    category: int  # order of disruption: lower is cheaper
    change: str
    changes: dict[str, Any]


def _single(resolved: ResolvedRecipe) -> list[Candidate]:
    r = resolved.recipe
    out = []
    if not r.training.gradient_checkpointing:
        out.append(
            Candidate(
                0, "turn on gradient checkpointing", {"training.gradient_checkpointing": True}
            )
        )
    for name in resolved.registry.optimizers.names():
        if name != r.optimizer.name:
            out.append(
                Candidate(1, f"optimizer {name}", component_switch(resolved, "optimizer", name))
            )
    for name in resolved.registry.strategies.names():
        if name != r.strategy.name:
            out.append(
                Candidate(4, f"strategy {name}", component_switch(resolved, "strategy", name))
            )
    return out


def _evaluate(
    resolved: ResolvedRecipe, candidate: Candidate, gpu: str | None, model: str | None
) -> Suggestion | None:
    changed = variant(resolved, candidate.changes)
    if changed is None:
        return None
    est = compute(changed, gpu=gpu, model=model)
    if not est.fits:
        return None
    return _suggestion(candidate, est)


def _suggestion(candidate: Candidate, est: Estimate) -> Suggestion:
    overrides = tuple(render_override(k, v) for k, v in candidate.changes.items())
    return Suggestion(
        candidate.change,
        overrides,
        est.peak_bytes,
        est.peak_phase,
        est.budget_bytes,
        est.paged_spill_bytes,
    )


def _smaller_batch(
    resolved: ResolvedRecipe, gpu: str | None, model: str | None
) -> Suggestion | None:
    t = resolved.recipe.training
    if t.micro_batch_size <= 1:
        return None
    effective = t.micro_batch_size * t.gradient_accumulation_steps

    def probe(b: int) -> Estimate | None:
        changed = variant(resolved, {"training.micro_batch_size": b})
        return None if changed is None else compute(changed, gpu=gpu, model=model)

    value, est, _ = largest(probe, 1, t.micro_batch_size - 1)
    if value is None:
        return None
    accumulation = math.ceil(effective / value)
    candidate = Candidate(
        2,
        f"micro-batch {value} x accumulation {accumulation} (effective batch {value * accumulation})",
        {"training.micro_batch_size": value, "training.gradient_accumulation_steps": accumulation},
    )
    return _suggestion(candidate, est)


def _shorter_sequence(
    resolved: ResolvedRecipe, gpu: str | None, model: str | None
) -> Suggestion | None:
    s = resolved.recipe.training.max_seq_length
    step = 64 if s > 64 else 8
    if s - step < 8:
        return None

    def probe(n: int) -> Estimate | None:
        changed = variant(resolved, {"training.max_seq_length": n})
        return None if changed is None else compute(changed, gpu=gpu, model=model)

    value, est, _ = largest(probe, step, s - 1, step)
    if value is None:
        return None
    candidate = Candidate(
        3,
        f"max_seq_length {value} (longer examples are truncated)",
        {"training.max_seq_length": value},
    )
    return _suggestion(candidate, est)


def _more_gpus(resolved: ResolvedRecipe, gpu: str | None, model: str | None) -> list[Suggestion]:
    """The fewest GPUs that fit with each way a registered engine scales out (the engines
    declare them: `Engine.scale_out`)."""
    from sftkit.engine import ENGINE_SETTINGS

    out = []
    distributed = resolved.raw.get("distributed")
    present = set(distributed) if isinstance(distributed, dict) else set()
    for entry in resolved.registry.engines:
        engine = entry.spec.load()
        for label, settings in engine.scale_out():
            changes: dict[str, Any] = {"distributed.engine": entry.spec.name}
            # settings the recipe has that the new engine does not read go (an override may
            # only delete a key the recipe has)
            for key in sorted(present & set(ENGINE_SETTINGS) - engine.reads - set(settings)):
                changes[f"distributed.{key}"] = DELETE
            changes.update({f"distributed.{k}": v for k, v in settings.items()})
            found = fewest_gpus(resolved, changes, gpu=gpu, model=model)
            if found is None:
                continue
            n, est = found
            out.append(
                _suggestion(
                    Candidate(
                        5,
                        f"{n} GPUs with {label} (per-GPU peak)",
                        {"hardware.num_gpus": n, **changes},
                    ),
                    est,
                )
            )
    return out


def suggest(
    resolved: ResolvedRecipe,
    rejected: Estimate,
    *,
    gpu: str | None = None,
    model: str | None = None,
) -> list[Suggestion]:
    singles = _single(resolved)
    found: list[tuple[int, Suggestion]] = []
    for candidate in singles:
        s = _evaluate(resolved, candidate, gpu, model)
        if s is not None:
            found.append((candidate.category, s))
    for category, maker in ((2, _smaller_batch), (3, _shorter_sequence)):
        s = maker(resolved, gpu, model)
        if s is not None:
            found.append((category, s))
    found.extend((GPUS, s) for s in _more_gpus(resolved, gpu, model))
    if not any(cat < GPUS for cat, _ in found):
        found.extend(_pairs(resolved, singles, gpu, model))
    # the least disruptive kind first and, within a kind, the changes that need least memory
    # (the least spilled paged state breaking ties); more GPUs: the fewest (highest per-GPU
    # peak) first
    found.sort(
        key=lambda cs: (
            cs[0],
            -cs[1].peak_bytes if cs[0] == GPUS else cs[1].peak_bytes,
            cs[1].spill_bytes,
        )
    )
    out: list[Suggestion] = []
    per: dict[int, int] = {}
    # Two changes with the same predicted memory are one suggestion (lora-plus prices
    # exactly as lora): the first registered is shown, and neither crowds out another.
    seen: set[tuple[int, int, str, int]] = set()
    for category, s in found:
        key = (category, s.peak_bytes, s.peak_phase, s.spill_bytes)
        if key not in seen and per.get(category, 0) < PER_CATEGORY:
            seen.add(key)
            per[category] = per.get(category, 0) + 1
            out.append(s)
    return out


def _pairs(
    resolved: ResolvedRecipe, singles: list[Candidate], gpu: str | None, model: str | None
) -> list[tuple[int, Suggestion]]:
    """Two changes at once, when no single one fits (e.g. LoRA and an 8-bit optimizer)."""
    out = []
    for a, b in itertools.combinations(singles, 2):
        if a.category == b.category:
            continue
        both = Candidate(
            max(a.category, b.category), f"{a.change} and {b.change}", {**a.changes, **b.changes}
        )
        s = _evaluate(resolved, both, gpu, model)
        if s is not None:
            out.append((both.category, s))
    return out
