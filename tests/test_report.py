"""Run reports, plots and run comparison, built from a synthetic run directory (no torch)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from sftkit.cli import run_cli
from sftkit.errors import RunDirectoryError
from sftkit.evaluation.base import EvalResult, write_result
from sftkit.evaluation.stats import accuracy
from sftkit.reporting import load_run, write_report
from sftkit.reporting.compare import compare, flatten, write_comparison

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

RECIPE = {
    "description": "tiny test run",
    "model": {
        "name_or_path": "builtin:tiny-llama",
        "dtype": "float32",
        "attn_implementation": "sdpa",
    },
    "strategy": {"name": "lora", "options": {"rank": 8, "alpha": 16}},
    "optimizer": {"name": "adamw", "options": {"lr": 0.001}},
    "data": {"format": {"name": "synthetic-arithmetic"}, "template": {"name": "tutor"}},
    "training": {"micro_batch_size": 4, "gradient_accumulation_steps": 2, "max_steps": 40},
    "hardware": {"gpu": "cpu", "num_gpus": 1},
    "output_dir": "runs/x",
}


def make_run(
    path: Path, *, rank: int = 8, steps: int = 40, acc_after: int = 60, cuda_peak: int | None = None
) -> Path:
    path.mkdir(parents=True)
    recipe = json.loads(json.dumps(RECIPE))
    recipe["strategy"]["options"]["rank"] = rank
    (path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    with (path / "metrics.jsonl").open("w") as handle:
        for step in range(1, steps + 1):
            lr = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
            event = {
                "step": step,
                "epoch": step / steps,
                "loss": 3.0 / step**0.5,
                "learning_rate": lr,
            }
            handle.write(json.dumps(event) + "\n")
            if step % 20 == 0:
                handle.write(json.dumps({"step": step, "eval/loss": 2.5 / step**0.4}) + "\n")
        handle.write('{"step": 41, "loss": \n')  # a line cut short by a crash
    run = {
        "status": "completed",
        "steps": steps,
        "train_runtime_s": 95.0,
        "tokens_per_second": 1234.5,
        "final_loss": 3.0 / steps**0.5,
        "peak_memory_bytes": cuda_peak,
    }
    (path / "run.json").write_text(json.dumps(run))
    memory = {
        "peak_bytes": 3 * 1024**3,
        "peak_phase": "optimizer step",
        "phases": {"load": 512 * 1024**2, "optimizer step": 3 * 1024**3},
        "budget_bytes": 40 * 1024**3,
        "fits": True,
    }
    (path / "memory.json").write_text(json.dumps(memory))
    (path / "environment.json").write_text(json.dumps({"python": "3.11.7", "torch": "2.13.0"}))
    for stage, correct in (("before", 5), ("after", acc_after)):
        score = accuracy(correct, 100)
        result = EvalResult("gsm8k", "test", 100, score.to_dict(), "accuracy")
        write_result(result, path / "eval" / f"{stage}-gsm8k", stage=stage, model="base")
    return path


def assert_valid_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    # A blank canvas would be one colour: a drawn curve is not.
    assert pixels.reshape(-1, pixels.shape[-1]).std(axis=0).max() > 0.01


def test_report_has_the_recipe_memory_curves_and_before_after(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", cuda_peak=2 * 1024**3)
    files = write_report(run)
    assert [p.name for p in files.plots] == ["loss.png", "lr.png"]
    for plot in files.plots:
        assert_valid_png(plot)
    md = files.markdown.read_text()
    assert md.startswith("# Run report: run")
    assert "lora (rank=8, alpha=16)" in md
    # A CPU run (hardware.gpu: cpu) says so, not "1 GPU".
    assert "4 x 2 accumulation = 8 sequences per step" in md
    assert "| hardware | CPU |" in md and "GPU =" not in md
    assert "3.00 GiB (optimizer step)" in md
    assert "load 512.0 MiB, optimizer step 3.00 GiB" in md
    assert "40.00 GiB (fits)" in md
    assert "2.00 GiB (estimate +50.0% off)" in md  # measured vs estimated peak
    assert "1,234.5 tokens/s" in md or "1234.5 tokens/s" in md
    assert "gsm8k on test: 5.0% before, 60.0% after (+55.0 pts)" in md
    assert "![loss](loss.png)" in md
    assert "skipped 1 unreadable line" in md
    html = files.html.read_text()
    assert html.count("data:image/png;base64,") == 2
    assert "<table>" in html and "gsm8k" in html


def test_report_without_training_events_or_evals(tmp_path: Path) -> None:
    run = tmp_path / "bare"
    run.mkdir()
    (run / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))
    files = write_report(run)
    assert files.plots == []
    md = files.markdown.read_text()
    assert "No training steps were logged" in md
    assert "No evaluation yet" in md


def test_a_directory_without_a_recipe_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(RunDirectoryError, match="not a run directory"):
        load_run(tmp_path)
    assert run_cli(["report", str(tmp_path)]) == 2


def test_compare_two_runs(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", rank=8, acc_after=40)
    b = make_run(tmp_path / "b", rank=16, acc_after=52)
    comparison = compare(load_run(a), load_run(b))
    assert comparison.recipe_diff == [("strategy.options.rank", "8", "16")]
    rows = {row[0]: row for row in comparison.results}
    after = rows["gsm8k accuracy (after, test)"]
    assert after[1].startswith("40.0% n=100") and after[2].startswith("52.0% n=100")
    assert after[3] == "+12.0 pts"
    out = write_comparison(comparison, tmp_path / "cmp")
    assert "strategy.options.rank" in out.read_text()
    assert_valid_png(tmp_path / "cmp" / "compare_loss.png")


def test_flatten_indexes_lists_of_mappings() -> None:
    flat = flatten({"a": {"b": 1}, "e": [{"name": "x"}], "l": [1, 2]})
    assert flat == {"a.b": 1, "e.0.name": "x", "l": [1, 2]}


def test_report_and_compare_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", rank=4)
    assert run_cli(["report", str(a)]) == 0
    assert (a / "report.md").is_file() and (a / "report.html").is_file()
    assert run_cli(["compare", str(a), str(b), "--output-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "strategy.options.rank" in out and "gsm8k accuracy" in out
    assert (tmp_path / "c" / "compare.html").is_file()


def test_a_short_runs_loss_plot_has_whole_steps_only(tmp_path: Path) -> None:
    from sftkit.reporting.plots import _figure, _whole_steps

    figure, axes = _figure()
    axes.plot([1.0, 2.0, 3.0], [4.9, 4.8, 4.3])
    _whole_steps(axes)
    figure.canvas.draw()
    ticks = [t for t in axes.get_xticks() if axes.get_xlim()[0] <= t <= axes.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_an_empty_option_shows_as_an_empty_string() -> None:
    from sftkit.reporting.summary import component

    assert component({"name": "tutor", "options": {"instruction": ""}}) == 'tutor (instruction="")'
