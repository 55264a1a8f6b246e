"""A generation engine colocated with training on each GPU (`Rollout.engine`: vLLM in TRL's
colocate mode): its share of the GPU as a term, and whether that share holds what the engine
needs to start.

vLLM reserves ``engine_share`` x the GPU's memory when it starts (the trainer builds it right
after the model loads, so that much must be free then) and generates inside it: its copy of
the weights, its activations and, in the rest, its KV cache. The share is held from then on
(through training and the evaluation that follows, while the trainer lives), or only while
it generates where the engine sleeps between generations (`engine_sleeps`: vLLM's sleep
mode drops its weights and frees its cache). At start vLLM refuses a share whose KV cache
cannot hold one sequence of its longest context (sftkit bounds that to prompt + completion),
so a share below its weights plus that cache cannot run at all.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from sftkit.memory import activations as act
from sftkit.memory.terms import PHASES, MemoryTerm, gib

if TYPE_CHECKING:
    from sftkit.memory.budget import MemoryBudget
    from sftkit.memory.setup import Setup

# every phase after the engine starts (the trainer builds it once the model has loaded)
HELD = tuple(p for p in PHASES if p != "load")


def share_bytes(setup: Setup, budget: MemoryBudget) -> int:
    rollout = setup.rollout
    if rollout is None or not rollout.engine:
        return 0
    return int(rollout.engine_share * budget.total_bytes)


def engine_term(setup: Setup, budget: MemoryBudget) -> MemoryTerm | None:
    """The engine's share as a term of the phases it holds it in; None without an engine."""
    rollout = setup.rollout
    size = share_bytes(setup, budget)
    if rollout is None or not size:
        return None
    phases = ("rollout",) if rollout.engine_sleeps else HELD
    held = "while it generates (sleep mode)" if rollout.engine_sleeps else "from its start"
    return MemoryTerm(
        f"{rollout.engine}: {rollout.engine_share:g} of the GPU, {held}",
        size,
        phases,
        category="other",
        formula=f"{rollout.engine_share:g} x {gib(budget.total_bytes)}: its weights, "
        "activations and KV cache",
    )


def served_weight_bytes(setup: Setup) -> int:
    """The engine's copy of the base: the checkpoint as it loads it (the training base's
    quantization, plain weights in model.dtype)."""
    return setup.storage.served_bytes(setup.shape, setup.precision)


def kv_bytes_per_sequence(setup: Setup) -> int:
    """One sequence of the engine's longest context (prompt + completion), in the compute
    dtype (vLLM's default KV cache dtype is the model's)."""
    s, d = setup.shape, act.dtypes(setup)
    return 2 * s.num_layers * setup.seq_len * s.kv_size * d.linear_out


def shortfall(setup: Setup, budget: MemoryBudget) -> str:
    """Why the engine's share cannot start it (its weights and one sequence's KV cache do
    not fit in it), with the share that would; "" when it can, or without an engine."""
    rollout = setup.rollout
    size = share_bytes(setup, budget)
    if rollout is None or not size:
        return ""
    weights, kv = served_weight_bytes(setup), kv_bytes_per_sequence(setup)
    if weights + kv <= size:
        return ""
    lowest = math.ceil((weights + kv) / budget.total_bytes * 100) / 100
    return (
        f"{rollout.engine} reserves {rollout.engine_share:g} of the GPU ({gib(size)}), less "
        f"than its copy of the weights ({gib(weights)}) and the KV cache of one "
        f"{setup.seq_len:,}-token sequence ({gib(kv)}) need; a share of at least {lowest:g} "
        f"(training.objective_options.{rollout.engine_option}) could start it"
    )


def notes(setup: Setup, budget: MemoryBudget) -> list[str]:
    """How many of the generation batch's sequences the share's KV cache holds at once."""
    rollout = setup.rollout
    size = share_bytes(setup, budget)
    if rollout is None or not size:
        return []
    room = size - served_weight_bytes(setup)
    at_once = max(room, 0) // kv_bytes_per_sequence(setup)
    return [
        f"{rollout.engine}: its share less its weights ({gib(served_weight_bytes(setup))}) "
        f"leaves KV cache for at most {at_once:,} sequences of {setup.seq_len:,} tokens at "
        f"once (less its activations); the generation batch is {setup.rollout_sequences}."
    ]
