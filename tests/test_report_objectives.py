"""The report's curves and rows for what an objective logs beyond the loss (grpo's rewards,
KL and completion lengths; dpo's reward accuracy and rewards), from synthetic run directories
whose events carry the keys TRL 1.16's trainers log (no torch, no training)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_report import assert_valid_png, make_run

from sftkit.cli import run_cli
from sftkit.reporting import load_run, write_report
from sftkit.reporting.compare import compare, write_comparison
from sftkit.reporting.curves import CURVE_SETS, reward_keys
from sftkit.reporting.summary import objective_rows

pytest.importorskip("matplotlib")

STEPS = 6


def grpo_event(step: int, *, kl: bool = True) -> dict[str, Any]:
    """One step of GRPOTrainer's log, as metrics.jsonl holds it (two rewards, weights 1)."""
    correct, fmt = (step - 1) / 10, min(1.0, step / 4)
    event = {
        "step": step,
        "loss": 0.01 * (-1) ** step,
        "grad_norm": 0.3,
        "learning_rate": 1e-5,
        "num_tokens": 350.0 * step,
        "completions/mean_length": 20.0 + step,
        "completions/min_length": 10.0 + step,
        "completions/max_length": 32.0,
        "completions/clipped_ratio": 0.5 / step,
        "completions/mean_terminated_length": 18.0,
        "rewards/gsm8k-correct/mean": correct,
        "rewards/gsm8k-correct/std": 0.1,
        "rewards/format/mean": fmt,
        "rewards/format/std": 0.2,
        "reward": correct + fmt,
        "reward_std": 0.3,
        "frac_reward_zero_std": 0.25,
        "entropy": 4.8,
        "clip_ratio/region_mean": 0.0,
    }
    if kl:
        event["kl"] = 0.001 * step
    return event


def dpo_event(step: int) -> dict[str, Any]:
    """One step of DPOTrainer's log."""
    chosen, rejected = 0.02 * step, -0.01 * step
    return {
        "step": step,
        "loss": 0.6931 - 0.01 * step,
        "grad_norm": 0.7,
        "learning_rate": 1e-3,
        "entropy": 4.8,
        "logits/chosen": -0.01,
        "logits/rejected": -0.01,
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/accuracies": step / STEPS,
        "rewards/margins": chosen - rejected,
        "logps/chosen": -86.0,
        "logps/rejected": -87.0,
    }


def with_events(path: Path, events: list[dict[str, Any]]) -> Path:
    """The synthetic SFT run of test_report with these training events instead."""
    run = make_run(path, steps=STEPS)
    lines = [json.dumps(event) for event in events]
    summary = {"step": STEPS, "train_runtime": 1.0, "train_loss": 0.1}  # the end-of-train event
    (run / "metrics.jsonl").write_text("\n".join([*lines, json.dumps(summary)]) + "\n")
    return run


def training_table(markdown: str) -> dict[str, str]:
    section = markdown.split("## Training", 1)[1].split("## Evaluation", 1)[0]
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): cells[1].strip() for cells in rows if len(cells) == 2}


def test_a_grpo_report_draws_rewards_kl_and_completion_lengths(tmp_path: Path) -> None:
    run = with_events(tmp_path / "grpo", [grpo_event(s) for s in range(1, STEPS + 1)])
    files = write_report(run)
    names = [p.name for p in files.plots]
    assert names == ["loss.png", "lr.png", "rewards.png", "kl.png", "completion_lengths.png"]
    for plot in files.plots:
        assert_valid_png(plot)
    md = files.markdown.read_text()
    for name in ("rewards", "kl", "completion_lengths"):
        assert f"![{name}]({name}.png)" in md
    rows = training_table(md)
    # step 6: gsm8k-correct 0.5, format 1 (capped), their sum 1.5; step 1: 0 + 0.25
    assert rows["final reward"] == ("1.5 at step 6 (gsm8k-correct 0.5, format 1); 0.25 at step 1")
    assert rows["final KL"] == "0.006 at step 6"
    assert rows["final completion length"] == (
        "26 tokens mean (min 16, max 32), 8% clipped at the maximum length, at step 6"
    )
    assert "final reward accuracy" not in rows
    assert files.html.read_text().count("data:image/png;base64,") == 5


def test_a_grpo_run_without_kl_has_no_kl_plot_or_row(tmp_path: Path) -> None:
    run = with_events(tmp_path / "grpo", [grpo_event(s, kl=False) for s in range(1, STEPS + 1)])
    files = write_report(run)
    assert "kl.png" not in [p.name for p in files.plots]
    assert not (run / "kl.png").exists()
    assert "final KL" not in training_table(files.markdown.read_text())


def test_a_dpo_report_draws_rewards_and_reward_accuracy(tmp_path: Path) -> None:
    run = with_events(tmp_path / "dpo", [dpo_event(s) for s in range(1, STEPS + 1)])
    files = write_report(run)
    assert [p.name for p in files.plots] == [
        "loss.png",
        "lr.png",
        "rewards.png",
        "reward_accuracy.png",
    ]
    for plot in files.plots:
        assert_valid_png(plot)
    rows = training_table(files.markdown.read_text())
    assert rows["final reward accuracy"] == (
        "1 at step 6 (chosen 0.12, rejected -0.06, margins 0.18); 0.1667 at step 1"
    )
    assert not {"final reward", "final KL", "final completion length"} & set(rows)


def test_reward_series_are_the_sum_and_each_reward_not_spreads_or_accuracies() -> None:
    assert reward_keys([grpo_event(1)]) == {
        "reward (weighted sum)": "reward",
        "gsm8k-correct": "rewards/gsm8k-correct/mean",
        "format": "rewards/format/mean",
    }
    assert next(iter(reward_keys([grpo_event(1)]))) == "reward (weighted sum)"  # drawn first
    assert reward_keys([dpo_event(1)]) == {
        "chosen": "rewards/chosen",
        "rejected": "rewards/rejected",
        "margins": "rewards/margins",
    }
    assert reward_keys([{"step": 1, "loss": 1.0}]) == {}


def test_an_sft_run_logs_none_of_the_objective_series(tmp_path: Path) -> None:
    record = load_run(make_run(tmp_path / "sft"))
    assert all(not curves.select(record.train_events) for curves in CURVE_SETS)
    assert objective_rows(record.train_events) == []
    files = write_report(record.path)
    assert [p.name for p in files.plots] == ["loss.png", "lr.png"]
    assert not any((record.path / f"{c.name}.png").exists() for c in CURVE_SETS)


def test_a_curve_is_drawn_from_the_steps_that_logged_it(tmp_path: Path) -> None:
    # KL logged at some steps only (a resumed run's first part without it, say): still drawn
    events = [grpo_event(s, kl=s > 3) for s in range(1, STEPS + 1)]
    run = with_events(tmp_path / "grpo", events)
    assert (run / "kl.png") in write_report(run).plots
    assert training_table((run / "report.md").read_text())["final KL"] == "0.006 at step 6"


def test_compare_shows_each_runs_final_reward(tmp_path: Path) -> None:
    a = with_events(tmp_path / "a", [grpo_event(s) for s in range(1, STEPS + 1)])
    b = with_events(tmp_path / "b", [grpo_event(s) for s in range(1, STEPS - 1)])
    rows = {row[0]: row for row in compare(load_run(a), load_run(b)).results}
    # b stopped at step 4: 0.3 + 1
    assert rows["final reward"] == ("final reward", "1.5", "1.3", "-13.3%")
    sft = make_run(tmp_path / "sft")
    rows = {row[0]: row for row in compare(load_run(sft), load_run(a)).results}
    assert rows["final reward"] == ("final reward", "-", "1.5", "")
    plain = {row[0] for row in compare(load_run(sft), load_run(sft)).results}
    assert not {"final reward", "final reward accuracy"} & plain


def test_compare_overlays_the_reward_of_runs_that_logged_one(tmp_path: Path) -> None:
    a = with_events(tmp_path / "a", [grpo_event(s) for s in range(1, STEPS + 1)])
    sft = make_run(tmp_path / "sft")
    write_comparison(compare(load_run(sft), load_run(a)), tmp_path / "cmp")
    assert_valid_png(tmp_path / "cmp" / "compare_reward.png")
    assert "![compare_reward](compare_reward.png)" in (tmp_path / "cmp" / "compare.md").read_text()
    assert not (tmp_path / "cmp" / "compare_rewards_accuracies.png").exists()
    write_comparison(compare(load_run(sft), load_run(sft)), tmp_path / "plain")
    assert sorted(p.name for p in (tmp_path / "plain").glob("*.png")) == [
        "compare_loss.png",
        "compare_lr.png",
    ]


def test_the_compare_command_prints_the_final_reward(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one table row per line
    a = with_events(tmp_path / "a", [grpo_event(s) for s in range(1, STEPS + 1)])
    b = with_events(tmp_path / "b", [dpo_event(s) for s in range(1, STEPS + 1)])
    assert run_cli(["compare", str(a), str(b)]) == 0
    lines = capsys.readouterr().out.splitlines()
    reward = next(line for line in lines if "final reward " in line and "accuracy" not in line)
    accuracy = next(line for line in lines if "final reward accuracy" in line)
    assert "1.5" in reward.split("│")[2] and accuracy.split("│")[3].strip() == "1"
