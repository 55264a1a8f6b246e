"""Stage 1, plan: everything decided before anything is written or loaded. Quick refusals
first (a locked directory, another recipe's run), then what the run will do (start, continue
from a checkpoint, only finish, nothing: `sftkit.training.resume`), the memory pre-flight
and the device's checks (kernels, loss head, inference)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sftkit.errors import DoesNotFitError, UnknownArchitectureError
from sftkit.preflight import check as check_before_loading
from sftkit.runpaths import RunPaths
from sftkit.training.lock import check_unlocked
from sftkit.training.preconditions import check_conditions
from sftkit.training.resume import RunPlan, plan_run
from sftkit.training.runfiles import check_run_dir

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe


@dataclass(frozen=True)
class RunRequest:
    """How the user asked for the run (`sftkit run`'s flags)."""

    resume: bool = False
    force: bool = False
    weights_only: bool = False


@dataclass(frozen=True)
class Planned:
    resolved: ResolvedRecipe
    paths: RunPaths
    plan: RunPlan
    notes: tuple[str, ...]  # to say at the start (the environment in effect, ...)
    estimate: dict[str, Any]  # memory.json ({} when there is nothing to do)
    device: str  # "" when there is nothing to do


def plan(resolved: ResolvedRecipe, request: RunRequest, say: Callable[..., None]) -> Planned:
    from sftkit.versions import check_training_stack

    check_training_stack("sftkit run")  # before anything is written or imported
    paths = RunPaths(Path(resolved.recipe.output_dir))
    check_unlocked(paths)  # quick refusals first, before any work
    notes = check_run_dir(paths, resolved, resume=request.resume)
    run_plan = plan_run(paths, resolved, resume=request.resume, weights_only=request.weights_only)
    if run_plan.kind == "done":  # nothing to do: not even the lock file is written
        return Planned(resolved, paths, run_plan, (*notes, *run_plan.notes), {}, "")
    estimate = preflight(resolved, force=request.force, echo=say)
    # Every problem that needs no heavy import, at once (data files, CUDA, offline cache).
    check_before_loading(resolved, machine=True)
    device = check_device(resolved)
    # Refuses an environment that contradicts the recipe; else what to say at the start.
    conditions = check_conditions(resolved, device, paths if request.resume else None)
    return Planned(resolved, paths, run_plan, tuple(conditions), estimate, device)


def check_device(resolved: ResolvedRecipe) -> str:
    """The device the run trains on, once it is known the recipe can run there."""
    from sftkit.modeling import training_device
    from sftkit.modeling.kernels import check_inference_device, check_kernels
    from sftkit.training.loss import check_loss_head

    recipe = resolved.recipe
    device = training_device(recipe)
    check_kernels(recipe, device)
    check_loss_head(resolved, device)
    evaluation = recipe.evaluation
    if evaluation.evaluators and (evaluation.before_training or evaluation.after_training):
        check_inference_device(resolved, device)
    return device


def preflight(
    resolved: ResolvedRecipe, *, force: bool, echo: Callable[[str], None]
) -> dict[str, Any]:
    """The memory estimate as a dict for memory.json; `DoesNotFitError` (exit 3) unless
    `force`. Runs before any model is loaded."""
    from sftkit.memory import estimate
    from sftkit.memory import preflight as memory_preflight

    try:
        result = memory_preflight(resolved)
    except UnknownArchitectureError as exc:
        # The estimator lacking an architecture is no reason to refuse the model.
        echo(
            "[yellow]warning:[/yellow] no memory estimate for this model, so no pre-flight "
            f"check: {exc.message}"
        )
        return {"unavailable": exc.message}
    except DoesNotFitError:
        if not force:
            raise
        result = estimate(resolved)
        echo(
            "[yellow]warning:[/yellow] the memory estimate does not fit "
            f"({result.peak_bytes / 2**30:.1f} GiB at {result.peak_phase}); running anyway (--force)."
        )
    data: dict[str, Any] = result.to_dict()
    return data
