"""Built-in checks of the recipe's `distributed` section against the rest of the recipe:
what the engine can shard, which backend the hardware has, which optimizers compose with
offloading. Schema-level rules (a setting for another engine) live in the schema itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sftkit.devices import is_cpu
from sftkit.errors import Problem
from sftkit.hookspecs import hookimpl

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe


def distributed_problems(resolved: ResolvedRecipe) -> list[Problem]:
    r = resolved.recipe
    d = r.distributed
    spec = resolved.strategy.spec
    on_cpu = is_cpu(r.hardware.gpu)
    shards_params = d.engine == "fsdp" or (d.engine == "deepspeed" and d.zero_stage == 3)
    problems: list[Problem] = []
    if shards_params:
        storage = resolved.strategy_parts.storage
        problems += storage.problems_when_sharded(spec.name, d.engine, r.model.dtype)
    if on_cpu and d.backend == "nccl":
        problems.append(
            Problem(
                "distributed.backend",
                "nccl needs CUDA GPUs and hardware.gpu is cpu.",
                "Use backend: gloo (or auto).",
            )
        )
    if on_cpu and d.engine == "deepspeed":
        problems.append(
            Problem(
                "distributed.engine",
                "DeepSpeed runs on GPUs and hardware.gpu is cpu.",
                "Use engine: fsdp or ddp on CPU.",
            )
        )
    optimizer = resolved.optimizer.spec
    if d.engine == "fsdp" and optimizer.implementation != "torch":
        problems.append(
            Problem(
                "optimizer.name",
                f"optimizer {optimizer.name!r} ({optimizer.implementation}) updates plain tensors; "
                "FSDP shards each parameter as a DTensor, which only torch.optim optimizers "
                "step (a plugin optimizer that does declares implementation 'torch').",
                "Use optimizer.name=adamw (for LoRA adapters the 8-bit state saved little), or "
                "engine: deepspeed, or engine: ddp.",
            )
        )
    if d.cpu_offload and resolved.optimizer.spec.paged:
        problems.append(
            Problem(
                "optimizer.name",
                f"optimizer {resolved.optimizer.spec.name!r} pages its state between GPU and host; "
                "with distributed.cpu_offload the state already lives in host RAM.",
                "Choose its non-paged variant, or turn cpu_offload off.",
            )
        )
    return problems


@hookimpl(trylast=True)
def validate_recipe(recipe: ResolvedRecipe | None) -> list[Problem] | None:
    if recipe is None:  # a bare hook call (tracing tests) carries no recipe
        return None
    return distributed_problems(recipe) or None
