"""Evaluation's merged copy: a dense bf16 model computing what base + adapter computes,
built beside the quantized model, which stays untouched (CPU, tiny Llama)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from sftkit.evaluation.merged import merged_copy  # noqa: E402
from sftkit.modeling.quantized import has_quantized_layers  # noqa: E402

INPUT = [[1, 40, 41, 42, 17, 18, 19, 60, 61, 5, 6, 7]]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def quantized_lora(tmp_path: Path, quantization: str) -> Any:
    # hidden 64: bitsandbytes' CPU 4-bit kernel needs rows of at least one 64-value block.
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=103, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path)
    bnb = (
        transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        if quantization == "nf4"
        else transformers.BitsAndBytesConfig(load_in_8bit=True)
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, quantization_config=bnb, dtype=torch.bfloat16
    )
    torch.manual_seed(1)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    return peft.get_peft_model(model, lora).eval()


def logits(model: Any) -> Any:
    with torch.no_grad():
        return model(torch.tensor(INPUT)).logits.float()


@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_the_merged_copy_computes_what_base_plus_adapter_computes(
    tmp_path: Path, quantization: str
) -> None:
    model = quantized_lora(tmp_path, quantization)
    expected = logits(model)
    with model.disable_adapter():
        adapter_effect = (logits(model) - expected).abs().max()
    copy = merged_copy(model)
    assert copy is not None and not has_quantized_layers(copy)
    assert not any("lora" in name for name, _ in copy.named_parameters())
    assert {p.dtype for p in copy.parameters()} == {torch.bfloat16}
    error = (logits(copy) - expected).abs().max()
    assert error <= 0.06 and error < adapter_effect / 10, (error, adapter_effect)
    # the model it was built from is untouched: still quantized, still adapted, the same
    # outputs (up to bf16 rounding: on a CPU, reading a 4-bit weight undoes bitsandbytes'
    # repacking for its CPU kernel, so the next forward takes the other kernel)
    assert has_quantized_layers(model) and any("lora_A" in n for n, _ in model.named_parameters())
    assert (logits(model) - expected).abs().max() < adapter_effect / 10


def test_no_copy_of_a_dense_model(tmp_path: Path) -> None:
    config = transformers.LlamaConfig(
        vocab_size=103, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    assert merged_copy(transformers.LlamaForCausalLM(config)) is None
