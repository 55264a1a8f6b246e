"""Model FLOPs per token and model FLOPs utilization (MFU).

The convention is PaLM's (Chowdhury et al. 2022, appendix B): a training token costs
``6 N + 12 L H Q T`` FLOPs, where ``N`` counts the parameters of every matrix multiply (the
decoder's projections and the LM head; the embedding lookup multiplies nothing), ``L`` is the
number of layers, ``H Q`` the query width (heads x head dim) and ``T`` the sequence length.
The attention term is not halved for the causal mask, and recomputation under gradient
checkpointing is not counted: MFU measures useful model arithmetic per second, so it compares
across strategies. Adapter strategies compute no weight gradients for the frozen base (about
``4 N`` per token, not ``6 N``); under the same convention their MFU reads as the fraction of a
full training step's arithmetic they deliver per second.
"""

from __future__ import annotations

from dataclasses import dataclass

from sftkit.modelshape import ModelShape

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, in FLOP/s. Matched
# against torch.cuda.get_device_name() in order: the more specific name first.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200 NVL", 835e12),
    ("H200", 989.4e12),  # SXM
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989.4e12),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("GH200", 989.4e12),
    ("A100", 312e12),
    ("L40S", 362.05e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("RTX 4090", 165.2e12),
)


@dataclass(frozen=True)
class DevicePeak:
    name: str
    flops: float | None  # None: unknown device, MFU is not reported
    source: str


def device_peak(device_name: str, override_tflops: float | None = None) -> DevicePeak:
    """The bf16 dense peak of a device by its CUDA name (case-insensitive substring)."""
    if override_tflops is not None:
        return DevicePeak(device_name, override_tflops * 1e12, "--peak-tflops")
    lowered = device_name.lower()
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in lowered:
            return DevicePeak(device_name, flops, f"table entry {key!r}")
    return DevicePeak(device_name, None, "not in the table (pass --peak-tflops)")


def matmul_parameters(shape: ModelShape) -> int:
    """Parameters that take part in a matrix multiply per token: the decoder's linear
    weights and the LM head (counted even when tied to the embedding, which it multiplies)."""
    linear = sum(group.total for group in shape.linear_groups())
    return linear + shape.vocab_size * shape.hidden_size


def attention_flops_per_token(shape: ModelShape, seq_len: int) -> int:
    """12 L (H Q) T: scores and the weighted sum, forward (x1) and backward (x2)."""
    return 12 * shape.num_layers * shape.q_size * seq_len


def flops_per_token(shape: ModelShape, seq_len: int) -> int:
    """Training FLOPs per token: 6 N + 12 L H Q T."""
    return 6 * matmul_parameters(shape) + attention_flops_per_token(shape, seq_len)


def mfu(tokens_per_second: float, flops_per_token_: int, peak_flops: float | None) -> float | None:
    """Achieved model FLOP/s over the device peak; None when the peak is unknown."""
    if peak_flops is None or peak_flops <= 0:
        return None
    return tokens_per_second * flops_per_token_ / peak_flops
