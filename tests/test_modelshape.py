"""Model shapes: exact parameter census against transformers on the meta device, sources,
and errors for what the estimator does not know."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftkit.errors import ModelShapeError
from sftkit.hookspecs import hookimpl
from sftkit.modelshape import (
    ModelShape,
    catalog_ids,
    resolve_model_shape,
    shape_from_config,
)
from sftkit.modelshape.sources import CATALOG_DIR, catalog_index
from sftkit.testing import fresh_manager

CATALOG_FILES = sorted(set(catalog_index().values()))


def _transformers_count(config: dict) -> tuple[int, dict[str, tuple[int, ...]]]:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.AutoConfig.for_model(
        config["model_type"], **{k: v for k, v in config.items() if k != "model_type"}
    )
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    return sum(p.numel() for p in model.parameters()), shapes


@pytest.mark.parametrize("filename", CATALOG_FILES)
def test_catalog_census_equals_transformers_on_meta(filename):
    config = json.loads((CATALOG_DIR / filename).read_text())
    shape = shape_from_config(config, name=filename)
    expected, _ = _transformers_count(config)
    assert shape.parameters == expected


def test_r1_distill_8b_has_the_published_count():
    shape = resolve_model_shape("deepseek-ai/DeepSeek-R1-Distill-Llama-8B")
    assert shape.parameters == 8_030_261_248
    assert shape.vocab_size == 128256 and not shape.tie_word_embeddings


def test_shared_r1_config_matches_the_catalog():
    shared = Path(__file__).resolve().parents[2] / "shared/models/deepseek-r1-distill-llama-8b.json"
    if not shared.is_file():
        pytest.skip("the shared 8B config is not present")
    assert resolve_model_shape(str(shared)).parameters == 8_030_261_248


# Minimal configs: only the required numbers, so the family defaults are exercised too; odd
# sizes and biases switched on where the family allows it.
FAMILY_CONFIGS = [
    {"model_type": "llama"},
    {"model_type": "llama", "attention_bias": True, "mlp_bias": True, "num_key_value_heads": 2},
    {"model_type": "llama", "tie_word_embeddings": True, "head_dim": 24},
    {"model_type": "mistral"},
    {"model_type": "mistral", "head_dim": 16, "num_key_value_heads": 1},
    {"model_type": "qwen2", "num_key_value_heads": 2},
    {"model_type": "qwen2", "tie_word_embeddings": True},
    {"model_type": "qwen3"},
    {"model_type": "qwen3", "attention_bias": True, "head_dim": 8, "num_key_value_heads": 2},
    {"model_type": "gemma"},
    {"model_type": "gemma2"},
    {
        "model_type": "gemma2",
        "tie_word_embeddings": False,
        "head_dim": 32,
        "num_key_value_heads": 2,
    },
    {"model_type": "phi3"},
    {"model_type": "phi3", "num_key_value_heads": 2},
]


@pytest.mark.parametrize("extra", FAMILY_CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_family_census_equals_transformers(extra):
    config = {
        "hidden_size": 64,
        "intermediate_size": 176,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 32100,  # > Phi-3's default pad id 32000
        **extra,
    }
    shape = shape_from_config(config)
    expected, shapes = _transformers_count(config)
    assert shape.parameters == expected
    # Tensor by tensor, not only the sum: every group's shape exists in the real model.
    real = {name.replace(".0.", ".*.").replace(".1.", ".*."): s for name, s in shapes.items()}
    for group in shape.census():
        if group.name in real:
            assert real[group.name] == group.shape, group.name
        else:
            assert group.role == "lm_head" and shape.tie_word_embeddings is False, group.name


def test_unknown_architecture_is_an_error_naming_it():
    # Not in the catalog, so the generic path is tried (tests/test_modelshape_generic.py);
    # with or without torch installed, the error names the architecture.
    with pytest.raises(ModelShapeError, match="'no-such-arch'"):
        shape_from_config({"model_type": "no-such-arch", "architectures": ["NoSuchForCausalLM"]})


def test_missing_numbers_are_named():
    with pytest.raises(ModelShapeError, match="'intermediate_size'"):
        shape_from_config(
            {
                "model_type": "llama",
                "hidden_size": 8,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "vocab_size": 10,
            }
        )


def test_config_without_model_type_is_an_error():
    with pytest.raises(ModelShapeError, match="model_type"):
        shape_from_config({"hidden_size": 8})


def test_catalog_lookup_is_case_insensitive_and_takes_bare_names():
    a = resolve_model_shape("meta-llama/llama-3.2-1b")
    b = resolve_model_shape("Llama-3.2-1B")
    assert a.parameters == b.parameters == 1_235_814_400
    assert "catalog" in a.source


def test_every_catalog_id_resolves():
    assert len(catalog_ids()) >= 9
    for model_id in catalog_ids():
        assert resolve_model_shape(model_id).parameters > 0


def test_builtin_model_resolves_to_the_bundled_config():
    shape = resolve_model_shape("builtin:tiny-llama")
    assert shape.model_type == "llama" and "tiny-llama" in shape.source


def test_unknown_builtin_model_lists_the_bundled_ones():
    with pytest.raises(ModelShapeError, match="builtin:tiny-llama"):
        resolve_model_shape("builtin:tiny-lama")


def test_directory_and_config_file(tmp_path):
    config = json.loads((CATALOG_DIR / "qwen2.5-0.5b.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert resolve_model_shape(str(tmp_path)).parameters == 494_032_768
    assert resolve_model_shape(str(tmp_path / "config.json")).parameters == 494_032_768


def test_directory_without_config_and_bad_json(tmp_path):
    with pytest.raises(ModelShapeError, match=r"no config\.json"):
        resolve_model_shape(str(tmp_path))
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ModelShapeError, match="not valid JSON"):
        resolve_model_shape(str(bad))
    with pytest.raises(ModelShapeError, match="no such file"):
        resolve_model_shape(str(tmp_path / "missing.json"))


def test_unknown_hub_id_offline_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-sftkit-test")
    with pytest.raises(ModelShapeError, match="offline"):
        resolve_model_shape("acme/secret-model-7b")


def test_typo_gets_a_suggestion():
    with pytest.raises(ModelShapeError, match="Did you mean"):
        resolve_model_shape("Llama-3.1-8X")


class _AcmeShapes:
    @hookimpl
    def resolve_model_shape(self, model, trust_remote_code):
        if model.startswith("acme/"):
            return shape_from_config(
                {
                    "model_type": "llama",
                    "hidden_size": 16,
                    "intermediate_size": 32,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 2,
                    "vocab_size": 10,
                },
                name=model,
                source="acme registry",
            )
        return None


def test_a_plugin_source_wins_and_falls_through():
    plugin = _AcmeShapes()
    manager = fresh_manager()
    assert manager.register(plugin, "acme")
    shape = resolve_model_shape("acme/x", manager=manager)
    assert shape.source == "acme registry"
    # Not its model: the built-in catalog answers.
    assert resolve_model_shape("Llama-3.2-3B", manager=manager).parameters == 3_212_749_824
    assert isinstance(
        manager.hook.resolve_model_shape(model="Llama-3.2-3B", trust_remote_code=False), ModelShape
    )
