"""Liger kernels need a CUDA GPU: `sftkit run` refuses them on the CPU, before loading
anything, with a message that names the key and the override that fixes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sftkit.errors import MissingDependencyError, SftkitError
from sftkit.modeling.kernels import check_kernels
from sftkit.recipe.load import load_recipe

QUICKSTART = Path(__file__).resolve().parent.parent / "recipes" / "quickstart.yaml"


def _recipe(registry, *overrides):
    return load_recipe("r1_gsm8k_qlora", list(overrides), registry=registry).recipe


def test_liger_on_cpu_is_refused_with_the_fix(registry):
    recipe = _recipe(registry, "training.liger_kernels=true", "hardware.gpu=cpu")
    with pytest.raises(SftkitError) as info:
        check_kernels(recipe, "cpu")
    assert "training.liger_kernels" in str(info.value) and "CUDA" in str(info.value)
    assert "training.liger_kernels=false" in (info.value.hint or "")
    assert info.value.exit_code == 2


def test_without_liger_any_device_passes(registry):
    check_kernels(_recipe(registry, "training.liger_kernels=false"), "cpu")


def test_liger_on_cuda_needs_the_package(registry, monkeypatch):
    import importlib.util

    recipe = _recipe(registry, "training.liger_kernels=true")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match="liger-kernel"):
        check_kernels(recipe, "cuda")


def test_tiled_mlp_needs_the_package_on_any_device(registry, monkeypatch):
    import importlib.util

    recipe = _recipe(registry, "training.liger_kernels=false", "training.tiled_mlp=true")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match="liger-kernel") as info:
        check_kernels(recipe, "cpu")
    assert "training.tiled_mlp" in str(info.value) and info.value.exit_code == 2


def test_the_recipe_still_validates_and_estimates_on_a_cpu_budget(registry):
    """The refusal is the run's, not validation's: a GPU recipe can be checked anywhere."""
    from sftkit.memory import estimate

    resolved = load_recipe("r1_gsm8k_qlora", ["hardware.gpu=cpu"], registry=registry)
    assert resolved.recipe.training.liger_kernels
    assert estimate(resolved).peak_bytes > 0


def test_sftkit_run_refuses_liger_on_cpu_before_writing_anything(tmp_path, capsys):
    from sftkit.cli import run_cli

    out = tmp_path / "run"
    code = run_cli(
        ["run", str(QUICKSTART), "training.liger_kernels=true", "--output-dir", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "training.liger_kernels" in err and "training.liger_kernels=false" in err
    assert not out.exists()


def test_cpu_4bit_inference_is_refused_for_widths_bitsandbytes_cannot_repack(registry):
    from sftkit.errors import SftkitError
    from sftkit.modeling.kernels import check_inference_device
    from sftkit.recipe.load import load_recipe

    qlora = load_recipe("quickstart", ["strategy.name=qlora-nf4"], registry=registry)
    with pytest.raises(SftkitError, match="multiple of 64") as info:
        check_inference_device(qlora, "cpu")
    assert "352" in str(info.value) and "evaluation.after_training=false" in str(info.value)
    check_inference_device(qlora, "cuda")  # the CUDA kernels have no such limit
    check_inference_device(load_recipe("quickstart", registry=registry), "cpu")  # dense base
