"""Built-in evaluators: GSM8K exact match, and held-out loss/perplexity."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sftkit.hookspecs import Register, hookimpl
from sftkit.specs import EvaluatorSpec, Options


class EvalOptions(Options):
    split: Literal["dev", "test"] = "test"
    limit: int | None = Field(default=None, ge=1, description="Evaluate the first N rows only.")
    batch_size: int = Field(default=8, ge=1)


class Gsm8kEvalOptions(EvalOptions):
    max_new_tokens: int = Field(default=512, ge=1, description="Generation budget per problem.")
    stop_at_answer: bool = Field(
        default=True,
        description="Stop a sequence once its first '#### N' line is complete (it alone is scored).",
    )
    confidence: float = Field(default=0.95, gt=0, lt=1, description="Confidence of the Wilson CI.")


class EvalLossOptions(EvalOptions):
    max_length: int | None = Field(
        default=None, ge=8, description="Truncate sequences; default: training.max_seq_length."
    )


EVALUATORS = (
    EvaluatorSpec(
        name="gsm8k",
        summary="Greedy generation, '#### N' answer extraction, exact-match accuracy with a 95% CI.",
        factory="sftkit.evaluation.gsm8k:Gsm8kEvaluator",
        options_model=Gsm8kEvalOptions,
    ),
    EvaluatorSpec(
        name="eval-loss",
        summary="Mean completion-token loss and perplexity on a held-out split.",
        factory="sftkit.evaluation.loss:EvalLossEvaluator",
        options_model=EvalLossOptions,
    ),
)


@hookimpl(trylast=True)
def register_evaluators(register: Register) -> None:
    for spec in EVALUATORS:
        register(spec)
