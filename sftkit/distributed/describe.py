"""One line that says how a recipe spreads over processes (validate, launch --dry-run)."""

from __future__ import annotations

from sftkit.distributed.configs import fsdp_plan
from sftkit.recipe.schema import Recipe


def describe_engine(recipe: Recipe) -> str:
    d = recipe.distributed
    if d.engine == "none":
        return "single process"
    if d.engine == "ddp":
        return "DDP (full replica per process)"
    if d.engine == "fsdp":
        plan = fsdp_plan(recipe)
        parts = [
            f"FSDP{plan.version}",
            "full shard" if plan.reshard_after_forward else "shard grads+optimizer (no reshard)",
        ]
        if plan.activation_checkpointing:
            parts.append("activation checkpointing")
        if plan.cpu_offload:
            parts.append("CPU offload")
        parts.append(f"{d.fsdp.state_dict_type} checkpoints")
        return ", ".join(parts)
    parts = [f"DeepSpeed ZeRO-{d.zero_stage}"]
    if d.cpu_offload:
        offload_params = d.zero_stage == 3 and d.deepspeed.offload_params is not False
        parts.append(
            "optimizer + parameters offloaded" if offload_params else "optimizer offloaded"
        )
    return ", ".join(parts)
