"""What a run does with the directory it claimed: start, continue, finish, or nothing.

`plan_run` decides, read-only, from run.json, final/ and the checkpoints:

- ``new``: a fresh run;
- ``done``: a completed run resumed again: final/ is complete and nothing is left to do, so
  nothing is written;
- ``evaluate``: final/ is complete but the run stopped before its evaluation or report;
- ``continue``: train on from the newest complete checkpoint (one at the last step only
  has final/ saved from it: `sftkit.training.trainer.AlreadyTrained`);
- ``restart``: no checkpoint to continue from (stopped before its first): start over.

`trim_metrics` cuts metrics.jsonl back to the checkpoint resumed from, so the resumed run's
events follow without a step logged twice. Torch-free.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sftkit.runpaths import RunPaths
from sftkit.training.checkpoints import ResumePoint, choose_checkpoint, final_marker
from sftkit.training.runfiles import read_json

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

    @property
    def checkpoint(self) -> Path | None:
        return self.point.checkpoint.path if self.point and self.point.checkpoint else None

    @property
    def step(self) -> int:
        return self.point.checkpoint.step if self.point and self.point.checkpoint else 0

    @property
    def weights_only(self) -> bool:
        return bool(self.point and self.point.weights_only)


def plan_run(
    paths: RunPaths, resolved: ResolvedRecipe, *, resume: bool, weights_only: bool = False
) -> RunPlan:
    if not resume:
        return RunPlan("new")
    record = read_json_safely(paths)
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
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
    return dropped
