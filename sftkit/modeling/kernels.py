"""The speed switches' requirements, checked when a run knows its device and before it loads
anything: Liger's fused kernels (``training.liger_kernels``) are Triton kernels for CUDA GPUs.

A run that asks for them on the CPU is refused rather than silently run without them: the
memory estimate and the expected speed both assume the kernels run, and turning them off is
one override. Validation and ``estimate-memory`` do not check this, so a GPU recipe can still
be validated and estimated on a laptop.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from sftkit.errors import MissingDependencyError, SftkitError

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe
    from sftkit.recipe.schema import Recipe


def check_kernels(recipe: Recipe, device: str) -> None:
    """Raise a typed error when the recipe's kernels cannot run on `device` ("cuda", "cpu")."""
    if recipe.training.tiled_mlp and importlib.util.find_spec("liger_kernel") is None:
        # liger-kernel's apply_tiled_mlp is plain torch: any device, but the package is needed
        raise MissingDependencyError("liger-kernel", "training.tiled_mlp")
    if not recipe.training.liger_kernels:
        return
    if device != "cuda":
        raise SftkitError(
            "training.liger_kernels is true, but Liger's fused kernels (RMSNorm, SwiGLU, RoPE) "
            f"are Triton kernels that need a CUDA GPU, and this run trains on {device}.",
            hint="Add the override training.liger_kernels=false to train on the CPU.",
        )
    if importlib.util.find_spec("liger_kernel") is None:
        raise MissingDependencyError("liger-kernel", "training.liger_kernels")


def check_inference_device(resolved: ResolvedRecipe, device: str) -> None:
    """Refuse, with the reason, to evaluate a model whose base storage cannot run a no-grad
    forward on `device` (the storage says why: e.g. bitsandbytes' CPU 4-bit kernel)."""
    from sftkit.errors import UnknownArchitectureError
    from sftkit.memory.estimator import shape_for

    storage = resolved.strategy_parts.storage
    try:
        shape = shape_for(resolved)
    except UnknownArchitectureError:
        return  # nothing to check it against; the evaluation itself will say
    reason = storage.inference_problem(shape, device)
    if reason:
        raise SftkitError(
            f"{resolved.source}: cannot evaluate the {resolved.strategy.spec.name} model "
            f"({resolved.recipe.model.name_or_path}) on {device}: {reason}.",
            hint="Evaluate on a GPU, or turn evaluation off for this CPU run with "
            "evaluation.before_training=false evaluation.after_training=false.",
        )
