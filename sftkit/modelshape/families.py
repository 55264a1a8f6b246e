"""Reading a Hugging Face ``config.json`` into a `ModelShape`, family by family.

Each family lists the config defaults of its transformers config class (used only when a
config.json omits a key) and the structural facts its modeling code hard-wires (Qwen2's
q/k/v biases, Phi-3's fused projections, Gemma 2's four norms). A ``model_type`` not listed
here takes the generic path (`sftkit.modelshape.generic`): the model built on the meta
device gives its exact census, and the estimate says which of its terms are generic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sftkit.errors import ModelShapeError
from sftkit.modelshape.shape import ModelShape


@dataclass(frozen=True)
class Family:
    """How one ``model_type`` maps onto a `ModelShape`.

    `defaults` are the config class's own defaults for keys a config.json may omit (some are
    literal numbers in transformers, e.g. Qwen2's 32 key/value heads, not "same as heads").
    """

    architecture: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    head_dim_default: int | None = None  # None: hidden_size // num_attention_heads
    qkv_bias: bool | None = None  # None: from config "attention_bias"
    o_bias_follows_attention_bias: bool = True
    has_mlp_bias_key: bool = False
    fused: bool = False
    norms_per_layer: int = 2
    qk_norm: bool = False
    softcap_key: str | None = None


FAMILIES: dict[str, Family] = {
    "llama": Family(
        "LlamaForCausalLM",
        defaults={"tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False},
        has_mlp_bias_key=True,
    ),
    "mistral": Family(
        "MistralForCausalLM",
        defaults={"tie_word_embeddings": False, "num_key_value_heads": 8},
        qkv_bias=False,
        o_bias_follows_attention_bias=False,
    ),
    "qwen2": Family(
        "Qwen2ForCausalLM",
        defaults={"tie_word_embeddings": False, "num_key_value_heads": 32},
        qkv_bias=True,  # Qwen2Attention: q/k/v with bias, o_proj without
        o_bias_follows_attention_bias=False,
    ),
    "qwen3": Family(
        "Qwen3ForCausalLM",
        defaults={"tie_word_embeddings": False, "attention_bias": False, "num_key_value_heads": 32},
        head_dim_default=128,
        qk_norm=True,
    ),
    "gemma": Family(
        "GemmaForCausalLM",
        defaults={"tie_word_embeddings": True, "attention_bias": False, "num_key_value_heads": 16},
        head_dim_default=256,
    ),
    "gemma2": Family(
        "Gemma2ForCausalLM",
        defaults={"tie_word_embeddings": True, "attention_bias": False, "num_key_value_heads": 4},
        head_dim_default=256,
        norms_per_layer=4,
        softcap_key="final_logit_softcapping",
    ),
    "phi3": Family(
        "Phi3ForCausalLM",
        defaults={"tie_word_embeddings": False},
        qkv_bias=False,
        o_bias_follows_attention_bias=False,
        fused=True,
    ),
}

REQUIRED = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "vocab_size",
)


def known_model_types() -> list[str]:
    return sorted(FAMILIES)


def shape_from_config(
    config: Mapping[str, Any],
    *,
    name: str = "<config>",
    source: str = "config.json",
    trust_remote_code: bool = False,
) -> ModelShape:
    """A `ModelShape` from a config.json mapping: a catalog family's, or the generic one
    (which needs torch and transformers). Raises `ModelShapeError` for a config that lacks
    a needed number or that transformers cannot build either."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelShapeError(
            f"{name}: the config ({source}) has no 'model_type', so its architecture is unknown.",
            hint="Point --model (or model.name_or_path) at a Hugging Face config.json.",
        )
    family = FAMILIES.get(model_type)
    if family is None:
        from sftkit.modelshape.generic import generic_shape

        return generic_shape(config, name=name, source=source, trust_remote_code=trust_remote_code)
    missing = [key for key in REQUIRED if not isinstance(config.get(key), int)]
    if missing:
        raise ModelShapeError(
            f"{name}: the {model_type} config ({source}) lacks integer "
            f"{', '.join(repr(k) for k in missing)}."
        )

    def get(key: str, fallback: Any = None) -> Any:
        value = config.get(key)
        return family.defaults.get(key, fallback) if value is None else value

    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    head_dim = get("head_dim") or family.head_dim_default or hidden // heads
    attention_bias = bool(get("attention_bias", False))
    qkv_bias = attention_bias if family.qkv_bias is None else family.qkv_bias
    softcap = get(family.softcap_key) if family.softcap_key else None
    return ModelShape(
        name=name,
        source=source,
        model_type=model_type,
        architecture=(config.get("architectures") or [family.architecture])[0],
        vocab_size=int(config["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(config["intermediate_size"]),
        num_layers=int(config["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(get("num_key_value_heads") or heads),
        head_dim=int(head_dim),
        tie_word_embeddings=bool(get("tie_word_embeddings", False)),
        qkv_bias=qkv_bias,
        o_bias=attention_bias and family.o_bias_follows_attention_bias,
        mlp_bias=bool(get("mlp_bias", False)) if family.has_mlp_bias_key else False,
        fused_qkv=family.fused,
        fused_gate_up=family.fused,
        norms_per_layer=family.norms_per_layer,
        qk_norm=family.qk_norm,
        final_logit_softcapping=float(softcap) if softcap else None,
        max_position_embeddings=config.get("max_position_embeddings"),
    )
