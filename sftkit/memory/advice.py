"""The cheapest changes that make a rejected recipe fit, each re-estimated.

Candidates come from the registry and the recipe, never from a list of names: every other
registered optimizer and strategy, gradient checkpointing, a smaller micro-batch (with more
accumulation, so the effective batch stays), a shorter sequence, and more GPUs with
sharding. They are listed in that order of disruption, and only those that fit.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sftkit.memory.compute import compute
from sftkit.memory.fit import fewest_gpus, largest
from sftkit.memory.result import Suggestion
from sftkit.memory.variants import DELETE, component_switch, render_override, variant

if TYPE_CHECKING:
    from sftkit.memory.result import Estimate
    from sftkit.recipe.load import ResolvedRecipe

PER_CATEGORY = 3


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
    out = []
    distributed = resolved.raw.get("distributed")
    has_stage = isinstance(distributed, dict) and "zero_stage" in distributed
    fsdp: dict[str, Any] = {"distributed.engine": "fsdp"}
    if has_stage:  # an override may only delete a key the recipe has
        fsdp["distributed.zero_stage"] = DELETE
    engines = (
        ("FSDP full shard", fsdp),
        ("DeepSpeed ZeRO-3", {"distributed.engine": "deepspeed", "distributed.zero_stage": 3}),
    )
    for label, changes in engines:
        found = fewest_gpus(resolved, changes, gpu=gpu, model=model)
        if found is None:
            continue
        n, est = found
        out.append(
            _suggestion(
                Candidate(
                    5, f"{n} GPUs with {label} (per-GPU peak)", {"hardware.num_gpus": n, **changes}
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
    found.extend((5, s) for s in _more_gpus(resolved, gpu, model))
    if not any(cat < 5 for cat, _ in found):
        found.extend(_pairs(resolved, singles, gpu, model))
    found.sort(key=lambda cs: (cs[0], -cs[1].peak_bytes))
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
