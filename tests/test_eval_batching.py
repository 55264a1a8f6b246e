"""The evaluation batch and the merged copy, decided by the memory estimator (no torch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sftkit.evaluation.batching import _fit, plan
from sftkit.memory.estimator import estimate
from sftkit.memory.evalcopy import NAME
from sftkit.recipe.load import load_recipe
from sftkit.testing import fresh_registry

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def load(name: str, *overrides: str):
    return load_recipe(RECIPES / f"{name}.yaml", overrides, registry=fresh_registry())


def copy_priced(resolved) -> bool:
    return any(t.name == NAME for t in estimate(resolved, advise=False).terms)


@pytest.mark.parametrize(
    ("overrides", "copy"),
    [
        ((), True),  # A100-40GB: the 15 GiB copy fits beside the 4-bit model
        (("hardware.gpu=24GB",), False),  # no room: the quantized model generates
        (("evaluation.evaluators.0.options.merged_copy=false",), False),
    ],
)
def test_the_copy_runs_exactly_when_the_estimate_prices_it(overrides, copy) -> None:
    resolved = load("r1_gsm8k_qlora", *overrides)
    component = resolved.evaluators[0]
    batch, merged = plan(resolved, component, 1319)
    assert merged is copy and copy_priced(resolved) is copy
    extra = 2 * 8_030_261_248 if merged else 0
    # the largest batch whose evaluation phase fits (with the copy resident when it is used)
    assert _fit(resolved, component, batch, extra).fits
    assert not _fit(resolved, component, batch + 1, extra).fits


def test_a_set_batch_is_kept_and_a_dense_base_gets_no_copy() -> None:
    resolved = load("r1_gsm8k_qlora", "evaluation.evaluators.0.options.batch_size=3")
    assert plan(resolved, resolved.evaluators[0], 1319) == (3, True)
    quickstart = load("quickstart")
    # CPU: host RAM holds every problem at once; full SFT has no quantized base to copy
    assert plan(quickstart, quickstart.evaluators[0], 200) == (200, False)
    assert plan(quickstart, quickstart.evaluators[0], 1000) == (256, False)
    assert not copy_priced(quickstart)
