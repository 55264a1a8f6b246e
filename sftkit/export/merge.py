"""Folding LoRA adapters into their base: a standalone dense model.

Over a dense base, PEFT's own ``merge_and_unload`` does it. Over a bitsandbytes-quantized
base (QLoRA NF4, LLM.int8) PEFT would merge and then *re-quantize* each layer, which loses
the update in rounding; instead every quantized weight is dequantized, the LoRA update
``scale * B @ A`` is added in fp32, and the result is loaded into a fresh dense model of the
same architecture in the requested dtype (bf16 by default). The merged model therefore holds
the weights the adapters were trained against (the dequantized NF4 base), not the original
checkpoint's.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from sftkit.errors import SftkitError
from sftkit.modeling.quantized import bnb_linear_types, dequantized_weight, has_quantized_layers


def is_peft_model(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def merge_adapters(model: Any, dtype: torch.dtype) -> Any:
    """A plain ``transformers`` model with the adapters folded in, in `dtype`, eval mode."""
    if not is_peft_model(model):
        merged = model  # a full fine-tune: nothing to fold
    elif has_quantized_layers(model):
        merged = _merge_over_quantized(model, dtype)
    else:
        merged = model.merge_and_unload()
    _cast_parameters(merged, dtype)
    merged.config.use_cache = True  # training turns the KV cache off; inference wants it
    return merged.eval()


def _cast_parameters(model: Any, dtype: torch.dtype) -> None:
    """Cast weights only. `model.to(dtype)` would also cast fp32 buffers such as RoPE's
    inv_freq, which `from_pretrained` keeps in fp32: the saved model, reloaded, would then
    compute slightly differently from the one in memory."""
    for param in model.parameters():
        if param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
    model.config.dtype = dtype


def _merge_over_quantized(model: Any, dtype: torch.dtype) -> Any:
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    quantized = bnb_linear_types()
    merged_weights: dict[int, torch.Tensor] = {}
    module: Any
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        layer: Any = module  # the concrete LoRA layer classes define get_delta_weight
        base: Any = module.get_base_layer()
        weight: torch.Tensor = (
            dequantized_weight(base) if isinstance(base, quantized) else base.weight.float()
        )
        for adapter in module.active_adapters:
            if adapter not in module.lora_A:
                continue
            if module.use_dora.get(adapter, False):
                raise SftkitError(
                    f"cannot merge the DoRA adapter of {name} into a quantized base.",
                    hint="Export the adapter alone (without --merge).",
                )
            weight = weight + layer.get_delta_weight(adapter).float()
        merged_weights[id(base)] = weight
    base_model = model.unload()  # LoRA layers out; the quantized base layers stay
    child: Any
    for parent in list(base_model.modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, quantized):
                continue
            found = merged_weights.get(id(child))
            # A quantized layer without an adapter is dequantized as it is.
            weight = found if found is not None else dequantized_weight(child)
            dense = torch.nn.Linear(
                child.in_features, child.out_features, bias=child.bias is not None, device="meta"
            )
            dense.weight = torch.nn.Parameter(weight, requires_grad=False)
            if child.bias is not None:
                dense.bias = torch.nn.Parameter(child.bias.detach().float(), requires_grad=False)
            setattr(parent, child_name, dense)
    state = {k: v.detach().to(dtype) for k, v in base_model.state_dict().items()}
    config = copy.deepcopy(base_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=dtype)
    try:
        fresh.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SftkitError(
            f"the dequantized weights do not fit the {type(fresh).__name__} architecture: {exc}"
        ) from exc
    if getattr(base_model, "generation_config", None) is not None:
        fresh.generation_config = copy.deepcopy(base_model.generation_config)
    return fresh


def describe_quantization(model: Any) -> str | None:
    """``"4-bit NF4"`` / ``"8-bit LLM.int8"`` for a bitsandbytes base, else None."""
    types = bnb_linear_types()
    module: Any
    for module in model.modules():
        if types and isinstance(module, types[0]):
            state = getattr(module.weight, "quant_state", None)
            kind = str(getattr(state, "quant_type", "nf4")).upper()
            return f"4-bit {kind}"
        if types and isinstance(module, types[1]):
            return "8-bit LLM.int8"
    return None
