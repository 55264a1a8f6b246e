"""The architecture numbers the estimator needs, and an exact parameter census from them.

No torch: a `ModelShape` is plain data read from a config. `census()` lists every parameter
tensor a Hugging Face causal LM of that shape holds, grouped by kind and layer count, so the
estimator can price each tensor by how it is stored (quantized or not), trained (adapters or
not) and optimized (8-bit state or the small-tensor fallback, factored state by shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

# "other": a parameter of none of these kinds (an MoE layer's stacked expert weights, a
# router that is not an nn.Linear, a scalar): stored plainly, never quantized or adapted.
TensorRole = Literal["embedding", "lm_head", "linear", "bias", "norm", "other"]


@dataclass(frozen=True)
class TensorGroup:
    """`count` parameter tensors of the same shape (one per decoder layer, or a single one).

    `module` is the attribute name of the owning module (``q_proj``, ``embed_tokens``...):
    what LoRA's ``target_modules`` match against. For a ``linear`` weight, ``shape`` is
    ``(out_features, in_features)`` as in ``torch.nn.Linear``.
    """

    name: str
    module: str
    role: TensorRole
    shape: tuple[int, ...]
    count: int = 1
    #: bitsandbytes replaces this linear layer when the base is quantized: transformers
    #: replaces exactly ``nn.Linear`` and GPT-2's ``Conv1D`` (a subclass such as Falcon's
    #: ``FalconLinear`` stays a plain layer, though LoRA still adapts it).
    quantizable: bool = True

    @property
    def numel(self) -> int:
        """Elements of one tensor of the group."""
        return math.prod(self.shape)

    @property
    def total(self) -> int:
        return self.numel * self.count


@dataclass(frozen=True)
class ModuleNames:
    """The linear modules of one decoder layer, by role, for an architecture whose names are
    not Llama's (GPT-2's ``c_attn``/``c_proj``/``c_fc``, Falcon's ``query_key_value``...):
    the activation model asks which LoRA branches read which tensor."""

    attention_inputs: tuple[str, ...]  # read the attention norm's output (q/k/v)
    attention_output: str  # reads the attention output (o_proj)
    mlp_inputs: tuple[str, ...]  # read the MLP norm's output (gate/up)
    mlp_output: str  # reads the MLP's intermediate activations (down_proj)


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer's architecture, as far as memory is concerned."""

    name: str  # what the user named (hub id, path, builtin:NAME)
    source: str  # where the numbers came from, for the report
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool
    qkv_bias: bool = False  # biases on the query/key/value projections
    o_bias: bool = False  # bias on the output projection
    mlp_bias: bool = False
    fused_qkv: bool = False  # one qkv_proj instead of q/k/v (Phi-3)
    fused_gate_up: bool = False  # one gate_up_proj instead of gate/up (Phi-3)
    gated_mlp: bool = True  # gate * up -> down (SwiGLU/GeGLU); False: up -> act -> down
    norms_per_layer: int = 2  # RMSNorms per decoder layer (Gemma 2: 4)
    qk_norm: bool = False  # per-head RMSNorm on queries and keys (Qwen3, Gemma 3)
    final_logit_softcapping: float | None = None  # Gemma 2: tanh soft cap on the logits
    max_position_embeddings: int | None = None
    architecture: str = ""
    # A model outside the catalog (sftkit.modelshape.generic): its exact census, read from
    # the model built on the meta device, and the estimate's terms that are generic.
    tensors: tuple[TensorGroup, ...] | None = None
    generic: tuple[str, ...] = ()
    modules: ModuleNames | None = None  # None: Llama's names (q_proj, ..., down_proj)
    # Mixture of experts: each token runs `experts_per_token` of `num_experts` MLPs of width
    # `expert_intermediate_size`, plus a shared expert of its own width if there is one.
    num_experts: int = 0
    experts_per_token: int = 0
    expert_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0

    # ------------------------------------------------------------------ derived sizes

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def mlp_width(self) -> int:
        """MLP intermediate activations per token: the MLP's width, or for a mixture of
        experts the routed experts' widths and the shared expert's."""
        if self.num_experts:
            return (
                self.experts_per_token * self.expert_intermediate_size
                + self.shared_expert_intermediate_size
            )
        return self.intermediate_size

    @property
    def attention_input_modules(self) -> tuple[str, ...]:
        if self.modules is not None:
            return self.modules.attention_inputs
        return ("qkv_proj",) if self.fused_qkv else ("q_proj", "k_proj", "v_proj")

    @property
    def attention_output_module(self) -> str:
        return self.modules.attention_output if self.modules is not None else "o_proj"

    @property
    def mlp_input_modules(self) -> tuple[str, ...]:
        if self.modules is not None:
            return self.modules.mlp_inputs
        if not self.gated_mlp:
            return ("up_proj",)
        return ("gate_up_proj",) if self.fused_gate_up else ("gate_proj", "up_proj")

    @property
    def mlp_output_module(self) -> str:
        return self.modules.mlp_output if self.modules is not None else "down_proj"

    def census(self) -> tuple[TensorGroup, ...]:
        """Every parameter tensor, in the order transformers registers them."""
        if self.tensors is not None:
            return self.tensors
        h, i, n = self.hidden_size, self.intermediate_size, self.num_layers
        q, kv = self.q_size, self.kv_size
        groups: list[TensorGroup] = [
            TensorGroup(
                "model.embed_tokens.weight", "embed_tokens", "embedding", (self.vocab_size, h)
            )
        ]

        def linear(path: str, module: str, out_f: int, in_f: int, bias: bool) -> None:
            groups.append(
                TensorGroup(f"{path}.{module}.weight", module, "linear", (out_f, in_f), n)
            )
            if bias:
                groups.append(TensorGroup(f"{path}.{module}.bias", module, "bias", (out_f,), n))

        attn, mlp = "model.layers.*.self_attn", "model.layers.*.mlp"
        if self.fused_qkv:
            linear(attn, "qkv_proj", q + 2 * kv, h, self.qkv_bias)
        else:
            linear(attn, "q_proj", q, h, self.qkv_bias)
            linear(attn, "k_proj", kv, h, self.qkv_bias)
            linear(attn, "v_proj", kv, h, self.qkv_bias)
        linear(attn, "o_proj", h, q, self.o_bias)
        if self.qk_norm:
            groups.append(
                TensorGroup(f"{attn}.q_norm.weight", "q_norm", "norm", (self.head_dim,), n)
            )
            groups.append(
                TensorGroup(f"{attn}.k_norm.weight", "k_norm", "norm", (self.head_dim,), n)
            )
        if self.gated_mlp and self.fused_gate_up:
            linear(mlp, "gate_up_proj", 2 * i, h, self.mlp_bias)
        elif self.gated_mlp:
            linear(mlp, "gate_proj", i, h, self.mlp_bias)
            linear(mlp, "up_proj", i, h, self.mlp_bias)
        else:
            linear(mlp, "up_proj", i, h, self.mlp_bias)
        linear(mlp, "down_proj", h, i, self.mlp_bias)
        for name in NORM_NAMES[: self.norms_per_layer]:
            groups.append(TensorGroup(f"model.layers.*.{name}.weight", name, "norm", (h,), n))
        groups.append(TensorGroup("model.norm.weight", "norm", "norm", (h,)))
        if not self.tie_word_embeddings:
            groups.append(TensorGroup("lm_head.weight", "lm_head", "lm_head", (self.vocab_size, h)))
        return tuple(groups)

    @property
    def parameters(self) -> int:
        """Total parameters, a tied head counted once (as `model.num_parameters()` does)."""
        return sum(g.total for g in self.census())

    def linear_groups(self) -> tuple[TensorGroup, ...]:
        """The decoder's linear projections (what bitsandbytes quantizes and LoRA adapts)."""
        return tuple(g for g in self.census() if g.role == "linear")

    def describe(self) -> str:
        p = self.parameters
        tied = "tied" if self.tie_word_embeddings else "untied"
        moe = (
            f", {self.num_experts} experts ({self.experts_per_token} per token, width "
            f"{self.expert_intermediate_size})"
            if self.num_experts
            else ""
        )
        generic = " (not in sftkit's catalog: generic shape)" if self.generic else ""
        return (
            f"{self.model_type}: {self.num_layers} layers, hidden {self.hidden_size}, "
            f"MLP {self.intermediate_size}{moe}, {self.num_heads} heads ({self.num_kv_heads} KV, "
            f"head dim {self.head_dim}), vocabulary {self.vocab_size}, {tied} embeddings, "
            f"{p:,} parameters{generic}"
        )


# Decoder-layer norms in the order transformers registers them; Gemma 2/3 use all four.
NORM_NAMES = (
    "input_layernorm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
)
