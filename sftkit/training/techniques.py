"""What sftkit does to the trainer's model once TRL's SFTTrainer holds it, so that what trains
is what the recipe's components declare (and the estimate prices):

- the loss head ``training.loss`` names, in place of TRL's (`sftkit.training.loss`);
- the adapter dtype a quantized base's storage declares (``strategy.options.adapter_dtype``),
  restored after SFTTrainer's own cast of a k-bit model's trainable parameters to bf16;
- the checkpointed layer inputs kept in host memory (``training.activation_offload``,
  `sftkit.training.offload`).

`sftkit run` calls `after_trainer_built`; the measure mode and the tests call the same.
"""

from __future__ import annotations

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


def after_trainer_built(trainer: Any, resolved: ResolvedRecipe) -> None:
    from sftkit.training.loss import apply_loss_head

    restore_declared_dtypes(trainer.model, resolved.strategy_parts, precision_of(resolved))
    apply_loss_head(trainer, resolved)
    if resolved.recipe.training.activation_offload:
        from sftkit.training.offload import install

        install(trainer.model)
