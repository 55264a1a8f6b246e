"""Fine-tuning strategies at run time: how the base model is loaded (dense or quantized),
which weights train and in which optimizer groups. Each strategy spec's factory returns an
object implementing `StrategyProtocol`; `Strategy` is the base class to subclass."""

from __future__ import annotations

from sftkit.strategies.base import Strategy, StrategyContext, StrategyProtocol
from sftkit.strategies.groups import check_param_groups, decays, default_param_groups

__all__ = [
    "Strategy",
    "StrategyContext",
    "StrategyProtocol",
    "check_param_groups",
    "decays",
    "default_param_groups",
]
