"""Adapters: what a strategy trains on top of its base storage.

- `FullTraining`: every base weight trains, in ``model.dtype``.
- `LoRA`: PEFT adds ``lora_A`` (rank x in) and ``lora_B`` (out x rank) per targeted linear
  layer, in fp32 (``get_peft_model(autocast_adapter_dtype=True)`` upcasts bf16/fp16
  adapters), plus a ``lora_magnitude_vector`` (out) with DoRA. Over a quantized base the
  storage says which dtype they train in (SFTTrainer casts them to bf16; the DoRA magnitude
  stays fp32).
- `TrainedCopies`: PEFT's ``modules_to_save`` keeps the original module frozen and trains a
  full copy of it (e.g. embeddings and LM head, to teach new special tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sftkit.components.storage import BaseStorage, count_words
from sftkit.components.tensors import LaidTensor, Precision
from sftkit.dtypes import DTYPE_NAMES, FP32
from sftkit.errors import SftkitError
from sftkit.modelshape.shape import ModelShape, TensorGroup


@dataclass(frozen=True)
class LowRankLayer:
    """A low-rank adapter on one linear module, as the activation model sees it."""

    rank: int
    dropout: float


class Adapter:
    """Something a strategy trains. Subclasses declare the tensors they add and what they
    change in the forward pass; the defaults add nothing."""

    #: every base weight trains (full fine-tuning)
    trains_base: bool = False

    def tensors(self, shape: ModelShape, storage: BaseStorage, p: Precision) -> list[LaidTensor]:
        """The tensors this adapter adds to the model (trainable ones marked so)."""
        return []

    def low_rank_layers(self, shape: ModelShape) -> dict[str, LowRankLayer]:
        """Linear modules (by module name, e.g. ``q_proj``) that get a low-rank branch."""
        return {}

    def trained_modules(self) -> frozenset[str]:
        """Whole modules (``embed_tokens``, ``lm_head``, ...) whose weights train."""
        return frozenset()

    def label(
        self, tensors: Sequence[LaidTensor], storage: BaseStorage, p: Precision
    ) -> tuple[str, str]:
        """(term name, formula) for the tensors this adapter added."""
        return ("adapter weights", "")

    def notes(self) -> list[str]:
        return []

    def saved_mismatch(self, config: dict[str, Any], shape: ModelShape) -> str | None:
        """Why a saved PEFT adapter's config (``model.adapter``; PEFT loads it as saved)
        would put other tensors on `shape` than this adapter declares, for what recipe
        validation cannot tell without the model; None when it agrees or says nothing."""
        return None

    def describe(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class FullTraining(Adapter):
    """Every base weight trains."""

    trains_base = True

    def describe(self) -> str:
        return "all weights train"


@dataclass(frozen=True)
class LoRA(Adapter):
    """LoRA (optionally DoRA) adapters on the linear layers named by `target_modules`."""

    rank: int = 16
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"
    dora: bool = False

    @classmethod
    def from_options(cls, options: Any) -> LoRA:
        """From an options model with LoRA's fields (sftkit's LoraOptions or a subclass)."""
        targets = options.target_modules
        return cls(
            rank=int(options.rank),
            dropout=float(options.dropout),
            target_modules=targets if isinstance(targets, str) else tuple(map(str, targets)),
            dora=bool(options.use_dora),
        )

    def targets(self, shape: ModelShape) -> list[TensorGroup]:
        """The linear groups LoRA adapts: ``all-linear`` is every decoder projection (PEFT
        excludes the output layer); a list matches module names (a suffix of the path)."""
        census = shape.census()
        if self.target_modules == "all-linear":
            return [g for g in census if g.role == "linear"]
        candidates = [g for g in census if g.role in ("linear", "lm_head")]

        def matches(g: TensorGroup, t: str) -> bool:
            return g.name.removesuffix(".weight").endswith(t)

        unmatched = [t for t in self.target_modules if not any(matches(g, t) for g in candidates)]
        if unmatched:
            names = sorted({g.module for g in candidates})
            raise SftkitError(
                f"strategy.options.target_modules: {', '.join(map(repr, unmatched))} match no "
                f"linear layer of this {shape.model_type} model; its linear layers are "
                f"{', '.join(names)}."
            )
        return [g for g in candidates if any(matches(g, t) for t in self.target_modules)]

    def saved_mismatch(self, config: dict[str, Any], shape: ModelShape) -> str | None:
        """``all-linear`` against the module list PEFT saved (or the reverse): compared by
        the linear layers each adapts on this model."""
        saved = config.get("target_modules")
        if isinstance(saved, list):
            saved = tuple(map(str, saved))
        elif saved != "all-linear":
            return None  # a regular expression, or nothing said
        if (self.target_modules == "all-linear") == (saved == "all-linear"):
            return None  # the same form: recipe validation compares them
        ours = sorted({g.module for g in self.targets(shape)})
        try:
            theirs = sorted({g.module for g in LoRA(target_modules=saved).targets(shape)})
        except SftkitError:
            theirs = sorted(saved)
        if ours == theirs:
            return None
        said = saved if isinstance(saved, str) else f"[{', '.join(saved)}]"
        return (
            f"the adapter adapts {', '.join(theirs)} (target_modules {said} in its config) "
            f"where strategy.options.target_modules adapt {', '.join(ours)}: set "
            f"strategy.options.target_modules=[{', '.join(theirs)}]."
        )

    def tensors(self, shape: ModelShape, storage: BaseStorage, p: Precision) -> list[LaidTensor]:
        r, item = self.rank, storage.adapter_weight_bytes(p)
        out = []
        for g in self.targets(shape):
            out_f, in_f = g.shape
            base = g.name.removesuffix(".weight")
            out.append(
                LaidTensor(
                    f"{base}.lora_A", "adapter", (r, in_f), g.count, r * in_f * item, item, True
                )
            )
            out.append(
                LaidTensor(
                    f"{base}.lora_B", "adapter", (out_f, r), g.count, out_f * r * item, item, True
                )
            )
            if self.dora:
                out.append(
                    LaidTensor(
                        f"{base}.lora_magnitude_vector",
                        "adapter",
                        (out_f,),
                        g.count,
                        out_f * FP32,
                        FP32,
                        True,
                    )
                )
        return out

    def low_rank_layers(self, shape: ModelShape) -> dict[str, LowRankLayer]:
        return {g.module: LowRankLayer(self.rank, self.dropout) for g in self.targets(shape)}

    def label(
        self, tensors: Sequence[LaidTensor], storage: BaseStorage, p: Precision
    ) -> tuple[str, str]:
        params = sum(t.numel * t.count for t in tensors)
        dtype = DTYPE_NAMES[storage.adapter_weight_bytes(p)]
        return (
            f"LoRA adapters, rank {self.rank}, {dtype} ({count_words(params)} trainable parameters)",
            "dtype bytes x r x (in + out) per adapted linear layer",
        )

    def notes(self) -> list[str]:
        if self.dora:
            return ["DoRA's weight-norm computation adds activations that are not counted."]
        return []

    def describe(self) -> str:
        kind = "DoRA" if self.dora else "LoRA"
        return f"{kind} rank {self.rank} on {self.target_modules if isinstance(self.target_modules, str) else ', '.join(self.target_modules)}"


@dataclass(frozen=True)
class TrainedCopies(Adapter):
    """Trained full copies of whole modules (PEFT ``modules_to_save``): the original stays
    frozen, the copy has the dtype of the weight it copies."""

    modules: tuple[str, ...] = field(default=("embed_tokens", "lm_head"))

    def _groups(self, shape: ModelShape) -> list[TensorGroup]:
        return [g for g in shape.census() if g.module in self.modules]

    def tensors(self, shape: ModelShape, storage: BaseStorage, p: Precision) -> list[LaidTensor]:
        item = storage.trained_copy_bytes(p)
        return [
            LaidTensor(
                f"{g.name.removesuffix('.weight')}.modules_to_save.weight",
                "copy",
                g.shape,
                g.count,
                g.numel * item,
                item,
                True,
            )
            for g in self._groups(shape)
        ]

    def trained_modules(self) -> frozenset[str]:
        return frozenset(self.modules)

    def label(
        self, tensors: Sequence[LaidTensor], storage: BaseStorage, p: Precision
    ) -> tuple[str, str]:
        params = sum(t.numel * t.count for t in tensors)
        item = storage.trained_copy_bytes(p)
        return (
            f"trainable copy of {'+'.join(sorted(self.modules))} ({count_words(params)} parameters)",
            f"{item} bytes x parameters of the copied modules (PEFT modules_to_save)",
        )

    def describe(self) -> str:
        return f"trained copies of {', '.join(self.modules)}"
