"""Engines are components: the built-ins are registered like a plugin's, and a third-party
engine is listed, validated, priced per GPU and configures the trainer through its own
object alone."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import yaml

from sftkit.cli import run_cli
from sftkit.distributed.configs import accelerate_config
from sftkit.distributed.topology import Topology
from sftkit.distributed.trainer import shards_parameters, trainer_arguments
from sftkit.engine import Engine, Sharding, engine_of
from sftkit.errors import Problem, RecipeError, SpecError
from sftkit.hookspecs import hookimpl
from sftkit.launch.session import LaunchRequest, plan_launch
from sftkit.memory import estimate
from sftkit.memory.advice import fit_search
from sftkit.recipe.load import load_recipe, validate_recipe_data
from sftkit.recipe.schema import Recipe
from sftkit.specs import EngineSpec, Options
from sftkit.testing import registered
from sftkit.training.runfiles import resolved_recipe_data

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
FULL = RECIPES / "r1_gsm8k_full.yaml"
QUICKSTART = RECIPES / "quickstart.yaml"


class RingOptions(Options):
    bucket_mb: int = 25


class Ring(Engine):
    """A made-up engine: gradients and optimizer state split N ways, weights replicated."""

    title = "Ring"
    reads = frozenset({"cpu_offload"})

    def sharding(self, distributed, num_gpus):
        n = num_gpus
        return Sharding(1, n, n, 0, False, False, False, distributed.cpu_offload, n > 1)

    def sharding_label(self, distributed):
        return f"ring ({RingOptions.model_validate(distributed.options).bucket_mb} MB buckets)"

    def describe(self, recipe):
        return "ring all-reduce"

    def recipe_problems(self, resolved):
        if resolved.recipe.training.max_grad_norm is None:
            return [Problem("training.max_grad_norm", "the ring engine clips gradients.")]
        return []

    def trainer_arguments(self, recipe, run_dir, *, use_cpu):
        options = RingOptions.model_validate(recipe.distributed.options)
        return {"ddp_bucket_cap_mb": options.bucket_mb}


class RingPlugin:
    @hookimpl
    def register_engines(self, register):
        register(EngineSpec("ring", "A test engine.", Ring(), options_model=RingOptions))


def problems_of(registry, path, *overrides):
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides, registry=registry)
    return {p.path: f"{p.message} {p.suggestion or ''}" for p in info.value.problems}


def terms(est, phase="later_steps"):
    return {t["name"]: t["bytes"] for t in est.to_dict()["terms"] if t["phase"] == phase}


# --------------------------------------------------------------------------- built-ins


def test_builtin_engines_are_registered_by_a_plugin(registry):
    assert registry.engines.names() == ["ddp", "deepspeed", "fsdp", "none"]
    assert {e.plugin for e in registry.engines} == {"builtin.engines"}
    resolved = load_recipe(FULL, ("distributed.engine=fsdp",), registry=registry)
    assert resolved.engine.spec.name == "fsdp"
    assert engine_of(resolved.recipe) is resolved.engine.spec.load()
    assert shards_parameters(resolved.recipe)


def test_list_engines_and_unknown_engine_exit_2(capsys):
    assert run_cli(["list", "engines"]) == 0
    out = capsys.readouterr().out
    assert "deepspeed" in out and "builtin.engines" in out
    assert run_cli(["validate", str(FULL), "distributed.engine=fdsp"]) == 2
    err = capsys.readouterr().err
    assert "distributed.engine" in err and "Did you mean 'fsdp'?" in err


def test_unknown_engine_is_reported_with_the_schema_errors(registry):
    found = problems_of(registry, FULL, "distributed.engine=fdsp", "training.epochs=0")
    assert "unknown engine 'fdsp'" in found["distributed.engine"]
    assert "'fsdp'" in found["distributed.engine"]
    assert "training.epochs" in found
    # An engine's own rules too, when another section fails the schema.
    found = problems_of(
        registry, FULL, "distributed.engine=ddp", "distributed.zero_stage=3", "training.epochs=0"
    )
    assert set(found) == {"training.epochs", "distributed.zero_stage"}


def test_built_in_options_are_refused_and_stage_is_written_out(registry):
    found = problems_of(registry, FULL, "distributed.options.chunks=4")
    assert "distributed.options.chunks" in found
    resolved = load_recipe(FULL, ("distributed.engine=deepspeed",), registry=registry)
    assert resolved.recipe.distributed.zero_stage == 2  # DeepSpeed's default, stated


def test_a_bare_recipe_has_no_engine_to_ask():
    bare = Recipe.model_validate(
        {"model": {"name_or_path": "x"}, "strategy": {"name": "s"}, "optimizer": {"name": "o"}}
    )
    with pytest.raises(ValueError, match="load the recipe"):
        engine_of(bare)


def test_launch_with_several_processes_and_no_engine_trains_with_ddp(registry):
    plan = plan_launch(
        LaunchRequest(str(QUICKSTART), nproc=2, master_port=29555), registry=registry
    )
    assert plan.resolved.recipe.distributed.engine == "ddp"
    assert "2 processes and distributed.engine none: training with DDP." in plan.notes


# --------------------------------------------------------------------------- a plugin's engine


def test_plugin_engine_is_validated_with_its_options_and_rules():
    with registered(RingPlugin()) as registry:
        assert "ring" in registry.engines
        resolved = load_recipe(FULL, ("distributed.engine=ring",), registry=registry)
        assert resolved.engine.plugin == "test-plugin-0"
        assert resolved.engine.options == RingOptions()
        assert resolved.recipe.distributed.options == {"bucket_mb": 25}  # defaults written
        custom = load_recipe(
            FULL, ("distributed.engine=ring", "distributed.options.bucket_mb=50"), registry=registry
        )
        assert custom.recipe.distributed.options == {"bucket_mb": 50}
        # The run's recipe.yaml (and the workers' copy) keeps them.
        data = yaml.safe_load(yaml.safe_dump(resolved_recipe_data(custom)))
        assert data["distributed"]["options"] == {"bucket_mb": 50}
        again = validate_recipe_data(data, registry=registry)
        assert again.engine.options == RingOptions(bucket_mb=50)
        found = problems_of(
            registry,
            FULL,
            "distributed.engine=ring",
            "distributed.options.bucket_md=50",
            "distributed.zero_stage=3",
            "distributed.fsdp.version=1",
        )
        assert set(found) == {
            "distributed.options.bucket_md",
            "distributed.zero_stage",
            "distributed.fsdp",
        }
        assert "Did you mean 'bucket_mb'?" in found["distributed.options.bucket_md"]
        assert "plugin 'test-plugin-0'" in found["distributed.options.bucket_md"]
        # It reads cpu_offload, so that is no error; its cross-section rule is.
        load_recipe(
            FULL, ("distributed.engine=ring", "distributed.cpu_offload=true"), registry=registry
        )
        found = problems_of(
            registry, FULL, "distributed.engine=ring", "training.max_grad_norm=null"
        )
        assert "clips gradients" in found["training.max_grad_norm"]


def test_plugin_engine_is_priced_with_its_own_sharding():
    with registered(RingPlugin()) as registry:
        one = estimate(load_recipe(FULL, (), registry=registry), advise=False)
        ring = estimate(
            load_recipe(
                FULL, ("distributed.engine=ring", "hardware.num_gpus=4"), registry=registry
            ),
            advise=False,
        )
        ddp = estimate(
            load_recipe(FULL, ("distributed.engine=ddp", "hardware.num_gpus=4"), registry=registry),
            advise=False,
        )
    assert "4 GPUs, ring (25 MB buckets); figures are per GPU" in ring.setting
    name = next(n for n in terms(one) if n.startswith("gradients of"))
    assert terms(ring)[name] == -(-terms(one)[name] // 4)  # split 4 ways
    state = next(n for n in terms(one) if n.startswith("adamw state"))
    assert terms(ring)[state] == -(-terms(one)[state] // 4)
    weights = next(n for n in terms(one) if n.startswith("bf16 weights"))
    assert terms(ring)[weights] == terms(one)[weights]  # replicated
    assert "DDP gradient buckets" in terms(ddp) and "DDP gradient buckets" not in terms(ring)
    assert ring.peak_bytes < ddp.peak_bytes


def test_estimate_memory_cli_prices_a_plugin_engine_and_fit_searches_gpus(monkeypatch, capsys):
    import importlib.metadata as md

    plugin = RingPlugin()

    class EP:
        name, value = "ring-plugin", "ring_plugin:plugin"
        dist = types.SimpleNamespace(name="sftkit-ring", version="0.1")

        def load(self):
            return plugin

    monkeypatch.setattr(md, "entry_points", lambda group: [EP()])
    monkeypatch.delenv("SFTKIT_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    assert run_cli(["list", "engines"]) == 0
    assert "ring-plugin" in capsys.readouterr().out
    args = ["estimate-memory", str(FULL), "distributed.engine=ring", "hardware.num_gpus=2"]
    code = run_cli([*args, "--gpu", "H100-80GB", "--json", "--fit"])
    assert code in (0, 3)
    data = json.loads(capsys.readouterr().out)
    assert "2 GPUs, ring (25 MB buckets)" in data["setting"]
    assert data["fit_search"]["hardware.num_gpus"]["fewest"] is not None
    with registered(RingPlugin()) as registry:
        resolved = load_recipe(FULL, ("distributed.engine=ring",), registry=registry)
        assert "hardware.num_gpus" in fit_search(resolved)


def test_plugin_engine_configures_the_trainer_and_accelerate(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with registered(RingPlugin()) as registry:
        r = load_recipe(
            FULL, ("distributed.engine=ring", "distributed.options.bucket_mb=50"), registry=registry
        ).recipe
    kwargs = trainer_arguments(r, tmp_path, use_cpu=True)
    assert kwargs == {
        "ddp_backend": "gloo",
        "ddp_find_unused_parameters": False,
        "ddp_bucket_cap_mb": 50,
    }
    config = accelerate_config(r, Topology(2))
    assert config["distributed_type"] == "MULTI_GPU" and "fsdp_config" not in config
    assert not shards_parameters(r)


# --------------------------------------------------------------------------- specs


def test_engine_spec_takes_an_engine_or_a_lazy_reference():
    with pytest.raises(SpecError, match=r"not a sftkit\.engine\.Engine"):
        EngineSpec("bad", "", object())  # type: ignore[arg-type]
    with pytest.raises(SpecError):
        EngineSpec("bad", "", "no-colon")
    lazy = EngineSpec("fsdp-again", "", "sftkit.builtin.engines:FSDP")
    from sftkit.builtin.engines import FSDP

    assert lazy.load() is FSDP


class ScalingRing(Ring):
    def scale_out(self):
        return [("Ring", {"cpu_offload": False})]


class ScalingRingPlugin:
    @hookimpl
    def register_engines(self, register):
        register(EngineSpec("ring", "A test engine.", ScalingRing(), options_model=RingOptions))


def test_a_plugin_engine_that_scales_out_is_offered_when_a_recipe_does_not_fit():
    """The advice asks every registered engine how it scales out (`Engine.scale_out`): the
    built-ins' FSDP and ZeRO-3 and a plugin's own, each with the fewest GPUs that fit."""
    from sftkit.memory.advice import _more_gpus

    with registered(ScalingRingPlugin()) as registry:
        resolved = load_recipe(FULL, (), registry=registry)
        assert not estimate(resolved, advise=False).fits
        offers = {s.change: s.overrides for s in _more_gpus(resolved, None, None)}
    labels = {change.split(" with ", 1)[1].removesuffix(" (per-GPU peak)") for change in offers}
    assert labels == {"FSDP full shard", "DeepSpeed ZeRO-3", "Ring"}
    ring = next(o for c, o in offers.items() if "with Ring" in c)
    assert "distributed.engine=ring" in ring and "distributed.cpu_offload=false" in ring
