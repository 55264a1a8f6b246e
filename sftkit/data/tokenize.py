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

Reasoning traces (``<think>...</think>`` in an answer, a message's ``reasoning_content``
written there by the chat formats) follow `Reasoning` (``data.reasoning``): ``train`` trains
them with the answer, ``mask`` keeps them as context with no loss, ``drop`` removes them
from the text; an empty think block (``<think></think>``, what a reasoning template writes
when there is no reasoning) is masked unless ``data.mask_empty_think`` is false. A block
that the prompt opened (an R1-style generation prompt ends with ``<think>``) starts at the
answer's first token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sftkit.data.example import Example

IGNORE_INDEX = -100

Segment = tuple[str, bool]  # (text, trained)
OPEN_THINK, CLOSE_THINK = "<think>", "</think>"
THINK_BLOCK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)


@dataclass(frozen=True)
class Reasoning:
    """What training does with reasoning traces (``data.reasoning``, ``data.mask_empty_think``)."""

    mode: Literal["train", "mask", "drop"] = "train"
    mask_empty: bool = True

    @classmethod
    def of(cls, recipe: Any) -> Reasoning:
        return cls(recipe.data.reasoning, recipe.data.mask_empty_think)


def without_reasoning(example: Example) -> Example:
    """`example` with every think block removed from its assistant turns and its answer."""

    def strip(text: str) -> str:
        return THINK_BLOCK.sub("", text)

    prompt = example.prompt
    if not isinstance(prompt, str):
        prompt = [
            {**m, "content": strip(m["content"])} if m.get("role") == "assistant" else m
            for m in prompt
        ]
    return replace(example, prompt=prompt, completion=strip(example.completion))


def split_reasoning(segments: Sequence[Segment], reasoning: Reasoning) -> list[Segment]:
    """Trained segments with their think blocks (to the whitespace after ``</think>``) cut
    out as untrained ones where `reasoning` masks them."""
    out: list[Segment] = []
    for text, trained in segments:
        if not trained or CLOSE_THINK not in text:
            out.append((text, trained))
            continue
        at = 0
        while (close := text.find(CLOSE_THINK, at)) >= 0:
            opened = text.rfind(OPEN_THINK, at, close)
            start = opened if opened >= 0 else at  # else the prompt opened it
            body = text[start + len(OPEN_THINK) if opened >= 0 else start : close]
            end = close + len(CLOSE_THINK)
            end += len(text[end:]) - len(text[end:].lstrip())
            masked = reasoning.mode == "mask" or (reasoning.mask_empty and not body.strip())
            if masked:
                out += [(text[at:start], True), (text[start:end], False)]
            else:
                out.append((text[at:end], True))
            at = end
        out.append((text[at:], True))
    return out


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


def encode_texts(texts: list[str], tokenizer: Any) -> list[list[int]]:
    """The ids of each text (``add_special_tokens=False``), as `encode_text` gives them. A
    fast tokenizer that neither truncates, pads nor splits special tokens is asked for the
    ids alone (`tokenizers`' ``encode_batch_fast``: no offsets, no per-text conversion)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    fast = getattr(backend, "encode_batch_fast", None)
    if (
        backend is not None
        and fast is not None
        and not getattr(tokenizer, "split_special_tokens", False)
        and backend.truncation is None
        and backend.padding is None
    ):
        return [encoding.ids for encoding in fast(texts, add_special_tokens=False)]
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def encode_prompt(template: Any, example: Example, tokenizer: Any) -> list[int]:
    """The ids a model is given at generation time (evaluation uses this)."""
    return encode_text(template.prompt_text(example, tokenizer), tokenizer)


def segments_of(
    template: Any, example: Example, tokenizer: Any, reasoning: Reasoning = Reasoning()
) -> list[Segment]:
    """The example as (text, trained) segments, neighbours with the same flag merged. A
    template without ``segments`` (a plugin's) trains its completion after its prompt."""
    if reasoning.mode == "drop":
        example = without_reasoning(example)
    method = getattr(template, "segments", None)
    if callable(method):
        raw: Sequence[Segment] = method(example, tokenizer)
    else:
        raw = [
            (template.prompt_text(example, tokenizer), False),
            (template.completion_text(example, tokenizer), True),
        ]
    merged: list[Segment] = []
    for text, trained in split_reasoning(raw, reasoning):
        if not text:
            continue
        if merged and merged[-1][1] == bool(trained):
            merged[-1] = (merged[-1][0] + text, bool(trained))
        else:
            merged.append((text, bool(trained)))
    return merged


def encode_example(
    template: Any,
    example: Example,
    tokenizer: Any,
    *,
    completion_only_loss: bool = True,
    reasoning: Reasoning = Reasoning(),
) -> Encoded:
    ids: list[int] = []
    mask: list[int] = []
    for text, trained in segments_of(template, example, tokenizer, reasoning):
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
    reasoning: Reasoning = Reasoning(),
) -> list[Encoded]:
    """`encode_example` for many examples, with every segment of them encoded in one call
    of the tokenizer (a fast tokenizer encodes a batch in Rust, many times faster than one
    text at a time; the ids are the same)."""
    pieces = [segments_of(template, ex, tokenizer, reasoning) for ex in examples]
    texts = [text for segments in pieces for text, _ in segments]
    ids = encode_texts(texts, tokenizer) if texts else []
    out: list[Encoded] = []
    at = 0
    for segments in pieces:
        row: list[int] = []
        mask: list[int] = []
        for _, trained in segments:
            piece = ids[at]
            at += 1
            row.extend(piece)
            mask.extend([int(trained)] * len(piece))
        out.append(from_mask(row, mask, completion_only_loss=completion_only_loss))
    return out
