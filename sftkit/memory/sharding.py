"""Per-GPU memory with more than one GPU: what each engine replicates and what it shards.

- ``none``/``ddp``: every GPU holds everything; DDP adds a flat copy of the gradients in its
  all-reduce buckets (``gradient_as_bucket_view=False``, accelerate's default).
- ``fsdp`` (FULL_SHARD): parameters, gradients and optimizer state are split N ways; each GPU
  also holds the unsharded parameters of the layer it runs and of the one it prefetches, and
  the root unit (embeddings, final norm, lm_head) unsharded during forward and backward.
- ``deepspeed`` ZeRO-2: gradients and optimizer state split, parameters replicated; ZeRO-3:
  parameters split too, with two layers gathered at a time. DeepSpeed's optimizer steps fp32
  master copies of bf16/fp16 trainable parameters (4 bytes each, split with the state).
- ``cpu_offload``: the optimizer state (and DeepSpeed's master weights) live in host RAM.
"""

from __future__ import annotations

from dataclasses import dataclass

from sftkit.memory.setup import Setup


@dataclass(frozen=True)
class Sharding:
    weights: int  # divisor for parameters
    gradients: int
    state: int
    gathered_layers: int  # decoder layers held unsharded at once (FSDP / ZeRO-3)
    gathered_root: bool  # embeddings + lm_head unsharded during forward/backward (FSDP)
    ddp_buckets: bool
    master_weights: bool  # DeepSpeed fp32 master copies of trainable parameters
    state_on_host: bool
    communication: bool


def sharding(setup: Setup) -> Sharding:
    n, engine = setup.num_gpus, setup.engine
    multi = n > 1
    if engine == "fsdp":
        return Sharding(n, n, n, 2 if multi else 0, multi, False, False, setup.cpu_offload, multi)
    if engine == "deepspeed":
        stage = setup.zero_stage or 2
        return Sharding(
            n if stage == 3 else 1,
            n,
            n,
            2 if (multi and stage == 3) else 0,
            False,
            False,
            True,
            setup.cpu_offload,
            multi,
        )
    return Sharding(
        1, 1, 1, 0, False, multi and engine in ("ddp", "none"), False, setup.cpu_offload, multi
    )


def describe(setup: Setup) -> str:
    if setup.num_gpus == 1:
        return "1 GPU"
    engine = setup.engine
    if engine == "deepspeed":
        engine = f"DeepSpeed ZeRO-{setup.zero_stage or 2}"
    elif engine == "fsdp":
        engine = "FSDP full shard"
    else:
        engine = "DDP (replicated)"
    offload = ", optimizer offloaded to CPU" if setup.cpu_offload else ""
    return f"{setup.num_gpus} GPUs, {engine}{offload}; figures are per GPU"
