"""`sftkit eval`: score a run's fine-tuned model (or its base), or a recipe's base model."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from sftkit.cli.app import AppContext, pass_app
from sftkit.devices import use_cpu_thread_policy
from sftkit.errors import RunDirectoryError
from sftkit.runpaths import EvalPaths, RunPaths, is_run_dir, log_file


@click.command(name="eval")
@click.argument("target", metavar="RUN_DIR_OR_RECIPE")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE | ~KEY]...")
@click.option(
    "--split",
    type=click.Choice(["dev", "test"]),
    help="Split to score (default: each evaluator's).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Score only the first N examples.")
@click.option("--base", is_flag=True, help="On a run directory: score the untrained base model.")
@click.option(
    "--evaluator",
    "-e",
    "evaluators",
    multiple=True,
    metavar="NAME",
    help="Evaluator to run (repeatable; default: the recipe's, else gsm8k).",
)
@click.option(
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where results go (default: RUN_DIR/eval; for a recipe, eval-<recipe name>/ beside "
    "the recipe's output_dir, e.g. runs/eval-quickstart/).",
)
@pass_app
def eval_command(
    app: AppContext,
    target: str,
    overrides: tuple[str, ...],
    split: str | None,
    limit: int | None,
    base: bool,
    evaluators: tuple[str, ...],
    output_dir: Path | None,
) -> None:
    """Score a model: a run's fine-tuned one (or its base with --base), or a recipe's base.

    \b
    Prints accuracy with its 95% confidence interval and n, and writes metrics.json and
    predictions.jsonl (question, gold, extracted answer, raw output, correct) under
    RUN_DIR/eval/<stage>-<evaluator>[-<split>][-first<N>]/ (stage: manual for the fine-tuned
    model, base for --base or a recipe; one folder per stage, split and limit, so a --limit
    never replaces a full evaluation; a recipe's go to runs/eval-<recipe name>/ when its
    output_dir is under runs/, and it writes nothing else). Examples:
      sftkit eval runs/quickstart --limit 50
      sftkit eval runs/quickstart --base --limit 50
      sftkit eval recipes/quickstart.yaml --split dev
    """
    from sftkit.extras import require
    from sftkit.recipe.load import load_recipe

    require("`sftkit eval`")
    path = Path(target)
    run_dir = path if is_run_dir(path) else None
    if run_dir is None and path.is_dir():
        raise RunDirectoryError(
            f"{path} is a directory but not a run directory (it has no recipe.yaml).",
            hint="Pass a run directory written by `sftkit run`, or a recipe file.",
        )
    recipe_path = RunPaths(run_dir).recipe if run_dir else target
    if run_dir is not None:
        # The run's prepared data lives in the run directory, wherever it has been moved.
        overrides = (f"output_dir={run_dir}", *overrides)
    resolved = load_recipe(recipe_path, overrides, registry=app.registry)
    if run_dir is None:
        if output_dir is None:
            output_dir = recipe_eval_dir(resolved.recipe.output_dir, target)
        if not resolved.recipe.data.prepared_dir:
            # Write only under the output directory: the data is prepared there, one folder
            # per data fingerprint, so an evaluation with other data options never clashes.
            from sftkit.data.prepare import fingerprint

            where = output_dir / f"data-{fingerprint(resolved)}"
            resolved = load_recipe(
                recipe_path, (*overrides, f"data.prepared_dir={where}"), registry=app.registry
            )
    use_cpu_thread_policy(resolved.recipe.hardware.gpu)  # as `sftkit run`; before torch loads

    from sftkit.evaluation.runner import check_evaluators, select_evaluators

    components = select_evaluators(resolved, evaluators, split=split, limit=limit)
    check_evaluators(components)  # a missing optional package: exit 2 before loading a model
    from sftkit.signals import stop_on_signals

    # Ctrl-C stops it even where SIGINT came inherited ignored (started with `&` by a script)
    kept = "evaluations finished before it are kept; the one running wrote nothing"
    with stop_on_signals("the evaluation", kept=kept), _run_lock(run_dir, output_dir):
        _evaluate(resolved, run_dir, target, base, output_dir, components)


@contextmanager
def _run_lock(run_dir: Path | None, output_dir: Path | None) -> Iterator[None]:
    """An evaluation that writes into a run directory is one of its writers: it takes the
    run's lock (refused while the run trains), unless its results go elsewhere."""
    if run_dir is None or (output_dir is not None and not _inside(output_dir, run_dir)):
        yield
        return
    from sftkit.training.lock import RunLock, command_line

    with RunLock.acquire(RunPaths(run_dir), command=command_line()):
        yield


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _evaluate(
    resolved: Any,
    run_dir: Path | None,
    target: str,
    base: bool,
    output_dir: Path | None,
    components: Sequence[Any],
) -> None:
    """Load the model to score, score it, write the results (and a run's report)."""
    from sftkit.modeling import load_base, load_trained, trust_remote_code_notice
    from sftkit.oserrors import check_can_create, writing_to
    from sftkit.progress import current
    from sftkit.quiet import log_to

    if output_dir is None:
        output_dir = (
            RunPaths(run_dir).eval
            if run_dir is not None
            else recipe_eval_dir(resolved.recipe.output_dir, target)
        )
    check_can_create(output_dir, "evaluation output directory")
    output_dir.mkdir(parents=True, exist_ok=True)
    log_to(log_file(run_dir if run_dir is not None else output_dir))
    display = current()
    if resolved.recipe.model.trust_remote_code:
        display.say(trust_remote_code_notice(resolved.recipe))
    with writing_to(output_dir), display.stage("load model"):
        if run_dir is not None and not base:
            stage, label = "manual", "fine-tuned"
            model, tokenizer = load_trained(run_dir, resolved.registry)
        else:
            stage, label = "base", "base"
            model, tokenizer = load_base(
                run_dir if run_dir is not None else resolved, resolved.registry
            )
    display.say(
        f"model: the {label} model of {run_dir}"
        if run_dir is not None
        else f"model: {resolved.recipe.model.name_or_path} (base)"
    )
    results = evaluate_and_show(
        resolved,
        model,
        tokenizer,
        stage=stage,
        label=label,
        out_root=output_dir,
        components=components,
    )
    for stored in results:
        click.echo(f"wrote {EvalPaths(stored.path).predictions}")
    if run_dir is not None and output_dir == RunPaths(run_dir).eval:
        from sftkit.reporting import write_report

        report = write_report(run_dir)
        click.echo(f"updated {report.markdown}")


def recipe_eval_dir(output_dir: str, target: str) -> Path:
    """Where `sftkit eval RECIPE` writes by default: ``eval-<recipe name>/`` beside the
    recipe's output directory (runs/eval-quickstart/ for runs/quickstart), so it lands
    with the runs (ignored by git), not in the current directory."""
    return Path(output_dir).parent / f"eval-{Path(target).stem}"


def evaluate_and_show(
    resolved: Any,
    model: Any,
    tokenizer: Any,
    *,
    stage: str,
    label: str,
    out_root: Path,
    components: Sequence[Any],
) -> list[Any]:
    """Run the evaluators, each a stage of the progress display, then print the results."""
    from rich.console import Console

    from sftkit.evaluation.runner import run_evaluations

    results = run_evaluations(
        resolved,
        model,
        tokenizer,
        stage=stage,
        model_label=label,
        out_root=out_root,
        components=components,
    )
    title = f"{label} model, stage {stage}"
    table = results_table([s.result for s in results], title=title)
    # Piped into a log, rich would wrap a nine-column table at 80 characters.
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    return results


def results_table(results: Sequence[Any], *, title: str) -> Any:
    """A rich table of EvalResult (or StoredEval) rows."""
    from rich.table import Table

    from sftkit.evaluation.display import details, headline, interval

    table = Table(title=title)
    for column in ("evaluator", "split", "n", "metric", "value", "95% CI", "details"):
        table.add_column(column, justify="right" if column in ("n", "value") else "left")
    for result in results:
        table.add_row(
            result.evaluator,
            result.split,
            str(result.n),
            result.primary,
            headline(result.primary, result.metrics),
            interval(result.metrics),
            details(result.primary, result.metrics),
        )
    return table
