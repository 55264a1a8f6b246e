"""lora-plus: LoRA+ (Hayou, Ghosh, Yu 2024, "LoRA+: Efficient Low Rank Adaptation of Large
Models"). LoRA over a dense base, where the B matrices (zero-initialised, PEFT's ``lora_B``)
train at ``ratio`` times the learning rate of the A matrices; the paper finds a ratio of 16
works across models and tasks.

The rates are the optimizer's parameter groups, built before the optimizer and the
scheduler: transformers' schedulers (``LambdaLR``) scale each group's own initial rate, so
the ratio holds at every step, and a resumed run restores the groups with the optimizer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sftkit.errors import SftkitError
from sftkit.strategies.base import StrategyContext
from sftkit.strategies.groups import decays
from sftkit.strategies.lora import Lora

if TYPE_CHECKING:
    import torch


def is_lora_b(name: str) -> bool:
    """A parameter of a LoRA B matrix (``...q_proj.lora_B.default.weight``). Embedding
    adapters are left out: PEFT initialises their A (``lora_embedding_A``) to zero instead."""
    return "lora_B" in name.split(".")


def lora_plus_groups(model: torch.nn.Module, base_lr: float, ratio: float) -> list[dict[str, Any]]:
    """B matrices at ``ratio * base_lr``, everything else at the optimizer's rate; weight
    decay as in the default groups (none for biases and 1-D weights). Base-rate groups come
    first: the trainer logs the first group's rate as the run's learning rate."""
    buckets: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {
        (False, True): [],
        (False, False): [],
        (True, True): [],
        (True, False): [],
    }
    for name, param in model.named_parameters():
        if param.requires_grad:
            buckets[(is_lora_b(name), decays(name, param))].append(param)
    groups: list[dict[str, Any]] = []
    for (b_matrix, decay), params in buckets.items():
        if not params:
            continue
        group: dict[str, Any] = {"params": params}
        if b_matrix:
            group["lr"] = base_lr * ratio
        if not decay:
            group["weight_decay"] = 0.0
        groups.append(group)
    return groups


class LoraPlus(Lora):
    """LoRA over a dense base with LoRA+ learning rates (options: LoRA's plus ``ratio``)."""

    def param_groups(
        self,
        model: torch.nn.Module,
        ctx: StrategyContext,
        base_lr: float | None,
        weight_decay: float | None,
    ) -> list[dict[str, Any]] | None:
        if base_lr is None:
            raise SftkitError(
                f"lora-plus trains the B matrices at {self.options.ratio:g} x the optimizer's "
                f"learning rate, but optimizer {ctx.recipe.optimizer.name!r} has none "
                "(optimizer.options.lr is missing or null).",
                hint="Give the optimizer a fixed lr (for Adafactor: lr: 1.0e-3, "
                "relative_step: false), or use the strategy lora.",
            )
        return lora_plus_groups(model, base_lr, self.options.ratio)
