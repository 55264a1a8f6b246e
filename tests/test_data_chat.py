"""Multi-turn conversations: every trained assistant turn is labelled (templates' segments,
tokenization), `sftkit preview` shows each trained span and writes nothing, TRL builds
exactly sftkit's labels from the completion mask with either completion_only_loss, and a
mixture of chat, ShareGPT, Alpaca and a `datasets` directory trains on CPU."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from sftkit.cli import run_cli
from sftkit.data.example import Example
from sftkit.data.templates import ChatTemplate, TutorTemplate
from sftkit.data.tokenize import IGNORE_INDEX, encode_example, segments_of
from sftkit.errors import DataError

ASSET = Path(__file__).resolve().parent.parent / "sftkit" / "assets" / "models" / "tiny-llama"

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "1+1?"},
    {"role": "assistant", "content": "2"},
    {"role": "user", "content": "and 2+2?"},
    {"role": "tool", "content": "calc: 4"},
    {"role": "assistant", "content": "4"},
]


@pytest.fixture(scope="module")
def tokenizer():
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ASSET))


def chat_options(**values: Any) -> Any:
    from sftkit.builtin.templates import ChatTemplateOptions, TutorOptions

    return ChatTemplateOptions(**values), TutorOptions(instruction="")


def two_turns() -> Example:
    history = [dict(m) for m in CONVERSATION[:-1]]
    history[2]["train"] = True
    return Example("train-00000", history, "4", "4")


def trained_texts(encoded, tokenizer) -> list[str]:
    spans, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels, strict=True):
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    if current:
        spans.append(tokenizer.decode(current))
    return spans


@pytest.mark.parametrize("template", ["chat", "tutor"])
def test_both_assistant_turns_are_labelled(template, tokenizer):
    chat, tutor = chat_options(instruction=None)
    t = ChatTemplate(chat) if template == "chat" else TutorTemplate(tutor)
    example = two_turns()
    encoded = encode_example(t, example, tokenizer, completion_only_loss=True)
    spans = trained_texts(encoded, tokenizer)
    if template == "chat":
        assert spans == ["2</s>", "4</s>"]  # content and end of turn, up to EOS
    else:
        assert spans == ["2", "4</s>"]
    # the pieces are the prompt and completion the rest of sftkit uses
    joined = "".join(text for text, _ in segments_of(t, example, tokenizer))
    assert joined == t.prompt_text(example, tokenizer) + t.completion_text(example, tokenizer)
    assert encoded.prompt_length < encoded.input_ids.index(tokenizer.eos_token_id)
    full = encode_example(t, example, tokenizer, completion_only_loss=False)
    assert full.labels == full.input_ids and full.trained_mask == encoded.trained_mask


def test_single_turn_tokenizes_as_before(tokenizer):
    """Prompt then completion, each encoded alone: the ids of earlier sftkit."""
    from sftkit.data.tokenize import encode_text, join

    _, tutor = chat_options()
    t = TutorTemplate(tutor)
    example = Example("train-00001", "Ann has 3 pens?", "3\n#### 3", "3")
    expected = join(
        encode_text(t.prompt_text(example, tokenizer), tokenizer),
        encode_text(t.completion_text(example, tokenizer), tokenizer),
        completion_only_loss=True,
    )
    assert encode_example(t, example, tokenizer) == expected


def test_a_template_that_rewrites_the_history_is_refused(tokenizer):
    """Qwen3-style templates drop earlier reasoning once a later turn follows: the turns of
    the history cannot then be trained in one sequence, and sftkit says so."""
    chat, _ = chat_options(instruction=None)

    class Rewriting:
        eos_token = "</s>"
        bos_token = "<s>"
        name_or_path = "rewriting"
        chat_template = "yes"

        def apply_chat_template(self, messages, *, tokenize, add_generation_prompt):
            shown = [m["content"] if m is messages[-1] else m["content"][:1] for m in messages]
            return "|".join(shown) + ("|A:" if add_generation_prompt else "</s>")

    with pytest.raises(DataError, match="renders earlier turns differently"):
        ChatTemplate(chat).segments(two_turns(), Rewriting())


def write_chat(path: Path, rows: int = 4) -> Path:
    path.write_text("".join(json.dumps({"messages": CONVERSATION}) + "\n" for _ in range(rows)))
    return path


def recipe_file(tmp_path: Path, data: str, *, output_dir: str, extra: str = "") -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"""
model: {{name_or_path: "builtin:tiny-llama", dtype: float32, random_init: true}}
strategy: {{name: full-sft}}
optimizer: {{name: adamw, options: {{lr: 0.003}}}}
data:
{data}
  template: {{name: chat, options: {{instruction: null}}}}
training:
  micro_batch_size: 4
  max_steps: 1
  max_seq_length: 128
  gradient_checkpointing: false
  precision: fp32
  logging_steps: 1
  report_to: [none]
  {extra}
hardware: {{gpu: cpu}}
output_dir: {output_dir}
"""
    )
    return path


def test_preview_shows_every_trained_span_and_writes_nothing(tmp_path, monkeypatch, capsys):
    pytest.importorskip("transformers")
    data_file = write_chat(tmp_path / "chat.jsonl")
    work = tmp_path / "work"
    work.mkdir()
    path = recipe_file(
        tmp_path,
        f"  format: {{name: chat, options: {{train_file: '{data_file}', dev_size: 0}}}}",
        output_dir="runs/chat",
    )
    monkeypatch.chdir(work)
    assert run_cli(["preview", str(path), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 spans" in out
    # trained spans are marked ⟦ ⟧ when the output is not a terminal
    assert "<|assistant|>\u27e62</s>\u27e7" in out and "<|assistant|>\u27e64</s>\u27e7" in out
    assert os.listdir(work) == []


@pytest.mark.slow
@pytest.mark.parametrize("completion_only", [True, False])
def test_trl_builds_sftkits_labels(completion_only, tmp_path):
    """The trainer's first batch holds exactly the labels sftkit computes (preview, eval-loss)
    for the recipe's completion_only_loss: TRL applies it to the completion mask."""
    pytest.importorskip("trl")
    from transformers import TrainerCallback

    from sftkit.data.prepare import read_examples
    from sftkit.recipe.load import load_recipe
    from sftkit.registry import default_registry
    from sftkit.training.runner import run_recipe

    data_file = write_chat(tmp_path / "chat.jsonl")
    path = recipe_file(
        tmp_path,
        f"  format: {{name: chat, options: {{train_file: '{data_file}', dev_size: 0}}}}\n"
        f"  completion_only_loss: {str(completion_only).lower()}",
        output_dir=str(tmp_path / "run"),
    )
    seen: list[Any] = []

    class FirstBatch(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            seen.append(next(iter(train_dataloader))["labels"])

    resolved = load_recipe(str(path), registry=default_registry(autoload=False))
    result = run_recipe(resolved, callbacks=[FirstBatch()])
    tokenizer = result.context.tokenizer
    template = ChatTemplate(resolved.template.options)
    expected = sorted(
        tuple(encode_example(template, e, tokenizer, completion_only_loss=completion_only).labels)
        for e in read_examples(result.run_dir / "data" / "train.jsonl")
    )
    got = sorted(tuple(row[row != IGNORE_INDEX].tolist()) for row in seen[0])
    assert got == sorted(tuple(x for x in row if x != IGNORE_INDEX) for row in expected)
    if completion_only:
        assert all(sum(x != IGNORE_INDEX for x in row) == 4 for row in expected)  # 2 + 2 tokens


@pytest.mark.slow
def test_a_mixture_of_chat_sharegpt_alpaca_and_a_datasets_directory_trains(tmp_path):
    datasets = pytest.importorskip("datasets")
    pytest.importorskip("trl")
    chat = write_chat(tmp_path / "chat.jsonl", rows=3)
    sharegpt = tmp_path / "sg.jsonl"
    sharegpt.write_text(
        "".join(
            json.dumps(
                {
                    "conversations": [
                        {"from": "human", "value": f"say {i}"},
                        {"from": "gpt", "value": f"{i}"},
                        {"from": "human", "value": "again"},
                        {"from": "gpt", "value": f"{i}{i}"},
                    ]
                }
            )
            + "\n"
            for i in range(3)
        )
    )
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(
        json.dumps(
            [{"instruction": "Add one.", "input": f"{i}", "output": f"{i + 1}"} for i in range(3)]
        )
    )
    hub = tmp_path / "hub"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(
                [{"prompt": f"{i}*2?", "completion": f"#### {2 * i}"} for i in range(4)]
            ),
            "test": datasets.Dataset.from_list([{"prompt": "9*2?", "completion": "#### 18"}]),
        }
    ).save_to_disk(str(hub))
    data = f"""  mixture:
    seed: 3
    dev_size: 1
    datasets:
      - {{format: {{name: chat, options: {{train_file: '{chat}'}}}}, weight: 1}}
      - {{format: {{name: sharegpt, options: {{train_file: '{sharegpt}'}}}}, weight: 1}}
      - {{format: {{name: alpaca, options: {{train_file: '{alpaca}'}}}}, weight: 1}}
      - {{format: {{name: prompt-completion, options: {{source: '{hub}'}}}}, weight: 1}}"""
    path = recipe_file(tmp_path, data, output_dir=str(tmp_path / "run"))
    path.write_text(path.read_text().replace("max_steps: 1", "max_steps: 2"))
    assert run_cli(["run", str(path)]) == 0
    manifest = json.loads((tmp_path / "run" / "data" / "manifest.json").read_text())
    assert [m["taken"] for m in manifest["mixture"]] == [3, 3, 3, 3]
    assert manifest["counts"] == {"train": 11, "dev": 1, "test": 1}
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "completed" and run["steps"] == 2
    recipe = (tmp_path / "run" / "recipe.yaml").read_text()
    assert "mixture:" in recipe and "\n  format:" not in recipe
