"""Turning examples into token ids and labels: the one place masking is decided.

A template gives an example as segments of text, each trained or not (`segments_of`): the
prompt then the answer, or for a multi-turn conversation every trained assistant turn with
the context around it. Each run of segments is encoded on its own
(``add_special_tokens=False``: the template text carries BOS and chat markers) and the ids
concatenated, so the model trains on exactly the ids it will see at inference, where the
prompt is encoded alone and the answer is generated. With completion-only loss, every
position outside a trained segment is labelled -100 (ignored by the loss).

`Encoded.trained_mask` marks the trained positions whatever the loss setting: training
hands it to TRL as ``completion_mask`` with ``SFTConfig(completion_only_loss=...)`` from the
recipe, so TRL builds the same labels as `Encoded.labels` (tests/test_data_chat.py checks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sftkit.data.example import Example

IGNORE_INDEX = -100

Segment = tuple[str, bool]  # (text, trained)


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    prompt_length: int  # tokens before the first trained one
    trained_mask: list[int] = field(default_factory=list)  # 1 in trained segments

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def encode_text(text: str, tokenizer: Any) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [int(i) for i in ids]


def encode_prompt(template: Any, example: Example, tokenizer: Any) -> list[int]:
    """The ids a model is given at generation time (evaluation uses this)."""
    return encode_text(template.prompt_text(example, tokenizer), tokenizer)


def segments_of(template: Any, example: Example, tokenizer: Any) -> list[Segment]:
    """The example as (text, trained) segments, neighbours with the same flag merged. A
    template without ``segments`` (a plugin's) trains its completion after its prompt."""
    method = getattr(template, "segments", None)
    if callable(method):
        raw: Sequence[Segment] = method(example, tokenizer)
    else:
        raw = [
            (template.prompt_text(example, tokenizer), False),
            (template.completion_text(example, tokenizer), True),
        ]
    merged: list[Segment] = []
    for text, trained in raw:
        if not text:
            continue
        if merged and merged[-1][1] == bool(trained):
            merged[-1] = (merged[-1][0] + text, bool(trained))
        else:
            merged.append((text, bool(trained)))
    return merged


def encode_example(
    template: Any, example: Example, tokenizer: Any, *, completion_only_loss: bool = True
) -> Encoded:
    ids: list[int] = []
    mask: list[int] = []
    for text, trained in segments_of(template, example, tokenizer):
        piece = encode_text(text, tokenizer)
        ids.extend(piece)
        mask.extend([int(trained)] * len(piece))
    return from_mask(ids, mask, completion_only_loss=completion_only_loss)


def from_mask(ids: Sequence[int], mask: Sequence[int], *, completion_only_loss: bool) -> Encoded:
    labels = [
        i if (m or not completion_only_loss) else IGNORE_INDEX
        for i, m in zip(ids, mask, strict=True)
    ]
    first = next((at for at, m in enumerate(mask) if m), len(mask))
    return Encoded(list(ids), labels, first, list(mask))


def join(
    prompt_ids: Sequence[int], completion_ids: Sequence[int], *, completion_only_loss: bool
) -> Encoded:
    """A prompt then a trained completion (single-turn)."""
    mask = [0] * len(prompt_ids) + [1] * len(completion_ids)
    return from_mask(
        [*prompt_ids, *completion_ids], mask, completion_only_loss=completion_only_loss
    )


def encode_all(
    template: Any,
    examples: Sequence[Example],
    tokenizer: Any,
    *,
    completion_only_loss: bool = True,
) -> list[Encoded]:
    """`encode_example` for many examples, with every segment of them encoded in one call
    of the tokenizer (a fast tokenizer encodes a batch in Rust, many times faster than one
    text at a time; the ids are the same)."""
    pieces = [segments_of(template, ex, tokenizer) for ex in examples]
    texts = [text for segments in pieces for text, _ in segments]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    out: list[Encoded] = []
    at = 0
    for segments in pieces:
        row: list[int] = []
        mask: list[int] = []
        for _, trained in segments:
            piece = ids[at]
            at += 1
            row.extend(int(i) for i in piece)
            mask.extend([int(trained)] * len(piece))
        out.append(from_mask(row, mask, completion_only_loss=completion_only_loss))
    return out
