"""Activation moments of one forward/backward: the candidates for its peak.

The start of backward (every layer's saved tensors plus the loss gradients), the top and the
bottom layer's backward (one layer's transients, gradients so far) and the end (all
gradients): the phase takes the largest.
"""

from __future__ import annotations

from sftkit.memory import activations as act
from sftkit.memory.layout import LaidTensor, layout
from sftkit.memory.setup import Setup, Sharding, sharding
from sftkit.memory.terms import Part, div


def _grad_profile(tensors: list[LaidTensor], num_layers: int) -> tuple[int, int, int]:
    """(per decoder layer, lm_head + final norm, embedding) gradient bytes."""
    layer = head = emb = 0
    for t in tensors:
        if not t.trainable:
            continue
        b = t.numel * t.dtype_bytes
        if t.count == num_layers and ".*." in t.name:  # model.layers.*, transformer.h.*
            layer += b
        elif "embed_tokens" in t.name:
            emb += b * t.count
        else:
            head += b * t.count
    return layer, head, emb


def _moments(
    setup: Setup,
    tensors: list[LaidTensor],
    grads_total: int,
    grad_name: str,
    sh: Sharding,
    accumulated: bool,
    step_temporaries: tuple[Part, ...] = (),
) -> list[list[Part]]:
    """Every candidate peak moment of one forward/backward: the start of backward (every
    layer's saved tensors plus the loss gradients), the top and bottom layers' backward,
    and the end (all gradients)."""
    b, s, L = setup.micro_batch_size, setup.seq_len, setup.shape.num_layers
    layer = act.layer_saved_bytes(setup, b, s)
    head = act.head_saved_bytes(setup, b, s) - act.loss_saved_bytes(setup, b, s)
    loss = act.loss_saved_bytes(setup, b, s)
    loss_tmp = act.loss_transient_bytes(setup, b, s)
    bwd = act.backward_transient_bytes(setup, b, s)
    copies_at_start, copies_in_layer = act.autocast_copies_in_backward(setup, tensors)
    first = act.first_layer_reduction(setup, b, s)
    dequant = act.dequantized_weight_bytes(setup)
    lg, hg, eg = _grad_profile(tensors, L)
    lg, hg, eg = (div(x, sh.gradients) for x in (lg, hg, eg))
    tokens = f"{b} x {s} tokens"

    def saved_layers(j: int, recomputing: bool) -> list[Part]:
        if setup.checkpointing:
            one = act.checkpointed_layer_bytes(setup, b, s)
            if setup.activation_offload:  # in host memory; one back while its layer recomputes
                parts = [
                    Part(
                        f"checkpointed inputs of {L} layers, offloaded ({tokens})",
                        L * one,
                        "activations",
                        "stream dtype x hidden per token per layer, pinned host memory",
                        "host",
                    )
                ]
                if recomputing:
                    parts.append(
                        Part(
                            "offloaded input brought back for the layer being recomputed",
                            one,
                            "activations",
                            "stream dtype x hidden per token",
                        )
                    )
            else:
                parts = [
                    Part(
                        f"checkpointed inputs of {j} layers ({tokens})",
                        j * one,
                        "activations",
                        "stream dtype x hidden per token per layer",
                    )
                ]
            if recomputing:
                parts.append(
                    Part(
                        "activations of the layer being recomputed",
                        layer,
                        "activations",
                        "per-layer saved tensors (docs/memory.md)",
                    )
                )
            return parts
        return [
            Part(
                f"activations of {j} layers ({tokens}, {setup.attn_implementation})",
                j * layer - (first if j == L else 0),
                "activations",
                "per-layer saved tensors (docs/memory.md)",
            )
        ]

    def copies(n: int) -> list[Part]:
        if not n:
            return []
        return [Part("autocast bf16 copies of fp32 weights", n, "activations",
                     "2 bytes x fp32 matmul weights")]  # fmt: skip

    # A layer's backward (recomputed or not) dequantizes its weights one at a time and, with
    # the optimizer in backward, steps each parameter whose gradient is ready. Neither
    # happens while the loss head's backward runs, at the start.
    in_layer = []
    if dequant:
        in_layer.append(
            Part(
                "dequantized weight (bitsandbytes, transient)",
                dequant,
                "activations",
                "largest linear layer in the compute dtype",
            )
        )
    in_layer.extend(step_temporaries)

    def grads(n: int) -> list[Part]:
        if setup.optimizer_in_backward:  # one gradient at a time, from the first one on
            n = grads_total if n else 0
        n = grads_total if accumulated else n
        name = grad_name if n == grads_total else "gradients so far in backward"
        return [Part(name, n, "gradients", "one gradient per trainable parameter")] if n else []

    start = [
        *saved_layers(L, recomputing=False),
        Part("token ids, rotary tables, final norm", head, "activations", ""),
        *_loss_parts(setup, loss, loss_tmp),
        *copies(copies_at_start),
        *grads(0),
    ]
    top = [
        *saved_layers(L, recomputing=True),
        Part("gradients in flight (one layer)", bwd, "activations", "approximation"),
        *copies(copies_in_layer),
        *in_layer,
        *grads(hg + lg),
    ]
    bottom = [
        *saved_layers(1, recomputing=True),
        Part("gradients in flight (one layer)", bwd, "activations", "approximation"),
        *copies(copies_in_layer),
        *in_layer,
        *grads(hg + L * lg),
    ]
    end = grads(grads_total) or [Part(grad_name, 0, "gradients")]
    return [start, top, bottom, end]


def _loss_parts(setup: Setup, saved: int, transient: int) -> list[Part]:
    q = act.loss_query(setup, setup.micro_batch_size, setup.seq_len)
    (saved_name, saved_formula), (tmp_name, tmp_formula) = setup.loss.labels(q)
    return [
        Part(saved_name, saved, "logits", saved_formula),
        Part(tmp_name, transient, "logits", tmp_formula),
    ]


def _total(parts: list[Part]) -> int:
    """Device bytes: the moment that peaks on the device (host memory is its own pool)."""
    return sum(p.bytes for p in parts if p.pool == "device")


def activation_moments(
    setup: Setup,
    tensors: list[LaidTensor],
    grads_total: int,
    grad_name: str,
    sh: Sharding,
    accumulated: bool,
    step_temporaries: tuple[Part, ...] = (),
) -> list[Part]:
    """The largest moment of one forward/backward: its parts (gradients included);
    `step_temporaries`: the optimizer's, in the layers' backward (optimizer in backward)."""
    moments = _moments(setup, tensors, grads_total, grad_name, sh, accumulated, step_temporaries)
    return max(moments, key=_total)


def activation_peak_bytes(setup: Setup) -> int:
    """The most activation memory (saved tensors, loss block, transients) live at any moment
    of one forward/backward, gradients left out."""
    tensors = layout(setup)
    moments = _moments(setup, tensors, 0, "", sharding(setup), accumulated=False)
    return max(
        sum(
            p.bytes for p in parts if p.category in ("activations", "logits") and p.pool == "device"
        )
        for parts in moments
    )
