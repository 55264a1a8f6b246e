"""The accelerate configuration and the DeepSpeed JSON, generated from a recipe (torch-free).

The accelerate config is common to every engine; the engine object adds its own sections and
files (`sftkit.engine.Engine`). The built-in FSDP and DeepSpeed engines derive theirs from the
recipe's ``distributed`` section here, in the dialect each consumer reads: ``fsdp_*`` keys
for an accelerate config file, the bare keys of ``TrainingArguments.fsdp_config`` for the
trainer, a ``zero_optimization`` block for DeepSpeed.
Values the trainer owns (batch sizes, clipping, precision) are ``"auto"`` in the DeepSpeed JSON:
transformers fills them from the same recipe, so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sftkit.distributed.topology import Topology
from sftkit.engine import engine_of
from sftkit.errors import LaunchError
from sftkit.recipe.schema import Recipe
from sftkit.runpaths import ACCELERATE_CONFIG, DEEPSPEED_CONFIG

MixedPrecision = Literal["no", "bf16", "fp16"]


@dataclass(frozen=True)
class FsdpPlan:
    """The FSDP settings of a recipe with every "follow another key" default resolved."""

    version: int
    reshard_after_forward: bool
    activation_checkpointing: bool
    cpu_offload: bool
    state_dict_type: Literal["SHARDED_STATE_DICT", "FULL_STATE_DICT"]
    wrap_layers: tuple[str, ...] | None

    def accelerate_keys(self) -> dict[str, Any]:
        """`fsdp_config` of an accelerate config file (what `accelerate launch` reads)."""
        keys: dict[str, Any] = {
            "fsdp_version": self.version,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_reshard_after_forward": self.reshard_after_forward,
            "fsdp_offload_params": self.cpu_offload,
            "fsdp_state_dict_type": self.state_dict_type,
            "fsdp_activation_checkpointing": self.activation_checkpointing,
            "fsdp_cpu_ram_efficient_loading": False,
            "fsdp_sync_module_states": False,  # weights are identical on every rank already
        }
        if self.version == 1:
            # FSDP1 names the sharding strategy; FSDP2 says it with reshard_after_forward.
            keys["fsdp_sharding_strategy"] = (
                "FULL_SHARD" if self.reshard_after_forward else "SHARD_GRAD_OP"
            )
            keys["fsdp_reshard_after_forward"] = keys["fsdp_sharding_strategy"]
            keys["fsdp_use_orig_params"] = True
            keys["fsdp_backward_prefetch"] = "BACKWARD_PRE"
        if self.wrap_layers:
            keys["fsdp_transformer_layer_cls_to_wrap"] = ",".join(self.wrap_layers)
        return keys

    def trainer_keys(self) -> dict[str, Any]:
        """`TrainingArguments.fsdp_config` (transformers' spelling of the same settings)."""
        keys: dict[str, Any] = {
            "version": self.version,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "cpu_offload": self.cpu_offload,
            "state_dict_type": self.state_dict_type,
            "activation_checkpointing": self.activation_checkpointing,
            "reshard_after_forward": (
                self.reshard_after_forward
                if self.version == 2
                else ("full_shard" if self.reshard_after_forward else "shard_grad_op")
            ),
        }
        if self.version == 1:
            keys["use_orig_params"] = True  # PEFT: frozen and trainable params share units
            keys["sync_module_states"] = False
            keys["backward_prefetch"] = "BACKWARD_PRE"
        if self.wrap_layers:
            keys["transformer_layer_cls_to_wrap"] = list(self.wrap_layers)
        return keys

    def worker_environment(self) -> dict[str, str]:
        """Environment a worker sets before the trainer builds its FSDP plugin. FSDP1 reads the
        sharding strategy only from here (transformers' fsdp_config passes it as
        reshard_after_forward, which accelerate's FSDP1 path ignores when the strategy is
        unset); `accelerate launch` exports it too, torchrun does not."""
        if self.version != 1:
            return {}
        return {
            "FSDP_SHARDING_STRATEGY": "FULL_SHARD"
            if self.reshard_after_forward
            else "SHARD_GRAD_OP"
        }


def fsdp_plan(recipe: Recipe) -> FsdpPlan:
    d = recipe.distributed
    ac = d.fsdp.activation_checkpointing
    return FsdpPlan(
        version=d.fsdp.version,
        reshard_after_forward=d.fsdp.reshard_after_forward,
        activation_checkpointing=recipe.training.gradient_checkpointing if ac is None else ac,
        cpu_offload=d.cpu_offload,
        state_dict_type="SHARDED_STATE_DICT"
        if d.fsdp.state_dict_type == "sharded"
        else "FULL_STATE_DICT",
        wrap_layers=tuple(d.fsdp.wrap_layers) if d.fsdp.wrap_layers else None,
    )


def deepspeed_config(recipe: Recipe) -> dict[str, Any]:
    """The DeepSpeed JSON for a recipe with ``engine: deepspeed``."""
    d = recipe.distributed
    stage = d.zero_stage or 2
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == 2:
        zero["allgather_partitions"] = True
        zero["reduce_scatter"] = True
        zero["allgather_bucket_size"] = 200_000_000
    else:
        zero["stage3_prefetch_bucket_size"] = "auto"
        zero["stage3_param_persistence_threshold"] = "auto"
        zero["stage3_max_live_parameters"] = 1_000_000_000
        zero["stage3_max_reuse_distance"] = 1_000_000_000
        zero["stage3_gather_16bit_weights_on_model_save"] = d.deepspeed.gather_weights_on_save
    if d.cpu_offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3 and d.deepspeed.offload_params is not False:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config: dict[str, Any] = {
        # Filled by transformers from the recipe's training section (HfTrainerDeepSpeedConfig).
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
        "steps_per_print": 1_000_000_000,  # the trainer logs; DeepSpeed's own prints are noise
        "wall_clock_breakdown": False,
    }
    if d.cpu_offload:
        # sftkit builds the recipe's optimizer itself; DeepSpeed would otherwise insist on its
        # own CPU Adam for offloaded state.
        config["zero_force_ds_cpu_optimizer"] = False
    return config


def mixed_precision(recipe: Recipe) -> MixedPrecision:
    return {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[recipe.training.precision]  # type: ignore[return-value]


def distributed_type(recipe: Recipe, topology: Topology) -> str:
    """accelerate's distributed_type, as the recipe's engine says."""
    return engine_of(recipe).distributed_type(recipe, topology.world_size)


def accelerate_config(
    recipe: Recipe,
    topology: Topology,
    *,
    config_dir: Path | None = None,
    use_cpu: bool = False,
) -> dict[str, Any]:
    """An accelerate config file's content (the format `accelerate config` writes).

    `config_dir` is where the engine's own files (the DeepSpeed JSON) are written.
    `use_cpu` is written only for one process: accelerate's single-process launcher sets
    ACCELERATE_USE_CPU from it, while with `use_cpu: true` several processes would be the
    MULTI_CPU type, which `accelerate launch` starts as one process (without MPI)."""
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": distributed_type(recipe, topology),
        "mixed_precision": mixed_precision(recipe),
        "num_processes": topology.world_size,
        "num_machines": topology.nnodes,
        "machine_rank": topology.node_rank,
        "main_process_ip": topology.master_addr,
        "main_process_port": topology.master_port,
        "rdzv_backend": "static",
        "same_network": True,
        "main_training_function": "main",
        "use_cpu": use_cpu and topology.world_size == 1,
        "debug": False,
        "downcast_bf16": "no",
        "enable_cpu_affinity": False,
        "tpu_env": [],
        "tpu_use_cluster": False,
        "tpu_use_sudo": False,
    }
    config.update(engine_of(recipe).accelerate_sections(recipe, config_dir))
    return config


@dataclass(frozen=True)
class GeneratedConfigs:
    accelerate: Path
    files: dict[str, Path] = field(default_factory=dict)  # the engine's own, by name

    @property
    def deepspeed(self) -> Path | None:
        return self.files.get(DEEPSPEED_CONFIG)


def engine_files(recipe: Recipe, brought: dict[str, str] | None = None) -> dict[str, str]:
    """The engine's files by name: generated from the recipe, or the user's (`brought`)."""
    files = engine_of(recipe).config_files(recipe)
    return {**files, **{k: v for k, v in (brought or {}).items() if k in files}}


def write_configs(
    recipe: Recipe,
    topology: Topology,
    directory: Path,
    *,
    use_cpu: bool = False,
    brought: dict[str, str] | None = None,
    brought_accelerate: dict[str, Any] | None = None,
    accelerate_source: str = "",
) -> GeneratedConfigs:
    """Write the accelerate config (and the engine's files, e.g. the DeepSpeed JSON) into
    `directory`; `brought` replaces an engine file by the user's content, and
    `brought_accelerate` is a user's accelerate config merged with the generated one."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for name, content in engine_files(recipe, brought).items():
        files[name] = directory / name
        files[name].write_text(content, encoding="utf-8")
    config = accelerate_config(recipe, topology, config_dir=directory.resolve(), use_cpu=use_cpu)
    header = (
        "# Generated by `sftkit launch` from the recipe's `distributed` section; edit the recipe,\n"
        "# not this file. Usable as `accelerate launch --config_file THIS -m sftkit.launch.worker ...`.\n"
    )
    if brought_accelerate is not None:
        config = merge_accelerate_config(brought_accelerate, config, source=accelerate_source)
        header = (
            f"# {accelerate_source}, with the launch's topology and the recipe's engine set by\n"
            "# `sftkit launch`.\n"
        )
    acc_path = directory / ACCELERATE_CONFIG
    acc_path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return GeneratedConfigs(acc_path, files)


# --------------------------------------------------------------------------- brought configs

# What sftkit sets in an accelerate config from the launch (its command line says it too).
TOPOLOGY_KEYS = (
    "num_processes",
    "num_machines",
    "machine_rank",
    "main_process_ip",
    "main_process_port",
)
# What follows from the recipe: a brought file may repeat these, not contradict them.
ENGINE_KEYS = ("distributed_type", "mixed_precision", "fsdp_config", "deepspeed_config")


def merge_accelerate_config(
    brought: dict[str, Any], generated: dict[str, Any], *, source: str
) -> dict[str, Any]:
    """A user's accelerate config with the launch's topology and the recipe's engine: its
    other settings (dynamo, GPU ids, CPU affinity, ...) are kept; an engine setting that
    differs from the recipe's is a `LaunchError` naming it, both values and the fix."""
    for key in ENGINE_KEYS:
        if key in brought and key in generated and brought[key] != generated[key]:
            raise LaunchError(
                f"{source}: {key} is {brought[key]!r}, but the recipe's distributed section "
                f"gives {generated[key]!r}.",
                hint="The recipe decides the engine and precision (distributed.*, "
                "training.precision; a DeepSpeed JSON with --deepspeed-config): remove the key "
                "from the file or change the recipe.",
            )
        if key in brought and key not in generated:
            raise LaunchError(
                f"{source}: {key} is set, but the recipe's engine "
                f"({generated.get('distributed_type')}) has no such section.",
                hint="Set the recipe's distributed.engine instead.",
            )
    merged = {**generated, **brought}
    for key in (*TOPOLOGY_KEYS, *ENGINE_KEYS, "use_cpu"):
        if key in generated:
            merged[key] = generated[key]
    return merged


def deepspeed_overrides(config: dict[str, Any], *, source: str) -> list[str]:
    """Recipe overrides that make the recipe (and so the memory estimate and recipe.yaml)
    state what a brought DeepSpeed JSON does: the engine, the ZeRO stage, offloading."""
    zero = config.get("zero_optimization")
    zero = zero if isinstance(zero, dict) else {}
    stage = zero.get("stage", 0)
    if stage not in (2, 3):
        raise LaunchError(
            f"{source}: zero_optimization.stage is {stage!r}; sftkit's deepspeed engine runs "
            "ZeRO-2 or ZeRO-3.",
            hint="Set zero_optimization.stage to 2 or 3.",
        )

    def on_cpu(section: str) -> bool:
        value = zero.get(section)
        return isinstance(value, dict) and value.get("device") == "cpu"

    overrides = [
        "distributed.engine=deepspeed",
        f"distributed.zero_stage={stage}",
        f"distributed.cpu_offload={str(on_cpu('offload_optimizer')).lower()}",
    ]
    if stage == 3 and on_cpu("offload_optimizer"):
        overrides.append(
            f"distributed.deepspeed.offload_params={str(on_cpu('offload_param')).lower()}"
        )
    return overrides
