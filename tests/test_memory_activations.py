"""Activations on CPU: the bytes autograd saves for backward equal the estimator's per-layer
model, for each strategy, attention kernel and dtype setting checked here.

The CPU differs from CUDA in one known way the estimator models: a dropout mask is a tensor
of the input's dtype on CPU (a bool mask on CUDA). Gradient checkpointing is not measured
here (its own saved-tensor hooks hide what it keeps)."""

from __future__ import annotations

import dataclasses
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from sftkit.components.loss import LOSS_HEADS, TRL_HEAD  # noqa: E402
from sftkit.memory.estimator import shape_for  # noqa: E402
from sftkit.memory.layout import layout  # noqa: E402
from sftkit.memory.setup import setup_from_recipe  # noqa: E402
from sftkit.recipe.load import load_recipe_text  # noqa: E402
from sftkit.testing import fresh_registry  # noqa: E402
from sftkit.training.measure import (  # noqa: E402
    autocast_context,
    install_loss_head,
    predicted_saved_bytes,
    prepare_for_training,
    random_batch,
    saved_activation_bytes,
)

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
}
QWEN2 = {
    **LLAMA,
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "intermediate_size": 96,
    "vocab_size": 320,
    "tie_word_embeddings": True,
}

HEADS = {"fused": TRL_HEAD, **LOSS_HEADS}  # "full" is transformers' ForCausalLMLoss, per token

CASES = [
    # (id, config, strategy, strategy options, model dtype, attention, loss head)
    ("full-sft-sdpa", LLAMA, "full-sft", "{}", "bfloat16", "sdpa", "full"),
    ("full-sft-eager", LLAMA, "full-sft", "{}", "bfloat16", "eager", "full"),
    ("full-sft-fp32-weights-bf16-autocast", LLAMA, "full-sft", "{}", "float32", "sdpa", "full"),
    ("lora-sdpa", LLAMA, "lora", "{rank: 4, alpha: 8}", "bfloat16", "sdpa", "full"),
    ("lora-eager", LLAMA, "lora", "{rank: 4, alpha: 8}", "bfloat16", "eager", "full"),
    (
        "lora-no-dropout",
        LLAMA,
        "lora",
        "{rank: 4, alpha: 8, dropout: 0.0}",
        "bfloat16",
        "sdpa",
        "full",
    ),
    (
        "lora-q-v-only",
        LLAMA,
        "lora",
        "{rank: 8, target_modules: [q_proj, v_proj]}",
        "bfloat16",
        "sdpa",
        "full",
    ),
    ("qlora-sdpa", LLAMA, "qlora-nf4", "{rank: 4, alpha: 8}", "bfloat16", "sdpa", "full"),
    ("qlora-no-dropout", LLAMA, "qlora-nf4", "{rank: 4, dropout: 0.0}", "bfloat16", "sdpa", "full"),
    ("lora-8bit-sdpa", LLAMA, "lora-8bit", "{rank: 4, alpha: 8}", "bfloat16", "sdpa", "full"),
    # the dtype policy of a quantized base: bf16 embeddings, norms and lm_head; fp32 adapters
    (
        "qlora-bf16-non-quantized",
        LLAMA,
        "qlora-nf4",
        "{rank: 4, upcast_non_quantized: false}",
        "bfloat16",
        "sdpa",
        "chunked",
    ),
    (
        "qlora-fp32-adapters",
        LLAMA,
        "qlora-nf4",
        "{rank: 4, adapter_dtype: float32}",
        "bfloat16",
        "sdpa",
        "full",
    ),
    (
        "lora-8bit-bf16-non-quantized",
        LLAMA,
        "lora-8bit",
        "{rank: 4, upcast_non_quantized: false}",
        "bfloat16",
        "sdpa",
        "fused",
    ),
    ("qwen2-tied-lora", QWEN2, "lora", "{rank: 4}", "bfloat16", "sdpa", "full"),
    ("qwen2-tied-full-sft", QWEN2, "full-sft", "{}", "bfloat16", "sdpa", "full"),
    # sftkit's chunked cross-entropy (training.loss=chunked)
    ("chunked-full-sft", LLAMA, "full-sft", "{}", "bfloat16", "sdpa", "chunked"),
    ("chunked-lora", LLAMA, "lora", "{rank: 4}", "bfloat16", "sdpa", "chunked"),
    ("chunked-qlora", LLAMA, "qlora-nf4", "{rank: 4}", "bfloat16", "sdpa", "chunked"),
    ("chunked-qwen2-tied-full-sft", QWEN2, "full-sft", "{}", "bfloat16", "sdpa", "chunked"),
    # TRL's chunked log-prob head, as sftkit run computes the loss
    ("fused-head-full-sft", LLAMA, "full-sft", "{}", "bfloat16", "sdpa", "fused"),
    ("fused-head-lora", LLAMA, "lora", "{rank: 4}", "bfloat16", "sdpa", "fused"),
    ("fused-head-qlora", LLAMA, "qlora-nf4", "{rank: 4}", "bfloat16", "sdpa", "fused"),
    (
        "fused-head-qwen2-tied-lora-8bit",
        QWEN2,
        "lora-8bit",
        "{rank: 4}",
        "bfloat16",
        "sdpa",
        "fused",
    ),
]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(
    ("config", "strategy", "options", "dtype", "attn", "head"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_saved_activations_equal_the_model(tmp_path, config, strategy, options, dtype, attn, head):
    check(tmp_path, config, strategy, options, dtype, attn, head, batch=2)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("head", ["full", "fused", "chunked"])
def test_a_single_row_batch(tmp_path, head):
    # one row: slices of the labels and hidden states stay views of the whole storage
    check(tmp_path, LLAMA, "qlora-nf4", "{rank: 4}", "bfloat16", "sdpa", head, batch=1)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(
    ("attn", "packed", "tiled"),
    [
        ("sdpa", True, False),  # packed documents: transformers' s x s block-diagonal mask
        ("sftkit_sequence_sdpa", True, False),  # mask-free packing on the CPU
        ("sdpa", False, True),  # tiled MLP: 150 tokens in three tiles of 64-wide layers
        ("sftkit_sequence_sdpa", True, True),
    ],
    ids=["packed-dense-mask", "packed-mask-free", "tiled-mlp", "packed-mask-free-tiled"],
)
def test_sequence_terms_of_the_fast_paths(tmp_path, attn, packed, tiled):
    # every term that grows with the row: checked at a row longer than the hidden size
    check(
        tmp_path, LLAMA, "qlora-nf4", "{rank: 4, upcast_non_quantized: false}", "bfloat16",
        attn, "chunked", batch=1, seq=150, packed=packed, tiled=tiled,
    )  # fmt: skip


def check(
    tmp_path, config, strategy, options, dtype, attn, head, *, batch, seq=24, packed=False,
    tiled=False,
):  # fmt: skip
    from sftkit.attention import SEQUENCE_SDPA
    from sftkit.modeling import build_model

    if head == "fused":
        pytest.importorskip("trl")
    (tmp_path / "config.json").write_text(json.dumps(config))
    text = f"""
model: {{name_or_path: {tmp_path}, dtype: {dtype}, random_init: true, attn_implementation: sdpa}}
strategy: {{name: {strategy}, options: {options}}}
optimizer: {{name: adamw}}
training: {{micro_batch_size: {batch}, max_seq_length: {seq}, gradient_checkpointing: false, precision: bf16}}
hardware: {{gpu: cpu}}
"""
    resolved = load_recipe_text(text, registry=fresh_registry())
    # random tokens carry no padding: the unpadded attention path, unless packed with a mask
    setup = dataclasses.replace(
        setup_from_recipe(resolved, shape_for(resolved), on_gpu=False),
        attn_implementation=attn,
        padded=packed and attn == "sdpa",
        loss=HEADS[head],
        tiled_mlp=tiled,
    )
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if attn == SEQUENCE_SDPA:
        from sftkit.modeling.attention import register

        register()
    model = build_model(resolved, None, base_dir=tmp_path / "base")
    if attn != "sdpa":
        model.set_attn_implementation(attn)
    prepare_for_training(model, setup)
    import sftkit.training.loss as runtime

    functions = {"full": runtime.full_head, "chunked": runtime.chunked_head}
    forward, extra = install_loss_head(model, setup, functions.get(head))
    batch = {**random_batch(setup, "cpu"), **extra}
    if packed:  # three documents per row, kept apart by their position ids
        cut = [seq // 3, seq // 2]
        batch.pop("attention_mask")
        batch["position_ids"] = torch.cat(
            [torch.arange(n) for n in (cut[0], cut[1] - cut[0], seq - cut[1])]
        ).expand(batch["input_ids"].shape[0], -1)
        batch["use_cache"] = False
    saved, _ = saved_activation_bytes(model, batch, autocast_context(setup, "cpu"), forward)
    assert predicted_saved_bytes(setup, layout(setup)) == saved
