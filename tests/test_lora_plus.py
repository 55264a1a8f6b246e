"""lora-plus and the strategy's param_groups hook on a tiny Llama on CPU: the optimizer's
groups carry LoRA+ rates, every scheduler keeps their ratio, a run trains and resumes
exactly, and a strategy whose groups are wrong gets a typed error naming it."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from test_run import Recorder, events, losses  # noqa: E402
from tiny_models import config_dir, recipe_text, saved_model_dir  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from sftkit.builtin.strategies import LoraOptions, LoraPlusOptions, lora_adapters  # noqa: E402
from sftkit.data.char_tokenizer import build_char_tokenizer  # noqa: E402
from sftkit.errors import ParamGroupsError, RecipeError, SftkitError  # noqa: E402
from sftkit.hookspecs import hookimpl  # noqa: E402
from sftkit.modeling import build_model  # noqa: E402
from sftkit.recipe.load import load_recipe_text  # noqa: E402
from sftkit.specs import StrategySpec  # noqa: E402
from sftkit.strategies import StrategyContext, check_param_groups  # noqa: E402
from sftkit.strategies.lora import Lora  # noqa: E402
from sftkit.testing import registered  # noqa: E402
from sftkit.training.optimizer import build_optimizer  # noqa: E402
from sftkit.training.runner import run_recipe  # noqa: E402

LR = 1e-3
RECIPES = Path(__file__).resolve().parent.parent / "recipes"


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saved_model_dir(tmp_path_factory.mktemp("tiny"))


def test_memory_is_exactly_loras_and_it_is_not_suggested_twice(registry):
    """The estimator prices lora-plus from its spec: as lora. Advice for a rejected recipe
    lists one of two changes with the same predicted memory, so lora-plus crowds out no
    other suggestion (the seed's rejection still proposes qlora-nf4)."""
    from sftkit.memory import estimate
    from sftkit.recipe.load import load_recipe

    seed = RECIPES / "r1_gsm8k_full.yaml"
    lora, plus = (
        estimate(load_recipe(str(seed), [f"strategy.name={name}"], registry=registry))
        for name in ("lora", "lora-plus")
    )
    assert plus.terms == lora.terms and plus.phases == lora.phases
    changes = [s.change for s in estimate(load_recipe(str(seed), registry=registry)).suggestions]
    assert {"strategy lora", "strategy lora-8bit", "strategy qlora-nf4"} <= set(changes)
    assert "strategy lora-plus" not in changes


def lora_plus_recipe(
    registry: Any, model: Path, run_dir: Path, *overrides: str, **options: Any
) -> Any:
    text = recipe_text(
        model,
        run_dir,
        strategy="lora-plus",
        strategy_options={"rank": 4, "alpha": 8, **options},
        optimizer="adamw",
        optimizer_options={"lr": LR, "weight_decay": 0.1, "fused": False},
        random_init=False,
    )
    return load_recipe_text(text, list(overrides), registry=registry)


def names_by_group(model: Any, optimizer: Any) -> list[set[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [{names[id(p)] for p in g["params"]} for g in optimizer.param_groups]


def test_options_are_loras_plus_a_positive_ratio():
    assert LoraPlusOptions().ratio == 16
    assert set(LoraPlusOptions.model_fields) == set(LoraOptions.model_fields) | {"ratio"}
    for bad in (0, -1):
        with pytest.raises(ValueError, match="ratio"):
            LoraPlusOptions(ratio=bad)


def test_b_matrices_train_at_ratio_times_the_rate(registry, model_dir, tmp_path):
    # DoRA adds 1-D magnitude vectors: they train at the base rate without weight decay.
    resolved = lora_plus_recipe(registry, model_dir, tmp_path / "run", ratio=4, use_dora=True)
    model = build_model(resolved, build_char_tokenizer())
    optimizer = build_optimizer(resolved, model)
    groups = optimizer.param_groups
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    seen = names_by_group(model, optimizer)
    assert set().union(*seen) == trainable and sum(map(len, seen)) == len(trainable)
    assert groups[0]["lr"] == LR  # the trainer logs the first group's rate
    for group, names in zip(groups, seen, strict=True):
        b_matrices = {n for n in names if ".lora_B." in n}
        assert b_matrices in (set(), names), "a group mixes B matrices with others"
        assert group["lr"] == pytest.approx(4 * LR if b_matrices else LR, rel=1e-12)
        one_d = {n for n in names if "lora_magnitude_vector" in n}
        assert one_d in (set(), names)
        assert group["weight_decay"] == (0.0 if one_d else 0.1)
    assert any(".lora_A." in n for n in seen[0]) and any(".lora_B." in n for n in trainable)
    assert any("lora_magnitude_vector" in n for names in seen for n in names)


def b_group_flags(model: Any, optimizer: Any) -> list[bool]:
    """For each optimizer group: does it hold B matrices (all of its parameters, or none)?"""
    flags = []
    for names in names_by_group(model, optimizer):
        b_matrices = {n for n in names if ".lora_B." in n}
        assert b_matrices in (set(), names), "a group mixes B matrices with others"
        flags.append(bool(b_matrices))
    assert any(flags) and not all(flags)
    return flags


def assert_ratio(rates: list[float], flags: list[bool], ratio: float = 16) -> float:
    """Every B group at `ratio` x the base groups' common rate; returns that base rate."""
    (base,) = {lr for lr, b in zip(rates, flags, strict=True) if not b}
    for lr, b in zip(rates, flags, strict=True):
        if b:
            assert lr == pytest.approx(ratio * base, rel=1e-9, abs=0.0)
    return base


@pytest.mark.parametrize("scheduler", ["linear", "cosine", "constant", "constant_with_warmup"])
def test_every_scheduler_keeps_the_ratio(registry, model_dir, tmp_path, scheduler):
    """transformers builds the recipe's scheduler from the optimizer (LambdaLR): it must scale
    each group's own initial rate, not impose one rate on all groups."""
    from transformers import get_scheduler

    resolved = lora_plus_recipe(registry, model_dir, tmp_path / "run")
    model = build_model(resolved, build_char_tokenizer())
    optimizer = build_optimizer(resolved, model)
    flags = b_group_flags(model, optimizer)
    schedule = get_scheduler(scheduler, optimizer, num_warmup_steps=2, num_training_steps=8)
    bases = [assert_ratio([g["lr"] for g in optimizer.param_groups], flags)]
    for _ in range(8):
        optimizer.step()  # no gradients: changes nothing, keeps torch's step-order check quiet
        schedule.step()
        bases.append(assert_ratio([g["lr"] for g in optimizer.param_groups], flags))
    if scheduler == "constant":
        assert set(bases) == {LR}
    else:  # the schedule moved the rates, and the B rates moved with them
        assert len(set(bases)) > 2 and max(bases) == pytest.approx(LR)


def test_an_optimizer_without_a_rate_is_a_recipe_error(registry, model_dir, tmp_path):
    text = recipe_text(
        model_dir,
        tmp_path / "run",
        strategy="lora-plus",
        optimizer="adafactor",
        optimizer_options={"lr": None},
        random_init=False,
    )
    with pytest.raises(RecipeError) as info:
        load_recipe_text(text, registry=registry)
    assert [p.path for p in info.value.problems] == ["optimizer.options.lr"]
    assert "16 x" in str(info.value)


class GroupRates(TrainerCallback):
    """The optimizer groups' rates each step trains with (read before the step)."""

    def __init__(self) -> None:
        self.by_step: dict[int, list[float]] = {}
        self.flags: list[bool] = []

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.by_step[state.global_step + 1] = [g["lr"] for g in optimizer.param_groups]
        self.flags = self.flags or b_group_flags(model, optimizer)


@pytest.mark.slow
def test_trains_and_resumes_exactly(tmp_path):
    """Reference: four uninterrupted steps under warmup + cosine. Then the same recipe
    interrupted after step 3 (checkpoint-2 is the last saved) and resumed: the same losses,
    the same final adapter, and the groups at the same LoRA+ rates (which depend on the
    restored optimizer groups and scheduler)."""
    from safetensors.torch import load_file

    model = config_dir(tmp_path / "model")

    def recipe(run_dir: Path, registry: Any) -> Any:
        text = recipe_text(
            model,
            run_dir,
            strategy="lora-plus",
            strategy_options={"rank": 4, "alpha": 8},
            optimizer="adamw",
            optimizer_options={"lr": 3e-3, "weight_decay": 0.01},
            max_steps=4,
            save_steps=2,
            micro_batch_size=4,
        )
        overrides = ["training.lr_scheduler=cosine", "training.warmup_ratio=0.25"]
        return load_recipe_text(text, overrides, registry=registry)

    ref_rates = GroupRates()
    with registered() as registry:
        assert run_recipe(recipe(tmp_path / "ref", registry), callbacks=[ref_rates]).status == (
            "completed"
        )
    reference = losses(tmp_path / "ref")
    assert sorted(reference) == [1, 2, 3, 4] and reference[4] < reference[1]
    assert sorted(ref_rates.by_step) == [1, 2, 3, 4]
    bases = [assert_ratio(ref_rates.by_step[s], ref_rates.flags) for s in (1, 2, 3, 4)]
    assert len(set(bases)) == 4  # warmup then decay: every step a different rate
    logged = {e["step"]: e["learning_rate"] for e in events(tmp_path / "ref") if "loss" in e}
    assert len(set(logged.values())) > 1

    stopper = Recorder(stop_at=3)
    with registered(stopper) as registry, pytest.raises(KeyboardInterrupt):
        run_recipe(recipe(tmp_path / "cut", registry))
    cut = tmp_path / "cut"
    assert [losses(cut)[s] for s in (1, 2)] == [reference[1], reference[2]]

    cut_rates = GroupRates()
    with registered() as registry:
        run_recipe(recipe(cut, registry), resume=True, callbacks=[cut_rates])
    run = json.loads((cut / "run.json").read_text())
    assert run["status"] == "completed" and run["resumed_from"].endswith("checkpoint-2")
    assert sorted(cut_rates.by_step) == [3, 4] and cut_rates.flags == ref_rates.flags
    for step in (3, 4):
        assert cut_rates.by_step[step] == pytest.approx(ref_rates.by_step[step], rel=1e-12)
    again = [e for e in events(cut) if "loss" in e][-2:]
    assert [e["step"] for e in again] == [3, 4]
    for event in again:
        assert event["loss"] == pytest.approx(reference[event["step"]], rel=1e-5)
        assert event["learning_rate"] == pytest.approx(logged[event["step"]], rel=1e-12)
    ref_weights = load_file(str(tmp_path / "ref" / "final" / "adapter_model.safetensors"))
    cut_weights = load_file(str(cut / "final" / "adapter_model.safetensors"))
    assert ref_weights.keys() == cut_weights.keys() and any("lora_B" in k for k in ref_weights)
    for name, tensor in ref_weights.items():
        assert torch.allclose(cut_weights[name], tensor, atol=1e-6), name


# ------------------------------------------------------------ a strategy with bad groups


class BadGroups(Lora):
    """LoRA whose param_groups break the rules in the way its options say."""

    def param_groups(self, model, ctx, base_lr, weight_decay):
        params = [p for p in model.parameters() if p.requires_grad]
        frozen = next(p for p in model.parameters() if not p.requires_grad)
        return {
            "missing": [{"params": params[1:]}],
            "twice": [{"params": params}, {"params": params[:1], "lr": 1.0}],
            "frozen": [{"params": [*params, frozen]}],
            "not-a-list": ({"params": params},),
        }[self.options.mistake]


class BadGroupsOptions(LoraOptions):
    mistake: str = "missing"


def build_bad_groups(options: Any) -> BadGroups:
    return BadGroups(options)


class BadGroupsPlugin:
    @hookimpl
    def register_strategies(self, register):
        register(
            StrategySpec(
                name="bad-groups",
                summary="LoRA with broken optimizer groups (test).",
                factory=f"{__name__}:build_bad_groups",
                options_model=BadGroupsOptions,
                adapters=lora_adapters,
            )
        )


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ("missing", "leaves trainable parameters out of every group: 'base_model"),
        ("twice", "in group 0 and again in group 1"),
        ("frozen", "holds the frozen parameter 'base_model"),
        ("not-a-list", "must return a non-empty list of dicts or None"),
    ],
)
def test_bad_param_groups_are_a_typed_error_naming_the_strategy(
    model_dir, tmp_path, mistake, message
):
    with registered(BadGroupsPlugin()) as registry:
        text = recipe_text(
            model_dir,
            tmp_path / "run",
            strategy="bad-groups",
            strategy_options={"rank": 4, "mistake": mistake},
            random_init=False,
        )
        resolved = load_recipe_text(text, registry=registry)
        model = build_model(resolved, build_char_tokenizer())
        with pytest.raises(ParamGroupsError) as info:
            build_optimizer(resolved, model)
    assert "strategy 'bad-groups': param_groups()" in str(info.value)
    assert message in str(info.value)


class DuckStrategy:
    """A strategy object that implements the protocol without subclassing `Strategy`."""

    def __init__(self, options: Any) -> None:
        self.options = options

    def load_kwargs(self, ctx):
        assert isinstance(ctx, StrategyContext) and ctx.device == "cpu"
        return {}

    def apply(self, model, ctx):
        model.requires_grad_(False)
        model.lm_head.requires_grad_(True)
        return model

    def param_groups(self, model, ctx, base_lr, weight_decay):
        return [{"params": [model.lm_head.weight], "lr": 2 * base_lr}]


def not_a_strategy(options: Any) -> Any:
    return {"load_kwargs": None}


class StrategyObjectsPlugin:
    @hookimpl
    def register_strategies(self, register):
        for name, factory in (("duck", "DuckStrategy"), ("not-a-strategy", "not_a_strategy")):
            register(StrategySpec(name=name, summary="test", factory=f"{__name__}:{factory}"))


def test_any_object_with_the_protocol_is_a_strategy(model_dir, tmp_path):
    with registered(StrategyObjectsPlugin()) as registry:

        def resolve(strategy: str) -> Any:
            text = recipe_text(model_dir, tmp_path / "run", strategy=strategy, random_init=False)
            return load_recipe_text(text, registry=registry)

        duck = resolve("duck")
        model = build_model(duck, build_char_tokenizer())
        optimizer = build_optimizer(duck, model)
        assert [g["lr"] for g in optimizer.param_groups] == [2 * 3e-3]
        assert optimizer.param_groups[0]["params"] == [model.lm_head.weight]
        with pytest.raises(SftkitError, match="not a strategy object") as info:
            build_model(resolve("not-a-strategy"), build_char_tokenizer())
    assert "'not-a-strategy'" in str(info.value) and "StrategyProtocol" in str(info.value)


def test_check_param_groups_accepts_each_parameter_once(registry, model_dir, tmp_path):
    resolved = lora_plus_recipe(registry, model_dir, tmp_path / "run")
    model = build_model(resolved, build_char_tokenizer())
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": trainable[::2]}, {"params": trainable[1::2], "lr": 0.5}]
    assert check_param_groups(groups, model, strategy="x") is groups
    with pytest.raises(ParamGroupsError, match="not a parameter of the model"):
        check_param_groups([{"params": [*trainable, torch.zeros(2)]}], model, strategy="x")


def test_the_context_tells_qlora_how_to_store_a_sharded_base(registry, model_dir, tmp_path):
    """QLoRA reads the engine's sharding from the context, not from sftkit.distributed."""
    pytest.importorskip("bitsandbytes")
    from sftkit.strategies.lora import QLora

    resolved = load_recipe_text(
        recipe_text(model_dir, tmp_path / "run", strategy="qlora-nf4", random_init=False),
        registry=registry,
    )
    strategy = QLora(resolved.strategy.options)
    for shards, storage in ((True, torch.bfloat16), (False, torch.uint8)):
        ctx = StrategyContext(recipe=resolved.recipe, device="cpu", shards_parameters=shards)
        config = strategy.load_kwargs(ctx)["quantization_config"]
        assert config.load_in_4bit and config.bnb_4bit_quant_storage == storage


# ------------------------------------------------------------ the docs' examples run


DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(doc: str, heading: str) -> list[str]:
    """The ```python blocks of one `## heading` section of a docs page."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def rates_by_name(model: Any, optimizer: Any) -> dict[str, float]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}


def test_the_layer_decay_plugin_in_writing_a_plugin_runs(model_dir, tmp_path, monkeypatch):
    blocks = [
        b
        for b in python_blocks(
            "writing-a-plugin.md", "Part 2: one worked example per component kind"
        )
        if b.startswith("# file: acme_sftkit/layer_decay.py")
    ]
    assert len(blocks) == 1
    module = types.ModuleType("acme_sftkit.layer_decay")
    monkeypatch.setitem(sys.modules, "acme_sftkit.layer_decay", module)
    exec(compile(blocks[0], "acme_sftkit/layer_decay.py", "exec"), module.__dict__)
    with registered(module) as registry:
        text = recipe_text(
            model_dir,
            tmp_path / "run",
            strategy="full-sft-layer-decay",
            strategy_options={"decay": 0.5},
            optimizer_options={"lr": LR, "weight_decay": 0.1, "fused": False},
            random_init=False,
        )
        resolved = load_recipe_text(text, registry=registry)
        model = build_model(resolved, build_char_tokenizer())
        optimizer = build_optimizer(resolved, model)
    assert optimizer.param_groups[0]["lr"] == LR
    rates = rates_by_name(model, optimizer)
    assert len(rates) == sum(1 for _ in model.parameters())  # full fine-tuning: all train
    for name, rate in rates.items():  # the tiny model has 2 layers
        layer = re.search(r"\.layers\.(\d+)\.", name)
        depth = int(layer.group(1)) + 1 if layer else (0 if "embed_tokens" in name else 3)
        assert rate == pytest.approx(LR * 0.5 ** (3 - depth), rel=1e-12), name
    for group in optimizer.param_groups:
        one_d = {p.ndim for p in group["params"]} == {1}
        assert group["weight_decay"] == (0.0 if one_d else 0.1)


def test_the_slow_embeddings_example_in_plugin_hooks_runs(registry, model_dir, tmp_path):
    (code,) = python_blocks("plugin-hooks.md", "Strategy objects")
    namespace: dict[str, Any] = {}
    exec(compile(code, "plugin-hooks.md", "exec"), namespace)
    resolved = load_recipe_text(
        recipe_text(model_dir, tmp_path / "run", random_init=False), registry=registry
    )
    model = build_model(resolved, build_char_tokenizer())  # full-sft: everything trains
    ctx = StrategyContext(recipe=resolved.recipe, device="cpu", shards_parameters=False)
    groups = namespace["SlowEmbeddings"]().param_groups(model, ctx, LR, 0.1)
    check_param_groups(groups, model, strategy="slow-embeddings")
    optimizer = torch.optim.AdamW(groups, lr=LR, weight_decay=0.1)
    rates = rates_by_name(model, optimizer)
    assert rates.pop("model.embed_tokens.weight") == pytest.approx(LR / 10)
    assert set(rates.values()) == {LR}
