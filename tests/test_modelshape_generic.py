"""Models outside the catalog: the generic shape's census against transformers on the meta
device, tensor by tensor, for families the catalog does not list (MoE included); the
estimate says which terms are generic; without torch the error says how to get this path;
`sftkit run` trains a model the estimator cannot read instead of refusing it."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from sftkit.errors import UnknownArchitectureError
from sftkit.modelshape import shape_from_config
from sftkit.modelshape.families import FAMILIES
from sftkit.modelshape.generic import GENERIC_TERMS, generic_shape

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ATTN = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 160}
# Tiny configs of families the catalog does not list, built locally (no network).
CONFIGS = {
    "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 160, "n_positions": 64},
    "falcon": {**ATTN},
    "falcon-new": {**ATTN, "new_decoder_architecture": True, "num_kv_heads": 2},
    "olmo2": {**ATTN, "intermediate_size": 96},
    "granite": {**ATTN, "intermediate_size": 96, "num_key_value_heads": 2},
    "starcoder2": {**ATTN, "intermediate_size": 96, "num_key_value_heads": 2},
    "mixtral": {
        **ATTN,
        "intermediate_size": 96,
        "num_key_value_heads": 2,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
    },
    "qwen2_moe": {
        **ATTN,
        "intermediate_size": 96,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 48,
        "num_key_value_heads": 2,
        "num_experts": 4,
        "num_experts_per_tok": 2,
    },
    "gemma3_text": {**ATTN, "intermediate_size": 96, "num_key_value_heads": 2, "head_dim": 16},
    "phi": {**ATTN, "intermediate_size": 96, "pad_token_id": 0},  # 5.0's PhiConfig needs it
}


def config_of(key: str) -> dict:
    return {"model_type": key.split("-")[0], **CONFIGS[key]}


def meta_model(config: dict):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cfg = CONFIG_MAPPING[config["model_type"]].from_dict(dict(config))
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    model.tie_weights()  # as from_pretrained does (transformers 5.0's from_config does not)
    return model


@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_generic_census_equals_transformers_tensor_by_tensor(key):
    config = config_of(key)
    assert config["model_type"] not in FAMILIES
    shape = shape_from_config(config, name=key)
    model = meta_model(config)
    assert shape.generic == GENERIC_TERMS
    assert shape.parameters == model.num_parameters()
    # Every real tensor is in exactly one group of its (layer-pattern) name and shape.
    real: dict[tuple[str, int], int] = {}
    for name, p in model.named_parameters():
        pattern = re.sub(r"\.\d+(?=\.)", ".*", name)
        real[pattern, p.numel()] = real.get((pattern, p.numel()), 0) + 1
    listed = {(g.name, g.numel): g.count for g in shape.census()}
    assert listed == real


def test_numbers_come_from_the_configs_standard_fields():
    gpt2 = shape_from_config(config_of("gpt2"))
    assert (gpt2.hidden_size, gpt2.num_layers, gpt2.num_heads, gpt2.num_kv_heads) == (64, 2, 4, 4)
    assert gpt2.intermediate_size == 256 and not gpt2.gated_mlp and gpt2.tie_word_embeddings
    # GPT-2's Conv1D stores (in, out); the census gives (out, in) like nn.Linear
    c_attn = next(g for g in gpt2.census() if g.name.endswith("c_attn.weight"))
    assert c_attn.role == "linear" and c_attn.shape == (192, 64)
    assert gpt2.attention_input_modules == ("c_attn",) and gpt2.mlp_input_modules == ("c_fc",)

    falcon = shape_from_config(config_of("falcon"))
    assert falcon.num_kv_heads == 1  # multi-query by default
    assert shape_from_config(config_of("falcon-new")).num_kv_heads == 2
    # FalconLinear subclasses nn.Linear: LoRA adapts it, bitsandbytes leaves it plain
    dense = next(g for g in falcon.census() if g.name.endswith("dense_h_to_4h.weight"))
    assert dense.role == "linear" and not dense.quantizable

    gemma3 = shape_from_config(config_of("gemma3_text"))
    assert gemma3.norms_per_layer == 4 and gemma3.qk_norm and gemma3.gated_mlp

    mixtral = shape_from_config(config_of("mixtral"))
    assert (mixtral.num_experts, mixtral.experts_per_token) == (4, 2)
    assert mixtral.mlp_width == 2 * 96 and mixtral.gated_mlp
    experts = [g for g in mixtral.census() if g.role == "other" and len(g.shape) == 3]
    assert experts and all(g.shape[0] == 4 for g in experts)

    qwen = shape_from_config(config_of("qwen2_moe"))
    assert qwen.mlp_width == 2 * 32 + 48 and qwen.qkv_bias and not qwen.o_bias


def test_a_catalog_family_through_the_generic_path_gives_the_same_estimate():
    """The generic numbers and module names reproduce the catalog's for a Llama, so the
    activation terms of a generic model are the catalog's formulas, not a new guess."""
    from sftkit.memory import activations as act
    from sftkit.memory.setup import setup_from_recipe
    from sftkit.recipe.load import load_recipe
    from sftkit.testing import fresh_registry

    config = {**ATTN, "model_type": "llama", "intermediate_size": 96, "num_key_value_heads": 2}
    catalog = shape_from_config(config)
    generic = generic_shape(config, name="<config>", source="config.json")
    assert catalog.parameters == generic.parameters
    for field in ("hidden_size", "num_kv_heads", "head_dim", "norms_per_layer", "gated_mlp"):
        assert getattr(catalog, field) == getattr(generic, field), field
    assert generic.attention_input_modules == catalog.attention_input_modules
    assert generic.mlp_output_module == catalog.mlp_output_module
    resolved = load_recipe(
        str(Path(__file__).resolve().parent.parent / "recipes" / "r1_gsm8k_qlora.yaml"),
        registry=fresh_registry(),
    )
    a = setup_from_recipe(resolved, catalog, on_gpu=True)
    b = setup_from_recipe(resolved, generic, on_gpu=True)
    assert act.layer_saved_bytes(a, 2, 128) == act.layer_saved_bytes(b, 2, 128)
    assert act.head_saved_bytes(a, 2, 128) == act.head_saved_bytes(b, 2, 128)


@pytest.mark.parametrize("key", ["gpt2", "mixtral"])
def test_estimate_memory_answers_with_the_exact_count(key, tmp_path, capsys):
    from sftkit.cli import run_cli

    path = tmp_path / "config.json"
    path.write_text(json.dumps(config_of(key)))
    recipe = str(Path(__file__).resolve().parent.parent / "recipes" / "r1_gsm8k_qlora.yaml")
    code = run_cli(["estimate-memory", recipe, "--model", str(path), "--json"])
    assert code == 0, capsys.readouterr().err
    data = json.loads(capsys.readouterr().out)
    assert data["parameters"] == meta_model(config_of(key)).num_parameters()
    assert data["generic_terms"] == list(GENERIC_TERMS)
    assert any("not in sftkit's catalog" in note for note in data["notes"])
    if key == "mixtral":  # stacked experts stay plain: their bytes are in the estimate
        assert any("never quantized" in note for note in data["notes"])


def test_a_catalog_estimate_has_no_generic_terms(capsys):
    from sftkit.cli import run_cli

    recipe = str(Path(__file__).resolve().parent.parent / "recipes" / "r1_gsm8k_qlora.yaml")
    assert run_cli(["estimate-memory", recipe, "--json"]) == 0
    assert "generic_terms" not in json.loads(capsys.readouterr().out)


def test_without_torch_the_error_says_how_to_get_the_generic_path(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(UnknownArchitectureError, match="gpt2") as info:
        shape_from_config(config_of("gpt2"))
    assert "pip install 'sftkit[train]'" in str(info.value)


def test_what_transformers_cannot_build_is_named():
    with pytest.raises(UnknownArchitectureError, match="'no-such-arch'"):
        shape_from_config({"model_type": "no-such-arch", **ATTN})
    with pytest.raises(UnknownArchitectureError, match="'num_attention_heads'"):
        shape_from_config({"model_type": "mamba", "hidden_size": 64, "num_hidden_layers": 2})


def test_run_preflight_goes_on_without_an_estimate(tmp_path):
    """The estimator lacking an architecture is no reason for `sftkit run` to refuse it."""
    from tiny_models import recipe_text

    from sftkit.recipe.load import load_recipe_text
    from sftkit.testing import fresh_registry
    from sftkit.training.runner import preflight

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "no-such-arch", **ATTN}))
    resolved = load_recipe_text(
        recipe_text(model, tmp_path / "run"), registry=fresh_registry(), source="t.yaml"
    )
    said: list[str] = []
    memory = preflight(resolved, force=False, echo=said.append)
    assert "no-such-arch" in memory["unavailable"]
    assert "no pre-flight check" in said[0]


@pytest.mark.slow
def test_a_gpt2_trains_with_lora(tmp_path):
    """A family outside the catalog, end to end: LoRA on GPT-2's Conv1D layers on CPU, and
    the estimate's trainable count is the real one."""
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    from tiny_models import TOKENIZER_FILES, recipe_text

    from sftkit.recipe.load import load_recipe_text
    from sftkit.testing import fresh_registry
    from sftkit.training.runner import run_recipe

    model = tmp_path / "gpt2"
    model.mkdir()
    asset = Path(__file__).resolve().parent.parent / "sftkit" / "assets" / "models" / "tiny-llama"
    for name in TOKENIZER_FILES:
        (model / name).write_bytes((asset / name).read_bytes())
    config = {**config_of("gpt2"), "vocab_size": 128, "n_positions": 256, "bos_token_id": 1}
    (model / "config.json").write_text(json.dumps(config))
    text = recipe_text(
        model, tmp_path / "run", strategy="lora", strategy_options={"rank": 4}, max_steps=2
    )
    resolved = load_recipe_text(text, registry=fresh_registry(), source="gpt2.yaml")
    result = run_recipe(resolved)
    assert result.status == "completed"
    memory = json.loads((result.run_dir / "memory.json").read_text())
    trained = sum(p.numel() for p in result.context.model.parameters() if p.requires_grad)
    assert memory["trainable_parameters"] == trained > 0
    assert memory["generic_terms"] == list(GENERIC_TERMS)
