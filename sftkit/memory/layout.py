"""Every tensor the built model holds, with its storage, dtype and whether it trains.

This is where strategy rules live (read from the strategy spec, never from its name):

- ``base_storage`` ``dense``: every parameter in ``model.dtype``.
- ``4bit`` / ``int8``: transformers' bitsandbytes integration replaces the decoder's
  ``nn.Linear`` layers (never ``lm_head``); everything else (embeddings, norms, biases,
  ``lm_head``) stays a plain parameter, which ``peft.prepare_model_for_kbit_training`` casts
  from bf16/fp16 to fp32.
- ``trains: adapters`` with ``adapter: lora``: PEFT adds ``lora_A`` (rank x in) and ``lora_B``
  (out x rank) per targeted linear layer, in fp32 (``get_peft_model(autocast_adapter_dtype=True)``
  upcasts bf16/fp16 adapters), plus a ``lora_magnitude_vector`` (out) with DoRA. Over a
  quantized base, TRL's ``SFTTrainer`` (sftkit's runner) then casts the adapters to bf16 as
  the QLoRA paper does (the DoRA magnitude stays fp32): that is the state that trains.
- ``trains: all``: every parameter trains, in ``model.dtype``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sftkit.dtypes import DTYPE_BYTES
from sftkit.errors import SftkitError
from sftkit.memory import quantization
from sftkit.memory.setup import Setup
from sftkit.modelshape.shape import TensorGroup

Kind = Literal["base", "quant_constants", "unquantized", "adapter", "buffer"]
FP32 = 4


@dataclass(frozen=True)
class LaidTensor:
    name: str
    kind: Kind
    shape: tuple[int, ...]
    count: int
    bytes_each: int
    dtype_bytes: int  # element size for trainable tensors (gradients/optimizer pricing)
    trainable: bool = False

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def total_bytes(self) -> int:
        return self.bytes_each * self.count


def lora_targets(setup: Setup) -> list[TensorGroup]:
    """The linear groups LoRA adapts: ``all-linear`` is every decoder projection (PEFT
    excludes the output layer); a list matches module names (a suffix of the path)."""
    options = setup.strategy_options
    targets = getattr(options, "target_modules", "all-linear")
    census = setup.shape.census()
    linears = [g for g in census if g.role == "linear"]
    if targets == "all-linear":
        return linears
    candidates = [g for g in census if g.role in ("linear", "lm_head")]
    chosen = [
        g
        for g in candidates
        if any(g.name.removesuffix(".weight").endswith(str(t)) for t in targets)
    ]
    unmatched = [
        t
        for t in targets
        if not any(g.name.removesuffix(".weight").endswith(str(t)) for g in candidates)
    ]
    if unmatched:
        names = sorted({g.module for g in candidates})
        raise SftkitError(
            f"strategy.options.target_modules: {', '.join(map(repr, unmatched))} match no linear "
            f"layer of this {setup.shape.model_type} model; its linear layers are {', '.join(names)}."
        )
    return chosen


def _quantized_bias_bytes(setup: Setup, g: TensorGroup, upcast: int) -> int:
    """A quantized layer's bias follows its input at the first forward: bitsandbytes'
    ``Linear4bit.forward`` casts it to the compute dtype, ``Linear8bitLt.forward`` to the
    input's dtype (the fp32 stream after k-bit preparation, bf16 attention output for
    o_proj, fp16 MLP product for down_proj)."""
    if setup.strategy.base_storage == "4bit":
        return DTYPE_BYTES.get(setup.quantization.compute_dtype, upcast)
    if g.module == "o_proj":
        return setup.compute_bytes if setup.autocast else setup.model_dtype_bytes
    if g.module == "down_proj":
        return 2  # LLM.int8 layers return fp16
    return upcast


def _rotary_buffers(setup: Setup) -> LaidTensor:
    # LlamaRotaryEmbedding-style: inv_freq and original_inv_freq, head_dim/2 fp32 each.
    half = setup.shape.head_dim // 2
    return LaidTensor("rotary inv_freq buffers", "buffer", (2, half), 1, 2 * half * FP32, FP32)


def layout(setup: Setup) -> list[LaidTensor]:
    shape, strategy = setup.shape, setup.strategy
    dtype = setup.model_dtype_bytes
    trains_all = strategy.trains == "all"
    quant = setup.quantization
    out: list[LaidTensor] = []
    for g in shape.census():
        if g.role == "linear" and strategy.base_storage == "4bit":
            q = quantization.four_bit(
                g.numel, blocksize=quant.blocksize, double_quant=quant.double_quant
            )
            out.append(LaidTensor(g.name, "base", g.shape, g.count, q.data, 1))
            out.append(
                LaidTensor(
                    g.name + " constants", "quant_constants", g.shape, g.count, q.constants, FP32
                )
            )
        elif g.role == "linear" and strategy.base_storage == "int8":
            q = quantization.int8(g.shape[0], g.shape[1])
            out.append(LaidTensor(g.name, "base", g.shape, g.count, q.data, 1))
            out.append(
                LaidTensor(g.name + " SCB", "quant_constants", g.shape, g.count, q.constants, FP32)
            )
        elif setup.quantized:
            # prepare_model_for_kbit_training: bf16/fp16 parameters -> fp32
            item = FP32 if dtype < FP32 else dtype
            if g.role == "bias":
                item = _quantized_bias_bytes(setup, g, item)
            out.append(LaidTensor(g.name, "unquantized", g.shape, g.count, g.numel * item, item))
        else:
            out.append(
                LaidTensor(
                    g.name, "base", g.shape, g.count, g.numel * dtype, dtype, trainable=trains_all
                )
            )
    out.append(_rotary_buffers(setup))
    if strategy.adapter == "lora":
        out.extend(_lora(setup))
    return out


def adapter_bytes(setup: Setup) -> int:
    """LoRA weight element size while training: fp32 from PEFT, bf16 over a quantized base
    (``SFTTrainer.__init__`` casts trainable parameters of a k-bit model to bf16)."""
    return 2 if setup.quantized else FP32


def _lora(setup: Setup) -> list[LaidTensor]:
    options = setup.strategy_options
    rank = int(getattr(options, "rank", 8))
    dora = bool(getattr(options, "use_dora", False))
    item = adapter_bytes(setup)
    out = []
    for g in lora_targets(setup):
        out_f, in_f = g.shape
        base = g.name.removesuffix(".weight")
        out.append(
            LaidTensor(
                f"{base}.lora_A", "adapter", (rank, in_f), g.count, rank * in_f * item, item, True
            )
        )
        out.append(
            LaidTensor(
                f"{base}.lora_B", "adapter", (out_f, rank), g.count, out_f * rank * item, item, True
            )
        )
        if dora:
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
