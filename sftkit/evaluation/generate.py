"""Batched greedy generation: left padding, KV cache, a new-token budget, stop at EOS.

Prompts are sorted by token length so each batch pads little, generated in batches with
``transformers``' ``generate`` (greedy, ``use_cache=True``), and returned in input order with
only the new text. A sequence stops at EOS or, optionally, once its ``#### N`` answer line is
complete: the first such line is what is scored, so what follows cannot change the result.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from sftkit.evaluation.base import Progress
from sftkit.evaluation.extract import strip_reasoning

_ANSWER_LINE_DONE = re.compile(r"####[^\n]*\d[^\n]*\n")


@dataclass(frozen=True)
class Generation:
    text: str  # new text only, special tokens removed
    new_tokens: int
    finished: bool  # stopped by EOS or the answer rule, not by the token budget


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Prompts encoded exactly as training encodes them (`sftkit.data.tokenize`: the text
    carries BOS)."""
    from sftkit.data.tokenize import encode_text

    return [encode_text(p, tokenizer) for p in prompts]


def left_padded(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask, padded on the left: generation appends on the right, so
    every row's last prompt token must sit in the same (last) column."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def model_device(model: Any) -> torch.device:
    try:
        return next(p.device for p in model.parameters() if p.device.type != "meta")
    except StopIteration:
        return torch.device("cpu")


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS ids of the tokenizer and of the model's generation config (they can differ)."""
    ids: list[int] = []
    sources: list[Any] = [tokenizer.eos_token_id]
    config = getattr(model, "generation_config", None)
    if config is not None:
        sources.append(config.eos_token_id)
    for value in sources:
        for token in value if isinstance(value, list) else [value]:
            if isinstance(token, int) and token not in ids:
                ids.append(token)
    return ids


def greedy_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    stop_at_answer: bool = False,
    starts_in_think: bool = False,
    static_cache: bool = False,
    progress: Progress | None = None,
    on_batch: Callable[[Sequence[int], Sequence[Generation]], None] | None = None,
) -> list[Generation]:
    """Greedy completions of `prompts`, in order. After each batch, `on_batch(indices,
    generations)` gets the batch's positions in `prompts` and its completions (an evaluator
    scores as it goes), then `progress(done, total)` is called.

    Prompts are sorted by token length (longest first, so an out-of-memory shows at once), so
    a batch pads little. `static_cache` asks transformers for a static KV cache, with which
    it compiles the decoding step on a GPU (its own criteria; a CPU decodes uncompiled)."""
    eos = eos_ids(model, tokenizer)
    encoded = encode_prompts(tokenizer, prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    results: list[Generation | None] = [None] * len(prompts)
    device = model_device(model)
    was_training = bool(getattr(model, "training", False))
    model.eval()
    done = 0
    try:
        with torch.inference_mode():
            pad_id = (
                tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or [0])[0]
            )
            config = GenerationConfig(
                do_sample=False,
                num_beams=1,
                max_new_tokens=max_new_tokens,
                eos_token_id=eos or None,
                pad_token_id=pad_id,
                use_cache=True,
                **({"cache_implementation": "static"} if static_cache else {}),
            )
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                ids, mask = left_padded([encoded[i] for i in batch], pad_id)
                prompt_len = ids.shape[1]
                criteria = StoppingCriteriaList()
                if stop_at_answer:
                    criteria.append(AnswerLineStop(tokenizer, prompt_len, starts_in_think))
                output = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    generation_config=config,
                    stopping_criteria=criteria,
                )
                finished = []
                for row, index in enumerate(batch):
                    new = output[row, prompt_len:].tolist()
                    finished.append(_finish(new, tokenizer, eos, pad_id, max_new_tokens))
                    results[index] = finished[-1]
                if on_batch is not None:
                    on_batch(batch, finished)
                done += len(batch)
                if progress is not None:
                    progress(done, len(prompts))
    finally:
        if was_training:
            model.train()
    return [r for r in results if r is not None]


def _finish(
    new: list[int], tokenizer: Any, eos: list[int], pad_id: int | None, max_new_tokens: int
) -> Generation:
    """Cut at the first EOS; strip trailing padding (rows that stopped early are padded)."""
    hit_eos = False
    for position, token in enumerate(new):
        if token in eos:
            new, hit_eos = new[:position], True
            break
    while new and pad_id is not None and new[-1] == pad_id:
        new = new[:-1]
    # Shorter than the budget: the row stopped early (the answer rule, then padding).
    finished = hit_eos or len(new) < max_new_tokens
    text = tokenizer.decode(new, skip_special_tokens=True)
    return Generation(text=text, new_tokens=len(new), finished=finished)


class AnswerLineStop(StoppingCriteria):
    """Per-row stop once a complete ``#### N`` line is visible outside reasoning."""

    def __init__(self, tokenizer: Any, prompt_len: int, starts_in_think: bool) -> None:
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.starts_in_think = starts_in_think

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if input_ids.shape[1] <= self.prompt_len:
            return done
        for row, token in enumerate(input_ids[:, -1].tolist()):
            # Decoding the whole tail every step is quadratic; only a newline can complete
            # an answer line, so look only when the last token has one.
            if "\n" not in self.tokenizer.decode([token]):
                continue
            text = self.tokenizer.decode(
                input_ids[row, self.prompt_len :], skip_special_tokens=True
            )
            visible = strip_reasoning(text, starts_in_think=self.starts_in_think)
            if _ANSWER_LINE_DONE.search(visible):
                done[row] = True
        return done
