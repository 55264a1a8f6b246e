"""The tokenized-split cache: a second run with the same inputs loads it without tokenizing,
and a change to any one input it is keyed on (source, format options, template, tokenizer,
maximum length, completion-only loss, reasoning, sftkit version) builds it again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("datasets")

ASSET = Path(__file__).resolve().parent.parent / "sftkit" / "assets" / "models" / "tiny-llama"


def write_gsm(directory: Path, rows: int = 12, offset: int = 0) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            {
                "question": f"What is {i} + {i}?",
                "answer": f"{i}+{i}=<<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i}",
            }
        )
        for i in range(1 + offset, rows + 1 + offset)
    ]
    (directory / "train.jsonl").write_text("\n".join(lines) + "\n")


def recipe(registry: Any, tmp_path: Path, *overrides: str) -> Any:
    from sftkit.recipe.load import load_recipe_text

    text = f"""
model: {{name_or_path: "{tmp_path / "model"}"}}
strategy: {{name: full-sft}}
optimizer: {{name: adamw}}
data:
  format: {{name: gsm8k, options: {{source: "{tmp_path / "gsm"}", dev_size: 2}}}}
  template: {{name: chat}}
  prepared_dir: "{tmp_path / "prepared"}"
output_dir: "{tmp_path / "run"}"
"""
    return load_recipe_text(text, list(overrides), registry=registry)


class Counter:
    """Counts the batches `sftkit.data.tokenized` tokenizes (0 after a cache hit)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import sftkit.data.tokenized as tokenized

        self.batches = 0
        real = tokenized._encode_batch

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.batches += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(tokenized, "_encode_batch", counting)


def train_rows(resolved: Any) -> list[Any]:
    from sftkit.training.stages.data import prepare

    train = prepare(resolved, lambda *a, **k: None).train
    return [[r["input_ids"], r["completion_mask"]] for r in train]


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    shutil.copytree(ASSET, tmp_path / "model")
    write_gsm(tmp_path / "gsm")
    return tmp_path


def test_second_run_reuses_the_cache(registry, setup, monkeypatch):
    counter = Counter(monkeypatch)
    first = train_rows(recipe(registry, setup))
    assert counter.batches == 1
    builds = list((setup / "prepared" / "tokenized").glob("train-*"))
    assert len(builds) == 1 and (builds[0] / "inputs.json").is_file()
    again = train_rows(recipe(registry, setup, "optimizer.options.lr=0.1"))  # not an input
    assert counter.batches == 1, "the second run tokenized again"
    assert again == first


def _change_tokenizer(root: Path) -> None:
    config = json.loads((root / "model" / "tokenizer_config.json").read_text())
    (root / "model" / "chat_template.jinja").write_text(
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% if m['role'] == "
        "'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    (root / "model" / "tokenizer_config.json").write_text(json.dumps(config))


CHANGES: dict[str, Any] = {
    "source": lambda root: write_gsm(root / "gsm", offset=1),
    "format options": ("data.format.options.keep_calculator_annotations=true",),
    "template": ("data.template.options.instruction=Think.",),
    "tokenizer": _change_tokenizer,
    "max length": ("training.max_seq_length=256",),
    "completion-only": ("data.completion_only_loss=false",),
    "reasoning": ("data.reasoning=mask",),
    "sftkit version": "version",
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_each_input_rebuilds_the_cache(registry, setup, monkeypatch, change):
    counter = Counter(monkeypatch)
    train_rows(recipe(registry, setup))
    assert counter.batches == 1
    how = CHANGES[change]
    overrides: tuple[str, ...] = ()
    if isinstance(how, tuple):
        overrides = how
    elif how == "version":
        import sftkit.data.tokenized as tokenized

        monkeypatch.setattr(tokenized, "__version__", tokenized.__version__ + ".post1")
    else:
        how(setup)
    if change in ("source", "format options"):  # sftkit refuses stale splits: redo them
        from sftkit.data.prepare import prepare_data

        prepare_data(recipe(registry, setup, *overrides), force=True)
    train_rows(recipe(registry, setup, *overrides))
    assert counter.batches == 2, f"changing the {change} did not rebuild the tokenized split"
    builds = list((setup / "prepared" / "tokenized").glob("train-*"))
    assert len(builds) == 2
    train_rows(recipe(registry, setup, *overrides))  # and the new build is reused in turn
    assert counter.batches == 2


def test_prepare_data_command_builds_it_ahead(setup, monkeypatch, capsys):
    from sftkit.cli import run_cli

    path = setup / "recipe.yaml"
    path.write_text(
        f"""
model: {{name_or_path: "{setup / "model"}"}}
strategy: {{name: full-sft}}
optimizer: {{name: adamw}}
data:
  format: {{name: gsm8k, options: {{source: "{setup / "gsm"}", dev_size: 2}}}}
  prepared_dir: "{setup / "prepared"}"
output_dir: "{setup / "run"}"
"""
    )
    assert run_cli(["prepare-data", str(path)]) == 0
    assert "tokenized: train" in capsys.readouterr().out
    counter = Counter(monkeypatch)
    from sftkit.recipe.load import load_recipe
    from sftkit.testing import fresh_registry

    train_rows(load_recipe(str(path), (), registry=fresh_registry()))
    assert counter.batches == 0, "the run tokenized what prepare-data had built"


def test_worker_processes_give_the_same_split(registry, setup, monkeypatch):
    import sftkit.data.tokenized as tokenized

    one = train_rows(recipe(registry, setup, "data.num_proc=1"))
    shutil.rmtree(setup / "prepared" / "tokenized")
    monkeypatch.setattr(tokenized, "ROWS_PER_WORKER", 1)  # 10 rows: two workers
    assert tokenized.workers(10, 2) == 2
    two = train_rows(recipe(registry, setup, "data.num_proc=2"))
    assert two == one
