"""Bytes of bitsandbytes-quantized weights, tensor by tensor (bitsandbytes 0.4x-0.50).

4-bit (``bitsandbytes.functional.quantize_4bit``): two 4-bit codes per uint8, one fp32 absmax
per block of 64 values, and a 16-entry fp32 code table (NF4 or FP4) per tensor. With double
quantization (``compress_statistics``) the absmax values are themselves quantized by
``quantize_blockwise(absmax - offset, blocksize=256)``: one uint8 per absmax, an fp32
second-level absmax per 256 of them, a private fp32 copy of the 256-entry dynamic code, and
the fp32 scalar offset.

8-bit LLM.int8 (``Int8Params._quantize`` -> ``int8_vectorwise_quant``): one int8 per weight
and one fp32 scale per output row (``SCB``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NF4_CODE_ENTRIES = 16  # get_4bit_type(): 16 fp32 values per tensor
DYNAMIC_CODE_ENTRIES = 256  # create_dynamic_map(): 256 fp32 values, copied per tensor
DOUBLE_QUANT_BLOCKSIZE = 256  # quantize_4bit(compress_statistics=True)
FP32 = 4


@dataclass(frozen=True)
class QuantizedBytes:
    data: int  # packed codes / int8 weights
    constants: int  # absmax, scales, code tables, offsets


def four_bit(numel: int, *, blocksize: int = 64, double_quant: bool) -> QuantizedBytes:
    packed = (numel + 1) // 2
    blocks = math.ceil(numel / blocksize)
    code = NF4_CODE_ENTRIES * FP32
    if not double_quant:
        return QuantizedBytes(packed, blocks * FP32 + code)
    second = math.ceil(blocks / DOUBLE_QUANT_BLOCKSIZE)
    constants = blocks + second * FP32 + DYNAMIC_CODE_ENTRIES * FP32 + FP32 + code
    return QuantizedBytes(packed, constants)


def int8(out_features: int, in_features: int) -> QuantizedBytes:
    return QuantizedBytes(out_features * in_features, out_features * FP32)
