"""Base storages: how a strategy stores the frozen base model's weights.

Each storage lays out every tensor of the model's parameter census and answers the questions
the activation model asks about the base's linear layers (what they return, whether they keep
their input, what they dequantize). Byte counts of bitsandbytes' formats (0.4x-0.50):

4-bit (``bitsandbytes.functional.quantize_4bit``): two 4-bit codes per uint8, one fp32 absmax
per block of 64 values, and a 16-entry fp32 code table (NF4 or FP4) per tensor. With double
quantization (``compress_statistics``) the absmax values are themselves quantized by
``quantize_blockwise(absmax - offset, blocksize=256)``: one uint8 per absmax, an fp32
second-level absmax per 256 of them, a private fp32 copy of the 256-entry dynamic code, and
the fp32 scalar offset.

8-bit LLM.int8 (``Int8Params._quantize`` -> ``int8_vectorwise_quant``): one int8 per weight
and one fp32 scale per output row (``SCB``).

Over either, transformers' bitsandbytes integration replaces the decoder's ``nn.Linear``
layers (never ``lm_head``); everything else (embeddings, norms, biases, ``lm_head``) stays a
plain parameter, which ``peft.prepare_model_for_kbit_training`` casts from bf16/fp16 to fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from sftkit.components.tensors import LaidTensor, Precision
from sftkit.devices import is_cpu
from sftkit.dtypes import DTYPE_BYTES, DTYPE_NAMES, FP32
from sftkit.errors import Problem
from sftkit.modelshape.shape import ModelShape, TensorGroup

NF4_CODE_ENTRIES = 16  # get_4bit_type(): 16 fp32 values per tensor
DYNAMIC_CODE_ENTRIES = 256  # create_dynamic_map(): 256 fp32 values, copied per tensor
DOUBLE_QUANT_BLOCKSIZE = 256  # quantize_4bit(compress_statistics=True)
# bitsandbytes (0.50) repacks 4-bit weights for its CPU inference kernel in blocks of 64 input
# features; a linear layer whose input width is not a multiple of 64 fails there with a bare
# RuntimeError, in eval mode only (training takes another path).
BNB_CPU_4BIT_BLOCK = 64


@dataclass(frozen=True)
class QuantizedBytes:
    data: int  # packed codes / int8 weights
    constants: int  # absmax, scales, code tables, offsets


def four_bit_bytes(numel: int, *, blocksize: int = 64, double_quant: bool) -> QuantizedBytes:
    packed = (numel + 1) // 2
    blocks = math.ceil(numel / blocksize)
    code = NF4_CODE_ENTRIES * FP32
    if not double_quant:
        return QuantizedBytes(packed, blocks * FP32 + code)
    second = math.ceil(blocks / DOUBLE_QUANT_BLOCKSIZE)
    constants = blocks + second * FP32 + DYNAMIC_CODE_ENTRIES * FP32 + FP32 + code
    return QuantizedBytes(packed, constants)


def int8_bytes(out_features: int, in_features: int) -> QuantizedBytes:
    return QuantizedBytes(out_features * in_features, out_features * FP32)


def quantized(group: TensorGroup) -> bool:
    """Does a bitsandbytes base replace this tensor's layer (a decoder linear layer)?"""
    return group.role == "linear" and group.quantizable


def count_words(n: int) -> str:
    """8030261248 -> '8.0 B'; 41943040 -> '41.9 M'."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(n)


class BaseStorage:
    """How the base model's weights are stored. The defaults describe a dense base kept in
    ``model.dtype``; a quantized storage overrides what differs."""

    #: frozen integer storage: nothing can train the base weights directly
    quantized: bool = False

    #: the frozen input embedding table lives in host memory (a lookup on the CPU)
    embeddings_on_host: bool = False

    #: a generation engine beside the model (vLLM colocate) can load the base this way:
    #: TRL hands vLLM a 4-bit base as bitsandbytes, and vLLM has no in-flight 8-bit
    served_by_vllm: bool = True

    def host_label(self, p: Precision) -> tuple[str, str]:
        """(term name, formula) for the tensors kept in host memory."""
        dtype = DTYPE_NAMES.get(self.plain_bytes(p), "?")
        return (
            f"{dtype} input embedding table, in host memory (embeddings_on_host)",
            "vocabulary x hidden x plain dtype; looked up on the CPU, the rows copied over",
        )

    def lay(self, group: TensorGroup, p: Precision) -> list[LaidTensor]:
        """The tensors one census group becomes (base weights are laid frozen; an adapter
        that trains the base marks them trainable)."""
        return [
            LaidTensor(
                group.name,
                "base",
                group.shape,
                group.count,
                group.numel * p.model_bytes,
                p.model_bytes,
            )
        ]

    def plain_bytes(self, p: Precision) -> int:
        """Element size of the weights that stay plain parameters (embeddings, norms,
        lm_head), and so of trained copies of them."""
        return p.model_bytes

    def served_bytes(self, shape: ModelShape, p: Precision) -> int:
        """The base as an inference engine beside the model loads it from the checkpoint
        (vLLM colocate): the same quantization, every plain weight in ``model.dtype``, none
        in host memory."""
        served = self.as_served()
        return sum(t.total_bytes for group in shape.census() for t in served.lay(group, p))

    def as_served(self) -> BaseStorage:
        return self  # a dense base lays every weight on the device, in model.dtype

    def stream_bytes(self, p: Precision) -> int:
        """The residual stream's dtype: the embedding's output."""
        return self.plain_bytes(p)

    def linear_output_bytes(self, p: Precision, stream: int) -> int:
        """The dtype a base linear layer returns."""
        return p.matmul_bytes

    #: the base's linear layers keep their input for backward even when frozen
    linear_saves_input: bool = False

    def dequantized_bytes(self, shape: ModelShape, p: Precision) -> int:
        """A transient weight the forward builds from stored codes (largest one)."""
        return 0

    def adapter_dtype(self, p: Precision) -> str:
        """The dtype adapters train in over this base (PEFT keeps them fp32)."""
        return "float32"

    def adapter_weight_bytes(self, p: Precision) -> int:
        """Element size adapters train in over this base."""
        return DTYPE_BYTES[self.adapter_dtype(p)]

    def trained_copy_bytes(self, p: Precision) -> int:
        """Element size of a trained full copy of a plain module (PEFT modules_to_save
        copies the module as it is)."""
        return self.plain_bytes(p)

    def weight_label(self, kind: str, shape: ModelShape, p: Precision) -> tuple[str, str]:
        """(term name, formula) for this storage's tensors of one kind."""
        dtype = DTYPE_NAMES.get(p.model_bytes, "?")
        return (
            f"{dtype} weights of {count_words(shape.parameters)} parameters",
            f"{p.model_bytes} bytes x parameters",
        )

    def notes(self, has_adapters: bool) -> list[str]:
        return []

    def problems_when_sharded(self, strategy: str, engine: str, model_dtype: str) -> list[Problem]:
        """What stops an engine that shards parameters (FSDP, ZeRO-3) from sharding it."""
        return []

    def inference_problem(self, shape: ModelShape, device: str) -> str | None:
        """Why this base cannot run a no-grad forward (evaluation) on `device`, or None."""
        return None

    def describe(self) -> str:
        return "dense base in the model dtype"


@dataclass(frozen=True)
class Dense(BaseStorage):
    """Every weight a plain parameter in ``model.dtype``."""


@dataclass(frozen=True)
class _KbitStorage(BaseStorage):
    """A bitsandbytes-quantized base prepared for k-bit training.

    `upcast_non_quantized`: PEFT's ``prepare_model_for_kbit_training`` casts every bf16/fp16
    parameter that is not quantized (embeddings, norms, lm_head) to fp32; False keeps them
    in ``model.dtype``. `adapter_dtype`: what the adapters train in (TRL's SFTTrainer casts a
    k-bit model's trainable parameters to bf16; sftkit recasts them to this after it)."""

    upcast_non_quantized: bool = True
    adapter_dtype_name: str = "bfloat16"
    embeddings_on_host: bool = False

    quantized = True

    def as_served(self) -> BaseStorage:
        # no k-bit training preparation: the plain weights stay in the checkpoint's dtype
        return replace(self, embeddings_on_host=False, upcast_non_quantized=False)

    def plain_bytes(self, p: Precision) -> int:
        if not self.upcast_non_quantized:
            return p.model_bytes
        # prepare_model_for_kbit_training: bf16/fp16 parameters -> fp32
        return FP32 if p.model_bytes < FP32 else p.model_bytes

    #: name suffix of a quantized layer's constants tensor
    constants_suffix = " constants"

    def quantized_bytes(self, group: TensorGroup) -> QuantizedBytes:
        """The codes and constants one quantized linear weight becomes."""
        raise NotImplementedError

    def bias_bytes(self, group: TensorGroup, p: Precision, upcast: int) -> int:
        """A quantized layer's bias after the first forward (bitsandbytes recasts it)."""
        return upcast

    def lay(self, group: TensorGroup, p: Precision) -> list[LaidTensor]:
        """The decoder's linear weights quantized (codes, then constants); every other
        parameter plain, in the upcast dtype, a quantized layer's bias as the kernel
        recasts it."""
        if quantized(group):
            q = self.quantized_bytes(group)
            name, shape, count = group.name, group.shape, group.count
            return [
                LaidTensor(name, "base", shape, count, q.data, 1),
                LaidTensor(
                    name + self.constants_suffix,
                    "quant_constants",
                    shape,
                    count,
                    q.constants,
                    FP32,
                ),
            ]
        item = self.plain_bytes(p)
        if group.role == "bias":
            item = self.bias_bytes(group, p, item)
        # a frozen embedding table kept in host RAM (embeddings_on_host) is a lookup only
        host = self.embeddings_on_host and group.role == "embedding"
        return [
            LaidTensor(
                group.name,
                "unquantized",
                group.shape,
                group.count,
                group.numel * item,
                item,
                on_host=host,
            )
        ]

    def dequantized_bytes(self, shape: ModelShape, p: Precision) -> int:
        # bitsandbytes dequantizes one quantized weight at a time to the compute dtype for the
        # matmul (forward and the input gradient in backward).
        largest = max((g.numel for g in shape.census() if quantized(g)), default=0)
        return largest * p.compute_bytes

    def adapter_dtype(self, p: Precision) -> str:
        # SFTTrainer.__init__ casts the trainable parameters of a k-bit model to bf16 (as the
        # QLoRA paper does); sftkit recasts them to float32 when the options ask for it.
        return self.adapter_dtype_name

    def trained_copy_bytes(self, p: Precision) -> int:
        # the same casts: every trainable parameter but DoRA's magnitude
        return DTYPE_BYTES[self.adapter_dtype_name]

    def weight_label(self, kind: str, shape: ModelShape, p: Precision) -> tuple[str, str]:
        if kind == "unquantized":
            what = (
                "norms and lm_head" if self.embeddings_on_host else "embeddings, norms and lm_head"
            )
            if not self.upcast_non_quantized:
                dtype = DTYPE_NAMES.get(p.model_bytes, "?")
                return (
                    f"{dtype} {what} (kept in the model dtype)",
                    f"{p.model_bytes} bytes x non-linear parameters (upcast_non_quantized: false)",
                )
            return (
                f"fp32 {what} (upcast for k-bit training)",
                "4 bytes x non-linear parameters (peft.prepare_model_for_kbit_training)",
            )
        return super().weight_label(kind, shape, p)

    def notes(self, has_adapters: bool) -> list[str]:
        if not has_adapters:
            return []
        if self.adapter_dtype_name == "bfloat16":
            return [
                "adapters priced in bf16: SFTTrainer casts a k-bit model's LoRA weights to bf16."
            ]
        return [
            f"adapters priced in {DTYPE_NAMES[DTYPE_BYTES[self.adapter_dtype_name]]}: sftkit "
            "recasts them after SFTTrainer's bf16 cast (strategy.options.adapter_dtype)."
        ]


@dataclass(frozen=True)
class Bnb4bit(_KbitStorage):
    """bitsandbytes 4-bit (NF4 or FP4), optionally double-quantized, computing in
    `compute_dtype`."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    blocksize: int = 64
    compute_dtype: str = "bfloat16"

    def quantized_bytes(self, group: TensorGroup) -> QuantizedBytes:
        return four_bit_bytes(group.numel, blocksize=self.blocksize, double_quant=self.double_quant)

    def bias_bytes(self, group: TensorGroup, p: Precision, upcast: int) -> int:
        # Linear4bit.forward casts a quantized layer's bias to the compute dtype.
        return DTYPE_BYTES.get(self.compute_dtype, upcast)

    def linear_output_bytes(self, p: Precision, stream: int) -> int:
        return stream  # bitsandbytes 4-bit casts the output back to the input dtype

    def weight_label(self, kind: str, shape: ModelShape, p: Precision) -> tuple[str, str]:
        q = self.quant_type.upper()
        if kind == "base":
            linear = sum(g.total for g in shape.census() if quantized(g))
            return (
                f"{q} 4-bit weights of {count_words(linear)} linear-layer parameters",
                "ceil(n/2) bytes per tensor of n weights (two 4-bit codes per byte)",
            )
        if kind == "quant_constants":
            dq = "double-quantized " if self.double_quant else ""
            return (
                f"{q} {dq}quantization constants (absmax per {self.blocksize} weights, code tables)",
                "per tensor: ceil(n/64) uint8 absmax + 4*ceil(n/64/256) + 1024 + 4 + 64 bytes"
                if self.double_quant
                else "per tensor: 4*ceil(n/64) fp32 absmax + 64 bytes code",
            )
        return super().weight_label(kind, shape, p)

    def problems_when_sharded(self, strategy: str, engine: str, model_dtype: str) -> list[Problem]:
        if self.compute_dtype == model_dtype:
            return []
        return [
            Problem(
                "strategy.options.compute_dtype",
                f"a sharded 4-bit base is stored in its compute dtype ({self.compute_dtype}), "
                f"which must equal model.dtype ({model_dtype}) so every parameter the engine "
                "flattens has one dtype.",
                f"Set strategy.options.compute_dtype={model_dtype}.",
            )
        ]

    def inference_problem(self, shape: ModelShape, device: str) -> str | None:
        if not is_cpu(device):
            return None
        widths = sorted(
            {g.shape[1] for g in shape.census() if quantized(g) and g.shape[1] % BNB_CPU_4BIT_BLOCK}
        )
        if not widths:
            return None
        return (
            f"bitsandbytes' CPU 4-bit kernel needs every quantized layer's input width to be "
            f"a multiple of {BNB_CPU_4BIT_BLOCK}, and the model has {', '.join(map(str, widths))}"
        )

    def describe(self) -> str:
        dq = " double-quantized" if self.double_quant else ""
        return (
            f"bitsandbytes {self.quant_type.upper()}{dq} 4-bit base, {self.compute_dtype} compute"
        )


@dataclass(frozen=True)
class LlmInt8(_KbitStorage):
    """bitsandbytes LLM.int8: int8 weights with fp32 row scales; fp16 matmuls."""

    served_by_vllm = False

    threshold: float = 6.0

    #: MatMul8bitLt keeps its input ``A`` for backward
    linear_saves_input = True

    constants_suffix = " SCB"

    def quantized_bytes(self, group: TensorGroup) -> QuantizedBytes:
        return int8_bytes(group.shape[0], group.shape[1])

    def bias_bytes(self, group: TensorGroup, p: Precision, upcast: int) -> int:
        """``Linear8bitLt.forward`` casts a bias to its input's dtype at the first forward:
        the fp32 stream after k-bit preparation, the attention output (autocast's dtype) for
        o_proj, the fp16 MLP product for down_proj."""
        if group.module == "o_proj":
            return p.matmul_bytes
        if group.module == "down_proj":
            return 2  # LLM.int8 layers return fp16
        return upcast

    def linear_output_bytes(self, p: Precision, stream: int) -> int:
        return 2  # LLM.int8 computes and returns fp16

    def weight_label(self, kind: str, shape: ModelShape, p: Precision) -> tuple[str, str]:
        if kind == "base":
            linear = sum(g.total for g in shape.census() if quantized(g))
            return (
                f"LLM.int8 weights of {count_words(linear)} linear-layer parameters",
                "1 byte per weight",
            )
        if kind == "quant_constants":
            return (
                "LLM.int8 row scales (SCB, fp32 per output row)",
                "4 bytes x output features per linear layer",
            )
        return super().weight_label(kind, shape, p)

    def notes(self, has_adapters: bool) -> list[str]:
        return [
            *super().notes(has_adapters),
            "LLM.int8 also keeps outlier columns of each input (data-dependent, not counted).",
        ]

    def problems_when_sharded(self, strategy: str, engine: str, model_dtype: str) -> list[Problem]:
        return [
            Problem(
                "distributed.engine",
                f"strategy {strategy!r} keeps an LLM.int8 base, whose int8 weights and row "
                f"scales {engine} cannot shard.",
                "Use strategy qlora-nf4 (its 4-bit weights are stored as bf16 and shard), or "
                "engine: ddp, or deepspeed with zero_stage: 2.",
            )
        ]

    def describe(self) -> str:
        return "bitsandbytes LLM.int8 base"
