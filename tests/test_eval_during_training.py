"""Evaluation while training: eval loss on dev every training.eval_steps into
metrics.jsonl, evaluators on the same schedule, early stopping, the best checkpoint kept,
reported and made the final model, the eval curve in the report's plot; and the recipe
problems when these settings do not fit together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sftkit.errors import RecipeError
from sftkit.recipe.load import load_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
QUICKSTART = str(RECIPES / "quickstart.yaml")
# The quickstart, small: 32 train / 8 dev rows, batch 8, evaluated every 2 steps.
SMALL = [
    "data.format.options.train_size=40",
    "data.format.options.test_size=4",
    "data.format.options.dev_size=8",
    "training.micro_batch_size=8",
    "training.max_steps=12",
    "training.logging_steps=1",
    "training.save_steps=null",
    "training.eval_steps=2",
    "training.report_to=[none]",
    "evaluation.before_training=false",
    "evaluation.after_training=false",
]


def problems(registry, *overrides: str) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(QUICKSTART, list(overrides), registry=registry)
    return str(info.value)


def test_settings_that_do_not_fit_together_are_recipe_problems(registry):
    assert "needs training.eval_steps" in problems(
        registry, "training.early_stopping={patience: 2}"
    )
    assert "needs training.eval_steps" in problems(
        registry, "evaluation.during_training=[{name: gsm8k}]"
    )
    assert "data.format.options.dev_size is 0" in problems(
        registry, "training.eval_steps=5", "data.format.options.dev_size=0"
    )
    assert "not a multiple of eval_steps 5" in problems(
        registry, "training.eval_steps=5", "training.save_steps=12",
        "training.early_stopping={patience: 2}",
    )  # fmt: skip
    assert "'gsm8k/accuracy' is neither 'loss'" in problems(
        registry, "training.eval_steps=5",
        "training.early_stopping={patience: 2, metric: gsm8k/accuracy}",
    )  # fmt: skip


def test_evaluators_during_training_score_dev_unless_told(registry):
    resolved = load_recipe(
        QUICKSTART,
        [
            "training.eval_steps=5",
            "evaluation.during_training=[{name: gsm8k, options: {limit: 3}}, "
            "{name: eval-loss, options: {split: test}}]",
            "training.early_stopping={patience: 2, metric: gsm8k/accuracy}",
        ],
        registry=registry,
    )
    splits = [c.options.split for c in resolved.during_training]
    assert splits == ["dev", "test"]
    assert resolved.recipe.training.early_stopping.greater_is_better  # accuracy: max


@pytest.mark.slow
def test_quickstart_evaluates_stops_early_and_keeps_the_best_checkpoint(tmp_path, monkeypatch):
    pytest.importorskip("trl")
    import torch
    from safetensors.torch import load_file

    import sftkit.reporting.plots as plots
    from sftkit.cli import run_cli

    axes_drawn: list[Any] = []
    figure = plots._figure

    def spy() -> Any:
        fig, axes = figure()
        axes_drawn.append(axes)
        return fig, axes

    monkeypatch.setattr(plots, "_figure", spy)
    run = tmp_path / "run"
    code = run_cli(
        [
            "run",
            QUICKSTART,
            *SMALL,
            # an improvement must exceed 100: the second evaluation counts as none
            "training.early_stopping={patience: 1, threshold: 100}",
            "evaluation.during_training=[{name: gsm8k, options: {limit: 4, max_new_tokens: 8}}]",
            "--output-dir",
            str(run),
        ]
    )
    assert code == 0
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in events if "eval/loss" in e]
    assert [e["step"] for e in evals] == [2, 4]
    # written while training ran: the step-2 evaluation comes before step 3's loss
    order = [("eval" if "eval/loss" in e else "train", e["step"]) for e in events if "step" in e]
    assert order.index(("eval", 2)) < order.index(("train", 3))
    assert [e["step"] for e in events if "eval/gsm8k/accuracy" in e] == [2, 4]

    summary = json.loads((run / "run.json").read_text())
    assert summary["steps"] == 4 and summary["max_steps"] == 12  # stopped early
    assert summary["early_stopping"]["stopped_early"] is True
    best = Path(summary["best_checkpoint"])
    assert best.is_dir() and summary["best_step"] == int(best.name.split("-")[1])
    assert summary["best_metric"] == min(e["eval/loss"] for e in evals)
    # final/ is the best checkpoint's model (load_best_model_at_end)
    final = load_file(str(run / "final" / "model.safetensors"))
    kept = load_file(str(best / "model.safetensors"))
    assert all(torch.equal(final[k], kept[k]) for k in kept)

    report = (run / "report.md").read_text()
    assert "best eval loss" in report and "early stopping" in report
    assert (run / "loss.png").is_file() and (run / "eval.png").is_file()
    loss_axes = next(a for a in axes_drawn if a.get_title() == "training and eval loss")
    assert [line.get_label() for line in loss_axes.get_lines()] == ["train", "eval"]
