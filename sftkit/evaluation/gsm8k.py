"""The ``gsm8k`` evaluator: greedy generation, answer extraction, exact-match accuracy."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sftkit.builtin.evaluators import ANSWER_TOKENS, THINKING_TOKENS
from sftkit.errors import DataError
from sftkit.evaluation.base import EvalResult, EvalTask, question_text
from sftkit.evaluation.extract import (
    extract_answer,
    gold_answer,
    prompt_opens_think,
    strip_reasoning,
    unclosed_think,
)
from sftkit.evaluation.generate import Generation, encode_prompts, greedy_generate
from sftkit.evaluation.harness import extract, matches
from sftkit.evaluation.stats import accuracy


class Gsm8kEvaluator:
    """Exact match of the extracted final number against the reference answer.

    Options (`sftkit.builtin.evaluators.Gsm8kEvalOptions`): split, limit, batch_size,
    max_new_tokens, static_cache, stop_at_answer, confidence.

    Reasoning-aware: with a template whose prompt opens ``<think>`` (R1 distills), or an
    output that opens one, only the text after ``</think>`` is scored (by sftkit's rule and
    by the harness's two); an output that never closes its reasoning has no answer and is
    counted as ``unclosed_think``. The default budget leaves room to think.
    """

    name = "gsm8k"

    def __init__(self, options: Any) -> None:
        self.options = options

    def evaluate(self, task: EvalTask) -> EvalResult:
        if not task.examples:
            raise DataError(f"the {task.split} split has no examples to evaluate.")
        started = time.perf_counter()
        golds = [_gold(example) for example in task.examples]
        prompts = [task.template.prompt_text(e, task.tokenizer) for e in task.examples]
        self._check_prompt_lengths(prompts, task.tokenizer)
        # R1-distill chat templates open <think> in the prompt; the output starts inside it.
        in_think = bool(prompts) and all(prompt_opens_think(p) for p in prompts)
        budget = self.options.max_new_tokens or (THINKING_TOKENS if in_think else ANSWER_TOKENS)
        batch_size = self.options.batch_size or task.batch_size
        found: list[Any] = [None] * len(prompts)
        correct = 0
        done = 0

        def score_batch(indices: Sequence[int], batch: Sequence[Generation]) -> None:
            # Scored batch by batch, so the progress display shows the accuracy so far.
            nonlocal correct, done
            for index, generation in zip(indices, batch, strict=True):
                found[index] = extract_answer(generation.text, starts_in_think=in_think)
                correct += found[index].answer is not None and found[index].answer == golds[index]
            done += len(indices)
            if task.progress is not None:
                task.progress(done, len(prompts), accuracy=correct / done)

        generations = greedy_generate(
            task.model,
            task.tokenizer,
            prompts,
            max_new_tokens=budget,
            batch_size=batch_size,
            stop_at_answer=self.options.stop_at_answer,
            starts_in_think=in_think,
            static_cache=self.options.static_cache,
            on_batch=score_batch,
        )
        predictions: list[dict[str, Any]] = []
        harness = {"strict": 0, "flexible": 0}  # lm-evaluation-harness's two scores
        for example, gold, generation, extraction in zip(
            task.examples, golds, generations, found, strict=True
        ):
            if extraction is None:  # a generate() that did not report its batches
                extraction = extract_answer(generation.text, starts_in_think=in_think)
            hit = extraction.answer is not None and extraction.answer == gold
            # the harness compares with the reference as written (GSM8K's '#### N'), not
            # with sftkit's canonical number ("3.50" stays "3.50")
            written = example.reference_answer or example.completion
            # the harness scores what follows the reasoning too (its think_end_token)
            visible = strip_reasoning(generation.text, starts_in_think=in_think)
            scored = {mode: matches(visible, written, mode) for mode in harness}
            for mode, ok in scored.items():
                harness[mode] += ok
            predictions.append(
                {
                    "id": example.id,
                    "question": question_text(example),
                    "gold": gold,
                    "extracted": extraction.answer,
                    "method": extraction.method,
                    "correct": hit,
                    "output": generation.text,
                    "new_tokens": generation.new_tokens,
                    "finished": generation.finished,
                    "unclosed_think": unclosed_think(generation.text, starts_in_think=in_think),
                    "strict_match": extract(visible, "strict"),
                    "flexible_extract": extract(visible, "flexible"),
                    "harness_correct": scored,
                }
            )
        hits = sum(bool(p["correct"]) for p in predictions)
        score = accuracy(hits, len(predictions), self.options.confidence)
        unfinished = sum(not p["finished"] for p in predictions)
        metrics: dict[str, float] = {
            **score.to_dict(),
            "no_answer": sum(p["extracted"] is None for p in predictions),
            "hit_token_limit": unfinished,
            # stopped inside <think>: no answer because it was still reasoning
            "unclosed_think": sum(bool(p["unclosed_think"]) for p in predictions),
            "mean_new_tokens": sum(p["new_tokens"] for p in predictions) / len(predictions),
            # the same outputs scored as lm-evaluation-harness's gsm8k task does
            "strict_match": harness["strict"] / len(predictions),
            "flexible_extract": harness["flexible"] / len(predictions),
        }
        return EvalResult(
            evaluator=self.name,
            split=task.split,
            n=len(predictions),
            metrics=metrics,
            primary="accuracy",
            predictions=predictions,
            # the options as set, and the batch and budget they resolved to
            options={
                **self.options.model_dump(),
                "batch_size_used": batch_size,
                "max_new_tokens_used": budget,
            },
            elapsed_s=time.perf_counter() - started,
        )

    def _check_prompt_lengths(self, prompts: Sequence[str], tokenizer: Any) -> None:
        """The estimate priced prompts up to ``max_prompt_tokens``: a longer one is refused."""
        limit = self.options.max_prompt_tokens
        if limit is None:
            return
        longest = max((len(ids) for ids in encode_prompts(tokenizer, prompts)), default=0)
        if longest > limit:
            raise DataError(
                f"gsm8k: a prompt is {longest} tokens, longer than max_prompt_tokens {limit} "
                "(the evaluation phase was priced for it).",
                hint=f"Set the evaluator's max_prompt_tokens to at least {longest}.",
            )


def _gold(example: Any) -> str:
    reference = example.reference_answer
    answer = gold_answer(reference) if reference else gold_answer(example.completion)
    if answer is None:
        raise DataError(
            f"example {example.id!r} has no numeric reference answer "
            f"(reference_answer={reference!r}); the gsm8k evaluator needs one.",
            hint="Use a dataset format that sets reference_answer, or completions ending '#### N'.",
        )
    return answer
