"""Built-in checks of the recipe's `distributed` section against the rest of the recipe.

What an engine refuses (a setting it does not read, an optimizer it cannot step, hardware it
does not run on) is the engine object's to say (`sftkit.engine.Engine.recipe_problems`);
this plugin asks it, and adds the rules that hold whatever the engine: which backend the
hardware has, and what a base storage allows when the engine shards parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    problems: list[Problem] = []
    if spec.base_storage == "int8":
        problems.append(
            Problem(
                "distributed.engine",
                f"strategy {spec.name!r} keeps an LLM.int8 base, whose int8 weights and row "
                f"scales {r.distributed.engine} cannot shard.",
                "Use strategy qlora-nf4 (its 4-bit weights are stored as bf16 and shard), or "
                "engine: ddp, or deepspeed with zero_stage: 2.",
            )
        )
    if spec.base_storage == "4bit":
        compute = spec.quantization(resolved.strategy.options).compute_dtype
        if compute != r.model.dtype:
            problems.append(
                Problem(
                    "strategy.options.compute_dtype",
                    f"a sharded 4-bit base is stored in its compute dtype ({compute}), which must "
                    f"equal model.dtype ({r.model.dtype}) so every parameter the engine flattens "
                    "has one dtype.",
                    f"Set strategy.options.compute_dtype={r.model.dtype}.",
                )
            )
    return problems


def distributed_problems(resolved: ResolvedRecipe) -> list[Problem]:
    r = resolved.recipe
    engine = engine_of(r)
    problems: list[Problem] = []
    if engine.shards_parameters(r):
        problems.extend(storage_problems_when_sharded(resolved))
    if r.hardware.gpu.strip().lower() == "cpu" and r.distributed.backend == "nccl":
        problems.append(
            Problem(
                "distributed.backend",
                "nccl needs CUDA GPUs and hardware.gpu is cpu.",
                "Use backend: gloo (or auto).",
            )
        )
    problems.extend(engine.recipe_problems(resolved))
    return problems


@hookimpl(trylast=True)
def validate_recipe(recipe: ResolvedRecipe | None) -> list[Problem] | None:
    if recipe is None:  # a bare hook call (tracing tests) carries no recipe
        return None
    return distributed_problems(recipe) or None
