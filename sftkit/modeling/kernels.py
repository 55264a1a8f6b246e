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

from sftkit.devices import is_cpu
from sftkit.errors import MissingDependencyError, SftkitError

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe
    from sftkit.recipe.schema import Recipe


def check_kernels(recipe: Recipe, device: str) -> None:
    """Raise a typed error when the recipe's kernels cannot run on `device` ("cuda", "cpu")."""
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


# bitsandbytes (0.50) repacks 4-bit weights for its CPU inference kernel in blocks of 64 input
# features; a linear layer whose input width is not a multiple of 64 fails there with a bare
# RuntimeError, in eval mode only (training takes another path).
BNB_CPU_4BIT_BLOCK = 64


def check_cpu_4bit_inference(resolved: ResolvedRecipe, device: str) -> None:
    """Refuse, with the reason, to run a 4-bit base in eval mode on the CPU when a quantized
    layer's input width does not fit bitsandbytes' CPU kernel."""
    if not is_cpu(device) or resolved.strategy.spec.base_storage != "4bit":
        return
    from sftkit.memory.compute import shape_for

    widths = sorted(
        {
            g.shape[1]
            for g in shape_for(resolved).census()
            if g.role == "linear" and g.shape[1] % BNB_CPU_4BIT_BLOCK
        }
    )
    if widths:
        raise SftkitError(
            f"{resolved.source}: evaluating a 4-bit ({resolved.strategy.spec.name}) model on "
            f"the CPU needs every quantized layer's input width to be a multiple of "
            f"{BNB_CPU_4BIT_BLOCK} (bitsandbytes' CPU 4-bit kernel), and "
            f"{resolved.recipe.model.name_or_path} has {', '.join(map(str, widths))}.",
            hint="Evaluate on a GPU, or turn evaluation off for this CPU run with "
            "evaluation.before_training=false evaluation.after_training=false.",
        )
