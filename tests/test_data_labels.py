"""The tokens and labels every format and template trains on, pinned: the data stage's train
set (input_ids and completion_mask, from which TRL builds the labels) for each built-in
format under each built-in template equals what sftkit produced before the data pipeline
moved to `datasets` (tests/data/labels_golden.json, written by the code of that time,
commit 45b5b95: ``git archive 45b5b95 sftkit | tar -x -C OLD`` then
``PYTHONPATH=OLD python tests/test_data_labels.py --write`` from outside the repository).
A change to what training sees fails here."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

GOLDEN = Path(__file__).resolve().parent / "data" / "labels_golden.json"

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then half as many in May?",
    "Weng earns $12 an hour for babysitting. She did 50 minutes. How much did she earn?",
    "Betty needs $100 for a wallet; she has half. How much more does she need?",
    "James writes a 3-page letter to 2 friends twice a week. Pages a year?",
    "Mark has a garden with 10 yellow flowers and 80% more purple. How many in all?",
]


def _answer(i: int) -> str:
    return f"Step one: {i} + {i} = <<{i}+{i}={2 * i}>>{2 * i}.\nThen double.\n#### {4 * i}"


def rows(fmt: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, q in enumerate(QUESTIONS, start=1):
        a = _answer(i)
        if fmt == "gsm8k":
            out.append({"question": q, "answer": a})
        elif fmt == "prompt-completion":
            out.append({"prompt": q, "completion": a})
        elif fmt == "alpaca":
            row: dict[str, Any] = {
                "instruction": q,
                "input": "show work" if i % 2 else "",
                "output": a,
            }
            if i == 3:
                row["system"] = "You are a tutor."
            out.append(row)
        elif fmt == "chat":
            messages = [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": q},
                {"role": "assistant", "content": f"{2 * i}"},
                {"role": "user", "content": "And doubled?"},
                {"role": "assistant", "content": a},
            ]
            if i == 2:
                messages[2]["train"] = False
            out.append({"messages": messages})
        elif fmt == "sharegpt":
            out.append(
                {
                    "system": "Be brief." if i % 2 else "",
                    "conversations": [
                        {"from": "human", "value": q},
                        {"from": "gpt", "value": f"{i}"},
                        {"from": "human", "value": "Go on."},
                        {"from": "gpt", "value": a},
                    ],
                }
            )
    return out


FORMATS = ("gsm8k", "prompt-completion", "alpaca", "chat", "sharegpt")
TEMPLATES: dict[str, dict[str, Any]] = {
    "tutor": {"name": "tutor"},
    "tutor-plain": {"name": "tutor", "options": {"instruction": ""}},
    "chat": {"name": "chat"},
    "chat-system-short": {
        "name": "chat",
        "options": {"system": "Answer.", "instruction": None, "keep_reasoning": False},
    },
}
# An R1-style chat template (its generation prompt opens <think>), on the same tokenizer.
R1_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}<|User|>{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}<|Assistant|>{{ message['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|Assistant|><think>\n{% endif %}"
)
R1 = {"chat-r1"}
TEMPLATES["chat-r1"] = {"name": "chat"}
# (an R1 template renders a past turn otherwise once a later one follows: single-turn only)
CASES = [
    (f, t, c)
    for f in FORMATS
    for t in TEMPLATES
    for c in (True, False)
    if t not in R1 or f in ("gsm8k", "prompt-completion", "alpaca")
]


def recipe_text(directory: Path, fmt: str, template: str, completion_only: bool) -> str:
    source = directory / "src" / "train.jsonl"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("".join(json.dumps(r) + "\n" for r in rows(fmt)), encoding="utf-8")
    model: dict[str, Any] = {"name_or_path": "builtin:tiny-llama"}
    if template in R1:
        import shutil

        from sftkit.modeling import resolve_model_path

        tokenizer = directory / "r1-tokenizer"
        shutil.copytree(resolve_model_path("builtin:tiny-llama"), tokenizer)
        (tokenizer / "chat_template.jinja").write_text(R1_TEMPLATE)
        model["tokenizer"] = str(tokenizer)
    data = {
        "format": {"name": fmt, "options": {"train_file": str(source), "dev_size": 1}},
        "template": TEMPLATES[template],
        "completion_only_loss": completion_only,
    }
    return json.dumps(
        {
            "model": model,
            "strategy": {"name": "full-sft"},
            "optimizer": {"name": "adamw"},
            "data": data,
            "training": {"max_seq_length": 512},
            "output_dir": str(directory / "run"),
        }
    )


def train_set(registry: Any, directory: Path, case: tuple[str, str, bool]) -> list[Any]:
    """The train set the run's data stage hands the trainer, as plain lists."""
    from sftkit.recipe.load import load_recipe_text
    from sftkit.training.stages.data import prepare

    resolved = load_recipe_text(recipe_text(directory, *case), registry=registry)
    from sftkit.data.tokenize import from_mask

    train = prepare(resolved, lambda *a, **k: None).train
    only = resolved.recipe.data.completion_only_loss
    return [
        [
            r["input_ids"],
            r["completion_mask"],
            from_mask(r["input_ids"], r["completion_mask"], completion_only_loss=only).labels,
        ]
        for r in train
    ]


def digest(table: list[Any]) -> str:
    return hashlib.sha256(json.dumps(table).encode()).hexdigest()


def case_id(case: tuple[str, str, bool]) -> str:
    return f"{case[0]}/{case[1]}/{'completion-only' if case[2] else 'all-tokens'}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_labels_equal_the_golden_ones(registry, tmp_path, case):
    pytest.importorskip("datasets")
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    table = train_set(registry, tmp_path, case)
    assert len(table) == len(QUESTIONS) - 1
    assert digest(table) == golden[case_id(case)], case_id(case)


if __name__ == "__main__" and "--write" in sys.argv:  # regenerate from the current code
    import tempfile

    from sftkit.testing import fresh_registry

    reg = fresh_registry()
    out = {}
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            out[case_id(case)] = digest(train_set(reg, Path(tmp), case))
    GOLDEN.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(out)} cases to {GOLDEN}")
