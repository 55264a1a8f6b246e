"""Stage 6, evaluate: the recipe's evaluators before training (evaluation.before_training)
or after it (evaluation.after_training), written to <run>/eval/<stage>-<evaluator>/; and a
run that stopped between final/ and its evaluation, finished by evaluating final/."""

from __future__ import annotations

from collections.abc import Callable

from sftkit.training.context import RunContext


def evaluate(ctx: RunContext, stage: str, *, echo: Callable[[str], None]) -> None:
    evaluation = ctx.recipe.evaluation
    wanted = evaluation.before_training if stage == "before" else evaluation.after_training
    if not wanted or not ctx.resolved.evaluators:
        return
    from sftkit.evaluation.runner import evaluate_in_run

    model = ctx.trainer.model if ctx.trainer is not None else ctx.model
    evaluate_in_run(ctx.resolved, model, ctx.tokenizer, ctx.run_dir, stage=stage, echo=echo)


def finish_evaluation(ctx: RunContext, *, echo: Callable[[str], None]) -> None:
    """final/ is complete but the run stopped before its evaluation: evaluate final/."""
    from sftkit.modeling import load_trained

    if not ctx.recipe.evaluation.after_training or not ctx.resolved.evaluators:
        return
    ctx.model, ctx.tokenizer = load_trained(ctx.run_dir)
    evaluate(ctx, "after", echo=echo)
