"""``model.adapter``: a run starts from the adapter a previous LoRA run saved (PEFT's
``PeftModel.from_pretrained``), checked in validation (an adapter strategy) and before the
base loads (an adapter directory); SFT, GRPO and DPO from it, the preference objectives'
reference a frozen copy of the loaded adapter."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftkit import hookimpl
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


# --------------------------------------------------------------------------- its config


def _save_adapter(directory, **options):
    """An adapter_config.json as PEFT writes it for sftkit's LoRA options."""
    from sftkit.builtin.strategies import LoraOptions
    from sftkit.strategies.lora import Lora

    Lora(LoraOptions(**options)).lora_config().save_pretrained(str(directory))
    return directory


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rank=st.integers(1, 64),
    alpha=st.sampled_from([8.0, 16.0, 32.0]),
    dropout=st.sampled_from([0.0, 0.05, 0.1]),
    targets=st.sampled_from([["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj"]]),
    changed=st.sampled_from(["rank", "alpha", "dropout", "target_modules", "use_dora", None]),
)
def test_the_options_a_saved_config_contradicts_are_exactly_those_changed(
    tmp_path_factory, rank, alpha, dropout, targets, changed
):
    from sftkit.builtin.strategies import LoraOptions, lora_saved_differences
    from sftkit.recipe.adapter import saved_adapter_config

    saved = {"rank": rank, "alpha": alpha, "dropout": dropout, "target_modules": targets}
    directory = _save_adapter(tmp_path_factory.mktemp("adapter"), **saved)
    other = {
        "rank": rank + 1,
        "alpha": alpha * 2,
        "dropout": 0.2,
        "target_modules": [*targets, "down_proj"],
        "use_dora": True,
    }
    options = LoraOptions(**{**saved, **({changed: other[changed]} if changed else {})})
    differences = lora_saved_differences(options, saved_adapter_config(str(directory)))
    assert [option for option, _, _ in differences] == ([changed] if changed else [])


def test_an_adapter_saved_with_other_options_is_refused_naming_both_and_the_fix(tmp_path):
    adapter = _save_adapter(tmp_path / "adapter", rank=8, alpha=16, dropout=0.0)
    for command in ("validate", "estimate-memory"):
        result = invoke_cli(
            command, "quickstart", "strategy.name=lora", "strategy.options.rank=16",
            "strategy.options.alpha=16", "strategy.options.dropout=0", f"model.adapter={adapter}",
        )  # fmt: skip
        out = result.stdout + result.stderr
        assert result.exit_code == 2, out
        assert "model.adapter" in out and "adapter_config.json" in out
        assert "rank=8" in out and "rank=16" in out and "alpha" not in out.split("Set")[0]
        assert "strategy.options.rank=8" in out
        assert "Traceback" not in out


def test_an_adapter_saved_with_the_recipes_options_is_priced_with_them(tmp_path):
    # a run saves the module names all-linear resolved to: a list against all-linear passes
    linear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    adapter = _save_adapter(tmp_path / "adapter", rank=8, target_modules=linear)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 8 and sorted(config["target_modules"]) == sorted(linear)
    overrides = ("strategy.name=lora", "strategy.options.rank=8", f"model.adapter={adapter}")
    result = invoke_cli("estimate-memory", "quickstart", *overrides)
    assert result.exit_code == 0, result.stderr
    assert "its adapter_config.json agrees with strategy.options" in result.stdout
    missing = invoke_cli(
        "estimate-memory", "quickstart", "strategy.name=lora", f"model.adapter={tmp_path / 'no'}"
    )
    assert missing.exit_code == 0, missing.stderr
    assert "does not exist yet: priced with strategy.options" in missing.stdout


def test_an_all_linear_recipe_over_an_adapter_of_fewer_modules_is_refused_by_the_estimate(
    tmp_path,
):
    """all-linear against the list PEFT saved needs the model: validation passes it, the
    estimate (which has the model's layers) refuses it naming both sets and the fix."""
    adapter = _save_adapter(tmp_path / "adapter", rank=8, target_modules=["q_proj", "v_proj"])
    overrides = ("strategy.name=lora", "strategy.options.rank=8", f"model.adapter={adapter}")
    assert invoke_cli("validate", "quickstart", *overrides).exit_code == 0
    result = invoke_cli("estimate-memory", "quickstart", *overrides)
    out = result.stdout + result.stderr
    assert result.exit_code == 2, out
    assert "the adapter adapts q_proj, v_proj" in out and "down_proj" in out
    assert "strategy.options.target_modules=[q_proj, v_proj]" in out
    assert "Traceback" not in out


class AdapterAtStartAndEnd:
    """The policy's adapter and TRL's frozen ``ref`` copy as the trainer holds them at the
    first step and after the last, keyed as the saved adapter file keys them."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, dict[str, Any]]] = {}

    def take(self, when: str, model: Any) -> None:
        for adapter in ("default", "ref"):
            self.seen.setdefault(when, {})[adapter] = {
                name.replace(f".{adapter}.", "."): param.detach().clone()
                for name, param in model.named_parameters()
                if f".{adapter}." in name
            }

    @hookimpl
    def on_train_start(self, run):
        self.take("start", run.model)

    @hookimpl
    def on_train_end(self, run, metrics):
        self.take("end", run.model)


def test_dpo_starts_from_a_saved_adapter_its_reference_a_frozen_copy_of_it(tmp_path):
    """A LoRA SFT run's adapter, then DPO from it (the r1 recipes' path with preference
    pairs): the policy starts as the loaded adapter, not a fresh one (B = 0), TRL's reference
    is a frozen copy of it (so the first step's rewards, beta x the policy's log-ratio to the
    reference, are 0), and the adapter trains."""
    import json

    from safetensors.torch import load_file

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": f"Sam has {i} pens. Sam gets 2 more. How many pens?",
                    "chosen": f"{i} + 2 = {i + 2}\n#### {i + 2}",
                    "rejected": f"{i} + 2 = {i + 3}\n#### {i + 3}",
                }
            )
            + "\n"
            for i in range(1, 17)
        )
    )
    sft = quick_run(tmp_path, "strategy.name=lora", "optimizer.options.lr=1e-2")
    saved = load_file(sft / "final" / "adapter_model.safetensors")
    assert any(saved[k].abs().max() > 1e-4 for k in saved if "lora_B" in k)  # not B = 0
    seen = AdapterAtStartAndEnd()
    run = tmp_path / "dpo"
    result = invoke_cli(
        "run",
        "quickstart_dpo",
        "strategy.name=lora",
        f"model.adapter={sft / 'final'}",
        f"data.format.options.train_file={pairs}",
        "~data.format.options.test_file",
        "data.format.options.dev_size=0",
        "training.micro_batch_size=4",
        "training.max_steps=3",
        "training.logging_steps=1",
        "~training.save_steps",
        "--output-dir",
        str(run),
        plugins=[seen],
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    start, end = seen.seen["start"], seen.seen["end"]
    for adapter in ("default", "ref"):  # both the loaded adapter when training starts
        assert start[adapter].keys() == saved.keys()
        for key, tensor in saved.items():
            assert torch_equal(start[adapter][key], tensor), (adapter, key)
    assert all(torch_equal(end["ref"][key], saved[key]) for key in saved)  # frozen
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = {row["step"]: row for row in rows if "loss" in row}
    assert sorted(steps) == [1, 2, 3]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert steps[1][key] == 0.0, steps[1]  # the policy is its reference at the start
    assert all(math.isfinite(row["loss"]) for row in steps.values())
    trained = load_file(run / "final" / "adapter_model.safetensors")
    assert trained.keys() == saved.keys()
    assert any(not torch_equal(trained[k], saved[k]) for k in saved)  # it trained
    assert not (run / "final" / "ref").exists()


def torch_equal(a: Any, b: Any) -> bool:
    import torch

    return torch.equal(a.cpu(), b.cpu())
