"""What a run does with the directory it claimed: start, continue, finish, or nothing.

`plan_run` decides, read-only, from run.json, final/ and the checkpoints:

- ``new``: a fresh run;
- ``done``: a completed run resumed again: final/ is complete and nothing is left to do, so
  nothing is written;
- ``evaluate``: final/ is complete but the run stopped before its evaluation or report;
- ``continue``: train on from the newest complete checkpoint (one at the last step only
  has final/ saved from it: `sftkit.training.trainer.AlreadyTrained`);
- ``restart``: no checkpoint to continue from (stopped before its first): start over.

A directory whose earlier run stopped before its first step (no checkpoint, no final/, no
step in metrics.jsonl: a missing data file, say) is free to reuse: the plan is ``new``, with
or without --resume, and says so in one line (`is_unstarted`).

`resumed_fields` gives run.json's fields for each kind: a continued run cuts metrics.jsonl
back to its checkpoint (`trim_metrics`), so the resumed run's events follow without a step
logged twice; an ``evaluate`` keeps every event and puts back a training summary that a kill
between saving final/ and writing run.json left out; a ``new`` run in a reused directory
starts run.json and metrics.jsonl afresh. Torch-free.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sftkit import atomic
from sftkit.errors import TrainingDivergedError
from sftkit.runpaths import CHECKPOINT_PREFIX, RunPaths
from sftkit.training.checkpoints import ResumePoint, choose_checkpoint, final_marker, inspect
from sftkit.training.runfiles import events, is_unstarted, now, read_json, unstarted_note

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe

PlanKind = Literal["new", "done", "evaluate", "continue", "restart"]
# The trainer's end-of-training summary event (one per attempt; rewritten for the whole run).
SUMMARY_KEY = "train_runtime"


@dataclass
class RunPlan:
    kind: PlanKind
    point: ResumePoint | None = None
    notes: list[str] = field(default_factory=list)
    final_step: int = 0  # ``evaluate``: the step final/ was saved at

    @property
    def checkpoint(self) -> Path | None:
        return self.point.checkpoint.path if self.point and self.point.checkpoint else None

    @property
    def step(self) -> int:
        """The step the run continues from (final/'s for ``evaluate``)."""
        if self.point and self.point.checkpoint:
            return self.point.checkpoint.step
        return self.final_step

    @property
    def weights_only(self) -> bool:
        return bool(self.point and self.point.weights_only)


def plan_run(
    paths: RunPaths, resolved: ResolvedRecipe, *, resume: bool, weights_only: bool = False
) -> RunPlan:
    record = read_json_safely(paths)
    if is_unstarted(paths):
        return RunPlan("new", notes=[unstarted_note(paths, record)])
    if not resume:
        return RunPlan("new")
    final = final_marker(paths)
    wanted = resolved.recipe.training.max_steps
    if final is not None:
        target = wanted if wanted is not None else final.get("max_steps", final["step"])
        if final["step"] >= target:
            step = final["step"]
            if record.get("status") == "completed":
                return RunPlan(
                    "done",
                    notes=[
                        f"{paths.root} is complete: trained {step} of {target} steps, final/ "
                        "saved. Nothing to do; nothing was changed."
                    ],
                )
            return RunPlan(
                "evaluate",
                final_step=step,
                notes=[
                    f"final/ is saved (step {step}): finishing the run's evaluation and report."
                ],
            )
    point = choose_checkpoint(paths, weights_only=weights_only)
    notes = [f"skipped {s.name}: {s.problem}" for s in point.skipped]
    if point.checkpoint is None:
        notes.append(
            f"no complete checkpoint in {paths.checkpoints}: the run starts over from step 0."
        )
        return RunPlan("restart", point, notes)
    chosen = point.checkpoint
    how = (
        " from its weights alone: a fresh optimizer state, the learning-rate schedule "
        f"continued at step {chosen.step} (not an exact resume)"
        if point.weights_only and chosen.problem
        else ""
    )
    notes.append(f"resuming from {chosen.name} (step {chosen.step}){how}.")
    return RunPlan("continue", point, notes)


def resumed_fields(paths: RunPaths, plan: RunPlan, record: dict[str, Any]) -> dict[str, Any]:
    """run.json's fields (besides status and times) for a run about to go on per `plan`;
    metrics.jsonl made to match (see the module docstring). `record` is run.json as it is."""
    if plan.kind == "new":
        # A reused directory (`is_unstarted`): nothing of the earlier attempt carries over
        # (an evaluation before training of another recipe would show in the report).
        for stale in (paths.run, paths.metrics):
            stale.unlink(missing_ok=True)
        for folder in (paths.eval, paths.tensorboard):
            shutil.rmtree(folder, ignore_errors=True)
        return {}
    fields: dict[str, Any] = {}
    if plan.kind == "evaluate":
        fields.update(recovered_summary(paths, plan.final_step, record))
    else:
        trim_metrics(paths, plan.step)
    how = plan.kind + (" (weights only)" if plan.weights_only else "")
    # The wall time of each earlier part, so that "completed in ..." counts the whole run.
    fields["earlier_parts_s"] = [*record.get("earlier_parts_s", []), part_seconds(paths, record)]
    fields["resumes"] = [
        *record.get("resumes", []),
        {"at": now(), "from_step": plan.step, "how": how},
    ]
    return fields


def part_seconds(paths: RunPaths, record: dict[str, Any]) -> float:
    """How long the part that ran last took: from its start (the run's, or its resume's) to
    its end as run.json recorded it, or, for a part killed before it could (kill -9), to the
    last write of its metrics. 0.0 when the times are unreadable."""
    resumes = record.get("resumes") or []
    begun = resumes[-1].get("at") if resumes else record.get("started")
    try:
        start = datetime.fromisoformat(str(begun)).timestamp()
        ended = record.get("finished")
        if ended:
            end = datetime.fromisoformat(str(ended)).timestamp()
        else:
            end = max(p.stat().st_mtime for p in (paths.metrics, paths.run) if p.exists())
    except (ValueError, TypeError, OSError):
        return 0.0
    return round(max(end - start, 0.0), 1)


def recovered_summary(paths: RunPaths, step: int, record: dict[str, Any]) -> dict[str, Any]:
    """The training summary of a run whose final/ is complete, where run.json lacks it
    (killed between saving final/ and recording the summary), from final/'s marker and the
    events metrics.jsonl kept: the trainer's end-of-training event holds the whole run's
    train_loss and runtime."""
    if "steps" in record:
        return {}
    logged = events(paths)
    losses = [e["loss"] for e in logged if "loss" in e]
    ending: dict[str, Any] = next((e for e in reversed(logged) if SUMMARY_KEY in e), {})
    marker = final_marker(paths) or {}
    runtime = ending.get(SUMMARY_KEY)
    tokens = next((e["num_tokens"] for e in reversed(logged) if "num_tokens" in e), None)
    return {
        "steps": step,
        "max_steps": marker.get("max_steps", step),
        "epochs": ending.get("epoch"),
        "train_runtime_s": runtime,
        "tokens_per_second": tokens / runtime if tokens and runtime else None,
        "final_loss": losses[-1] if losses else None,
        "train_loss": ending.get("train_loss"),
    }


def diverged_after_resume(
    error: TrainingDivergedError, paths: RunPaths, resumed_from: Path | None
) -> TrainingDivergedError:
    """`error` reworded when the loss diverged before any finite loss since a resume: the
    run trained fine up to its checkpoint, so the checkpoint (damaged in a way its marker
    cannot show, e.g. one written before sftkit recorded checksums) is the suspect, not the
    learning rate; the hint names the earlier checkpoint that checks out."""
    if resumed_from is None or not resumed_from.name.startswith(CHECKPOINT_PREFIX):
        return error
    step = int(resumed_from.name[len(CHECKPOINT_PREFIX) :])
    if any(
        isinstance(e.get("loss"), (int, float)) and math.isfinite(e["loss"]) and e["step"] > step
        for e in events(paths)
    ):
        return error
    earlier = next(
        (
            path
            for at, path in reversed(paths.checkpoint_dirs())
            if at < step and inspect(path, at).problem is None
        ),
        None,
    )
    aside = f"mv {resumed_from} {paths.root / (resumed_from.name + '.suspect')}"
    then = (
        f"{earlier.name} checks out: move {resumed_from.name} aside (`{aside}`) and resume "
        f"again; the run continues from {earlier.name}."
        if earlier is not None
        else f"No earlier checkpoint checks out: move {resumed_from.name} aside (`{aside}`) "
        "and resume again to start over."
    )
    return TrainingDivergedError(
        error.step,
        error.value,
        hint=f"This is the first step trained after resuming from {resumed_from.name}, and "
        f"the run trained without trouble up to it: {resumed_from.name} is likely damaged "
        f"(its weights or optimizer state), not the learning rate. {then}",
    )


def read_json_safely(paths: RunPaths) -> dict[str, Any]:
    try:
        return read_json(paths.run)
    except (OSError, ValueError):
        return {}


def trim_metrics(paths: RunPaths, step: int) -> int:
    """Keep the events of metrics.jsonl up to `step` (without earlier attempts' summaries
    or lines a killed run left half-written); the number of events dropped."""
    path = paths.metrics
    if not path.is_file():
        return 0
    kept: list[str] = []
    dropped = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        if not isinstance(event, dict) or SUMMARY_KEY in event or event.get("step", 0) > step:
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        atomic.write_text(path, "".join(f"{line}\n" for line in kept))
    return dropped
