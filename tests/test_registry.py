"""The registry and plugin manager: built-ins, duplicates, unknown names, blocking, failures."""

from __future__ import annotations

import types

import pytest

from sftkit.builtin.formats import PromptCompletionOptions
from sftkit.components import Bnb4bit, Dense, LlmInt8, LoRA
from sftkit.errors import PluginError, SpecError, UnknownComponentError
from sftkit.hookspecs import hookimpl
from sftkit.plugins import DEFAULT_PLUGINS, make_plugin_manager
from sftkit.registry import KINDS, Registry
from sftkit.specs import (
    Blockwise8bitState,
    DatasetFormatSpec,
    DenseMomentState,
    OptimizerSpec,
    Options,
    StrategySpec,
)
from sftkit.testing import fresh_manager, fresh_registry, invoke_cli, registered

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


def test_a_format_must_take_the_options_preparation_reads():
    class Bare(Options):
        path: str = "x"

    with pytest.raises(SpecError, match="lacks dev_size, split_seed, skip_bad_rows"):
        DatasetFormatSpec(name="bare", summary="", factory="a.b:c", options_model=Bare)


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


def test_a_plugin_takes_a_builtin_name_only_for_that_name():
    """A plugin that registers `lora` (or `prompt-completion`) shadows the built-in for that
    name alone: every other built-in of that plugin still resolves, and the built-in one
    stays reachable as `builtin.strategies:lora`."""
    manager = fresh_manager()
    dup = _plugin("dup_plugin", register_strategies=lambda register: register(_strategy("lora")))
    manager.register(dup, "dup_plugin")
    registry = Registry.from_manager(manager, strict=True)  # not a conflict
    assert registry.strategies.entry("lora").plugin == "dup_plugin"
    assert registry.strategies.entry("builtin.strategies:lora").plugin == "builtin.strategies"
    assert registry.strategies.entry("dup_plugin:lora").plugin == "dup_plugin"
    assert registry.strategies.get("lora-plus").name == "lora-plus"  # the rest untouched
    assert "lora" in registry.strategies and "builtin.strategies:lora" in registry.strategies
    assert "nobody:lora" not in registry.strategies
    assert registry.strategies.conflicts() == {}
    (winner, builtins) = registry.strategies.shadowed()["lora"]
    assert winner.plugin == "dup_plugin" and [e.plugin for e in builtins] == ["builtin.strategies"]
    assert manager.failures == []
    # a registry without the plugin is the built-in's (nothing global was changed)
    assert fresh_registry().strategies.entry("lora").plugin == "builtin.strategies"


class _TabbedOptions(PromptCompletionOptions):
    separator: str = "\t"


def test_a_plugin_prompt_completion_format_leaves_the_builtin_usable(tmp_path):
    """The plugin written from the docs this week: its own `prompt-completion` made the name
    a conflict, so no recipe could use either format until a plugin was disabled."""
    spec = DatasetFormatSpec(
        name="prompt-completion",
        summary="Tab-separated prompt/completion.",
        factory="sftkit.data.formats:PromptCompletionFormat",
        options_model=_TabbedOptions,
    )
    mine = _plugin("tabbed", register_dataset_formats=lambda register: register(spec))
    rows = tmp_path / "x.jsonl"
    rows.write_text('{"prompt": "1 + 1 =", "completion": " 2"}\n')
    ours = f"data.format.options.source={rows}"
    result = invoke_cli(
        "validate",
        "quickstart",
        "data.format.name=prompt-completion",
        ours,
        "data.format.options.separator=;",
        plugins=[mine],
    )
    assert result.exit_code == 0, result.stderr
    result = invoke_cli(
        "validate",
        "quickstart",
        "data.format.name=builtin.formats:prompt-completion",
        ours,
        plugins=[mine],
    )
    assert result.exit_code == 0, result.stderr
    result = invoke_cli(
        "validate",
        "quickstart",
        "data.format.name=builtin.formats:prompt-completion",
        ours,
        "data.format.options.separator=;",
        plugins=[mine],
    )
    assert result.exit_code == 2 and "separator" in result.stderr  # the built-in's options
    listed = invoke_cli("list", "formats", plugins=[mine])
    assert "builtin.formats:prompt-completion" in listed.stderr and "tabbed" in listed.stdout


def test_a_registration_that_raises_drops_its_names_and_says_so_on_lookup():
    def half(register):
        register(_strategy("half-done"))
        raise RuntimeError("kaput")

    manager = fresh_manager()
    manager.register(_plugin("half_plugin", register_strategies=half), "half_plugin")
    registry = Registry.from_manager(manager)
    assert "half-done" not in registry.strategies and "lora" in registry.strategies
    (failure,) = manager.failures
    assert failure.name == "half_plugin" and failure.hook == "register_strategies"
    with pytest.raises(UnknownComponentError) as info:
        registry.strategies.get("half-done")
    assert "was registered by plugin 'half_plugin'" in str(info.value)
    assert "RuntimeError in register_strategies: kaput" in str(info.value)
    # another unknown name: the broken plugin is the one that might have provided it
    with pytest.raises(
        UnknownComponentError, match="Plugins that failed might provide strategy 'other'"
    ):
        registry.strategies.get("other")
    # optimizers were not touched by the failure, so their lookups do not mention it
    with pytest.raises(UnknownComponentError) as info:
        registry.optimizers.get("other")
    assert "half_plugin" not in str(info.value)
    Registry.from_manager(manager)  # rebuilding records the failure once
    assert len(manager.failures) == 1


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


# --------------------------------------------------------------------------- on the CLI


class _EntryPoint:
    """An installed plugin as importlib.metadata shows it: name, distribution, loader."""

    def __init__(self, name, loader):
        self.name, self.value, self._loader = name, f"{name}_mod:plugin", loader
        self.dist = types.SimpleNamespace(name=f"sftkit-{name}", version="1.0")

    def load(self):
        return self._loader()


@pytest.fixture
def installed(monkeypatch):
    """Pretend these plugins are installed (entry points), and let the CLI autoload them."""
    import importlib.metadata as md

    def install(**plugins):
        points = [_EntryPoint(name, loader) for name, loader in plugins.items()]
        monkeypatch.setattr(md, "entry_points", lambda group: points)
        monkeypatch.delenv("SFTKIT_DISABLE_PLUGIN_AUTOLOAD", raising=False)

    return install


def _shiny(plugin_name):
    return lambda: _plugin(
        plugin_name, register_strategies=lambda register: register(_strategy("shiny"))
    )


def _cli(capsys, *args):
    from sftkit.cli import run_cli

    code = run_cli(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_duplicate_breaks_only_the_recipes_that_use_it(installed, capsys):
    installed(alpha=_shiny("alpha_mod"), beta=_shiny("beta_mod"))
    code, out, err = _cli(capsys, "validate", "quickstart")
    assert code == 0, err
    code, out, err = _cli(capsys, "validate", "quickstart", "strategy.name=shiny")
    assert code == 2
    # both plugins, both distributions, and how to keep either one
    assert "plugin 'alpha' (distribution sftkit-alpha 1.0)" in err
    assert "plugin 'beta' (distribution sftkit-beta 1.0)" in err
    assert (
        "to use alpha's, run `sftkit --disable-plugin beta ...` (or set SFTKIT_DISABLE_PLUGINS=beta)"
        in err
    )
    assert "--disable-plugin alpha" in err
    code, out, err = _cli(
        capsys, "--disable-plugin", "beta", "validate", "quickstart", "strategy.name=shiny"
    )
    assert code == 0, err
    assert "strategy   shiny  [alpha]" in out


def test_list_marks_a_conflicting_name(installed, capsys):
    installed(alpha=_shiny("alpha_mod"), beta=_shiny("beta_mod"))
    code, out, err = _cli(capsys, "list", "strategies")
    assert code == 0, err
    assert "shiny" in out and "conflict" in out and "full-sft" in out
    assert "plugin 'alpha'" in err and "plugin 'beta'" in err


def test_unknown_name_names_the_plugins_that_failed_and_might_provide_it(installed, capsys):
    def broken():
        raise ImportError("No module named 'missing_dep'")

    installed(broken=broken)
    code, _, err = _cli(capsys, "validate", "quickstart")
    assert code == 0, err  # a broken plugin does not stop recipes that do not need it
    code, _, err = _cli(capsys, "validate", "quickstart", "strategy.name=fancy")
    assert code == 2
    assert "unknown strategy 'fancy'" in err
    assert "might provide strategy 'fancy'" in err and "plugin 'broken'" in err
    assert "sftkit-broken" in err and "missing_dep" in err


def test_trace_plugins_shows_the_registration_calls():
    from sftkit.testing import invoke_cli

    plugin = _plugin("traced_plugin", register_strategies=lambda register: register(_strategy()))
    result = invoke_cli("--trace-plugins", "list", "strategies", plugins=[plugin])
    assert result.exit_code == 0, result.stderr
    assert "my-strategy" in result.stdout
    # one traced call per plugin, each with the `register` that files under that plugin
    assert result.stderr.count("register_strategies [hook]") == 2
    assert "<register strategies of plugin 'builtin.strategies'>" in result.stderr
    assert "<register strategies of plugin 'traced_plugin'>" in result.stderr
    assert "register_commands [hook]" in result.stderr


def test_a_recipe_asking_for_a_name_a_failed_registration_gave_is_told_why():
    from sftkit.testing import invoke_cli

    def half(register):
        register(_strategy("half-done"))
        raise RuntimeError("kaput")

    plugin = _plugin("half_plugin", register_strategies=half)
    ok = invoke_cli("validate", "quickstart", plugins=[plugin])
    assert ok.exit_code == 0, ok.stderr
    result = invoke_cli("validate", "quickstart", "strategy.name=half-done", plugins=[plugin])
    assert result.exit_code == 2
    assert "unknown strategy 'half-done'" in result.stderr
    assert "was registered by plugin 'half_plugin', whose registration then failed" in result.stderr
    assert "kaput" in result.stderr
    listed = invoke_cli("list", "strategies", plugins=[plugin])
    assert listed.exit_code == 0 and "broken" in listed.stderr and "kaput" in listed.stderr


def test_a_shadowed_format_name_prepares_its_own_data():
    """The plugin's `prompt-completion` and the built-in one never share prepared data."""
    from sftkit.data.prepare import fingerprint
    from sftkit.testing import tiny_recipe

    spec = DatasetFormatSpec(
        name="prompt-completion",
        summary="Tab-separated prompt/completion.",
        factory="sftkit.data.formats:PromptCompletionFormat",
        options_model=PromptCompletionOptions,  # the same options: only the plugin differs
    )
    mine = _plugin("tabbed", register_dataset_formats=lambda register: register(spec))
    source = "data.format.options.source=x.jsonl"
    plain = fingerprint(
        tiny_recipe("data.format.name=prompt-completion", "~data.format.options", source)
    )
    with registered(mine) as registry:
        ours, builtin = (
            fingerprint(
                tiny_recipe(
                    f"data.format.name={name}", "~data.format.options", source, registry=registry
                )
            )
            for name in ("prompt-completion", "builtin.formats:prompt-completion")
        )
    assert ours != builtin
    assert builtin == plain  # the built-in's data is the same with or without the plugin
