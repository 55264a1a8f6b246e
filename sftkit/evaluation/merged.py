"""A bf16 copy of a quantized model with its adapters merged, for faster generation.

Generating with a bitsandbytes 4-bit (or LLM.int8) base dequantizes every weight again at
every decoding step; a dense copy does not. The copy holds what the adapters were trained
against (the dequantized base plus ``scale * B @ A``, added in fp32), as `sftkit export
--merge` does, but it is built beside the model, which stays untouched: evaluation during
training scores the copy and drops it before training resumes. Whether it fits is the
estimator's question (`sftkit.evaluation.batching.merged_copy_fits`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from sftkit.modeling.quantized import bnb_linear_types, dequantized_weight, has_quantized_layers


def merged_copy(model: Any, dtype: torch.dtype = torch.bfloat16) -> Any | None:
    """A plain transformers model computing what `model` (PEFT over a quantized base)
    computes, in `dtype`, on the model's device, in eval mode; None when `model` has no
    quantized layer (nothing to gain) or an adapter cannot be merged (DoRA)."""
    if not has_quantized_layers(model):
        return None
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    config = copy.deepcopy(inner.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    device = next(p.device for p in inner.parameters() if p.device.type != "meta")
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config, dtype=dtype)
    fresh.to_empty(device=device)
    quantized = bnb_linear_types()
    with torch.no_grad():
        for name, param in fresh.named_parameters():
            module_name, _, attr = name.rpartition(".")
            source = inner.get_submodule(module_name)
            if isinstance(source, LoraLayer):
                if any(source.use_dora.get(a, False) for a in source.active_adapters):
                    return None
                base = source.get_base_layer()
                if attr != "weight":
                    value = getattr(base, attr)
                else:
                    value = (
                        dequantized_weight(base) if isinstance(base, quantized) else base.weight
                    ).float()
                    lora: Any = source  # get_delta_weight is on LoRA's layer subclasses
                    for adapter in source.active_adapters:
                        if adapter in source.lora_A:
                            value = value + lora.get_delta_weight(adapter).float()
            elif isinstance(source, quantized) and attr == "weight":
                value = dequantized_weight(source)
            else:
                value = getattr(source, attr)
            param.copy_(value.to(device=device, dtype=dtype))
        for name, buffer in fresh.named_buffers():  # RoPE frequencies, kept in their dtype
            buffer.copy_(inner.get_buffer(name))
    if getattr(inner, "generation_config", None) is not None:
        fresh.generation_config = copy.deepcopy(inner.generation_config)
    fresh.config.use_cache = True
    return fresh.eval()


def evaluated_on_merged_copy(evaluator: Any, task: Any) -> Any:
    """`evaluator` run on a merged copy of `task.model` (or on the model itself when no copy
    can be made), the copy freed afterwards, before a training run resumes. The result's
    options record which model generated (``merged_copy_used``)."""
    import dataclasses

    copy_model = merged_copy(task.model)
    used = copy_model is not None
    try:
        on = dataclasses.replace(task, model=copy_model) if copy_model is not None else task
        result = evaluator.evaluate(on)
    finally:
        del copy_model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result.options = {**result.options, "merged_copy_used": used}
    return result
