"""The registry and plugin manager: built-ins, duplicates, unknown names, blocking, failures."""

from __future__ import annotations

import types

import pytest

from sftkit.components import Bnb4bit, Dense, LlmInt8, LoRA
from sftkit.errors import DuplicateComponentError, PluginError, SpecError, UnknownComponentError
from sftkit.hookspecs import hookimpl
from sftkit.plugins import DEFAULT_PLUGINS, make_plugin_manager
from sftkit.registry import KINDS, Registry
from sftkit.specs import (
    Blockwise8bitState,
    DenseMomentState,
    OptimizerSpec,
    Options,
    StrategySpec,
)
from sftkit.testing import fresh_manager, registered

BUILTIN_STRATEGIES = {"full-sft", "lora", "lora-plus", "qlora-nf4", "lora-8bit"}
BUILTIN_OPTIMIZERS = {
    "adamw",
    "adamw-8bit",
    "paged-adamw-8bit",
    "paged-adamw-32bit",
    "adafactor",
    "sgd",
}


def _plugin(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        fn.__name__ = hook_name
        setattr(module, hook_name, hookimpl(fn))
    return module


def _strategy(name: str = "my-strategy") -> StrategySpec:
    return StrategySpec(
        name=name,
        summary="test",
        factory="my_pkg.mod:build",
        adapters=lambda options: (LoRA(rank=8),),
    )


def test_builtins_are_registered_through_hooks(registry):
    assert set(registry.strategies.names()) == BUILTIN_STRATEGIES
    assert set(registry.optimizers.names()) == BUILTIN_OPTIMIZERS
    for kind in KINDS:
        for entry in registry.catalog(kind):
            assert entry.plugin.startswith("builtin."), entry
    manager = fresh_manager()
    assert {n for n, _ in DEFAULT_PLUGINS} <= set(manager.infos)


def test_specs_declare_what_the_estimator_needs(registry):
    def parts(name):
        spec = registry.strategies.get(name)
        return spec.compose(spec.options_model())

    assert isinstance(parts("qlora-nf4").storage, Bnb4bit)
    assert parts("qlora-nf4").storage.double_quant
    assert isinstance(parts("lora-8bit").storage, LlmInt8)
    assert parts("full-sft").trains_base and isinstance(parts("full-sft").storage, Dense)
    assert [type(a) for a in parts("lora").adapters] == [LoRA]
    adamw = registry.optimizers.entry("adamw").spec
    assert isinstance(adamw.state_for(adamw.options_model()), DenseMomentState)
    paged = registry.optimizers.get("paged-adamw-8bit")
    assert paged.paged and isinstance(paged.state_for(paged.options_model()), Blockwise8bitState)


def test_quantized_base_cannot_be_trained_by_full_sft():
    spec = StrategySpec(name="bad", summary="", factory="a.b:c", storage=lambda o: Bnb4bit())
    with pytest.raises(SpecError, match="cannot be trained directly"):
        spec.compose(None)


def test_a_strategy_must_train_something():
    spec = StrategySpec(name="idle", summary="", factory="a.b:c", adapters=lambda o: ())
    with pytest.raises(SpecError, match="must train something"):
        spec.compose(None)


def test_unknown_name_suggests_the_closest(registry):
    with pytest.raises(UnknownComponentError) as info:
        registry.strategies.get("qlora-nf5")
    text = str(info.value)
    assert "qlora-nf4" in text and "full-sft" in text  # the suggestion and the list


def test_unknown_kind(registry):
    with pytest.raises(UnknownComponentError, match="strategies"):
        registry.catalog("strategy")


def test_a_plugin_registered_in_a_test():
    plugin = _plugin("my_plugin", register_strategies=lambda register: register(_strategy()))
    with registered(plugin) as registry:
        assert registry.strategies.entry("my-strategy").plugin == "my_plugin"
        assert "lora" in registry.strategies


def test_duplicate_names_across_plugins_name_both():
    plugin = _plugin("dup_plugin", register_strategies=lambda register: register(_strategy("lora")))
    with pytest.raises(DuplicateComponentError) as info, registered(plugin):
        pass
    assert "builtin.strategies" in str(info.value) and "dup_plugin" in str(info.value)


def test_lenient_registry_records_the_broken_plugin_and_keeps_the_rest():
    manager = fresh_manager()
    dup = _plugin("dup_plugin", register_strategies=lambda register: register(_strategy("lora")))
    manager.register(dup, "dup_plugin")
    registry = Registry.from_manager(manager, strict=False)
    assert "full-sft" in registry.strategies
    assert [f.name for f in manager.failures] == ["dup_plugin"]


def test_a_plugin_that_raises_is_named():
    def boom(register):
        raise RuntimeError("kaput")

    plugin = _plugin("boom_plugin", register_optimizers=boom)
    with pytest.raises(PluginError, match="'boom_plugin' raised RuntimeError"), registered(plugin):
        pass


def test_wrong_spec_type_is_an_error():
    plugin = _plugin("wrong", register_optimizers=lambda register: register(_strategy()))
    with pytest.raises(PluginError, match="expected OptimizerSpec"), registered(plugin):
        pass


def test_misspelled_hook_is_recorded_with_a_suggestion():
    manager = fresh_manager()
    plugin = _plugin("typo", register_stratgies=lambda register: None)
    assert not manager.register(plugin, "typo")
    assert "register_strategies" in manager.failures[0].error


def test_wrong_hook_signature_is_recorded():
    manager = fresh_manager()
    plugin = _plugin("badsig", register_strategies=lambda register, extra: None)
    assert not manager.register(plugin, "badsig")
    assert manager.failures[0].name == "badsig"


def test_blocked_plugins_do_not_load(monkeypatch):
    manager = make_plugin_manager(autoload=False, disabled=["builtin.optimizers"])
    registry = Registry.from_manager(manager)
    assert len(registry.optimizers) == 0 and len(registry.strategies) == len(BUILTIN_STRATEGIES)
    monkeypatch.setenv("SFTKIT_DISABLE_PLUGINS", "builtin.strategies, builtin.formats")
    registry = Registry.from_manager(make_plugin_manager(autoload=False))
    assert len(registry.strategies) == 0 and len(registry.formats) == 0


def test_entry_point_plugins_load_and_broken_ones_are_reported(monkeypatch):
    import importlib.metadata as md

    good = _plugin(
        "ep_good", register_strategies=lambda register: register(_strategy("ep-strategy"))
    )

    class EP:
        def __init__(self, name, loader):
            self.name, self.value, self._loader = name, f"{name}_mod:plugin", loader
            self.dist = types.SimpleNamespace(name=f"sftkit-{name}", version="1.2.3")

        def load(self):
            return self._loader()

    def broken():
        raise ImportError("No module named 'missing_dep'")

    def fake_entry_points(group):
        assert group == "sftkit"
        return [EP("good", lambda: good), EP("broken", broken)]

    monkeypatch.setattr(md, "entry_points", fake_entry_points)
    manager = make_plugin_manager(autoload=True)
    assert manager.infos["good"].version == "1.2.3"
    assert Registry.from_manager(manager).strategies.entry("ep-strategy").plugin == "good"
    (failure,) = manager.failures
    assert failure.name == "broken" and failure.distribution == "sftkit-broken"
    assert "missing_dep" in failure.describe()
    # the failure shows up in lookups that might have needed it
    with pytest.raises(UnknownComponentError, match="broken"):
        Registry.from_manager(manager).strategies.get("nope")
    assert "good" not in make_plugin_manager(autoload=False).infos


def test_options_models_forbid_unknown_keys():
    class MyOptions(Options):
        lr: float = 1e-3

    with pytest.raises(ValueError):
        MyOptions(lr=1, lrr=2)  # type: ignore[call-arg]


def test_optimizer_incompatibility_comes_from_tags():
    spec = OptimizerSpec(
        name="adapters-only",
        summary="",
        factory="a.b:c",
        incompatible_tags={"full": "only trains adapters"},
    )
    full = StrategySpec(name="f", summary="", factory="a.b:c", tags=frozenset({"full"}))
    assert spec.incompatibility(full) == "only trains adapters"
    assert spec.incompatibility(_strategy()) is None


def test_tracing_writes_hook_calls(capsys):
    manager = make_plugin_manager(autoload=False, trace=True)
    Registry.from_manager(manager)
    manager.hook.validate_recipe(recipe=None)
    assert "validate_recipe" in capsys.readouterr().err
