"""What the runner hands the trainer so it runs the recipe's engine.

`trainer_arguments` returns keyword arguments for `TrainingArguments`/TRL's `SFTConfig`;
`engine_trainer_class` adapts the trainer class where accelerate needs help (FSDP on CPU);
`prepare_final_save` makes the final save a normal checkpoint whatever the engine shards.
Torch and accelerate are imported inside the functions that need them.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from sftkit.distributed.configs import CONFIG_DIR, DEEPSPEED_CONFIG, fsdp_plan
from sftkit.distributed.rank import world_size
from sftkit.recipe.schema import Recipe


def backend(recipe: Recipe, *, use_cpu: bool) -> Literal["nccl", "gloo"]:
    """The collective backend: the recipe's choice, else nccl on CUDA and gloo on CPU."""
    chosen = recipe.distributed.backend
    if chosen != "auto":
        return chosen
    return "gloo" if use_cpu else "nccl"


def shards_parameters(recipe: Recipe) -> bool:
    """Does the engine split the parameters themselves (FSDP, ZeRO-3)? Then a 4-bit base must
    be stored in a float dtype FSDP/DeepSpeed can flatten (`bnb_4bit_quant_storage`)."""
    d = recipe.distributed
    return d.engine == "fsdp" or (d.engine == "deepspeed" and d.zero_stage == 3)


def quant_storage_dtype(recipe: Recipe, compute_dtype: str) -> str | None:
    """`bnb_4bit_quant_storage` for a 4-bit base: the compute dtype when the engine shards
    parameters (bitsandbytes reads the packed bytes whatever the storage dtype, and FSDP then
    sees the quantized weights as ordinary bf16 tensors of the same dtype as the rest of the
    model), None (bitsandbytes' uint8) otherwise."""
    return compute_dtype if shards_parameters(recipe) else None


def fsdp_activation_checkpointing(recipe: Recipe) -> bool:
    """True when FSDP checkpoints the decoder layers, so transformers' own checkpointing (and
    PEFT's) must stay off: doing both recomputes twice and adds an all-gather."""
    return recipe.distributed.engine == "fsdp" and fsdp_plan(recipe).activation_checkpointing


def deepspeed_config_path(run_dir: Path) -> Path:
    return run_dir / CONFIG_DIR / DEEPSPEED_CONFIG


def trainer_arguments(recipe: Recipe, run_dir: Path, *, use_cpu: bool) -> dict[str, Any]:
    """Keyword arguments for `TrainingArguments` (or `SFTConfig`) that select the engine.

    Merge them into the arguments built from the training section; a key here wins. Empty
    for a single process without an engine.
    """
    kwargs: dict[str, Any] = {}
    engine = recipe.distributed.engine
    if world_size() > 1:
        kwargs["ddp_backend"] = backend(recipe, use_cpu=use_cpu)
        # sftkit models use every parameter in every step; the search costs a graph walk.
        kwargs["ddp_find_unused_parameters"] = False
    if engine == "fsdp":
        kwargs["fsdp"] = True
        kwargs["fsdp_config"] = fsdp_plan(recipe).trainer_keys()
        if fsdp_activation_checkpointing(recipe):
            kwargs["gradient_checkpointing"] = False
    elif engine == "deepspeed":
        path = deepspeed_config_path(run_dir)
        if not path.is_file():
            from sftkit.errors import LaunchError

            raise LaunchError(
                f"the DeepSpeed configuration {str(path)!r} does not exist.",
                hint="Start DeepSpeed runs with `sftkit launch`, which generates it from the recipe.",
            )
        kwargs["deepspeed"] = str(path)
    return kwargs


def engine_trainer_class(trainer_cls: type, recipe: Recipe, *, use_cpu: bool) -> type:
    """`trainer_cls`, or a subclass that makes accelerate run FSDP on CPU.

    accelerate only applies FSDP on accelerator devices (its CPU state is MULTI_CPU, which it
    wraps in DDP), although `fully_shard` works with gloo on CPU. For a multi-process CPU run
    with engine fsdp the subclass switches the freshly built accelerator state to FSDP, so CPU
    runs (the tests, a laptop) take the same accelerate FSDP code path as GPU runs.
    """
    if not (use_cpu and recipe.distributed.engine == "fsdp" and world_size() > 1):
        return trainer_cls
    return _cpu_fsdp_subclass(trainer_cls)


@functools.cache
def _cpu_fsdp_subclass(trainer_cls: type) -> type:
    class CpuFsdpTrainer(trainer_cls):
        def create_accelerator_and_postprocess(self) -> None:
            super().create_accelerator_and_postprocess()
            from sftkit.distributed.cpu_fsdp import promote_to_fsdp

            promote_to_fsdp(self)

    CpuFsdpTrainer.__name__ = CpuFsdpTrainer.__qualname__ = f"CpuFsdp{trainer_cls.__name__}"
    return CpuFsdpTrainer


def prepare_final_save(trainer: Any) -> None:
    """Before saving the final model: gather FSDP's sharded state into one full state dict on
    rank 0 (checkpoints may stay sharded; the final artifact must be a normal model)."""
    if getattr(trainer, "is_fsdp_enabled", False):
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
