"""The benchmark harness on CPU: FLOPs arithmetic, the random model, one grid point end to end
with a tiny model, and the report rendered from its JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import flops  # noqa: E402
from benchmarks.build_random_model import TINY_CONFIG  # noqa: E402

R1_CONFIG = REPO.parent / "shared" / "models" / "deepseek-r1-distill-llama-8b.json"


def _shape(config: dict):
    from sftkit.modelshape import shape_from_config

    return shape_from_config(config, name="test", source="test")


def _r1_config() -> dict:
    if R1_CONFIG.is_file():
        return json.loads(R1_CONFIG.read_text())
    # The same numbers, for checkouts without ../shared (see shared/models/README.md).
    return {
        **TINY_CONFIG,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "head_dim": 128,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
    }


def test_flops_of_the_8b_architecture_by_hand():
    shape = _shape(_r1_config())
    assert shape.parameters == 8_030_261_248
    # Per layer: q 4096x4096, k and v 1024x4096, o 4096x4096, gate/up/down 3 x 4096x14336.
    per_layer = 2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 4096 * 14336
    assert per_layer == 218_103_808
    assert flops.matmul_parameters(shape) == 32 * per_layer + 128256 * 4096 == 7_504_658_432
    # 12 L (H Q) T = 12 * 32 * 4096 * 2048
    assert flops.attention_flops_per_token(shape, 2048) == 3_221_225_472
    assert flops.flops_per_token(shape, 2048) == 45_027_950_592 + 3_221_225_472
    assert flops.flops_per_token(shape, 512) == 45_027_950_592 + 805_306_368


def test_flops_of_the_tiny_model_by_hand():
    shape = _shape(TINY_CONFIG)
    # q 64x64, k and v 32x64, o 64x64, MLP 3 x 64x128, two layers; head 1024x64.
    assert flops.matmul_parameters(shape) == 2 * (4096 + 2048 + 2048 + 4096 + 24576) + 65536
    assert flops.flops_per_token(shape, 16) == 6 * 139_264 + 12 * 2 * 64 * 16 == 860_160


def test_mfu_and_device_table():
    h100 = flops.device_peak("NVIDIA H100 80GB HBM3")
    assert h100.flops == 989.4e12
    assert flops.device_peak("NVIDIA H100 PCIe").flops == 756e12
    assert flops.device_peak("NVIDIA H200").flops == 989.4e12
    assert flops.device_peak("NVIDIA A100-SXM4-40GB").flops == 312e12
    assert flops.device_peak("NVIDIA L40S").flops == 362.05e12
    assert flops.device_peak("NVIDIA L4").flops == 121e12
    assert flops.device_peak("cpu").flops is None
    assert flops.device_peak("cpu", override_tflops=1.5).flops == 1.5e12
    # 5,000 tokens/s of 48.25 GFLOP each on a 989.4 TFLOP/s device: 24.4%.
    value = flops.mfu(5000, 48_249_176_064, h100.flops)
    assert value == pytest.approx(5000 * 48_249_176_064 / 989.4e12)
    assert round(value, 4) == 0.2438
    assert flops.mfu(5000, 48_249_176_064, None) is None
