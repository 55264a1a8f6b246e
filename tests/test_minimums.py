"""The smoke subset `nox -s minimums` runs with the training stack at the minimums
pyproject.toml declares (and the default session with the newest): the quickstart for a few
steps with its evaluation before and after, one LoRA step and one QLoRA step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from tiny_models import recipe_text, saved_model_dir

from sftkit.cli import run_cli
from sftkit.versions import MINIMUMS, installed

QUICKSTART = str(Path(__file__).resolve().parent.parent / "recipes" / "quickstart.yaml")


def test_these_are_the_versions_under_test(capsys):
    """Printed, so a CI log says which versions the smoke runs below trained with."""
    with capsys.disabled():
        print("\nversions: " + ", ".join(f"{p} {installed(p)}" for p in MINIMUMS))


@pytest.mark.slow
def test_quickstart_for_a_few_steps(tmp_path):
    run = tmp_path / "quickstart"
    overrides = [
        "training.max_steps=3",
        "training.logging_steps=1",
        "training.micro_batch_size=8",
        "training.save_steps=null",
        "training.report_to=[none]",
        "data.format.options.train_size=40",
        "data.format.options.test_size=4",
        "data.format.options.dev_size=4",
        "evaluation.evaluators=[{name: gsm8k, options: {split: test, max_new_tokens: 8}}]",
    ]
    assert run_cli(["run", QUICKSTART, *overrides, "--output-dir", str(run)]) == 0
    summary = json.loads((run / "run.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 3
    assert {p.name for p in (run / "eval").iterdir()} == {"before-gsm8k", "after-gsm8k"}
    assert (run / "report.md").is_file()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saved_model_dir(tmp_path_factory.mktemp("minimums") / "saved")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "options"),
    [
        ("lora", {"rank": 4, "alpha": 8}),
        ("qlora-nf4", {"rank": 4, "alpha": 8, "compute_dtype": "float32"}),
    ],
)
def test_one_adapter_step(strategy, options, saved, tmp_path):
    run = tmp_path / strategy
    path = tmp_path / "recipe.yaml"
    path.write_text(
        recipe_text(
            saved,
            run,
            strategy=strategy,
            strategy_options=options,
            optimizer="paged-adamw-8bit" if strategy == "qlora-nf4" else "adamw",
            optimizer_options={"lr": 1e-2, "min_8bit_size": 256}
            if strategy == "qlora-nf4"
            else {"lr": 1e-2},
            random_init=False,
            max_steps=1,
        )
    )
    assert run_cli(["run", str(path)]) == 0
    assert (run / "final" / "adapter_config.json").is_file()
    losses = [e["loss"] for e in map(json.loads, (run / "metrics.jsonl").open()) if "loss" in e]
    assert len(losses) == 1 and losses[0] > 0
