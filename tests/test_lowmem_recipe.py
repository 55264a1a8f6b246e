"""recipes/r1_gsm8k_qlora_lowmem.yaml: at 1 x 2048 its training phases are at most 7.0 GiB
device used and its whole run at most 7.5 GiB, so it fits a 12 GB card; the seed verdicts
stay (full SFT + AdamW dies at the first optimizer step on an A100-40GB, QLoRA fits)."""

from __future__ import annotations

import json

from sftkit.cli import run_cli
from sftkit.memory import estimate
from sftkit.recipe.load import load_recipe
from sftkit.testing import fresh_registry

LOWMEM = "recipes/r1_gsm8k_qlora_lowmem.yaml"
GiB = 2**30


def test_the_lowmem_recipe_meets_its_targets(capsys):
    code = run_cli(["estimate-memory", LOWMEM, "training.max_seq_length=2048", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    phases = data["phases"]
    for phase in ("forward_backward", "optimizer_step", "later_steps"):
        assert phases[phase] <= 7.0 * GiB, phase
    assert data["peak_bytes"] <= 7.5 * GiB
    assert all(f["device_used"] == phases[p] for p, f in data["phase_figures"].items())
    assert data["fits"]
    on_12gb = estimate(load_recipe(LOWMEM, registry=fresh_registry()), gpu="12GB")
    assert on_12gb.fits and on_12gb.setting.startswith("qlora-nf4")


def test_the_seed_verdicts_stay():
    reg = fresh_registry()
    full = estimate(load_recipe("recipes/r1_gsm8k_full.yaml", registry=reg))
    assert not full.fits and full.first_failing_phase == "optimizer_step"
    assert full.budget.name == "A100-40GB"
    assert estimate(load_recipe("recipes/r1_gsm8k_qlora.yaml", registry=reg)).fits


def test_its_switches_measure_exactly_on_cpu():
    """The lowmem recipe's own switches on the bundled tiny model: every static term, the
    bytes kept in host memory and (without checkpointing) the saved activations equal the
    real tensors (`estimate-memory --measure`)."""
    import pytest

    pytest.importorskip("torch")
    pytest.importorskip("bitsandbytes")
    from sftkit.training.measure import measure_recipe

    tiny = [
        "model.name_or_path=builtin:tiny-llama",
        "model.random_init=true",
        "hardware.gpu=cpu",
        "training.liger_kernels=false",  # CUDA kernels
        "training.max_seq_length=64",
    ]
    for extra in (
        [],
        ["training.gradient_checkpointing=false", "training.activation_offload=false"],
    ):
        resolved = load_recipe(LOWMEM, [*tiny, *extra], registry=fresh_registry())
        comparison = measure_recipe(resolved, estimate(resolved, advise=False))
        assert comparison.ok, comparison.render()
        rows = {r.what for r in comparison.rows}
        assert ("checkpointed inputs in host memory" in rows) == (not extra)
        assert ("saved activations (no checkpointing)" in rows) == bool(extra)
