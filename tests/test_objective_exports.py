"""Runs of the objectives after SFT export as SFT runs do (issue 25, item 4): the adapter a
LoRA grpo run trained (its recipe naming a plugin's reward), loadable with PEFT, and merged
into a standalone model, with a model card that names the objective (and the adapter a run
started from). A dpo run's final/ is the same adapter layout (tests/test_dpo.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftkit.testing import invoke_cli, quick_run

pytest.importorskip("trl")
torch = pytest.importorskip("torch")

GRPO = (
    "training.objective=grpo",
    "training.objective_options.num_generations=4",
    "training.objective_options.max_completion_length=8",
    "training.objective_options.beta=0.04",  # TRL's `ref` adapter: never part of an export
    "strategy.name=lora",
    "training.max_steps=2",
    # a reward the random model's samples differ on, so the adapter really trains
    "training.objective_options.rewards=[{name: longer}]",
    "optimizer.options.lr=0.01",
)


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_grpo import Longer

    return quick_run(tmp_path_factory.mktemp("grpo"), *GRPO, plugins=[Longer()])


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits.float()


def test_a_grpo_adapter_exports_and_merges(grpo_run: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from test_grpo import Longer
    from transformers import AutoModelForCausalLM

    # the run's recipe names a plugin's reward: the command's registry has it, as for a user
    # with the plugin installed (the export reads the recipe through it)
    adapter = tmp_path / "adapter"
    result = invoke_cli("export", str(grpo_run), "--output-dir", str(adapter), plugins=[Longer()])
    assert result.exit_code == 0, result.stderr
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert not (adapter / "ref").exists()
    card = (adapter / "README.md").read_text()
    assert "objective `grpo`" in card and "- grpo" in card

    ids = torch.tensor([[1, 5, 9, 13, 17]])
    base_dir = str(config["base_model_name_or_path"])

    def with_adapter(directory: Path):
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        return _logits(PeftModel.from_pretrained(base, directory).eval(), ids)

    expected = with_adapter(grpo_run / "final")  # what the run trained
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    assert not torch.allclose(_logits(base, ids), expected, atol=1e-4)  # it did train
    assert torch.allclose(with_adapter(adapter), expected, atol=1e-6)

    merged = tmp_path / "merged"
    args = ("export", str(grpo_run), "--merge", "--output-dir", str(merged), "--dtype", "float32")
    result = invoke_cli(*args, plugins=[Longer()])
    assert result.exit_code == 0, result.stderr
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    assert torch.allclose(_logits(model, ids), expected, atol=1e-4)


def test_the_card_names_the_adapter_a_run_started_from(grpo_run: Path, tmp_path: Path) -> None:
    from sftkit.export.card import model_card
    from sftkit.reporting.record import load_run

    record = load_run(grpo_run)
    record.recipe.setdefault("model", {})["adapter"] = "runs/sft/final"
    card = model_card(record, merged=False, adapter=True, quantized_base=None, dtype=None)
    assert "starting from the adapter `runs/sft/final`" in card
