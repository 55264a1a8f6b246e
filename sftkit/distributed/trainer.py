"""What the runner hands the trainer so it runs the recipe's engine.

`trainer_arguments` returns keyword arguments for `TrainingArguments`/TRL's `SFTConfig`;
`prepare_final_save` makes the final save a normal checkpoint whatever the engine shards.
What is engine-specific, each engine object says (`sftkit.engine.Engine`); this module adds
what is common to every multi-process run. Torch and accelerate are imported inside the
functions that need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from sftkit.distributed.rank import local_rank, world_size
from sftkit.engine import engine_of
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
    return engine_of(recipe).shards_parameters(recipe)


def evaluates_in_process(recipe: Recipe) -> bool:
    """Can rank 0 evaluate the trained model on its own after training? Not when the engine
    sharded the parameters: a forward through them needs every rank. `sftkit launch` then
    evaluates the saved final/ in its own process once the workers have exited."""
    return world_size() == 1 or not shards_parameters(recipe)


def load_device_map(recipe: Recipe, device: str, *, quantized: bool) -> dict[str, Any] | None:
    """`device_map` for loading the base in this process.

    One process, or a replicating engine (DDP, ZeRO-2): the whole model on this rank's device.
    A sharding engine over a dense base: None, i.e. host memory; FSDP moves each rank's shard
    to its GPU and ZeRO-3 partitions at initialisation, so no GPU ever holds the whole model.
    A 4-bit base is quantized on the GPU as it loads (bitsandbytes), so it loads onto this
    rank's GPU, where it is about a quarter of its bf16 size, and is sharded from there.
    """
    if device != "cuda":
        return {"": device}
    if world_size() == 1:
        return {"": device}
    if shards_parameters(recipe) and not quantized:
        return None
    return {"": f"cuda:{local_rank()}"}


def trainer_arguments(recipe: Recipe, run_dir: Path, *, use_cpu: bool) -> dict[str, Any]:
    """Keyword arguments for `TrainingArguments` (or `SFTConfig`) that select the engine.

    Merge them into the arguments built from the training section; a key here wins. Empty
    for a single process without an engine.
    """
    kwargs: dict[str, Any] = {}
    if world_size() > 1:
        kwargs["ddp_backend"] = backend(recipe, use_cpu=use_cpu)
        # sftkit models use every parameter in every step; the search costs a graph walk.
        kwargs["ddp_find_unused_parameters"] = False
    kwargs.update(engine_of(recipe).trainer_arguments(recipe, run_dir, use_cpu=use_cpu))
    return kwargs


def prepare_final_save(trainer: Any) -> None:
    """Before saving the final model: gather FSDP's sharded state into one full state dict on
    rank 0 (checkpoints may stay sharded; the final artifact must be a normal model)."""
    if getattr(trainer, "is_fsdp_enabled", False):
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
