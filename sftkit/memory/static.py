"""The static terms: bytes of tensors that exist whatever the batch, predicted from the recipe.

These are the figures `--measure` and tests/test_memory_static.py compare, byte for byte,
with the real tensors of a built model after one optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass

from sftkit.memory.layout import layout
from sftkit.memory.optimizer import optimizer_cost
from sftkit.memory.setup import Setup


@dataclass(frozen=True)
class StaticBytes:
    weights: int  # every parameter, quantization constant and buffer the model holds
    trainable: int  # parameters with requires_grad
    gradients: int
    optimizer_state: int  # all pools (device and paged)

    def as_dict(self) -> dict[str, int]:
        return {
            "weights": self.weights,
            "trainable": self.trainable,
            "gradients": self.gradients,
            "optimizer_state": self.optimizer_state,
        }


def static_bytes(setup: Setup) -> StaticBytes:
    tensors = layout(setup)
    opt = optimizer_cost(setup, tensors)
    return StaticBytes(
        weights=sum(t.total_bytes for t in tensors),
        trainable=opt.trainable_bytes,
        gradients=opt.gradient_bytes,
        optimizer_state=opt.state_bytes,
    )
