"""Building the optimizer from the recipe's optimizer plugin.

The trainer receives this object (``optimizers=(optimizer, None)``), never a string name,
so what trains is exactly what the registry and the memory estimator describe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sftkit.errors import SftkitError
from sftkit.specs import load_factory

if TYPE_CHECKING:
    import torch

    from sftkit.recipe.load import ResolvedRecipe


def param_groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: matrices decay; biases and norm weights (1-D) do
    not (the no-decay group carries ``weight_decay: 0.0``, overriding the optimizer's)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or name.endswith(".bias") else decay).append(param)
    groups: list[dict[str, Any]] = []
    if decay:
        groups.append({"params": decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(resolved: ResolvedRecipe, model: torch.nn.Module) -> torch.optim.Optimizer:
    import torch

    component = resolved.optimizer
    groups = param_groups(model)
    if not groups:
        raise SftkitError(
            f"strategy {resolved.strategy.spec.name!r} left no trainable parameters.",
        )
    optimizer = load_factory(component.spec.factory)(groups, component.options)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise SftkitError(
            f"optimizer {component.spec.name!r} (plugin {component.plugin!r}): its factory "
            f"{component.spec.factory!r} returned {type(optimizer).__name__}, not a "
            "torch.optim.Optimizer."
        )
    return optimizer


def optimizer_lr(optimizer: torch.optim.Optimizer) -> float:
    """The optimizer's base learning rate (0.0 for relative-step optimizers)."""
    lr = optimizer.param_groups[0].get("lr")
    return float(lr) if lr is not None else 0.0
