"""Built-in checks of the recipe's `distributed` section against the rest of the recipe.

What an engine refuses (a setting it does not read, an optimizer it cannot step, hardware it
does not run on) is the engine object's to say (`sftkit.engine.Engine.recipe_problems`);
this plugin asks it, and adds the rules that hold whatever the engine: which backend the
hardware has, what a base storage allows when the engine shards parameters, and the memory
techniques that need one process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sftkit.devices import is_cpu
from sftkit.engine import engine_of
from sftkit.errors import Problem
from sftkit.hookspecs import hookimpl

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe


def storage_problems_when_sharded(resolved: ResolvedRecipe) -> list[Problem]:
    """What the strategy's base storage refuses when the engine shards parameters (FSDP,
    ZeRO-3): every parameter of a unit is flattened into one tensor of one dtype."""
    r = resolved.recipe
    spec = resolved.strategy.spec
    storage = resolved.strategy_parts.storage
    return storage.problems_when_sharded(spec.name, r.distributed.engine, r.model.dtype)


def distributed_problems(resolved: ResolvedRecipe) -> list[Problem]:
    r = resolved.recipe
    engine = engine_of(r)
    problems: list[Problem] = []
    if engine.shards_parameters(r):
        problems.extend(storage_problems_when_sharded(resolved))
    if is_cpu(r.hardware.gpu) and r.distributed.backend == "nccl":
        problems.append(
            Problem(
                "distributed.backend",
                "nccl needs CUDA GPUs and hardware.gpu is cpu.",
                "Use backend: gloo (or auto).",
            )
        )
    problems.extend(engine.recipe_problems(resolved))
    if engine.distributes or r.hardware.num_gpus > 1:
        problems.extend(one_process_problems(resolved))
    return problems


def one_process_problems(resolved: ResolvedRecipe) -> list[Problem]:
    """Memory techniques that act inside one process's backward or host memory."""
    r = resolved.recipe
    problems = []
    if r.training.optimizer_in_backward:
        problems.append(
            Problem(
                "training.optimizer_in_backward",
                "steps each parameter in its own backward hook, where a distributed engine "
                "reduces the gradients: it runs on one device only.",
                "Use distributed.engine none and hardware.num_gpus 1, or turn it off.",
            )
        )
    if resolved.strategy_parts.storage.embeddings_on_host:
        problems.append(
            Problem(
                "strategy.options.embeddings_on_host",
                "the embedding table in host memory is looked up by one process; it does not "
                "combine with a distributed engine or more than one GPU.",
                "Set strategy.options.embeddings_on_host=false for a multi-GPU run.",
            )
        )
    return problems


@hookimpl(trylast=True)
def validate_recipe(recipe: ResolvedRecipe | None) -> list[Problem] | None:
    if recipe is None:  # a bare hook call (tracing tests) carries no recipe
        return None
    return distributed_problems(recipe) or None
