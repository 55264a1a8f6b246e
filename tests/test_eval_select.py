"""Which evaluators `sftkit eval` and `sftkit run` use, with which options (no torch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sftkit.errors import RecipeError, UnknownComponentError
from sftkit.evaluation.base import EvalResult
from sftkit.evaluation.runner import StoredResult, select_evaluators, summary_line
from sftkit.evaluation.stats import accuracy
from sftkit.recipe.load import load_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def test_the_recipes_evaluators_with_command_line_split_and_limit(registry) -> None:
    resolved = load_recipe(RECIPES / "r1_gsm8k_qlora.yaml", registry=registry)
    (gsm8k,) = select_evaluators(resolved)
    assert gsm8k.spec.name == "gsm8k" and gsm8k.options.split == "test"
    assert gsm8k.options.max_new_tokens is None  # the default: room to think after <think>
    (limited,) = select_evaluators(resolved, split="dev", limit=7)
    assert (limited.options.split, limited.options.limit) == ("dev", 7)
    assert limited.options.new_token_budget == 4096
    budget = ["evaluation.evaluators.0.options.max_new_tokens=300"]
    resolved = load_recipe(RECIPES / "r1_gsm8k_qlora.yaml", budget, registry=registry)
    (limited,) = select_evaluators(resolved, limit=7)
    assert limited.options.max_new_tokens == 300  # the recipe's other options are kept


def test_named_evaluators_and_the_default(registry) -> None:
    resolved = load_recipe(RECIPES / "r1_gsm8k_qlora.yaml", ["~evaluation"], registry=registry)
    assert [c.spec.name for c in select_evaluators(resolved)] == ["gsm8k"]  # nothing configured
    chosen = select_evaluators(resolved, ["eval-loss", "gsm8k"], limit=3)
    assert [c.spec.name for c in chosen] == ["eval-loss", "gsm8k"]
    assert all(c.options.limit == 3 for c in chosen)
    with pytest.raises(UnknownComponentError, match="Did you mean 'eval-loss'"):
        select_evaluators(resolved, ["eval_loss"])


def test_bad_command_line_options_are_recipe_errors(registry) -> None:
    resolved = load_recipe(RECIPES / "r1_gsm8k_qlora.yaml", registry=registry)
    with pytest.raises(RecipeError, match="limit"):
        select_evaluators(resolved, limit=0)


def test_summary_line() -> None:
    result = EvalResult("gsm8k", "test", 100, accuracy(41, 100).to_dict(), "accuracy")
    line = summary_line(StoredResult(result, "after", Path("x")))
    assert line == "after training: gsm8k accuracy 41.0% [31.9, 50.8] (n=100, test)"
    loss = EvalResult("eval-loss", "dev", 10, {"loss": 1.23456, "perplexity": 3.4}, "loss")
    assert summary_line(StoredResult(loss, "before", Path("x"))) == (
        "before training: eval-loss loss 1.235 (n=10, dev)"
    )
