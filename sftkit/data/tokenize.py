"""Turning examples into token ids and labels: the one place masking is decided.

Prompt and completion are encoded separately (``add_special_tokens=False``: the template
text carries BOS and chat markers) and concatenated, so the model trains on exactly the ids
it will see at inference, where the prompt is encoded alone and the answer is generated.
With completion-only loss, every prompt position is labelled -100 (ignored by the loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sftkit.data.example import Example

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    prompt_length: int

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def encode_text(text: str, tokenizer: Any) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [int(i) for i in ids]


def encode_prompt(template: Any, example: Example, tokenizer: Any) -> list[int]:
    """The ids a model is given at generation time (evaluation uses this)."""
    return encode_text(template.prompt_text(example, tokenizer), tokenizer)


def encode_example(
    template: Any, example: Example, tokenizer: Any, *, completion_only_loss: bool = True
) -> Encoded:
    prompt_ids = encode_prompt(template, example, tokenizer)
    completion_ids = encode_text(template.completion_text(example, tokenizer), tokenizer)
    return join(prompt_ids, completion_ids, completion_only_loss=completion_only_loss)


def join(
    prompt_ids: Sequence[int], completion_ids: Sequence[int], *, completion_only_loss: bool
) -> Encoded:
    input_ids = [*prompt_ids, *completion_ids]
    masked = [IGNORE_INDEX] * len(prompt_ids) if completion_only_loss else list(prompt_ids)
    return Encoded(input_ids, [*masked, *completion_ids], len(prompt_ids))


def encode_all(
    template: Any,
    examples: Sequence[Example],
    tokenizer: Any,
    *,
    completion_only_loss: bool = True,
) -> list[Encoded]:
    return [
        encode_example(template, ex, tokenizer, completion_only_loss=completion_only_loss)
        for ex in examples
    ]
