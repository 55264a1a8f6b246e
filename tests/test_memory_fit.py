"""--fit against device used: every setting it reports fits by its own table (device used in
every phase within the card, paged state resident included), and the next step up does not;
at any sequence length the user asks for."""

from __future__ import annotations

import pytest

from sftkit.memory import estimate
from sftkit.memory.advice import fit_search
from sftkit.recipe.load import load_recipe
from sftkit.testing import fresh_registry

CASES = [
    ("recipes/r1_gsm8k_qlora.yaml", [], "A100-40GB"),
    ("recipes/r1_gsm8k_qlora.yaml", ["training.max_seq_length=2048"], "12GB"),
    ("recipes/r1_gsm8k_qlora.yaml", ["training.max_seq_length=3000"], "RTX-4090"),
    ("recipes/r1_gsm8k_full.yaml", ["optimizer.name=paged-adamw-8bit"], "H100-80GB"),
]


@pytest.mark.parametrize(("recipe", "overrides", "gpu"), CASES)
def test_every_reported_setting_fits_by_its_own_table(recipe, overrides, gpu):
    registry = fresh_registry()
    resolved = load_recipe(recipe, overrides, registry=registry)
    found = fit_search(resolved, gpu=gpu)
    budget = estimate(resolved, gpu=gpu, advise=False).budget_bytes
    for key in ("training.micro_batch_size", "training.max_seq_length"):
        result = found[key]
        if result["value"] is None:
            continue
        again = estimate(
            load_recipe(recipe, [*overrides, f"{key}={result['value']}"], registry=registry),
            gpu=gpu,
            advise=False,
        )
        assert again.fits, key
        assert max(again.phases.values()) <= budget
        assert all(again.figures(p)["device_used"] <= budget for p in again.phases)
        assert again.peak_bytes == result["peak_bytes"]
        if "next" in result:
            over = estimate(
                load_recipe(recipe, [*overrides, f"{key}={result['next']}"], registry=registry),
                gpu=gpu,
                advise=False,
            )
            assert not over.fits and over.peak_bytes > budget
