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
from dataclasses import dataclass
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

    def adapter_weight_bytes(self, p: Precision) -> int:
        """Element size adapters train in over this base (PEFT keeps them fp32)."""
        return FP32

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


class _KbitStorage(BaseStorage):
    """A bitsandbytes-quantized base prepared for k-bit training."""

    quantized = True

    def plain_bytes(self, p: Precision) -> int:
        # prepare_model_for_kbit_training: bf16/fp16 parameters -> fp32
        return FP32 if p.model_bytes < FP32 else p.model_bytes

    def _plain(self, group: TensorGroup, item: int) -> LaidTensor:
        return LaidTensor(
            group.name, "unquantized", group.shape, group.count, group.numel * item, item
        )

    def dequantized_bytes(self, shape: ModelShape, p: Precision) -> int:
        # bitsandbytes dequantizes one quantized weight at a time to the compute dtype for the
        # matmul (forward and the input gradient in backward).
        largest = max((g.numel for g in shape.census() if quantized(g)), default=0)
        return largest * p.compute_bytes

    def adapter_weight_bytes(self, p: Precision) -> int:
        # SFTTrainer.__init__ casts the trainable parameters of a k-bit model to bf16 (as the
        # QLoRA paper does).
        return 2

    def trained_copy_bytes(self, p: Precision) -> int:
        return 2  # the same SFTTrainer cast: every trainable parameter but DoRA's magnitude

    def weight_label(self, kind: str, shape: ModelShape, p: Precision) -> tuple[str, str]:
        if kind == "unquantized":
            return (
                "fp32 embeddings, norms and lm_head (upcast for k-bit training)",
                "4 bytes x non-linear parameters (peft.prepare_model_for_kbit_training)",
            )
        return super().weight_label(kind, shape, p)

    def notes(self, has_adapters: bool) -> list[str]:
        if not has_adapters:
            return []
        return ["adapters priced in bf16: SFTTrainer casts a k-bit model's LoRA weights to bf16."]


@dataclass(frozen=True)
class Bnb4bit(_KbitStorage):
    """bitsandbytes 4-bit (NF4 or FP4), optionally double-quantized, computing in
    `compute_dtype`."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    blocksize: int = 64
    compute_dtype: str = "bfloat16"

    def lay(self, group: TensorGroup, p: Precision) -> list[LaidTensor]:
        if quantized(group):
            q = four_bit_bytes(
                group.numel, blocksize=self.blocksize, double_quant=self.double_quant
            )
            return [
                LaidTensor(group.name, "base", group.shape, group.count, q.data, 1),
                LaidTensor(
                    group.name + " constants",
                    "quant_constants",
                    group.shape,
                    group.count,
                    q.constants,
                    FP32,
                ),
            ]
        item = self.plain_bytes(p)
        if group.role == "bias":
            # Linear4bit.forward casts a quantized layer's bias to the compute dtype at the
            # first forward.
            item = DTYPE_BYTES.get(self.compute_dtype, item)
        return [self._plain(group, item)]

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

    threshold: float = 6.0

    #: MatMul8bitLt keeps its input ``A`` for backward
    linear_saves_input = True

    def lay(self, group: TensorGroup, p: Precision) -> list[LaidTensor]:
        if quantized(group):
            q = int8_bytes(group.shape[0], group.shape[1])
            return [
                LaidTensor(group.name, "base", group.shape, group.count, q.data, 1),
                LaidTensor(
                    group.name + " SCB",
                    "quant_constants",
                    group.shape,
                    group.count,
                    q.constants,
                    FP32,
                ),
            ]
        item = self.plain_bytes(p)
        if group.role == "bias":
            item = self._bias_bytes(group, p, item)
        return [self._plain(group, item)]

    @staticmethod
    def _bias_bytes(group: TensorGroup, p: Precision, upcast: int) -> int:
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
