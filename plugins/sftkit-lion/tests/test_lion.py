"""sftkit-lion's own tests: registration, pricing, the optimizer itself, the CLI command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import sftkit_lion.plugin as plugin

from sftkit import Blockwise8bitState, DenseMomentState, RecipeError, estimate, load_recipe
from sftkit.testing import invoke_cli, registered

HERE = Path(__file__).resolve().parent.parent
RECIPE = HERE / "recipes" / "quickstart_lion.yaml"


def test_registers_three_optimizers():
    with registered(plugin) as registry:
        for name in ("lion-8bit", "paged-lion-8bit", "lion-32bit"):
            assert registry.optimizers.entry(name).plugin == plugin.__name__
        assert registry.optimizers.get("paged-lion-8bit").paged


def test_state_is_half_of_adamw():
    with registered(plugin) as registry:
        lion = registry.optimizers.get("lion-8bit")
        adamw = registry.optimizers.get("adamw-8bit")
        lion_state = lion.state_for(lion.options_model())
        adamw_state = adamw.state_for(adamw.options_model())
        assert isinstance(lion_state, Blockwise8bitState)
        n = 4096 * 4096
        assert lion_state.state_bytes(n, 2) < 0.51 * adamw_state.state_bytes(n, 2)
        lion32 = registry.optimizers.get("lion-32bit")
        assert isinstance(lion32.state_for(lion32.options_model()), DenseMomentState)
        assert lion32.state_for(lion32.options_model()).state_bytes(10, 2) == 40


def test_option_typo_gets_did_you_mean_naming_the_optimizer():
    with registered(plugin) as registry, pytest.raises(RecipeError) as info:
        load_recipe(RECIPE, ["optimizer.options.weight_dacay=0.1"], registry=registry)
    assert "optimizer.options.weight_dacay" in str(info.value)
    assert "weight_decay" in str(info.value)


def test_estimator_prices_lion_from_its_spec():
    with registered(plugin) as registry:
        lion = estimate(load_recipe(RECIPE, registry=registry))
        adamw = estimate(
            load_recipe(RECIPE, ["optimizer.name=adamw", "~optimizer.options"], registry=registry)
        )
    lion_state = sum(t.bytes for t in lion.terms if t.category == "optimizer")
    adamw_state = sum(t.bytes for t in adamw.terms if t.category == "optimizer")
    assert 0 < lion_state < adamw_state


def test_lion_8bit_steps_on_cpu_and_state_matches_the_spec():
    torch = pytest.importorskip("torch")
    pytest.importorskip("bitsandbytes")
    from sftkit_lion.optim import build_lion_8bit

    options = plugin.Lion8bitOptions(lr=1e-3)
    big = torch.nn.Parameter(torch.randn(128, 64))  # 8192 elements: 8-bit state
    small = torch.nn.Parameter(torch.randn(64))  # under min_8bit_size: 32-bit state
    opt = build_lion_8bit([{"params": [big, small]}], options)
    before = big.detach().clone()
    (big.sum() + small.sum()).backward()
    opt.step()
    assert not torch.equal(before, big.detach())
    spec_state = plugin._state_8bit(options)
    for p in (big, small):
        # qmap tensors are bitsandbytes' shared quantization tables, one per optimizer.
        real = sum(
            t.numel() * t.element_size()
            for key, t in opt.state[p].items()
            if torch.is_tensor(t) and not key.startswith("qmap")
        )
        assert real == spec_state.state_bytes(p.numel(), 4), (tuple(p.shape), real)


def test_runs_end_to_end_on_cpu(quick_run):
    # quick_run is a fixture from sftkit's test kit: a seconds-long `sftkit run`; `plugins`
    # adds this one to the installed plugins, so the test passes before it is installed.
    run_dir = quick_run(recipe=RECIPE, plugins=[plugin])
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["optimizer"] == "lion-8bit"
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses and all(math.isfinite(x) for x in losses)


def test_lion_convert_command(tmp_path):
    adamw_recipe = tmp_path / "adamw.yaml"
    text = RECIPE.read_text().replace("name: lion-8bit", "name: adamw-8bit")
    adamw_recipe.write_text(
        text.replace("lr: 1.0e-3", "lr: 3.0e-3").replace("[0.9, 0.99]", "[0.9, 0.98]")
    )
    out = tmp_path / "lion.yaml"
    # the plugin's command arrives through register_commands, as for an installed plugin
    result = invoke_cli("lion-convert", str(adamw_recipe), "-o", str(out), plugins=[plugin])
    assert result.exit_code == 0, result.stderr
    with registered(plugin) as registry:
        converted = load_recipe(out, registry=registry)
    assert converted.optimizer.spec.name == "lion-8bit"
    assert converted.optimizer.options.lr == pytest.approx(1e-3)
    again = invoke_cli("lion-convert", str(adamw_recipe), "-o", str(out), plugins=[plugin])
    assert again.exit_code == 2 and "never overwrites" in again.stderr
