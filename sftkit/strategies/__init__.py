"""Fine-tuning strategies: how the base model is loaded (dense or quantized) and which
weights train. Each builtin strategy plugin's factory returns a `Strategy` from here."""

from __future__ import annotations

from sftkit.strategies.base import Strategy

__all__ = ["Strategy"]
