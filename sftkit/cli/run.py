"""`sftkit run`: train a recipe into a run directory."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sftkit.cli.app import AppContext, pass_app
from sftkit.cli.core import recipe_arguments, show_notes
from sftkit.devices import use_cpu_thread_policy
from sftkit.errors import DiskFullError, RunInterrupted

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe


@click.command(name="run")
@recipe_arguments
@click.option(
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Run directory (default: the recipe's output_dir).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in the output directory from its newest complete checkpoint "
    "(a run without one starts over; a completed one is left as it is).",
)
@click.option(
    "--weights-only",
    is_flag=True,
    help="With --resume: when no checkpoint has its optimizer state, restart from the newest "
    "one's weights with a fresh optimizer (not an exact resume).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Train even when the memory estimate says the run does not fit.",
)
@pass_app
def run_command(
    app: AppContext,
    recipe: str,
    overrides: tuple[str, ...],
    output_dir: Path | None,
    resume: bool,
    weights_only: bool,
    force: bool,
) -> None:
    """Train RECIPE: validate, check memory, prepare data, train, save, evaluate.

    \b
    Writes one run directory (recipe.yaml, memory.json, environment.json, metrics.jsonl,
    tensorboard/, checkpoints/, final/, run.json). It never overwrites another run: use
    --output-dir for a new one, or --resume to continue this one. Examples:
      sftkit run recipes/quickstart.yaml
      sftkit run recipes/r1_gsm8k_qlora.yaml strategy.options.rank=32 training.max_steps=100
      sftkit run recipes/quickstart.yaml --output-dir runs/qs2
      sftkit run recipes/quickstart.yaml --resume
    Ctrl-C (SIGINT) or SIGTERM stops at the end of the step under way with a checkpoint and
    prints the command that resumes; a second one stops at once.
    Exit codes: 0 trained, 2 bad input, 3 does not fit (see `sftkit estimate-memory`),
    130 interrupted (SIGINT), 143 terminated (SIGTERM).
    """
    from sftkit.extras import require
    from sftkit.oserrors import writing_to
    from sftkit.progress import current
    from sftkit.recipe.load import load_recipe

    if weights_only and not resume:
        raise click.UsageError("--weights-only goes with --resume.")
    require("`sftkit run`")  # the light core has no torch: say what to install, exit 2
    started = time.perf_counter()
    extra = (f"output_dir={output_dir}",) if output_dir is not None else ()
    resolved = load_recipe(recipe, (*overrides, *extra), registry=app.registry)
    show_notes(resolved)
    use_cpu_thread_policy(resolved.recipe.hardware.gpu)  # before torch loads
    from sftkit.preflight import check as check_before_loading

    if not force:  # a recipe that does not fit says so first (exit 3), whatever the machine
        fits_or_exit_3(resolved)
    check_before_loading(resolved, machine=True)  # the evaluators' check imports torch
    from sftkit.evaluation.runner import check_evaluators

    check_evaluators([*resolved.evaluators, *resolved.during_training])  # exit 2 before training
    from sftkit.training.runner import run_recipe

    console = current().console
    try:
        with writing_to(resolved.recipe.output_dir):
            result = run_recipe(
                resolved,
                resume=resume,
                force=force,
                weights_only=weights_only,
                console=console,
                handle_signals=True,
            )
    except (RunInterrupted, DiskFullError) as exc:
        exc.hint = f"Resume with: {resume_command(recipe, overrides, resolved, force=force)}"
        raise
    elapsed = time.perf_counter() - started
    from sftkit.reporting.summary import HEADLINES

    loss = result.metrics.get("train_loss")
    shown = [f"train loss {loss:.4f}"] if isinstance(loss, float) else []
    # the last logged value of an objective's headline series (grpo's reward), if it logs one
    shown += [
        f"{label} {result.metrics[key]:.3f}"
        for key, label in HEADLINES
        if isinstance(result.metrics.get(key), int | float)
    ]
    click.echo(
        f"{result.status}: {result.run_dir} in {_took(elapsed, result.run_dir)}"
        + (f" ({', '.join(shown)})" if shown else "")
    )


def _took(elapsed: float, run_dir: Path) -> str:
    """This part's wall time, or, after resumes, the whole run's over all its parts."""
    from sftkit.runpaths import RunPaths
    from sftkit.training.resume import read_json_safely

    earlier = read_json_safely(RunPaths(run_dir)).get("earlier_parts_s") or []
    parts = [float(s) for s in earlier if isinstance(s, int | float)]
    if not parts:
        return _duration(elapsed)
    return (
        f"{_duration(sum(parts) + elapsed)} over {len(parts) + 1} parts "
        f"(this one {_duration(elapsed)})"
    )


def fits_or_exit_3(resolved: ResolvedRecipe) -> None:
    """The memory pre-flight, torch-free; the plan stage runs it again (with --force too)."""
    import contextlib

    from sftkit.errors import UnknownArchitectureError
    from sftkit.memory import preflight

    with contextlib.suppress(UnknownArchitectureError):  # the plan stage says so
        preflight(resolved)


def resume_command(
    recipe: str, overrides: tuple[str, ...], resolved: ResolvedRecipe, *, force: bool
) -> str:
    """The command line that continues this run: the same recipe and overrides, the run
    directory spelled out, --resume."""
    run_dir = resolved.recipe.output_dir
    kept = [o for o in overrides if not o.startswith("output_dir=")]
    args = ["sftkit", "run", recipe, *kept, "--output-dir", str(run_dir), "--resume"]
    if force:
        args.append("--force")
    return shlex.join(args)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"
