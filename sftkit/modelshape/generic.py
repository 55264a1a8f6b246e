"""Any decoder transformers can build: the shape of a ``model_type`` outside the catalog.

The parameter census is exact: the model is built from its config on the meta device
(accelerate's ``init_empty_weights``, or torch's meta device; no memory, no weights), and
every parameter tensor it registers is listed, tensor by tensor, grouped across layers. So
the weights, gradients and optimizer state the estimator prices are those of the real model.

The per-layer numbers the activation model reads (hidden size, layers, heads, KV heads,
head dim, MLP width, vocabulary, MoE experts and experts per token) come from the config's
standard fields. The activation and KV-cache terms then follow the catalog's Llama-style
decoder layer, which the estimate marks as generic (`GENERIC_TERMS`): close for the usual
pre-norm decoders, an approximation for anything else.

torch and transformers are imported only here, only for such a model; without them the
error says how to get this path (`pip install 'sftkit[train]'`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from sftkit.errors import ModelShapeError, UnknownArchitectureError
from sftkit.modelshape.shape import ModelShape, ModuleNames, TensorGroup, TensorRole

#: The estimate's terms whose formulas are the catalog's Llama-style ones, not the model's own.
GENERIC_TERMS = ("activations", "KV cache", "evaluation activations")

LAYER_INDEX = re.compile(r"\.\d+(?=\.)")
ATTENTION = re.compile(r"attn|attention", re.IGNORECASE)


def generic_shape(
    config: Mapping[str, Any],
    *,
    name: str,
    source: str,
    trust_remote_code: bool = False,
) -> ModelShape:
    """The shape of a model the catalog does not know, from its config.json mapping."""
    model_type = str(config.get("model_type"))
    transformers, torch = _training_stack(name, model_type)
    config_object = _config_object(transformers, config, name=name, model_type=model_type)
    model = _meta_model(transformers, torch, config_object, name, model_type, trust_remote_code)
    census = census_of(model)
    text = config_object.get_text_config() if hasattr(config_object, "get_text_config") else None
    numbers = _numbers(text or config_object, census, name=name, model_type=model_type)
    output = model.get_output_embeddings()
    inputs = model.get_input_embeddings()
    tied = (
        output is not None
        and inputs is not None
        and getattr(output, "weight", None) is getattr(inputs, "weight", object())
    )
    architectures = config.get("architectures") or [type(model).__name__]
    return ModelShape(
        name=name,
        source=f"{source}; generic: {type(model).__name__} built on the meta device",
        model_type=model_type,
        architecture=str(architectures[0]),
        tie_word_embeddings=tied,
        tensors=census,
        generic=GENERIC_TERMS,
        **numbers,
    )


# --------------------------------------------------------------------------- building


def _training_stack(name: str, model_type: str) -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError:
        raise UnknownArchitectureError(
            f"{name}: sftkit's catalog does not know the architecture {model_type!r}, and "
            "the generic path (counting the model's parameters on the meta device) needs "
            "torch and transformers, which are not installed.",
            hint="pip install 'sftkit[train]' (torch, transformers, accelerate), or pass a "
            "config of a catalog family; a plugin can add a shape source through the "
            "resolve_model_shape hook.",
        ) from None
    return transformers, torch


def _config_object(
    transformers: Any, config: Mapping[str, Any], *, name: str, model_type: str
) -> Any:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise UnknownArchitectureError(
            f"{name}: neither sftkit's catalog nor the installed transformers "
            f"{transformers.__version__} knows the architecture {model_type!r}.",
            hint="Upgrade transformers if the architecture is newer than it; a model that "
            "ships its own code needs a plugin (resolve_model_shape hook).",
        )
    try:
        with _quiet(transformers):
            return CONFIG_MAPPING[model_type].from_dict(dict(config))
    except Exception as exc:  # a config its own class rejects
        raise ModelShapeError(
            f"{name}: transformers cannot read this {model_type} config: "
            f"{type(exc).__name__}: {exc}."
        ) from exc


def _meta_model(
    transformers: Any,
    torch: Any,
    config: Any,
    name: str,
    model_type: str,
    trust_remote_code: bool,
) -> Any:
    try:
        from accelerate import init_empty_weights

        empty: Any = init_empty_weights(include_buffers=True)
    except ImportError:
        empty = torch.device("meta")
    try:
        with _quiet(transformers), empty:
            model = transformers.AutoModelForCausalLM.from_config(
                config, trust_remote_code=trust_remote_code
            )
            # from_pretrained ties a tied head; from_config does not in every transformers 5
            # release (5.0 leaves GPT-2's lm_head a copy), so tie as loading will
            model.tie_weights()
            return model
    except Exception as exc:
        raise UnknownArchitectureError(
            f"{name}: transformers {transformers.__version__} cannot build a causal LM "
            f"from this {model_type} config ({type(exc).__name__}: {exc}); sftkit prices "
            "decoder-only models.",
        ) from exc


@contextmanager
def _quiet(transformers: Any) -> Any:
    """A tiny test config trips transformers' warnings about token ids; they say nothing
    about the shape."""
    logging = transformers.utils.logging
    before = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(before)


# --------------------------------------------------------------------------- census


def census_of(model: Any) -> tuple[TensorGroup, ...]:
    """Every parameter tensor of `model` (tied ones once, as ``model.num_parameters()``
    counts them), in registration order, grouped by name pattern (``.3.`` -> ``.*.``)
    and shape. A linear weight's shape is ``(out_features, in_features)``, GPT-2's
    ``Conv1D`` included (it stores the transpose)."""
    import torch

    output = model.get_output_embeddings()
    output_weight = getattr(output, "weight", None)
    groups: dict[tuple[str, tuple[int, ...]], TensorGroup] = {}
    for path, parameter in model.named_parameters():
        owner_path, _, attribute = path.rpartition(".")
        owner = model.get_submodule(owner_path) if owner_path else model
        role, shape = _role(owner, attribute, parameter, output_weight)
        key = (LAYER_INDEX.sub(".*", path), shape)
        if key in groups:
            groups[key] = replace(groups[key], count=groups[key].count + 1)
            continue
        groups[key] = TensorGroup(
            key[0],
            owner_path.rpartition(".")[2] if owner_path else attribute,
            role,
            shape,
            quantizable=type(owner) is torch.nn.Linear or type(owner).__name__ == "Conv1D",
        )
    return tuple(groups.values())


def _role(
    owner: Any, attribute: str, parameter: Any, output_weight: Any
) -> tuple[TensorRole, tuple[int, ...]]:
    import torch

    shape = tuple(int(d) for d in parameter.shape)
    kind = type(owner).__name__
    if isinstance(owner, torch.nn.Embedding):  # a tied head is the embedding's weight
        return "embedding", shape
    if parameter is output_weight:
        return "lm_head", shape
    if isinstance(owner, torch.nn.Linear) or kind == "Conv1D":
        if attribute == "bias":
            return "bias", shape
        return "linear", shape[::-1] if kind == "Conv1D" else shape
    if "norm" in kind.lower():
        return "norm", shape
    return "other", shape


# --------------------------------------------------------------------------- numbers


def _first_int(config: Any, *keys: str) -> int | None:
    for key in keys:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _numbers(
    config: Any, census: tuple[TensorGroup, ...], *, name: str, model_type: str
) -> dict[str, Any]:
    """ModelShape's numbers from a config's standard fields (transformers' attribute maps
    make ``hidden_size`` work for GPT-2's ``n_embd`` too)."""
    hidden = _first_int(config, "hidden_size", "d_model", "n_embd")
    layers = _first_int(config, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first_int(config, "num_attention_heads", "n_head", "num_heads")
    vocab = _first_int(config, "vocab_size")
    missing = [
        key
        for key, value in (
            ("hidden_size", hidden),
            ("num_hidden_layers", layers),
            ("num_attention_heads", heads),
            ("vocab_size", vocab),
        )
        if not value
    ]
    if missing or hidden is None or layers is None or heads is None or vocab is None:
        raise UnknownArchitectureError(
            f"{name}: the {model_type!r} config has no {', '.join(map(repr, missing))}: the "
            "estimator's generic path prices attention decoders (hidden size, layers, heads, "
            "vocabulary).",
            hint="A plugin can price other architectures through the resolve_model_shape hook.",
        )
    if getattr(config, "multi_query", False) and not getattr(
        config, "new_decoder_architecture", False
    ):
        kv_heads = 1  # multi-query attention (Falcon, GPT-BigCode): one K/V head
    else:
        kv_heads = _first_int(config, "num_key_value_heads", "num_kv_heads") or heads
    head_dim = _first_int(config, "head_dim") or hidden // heads
    intermediate = (
        _first_int(config, "intermediate_size", "n_inner", "ffn_hidden_size", "ffn_dim")
        or 4 * hidden
    )
    experts = _first_int(config, "num_local_experts", "num_experts", "n_routed_experts") or 0
    per_token = _first_int(config, "num_experts_per_tok", "moe_topk", "num_experts_per_token")
    expert_width = _first_int(config, "moe_intermediate_size") or intermediate
    shared = _first_int(config, "shared_expert_intermediate_size") or 0
    if not shared and _first_int(config, "n_shared_experts"):
        shared = int(_first_int(config, "n_shared_experts") or 0) * expert_width
    moe = bool(experts and per_token)
    modules = module_names(census, hidden=hidden, layers=layers)
    softcap = getattr(config, "final_logit_softcapping", None)
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_layers": layers,
        "num_heads": heads,
        "num_kv_heads": kv_heads,
        "head_dim": head_dim,
        "qkv_bias": any(g.role == "bias" and g.module in modules.attention_inputs for g in census),
        "o_bias": any(g.role == "bias" and g.module == modules.attention_output for g in census),
        "mlp_bias": any(g.role == "bias" and g.module == modules.mlp_output for g in census),
        "fused_qkv": len(modules.attention_inputs) == 1,
        "gated_mlp": _gated(census, hidden, intermediate, expert_width, modules),
        "norms_per_layer": _norms_per_layer(census, hidden, layers),
        "qk_norm": any(g.role == "norm" and g.count == layers and _in_attention(g) for g in census),
        "final_logit_softcapping": float(softcap) if softcap else None,
        "max_position_embeddings": _first_int(config, "max_position_embeddings", "n_positions"),
        "num_experts": experts if moe else 0,
        "experts_per_token": per_token if moe and per_token else 0,
        "expert_intermediate_size": expert_width if moe else 0,
        "shared_expert_intermediate_size": shared if moe else 0,
        "modules": modules,
    }


def module_names(census: tuple[TensorGroup, ...], *, hidden: int, layers: int) -> ModuleNames:
    """Which linear modules of a decoder layer read the attention input, write the attention
    output, read the MLP input and write the MLP output, told apart by where they live
    (``...attn...``) and their widths, in registration order."""
    per_layer = [g for g in census if g.role == "linear" and g.count == layers and "*" in g.name]
    attention = [g for g in per_layer if _in_attention(g)]
    mlp = [g for g in per_layer if g not in attention]

    def split(groups: list[TensorGroup]) -> tuple[tuple[str, ...], str]:
        writers = [g for g in groups if g.shape[0] == hidden]
        output = writers[-1].module if writers else ""
        readers = tuple(
            dict.fromkeys(g.module for g in groups if g.shape[1] == hidden and g.module != output)
        )
        return readers, output

    attention_inputs, attention_output = split(attention)
    mlp_inputs, mlp_output = split(mlp)
    return ModuleNames(attention_inputs, attention_output, mlp_inputs, mlp_output)


def _gated(
    census: tuple[TensorGroup, ...],
    hidden: int,
    intermediate: int,
    expert_width: int,
    modules: ModuleNames,
) -> bool:
    """A gated MLP (gate x up -> down) has two input projections, or one of twice the
    width, or (MoE) a fused expert gate_up stack of twice the expert width."""
    widths = {g.shape[0] for g in census if g.role == "linear" and g.module in modules.mlp_inputs}
    if len(modules.mlp_inputs) >= 2 or 2 * intermediate in widths:
        return True
    return any(
        g.role == "other" and len(g.shape) == 3 and g.shape[1] == 2 * expert_width for g in census
    )


def _norms_per_layer(census: tuple[TensorGroup, ...], hidden: int, layers: int) -> int:
    """Norms of the hidden width in each decoder layer (their weights; LayerNorm biases
    belong to the same norm)."""
    return sum(
        1
        for g in census
        if g.role == "norm"
        and g.count == layers
        and g.shape == (hidden,)
        and g.name.endswith(".weight")
        and not _in_attention(g)
    )


def _in_attention(group: TensorGroup) -> bool:
    """Does the tensor's module live inside an attention block (``...self_attn.q_norm``;
    not ``post_attention_layernorm``, which is a sibling of it)?"""
    return bool(ATTENTION.search(group.name.rsplit(".", 2)[0]))
