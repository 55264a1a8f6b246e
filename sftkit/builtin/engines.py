"""Built-in engines: one process (none), DDP, FSDP and DeepSpeed ZeRO, each one `Engine`.

A plugin adds an engine exactly like this module does: subclass `sftkit.engine.Engine`,
override what differs, and register an instance. What each engine shards, per GPU:

- ``none``/``ddp``: every GPU holds everything; DDP adds a flat copy of the gradients in its
  all-reduce buckets (``gradient_as_bucket_view=False``, accelerate's default). ``none`` with
  more than one GPU is priced as DDP, which is what `sftkit launch` trains it with.
- ``fsdp`` (FULL_SHARD): parameters, gradients and optimizer state are split N ways; each GPU
  also holds the unsharded parameters of the layer it runs and of the one it prefetches, and
  the root unit (embeddings, final norm, lm_head) unsharded during forward and backward.
- ``deepspeed`` ZeRO-2: gradients and optimizer state split, parameters replicated; ZeRO-3:
  parameters split too, with two layers gathered at a time. DeepSpeed's optimizer steps fp32
  master copies of bf16/fp16 trainable parameters (4 bytes each, split with the state).
- ``cpu_offload`` (fsdp, deepspeed): the optimizer state (and DeepSpeed's master weights)
  live in host RAM.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sftkit.distributed.configs import deepspeed_config, fsdp_plan
from sftkit.distributed.rank import world_size
from sftkit.engine import Engine, Sharding, replicated
from sftkit.errors import LaunchError, Problem
from sftkit.hookspecs import Register, hookimpl
from sftkit.runpaths import DEEPSPEED_CONFIG, LaunchPaths, RunPaths
from sftkit.specs import EngineSpec

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe
    from sftkit.recipe.schema import DistributedSection, Recipe


def _on_cpu(recipe: Recipe) -> bool:
    return recipe.hardware.gpu.strip().lower() == "cpu"


def _paged_state_offloaded(resolved: ResolvedRecipe) -> list[Problem]:
    """Offloading engines: a paged optimizer's state would page into memory it already is in."""
    optimizer = resolved.optimizer.spec
    if not (resolved.recipe.distributed.cpu_offload and optimizer.paged):
        return []
    return [
        Problem(
            "optimizer.name",
            f"optimizer {optimizer.name!r} pages its state between GPU and host; "
            "with distributed.cpu_offload the state already lives in host RAM.",
            "Choose its non-paged variant, or turn cpu_offload off.",
        )
    ]


class SingleProcess(Engine):
    """No engine: one process trains the whole model."""

    title = "single process"
    distributes = False

    def sharding(self, distributed: DistributedSection, num_gpus: int) -> Sharding:
        return replicated(num_gpus, buckets=True)  # several GPUs: launched as DDP

    def sharding_label(self, distributed: DistributedSection) -> str:
        return "DDP (replicated)"

    def launch_engine(self, recipe: Recipe, world_size: int) -> str | None:
        return "ddp" if world_size > 1 else None


class Ddp(Engine):
    """PyTorch DistributedDataParallel: a full replica per process, gradients all-reduced."""

    title = "DDP"

    def sharding(self, distributed: DistributedSection, num_gpus: int) -> Sharding:
        return replicated(num_gpus, buckets=True)

    def sharding_label(self, distributed: DistributedSection) -> str:
        return "DDP (replicated)"

    def describe(self, recipe: Recipe) -> str:
        return "DDP (full replica per process)"


class Fsdp(Engine):
    """PyTorch FSDP (2 by default) through accelerate: parameters, gradients and optimizer
    state sharded over the processes."""

    title = "FSDP"
    reads = frozenset({"cpu_offload", "fsdp"})

    def scale_out(self) -> list[tuple[str, dict[str, Any]]]:
        return [("FSDP full shard", {})]

    def sharding(self, distributed: DistributedSection, num_gpus: int) -> Sharding:
        n, multi = num_gpus, num_gpus > 1
        return Sharding(
            n, n, n, 2 if multi else 0, multi, False, False, distributed.cpu_offload, multi
        )

    def sharding_label(self, distributed: DistributedSection) -> str:
        return "FSDP full shard"

    def shards_parameters(self, recipe: Recipe) -> bool:
        return True

    def describe(self, recipe: Recipe) -> str:
        plan = fsdp_plan(recipe)
        parts = [
            f"FSDP{plan.version}",
            "full shard" if plan.reshard_after_forward else "shard grads+optimizer (no reshard)",
        ]
        if plan.activation_checkpointing:
            parts.append("activation checkpointing")
        if plan.cpu_offload:
            parts.append("CPU offload")
        parts.append(f"{recipe.distributed.fsdp.state_dict_type} checkpoints")
        return ", ".join(parts)

    def recipe_problems(self, resolved: ResolvedRecipe) -> list[Problem]:
        problems = []
        optimizer = resolved.optimizer.spec
        if optimizer.implementation != "torch":
            problems.append(
                Problem(
                    "optimizer.name",
                    f"optimizer {optimizer.name!r} ({optimizer.implementation}) updates plain "
                    "tensors; FSDP shards each parameter as a DTensor, which only torch.optim "
                    "optimizers step (a plugin optimizer that does declares implementation "
                    "'torch').",
                    "Use optimizer.name=adamw (for LoRA adapters the 8-bit state saved little), "
                    "or engine: deepspeed, or engine: ddp.",
                )
            )
        return problems + _paged_state_offloaded(resolved)

    def distributed_type(self, recipe: Recipe, world_size: int) -> str:
        return "FSDP"

    def accelerate_sections(self, recipe: Recipe, config_dir: Path | None) -> dict[str, Any]:
        return {"fsdp_config": fsdp_plan(recipe).accelerate_keys()}

    def worker_environment(self, recipe: Recipe) -> dict[str, str]:
        return fsdp_plan(recipe).worker_environment()

    def trainer_arguments(self, recipe: Recipe, run_dir: Path, *, use_cpu: bool) -> dict[str, Any]:
        plan = fsdp_plan(recipe)
        kwargs: dict[str, Any] = {"fsdp": True, "fsdp_config": plan.trainer_keys()}
        if plan.activation_checkpointing:
            # FSDP checkpoints the decoder layers; transformers' own checkpointing (and
            # PEFT's) must stay off: doing both recomputes twice and adds an all-gather.
            kwargs["gradient_checkpointing"] = False
        return kwargs

    def prepare_trainer(self, trainer: Any, recipe: Recipe, *, use_cpu: bool) -> None:
        """On CPU, switch the freshly built accelerator state to FSDP: accelerate only
        applies FSDP on accelerator devices (its CPU state is MULTI_CPU, which it wraps in
        DDP), although `fully_shard` works with gloo on CPU, so CPU runs (the tests, a
        laptop) take the same FSDP code path. The optimizer is built afterwards, over the
        sharded parameters (`SftkitTrainer.create_optimizer`)."""
        if use_cpu and world_size() > 1:
            from sftkit.distributed.cpu_fsdp import promote_to_fsdp

            promote_to_fsdp(trainer)


class DeepSpeed(Engine):
    """DeepSpeed ZeRO (stage 2 or 3) through accelerate, from a generated DeepSpeed JSON."""

    title = "DeepSpeed"
    reads = frozenset({"zero_stage", "cpu_offload", "deepspeed"})

    def scale_out(self) -> list[tuple[str, dict[str, Any]]]:
        return [("DeepSpeed ZeRO-3", {"zero_stage": 3})]

    @staticmethod
    def _stage(distributed: DistributedSection) -> int:
        return distributed.zero_stage or 2

    def settings_problems(self, distributed: DistributedSection) -> list[Problem]:
        problems = super().settings_problems(distributed)
        stage3_offload = self._stage(distributed) == 3 and distributed.cpu_offload
        ds = distributed.deepspeed
        if ds.offload_params is not None and not stage3_offload:
            problems.append(
                Problem(
                    "distributed.deepspeed",
                    "deepspeed.offload_params needs zero_stage: 3 and cpu_offload: true; "
                    f"found {ds.model_dump(exclude_defaults=True)!r}.",
                )
            )
        return problems

    def with_defaults(self, distributed: DistributedSection) -> DistributedSection:
        # Written out so the resolved recipe (and the estimator) state the stage that runs.
        if distributed.zero_stage is None:
            return distributed.model_copy(update={"zero_stage": 2})
        return distributed

    def sharding(self, distributed: DistributedSection, num_gpus: int) -> Sharding:
        n, multi = num_gpus, num_gpus > 1
        stage3 = self._stage(distributed) == 3
        return Sharding(
            n if stage3 else 1,
            n,
            n,
            2 if (multi and stage3) else 0,
            False,
            False,
            True,
            distributed.cpu_offload,
            multi,
        )

    def sharding_label(self, distributed: DistributedSection) -> str:
        return f"DeepSpeed ZeRO-{self._stage(distributed)}"

    def shards_parameters(self, recipe: Recipe) -> bool:
        return recipe.distributed.zero_stage == 3

    def describe(self, recipe: Recipe) -> str:
        d = recipe.distributed
        parts = [f"DeepSpeed ZeRO-{d.zero_stage}"]
        if d.cpu_offload:
            offload_params = d.zero_stage == 3 and d.deepspeed.offload_params is not False
            parts.append(
                "optimizer + parameters offloaded" if offload_params else "optimizer offloaded"
            )
        return ", ".join(parts)

    def recipe_problems(self, resolved: ResolvedRecipe) -> list[Problem]:
        problems = []
        if _on_cpu(resolved.recipe):
            problems.append(
                Problem(
                    "distributed.engine",
                    "DeepSpeed runs on GPUs and hardware.gpu is cpu.",
                    "Use engine: fsdp or ddp on CPU.",
                )
            )
        return problems + _paged_state_offloaded(resolved)

    def requires(self, recipe: Recipe) -> tuple[str, ...]:
        return ("deepspeed",)

    def distributed_type(self, recipe: Recipe, world_size: int) -> str:
        return "DEEPSPEED"

    def config_files(self, recipe: Recipe) -> dict[str, str]:
        return {DEEPSPEED_CONFIG: json.dumps(deepspeed_config(recipe), indent=2) + "\n"}

    def accelerate_sections(self, recipe: Recipe, config_dir: Path | None) -> dict[str, Any]:
        if config_dir is None:
            raise ValueError(
                "engine: deepspeed needs the directory of the generated DeepSpeed JSON"
            )
        return {
            "deepspeed_config": {
                "deepspeed_config_file": str(LaunchPaths(config_dir).deepspeed_config),
                "zero3_init_flag": recipe.distributed.zero_stage == 3,
            }
        }

    def trainer_arguments(self, recipe: Recipe, run_dir: Path, *, use_cpu: bool) -> dict[str, Any]:
        path = RunPaths(run_dir).launch.deepspeed_config
        if not path.is_file():
            raise LaunchError(
                f"the DeepSpeed configuration {str(path)!r} does not exist.",
                hint="Start DeepSpeed runs with `sftkit launch`, which generates it from the recipe.",
            )
        return {"deepspeed": str(path)}


NONE, DDP, FSDP, DEEPSPEED = SingleProcess(), Ddp(), Fsdp(), DeepSpeed()


@hookimpl(trylast=True)
def register_engines(register: Register) -> None:
    register(EngineSpec("none", "One process, no engine (the default).", NONE))
    register(EngineSpec("ddp", "PyTorch DDP: a full replica per process.", DDP))
    register(EngineSpec("fsdp", "PyTorch FSDP2: parameters, gradients and state sharded.", FSDP))
    register(
        EngineSpec(
            "deepspeed", "DeepSpeed ZeRO-2/3 from a generated JSON (needs deepspeed).", DEEPSPEED
        )
    )
