"""LoRA strategies: adapters over a frozen base kept dense (lora), in 4-bit NF4 (qlora-nf4) or
in LLM.int8 (lora-8bit). Adapters come from PEFT; quantization from bitsandbytes through
transformers' `BitsAndBytesConfig`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sftkit.dtypes import torch_dtype
from sftkit.strategies.base import Strategy, StrategyContext

if TYPE_CHECKING:
    import torch


class Lora(Strategy):
    """LoRA over a dense base."""

    def lora_config(self) -> Any:
        from peft import LoraConfig

        o = self.options
        targets = o.target_modules if o.target_modules == "all-linear" else list(o.target_modules)
        return LoraConfig(
            r=o.rank,
            lora_alpha=o.alpha,
            lora_dropout=o.dropout,
            target_modules=targets,
            use_rslora=o.use_rslora,
            use_dora=o.use_dora,
            bias="none",
            task_type="CAUSAL_LM",
        )

    def prepare_base(self, model: torch.nn.Module, ctx: StrategyContext) -> torch.nn.Module:
        for param in model.parameters():
            param.requires_grad_(False)
        return model

    def apply(self, model: torch.nn.Module, ctx: StrategyContext) -> torch.nn.Module:
        from peft import PeftModel, get_peft_model

        model = self.prepare_base(model, ctx)
        start = ctx.recipe.model.adapter
        peft_model: torch.nn.Module
        if start:  # the adapter a previous run trained, its own config, trainable
            peft_model = PeftModel.from_pretrained(model, start, is_trainable=True)
        else:
            peft_model = get_peft_model(model, self.lora_config())
        return peft_model


class QuantizedLora(Lora):
    """LoRA over a bitsandbytes-quantized base, prepared the way k-bit training needs."""

    def apply(self, model: torch.nn.Module, ctx: StrategyContext) -> torch.nn.Module:
        peft_model = super().apply(model, ctx)
        cast_trainable(peft_model, self.options.adapter_dtype)
        return peft_model

    def prepare_base(self, model: torch.nn.Module, ctx: StrategyContext) -> torch.nn.Module:
        prepared = self._prepare_kbit(model, ctx)
        if self.options.embeddings_on_host:
            from sftkit.strategies.host_embedding import move_embeddings_to_host

            move_embeddings_to_host(prepared)
            if ctx.recipe.training.gradient_checkpointing:
                # the input-gradient hook was on the table just replaced
                prepared.enable_input_require_grads()  # type: ignore[operator]
        return prepared

    def _prepare_kbit(self, model: torch.nn.Module, ctx: StrategyContext) -> torch.nn.Module:
        from peft import prepare_model_for_kbit_training

        if ctx.shards_parameters:
            # FSDP / ZeRO-3 flatten each unit of parameters into one dtype: keep the
            # non-quantized weights in the model dtype (no fp32 upcast; TRL does the same
            # for sharded QLoRA) and only freeze the base.
            return super().prepare_base(model, ctx)
        if not self.options.upcast_non_quantized:
            # What prepare_model_for_kbit_training does, less its fp32 upcast: freeze, and
            # let checkpointing see gradients through the frozen embeddings.
            frozen: Any = super().prepare_base(model, ctx)
            if ctx.recipe.training.gradient_checkpointing:
                frozen.enable_input_require_grads()
                frozen.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False}
                )
            return frozen
        # Freezes the base, upcasts the remaining fp16/bf16 weights (norms, embeddings, LM
        # head) to fp32 for stable training, and enables input gradients so gradient
        # checkpointing works through the frozen embeddings.
        prepared: torch.nn.Module = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=ctx.recipe.training.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        return prepared


class QLora(QuantizedLora):
    def load_kwargs(self, ctx: StrategyContext) -> dict[str, Any]:
        from transformers import BitsAndBytesConfig

        o = self.options
        # Sharded (FSDP, ZeRO-3): the packed 4-bit bytes stored as elements of the compute
        # dtype (bitsandbytes reads the bytes whatever the storage dtype), so the engine
        # flattens and shards them with the rest of the model; else bitsandbytes' uint8.
        storage = o.compute_dtype if ctx.shards_parameters else None
        return {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=o.quant_type,
                bnb_4bit_use_double_quant=o.double_quant,
                bnb_4bit_compute_dtype=torch_dtype(o.compute_dtype),
                **({"bnb_4bit_quant_storage": torch_dtype(storage)} if storage else {}),
            )
        }


class Lora8bit(QuantizedLora):
    def load_kwargs(self, ctx: StrategyContext) -> dict[str, Any]:
        from transformers import BitsAndBytesConfig

        return {
            "quantization_config": BitsAndBytesConfig(
                load_in_8bit=True, llm_int8_threshold=self.options.llm_int8_threshold
            )
        }


def cast_trainable(model: torch.nn.Module, dtype: str) -> None:
    """Give the trainable parameters of a model over a quantized base the adapter dtype the
    strategy declares (DoRA's magnitude stays fp32, as TRL keeps it). Called after the model
    is built and again once SFTTrainer has cast them to bf16."""
    target = torch_dtype(dtype)
    for name, param in model.named_parameters():
        if param.requires_grad and "lora_magnitude_vector" not in name and param.dtype != target:
            param.data = param.data.to(target)
