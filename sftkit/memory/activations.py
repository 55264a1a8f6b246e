"""Activation memory of a Llama-style decoder: the tensors autograd saves for backward.

Counted op by op from what transformers' decoder layer, PEFT's LoRA layer, bitsandbytes'
matmuls and torch's autograd formulas save (each checked against the saved tensors of a real
model on CPU, see tests/test_memory_activations.py). Per token, with h hidden, i MLP width,
q = heads x head_dim, kv = kv_heads x head_dim, r LoRA rank:

- RMSNorm (x.float(), pow, rsqrt): its fp32 input (4h) and the fp32 rsqrt (4); the
  normalized copy (h in the stream dtype) only when the norm weight trains.
- A linear layer saves its input only when its weight trains (full fine-tuning), or always for
  LLM.int8 (``MatMul8bitLt`` keeps ``A``); bitsandbytes 4-bit keeps only the weight. Under
  autocast the saved input is the layer's private bf16 copy when the input is not bf16.
- LoRA on a linear layer with input width F: ``x.to(fp32)``, dropout (its mask, 1 byte per
  element on CUDA), the bf16 copy ``lora_A`` sees under autocast (2F), ``lora_A``'s output
  (2r); with dropout 0 no mask.
- Attention: SDPA/flash keep q, k, v, the output (2(2q + 2kv)) and the fp32 log-sum-exp
  (4 x heads); with a padding mask SDPA repeats k/v to all heads and keeps a float mask of
  s x s per sequence; eager keeps the fp32 softmax and its bf16 copy (6 x heads x s). Packed
  rows without a mask (`sftkit.attention`) keep what unpadded SDPA keeps; flex attention adds
  its block mask (int32 block counts and indices, per 128 x 128 tile pair, both directions).
- Gated MLP: gate output, activation output and up output (3 x i in the linear output dtype);
  the product too when down_proj saves its input.
- Tiled MLP (``training.tiled_mlp``, Arctic Long Sequence Training's TiledMLP through
  liger-kernel): the MLP keeps only its input (stream dtype x h) and recomputes itself tile by
  tile in backward, where one tile's activations and gradients and the input's gradient live.
- Gradient checkpointing keeps each layer's input (stream dtype x h) and recomputes one layer
  at a time during backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sftkit.attention import FLEX_BLOCK
from sftkit.components import LaidTensor, LowRankLayer
from sftkit.components.loss import LossQuery
from sftkit.dtypes import FP32, INT32
from sftkit.dtypes import INT64 as INDEX  # int64 token ids and labels
from sftkit.memory.setup import Setup


@dataclass(frozen=True)
class Dtypes:
    stream: int  # residual stream (embedding output) dtype
    linear_out: int  # dtype a decoder linear layer returns
    compute: int  # matmul dtype (autocast)
    lora: int  # low-rank adapter weights
    mask: int  # dropout mask element


def dtypes(setup: Setup) -> Dtypes:
    storage, p = setup.storage, setup.precision
    # The stream is the embedding's output: fp32 when k-bit preparation upcast it.
    stream = storage.stream_bytes(p)
    linear_out = storage.linear_output_bytes(p, stream)
    lora = storage.adapter_weight_bytes(p)
    # CUDA native_dropout keeps a bool mask; the CPU kernel multiplies by a noise tensor of
    # the input's dtype (the adapter dtype: PEFT casts the input to it first).
    mask = 1 if setup.on_gpu else lora
    return Dtypes(stream, linear_out, p.matmul_bytes, lora, mask)


def no_grad_forward_bytes(setup: Setup, tokens: int) -> int:
    """The largest moment of a no-grad forward over `tokens` tokens (evaluation; a rollout's
    prefill), its KV cache and logits apart: inside an MLP, the gate's activation, the up
    projection and their product (an adapted input layer's base output and its sum with
    the adapter's are both alive: one more), while the stream holds four hidden-wide
    tensors (the embedding output the model keeps for the whole forward, the layer's input,
    the attention's residual sum and the normed MLP input). A live-tensor census of the
    tiny model on CPU peaks there (tests/test_no_grad_forward.py)."""
    s, d = setup.shape, dtypes(setup)
    adapted = set(_lora_by_module(setup)) & set(s.mlp_input_modules)
    mlp = 3 + (1 if adapted else 0)
    return tokens * (mlp * d.linear_out * s.mlp_width + 4 * d.stream * s.hidden_size)


def _lora_by_module(setup: Setup) -> dict[str, LowRankLayer]:
    return setup.composition.low_rank_layers(setup.shape)


def _consumers(
    setup: Setup,
    d: Dtypes,
    width: int,
    in_bytes: int,
    modules: list[str],
    lora: dict[str, LowRankLayer],
) -> tuple[int, bool]:
    """Bytes per token saved by the linear layers in `modules` that read one input tensor:
    their private copies, and whether the input tensor itself is saved (counted once by the
    caller, who knows whether something else saves it already)."""
    trains_base = setup.trains_base
    keeps_input = setup.storage.linear_saves_input
    shared_raw = False  # the input tensor itself is saved (once, however many keep it)
    private = 0
    for module in modules:
        if keeps_input or (trains_base and not setup.autocast):
            shared_raw = True
        elif trains_base:  # autocast: a private bf16 copy unless the input already is bf16
            if in_bytes == d.compute:
                shared_raw = True
            else:
                private += d.compute * width
        layer = lora.get(module)
        if layer is None:
            continue
        branch = d.compute if setup.autocast else d.lora  # what lora_A multiplies
        if layer.dropout > 0:
            private += d.mask * width
            private += branch * width
        elif in_bytes == d.lora and branch == d.lora:
            shared_raw = True  # lora_A keeps the input itself
        else:  # a private copy: PEFT's cast to the adapter dtype, or autocast's
            private += branch * width
        private += branch * layer.rank
    return private, shared_raw


def _consumer_bytes(
    setup: Setup,
    d: Dtypes,
    width: int,
    in_bytes: int,
    modules: list[str],
    lora: dict[str, LowRankLayer],
) -> int:
    private, shared_raw = _consumers(setup, d, width, in_bytes, modules, lora)
    return private + (in_bytes * width if shared_raw else 0)


def norm_saved_per_token(setup: Setup) -> int:
    """One RMSNorm. transformers': its fp32 input (4h) and rsqrt (4), plus the normalized
    copy when the norm weight trains. Liger's: its input as is and the fp32 rstd."""
    h, stream = setup.shape.hidden_size, dtypes(setup).stream
    if setup.liger:
        return stream * h + FP32
    return FP32 * h + FP32 + (stream * h if setup.trains_base else 0)


def layer_saved_bytes(setup: Setup, batch: int, seq: int) -> int:
    """Bytes one decoder layer saves for backward (no checkpointing)."""
    s, d = setup.shape, dtypes(setup)
    h = s.hidden_size
    q, kv = s.q_size, s.kv_size
    lora = _lora_by_module(setup)
    n = batch * seq
    per_token = 0
    norm = norm_saved_per_token(setup)
    per_token += 2 * norm  # input_layernorm, post_attention_layernorm
    per_token += (s.norms_per_layer - 2) * norm
    if s.qk_norm:  # per-head RMSNorm on q and k
        per_token += FP32 * (q + kv) + FP32 * (s.num_heads + s.num_kv_heads)
    # projections reading the first norm's output
    per_token += _consumer_bytes(setup, d, h, d.stream, list(s.attention_input_modules), lora)
    # attention
    c = d.compute
    impl = setup.attn_implementation
    groups = s.num_heads // max(s.num_kv_heads, 1)
    per_seq = 0
    if impl == "eager":
        kv_saved = q if groups > 1 else kv
        per_token += c * (q + 2 * kv_saved) + (FP32 + c) * s.num_heads * seq
        o_input_saved_by_attention = False
    elif setup.padded and impl == "sdpa":
        kv_saved = q if groups > 1 else kv
        per_token += c * (q + 2 * kv_saved) + c * q + FP32 * s.num_heads
        # a float mask per layer; CUDA's memory-efficient kernel pads it to 16 columns
        per_seq += c * seq * (16 * math.ceil(seq / 16) if setup.on_gpu else seq)
        o_input_saved_by_attention = True
    else:  # no mask: sdpa unpadded or per packed document, flash varlen, flex attention
        per_token += c * (q + 2 * kv) + c * q + FP32 * s.num_heads
        o_input_saved_by_attention = True
        if impl == "flex_attention":  # its block mask: int32 counts and indices per tile pair
            tiles = math.ceil(seq / FLEX_BLOCK)
            per_seq += 2 * 2 * INT32 * tiles * (tiles + 1)
    o_private, o_raw = _consumers(setup, d, q, c, [s.attention_output_module], lora)
    # SDPA already saves its output, which is o_proj's input: saving it again is free.
    per_token += o_private + (c * q if o_raw and not o_input_saved_by_attention else 0)
    # MLP: tiled, it keeps only its input; its tiles are recomputed in backward
    per_token += d.stream * h if setup.tiled_mlp else mlp_saved_per_token(setup)
    if s.num_experts:  # the router's fp32 softmax, each token's copy per chosen expert
        per_token += FP32 * s.num_experts + d.stream * h * s.experts_per_token
    return per_token * n + per_seq * batch


def mlp_saved_per_token(setup: Setup) -> int:
    """What the MLP saves per token: its projections' inputs or copies, the gate and up
    outputs and the activation's (Liger's SwiGLU recomputes the last)."""
    s, d = setup.shape, dtypes(setup)
    h, i, x = s.hidden_size, s.mlp_width, d.linear_out
    lora = _lora_by_module(setup)
    per_token = _consumer_bytes(setup, d, h, d.stream, list(s.mlp_input_modules), lora)
    if s.gated_mlp:
        per_token += (2 if setup.liger else 3) * x * i
    else:
        per_token += x * i
    return per_token + _consumer_bytes(setup, d, i, x, [s.mlp_output_module], lora)


def mlp_tile_tokens(setup: Setup, batch: int, seq: int) -> int:
    """Tokens per tile of a tiled MLP: the rows split into ceil(seq / hidden) tiles, as
    liger-kernel's apply_tiled_mlp (after DeepSpeed's TiledMLP) does."""
    tiles = max(1, math.ceil(seq / setup.shape.hidden_size))
    return math.ceil(batch * seq / tiles)


def first_layer_input_grads(setup: Setup) -> bool:
    """Does the first layer's input require grad? With a frozen embedding only when the
    trainer enables input gradients, which TRL and PEFT do for gradient checkpointing."""
    return setup.trains("embed_tokens") or setup.checkpointing


def first_layer_reduction(setup: Setup, batch: int, seq: int) -> int:
    """What the first layer does not save when its input needs no gradient: its first norm,
    the dropout masks of the LoRA layers reading that norm, LLM.int8's copy of the input,
    and (under autocast) those LoRA layers' bf16 weight copies."""
    if first_layer_input_grads(setup):
        return 0
    s, d = setup.shape, dtypes(setup)
    h = s.hidden_size
    lora = _lora_by_module(setup)
    modules = s.attention_input_modules
    per_token = norm_saved_per_token(setup)
    if setup.storage.linear_saves_input:
        per_token += d.stream * h
    weights = 0
    for module in modules:
        layer = lora.get(module)
        if layer is not None:
            if layer.dropout > 0:
                per_token += d.mask * h
            if setup.autocast and d.lora != d.compute:
                weights += layer.rank * h * d.compute
    return per_token * batch * seq + weights


def checkpointed_layer_bytes(setup: Setup, batch: int, seq: int) -> int:
    """What gradient checkpointing keeps per layer: the layer's input hidden states."""
    return dtypes(setup).stream * setup.shape.hidden_size * batch * seq


def backward_transient_bytes(setup: Setup, batch: int, seq: int) -> int:
    """Gradients in flight while one layer's backward runs (largest op: the MLP, or the
    attention scores for eager): an approximation, not an exact count."""
    s, d = setup.shape, dtypes(setup)
    mlp = 3 * d.linear_out * s.mlp_width
    scores = (
        (2 * FP32 + d.compute) * s.num_heads * seq if setup.attn_implementation == "eager" else 0
    )
    stream = 2 * d.stream * s.hidden_size * batch * seq
    if not setup.tiled_mlp:
        return max(mlp, scores) * batch * seq + stream
    # tiled: one tile's recomputed MLP and its gradients, and the input's whole gradient
    tile = mlp_tile_tokens(setup, batch, seq)
    tile_bytes = (mlp_saved_per_token(setup) + mlp) * tile
    return max(tile_bytes, scores * batch * seq) + stream + d.stream * s.hidden_size * batch * seq


def head_saved_bytes(setup: Setup, batch: int, seq: int) -> int:
    """Saved outside the decoder layers: token ids, rotary cos/sin, the final norm, the
    lm_head input and the loss's own saved tensors."""
    s, d = setup.shape, dtypes(setup)
    h, n = s.hidden_size, batch * seq
    # input_ids: the embedding's backward needs them when its weight trains
    total = INDEX * n if setup.trains("embed_tokens") else 0
    total += 2 * seq * s.head_dim * d.stream  # cos, sin (shared by every layer)
    total += norm_saved_per_token(setup) * n  # final norm
    if setup.trains("lm_head") and setup.loss.saves_lm_head_input:
        total += (d.compute if setup.autocast else d.stream) * h * n  # lm_head input
    total += loss_saved_bytes(setup, batch, seq)
    return total


def loss_query(setup: Setup, batch: int, seq: int, labelled: int | None = None) -> LossQuery:
    """What the recipe's loss head is priced from; `labelled`: the positions with a label,
    when not all of them."""
    s, d = setup.shape, dtypes(setup)
    return LossQuery(
        batch=batch,
        seq=seq,
        hidden=s.hidden_size,
        vocab=s.vocab_size,
        stream_bytes=d.stream,
        compute_bytes=d.compute,
        head_bytes=lm_head_bytes(setup),
        head_trains=setup.trains("lm_head"),
        on_gpu=setup.on_gpu,
        softcapping=bool(s.final_logit_softcapping),
        labelled=labelled,
    )


def loss_saved_bytes(setup: Setup, batch: int, seq: int) -> int:
    """What the loss head keeps for backward (`sftkit.components.loss`)."""
    return setup.loss.saved_bytes(loss_query(setup, batch, seq))


def loss_transient_bytes(setup: Setup, batch: int, seq: int) -> int:
    """Live only while the loss head or its backward runs (`sftkit.components.loss`)."""
    return setup.loss.transient_bytes(loss_query(setup, batch, seq))


def lm_head_bytes(setup: Setup) -> int:
    """Element size of the lm_head weight the forward multiplies: its trained copy's when an
    adapter copies it, else the storage's plain dtype."""
    if any("lm_head" in a.trained_modules() for a in setup.adapters):
        return setup.storage.trained_copy_bytes(setup.precision)
    return setup.storage.plain_bytes(setup.precision)


def autocast_copies_in_backward(setup: Setup, tensors: list[LaidTensor]) -> tuple[int, int]:
    """(at the start of backward, while a layer's backward runs): the autocast copies alive.
    Without checkpointing every copy the forward saved; with it the layers' copies were
    dropped with the rest of their saved tensors and come back one layer at a time, when
    the layer is recomputed."""
    total = autocast_weight_copy_bytes(setup, tensors)
    if not setup.checkpointing:
        return total, total
    layers = setup.shape.num_layers
    per_layer = autocast_weight_copy_bytes(setup, [t for t in tensors if t.count == layers])
    outside = total - per_layer
    return outside, outside + per_layer // max(layers, 1)


def autocast_weight_copy_bytes(setup: Setup, tensors: list[LaidTensor]) -> int:
    """Under autocast every fp32 weight a linear layer uses is cast to bf16 for the matmul and
    the copy is saved for backward: LoRA adapters, the fp32 lm_head of a k-bit model, all
    weights of an fp32 model trained in bf16."""
    if not setup.autocast:
        return 0
    total = 0
    # A module with a trained copy runs the copy: its frozen original is never multiplied.
    copied = {m for a in setup.adapters for m in a.trained_modules()}
    for t in tensors:
        if t.dtype_bytes != FP32 or t.kind in ("buffer", "quant_constants"):
            continue
        if t.kind != "copy" and t.name.removesuffix(".weight").split(".")[-1] in copied:
            continue
        is_linear = t.kind == "adapter" or ".lora_" in t.name or _is_matmul_weight(t)
        if t.name.startswith("lm_head") and setup.loss.casts_lm_head:
            continue  # the loss head casts lm_head itself (a loss transient)
        if is_linear and len(t.shape) == 2:
            total += t.numel * setup.compute_bytes * t.count
    return total


def _is_matmul_weight(t: LaidTensor) -> bool:
    name = t.name
    return name.startswith("lm_head") or (name.endswith(".weight") and "_proj" in name)


def dequantized_weight_bytes(setup: Setup) -> int:
    """bitsandbytes dequantizes one quantized weight at a time to the compute dtype for the
    matmul (forward and the input gradient in backward): the largest one is transient."""
    return setup.storage.dequantized_bytes(setup.shape, setup.precision)


def no_grad_layer_bytes(setup: Setup, batch: int, seq: int) -> int:
    """The most a decoder forward of whole rows without autograd holds inside a layer (a
    rollout's log-probability forward; counted on CPU against live tensors,
    tests/test_grpo.py): `no_grad_forward_bytes`, the cos/sin tables, an s x s bool mask
    per row for SDPA/eager over padded rows (rollout rows always are), and the weight
    bitsandbytes dequantizes for the matmul."""
    s, d = setup.shape, dtypes(setup)
    total = no_grad_forward_bytes(setup, batch * seq) + 2 * seq * s.head_dim * d.stream
    if setup.attn_implementation in ("sdpa", "eager"):
        total += batch * seq * seq
    return total + dequantized_weight_bytes(setup)
