"""Stage 2, claim the run directory: take its lock (one writer at a time; never another
run's directory), plan again now that the directory is ours (another process may have been
quicker), then write recipe.yaml, memory.json, environment.json and run.json (running), and
read what the resumed checkpoint carried. The returned context holds the lock until
`ctx.release()`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.markup import escape

from sftkit.devices import is_cpu
from sftkit.quiet import log_to
from sftkit.training.checkpoints import discard_partial
from sftkit.training.context import RunContext
from sftkit.training.lock import RunLock, command_line
from sftkit.training.preconditions import training_variables
from sftkit.training.resume import plan_run, read_json_safely, resumed_fields
from sftkit.training.runfiles import (
    check_run_dir,
    environment,
    now,
    update_run_json,
    write_json,
    write_recipe,
)
from sftkit.training.stages.plan import Planned, RunRequest

# Fields of run.json that describe how an earlier attempt ended.
ENDING_FIELDS = ("stopped_at_step", "signal", "failed_step", "checkpoint")


def claim(planned: Planned, request: RunRequest, say: Callable[..., None]) -> RunContext:
    resolved, paths = planned.resolved, planned.paths
    lock = RunLock.acquire(
        paths,
        command=command_line(),
        echo=lambda m: say(f"[yellow]note:[/yellow] {escape(m)}"),
    )
    try:
        notes = check_run_dir(paths, resolved, resume=request.resume)
        plan = plan_run(paths, resolved, resume=request.resume, weights_only=request.weights_only)
        for note in (*notes, *plan.notes, *planned.notes):
            say(note, markup=False)
        ctx = RunContext(
            resolved=resolved, paths=paths, device=planned.device, plan=plan, lock=lock
        )
        if plan.kind == "done":
            return ctx
        _write_directory(ctx, planned.estimate, say)
    except BaseException:
        lock.release()
        raise
    if plan.checkpoint is not None:
        from sftkit.training.trainer import load_carry

        ctx.resumed_from, ctx.weights_only = plan.checkpoint, plan.weights_only
        ctx.carried = load_carry(plan.checkpoint, 0)
    return ctx


def _write_directory(ctx: RunContext, estimate: dict[str, Any], say: Callable[..., None]) -> None:
    paths, plan, recipe = ctx.paths, ctx.plan, ctx.recipe
    discarded = discard_partial(paths)
    if discarded:
        say(
            f"discarded what an interrupted save left unfinished: {', '.join(discarded)}",
            markup=False,
        )
    paths.root.mkdir(parents=True, exist_ok=True)
    _speak_at_start(ctx, say)
    if plan.kind == "new":
        write_recipe(paths, ctx.resolved)
    write_json(paths.memory, estimate)
    write_json(paths.environment, environment(ctx.device))
    record = read_json_safely(paths)
    fields: dict[str, Any] = {
        "status": "running",
        "finished": None,
        "error": None,
        "model": recipe.model.name_or_path,
        "strategy": recipe.strategy.name,
        "optimizer": recipe.optimizer.name,
        "device": ctx.device,
        "environment_variables": training_variables(),
        "resumed_from": str(plan.checkpoint) if plan.checkpoint else None,
    }
    if plan.kind == "new" or "started" not in record:
        fields["started"] = now()
    fields.update(resumed_fields(paths, plan, record))  # metrics.jsonl made to match
    update_run_json(paths, drop=ENDING_FIELDS, **fields)


def _speak_at_start(ctx: RunContext, say: Callable[..., None]) -> None:
    """Route the libraries' output to the run's log, and say once what the user should know
    that a library would otherwise have said in a warning."""
    from sftkit.modeling import trust_remote_code_notice

    recipe = ctx.recipe
    log_to(ctx.paths.log)  # the CLI's library log (a run started from Python logs as it set)
    if recipe.model.trust_remote_code:
        say(trust_remote_code_notice(recipe))
    if getattr(ctx.resolved.optimizer.spec, "paged", False) and is_cpu(ctx.device):
        # bitsandbytes says so in a UserWarning (now in the log file); say it plainly.
        say(
            f"[yellow]note:[/yellow] {recipe.optimizer.name} pages its state to host memory "
            "only on CUDA; on the CPU it runs unpaged."
        )
