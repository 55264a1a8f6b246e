"""Building the optimizer from the recipe's optimizer plugin.

`SftkitTrainer.create_optimizer` builds it once, over the model as the engine left it (FSDP's
sharded parameters), never from a string name, so what trains is exactly what the registry and the memory estimator describe. The
parameter groups (the strategy's, or sftkit's default decay/no-decay split) are fixed here,
before the optimizer exists: the trainer's scheduler then scales each group's own rate, and
the groups are part of the optimizer state a checkpoint saves and ``--resume`` restores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sftkit.errors import SftkitError
from sftkit.specs import load_factory
from sftkit.strategies.groups import check_param_groups, default_param_groups

if TYPE_CHECKING:
    import torch

    from sftkit.recipe.load import ResolvedRecipe

# The default grouping, under the name tests and callers have always used.
param_groups = default_param_groups


def build_optimizer(resolved: ResolvedRecipe, model: torch.nn.Module) -> torch.optim.Optimizer:
    import torch

    from sftkit.modeling import load_strategy, strategy_context

    component = resolved.optimizer
    name = resolved.strategy.spec.name
    if not any(p.requires_grad for p in model.parameters()):
        raise SftkitError(f"strategy {name!r} left no trainable parameters.")
    options = component.options
    # Optimizer options without an lr (or with lr: null, a relative step size) give None.
    base_lr = getattr(options, "lr", None)
    weight_decay = getattr(options, "weight_decay", None)
    strategy = load_strategy(resolved)
    custom = strategy.param_groups(model, strategy_context(resolved.recipe), base_lr, weight_decay)
    groups = default_param_groups(model) if custom is None else custom
    groups = check_param_groups(groups, model, strategy=name)
    factory = load_factory(component.spec.factory)
    if resolved.recipe.training.optimizer_in_backward:
        from sftkit.optim.in_backward import OptimizerInBackward

        optimizer = OptimizerInBackward(groups, lambda one: factory(one, options))
    else:
        optimizer = factory(groups, options)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise SftkitError(
            f"optimizer {component.spec.name!r} (plugin {component.plugin!r}): its factory "
            f"{component.spec.factory!r} returned {type(optimizer).__name__}, not a "
            "torch.optim.Optimizer."
        )
    return optimizer
