"""Tool calls and reasoning traces in chat data: the template renders tool definitions, calls
and results (`data.template.options.chat_template` overriding the tokenizer's), tool results
are masked and the assistant's calls trained; think blocks (a message's reasoning_content or
``<think>`` in its content) are trained, masked or dropped per ``data.reasoning``, empty ones
masked by default; `sftkit preview` shows it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sftkit.data.readers import RawRow, RowError
from sftkit.data.tokenize import IGNORE_INDEX, Reasoning, encode_example

ASSET = Path(__file__).resolve().parent.parent / "sftkit" / "assets" / "models" / "tiny-llama"

TOOL_TEMPLATE = (
    "{% if tools %}<|system|>tools: {% for t in tools %}{{ t['function']['name'] }} "
    "{% endfor %}\n{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>"
    "{% if m.get('tool_calls') %}{% for c in m['tool_calls'] %}<call>{{ c['function']['name'] }}"
    "{{ c['function']['arguments'] | tojson }}</call>{% endfor %}"
    "{% else %}{{ m['content'] }}{% endif %}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
TOOL_ROW = {
    "tools": json.dumps(TOOLS),  # as many datasets ship it: a JSON string
    "messages": [
        {"role": "user", "content": "2+2?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 2}'}}
            ],
        },
        {"role": "tool", "name": "add", "tool_call_id": "0", "content": "RESULT4"},
        {"role": "assistant", "content": "4"},
    ],
}
THINK_ROW = {
    "messages": [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "reasoning_content": "one and one", "content": "2"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>two and two</think>\n\n4"},
    ]
}
EMPTY_THINK_ROW = {
    "messages": [
        {"role": "user", "content": "3+3?"},
        {"role": "assistant", "content": "<think>\n\n</think>\n\n6"},
    ]
}


@pytest.fixture(scope="module")
def tokenizer():
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ASSET))


def convert(row: dict[str, Any]) -> Any:
    from sftkit.builtin.formats import ChatOptions
    from sftkit.data.formats import ChatFormat

    return ChatFormat(ChatOptions(train_file="x.jsonl")).convert(RawRow("x.jsonl:1", 0, row))


def chat(**options: Any) -> Any:
    from sftkit.builtin.templates import ChatTemplateOptions
    from sftkit.data.templates import ChatTemplate

    return ChatTemplate(ChatTemplateOptions(instruction=None, **options))


def spans(encoded: Any, tokenizer: Any, *, trained: bool) -> list[str]:
    out, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels, strict=True):
        if (label != IGNORE_INDEX) == trained:
            current.append(token)
        elif current:
            out.append(tokenizer.decode(current))
            current = []
    if current:
        out.append(tokenizer.decode(current))
    return out


def test_tool_calls_are_rendered_and_masked_by_role(tokenizer):
    example = convert(TOOL_ROW)
    assert example.tools == TOOLS
    call = example.prompt[1]["tool_calls"][0]["function"]
    assert call["arguments"] == {"a": 2, "b": 2}  # parsed, as templates expect
    encoded = encode_example(chat(chat_template=TOOL_TEMPLATE), example, tokenizer)
    text = tokenizer.decode(encoded.input_ids)
    assert "tools: add" in text and "RESULT4" in text
    assert spans(encoded, tokenizer, trained=True) == [
        '<call>add{"a": 2, "b": 2}</call></s>',
        "4</s>",
    ]
    masked = "".join(spans(encoded, tokenizer, trained=False))
    assert "RESULT4" in masked and "tools: add" in masked  # tool results and definitions: context


def test_a_conversation_ending_in_a_tool_call_is_a_row_error():
    row = {"messages": TOOL_ROW["messages"][:2]}
    with pytest.raises(RowError, match="calls tools"):
        convert(row)


def test_the_chat_template_override_reads_a_file(tokenizer, tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text(TOOL_TEMPLATE)
    inline, from_file = chat(chat_template=TOOL_TEMPLATE), chat(chat_template=str(path))
    example = convert(TOOL_ROW)
    assert encode_example(inline, example, tokenizer) == encode_example(
        from_file, example, tokenizer
    )
    assert inline.cache_identity() == from_file.cache_identity()
    path.write_text(TOOL_TEMPLATE.replace("tools:", "functions:"))
    assert chat(chat_template=str(path)).cache_identity() != inline.cache_identity()


@pytest.mark.parametrize(
    ("mode", "trained", "absent"),
    [
        (
            "train",
            ["<think>\none and one\n</think>\n\n2</s>", "<think>two and two</think>\n\n4</s>"],
            [],
        ),
        ("mask", ["2</s>", "4</s>"], []),
        ("drop", ["2</s>", "4</s>"], ["one and one", "two and two"]),
    ],
)
def test_reasoning_modes(tokenizer, mode, trained, absent):
    example = convert(THINK_ROW)  # reasoning_content in turn 1, <think> in the content of turn 2
    encoded = encode_example(chat(), example, tokenizer, reasoning=Reasoning(mode))
    assert spans(encoded, tokenizer, trained=True) == trained
    text = tokenizer.decode(encoded.input_ids)
    for gone in absent:
        assert gone not in text
    if mode == "mask":  # still there, as context
        masked = "".join(spans(encoded, tokenizer, trained=False))
        assert "one and one" in masked and "two and two" in masked


def test_empty_think_blocks_are_masked_unless_asked(tokenizer):
    example = convert(EMPTY_THINK_ROW)
    default = encode_example(chat(), example, tokenizer)
    assert spans(default, tokenizer, trained=True) == ["6</s>"]
    kept = encode_example(
        chat(), example, tokenizer, reasoning=Reasoning("train", mask_empty=False)
    )
    assert spans(kept, tokenizer, trained=True) == ["<think>\n\n</think>\n\n6</s>"]


def test_preview_shows_tools_and_reasoning(tmp_path, capsys):
    from sftkit.cli import run_cli

    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in (TOOL_ROW, THINK_ROW, EMPTY_THINK_ROW)))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        json.dumps(
            {
                "model": {"name_or_path": "builtin:tiny-llama"},
                "strategy": {"name": "full-sft"},
                "optimizer": {"name": "adamw"},
                "data": {
                    "format": {"name": "chat", "options": {"train_file": str(data), "dev_size": 0}},
                    "template": {"name": "chat", "options": {"chat_template": TOOL_TEMPLATE}},
                    "reasoning": "mask",
                },
                "output_dir": str(tmp_path / "run"),
            }
        )
    )
    assert run_cli(["preview", str(recipe), "-n", "3"]) == 0
    shown = capsys.readouterr().out
    shown = shown.replace("\u23ce\n", "\n").replace("\n", "")  # rich wraps long lines
    assert "reasoning mask" in shown
    assert '⟦<call>add{"a": 2, "b": 2}</call></s>⟧' in shown  # the call trained
    assert "⟦4</s>⟧" in shown and "two and two" in shown  # the reasoning shown, masked
    assert not (tmp_path / "run").exists()  # preview writes nothing
