"""`sftkit run`: from a resolved recipe to a run directory with a trained model, as a
sequence of stages (`sftkit.training.stages`), each with a typed input and output:

1. plan: the device, the memory pre-flight, whether the run starts, continues from its
   newest complete checkpoint, only finishes, or has nothing left to do;
2. claim the run directory: its lock, recipe.yaml, memory.json, environment.json, run.json;
3. data: the prepared splits and what the objective trains on;
4. model: the base with the strategy applied;
5. train: the objective's trainer (`SftkitTrainer`), checkpoints atomic and exactly
   resumable, final/ saved;
6. evaluate before and after training;
7. report: run.json's summary, report.md.

SIGINT and SIGTERM stop at the next step boundary with a checkpoint
(`sftkit.training.interrupts`); every way a run ends leaves run.json saying how, and where
it would continue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from sftkit import progress
from sftkit.errors import RunInterrupted, TrainingDivergedError
from sftkit.training.context import RunContext
from sftkit.training.pickles import loaded_from, refused_pickle
from sftkit.training.resume import diverged_after_resume, read_json_safely
from sftkit.training.runfiles import disk_full, now, update_run_json
from sftkit.training.stages.claim import ENDING_FIELDS, claim
from sftkit.training.stages.evaluate import evaluate, finish_evaluation
from sftkit.training.stages.plan import RunRequest, plan, preflight
from sftkit.training.stages.report import interrupted, record_ending, run_summary, write_report

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe

__all__ = ["RunResult", "execute_run", "preflight", "run_recipe", "start_run"]


@dataclass
class RunResult:
    run_dir: Path
    status: str
    metrics: dict[str, Any]
    context: RunContext


def run_recipe(
    resolved: ResolvedRecipe,
    *,
    resume: bool = False,
    force: bool = False,
    weights_only: bool = False,
    console: Console | None = None,
    callbacks: Sequence[Any] = (),
    handle_signals: bool = False,
) -> RunResult:
    """Train `resolved` into ``resolved.recipe.output_dir``; see the module docstring.

    `weights_only` lets a resume restart from a checkpoint's weights when none has its
    optimizer state. With `handle_signals` (the CLI), SIGINT/SIGTERM stop at the next step
    with a checkpoint and raise `RunInterrupted`."""
    from sftkit.training.interrupts import Interrupts, StopNow

    console = console or progress.current().console
    with (
        progress.use(progress.console_display(console)),
        Interrupts(enabled=handle_signals) as interrupts,
    ):
        try:
            ctx = start_run(
                resolved, resume=resume, force=force, console=console, weights_only=weights_only
            )
        except StopNow as exc:
            raise RunInterrupted(
                f"interrupted by {interrupts.name} before training started; nothing was lost.",
                signum=exc.signum,
            ) from None
        try:
            if ctx.plan.kind == "done":
                return RunResult(ctx.paths.root, "completed", read_json_safely(ctx.paths), ctx)
            ctx.interrupts = interrupts
            status = execute_run(ctx, console=console, callbacks=callbacks)
        finally:
            ctx.release()
    return RunResult(ctx.paths.root, status, dict(ctx.metrics), ctx)


def start_run(
    resolved: ResolvedRecipe,
    *,
    resume: bool,
    force: bool,
    console: Console,
    weights_only: bool = False,
) -> RunContext:
    """Stages 1 and 2, before loading a weight: plan, then claim the run directory (its
    lock is held by the returned context until `ctx.release()`). `sftkit launch` calls this
    once, then `execute_run` in every rank."""
    request = RunRequest(resume=resume, force=force, weights_only=weights_only)
    say = progress.console_display(console).say  # plain lines stay whole off a terminal
    planned = plan(resolved, request, say)
    if planned.plan.kind == "done":
        for note in planned.notes:
            say(note, markup=False)
        return RunContext(resolved=resolved, paths=planned.paths, device="", plan=planned.plan)
    return claim(planned, request, say)


def execute_run(ctx: RunContext, *, console: Console, callbacks: Sequence[Any] = ()) -> str:
    """Stages 3 to 7; run.json ends completed, interrupted or failed. In a launched run
    every rank calls this; only the main process writes run metadata and the report."""
    from sftkit.distributed.rank import is_main_process
    from sftkit.training.interrupts import StopNow

    main = is_main_process()
    display = progress.console_display(console)  # the launch worker's, or run_recipe's
    try:
        with progress.use(display):
            if ctx.plan is not None and ctx.plan.kind == "evaluate":
                finish_evaluation(ctx, echo=display.say)
            else:
                train_and_evaluate(ctx, callbacks)
    except BaseException as exc:
        error: BaseException = exc
        if isinstance(exc, StopNow):
            error = interrupted(ctx, exc.signum)
        elif (full := disk_full(exc, ctx.paths.root, "writing the run")) is not None:
            error = full
        elif (refused := refused_pickle(exc, loaded_from(ctx))) is not None:
            error = refused
        elif isinstance(exc, TrainingDivergedError):  # right after a resume: the checkpoint?
            error = diverged_after_resume(exc, ctx.paths, ctx.resumed_from)
        if main:  # Ctrl-C without our handler (a library caller) is an interrupt too
            record_ending(ctx, interrupted(ctx, 2) if type(exc) is KeyboardInterrupt else error)
        if error is exc:
            raise
        raise error from None
    signum = ctx.interrupts.signum if ctx.interrupts is not None else None
    if signum is not None:  # stopped at a step boundary, with a checkpoint
        error = interrupted(ctx, signum)
        if main:
            record_ending(ctx, error)
        raise error
    if not main:
        return "completed"
    record = update_run_json(
        ctx.paths, drop=ENDING_FIELDS, status="completed", finished=now(), error=None
    )
    write_report(ctx, echo=display.say)
    return str(record["status"])


def train_and_evaluate(ctx: RunContext, callbacks: Sequence[Any]) -> None:
    """Stages 3 to 6 of a run that trains."""
    try:
        from transformers import set_seed

        from sftkit.training.stages import data, model
        from sftkit.training.stages.train import build_trainer, fit
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError):
            raise
        from sftkit.versions import import_clash

        raise import_clash(exc, doing="sftkit run") from exc
    from sftkit.distributed.rank import is_main_process
    from sftkit.distributed.trainer import evaluates_in_process

    say, main = progress.current().say, is_main_process()
    set_seed(ctx.recipe.training.seed)
    prepared = data.prepare(ctx.resolved, say)
    built = model.build(ctx, prepared.tokenizer, say)
    trainer = build_trainer(ctx, prepared, built, callbacks)
    if ctx.resumed_from is None and main:
        evaluate(ctx, "before", echo=say)
    trained = fit(ctx, trainer)
    if trained.stopped or not main:
        return
    update_run_json(ctx.paths, **run_summary(ctx, trained))
    if evaluates_in_process(ctx.recipe):  # else `sftkit launch` evaluates final/ afterwards
        evaluate(ctx, "after", echo=say)
