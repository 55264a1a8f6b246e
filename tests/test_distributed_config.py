"""The distributed section, and the configs generated from it, read back by the tools that
consume them: accelerate's own launcher and plugins, transformers' TrainingArguments and its
DeepSpeed integration, torchrun's argument parser. No process is started here."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftkit.distributed.configs import (
    accelerate_config,
    deepspeed_config,
    fsdp_plan,
    write_configs,
)
from sftkit.distributed.describe import describe_engine
from sftkit.distributed.launch import launch_command, worker_arguments
from sftkit.distributed.rank import is_main_process, local_rank, rank, world_size
from sftkit.distributed.topology import Topology
from sftkit.distributed.trainer import (
    backend,
    shards_parameters,
    trainer_arguments,
)
from sftkit.errors import LaunchError, RecipeError
from sftkit.recipe.load import load_recipe, validate_recipe_data
from sftkit.recipe.schema import Recipe
from sftkit.testing import fresh_registry
from sftkit.training.runfiles import resolved_recipe_data

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
FULL = RECIPES / "r1_gsm8k_full.yaml"
QLORA = RECIPES / "r1_gsm8k_qlora.yaml"
INT8 = RECIPES / "r1_gsm8k_lora8bit.yaml"


REGISTRY = fresh_registry()


def recipe(**distributed) -> Recipe:
    """A resolved recipe (its engine looked up, its defaults written out) with `distributed`."""
    return validate_recipe_data(
        {
            "model": {"name_or_path": "x"},
            "strategy": {"name": "full-sft"},
            "optimizer": {"name": "adamw"},
            "training": {"micro_batch_size": 4, "gradient_accumulation_steps": 2},
            "distributed": distributed,
        },
        registry=REGISTRY,
    ).recipe


def problems(path, registry, *overrides):
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides, registry=registry)
    return {p.path: f"{p.message} {p.suggestion or ''}" for p in info.value.problems}


# --------------------------------------------------------------------------- schema


def test_defaults_are_single_process_and_fsdp2():
    d = recipe().distributed
    assert (d.engine, d.backend, d.cpu_offload, d.zero_stage) == ("none", "auto", False, None)
    assert d.fsdp.version == 2 and d.fsdp.reshard_after_forward
    assert d.fsdp.state_dict_type == "sharded"


def test_deepspeed_stage_defaults_to_2_and_is_written_out():
    assert recipe(engine="deepspeed").distributed.zero_stage == 2
    assert recipe(engine="deepspeed", zero_stage=3).distributed.zero_stage == 3


def test_settings_for_another_engine_are_errors_each_at_its_key(registry):
    found = problems(
        FULL,
        registry,
        "distributed.engine=ddp",
        "distributed.zero_stage=3",
        "distributed.cpu_offload=true",
        "distributed.fsdp.version=1",
        "distributed.deepspeed.gather_weights_on_save=false",
    )
    assert set(found) == {
        "distributed.zero_stage",
        "distributed.cpu_offload",
        "distributed.fsdp",
        "distributed.deepspeed",
    }
    assert "engine: deepspeed" in found["distributed.zero_stage"]
    assert "fsdp or deepspeed" in found["distributed.cpu_offload"]


def test_offload_params_needs_stage3_with_offload(registry):
    found = problems(
        FULL,
        registry,
        "distributed.engine=deepspeed",
        "distributed.zero_stage=2",
        "distributed.cpu_offload=true",
        "distributed.deepspeed.offload_params=true",
    )
    assert "zero_stage: 3" in found["distributed.deepspeed"]
    ok = load_recipe(
        FULL,
        (
            "distributed.engine=deepspeed",
            "distributed.zero_stage=3",
            "distributed.cpu_offload=true",
            "distributed.deepspeed.offload_params=false",
        ),
        registry=registry,
    )
    assert ok.recipe.distributed.deepspeed.offload_params is False


def test_unknown_distributed_key_suggests(registry):
    found = problems(FULL, registry, "distributed.fsdp.reshard_after_fwd=false")
    assert "distributed.fsdp.reshard_after_fwd" in found


@pytest.mark.parametrize("engine", ["none", "ddp", "fsdp", "deepspeed"])
def test_a_run_directory_recipe_with_every_default_written_revalidates(registry, engine):
    # A run's recipe.yaml spells out the fsdp/deepspeed defaults whatever the engine.
    resolved = load_recipe(FULL, (f"distributed.engine={engine}",), registry=registry)
    data = yaml.safe_load(yaml.safe_dump(resolved_recipe_data(resolved)))
    again = validate_recipe_data(data, registry=registry)
    assert again.recipe.distributed == resolved.recipe.distributed


# --------------------------------------------------------------------------- recipe checks


def test_int8_base_cannot_be_sharded(registry):
    for overrides in (
        ("distributed.engine=fsdp",),
        ("distributed.engine=deepspeed", "distributed.zero_stage=3"),
    ):
        found = problems(INT8, registry, *overrides)
        assert "LLM.int8" in found["distributed.engine"]
    # Replicated parameters are fine: DDP and ZeRO-2.
    load_recipe(INT8, ("distributed.engine=ddp",), registry=registry)
    load_recipe(INT8, ("distributed.engine=deepspeed",), registry=registry)


def test_sharded_4bit_base_needs_one_dtype(registry):
    fsdp = ("distributed.engine=fsdp", "optimizer.name=adamw")
    found = problems(QLORA, registry, *fsdp, "strategy.options.compute_dtype=float16")
    assert "model.dtype" in found["strategy.options.compute_dtype"]
    resolved = load_recipe(QLORA, fsdp, registry=registry)
    # the strategy then stores the packed 4-bit bytes in the compute dtype (test_lora_plus.py
    # checks QLora.load_kwargs); replicating engines keep bitsandbytes' uint8
    assert shards_parameters(resolved.recipe)
    assert not shards_parameters(load_recipe(QLORA, (), registry=registry).recipe)
    assert not shards_parameters(
        load_recipe(QLORA, ("distributed.engine=ddp",), registry=registry).recipe
    )


def test_hardware_the_engine_needs(registry):
    found = problems(
        FULL, registry, "hardware.gpu=cpu", "distributed.engine=ddp", "distributed.backend=nccl"
    )
    assert "nccl" in found["distributed.backend"]
    found = problems(FULL, registry, "hardware.gpu=cpu", "distributed.engine=deepspeed")
    assert "DeepSpeed" in found["distributed.engine"]


def test_paged_optimizer_and_cpu_offload_do_not_compose(registry):
    offload = ("distributed.engine=deepspeed", "distributed.cpu_offload=true")
    found = problems(QLORA, registry, *offload)
    assert "paged" in found["optimizer.name"]
    load_recipe(QLORA, (*offload, "optimizer.name=adamw-8bit"), registry=registry)


@pytest.mark.parametrize("optimizer", ["paged-adamw-8bit", "adamw-8bit", "adafactor"])
def test_fsdp_steps_only_torch_optimizers(registry, optimizer):
    # bitsandbytes' kernels and transformers' Adafactor mix plain tensors with FSDP2's
    # DTensors and fail at the first step (seen on two CPU processes); say so up front.
    found = problems(QLORA, registry, "distributed.engine=fsdp", f"optimizer.name={optimizer}")
    assert "DTensor" in found["optimizer.name"]
    assert "optimizer.name=adamw" in found["optimizer.name"]


def test_fsdp_qlora_with_adamw_is_valid(registry):
    resolved = load_recipe(
        QLORA, ("distributed.engine=fsdp", "optimizer.name=adamw"), registry=registry
    )
    assert resolved.recipe.distributed.engine == "fsdp"


# --------------------------------------------------------------------------- FSDP


fsdp_settings = st.fixed_dictionaries(
    {
        "engine": st.just("fsdp"),
        "cpu_offload": st.booleans(),
        "fsdp": st.fixed_dictionaries(
            {
                "version": st.sampled_from([1, 2]),
                "reshard_after_forward": st.booleans(),
                "activation_checkpointing": st.sampled_from([None, True, False]),
                "state_dict_type": st.sampled_from(["sharded", "full"]),
                "wrap_layers": st.sampled_from([None, ["LlamaDecoderLayer"]]),
            }
        ),
    }
)


def _offloads(plugin) -> bool:
    from torch.distributed.fsdp import CPUOffloadPolicy

    if plugin.fsdp_version == 2:
        return isinstance(plugin.cpu_offload, CPUOffloadPolicy)
    return bool(plugin.cpu_offload.offload_params)


def _accelerate_env(config_file: Path, monkeypatch) -> dict[str, str]:
    """What `accelerate launch --config_file` would put in each worker's environment."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    cmd = launch_command(
        "accelerate", Topology(2, master_port=29999), ["run"], accelerate_config=config_file
    )
    argv = cmd.argv[3:]  # after `python -m accelerate.commands.launch`
    args = launch_command_parser().parse_args(argv)
    args, _, _ = _validate_launch_command(args)
    assert args.use_fsdp and args.num_processes == 2 and args.module
    assert args.training_script == "sftkit.launch.worker"
    return prepare_multi_gpu_env(args)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(settings_=fsdp_settings)
def test_fsdp_config_means_the_same_to_accelerate_launch_and_to_the_trainer(
    settings_, tmp_path_factory, monkeypatch
):
    """Both dialects of one FsdpPlan build equal accelerate FSDP plugins."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from transformers import TrainingArguments

    r = recipe(**settings_)
    plan = fsdp_plan(r)
    directory = tmp_path_factory.mktemp("cfg")
    generated = write_configs(r, Topology(2), directory)
    with monkeypatch.context() as m:
        for key, value in _accelerate_env(generated.accelerate, m).items():
            if key.startswith(("FSDP_", "ACCELERATE_USE_FSDP")):
                m.setenv(key, value)
        from_launch = FullyShardedDataParallelPlugin()
    with monkeypatch.context() as m:
        m.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")  # TrainingArguments writes it
        for key, value in plan.worker_environment().items():
            m.setenv(key, value)
        args = TrainingArguments(
            output_dir=str(directory),
            use_cpu=True,
            fsdp=True,
            fsdp_config=plan.trainer_keys(),
            report_to="none",
        )
        from_trainer = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    for plugin in (from_launch, from_trainer):
        assert plugin.fsdp_version == plan.version
        assert _offloads(plugin) == plan.cpu_offload
        assert plugin.activation_checkpointing == plan.activation_checkpointing
        assert plugin.state_dict_type.name == plan.state_dict_type
        if plan.wrap_layers:
            assert plugin.transformer_cls_names_to_wrap == list(plan.wrap_layers)
    if plan.version == 2:
        assert from_launch.reshard_after_forward is plan.reshard_after_forward
        assert from_trainer.reshard_after_forward is plan.reshard_after_forward
    else:
        # What accelerate's FSDP1 wrapper uses: the strategy, else reshard_after_forward.
        expected = "FULL_SHARD" if plan.reshard_after_forward else "SHARD_GRAD_OP"
        for plugin in (from_launch, from_trainer):
            used = plugin.sharding_strategy or plugin.reshard_after_forward
            assert used.name == expected


def test_fsdp_activation_checkpointing_follows_gradient_checkpointing():
    on = recipe(engine="fsdp")
    assert on.training.gradient_checkpointing and fsdp_plan(on).activation_checkpointing
    off = Recipe.model_validate(
        {
            **on.model_dump(),
            "training": {**on.training.model_dump(), "gradient_checkpointing": False},
        }
    )
    assert not fsdp_plan(off).activation_checkpointing
    forced = recipe(engine="fsdp", fsdp={"activation_checkpointing": False})
    assert not fsdp_plan(forced).activation_checkpointing


def test_accelerate_config_file_loads_with_accelerate(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    for r in (recipe(engine="ddp"), recipe(engine="fsdp"), recipe(engine="deepspeed")):
        generated = write_configs(r, Topology(4, nnodes=2, master_addr="10.0.0.1"), tmp_path)
        config = load_config_from_file(str(generated.accelerate))
        assert config.num_processes == 8 and config.num_machines == 2
        assert config.main_process_ip == "10.0.0.1"
        assert config.distributed_type.value == {"ddp": "MULTI_GPU", "fsdp": "FSDP"}.get(
            r.distributed.engine, "DEEPSPEED"
        )


def test_single_process_ddp_config_is_not_distributed():
    assert accelerate_config(recipe(), Topology(1))["distributed_type"] == "NO"
    assert accelerate_config(recipe(engine="ddp"), Topology(2))["distributed_type"] == "MULTI_GPU"


def test_use_cpu_is_written_for_one_process_only():
    # accelerate's one-process launcher sets ACCELERATE_USE_CPU from the file; several CPU
    # processes must stay MULTI_GPU-typed so that accelerate starts one process per rank.
    assert accelerate_config(recipe(), Topology(1), use_cpu=True)["use_cpu"] is True
    assert accelerate_config(recipe(engine="ddp"), Topology(2), use_cpu=True)["use_cpu"] is False


# --------------------------------------------------------------------------- DeepSpeed


@pytest.mark.parametrize(
    ("stage", "offload", "offload_params", "optimizer_off", "params_off"),
    [
        (2, False, None, False, False),
        (2, True, None, True, False),
        (3, False, None, False, False),
        (3, True, None, True, True),
        (3, True, False, True, False),
    ],
)
def test_deepspeed_json(stage, offload, offload_params, optimizer_off, params_off):
    from accelerate.utils.deepspeed import HfDeepSpeedConfig

    ds = {"offload_params": offload_params} if offload_params is not None else {}
    r = recipe(engine="deepspeed", zero_stage=stage, cpu_offload=offload, deepspeed=ds)
    config = deepspeed_config(r)
    zero = config["zero_optimization"]
    assert zero["stage"] == stage
    assert ("offload_optimizer" in zero) == optimizer_off
    assert ("offload_param" in zero) == params_off
    if stage == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert config.get("zero_force_ds_cpu_optimizer", True) is not offload
    parsed = HfDeepSpeedConfig(json.loads(json.dumps(config)))
    assert parsed.is_zero3() == (stage == 3)
    assert parsed.is_offload() == offload


def test_deepspeed_autos_are_all_filled_by_transformers_from_the_recipe():
    """Every "auto" in the JSON is one transformers fills from TrainingArguments, checked with
    transformers' own filling code (bound onto accelerate's config reader, since transformers'
    class refuses to exist without deepspeed installed)."""
    import transformers.integrations.deepspeed as hf_ds
    from accelerate.utils.deepspeed import HfDeepSpeedConfig

    methods = {
        name: value
        for name, value in vars(hf_ds.HfTrainerDeepSpeedConfig).items()
        if not name.startswith("__")
    }
    filler = type("Filler", (HfDeepSpeedConfig,), methods)
    r = recipe(engine="deepspeed", zero_stage=3, cpu_offload=True)
    hf = filler(deepspeed_config(r))
    hf.mismatches, hf._dtype = [], None
    t = r.training
    args = SimpleNamespace(
        world_size=8,
        per_device_train_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        max_grad_norm=t.max_grad_norm,
        learning_rate=1e-4,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        weight_decay=0.0,
        save_on_each_node=False,
        fp16=False,
        fp16_full_eval=False,
        bf16=True,
        bf16_full_eval=False,
        get_warmup_steps=lambda n: 0,
    )
    hf.trainer_config_process(args)
    model = SimpleNamespace(config=SimpleNamespace(hidden_size=4096))
    hf.trainer_config_finalize(args, model, num_training_steps=100)
    assert "auto" not in json.dumps(hf.config)
    assert hf.config["train_micro_batch_size_per_gpu"] == 4
    assert hf.config["gradient_accumulation_steps"] == 2
    assert hf.config["train_batch_size"] == 8 * 4 * 2
    assert hf.config["bf16"]["enabled"] is True
    assert hf.config["zero_optimization"]["reduce_bucket_size"] == 4096 * 4096


def test_deepspeed_accelerate_config_points_at_the_json(tmp_path):
    r = recipe(engine="deepspeed", zero_stage=3)
    generated = write_configs(r, Topology(8), tmp_path)
    assert generated.deepspeed is not None
    config = yaml.safe_load(generated.accelerate.read_text())
    assert config["distributed_type"] == "DEEPSPEED"
    assert (
        Path(config["deepspeed_config"]["deepspeed_config_file"]) == generated.deepspeed.resolve()
    )
    assert config["deepspeed_config"]["zero3_init_flag"] is True
    assert json.loads(generated.deepspeed.read_text())["zero_optimization"]["stage"] == 3


# --------------------------------------------------------------------------- launch


def test_torchrun_command_parses_with_torchrun():
    from torch.distributed.run import get_args_parser

    topo = Topology(8, nnodes=2, node_rank=1, master_addr="node0", master_port=29400)
    cmd = launch_command("torchrun", topo, worker_arguments(Path("runs/x"), resume=True))
    assert cmd.argv[1:3] == ["-m", "torch.distributed.run"]
    args = get_args_parser().parse_args(cmd.argv[3:])
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("2", "8", 1)
    assert (args.master_addr, args.master_port) == ("node0", 29400)
    assert args.module and args.training_script == "sftkit.launch.worker"
    assert args.training_script_args == ["runs/x", "--resume"]


def test_accelerate_command_multi_node(tmp_path):
    from accelerate.commands.launch import launch_command_parser

    topo = Topology(4, nnodes=2, node_rank=1, master_addr="10.1.2.3", master_port=29500)
    cmd = launch_command(
        "accelerate", topo, ["runs/x"], accelerate_config=tmp_path / "a.yaml", use_cpu=True
    )
    args = launch_command_parser().parse_args(cmd.argv[3:])
    assert (args.num_processes, args.num_machines, args.machine_rank) == (8, 2, 1)
    assert (args.main_process_ip, args.main_process_port) == ("10.1.2.3", 29500)
    assert cmd.env["ACCELERATE_USE_CPU"] == "true"
    assert cmd.shell().startswith("ACCELERATE_USE_CPU=true SFTKIT_LAUNCHER=accelerate ")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"nproc_per_node": 0}, "--nproc"),
        ({"nproc_per_node": 2, "nnodes": 2, "node_rank": 2, "master_addr": "h"}, "--node-rank"),
        ({"nproc_per_node": 2, "nnodes": 2}, "--master-addr"),
        ({"nproc_per_node": 2, "master_port": 70000}, "--master-port"),
        ({"nproc_per_node": 2, "master_addr": "bad host"}, "--master-addr"),
    ],
)
def test_bad_topology(kwargs, needle):
    with pytest.raises(LaunchError, match=needle):
        Topology(**kwargs)


def test_topology_world_size():
    assert Topology(8, nnodes=4, master_addr="n0").world_size == 32
    assert Topology(8, nnodes=4, node_rank=3, master_addr="n0").is_first_node is False


# --------------------------------------------------------------------------- ranks, trainer


def test_rank_helpers_read_the_launcher_environment(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert (rank(), local_rank(), world_size(), is_main_process()) == (0, 0, 1, True)
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert (rank(), local_rank(), world_size(), is_main_process()) == (5, 1, 8, False)
    monkeypatch.setenv("RANK", "garbage")
    assert rank() == 0


def test_trainer_arguments(monkeypatch, tmp_path):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert trainer_arguments(recipe(), tmp_path, use_cpu=True) == {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    ddp = trainer_arguments(recipe(engine="ddp"), tmp_path, use_cpu=True)
    assert ddp["ddp_backend"] == "gloo" and ddp["ddp_find_unused_parameters"] is False
    fsdp = trainer_arguments(recipe(engine="fsdp"), tmp_path, use_cpu=False)
    assert fsdp["ddp_backend"] == "nccl" and fsdp["fsdp"] is True
    assert fsdp["fsdp_config"]["version"] == 2
    assert fsdp["gradient_checkpointing"] is False  # FSDP checkpoints the layers instead
    with pytest.raises(LaunchError, match="sftkit launch"):
        trainer_arguments(recipe(engine="deepspeed"), tmp_path, use_cpu=False)
    write_configs(recipe(engine="deepspeed"), Topology(2), tmp_path / "distributed")
    ds = trainer_arguments(recipe(engine="deepspeed"), tmp_path, use_cpu=False)
    assert ds["deepspeed"] == str(tmp_path / "distributed" / "deepspeed_config.json")
    assert backend(recipe(engine="ddp", backend="gloo"), use_cpu=False) == "gloo"


def test_fsdp_on_cpu_promotes_the_trainer_only_with_several_processes(monkeypatch):
    import sftkit.distributed.cpu_fsdp as cpu_fsdp

    promoted = []
    monkeypatch.setattr(cpu_fsdp, "promote_to_fsdp", promoted.append)
    for engine, use_cpu, world, expected in [
        ("ddp", True, "2", []),
        ("fsdp", False, "2", []),
        ("fsdp", True, "1", []),
        ("fsdp", True, "2", ["trainer"]),
    ]:
        monkeypatch.setenv("WORLD_SIZE", world)
        promoted.clear()
        r = recipe(engine=engine)
        r.distributed.resolved_engine.prepare_trainer("trainer", r, use_cpu=use_cpu)
        assert promoted == expected, (engine, use_cpu, world)


def test_describe_engine():
    assert describe_engine(recipe()) == "single process"
    assert describe_engine(recipe(engine="ddp")).startswith("DDP")
    text = describe_engine(recipe(engine="fsdp", cpu_offload=True))
    assert text.startswith("FSDP2, full shard") and "CPU offload" in text
    text = describe_engine(recipe(engine="deepspeed", zero_stage=3, cpu_offload=True))
    assert text == "DeepSpeed ZeRO-3, optimizer + parameters offloaded"
