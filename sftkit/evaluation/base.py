"""What an evaluator receives and returns, and how results are stored (no torch).

An evaluator plugin registers an `EvaluatorSpec` whose factory is called with the validated
options and returns an object with ``evaluate(task) -> EvalResult``. sftkit loads the model,
the split and the prompt template; the evaluator only scores.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sftkit.atomic import replace_dir
from sftkit.data.tokenize import Reasoning
from sftkit.runpaths import EvalPaths, RunPaths

if TYPE_CHECKING:
    from sftkit.data.example import Example
    from sftkit.evaluation.generate import Generation


class Progress(Protocol):
    """How an evaluator reports progress: examples `done` of `total`, and optionally its
    metrics so far (``accuracy=0.45``, ``loss=1.2``), shown beside the bar."""

    def __call__(self, done: int, total: int, /, **so_far: float) -> None: ...


class PromptTemplate(Protocol):
    def prompt_text(self, example: Example, tokenizer: Any) -> str: ...

    def completion_text(self, example: Example, tokenizer: Any) -> str: ...


@dataclass
class EvalTask:
    """Everything an evaluator needs: a model in eval mode, its tokenizer, the examples of one
    split (already limited), and the run's prompt template."""

    model: Any
    tokenizer: Any
    examples: Sequence[Example]
    template: PromptTemplate
    split: str
    max_seq_length: int = 1024
    progress: Progress | None = None
    reasoning: Reasoning = field(default_factory=Reasoning)  # data.reasoning, for the loss
    # The batch the memory estimator finds fits the evaluation phase on the recipe's card
    # (`sftkit.evaluation.batching`), for an evaluator whose options leave batch_size unset.
    batch_size: int = 8

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        batch_size: int | None = None,
        stop_at_answer: bool = False,
    ) -> list[Generation]:
        """Greedy completions of `prompts` by the task's model, in order, reporting progress;
        each has ``text`` (new text only), ``new_tokens`` and ``finished`` (stopped by EOS,
        or by the first complete ``#### N`` line with `stop_at_answer`, not by the budget).
        `batch_size` defaults to the task's. Imports torch on first use, as the evaluators
        that call it do anyway."""
        from sftkit.evaluation.generate import greedy_generate

        return greedy_generate(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size or self.batch_size,
            stop_at_answer=stop_at_answer,
            progress=self.progress,
        )


class Evaluator(Protocol):
    def evaluate(self, task: EvalTask) -> EvalResult: ...


@dataclass
class EvalResult:
    """Scores of one evaluator on one split.

    `metrics` holds numbers only; `primary` names the headline metric and `higher_is_better`
    says which way is good (for deltas in reports). `predictions` are one JSON-able dict per
    example, written to predictions.jsonl.
    """

    evaluator: str
    split: str
    n: int
    metrics: dict[str, float]
    primary: str
    higher_is_better: bool = True
    predictions: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def value(self) -> float:
        return self.metrics[self.primary]


@dataclass(frozen=True)
class StoredEval:
    """An evaluation read back from ``<dir>/metrics.json``."""

    path: Path
    stage: str
    evaluator: str
    model: str  # "base" or "fine-tuned"
    split: str
    n: int
    primary: str
    higher_is_better: bool
    metrics: dict[str, float]
    options: dict[str, Any]
    elapsed_s: float

    @property
    def value(self) -> float:
        return self.metrics[self.primary]

    @property
    def limit(self) -> int | None:
        limit = self.options.get("limit")
        return int(limit) if isinstance(limit, int | float) else None

    @property
    def key(self) -> tuple[str, str, str, int | None]:
        """What makes two evaluations of a run the same one: (stage, evaluator, split,
        limit). sftkit keeps one folder per key; comparisons pair them by it."""
        return (self.stage, self.evaluator, self.split, self.limit)

    @property
    def scope(self) -> str:
        """Which problems, for a person: ``test``, ``test, first 100``."""
        return scope(self.split, self.limit)


def scope(split: str, limit: int | None) -> str:
    return split + (f", first {limit}" if limit is not None else "")


def variant(split: str, limit: int | None) -> str:
    """The folder suffix that keeps an evaluation of another split or limit from replacing
    one already stored: ``""`` for the whole test split, ``first100``, ``dev``,
    ``dev-first50`` (a split that is not a file-name word, an lm-eval task list, is made one)."""
    parts = [] if split == "test" else [re.sub(r"[^A-Za-z0-9_.]+", "_", split).strip("_.")]
    if limit is not None:
        parts.append(f"first{limit}")
    return "-".join(p for p in parts if p)


def write_result(
    result: EvalResult,
    out_dir: Path,
    *,
    stage: str,
    model: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write metrics.json and predictions.jsonl into `out_dir`, replacing an earlier result
    there only once both are written: they are assembled in a hidden folder beside it,
    renamed in whole, so an interrupted evaluation leaves the earlier one as it was."""
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    paths = EvalPaths(partial)
    with paths.predictions.open("w", encoding="utf-8") as handle:
        for row in result.predictions:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    document = {
        "stage": stage,
        "evaluator": result.evaluator,
        "model": model,
        "split": result.split,
        "n": result.n,
        "primary": result.primary,
        "higher_is_better": result.higher_is_better,
        "metrics": {k: _finite(v) for k, v in result.metrics.items()},
        "options": result.options,
        "elapsed_s": round(result.elapsed_s, 3),
        **(extra or {}),
    }
    paths.metrics.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    replace_dir(partial, out_dir, aside=out_dir.with_name(f".{out_dir.name}.replaced"))
    return out_dir


def read_result(out_dir: Path) -> StoredEval | None:
    """The evaluation stored in `out_dir`, or None if it has no readable metrics.json."""
    try:
        doc = json.loads(EvalPaths(out_dir).metrics.read_text(encoding="utf-8"))
        return StoredEval(
            path=out_dir,
            stage=str(doc["stage"]),
            evaluator=str(doc["evaluator"]),
            model=str(doc.get("model", "")),
            split=str(doc.get("split", "")),
            n=int(doc["n"]),
            primary=str(doc["primary"]),
            higher_is_better=bool(doc.get("higher_is_better", True)),
            metrics={k: float(v) for k, v in doc["metrics"].items() if v is not None},
            options=dict(doc.get("options", {})),
            elapsed_s=float(doc.get("elapsed_s", 0.0)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_run_evals(run_dir: Path) -> list[StoredEval]:
    """Every evaluation stored under ``<run>/eval/``, ordered by stage then evaluator."""
    order = {"before": 0, "after": 1, "base": 2, "manual": 3}
    found = [
        stored
        for sub in sorted(RunPaths(run_dir).eval.glob("*/"))
        if (stored := read_result(sub)) is not None
    ]
    return sorted(found, key=lambda e: (e.evaluator, order.get(e.stage, 9), e.stage))


def question_text(example: Example) -> str:
    """The question as a person would read it (the last user turn of a chat prompt)."""
    if isinstance(example.prompt, str):
        return example.prompt
    users = [m["content"] for m in example.prompt if m.get("role") == "user"]
    return users[-1] if users else example.prompt[-1]["content"]


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
