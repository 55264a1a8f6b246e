"""The ``dpo`` objective: the ``preference`` format (plain and conversational, FILE:LINE
errors), its options against the installed TRL, what the estimator prices (two sequences
per example, the frozen reference) against the tensors a real `SftkitDpoTrainer` holds, a
CPU run end to end, and an interrupted run resuming exactly."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sftkit.data.prepare import load_split, prepare_data
from sftkit.errors import DataError, RecipeError
from sftkit.recipe.load import load_recipe, load_recipe_text
from sftkit.testing import fresh_registry

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
RECIPE = REPO / "recipes" / "quickstart_dpo.yaml"


def pair(i: int) -> dict[str, Any]:
    return {
        "prompt": f"Sam has {i} pens. Sam gets 2 more. How many pens?",
        "chosen": f"{i} + 2 = {i + 2}\n#### {i + 2}",
        "rejected": f"{i} + 2 = {i + 3}\n#### {i + 3}",
    }


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) for r in rows))
    return path


def write_pairs(path: Path, rows: list[Any]) -> Path:
    return write_jsonl(path, [json.dumps(r) + "\n" if not isinstance(r, str) else r for r in rows])


@pytest.fixture(scope="module")
def registry() -> Any:
    return fresh_registry()


def preference_recipe(registry: Any, tmp_path: Path, train: Path, **training: Any) -> Any:
    text = f"""
model: {{name_or_path: "builtin:tiny-llama", dtype: float32, random_init: true}}
strategy: {{name: full-sft}}
optimizer: {{name: adamw}}
data:
  format: {{name: preference, options: {{train_file: "{train}", dev_size: 0}}}}
  template: {{name: tutor}}
training: {json.dumps({"objective": "dpo", **training})}
hardware: {{gpu: cpu}}
output_dir: {tmp_path / "run"}
"""
    return load_recipe_text(text, registry=registry)


# --------------------------------------------------------------------------- the format


def test_plain_and_conversational_pairs_are_read(registry, tmp_path):
    conversational = {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2 + 2?"},
        ],
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": [{"role": "assistant", "content": "5"}],
    }
    train = write_pairs(tmp_path / "train.jsonl", [pair(1), conversational])
    resolved = preference_recipe(registry, tmp_path, train)
    prepare_data(resolved)
    plain, chat = load_split(resolved, "train")
    assert (plain.prompt, plain.completion, plain.rejected) == (
        pair(1)["prompt"],
        pair(1)["chosen"],
        pair(1)["rejected"],
    )
    assert chat.prompt == conversational["prompt"]
    assert (chat.completion, chat.rejected) == ("4", "5")


def test_malformed_pairs_are_reported_with_file_and_line(registry, tmp_path):
    rows: list[Any] = [
        pair(1),
        "{not json\n",
        {"prompt": "q?", "chosen": "a"},
        {**pair(2), "rejected": pair(2)["chosen"]},
        {**pair(3), "chosen": [{"role": "user", "content": "x"}]},
        {**pair(4), "prompt": [{"role": "assistant", "content": "x"}]},
    ]
    train = write_pairs(tmp_path / "train.jsonl", rows)
    resolved = preference_recipe(registry, tmp_path, train)
    with pytest.raises(DataError) as info:
        prepare_data(resolved)
    message = str(info.value)
    assert "5 malformed rows" in message
    assert f"{train}:2: not valid JSON" in message
    assert f"{train}:3: missing key 'rejected'" in message
    assert f"{train}:4: 'chosen' and 'rejected' are the same answer" in message
    assert f"{train}:5: 'chosen' must be a string or a list of one" in message
    assert f"{train}:6: the last message of 'prompt' must be the user's" in message


def test_dpo_on_data_without_rejected_answers_names_the_fix(tmp_path):
    from sftkit.data.example import Example
    from sftkit.training.preference import dpo_dataset

    class Split(list):
        path = tmp_path / "train.jsonl"

    with pytest.raises(DataError, match="has no rejected answer") as info:
        dpo_dataset(Split([Example("train-00001", "q?", "a")]), None, None, None)
    assert "data.format: preference" in (info.value.hint or "")


# --------------------------------------------------------------------------- the options


def test_loss_types_are_those_trl_computes():
    """Every loss type sftkit accepts is one the installed TRL names, and the reverse."""
    import dataclasses
    import re
    import typing

    from trl import DPOConfig

    from sftkit.builtin.training import DpoLoss

    (field,) = [f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type"]
    trl_names = set(re.findall(r"`'([a-z_]+)'`", field.metadata["help"]))
    assert set(typing.get_args(DpoLoss)) == trl_names


@pytest.mark.parametrize(
    ("training", "path", "words"),
    [
        ({"objective_options": {"loss_type": ["sigmoidd"]}}, "loss_type", "sigmoid"),
        ({"objective_options": {"beta": 0}}, "beta", "greater than 0"),
        ({"objective_options": {"gamma": 1}}, "gamma", ""),
        ({"loss": "chunked"}, "training.loss", "computes its own loss"),
    ],
)
def test_bad_dpo_settings_are_refused_at_validation(registry, tmp_path, training, path, words):
    train = write_pairs(tmp_path / "train.jsonl", [pair(1)])
    with pytest.raises(RecipeError) as info:
        preference_recipe(registry, tmp_path, train, **training)
    message = str(info.value)
    assert path in message and words in message


def test_sft_objective_takes_no_options(registry, tmp_path):
    train = write_pairs(tmp_path / "train.jsonl", [pair(1)])
    with pytest.raises(RecipeError, match="objective 'sft' takes no options"):
        preference_recipe(
            registry, tmp_path, train, objective="sft", objective_options={"beta": 0.1}
        )


# --------------------------------------------------------------------------- the estimate


def estimate(*overrides: str) -> Any:
    from sftkit.memory.estimator import shape_for
    from sftkit.memory.layout import layout
    from sftkit.memory.phases import breakdown, reference_bytes
    from sftkit.memory.setup import setup_from_recipe

    resolved = load_recipe(str(RECIPE), list(overrides), registry=fresh_registry())
    setup = setup_from_recipe(resolved, shape_for(resolved), on_gpu=False)
    return resolved, setup, breakdown(setup), reference_bytes(setup, layout(setup))


def part(parts: list[Any], start: str) -> int:
    return sum(p.bytes for p in parts if p.name.startswith(start))


def test_dpo_prices_two_sequences_per_example_and_the_reference():
    _, dpo, dpo_parts, reference = estimate()
    _, sft, sft_parts, none = estimate("training.objective=sft", "~training.objective_options")
    assert dpo.micro_batch_size == 2 * sft.micro_batch_size
    fb = "forward_backward"
    assert part(dpo_parts.parts[fb], "activations") == 2 * part(sft_parts.parts[fb], "activations")
    assert none == 0 and part(sft_parts.parts[fb], "frozen reference") == 0
    weights = sum(t.total_bytes for t in dpo_parts.tensors)
    assert reference == weights  # full training: the whole model again
    assert part(dpo_parts.parts[fb], "frozen reference: a copy of the model") == weights
    _, _, lora_parts, lora_reference = estimate("strategy.name=lora")
    adapters = sum(p.bytes for p in lora_parts.parts[fb] if p.category == "trainable")
    assert 0 < lora_reference == adapters < weights / 4


@pytest.mark.parametrize("strategy", ["full-sft", "lora"])
def test_the_reference_the_trainer_holds_is_what_the_estimate_prices(strategy, tmp_path):
    """Measured: the bytes of every tensor the DPO trainer's model and reference hold,
    against the estimator's weights plus its reference term. With LoRA the reference is a
    frozen copy of the adapters (TRL's ``ref`` adapter): no second model is allocated."""
    torch = pytest.importorskip("torch")
    from datasets import Dataset

    from sftkit.engine import engine_of
    from sftkit.memory.phases import static_bytes
    from sftkit.runpaths import RunPaths
    from sftkit.testing import tiny_model
    from sftkit.training.measure import _storages, model_tensors
    from sftkit.training.optimizer import build_optimizer
    from sftkit.training.preference import SftkitDpoConfig, SftkitDpoTrainer
    from sftkit.training.trainer import TrainerParts

    resolved, setup, _, reference = estimate(f"strategy.name={strategy}")
    model, tokenizer = tiny_model(resolved, tmp_path)
    parts = TrainerParts(
        paths=RunPaths(tmp_path / "run"),
        engine=engine_of(resolved.recipe),
        recipe=resolved.recipe,
        build_optimizer=lambda m: build_optimizer(resolved, m),
        use_cpu=True,
    )
    rows = [{"prompt": "Q: 1+1?\n", "chosen": "2", "rejected": "3"}] * 2
    trainer = SftkitDpoTrainer(
        parts=parts,
        model=model,
        args=SftkitDpoConfig(
            output_dir=str(tmp_path / "run" / ".partial"),
            use_cpu=True,
            report_to="none",
            per_device_train_batch_size=2,
            max_steps=1,
            beta=0.1,
            save_strategy="no",
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    held = sum(_storages(model_tensors(trainer.model)).values())
    if strategy == "lora":
        assert trainer.ref_model is None  # no second model
        ref = [p for n, p in trainer.model.named_parameters() if ".ref." in n]
        assert ref and not any(p.requires_grad for p in ref)  # frozen, not optimized
        assert held == static_bytes(setup).weights + reference
    else:
        assert held == static_bytes(setup).weights
        copy = sum(_storages(model_tensors(trainer.ref_model)).values())
        assert copy == reference
        assert not any(p.requires_grad for p in trainer.ref_model.parameters())
    trainer.train()
    assert torch.isfinite(torch.tensor(trainer.state.log_history[-1]["train_loss"]))


# --------------------------------------------------------------------------- runs

FAST = (
    "training.max_steps=6",
    "training.micro_batch_size=4",
    "training.logging_steps=1",
    "training.save_steps=2",
    "training.report_to=[none]",
    "data.format.options.dev_size=4",
)
PER_STEP = ("loss", "grad_norm", "learning_rate", "rewards/chosen", "rewards/rejected")


@pytest.fixture(scope="module")
def pairs_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dpo")
    train = write_pairs(root / "train.jsonl", [pair(i) for i in range(1, 29)])
    test = write_pairs(root / "test.jsonl", [pair(i) for i in range(40, 44)])
    text = RECIPE.read_text()
    text = text.replace("recipes/data/arithmetic_preferences_train.jsonl", str(train))
    text = text.replace("recipes/data/arithmetic_preferences_test.jsonl", str(test))
    path = root / "recipe.yaml"
    path.write_text(text)
    return path


def cli(recipe: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["run", str(recipe), *FAST, "--output-dir", str(run_dir), *extra]


def per_step(run_dir: Path) -> dict[int, dict[str, Any]]:
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {e["step"]: {k: e.get(k) for k in PER_STEP} for e in events if "loss" in e}


@pytest.fixture(scope="module")
def reference_run(pairs_recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from sftkit.cli import run_cli

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = tmp_path_factory.mktemp("reference") / "run"
        assert run_cli(cli(pairs_recipe, run_dir)) == 0
    finally:
        torch.set_num_threads(threads)
    return run_dir


@pytest.mark.slow
def test_dpo_trains_end_to_end_on_cpu(reference_run):
    steps = per_step(reference_run)
    assert sorted(steps) == list(range(1, 7))
    assert steps[1]["loss"] == pytest.approx(0.6931, abs=1e-3)  # log 2: policy == reference
    assert all(s["rewards/chosen"] is not None for s in steps.values())
    final = reference_run / "final"
    assert (final / "model.safetensors").is_file() and (final / "tokenizer.json").is_file()


@pytest.mark.slow
def test_the_dpo_report_shows_the_reward_accuracy_and_rewards(reference_run):
    events = [
        json.loads(line) for line in (reference_run / "metrics.jsonl").read_text().splitlines()
    ]
    last = [e for e in events if "rewards/accuracies" in e][-1]
    report = (reference_run / "report.md").read_text()
    assert f"| final reward accuracy | {last['rewards/accuracies']:.4g} at step 6 (" in report
    assert "| final reward |" not in report and "| final KL |" not in report
    if importlib.util.find_spec("matplotlib"):  # the light core draws no plots
        for name in ("rewards", "reward_accuracy"):
            assert f"![{name}]({name}.png)" in report and (reference_run / f"{name}.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["full-sft", "lora"])
def test_an_interrupted_dpo_run_resumes_exactly(pairs_recipe, tmp_path, strategy):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from sftkit.cli import run_cli

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference_run = tmp_path / "reference"
        assert run_cli(cli(pairs_recipe, reference_run, f"strategy.name={strategy}")) == 0
    finally:
        torch.set_num_threads(threads)
    weights = "model" if strategy == "full-sft" else "adapter_model"
    run_dir = tmp_path / "run"
    path = os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")])
    environ = {
        **os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
        "SFTKIT_DISABLE_PLUGIN_AUTOLOAD": "1", "SFTKIT_TEST_FAULT": "sigint:3",
    }  # fmt: skip
    done = subprocess.run(
        [
            sys.executable,
            str(TESTS / "fault_injection.py"),
            *cli(pairs_recipe, run_dir, f"strategy.name={strategy}"),
        ],
        env=environ, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 130, done.stderr
    assert (run_dir / "checkpoints" / "checkpoint-3").is_dir() or "checkpoint-3" in done.stderr
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_cli(cli(pairs_recipe, run_dir, f"strategy.name={strategy}", "--resume")) == 0
    finally:
        torch.set_num_threads(threads)
    assert per_step(run_dir) == per_step(reference_run)
    ours = load_file(str(run_dir / "final" / f"{weights}.safetensors"))
    theirs = load_file(str(reference_run / "final" / f"{weights}.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.mark.slow
def test_a_lora_dpo_run_saves_only_the_trained_adapter(pairs_recipe, tmp_path):
    from sftkit.cli import run_cli

    run_dir = tmp_path / "run"
    assert run_cli([*cli(pairs_recipe, run_dir), "strategy.name=lora", "training.max_steps=2"]) == 0
    final = run_dir / "final"
    assert (final / "adapter_model.safetensors").is_file()
    assert not (final / "ref").exists()  # TRL's frozen reference copy is not a result
