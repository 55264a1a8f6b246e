"""Built-in evaluators: GSM8K exact match, and held-out loss/perplexity."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from sftkit.hookspecs import Register, hookimpl
from sftkit.specs import EvaluatorSpec, Options

# The gsm8k evaluator's default generation budgets: an answer, or reasoning then an answer
# (R1-distill models think for several hundred to a few thousand tokens on GSM8K).
ANSWER_TOKENS = 512
THINKING_TOKENS = 4096


class EvalOptions(Options):
    split: Literal["dev", "test"] = "test"
    limit: int | None = Field(default=None, ge=1, description="Evaluate the first N rows only.")
    batch_size: int = Field(default=8, ge=1)


class Gsm8kEvalOptions(EvalOptions):
    # unset (None) means "let the estimator choose", which only gsm8k can do
    batch_size: int | None = Field(  # type: ignore[assignment]
        default=None,
        ge=1,
        description="Problems per generate() call; default: the largest the memory estimator "
        "finds fits the evaluation phase on hardware.gpu.",
    )
    max_new_tokens: int | None = Field(
        default=None,
        ge=1,
        description=f"Generation budget per problem; default {ANSWER_TOKENS}, or "
        f"{THINKING_TOKENS} when the prompt opens a <think> block (room to reason first).",
    )
    max_prompt_tokens: int | None = Field(
        default=None,
        ge=1,
        description="The longest prompt (tokens) the evaluation phase is priced for; a longer "
        "one is refused. Default: training.max_seq_length. GSM8K's prompts are a few hundred.",
    )
    merged_copy: bool = Field(
        default=True,
        description="Over a quantized base, generate with a bf16 copy with the adapters merged "
        "when the estimator finds it fits the evaluation phase (freed afterwards).",
    )
    static_cache: bool = Field(
        default=False,
        description="Decode with a static KV cache; on a GPU transformers then compiles the "
        "decoding step (a one-time compile, then faster steps).",
    )
    stop_at_answer: bool = Field(
        default=True,
        description="Stop a sequence once its first '#### N' line is complete (it alone is scored).",
    )
    confidence: float = Field(default=0.95, gt=0, lt=1, description="Confidence of the Wilson CI.")

    @property
    def new_token_budget(self) -> int:
        """The most tokens one problem may generate (what the estimator prices)."""
        return self.max_new_tokens or THINKING_TOKENS


class EvalLossOptions(EvalOptions):
    max_length: int | None = Field(
        default=None, ge=8, description="Truncate sequences; default: training.max_seq_length."
    )


class LmEvalOptions(Options):
    tasks: list[str] = Field(
        min_length=1, description="lm-evaluation-harness task names (its own, or local ones)."
    )
    include_path: list[str] = Field(
        default_factory=list,
        description="Folders of local task YAML files (offline tasks read local data files).",
    )
    num_fewshot: int | None = Field(default=None, ge=0, description="Default: the task's.")
    limit: int | None = Field(default=None, ge=1, description="Evaluate the first N problems.")
    batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Default: the largest the memory estimator finds fits the evaluation phase.",
    )
    max_length: int | None = Field(
        default=None, ge=8, description="Longest prompt + output; default: the model's."
    )
    gen_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the tasks' generation settings."
    )
    merged_copy: bool = Field(
        default=True,
        description="Over a quantized base, evaluate a bf16 copy with the adapters merged when "
        "the estimator finds it fits the evaluation phase (freed afterwards).",
    )
    apply_chat_template: bool = False
    think_end_token: str | None = Field(
        default=None,
        description="Score only what follows this token (e.g. '</think>' for reasoning models).",
    )
    bootstrap_iters: int = Field(
        default=1000, ge=0, description="Bootstrap samples of the harness's standard errors."
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
    EvaluatorSpec(
        name="lm-eval",
        summary="lm-evaluation-harness tasks in-process on the evaluated model (optional extra).",
        factory="sftkit.evaluation.lmeval:LmEvalEvaluator",
        options_model=LmEvalOptions,
    ),
)


@hookimpl(trylast=True)
def register_evaluators(register: Register) -> None:
    for spec in EVALUATORS:
        register(spec)
