"""A strategy's parts for one set of options: one base storage and its adapters."""

from __future__ import annotations

from dataclasses import dataclass

from sftkit.components.adapters import Adapter, LowRankLayer
from sftkit.components.storage import BaseStorage
from sftkit.errors import SpecError
from sftkit.modelshape.shape import ModelShape


@dataclass(frozen=True)
class Composition:
    storage: BaseStorage
    adapters: tuple[Adapter, ...]

    def __post_init__(self) -> None:
        if not self.adapters:
            raise SpecError("a strategy must train something: it declares no adapter.")
        # Every parameter of a quantized base is frozen integer storage: nothing trains it.
        if self.trains_base and self.storage.quantized:
            raise SpecError(
                f"a strategy cannot train all weights of a {self.storage.describe()}: "
                "quantized weights cannot be trained directly. Train adapters over it "
                "(LoRA over the quantized base)."
            )

    @property
    def trains_base(self) -> bool:
        return any(a.trains_base for a in self.adapters)

    def trains_module(self, module: str) -> bool:
        """Does `module`'s weight (``embed_tokens``, ``lm_head``, a norm) train?"""
        return self.trains_base or any(module in a.trained_modules() for a in self.adapters)

    @property
    def has_adapters(self) -> bool:
        """Something besides the base weights trains (adapters, copies)."""
        return not self.trains_base

    def low_rank_layers(self, shape: ModelShape) -> dict[str, LowRankLayer]:
        out: dict[str, LowRankLayer] = {}
        for a in self.adapters:
            out.update(a.low_rank_layers(shape))
        return out

    def describe(self) -> str:
        return f"{self.storage.describe()}; " + "; ".join(a.describe() for a in self.adapters)
