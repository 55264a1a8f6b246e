"""Stage 7, report: run.json's summary over the whole run however many attempts it took,
how a run that stopped early ended (and where it would continue), and the run report
(report.md, report.html, loss.png)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import Any

from sftkit.errors import RunInterrupted, SftkitError, TrainingDivergedError
from sftkit.runpaths import RunPaths
from sftkit.training.checkpoints import choose_checkpoint
from sftkit.training.context import RunContext
from sftkit.training.runfiles import now, update_run_json
from sftkit.training.stages.train import Trained, train_loss

log = logging.getLogger("sftkit.run")


def run_summary(ctx: RunContext, trained: Trained) -> dict[str, Any]:
    """run.json's training summary."""
    import torch

    from sftkit.training.evaluating import best_summary

    state = ctx.trainer.state
    losses = [e["loss"] for e in state.log_history if "loss" in e]
    rates = [e["tokens_per_second"] for e in state.log_history if "tokens_per_second" in e]
    runtime, loss = train_loss(ctx, trained.output)
    tokens = ctx.metrics.get("num_tokens", ctx.carried.get("train_tokens"))
    return {
        "steps": state.global_step,
        "max_steps": state.max_steps,
        "epochs": state.epoch,
        "train_runtime_s": runtime,
        "tokens_per_second": (tokens / runtime)
        if tokens and runtime
        else (rates[-1] if rates else None),
        "final_loss": losses[-1] if losses else None,
        "train_loss": loss,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if ctx.device == "cuda" else None,
        **best_summary(ctx),
    }


def interrupted(ctx: RunContext, signum: int) -> RunInterrupted:
    state = getattr(ctx.trainer, "state", None)
    step = state.global_step if state is not None else ctx.plan.step if ctx.plan else 0
    total = f" of {state.max_steps}" if state is not None and state.max_steps > 0 else ""
    point = _newest_checkpoint(ctx.paths)
    saved = (
        f"{point.name} is saved, and a resume continues from there"
        if point is not None
        else "no checkpoint is saved yet, so a resume starts over"
    )
    if point is not None and point.step < step:
        saved += f" (the {step - point.step} step(s) since are trained again)"
    return RunInterrupted(
        f"interrupted by {signal.Signals(signum).name} at step {step}{total}; {saved}.",
        signum=signum,
        hint=f"Resume with the same command and --resume (run directory: {ctx.paths.root}).",
    )


def _newest_checkpoint(paths: RunPaths) -> Any:
    try:
        return choose_checkpoint(paths).checkpoint
    except SftkitError:
        return None


def record_ending(ctx: RunContext, error: BaseException) -> None:
    """run.json for a run that stopped early: how, at which step, what a resume continues
    from. On a full disk the lock's reserve is given back so that this write succeeds."""
    state = getattr(ctx.trainer, "state", None)
    point = _newest_checkpoint(ctx.paths)
    fields: dict[str, Any] = {
        "finished": now(),
        "error": f"{type(error).__name__}: {error}".splitlines()[0],
        "stopped_at_step": state.global_step if state is not None else None,
        "checkpoint": point.name if point is not None else None,
    }
    if isinstance(error, RunInterrupted):
        fields.update(status="interrupted", signal=signal.Signals(error.signum).name)
    else:
        fields["status"] = "failed"
        if isinstance(error, TrainingDivergedError):
            fields["failed_step"] = error.step
    for attempt in range(2):
        try:
            update_run_json(ctx.paths, **fields)
            return
        except OSError:
            if attempt == 0 and ctx.lock is not None:
                ctx.lock.release_reserve()
    log.error("could not record the run's end in %s", ctx.paths.run)


def write_report(ctx: RunContext, *, echo: Callable[[str], None]) -> None:
    """The run report (report.md, report.html, loss.png) from the finished run directory."""
    from sftkit.reporting.report import write_report as write

    try:
        files = write(ctx.run_dir)
    except SftkitError as exc:
        echo(f"[yellow]warning:[/yellow] no report: {exc}")
        return
    echo(f"report: {getattr(files, 'markdown', files)}")
