"""Folding LoRA into dense and bitsandbytes-quantized bases: the merged model computes what
base + adapter computed (CPU, tiny Llama)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from sftkit.errors import SftkitError  # noqa: E402
from sftkit.export.merge import describe_quantization, merge_adapters  # noqa: E402

INPUT = [[1, 40, 41, 42, 17, 18, 19, 60, 61, 5, 6, 7]]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # hidden 64: bitsandbytes' CPU 4-bit kernel needs rows of at least one 64-value block.
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=103,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    path = tmp_path_factory.mktemp("base")
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    return path


def load(base_dir: Path, quantization: str, dtype: Any) -> Any:
    config = None
    if quantization == "nf4":
        config = transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    elif quantization == "int8":
        config = transformers.BitsAndBytesConfig(load_in_8bit=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        base_dir, quantization_config=config, dtype=dtype
    )
    torch.manual_seed(1)
    # init_lora_weights=False: B is random, not zero, so the adapter changes the output.
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    return peft.get_peft_model(model, lora).eval()


def logits(model: Any) -> Any:
    with torch.no_grad():
        return model(torch.tensor(INPUT)).logits.float()


@pytest.mark.parametrize(
    ("quantization", "dtype", "tolerance", "label"),
    [
        # fp32: only summation order differs (bitsandbytes' CPU 4-bit kernel rounds a little).
        ("none", torch.float32, 1e-4, None),
        ("nf4", torch.float32, 3e-3, "4-bit NF4"),
        # bf16 weights and activations: a few bf16 ulps of the logits.
        ("none", torch.bfloat16, 0.06, None),
        ("nf4", torch.bfloat16, 0.06, "4-bit NF4"),
        ("int8", torch.bfloat16, 0.06, "8-bit LLM.int8"),
    ],
)
def test_merged_logits_match_base_plus_adapter(
    base_dir: Path, quantization: str, dtype: Any, tolerance: float, label: str | None
) -> None:
    model = load(base_dir, quantization, dtype)
    expected = logits(model)
    with model.disable_adapter():
        adapter_effect = (logits(model) - expected).abs().max()
    assert describe_quantization(model) == label
    merged = merge_adapters(model, dtype)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert describe_quantization(merged) is None
    assert not hasattr(merged.config, "quantization_config")
    got = logits(merged)
    error = (got - expected).abs().max()
    assert error <= tolerance, f"merged logits differ by {error}"
    assert error < adapter_effect / 10  # the adapter's own effect dwarfs the merge error
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


def test_merged_nf4_model_saves_and_reloads_as_plain_transformers(
    base_dir: Path, tmp_path: Path
) -> None:
    model = load(base_dir, "nf4", torch.bfloat16)
    merged = merge_adapters(model, torch.bfloat16)
    before = logits(merged)
    merged.save_pretrained(tmp_path / "out", max_shard_size="100KB")
    shards = sorted(p.name for p in (tmp_path / "out").glob("*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "out" / "model.safetensors.index.json").is_file()
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert again.dtype == torch.bfloat16
    assert describe_quantization(again) is None
    assert torch.equal(logits(again.eval()), before)


def test_dora_over_a_quantized_base_is_refused(base_dir: Path) -> None:
    config = transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=config)
    lora = peft.LoraConfig(r=4, target_modules=["q_proj"], use_dora=True)
    with pytest.raises(SftkitError, match="DoRA"):
        merge_adapters(peft.get_peft_model(model, lora), torch.bfloat16)
