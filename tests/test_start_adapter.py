"""``model.adapter``: a run starts from the adapter a previous LoRA run saved (PEFT's
``PeftModel.from_pretrained``), checked in validation (an adapter strategy) and before the
base loads (an adapter directory)."""

from __future__ import annotations

import pytest

from sftkit.testing import invoke_cli, quick_run

pytest.importorskip("peft")


def test_a_full_training_strategy_has_no_adapter_to_start_from():
    result = invoke_cli("validate", "quickstart", "model.adapter=runs/some-lora/final")
    assert result.exit_code == 2
    assert "model.adapter" in result.stdout + result.stderr
    assert "trains every weight" in result.stdout + result.stderr


def test_validate_does_not_need_the_adapter_to_exist_yet():
    result = invoke_cli(
        "validate", "quickstart", "strategy.name=lora", "model.adapter=runs/not-yet/final"
    )
    assert result.exit_code == 0, result.stdout + result.stderr


def test_a_missing_adapter_is_bad_input_before_the_base_loads(tmp_path):
    result = invoke_cli(
        "run",
        "quickstart",
        "strategy.name=lora",
        f"model.adapter={tmp_path / 'nothing'}",
        "training.max_steps=1",
        "--output-dir",
        str(tmp_path / "run"),
    )
    assert result.exit_code == 2
    assert "adapter_config.json" in result.stdout + result.stderr
    assert "load weights" not in result.stdout + result.stderr


def test_a_run_starts_from_the_adapter_a_previous_run_saved(tmp_path):
    from safetensors.torch import load_file

    first = quick_run(tmp_path, "strategy.name=lora", "optimizer.options.lr=1e-2")
    saved = load_file(first / "final" / "adapter_model.safetensors")
    # A step at a negligible learning rate: the second run's adapter is the first's
    # (fresh LoRA would start with B = 0, far from the trained one).
    second = quick_run(
        tmp_path,
        "strategy.name=lora",
        f"model.adapter={first / 'final'}",
        "training.max_steps=1",
        "optimizer.options.lr=1e-12",
    )
    resumed = load_file(second / "final" / "adapter_model.safetensors")
    assert resumed.keys() == saved.keys()
    trained_b = [k for k in saved if "lora_B" in k]
    assert trained_b and any(saved[k].abs().max() > 1e-4 for k in trained_b)
    for key, tensor in saved.items():
        assert (resumed[key] - tensor).abs().max() < 1e-8, key


def test_grpo_with_a_kl_term_starts_from_a_saved_adapter(tmp_path):
    """The r1_gsm8k_grpo setup in small: TRL's frozen ``ref`` copy of a loaded adapter."""
    import json

    # no LoRA dropout (the adapter's config keeps it): the first step's policy is then
    # exactly its reference
    lora = ("strategy.name=lora", "strategy.options.dropout=0")
    first = quick_run(tmp_path, *lora, "optimizer.options.lr=1e-2")
    run = quick_run(
        tmp_path,
        *lora,
        f"model.adapter={first / 'final'}",
        "training.objective=grpo",
        "training.objective_options.num_generations=4",
        "training.objective_options.max_completion_length=12",
        "training.objective_options.beta=0.04",
        "training.max_steps=2",
    )
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "kl" in row]
    assert [row["step"] for row in steps] == [1, 2]
    assert steps[0]["kl"] < 1e-7  # the reference is the loaded adapter, not a fresh one
    assert not (run / "final" / "ref").exists()
