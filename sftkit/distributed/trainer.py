"""What the runner hands the trainer so it runs the recipe's engine.

`trainer_arguments` returns keyword arguments for `TrainingArguments`/TRL's `SFTConfig`;
`engine_trainer_class` adapts the trainer class where accelerate needs help (FSDP on CPU);
`prepare_final_save` makes the final save a normal checkpoint whatever the engine shards.
Torch and accelerate are imported inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from sftkit.distributed.configs import fsdp_plan
from sftkit.distributed.rank import local_rank, world_size
from sftkit.recipe.schema import Recipe
from sftkit.runpaths import RunPaths


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


def evaluates_in_process(recipe: Recipe) -> bool:
    """Can rank 0 evaluate the trained model on its own after training? Not when the engine
    sharded the parameters: a forward through them needs every rank. `sftkit launch` then
    evaluates the saved final/ in its own process once the workers have exited."""
    return world_size() == 1 or not shards_parameters(recipe)


def fsdp_activation_checkpointing(recipe: Recipe) -> bool:
    """True when FSDP checkpoints the decoder layers, so transformers' own checkpointing (and
    PEFT's) must stay off: doing both recomputes twice and adds an all-gather."""
    return recipe.distributed.engine == "fsdp" and fsdp_plan(recipe).activation_checkpointing


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


def deepspeed_config_path(run_dir: Path) -> Path:
    return RunPaths(run_dir).launch.deepspeed_config


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


def builds_optimizer_late(recipe: Recipe) -> bool:
    """FSDP shards parameters in place when the trainer prepares the model, so the optimizer
    must be built afterwards, over the sharded parameters (transformers refuses one passed
    in); the other engines take the optimizer sftkit built."""
    return recipe.distributed.engine == "fsdp"


def trainer_optimizers(recipe: Recipe, optimizer: Any) -> tuple[Any, None]:
    """The trainer's `optimizers=` argument: the built optimizer, or none yet (FSDP)."""
    return (None, None) if builds_optimizer_late(recipe) else (optimizer, None)


def engine_trainer_class(
    trainer_cls: type,
    recipe: Recipe,
    *,
    use_cpu: bool,
    optimizer_factory: Callable[[Any], Any] | None = None,
) -> type:
    """`trainer_cls`, or a subclass that does what the engine needs from the trainer:

    - FSDP: build the recipe's optimizer (`optimizer_factory(model)`) once the model is
      sharded, in `create_optimizer`;
    - FSDP on CPU: accelerate only applies FSDP on accelerator devices (its CPU state is
      MULTI_CPU, which it wraps in DDP), although `fully_shard` works with gloo on CPU. The
      subclass switches the freshly built accelerator state to FSDP, so CPU runs (the tests,
      a laptop) take the same accelerate FSDP code path as GPU runs.
    """
    cpu_fsdp = use_cpu and recipe.distributed.engine == "fsdp" and world_size() > 1
    late = builds_optimizer_late(recipe) and optimizer_factory is not None
    if not (cpu_fsdp or late):
        return trainer_cls

    class EngineTrainer(trainer_cls):
        def create_accelerator_and_postprocess(self) -> None:
            super().create_accelerator_and_postprocess()
            if cpu_fsdp:
                from sftkit.distributed.cpu_fsdp import promote_to_fsdp

                promote_to_fsdp(self)

        def create_optimizer(self, model: Any = None) -> Any:
            trainer: Any = self  # attributes of the transformers Trainer
            if late and trainer.optimizer is None:
                assert optimizer_factory is not None
                trainer.optimizer = optimizer_factory(trainer.model if model is None else model)
            return super().create_optimizer(model)

    EngineTrainer.__name__ = EngineTrainer.__qualname__ = f"Engine{trainer_cls.__name__}"
    return EngineTrainer


def prepare_final_save(trainer: Any) -> None:
    """Before saving the final model: gather FSDP's sharded state into one full state dict on
    rank 0 (checkpoints may stay sharded; the final artifact must be a normal model)."""
    if getattr(trainer, "is_fsdp_enabled", False):
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
