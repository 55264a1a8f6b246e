"""bitsandbytes-quantized layers of a loaded model: which they are, and their weights
dequantized (shared by export's merge and evaluation's merged copy). torch at import: only
the modules that load models import this."""

from __future__ import annotations

from typing import Any

import torch


def bnb_linear_types() -> tuple[Any, ...]:
    try:
        import bitsandbytes as bnb
    except ImportError:  # pragma: no cover - bitsandbytes is in the train extra
        return ()
    return (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)


def has_quantized_layers(model: Any) -> bool:
    types = bnb_linear_types()
    return bool(types) and any(isinstance(m, types) for m in model.modules())


def dequantized_weight(module: Any) -> torch.Tensor:
    """The fp32 weight of a bitsandbytes linear layer."""
    from peft.utils.integrations import dequantize_bnb_weight

    weight = module.weight
    state = getattr(weight, "quant_state", None)
    if state is not None and getattr(state, "packing_format_for_cpu", False):
        # bitsandbytes repacks 4-bit weights for its CPU kernel on the first forward in eval
        # mode; dequantization expects the standard layout, so undo the repacking first.
        from sftkit.compat import unpack_cpu_4bit

        weight.data, weight.quant_state = unpack_cpu_4bit(weight.data, state)
        state = weight.quant_state
    if state is None:
        state = getattr(module, "state", None)  # LLM.int8 keeps its row scales here
    return dequantize_bnb_weight(weight, state=state).float()
