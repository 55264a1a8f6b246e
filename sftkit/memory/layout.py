"""Every tensor the built model holds, with its storage, dtype and whether it trains.

The strategy's parts say it all: its base storage lays out each tensor of the parameter
census, each adapter adds its own tensors, and an adapter that trains the base marks the
base weights trainable. Nothing here knows which storage or adapter it is asking.
"""

from __future__ import annotations

from dataclasses import replace

from sftkit.components import LaidTensor
from sftkit.dtypes import FP32
from sftkit.memory.setup import Setup

__all__ = ["LaidTensor", "layout"]


def _rotary_buffers(setup: Setup) -> LaidTensor:
    # LlamaRotaryEmbedding-style: inv_freq and original_inv_freq, head_dim/2 fp32 each.
    half = setup.shape.head_dim // 2
    return LaidTensor("rotary inv_freq buffers", "buffer", (2, half), 1, 2 * half * FP32, FP32)


def layout(setup: Setup) -> list[LaidTensor]:
    shape, storage, p = setup.shape, setup.storage, setup.precision
    trains_base = setup.trains_base
    out: list[LaidTensor] = []
    for g in shape.census():
        for t in storage.lay(g, p):
            out.append(replace(t, trainable=True) if trains_base and t.kind == "base" else t)
    out.append(_rotary_buffers(setup))
    for adapter in setup.adapters:
        out.extend(adapter.tensors(shape, storage, p))
    return out
