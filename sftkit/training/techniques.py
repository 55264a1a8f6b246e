"""The memory techniques a recipe asks for, as functions the trainer applies to its model
once TRL's SFTTrainer has prepared it, so that what trains is what the recipe's components
declare (and the estimate prices):

- the adapter dtype a quantized base's storage declares (``strategy.options.adapter_dtype``),
  restored after SFTTrainer's own cast of a k-bit model's trainable parameters to bf16;
- the checkpointed layer inputs kept in host memory (``training.activation_offload``,
  `sftkit.training.offload`);
- Liger's layer kernels, tiled MLP and regional compilation of the decoder layers
  (``training.liger_kernels``, ``training.tiled_mlp``, ``training.compile``,
  `sftkit.training.layers`).

`SftkitTrainer` applies `memory_techniques(resolved)`; the measure mode and the tests the
same functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sftkit.components import Composition, Precision
from sftkit.dtypes import DTYPE_BYTES, PRECISION_BYTES

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe


def precision_of(resolved: ResolvedRecipe) -> Precision:
    r = resolved.recipe
    return Precision(DTYPE_BYTES[r.model.dtype], PRECISION_BYTES[r.training.precision])


def restore_declared_dtypes(model: Any, parts: Composition, p: Precision) -> None:
    """Trainable parameters over a quantized base get the dtype its storage declares for
    adapters (SFTTrainer has just cast them to bf16)."""
    if not parts.storage.quantized:
        return
    from sftkit.strategies.lora import cast_trainable

    cast_trainable(model, parts.storage.adapter_dtype(p))


def memory_techniques(resolved: ResolvedRecipe) -> tuple[Callable[[Any], object], ...]:
    parts, precision = resolved.strategy_parts, precision_of(resolved)
    techniques: list[Callable[[Any], object]] = [
        lambda model: restore_declared_dtypes(model, parts, precision)
    ]
    if resolved.recipe.training.activation_offload:
        from sftkit.training.offload import install

        techniques.append(install)
    t = resolved.recipe.training
    if t.liger_kernels:
        techniques.append(apply_liger_kernels)
    # after Liger's layer kernels (tiles wrap the MLP the layer ends up with), compile last
    if t.tiled_mlp:
        from sftkit.training.layers import install_tiled_mlp

        techniques.append(install_tiled_mlp)
    if t.compile:
        from sftkit.training.layers import compile_layers

        techniques.append(compile_layers)
    return tuple(techniques)


def apply_liger_kernels(model: Any) -> None:
    """Liger's Triton kernels for this architecture's layers (RoPE, RMSNorm, SwiGLU, ...),
    through liger-kernel's own per-model apply function, on this model instance. Its loss
    kernels stay off: the loss is TRL's fused head or the one ``training.loss`` names."""
    import inspect

    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    from sftkit.errors import SftkitError
    from sftkit.training.loss import base_model

    base = base_model(model)
    apply = MODEL_TYPE_TO_APPLY_LIGER_FN.get(base.config.model_type)
    if apply is None:
        raise SftkitError(
            f"training.liger_kernels: liger-kernel has no kernels for model type "
            f"{base.config.model_type!r}.",
            hint="Add the override training.liger_kernels=false.",
        )
    accepted = inspect.signature(apply).parameters
    off = {k: False for k in ("cross_entropy", "fused_linear_cross_entropy") if k in accepted}
    apply(model=base, **off)
