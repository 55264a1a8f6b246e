"""The ``grpo`` objective: its options validated at load, its data (the template's prompts
with their reference answers), and a few CPU steps of TRL's GRPOTrainer on the tiny model
with built-in and plugin rewards, whose scores are logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftkit import RewardSpec, hookimpl
from sftkit.testing import invoke_cli, quick_run, tiny_dataset, tiny_recipe

pytest.importorskip("trl")

GRPO = (
    "training.objective=grpo",
    "training.objective_options.num_generations=4",
    "training.objective_options.max_completion_length=12",
)


def longer(prompts, completions, **columns):
    """A reward the random tiny model's samples differ on, so the groups have advantages."""
    assert "reference_answer" in columns  # the data's columns reach every reward
    return [len(c.strip()) / 12 for c in completions]


class Longer:
    @hookimpl
    def register_rewards(self, register):
        register(RewardSpec("longer", "Longer answers score higher.", f"{__name__}:longer"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.objective_options.num_generations=1", "num_generations"),
        ("training.objective_options.temperature=0", "temperature"),
        ("training.objective_options.rewards=[{name: gsm8k-corect}]", "gsm8k-correct"),
        ("training.objective_options.rewards=[]", "rewards"),
        ("training.objective_options.beta=0.04", "adapter strategy"),
    ],
)
def test_bad_options_stop_at_load_naming_the_key(override, message):
    result = invoke_cli("validate", "quickstart", *GRPO, override)
    assert result.exit_code == 2, result.stderr
    assert "training.objective_options" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_the_data_is_the_templates_prompts_with_their_reference_answers(tmp_path):
    from sftkit.data.prepare import prepare_data
    from sftkit.modeling import load_tokenizer
    from sftkit.specs import load_factory
    from sftkit.training.reinforcement import grpo_dataset

    resolved = tiny_recipe(*GRPO, f"output_dir={tmp_path}")
    prepare_data(resolved)
    tokenizer = load_tokenizer(resolved.recipe)
    template = load_factory(resolved.template.spec.factory)(resolved.template.options)
    split = tiny_dataset(resolved)
    data = grpo_dataset(split, template, tokenizer, resolved.recipe)
    assert data.column_names == ["prompt", "reference_answer"]
    assert data[0]["reference_answer"] == split[0].reference_answer is not None
    ids = tokenizer(data[0]["prompt"])["input_ids"]
    assert ids.count(tokenizer.bos_token_id) <= 1  # one BOS, as the SFT data has


@pytest.mark.parametrize("strategy", ["full-sft", "lora"])
def test_grpo_trains_on_cpu_and_logs_each_reward(tmp_path, strategy):
    overrides = [
        *GRPO,
        f"strategy.name={strategy}",
        "training.objective_options.rewards=[{name: gsm8k-correct}, {name: format}, "
        "{name: longer, weight: 0.5}]",
    ]
    if strategy == "lora":  # the reference: the adapters switched off (no second model)
        overrides.append("training.objective_options.beta=0.04")
    run = quick_run(tmp_path, *overrides, plugins=[Longer()])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "reward" in row]
    assert [row["step"] for row in steps] == [1, 2, 3]
    for row in steps:
        for name in ("gsm8k-correct", "format", "longer"):
            assert 0.0 <= row[f"rewards/{name}/mean"] <= 1.0 + 1e-6
        assert row["completions/max_length"] <= 12
    assert any(row["rewards/longer/std"] > 0 for row in steps)
    assert any(row["grad_norm"] > 0 for row in steps)  # the advantages moved the policy
    if strategy == "lora":
        assert "kl" in steps[0]
    assert (Path(run) / "final" / "sftkit_complete.json").is_file()
