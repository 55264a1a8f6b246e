"""Per-GPU memory with more than one GPU: the recipe's engine says what it replicates and
what it shards (`sftkit.engine.Engine.sharding`; the built-in engines' rules are described
in `sftkit.builtin.engines`)."""

from __future__ import annotations

from sftkit.engine import Sharding
from sftkit.memory.setup import Setup

__all__ = ["Sharding", "describe", "sharding"]


def sharding(setup: Setup) -> Sharding:
    return setup.engine.sharding(setup.distributed, setup.num_gpus)


def describe(setup: Setup) -> str:
    if setup.num_gpus == 1:
        return "1 GPU" if setup.on_gpu else "CPU"
    offload = ", optimizer offloaded to CPU" if sharding(setup).state_on_host else ""
    label = setup.engine.sharding_label(setup.distributed)
    if not setup.on_gpu:
        return f"{setup.num_gpus} CPU processes, {label}{offload}; figures are per process"
    return f"{setup.num_gpus} GPUs, {label}{offload}; figures are per GPU"
