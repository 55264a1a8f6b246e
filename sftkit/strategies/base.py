"""The runtime strategy object: what a strategy spec's factory returns.

A strategy acts at three moments of a run, and sftkit calls it with a `StrategyContext`
each time (the recipe, this process's device, whether the engine shards parameters), so a
strategy never has to ask the distributed engines or the loader anything itself:

1. ``load_kwargs(ctx)``: extra keyword arguments for loading the base with
   ``AutoModelForCausalLM.from_pretrained`` (a ``BitsAndBytesConfig`` for a quantized base);
2. ``apply(model, ctx)``: the loaded base in, the model that trains out (freeze + adapters,
   or every weight trainable);
3. ``param_groups(model, ctx, base_lr, weight_decay)``: the optimizer's parameter groups
   (per-group learning rate and weight decay), or None for sftkit's default grouping. They
   are built before the optimizer and the learning-rate scheduler, so they are part of the
   optimizer's state and ``--resume`` restores them.

`StrategyProtocol` is the contract; `Strategy` implements it with defaults (full fine-tuning,
default groups) and is the class to subclass. sftkit may construct a strategy more than once
in a run (loading, building the optimizer, rebuilding it for a sharded model), so a strategy
keeps no state between calls: what it needs is in its options, the model and the context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from sftkit.recipe.schema import Recipe


@dataclass(frozen=True)
class StrategyContext:
    """What sftkit tells a strategy about the run it prepares a model for."""

    #: The validated recipe (``recipe.strategy.options`` are the strategy's own options too).
    recipe: Recipe
    #: Where this process trains: ``"cpu"`` or ``"cuda"``.
    device: str
    #: True when the engine splits the parameters themselves across ranks (FSDP, ZeRO-3):
    #: every tensor of a flattened unit must then share one float dtype.
    shards_parameters: bool


@runtime_checkable
class StrategyProtocol(Protocol):
    """The interface of a runtime strategy object; `Strategy` is a ready implementation."""

    def load_kwargs(self, ctx: StrategyContext) -> dict[str, Any]:
        """Extra keyword arguments for ``AutoModelForCausalLM.from_pretrained``."""
        ...

    def apply(self, model: torch.nn.Module, ctx: StrategyContext) -> torch.nn.Module:
        """Make `model` (the loaded base) ready to train; return the model that trains."""
        ...

    def param_groups(
        self,
        model: torch.nn.Module,
        ctx: StrategyContext,
        base_lr: float | None,
        weight_decay: float | None,
    ) -> list[dict[str, Any]] | None:
        """The optimizer's parameter groups for `model` (the model `apply` returned, possibly
        wrapped by the engine), or None for the default grouping."""
        ...


class Strategy:
    """Default strategy: a dense base where every weight trains (full fine-tuning), with the
    default optimizer groups. Subclass it and override what differs."""

    def __init__(self, options: Any = None) -> None:
        self.options = options

    def load_kwargs(self, ctx: StrategyContext) -> dict[str, Any]:
        """Extra keyword arguments for ``AutoModelForCausalLM.from_pretrained``."""
        return {}

    def apply(self, model: torch.nn.Module, ctx: StrategyContext) -> torch.nn.Module:
        """Make `model` (the loaded base) ready to train; return the model to train."""
        for param in model.parameters():
            param.requires_grad_(True)
        return model

    def param_groups(
        self,
        model: torch.nn.Module,
        ctx: StrategyContext,
        base_lr: float | None,
        weight_decay: float | None,
    ) -> list[dict[str, Any]] | None:
        """None: sftkit's default groups (`sftkit.strategies.groups.default_param_groups`:
        matrices decay, biases and 1-D weights do not)."""
        return None
