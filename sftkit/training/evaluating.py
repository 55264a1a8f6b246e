"""Evaluation while training: the trainer's eval loss on the dev split every
``training.eval_steps``, the ``evaluation.during_training`` evaluators on the same schedule,
early stopping, and the best checkpoint.

transformers does the bookkeeping: ``metric_for_best_model`` makes it track the best metric
and keep the best checkpoint through ``save_total_limit`` rotation, ``EarlyStoppingCallback``
stops training, and ``load_best_model_at_end`` makes the best checkpoint the final model.
sftkit's callback adds each evaluator's scores to the evaluation's metrics (``eval_gsm8k/
accuracy``) before those two read them, and logs them, so metrics.jsonl has them as
``eval/gsm8k/accuracy`` beside ``eval/loss``.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from transformers import EarlyStoppingCallback, TrainerCallback

from sftkit.training.context import RunContext


def metric_key(recipe: Any) -> str:
    """The trainer's name of the metric that picks the best checkpoint."""
    stop = recipe.training.early_stopping
    return f"eval_{stop.metric}" if stop is not None else "eval_loss"


def eval_arguments(recipe: Any) -> dict[str, Any]:
    """SFTConfig arguments for evaluation while training (none without eval_steps)."""
    t = recipe.training
    if t.eval_steps is None:
        return {}
    stop = t.early_stopping
    return {
        "eval_strategy": "steps",
        "eval_steps": t.eval_steps,
        "per_device_eval_batch_size": t.micro_batch_size,
        "prediction_loss_only": True,  # the loss only: no logits kept across the dev split
        "metric_for_best_model": metric_key(recipe),
        "greater_is_better": stop.greater_is_better if stop is not None else False,
        "load_best_model_at_end": stop is not None,
    }


def save_steps(recipe: Any) -> int | None:
    """Checkpoint interval: the recipe's, or with early stopping every evaluation (so the
    best one exists to keep)."""
    t = recipe.training
    if t.save_steps is None and t.early_stopping is not None:
        return int(t.eval_steps)
    return t.save_steps


def callbacks(ctx: RunContext, console: Console, *, main: bool) -> list[Any]:
    """The evaluation callbacks, in the order they must run at each evaluation."""
    t = ctx.recipe.training
    if t.eval_steps is None:
        return []
    out: list[Any] = [DuringTrainingEvaluation(ctx, console if main else None)]
    if t.early_stopping is not None:
        out.append(
            EarlyStoppingCallback(
                early_stopping_patience=t.early_stopping.patience,
                early_stopping_threshold=t.early_stopping.threshold,
            )
        )
    return out


class DuringTrainingEvaluation(TrainerCallback):
    """At each evaluation: the during-training evaluators' scores join the metrics (before
    early stopping and best-checkpoint tracking read them) and are logged; one line per
    evaluation on the console."""

    def __init__(self, ctx: RunContext, console: Console | None) -> None:
        self.ctx = ctx
        self.console = console
        self.primaries: dict[str, str] = {}  # evaluator -> its headline metric (for plots)

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
    ) -> None:
        if metrics is None:
            return
        scores: dict[str, float] = {}
        components = self.ctx.resolved.during_training
        if components:
            from sftkit.evaluation.runner import score

            model = kwargs.get("model")
            if model is None:
                model = self.ctx.trainer.model
            for component in components:
                result = score(self.ctx.resolved, model, self.ctx.tokenizer, component)
                self.primaries[component.spec.name] = result.primary
                for name, value in result.metrics.items():
                    if isinstance(value, int | float) and math.isfinite(float(value)):
                        scores[f"eval_{component.spec.name}/{name}"] = float(value)
            metrics.update(scores)
            if self.ctx.trainer is not None:
                self.ctx.trainer.log(dict(scores))
        if self.console is not None:
            self.console.print(self._line(state, metrics), highlight=False)

    def _line(self, state: Any, metrics: dict[str, Any]) -> str:
        parts = [f"eval step {state.global_step}/{state.max_steps}"]
        if "eval_loss" in metrics:
            parts.append(f"loss {float(metrics['eval_loss']):.4f}")
        for name, primary in self.primaries.items():
            key = f"eval_{name}/{primary}"
            if key in metrics:
                parts.append(f"{name} {primary} {float(metrics[key]):.4g}")
        return "  ".join(parts)


def best_summary(ctx: RunContext) -> dict[str, Any]:
    """For run.json: the best evaluation, its checkpoint, and whether training stopped early."""
    t = ctx.recipe.training
    if t.eval_steps is None or ctx.trainer is None:
        return {}
    state = ctx.trainer.state
    best = getattr(state, "best_metric", None)
    checkpoint = getattr(state, "best_model_checkpoint", None)
    stop = t.early_stopping
    step = getattr(state, "best_global_step", None)
    if step is None and checkpoint:  # older transformers: only the checkpoint's name
        tail = str(checkpoint).rstrip("/").rpartition("-")[2]
        step = int(tail) if tail.isdigit() else None
    summary: dict[str, Any] = {
        "eval_steps": t.eval_steps,
        "best_metric_name": metric_key(ctx.recipe).removeprefix("eval_"),
        "best_metric": best if best is not None and math.isfinite(best) else None,
        "best_step": step,
        "best_checkpoint": checkpoint,
    }
    for callback in ctx.trainer.callback_handler.callbacks:
        if isinstance(callback, DuringTrainingEvaluation) and callback.primaries:
            summary["eval_primaries"] = dict(callback.primaries)
    if stop is not None:
        summary["early_stopping"] = {
            "patience": stop.patience,
            "stopped_early": state.global_step < state.max_steps,
            "final_is_best": checkpoint is not None,
        }
    return summary
