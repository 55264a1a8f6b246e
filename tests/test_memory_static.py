"""The proof on CPU: for every compatible strategy x optimizer pair, the predicted bytes of
weights, trainable parameters, gradients and optimizer state equal the bytes of the real
tensors after one optimizer step (models built by sftkit's own build_model/build_optimizer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from sftkit.errors import RecipeError  # noqa: E402
from sftkit.recipe.load import load_recipe_text  # noqa: E402
from sftkit.testing import fresh_registry, static_bytes_after_one_step  # noqa: E402

STRATEGIES = ["full-sft", "lora", "qlora-nf4", "lora-8bit"]
OPTIMIZERS = ["adamw", "adamw-8bit", "paged-adamw-8bit", "paged-adamw-32bit", "adafactor", "sgd"]

LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
    "tie_word_embeddings": False,
    "max_position_embeddings": 256,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
# Tied embeddings, q/k/v biases, and one LoRA matrix above bitsandbytes' 4096-element
# 8-bit threshold and one below it.
QWEN2 = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 320,
    "tie_word_embeddings": True,
    "max_position_embeddings": 256,
}

# Every linear layer with a bias: bitsandbytes recasts quantized layers' biases at the first
# forward (4-bit: to the compute dtype; LLM.int8: to the input's dtype).
LLAMA_BIAS = {**LLAMA, "attention_bias": True, "mlp_bias": True}

OPTIONS = {
    "full-sft": "{}",
    "lora": "{rank: 4, alpha: 8}",
    "qlora-nf4": "{rank: 4, alpha: 8}",
    "lora-8bit": "{rank: 4, alpha: 8}",
}


def recipe_text(model_dir: Path, strategy: str, optimizer: str, **training: object) -> str:
    train = {
        "micro_batch_size": 2,
        "max_seq_length": 16,
        "gradient_checkpointing": False,
        **training,
    }
    return f"""
model: {{name_or_path: {model_dir}, dtype: bfloat16, random_init: true}}
strategy: {{name: {strategy}, options: {OPTIONS[strategy]}}}
optimizer: {{name: {optimizer}}}
training: {json.dumps(train)}
hardware: {{gpu: cpu}}
"""


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    dirs = {}
    for name, config in (("llama", LLAMA), ("qwen2", QWEN2), ("llama-bias", LLAMA_BIAS)):
        d = tmp_path_factory.mktemp(name)
        (d / "config.json").write_text(json.dumps(config))
        dirs[name] = d
    return dirs


def cases():
    for strategy in STRATEGIES:
        for optimizer in OPTIMIZERS:
            yield pytest.param("llama", strategy, optimizer, id=f"llama-{strategy}-{optimizer}")
    for strategy in STRATEGIES:
        yield pytest.param("qwen2", strategy, "adamw-8bit", id=f"qwen2-{strategy}-adamw-8bit")
    for strategy in ("qlora-nf4", "lora-8bit"):
        yield pytest.param("llama-bias", strategy, "adamw", id=f"llama-bias-{strategy}-adamw")


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(("arch", "strategy", "optimizer"), list(cases()))
def test_static_terms_equal_real_tensor_bytes(model_dirs, tmp_path, arch, strategy, optimizer):
    registry = fresh_registry()
    try:
        resolved = load_recipe_text(
            recipe_text(model_dirs[arch], strategy, optimizer), registry=registry
        )
    except RecipeError as exc:  # an incompatible pair is rejected by validation, not priced
        assert "cannot train" in str(exc)
        pytest.skip(f"{optimizer} cannot train {strategy}")
    torch.set_num_threads(1)
    # the same check a plugin author's test makes (sftkit's test kit)
    predicted, measured = static_bytes_after_one_step(resolved, tmp_path / "base")
    assert predicted.as_dict() == measured.as_dict()
    assert measured.optimizer_state > 0 or optimizer == "sgd"
