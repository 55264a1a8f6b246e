"""Running evaluators on a loaded model: pick them, load their split, score, store.

Used by `sftkit eval` and by `sftkit run` (before/after training). Imports no torch itself;
the evaluators do when they run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sftkit.data.tokenize import Reasoning
from sftkit.errors import RecipeError, SftkitError
from sftkit.evaluation.base import (
    EvalResult,
    EvalTask,
    Progress,
    read_result,
    scope,
    variant,
    write_result,
)
from sftkit.progress import Stage, current
from sftkit.recipe.load import Component, ResolvedRecipe, _problems_from_validation
from sftkit.runpaths import EvalPaths, RunPaths
from sftkit.specs import EvaluatorSpec, load_factory

DEFAULT_EVALUATOR = "gsm8k"


@dataclass(frozen=True)
class StoredResult:
    result: EvalResult
    stage: str
    path: Path


def select_evaluators(
    resolved: ResolvedRecipe,
    names: Sequence[str] = (),
    *,
    split: str | None = None,
    limit: int | None = None,
) -> list[Component[EvaluatorSpec]]:
    """The evaluators to run: `names` (with the recipe's options for any the recipe also
    configures), else the recipe's `evaluation.evaluators`, else gsm8k. `split`/`limit`
    override every evaluator's options."""
    configured = {c.spec.name: c for c in resolved.evaluators}
    if names:
        chosen = []
        for name in names:
            if name in configured:
                chosen.append(configured[name])
            else:
                entry = resolved.registry.evaluators.entry(name)  # unknown -> did-you-mean error
                chosen.append(Component(entry.spec, entry.spec.options_model(), entry.plugin))
    elif resolved.evaluators:
        chosen = list(resolved.evaluators)
    else:
        entry = resolved.registry.evaluators.entry(DEFAULT_EVALUATOR)
        chosen = [Component(entry.spec, entry.spec.options_model(), entry.plugin)]
    updates: dict[str, Any] = {}
    if split is not None:
        updates["split"] = split
    if limit is not None:
        updates["limit"] = limit
    return [_with_options(c, updates) for c in chosen] if updates else chosen


def _with_options(component: Component[EvaluatorSpec], updates: dict[str, Any]) -> Component[Any]:
    model = component.spec.options_model
    data = {**component.options.model_dump(), **updates}
    # A third-party evaluator without split/limit options simply keeps its own.
    data = {k: v for k, v in data.items() if k in model.model_fields}
    try:
        options = model.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(
            _problems_from_validation(exc, model, prefix=f"evaluator {component.spec.name}"),
            source="command-line options",
        ) from None
    return replace(component, options=options)


def build_evaluator(component: Component[EvaluatorSpec]) -> Any:
    evaluator = load_factory(component.spec.factory)(component.options)
    if not callable(getattr(evaluator, "evaluate", None)):
        raise SftkitError(
            f"evaluator {component.spec.name!r} (plugin {component.plugin!r}): its factory "
            f"{component.spec.factory!r} returned {type(evaluator).__name__}, which has no "
            "evaluate(task) method."
        )
    return evaluator


def check_evaluators(components: Sequence[Component[EvaluatorSpec]]) -> None:
    """Build each evaluator once, before any model loads or any training starts: one that
    needs a package not installed (the lm-eval extra) exits 2 now, not after hours."""
    for component in components:
        build_evaluator(component)


def build_template(resolved: ResolvedRecipe) -> Any:
    """The recipe's prompt template object (``.prompt_text`` / ``.completion_text``)."""
    component = resolved.template
    return load_factory(component.spec.factory)(component.options)


def load_examples(resolved: ResolvedRecipe, split: str, limit: int | None) -> list[Any]:
    from sftkit.data import load_split

    examples = list(load_split(resolved, split))  # type: ignore[arg-type]
    return examples[:limit] if limit is not None else examples


def run_evaluations(
    resolved: ResolvedRecipe,
    model: Any,
    tokenizer: Any,
    *,
    stage: str,
    model_label: str,
    out_root: Path,
    components: Sequence[Component[EvaluatorSpec]],
    progress: Callable[[str, int], Progress | None] | None = None,
    extra: dict[str, Any] | None = None,
) -> list[StoredResult]:
    """Run each evaluator on its split and write ``<out_root>/<stage>-<evaluator>/``.

    Each evaluation is a stage of the current progress display (examples done, the metric
    so far, ETA); `progress(label, total)` replaces that with a per-evaluator callback.
    """
    from sftkit.modeling.kernels import check_inference_device

    device = getattr(model, "device", None)
    check_inference_device(resolved, getattr(device, "type", "cpu"))
    template = build_template(resolved)
    display = current()
    stored: list[StoredResult] = []
    for component in components:
        opened: list[Stage] = []

        def on_stage(
            label: str, total: int, _name: str = component.spec.name, _opened: list = opened
        ) -> Progress | None:
            if progress is not None:  # the caller's own display
                return progress(label, total)
            _opened.append(display.open(f"{stage} {_name}", total))
            return stage_progress(_opened[-1])

        try:
            result = score(
                resolved,
                model,
                tokenizer,
                component,
                template=template,
                stage=stage,
                progress=on_stage,
            )
        finally:
            for shown in opened:
                shown.close()
        where = EvalPaths.under(
            out_root, stage, component.spec.name, variant(result.split, _limit(result))
        )
        earlier = read_result(where.root)
        if earlier is not None:  # same stage, split and limit: say so, never silently
            display.say(
                f"replacing the earlier {stage} {component.spec.name} evaluation in "
                f"{where.root} ({earlier.scope}, n={earlier.n}, {earlier.primary} "
                f"{earlier.metrics.get(earlier.primary, float('nan')):.4g})"
            )
        path = write_result(
            result,
            where.root,
            stage=stage,
            model=model_label,
            extra={"recipe": resolved.source, "plugin": component.plugin, **(extra or {})},
        )
        stored.append(StoredResult(result, stage, path))
    return stored


def _limit(result: EvalResult) -> int | None:
    limit = result.options.get("limit")
    return int(limit) if isinstance(limit, int) else None


def stage_progress(stage: Stage) -> Progress:
    """An evaluator's progress reports, shown on a stage: ``acc 45.0%``, ``loss 1.234``."""

    def report(done: int, total: int, /, **so_far: float) -> None:
        stage.update(
            done, total=total, note="  ".join(so_far_text(k, v) for k, v in so_far.items())
        )

    return report


def so_far_text(metric: str, value: float) -> str:
    from sftkit.evaluation.display import headline

    name = "acc" if metric == "accuracy" else metric
    return f"{name} {headline(metric, {metric: value})}"


def score(
    resolved: ResolvedRecipe,
    model: Any,
    tokenizer: Any,
    component: Component[EvaluatorSpec],
    *,
    template: Any = None,
    stage: str = "",
    progress: Callable[[str, int], Progress | None] | None = None,
) -> EvalResult:
    """One evaluator on its split (and limit) of the prepared data; nothing is written.
    `progress(label, total)` may return a progress callback."""
    options = component.options
    split = getattr(options, "split", "test")
    examples = load_examples(resolved, split, getattr(options, "limit", None))
    label = f"{stage} {component.spec.name} ({split}, {len(examples)} examples)".strip()
    task = EvalTask(
        model=model,
        tokenizer=tokenizer,
        examples=examples,
        template=template if template is not None else build_template(resolved),
        split=split,
        max_seq_length=resolved.recipe.training.max_seq_length,
        reasoning=Reasoning.of(resolved.recipe),
        progress=progress(label, len(examples)) if progress else None,
    )
    evaluator = build_evaluator(component)
    merged = False
    if "batch_size" in type(options).model_fields:
        from sftkit.evaluation.batching import plan

        task.batch_size, merged = plan(resolved, component, len(examples))
    if merged:
        from sftkit.evaluation.merged import evaluated_on_merged_copy

        result: EvalResult = evaluated_on_merged_copy(evaluator, task)
    else:
        result = evaluator.evaluate(task)
    if not result.options:
        result.options = options.model_dump()
    return result


def summary_line(stored: StoredResult) -> str:
    """``before training: gsm8k accuracy 3.0% [1.0, 8.5] (n=100, test)``."""
    from sftkit.evaluation.display import headline, interval

    result = stored.result
    ci = interval(result.metrics)
    when = {"before": "before training", "after": "after training"}.get(stored.stage, stored.stage)
    return (
        f"{when}: {result.evaluator} {result.primary} {headline(result.primary, result.metrics)}"
        + (f" {ci}" if ci != "-" else "")
        + f" (n={result.n}, {scope(result.split, _limit(result))})"
    )


def evaluate_in_run(
    resolved: ResolvedRecipe,
    model: Any,
    tokenizer: Any,
    run_dir: Path,
    *,
    stage: str,
    echo: Callable[[str], None] | None = None,
) -> list[StoredResult]:
    """The recipe's evaluators at one stage of `sftkit run` ("before" or "after" training),
    stored under ``<run>/eval/<stage>-<evaluator>/``; one summary line each to `echo`."""
    if not resolved.evaluators:
        return []
    label = "base" if stage == "before" else "fine-tuned"
    stored = run_evaluations(
        resolved,
        model,
        tokenizer,
        stage=stage,
        model_label=label,
        out_root=RunPaths(run_dir).eval,
        components=resolved.evaluators,
    )
    if echo is not None:
        for item in stored:
            echo(summary_line(item))
    return stored
