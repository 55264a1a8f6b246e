"""Techniques applied to each decoder layer of the model a run trains:

- tiled MLP (``training.tiled_mlp``): each layer's MLP runs in sequence tiles and is
  recomputed tile by tile in backward, keeping only its input (Arctic Long Sequence
  Training's TiledMLP, through liger-kernel's ``apply_tiled_mlp``, which is plain torch and
  runs on the CPU too). It wraps whatever MLP the layer has (LoRA, quantized, Liger's).
- regional compilation (``training.compile``): ``torch.compile`` of each decoder layer in
  place; the layers share one graph, so the first step compiles one layer, not the model.

The decoder layers are the modules transformers builds on its `GradientCheckpointingLayer`
(every decoder layer since 4.53), so no architecture is named here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def decoder_layers(model: Any) -> Iterator[Any]:
    from transformers.modeling_layers import GradientCheckpointingLayer

    from sftkit.training.loss import base_model

    for module in base_model(model).modules():
        if isinstance(module, GradientCheckpointingLayer):
            yield module


def install_tiled_mlp(model: Any) -> int:
    """Wrap each decoder layer's MLP forward in liger-kernel's tiled MLP; returns how many."""
    from liger_kernel.ops import apply_tiled_mlp

    count = 0
    for layer in decoder_layers(model):
        mlp = getattr(layer, "mlp", None)
        if mlp is None or getattr(mlp, "sftkit_tiled", False):
            continue
        plain = mlp.forward

        def tiled(x: Any, _plain: Any = plain, _mlp: Any = mlp) -> Any:
            return apply_tiled_mlp(lambda _module, tile: _plain(tile), _mlp, x)

        mlp.forward = tiled
        mlp.sftkit_tiled = True
        count += 1
    return count


def compile_layers(model: Any) -> int:
    """Compile each decoder layer in place (regional compilation); returns how many."""
    count = 0
    for layer in decoder_layers(model):
        layer.compile()
        count += 1
    return count
