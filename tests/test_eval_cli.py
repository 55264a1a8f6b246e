"""`sftkit eval` end to end on a run directory and on a recipe (tiny model, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sftkit.cli import run_cli

RECIPE = """
model: {{name_or_path: "builtin:tiny-llama", dtype: float32, random_init: true}}
strategy: {{name: full-sft}}
optimizer: {{name: adamw}}
data:
  format: {{name: synthetic-arithmetic, options: {{train_size: 16, test_size: 6, dev_size: 3}}}}
  template: {{name: tutor, options: {{instruction: ""}}}}
hardware: {{gpu: cpu}}
evaluation:
  evaluators: [{{name: gsm8k, options: {{max_new_tokens: 6, batch_size: 4}}}}]
output_dir: {out}
"""


def test_evaluation_and_report_modules_import_no_torch() -> None:
    code = (
        "import sys\n"
        "import sftkit.cli.evaluate, sftkit.cli.report, sftkit.cli.export\n"
        "import sftkit.evaluation, sftkit.evaluation.runner, sftkit.evaluation.display\n"
        "import sftkit.reporting, sftkit.reporting.compare, sftkit.export, sftkit.export.card\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished full-SFT run directory (untrained weights: the plumbing is under test)."""
    torch = pytest.importorskip("torch")
    from sftkit.modeling import build_model, load_tokenizer
    from sftkit.recipe.load import load_recipe_text
    from sftkit.runpaths import RunPaths
    from sftkit.testing import fresh_registry
    from sftkit.training.runfiles import write_recipe

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs") / "run"
    resolved = load_recipe_text(RECIPE.format(out=out), registry=fresh_registry())
    paths = RunPaths(out)
    out.mkdir()
    write_recipe(paths, resolved)
    tokenizer = load_tokenizer(resolved.recipe)
    model = build_model(resolved, tokenizer, base_dir=paths.base)
    model.save_pretrained(paths.final)
    tokenizer.save_pretrained(paths.final)
    (out / "run.json").write_text(json.dumps({"status": "completed", "steps": 0}))
    yield out
    torch.set_num_threads(threads)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eval_on_a_run_writes_predictions_and_updates_the_report(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["eval", str(run_dir), "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert "gsm8k" in out and "fine-tuned" in out and "accuracy" in out
    result = run_dir / "eval" / "manual-gsm8k-first3"
    rows = read_jsonl(result / "predictions.jsonl")
    assert len(rows) == 3
    assert {"question", "gold", "extracted", "output", "correct"} <= set(rows[0])
    metrics = json.loads((result / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["model"] == "fine-tuned" and metrics["split"] == "test"
    assert metrics["options"]["max_new_tokens"] == 6  # the run's recipe options
    assert 0 <= metrics["metrics"]["ci_low"] <= metrics["metrics"]["ci_high"] <= 1
    assert (
        "| manual | fine-tuned | gsm8k | test, first 3 | 3 |" in (run_dir / "report.md").read_text()
    )


def test_evaluations_of_other_limits_are_kept_apart(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One folder per (stage, split, limit): a later --limit never replaces another limit's
    evaluation, and a repeat of the same one says it replaces it."""
    assert run_cli(["eval", str(run_dir), "--limit", "2"]) == 0
    assert run_cli(["eval", str(run_dir), "--limit", "4"]) == 0
    capsys.readouterr()
    assert run_cli(["eval", str(run_dir), "--limit", "2"]) == 0
    shown = capsys.readouterr()
    assert "replacing the earlier manual gsm8k evaluation" in shown.out + shown.err
    names = {p.name for p in (run_dir / "eval").iterdir()}
    assert {"manual-gsm8k-first2", "manual-gsm8k-first4"} <= names
    report = (run_dir / "report.md").read_text()
    assert "| gsm8k | test, first 2 | 2 |" in report and "| gsm8k | test, first 4 | 4 |" in report


def test_eval_of_the_base_with_another_evaluator_and_split(run_dir: Path) -> None:
    code = run_cli(
        ["eval", str(run_dir), "--base", "--split", "dev", "--limit", "2", "-e", "eval-loss"]
    )
    assert code == 0
    metrics = json.loads(
        (run_dir / "eval" / "base-eval-loss-dev-first2" / "metrics.json").read_text()
    )
    assert (metrics["model"], metrics["split"], metrics["n"]) == ("base", "dev", 2)
    assert metrics["metrics"]["perplexity"] > 1


def test_eval_on_a_recipe_scores_its_base_model(tmp_path: Path, run_dir: Path) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path / "never-trained"))
    out = tmp_path / "results"
    assert run_cli(["eval", str(recipe), "--limit", "2", "--output-dir", str(out)]) == 0
    assert len(read_jsonl(out / "base-gsm8k-first2" / "predictions.jsonl")) == 2
    # everything it wrote is under --output-dir: no data prepared in the recipe's output_dir
    assert not (tmp_path / "never-trained").exists()
    assert set(tmp_path.iterdir()) == {recipe, out}
    # other data options: prepared beside the first, no fingerprint clash
    other = ["data.format.options.test_size=5"]
    assert run_cli(["eval", str(recipe), *other, "--limit", "2", "--output-dir", str(out)]) == 0
    assert len(list(out.glob("data-*"))) == 2


def test_eval_refuses_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    assert run_cli(["eval", str(tmp_path)]) == 2
    assert run_cli(["eval", str(tmp_path / "missing.yaml")]) == 2
