"""The engine interface: one object per distributed engine answers everything sftkit asks.

`none`, `ddp`, `fsdp` and `deepspeed` are `Engine` subclasses registered by the in-tree plugin
`sftkit.builtin.engines`; a plugin adds another the same way (`register_engines`). The recipe
names the engine (`distributed.engine`), the registry finds the object, and every module
that depends on the engine asks it: the estimator (how each memory term shards), recipe
validation (which settings and combinations it refuses), `sftkit launch` (the accelerate
config, generated files, what must be installed) and the runner (trainer arguments and class).

Engine objects are imported by `sftkit validate` and `estimate-memory`, so their module must
not import torch at top level; import it inside the methods that train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel

from sftkit.errors import Problem

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe
    from sftkit.recipe.schema import DistributedSection, Recipe


@dataclass(frozen=True)
class Sharding:
    """How the per-GPU memory of each term relates to one process's full copy."""

    weights: int  # divisor for parameters
    gradients: int
    state: int  # divisor for optimizer state (and master weights)
    gathered_layers: int  # decoder layers held unsharded at once (FSDP / ZeRO-3)
    gathered_root: bool  # embeddings + lm_head unsharded during forward/backward (FSDP)
    ddp_buckets: bool  # a flat copy of the gradients in all-reduce buckets (DDP)
    master_weights: bool  # fp32 master copies of bf16/fp16 trainable parameters (DeepSpeed)
    state_on_host: bool  # optimizer state (and master weights) in host RAM
    communication: bool  # collective buffers (NCCL) on every GPU


def replicated(num_gpus: int, *, buckets: bool) -> Sharding:
    """Every GPU holds everything (one process, or DDP with `buckets`)."""
    multi = num_gpus > 1
    return Sharding(1, 1, 1, 0, False, multi and buckets, False, False, multi)


# The built-in settings of the `distributed` section that belong to one engine or another,
# in schema order, with the message shown when the recipe's engine does not read one.
ENGINE_SETTINGS: dict[str, str] = {
    "zero_stage": "zero_stage is only meaningful with engine: deepspeed",
    "cpu_offload": "cpu_offload needs engine: fsdp or deepspeed (ddp keeps a full replica)",
    "fsdp": "the fsdp settings are only read with engine: fsdp",
    "deepspeed": "the deepspeed settings are only read with engine: deepspeed",
}


class Engine:
    """A distributed engine. Subclass it, override what differs, and register an instance
    with ``register(EngineSpec(name=..., summary=..., engine=MyEngine()))``.

    The defaults describe an engine that replicates everything and needs nothing from
    accelerate beyond a multi-process launch. Methods get the validated `Recipe` (whose
    ``distributed.options`` holds the engine's own options, validated by the spec's
    ``options_model`` with every default written out) or its ``distributed`` section.
    """

    #: Short name used in notes ("training with DDP").
    title: str = "engine"
    #: False for the single-process engine: `sftkit validate` prints no engine line.
    distributes: bool = True
    #: Built-in settings of the `distributed` section this engine reads (of "zero_stage",
    #: "cpu_offload", "fsdp", "deepspeed"); any other one changed from its default is an error.
    reads: frozenset[str] = frozenset()

    # ------------------------------------------------------------------ memory (no torch)

    def sharding(self, distributed: DistributedSection, num_gpus: int) -> Sharding:
        """How each memory term divides over `num_gpus` GPUs (the estimator's per-GPU view)."""
        return replicated(num_gpus, buckets=False)

    def sharding_label(self, distributed: DistributedSection) -> str:
        """The setting in the estimate's header, after "N GPUs, " (e.g. "FSDP full shard")."""
        return self.title

    def searches_gpu_counts(self, distributed: DistributedSection) -> bool:
        """Should `estimate-memory --fit` search the fewest GPUs that fit? By default when
        anything shards, i.e. when per-GPU memory falls as GPUs are added."""
        sh = self.sharding(distributed, 2)
        return max(sh.weights, sh.gradients, sh.state) > 1

    def scale_out(self) -> list[tuple[str, dict[str, Any]]]:
        """Ways this engine spreads a run that does not fit one GPU, for the advice of a
        rejected estimate: each a label ("FSDP full shard") and the settings of the
        `distributed` section it needs besides ``engine`` (``{"zero_stage": 3}``). The advice
        searches the fewest GPUs that fit with each. None by default."""
        return []

    def shards_parameters(self, recipe: Recipe) -> bool:
        """Does the engine split the parameters themselves (FSDP, ZeRO-3)? Then a quantized
        base must be stored so it can be flattened, and only all ranks together can run a
        forward (evaluation after training runs in the launching process)."""
        return False

    # ------------------------------------------------------------------ recipe checks

    def describe(self, recipe: Recipe) -> str:
        """One line for `sftkit validate` and `sftkit launch --dry-run`."""
        return self.title

    def settings_problems(self, distributed: DistributedSection) -> list[Problem]:
        """Problems of the `distributed` section alone, each at its own key. The default
        refuses a built-in setting this engine does not read (`reads`) that is changed from
        its default: defaults written out (a run's recipe.yaml) are fine."""
        problems = []
        for key, message in ENGINE_SETTINGS.items():
            if key in self.reads:
                continue
            value = getattr(distributed, key)
            if isinstance(value, BaseModel):  # a subsection: only changed values count
                if value == type(value)():
                    continue
                value = value.model_dump(exclude_defaults=True)
            elif value is None or value is False:
                continue
            problems.append(Problem(f"distributed.{key}", f"{message}; found {_show(value)}."))
        return problems

    def with_defaults(self, distributed: DistributedSection) -> DistributedSection:
        """The section with the engine's implied settings written out, so the resolved recipe
        (and the estimate) state what runs. Called after `settings_problems` found none."""
        return distributed

    def recipe_problems(self, resolved: ResolvedRecipe) -> list[Problem]:
        """Problems of the engine with the rest of the resolved recipe (strategy, optimizer,
        hardware), reported with every other plugin's."""
        return []

    # ------------------------------------------------------------------ launch (no torch)

    def launch_engine(self, recipe: Recipe, world_size: int) -> str | None:
        """The engine `sftkit launch` trains with instead when it starts `world_size`
        processes (written into the run's recipe), or None to keep this one."""
        return None

    def requires(self, recipe: Recipe) -> tuple[str, ...]:
        """Python packages (import names) the launch needs besides the training stack."""
        return ()

    def distributed_type(self, recipe: Recipe, world_size: int) -> str:
        """accelerate's ``distributed_type``. Multi-process DDP is MULTI_GPU even on a CPU
        machine: that is the type for which `accelerate launch` starts one process per rank;
        the workers then select CPU and gloo themselves (ACCELERATE_USE_CPU)."""
        return "MULTI_GPU" if world_size > 1 else "NO"

    def accelerate_sections(self, recipe: Recipe, config_dir: Path | None) -> dict[str, Any]:
        """Extra top-level entries of the accelerate config file (``fsdp_config``, ...).
        `config_dir` is where `config_files` are written (None: not known yet)."""
        return {}

    def config_files(self, recipe: Recipe) -> dict[str, str]:
        """Files the engine needs next to the accelerate config: name -> content."""
        return {}

    def worker_environment(self, recipe: Recipe) -> dict[str, str]:
        """Environment each worker sets before the trainer builds its accelerator."""
        return {}

    # ------------------------------------------------------------------ training

    def trainer_arguments(self, recipe: Recipe, run_dir: Path, *, use_cpu: bool) -> dict[str, Any]:
        """Keyword arguments for `TrainingArguments`/`SFTConfig` that select the engine
        (a ``gradient_checkpointing`` key overrides the recipe's)."""
        return {}

    def prepare_trainer(self, trainer: Any, recipe: Recipe, *, use_cpu: bool) -> None:
        """Adjust the trainer once its accelerator exists (`SftkitTrainer` asks every engine;
        the optimizer is always built after this, in the trainer's `create_optimizer`)."""


def engine_of(recipe: Recipe) -> Engine:
    """The engine object a resolved recipe's ``distributed.engine`` names."""
    engine = recipe.distributed.resolved_engine
    if engine is None:
        # A caller's mistake, not the user's: every recipe sftkit reads is resolved.
        raise ValueError(
            f"the recipe's engine {recipe.distributed.engine!r} was never looked up: load the "
            "recipe through sftkit.recipe.load (load_recipe / validate_recipe_data)."
        )
    return cast(Engine, engine)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
