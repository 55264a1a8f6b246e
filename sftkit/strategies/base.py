"""What a strategy object does for the runner.

A strategy contributes two things, at two moments: keyword arguments for loading the base
(a `BitsAndBytesConfig` for quantized bases) and a transformation of the loaded base into the
model that trains (freeze + adapters, or everything trainable). Third-party strategy plugins
implement the same two methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from sftkit.recipe.schema import Recipe


class Strategy:
    """Base: a dense base where every weight trains (full fine-tuning)."""

    #: True when only adapter weights train and checkpoints hold adapters only.
    trains_adapters: bool = False
    #: True when the base is stored quantized (bitsandbytes 4-bit or 8-bit).
    quantized: bool = False

    def __init__(self, options: Any = None) -> None:
        self.options = options

    def load_kwargs(self, recipe: Recipe) -> dict[str, Any]:
        """Extra keyword arguments for `AutoModelForCausalLM.from_pretrained`."""
        return {}

    def apply(self, model: torch.nn.Module, recipe: Recipe) -> torch.nn.Module:
        """Make `model` (the loaded base) ready to train; return the model to train."""
        for param in model.parameters():
            param.requires_grad_(True)
        return model

    def describe(self, model: torch.nn.Module) -> dict[str, int]:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        return {"trainable_parameters": trainable, "total_parameters": total}
