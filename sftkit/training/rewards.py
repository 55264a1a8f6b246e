"""The built-in reward functions (``register_rewards``): scores of generated answers for a
reinforcement objective (``grpo``), in TRL's reward signature
``reward(prompts, completions, **columns) -> list[float | None]``.

Both read answers with the GSM8K evaluator's own extraction (`sftkit.evaluation.extract`),
so a reward and the test accuracy agree on what an answer is.
"""

from __future__ import annotations

from typing import Any

from sftkit.evaluation.extract import (
    THINK_CLOSE,
    THINK_OPEN,
    extract_answer,
    gold_answer,
    prompt_opens_think,
    unclosed_think,
)


def gsm8k_correct(
    prompts: list[Any], completions: list[Any], reference_answer: list[str | None], **_: Any
) -> list[float | None]:
    """1.0 where the completion's final answer equals the example's reference answer (as the
    ``gsm8k`` evaluator scores it), 0.0 where not; None for an example without one."""
    scores: list[float | None] = []
    for prompt, completion, reference in zip(prompts, completions, reference_answer, strict=True):
        gold = gold_answer(reference) if reference is not None else None
        if gold is None:
            scores.append(None)
            continue
        found = extract_answer(_text(completion), starts_in_think=_opens_think(prompt))
        scores.append(float(found.answer == gold))
    return scores


def answer_format(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
    """1.0 where the completion ends its answer with GSM8K's ``#### N`` line and, for an
    R1-style model (one that thinks in ``<think>``, or whose prompt opens the block), has
    closed its reasoning with ``</think>``; 0.0 otherwise."""
    scores = []
    for prompt, completion in zip(prompts, completions, strict=True):
        text, in_think = _text(completion), _opens_think(prompt)
        reasoning = in_think or THINK_OPEN in text
        closed = not reasoning or (
            THINK_CLOSE in text and not unclosed_think(text, starts_in_think=in_think)
        )
        found = extract_answer(text, starts_in_think=in_think)
        scores.append(float(closed and found.method == "####"))
    return scores


def _text(message: Any) -> str:
    """A completion as text: TRL gives conversational ones as a list of messages."""
    if isinstance(message, str):
        return message
    return "".join(str(turn.get("content") or "") for turn in message)


def _opens_think(prompt: Any) -> bool:
    return isinstance(prompt, str) and prompt_opens_think(prompt)
