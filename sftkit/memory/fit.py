"""Searches for the largest setting that fits: micro-batch, sequence length, GPU count.

Memory is monotone in each of them (tests/test_memory_properties.py checks it), so an
exponential probe followed by a binary search finds the boundary in O(log n) estimates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sftkit.engine import engine_of
from sftkit.memory.compute import compute
from sftkit.memory.variants import variant

if TYPE_CHECKING:
    from sftkit.memory.result import Estimate
    from sftkit.recipe.load import ResolvedRecipe

Probe = Callable[[int], "Estimate | None"]


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
MAX_GPUS = 64


def fit_search(
    resolved: ResolvedRecipe, *, gpu: str | None = None, model: str | None = None
) -> dict[str, Any]:
    """Largest micro-batch and, separately, largest sequence length that fit."""
    from sftkit.memory.compute import shape_for

    shape = shape_for(resolved, model)
    max_seq = shape.max_position_embeddings or 131072
    results = {
        "training.micro_batch_size": search(
            resolved, "training.micro_batch_size", 1, MAX_MICRO_BATCH, gpu=gpu, model=model
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
    r = resolved.recipe
    if engine_of(r).searches_gpu_counts(r.distributed):
        results["hardware.num_gpus"] = _gpu_search(resolved, gpu=gpu, model=model)
    return results


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
