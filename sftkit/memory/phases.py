"""Assembling the estimate: named terms per phase (the peak and verdict follow from them), and
the static terms, the bytes of tensors that exist whatever the batch. Pure arithmetic.

The static terms are the figures `--measure` and tests/test_memory_static.py compare, byte
for byte, with the real tensors of a built model after one optimizer step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sftkit.components.storage import count_words
from sftkit.errors import PluginError
from sftkit.memory import activations as act
from sftkit.memory.budget import (
    ALLOCATOR_MARGIN,
    CUDA_CONTEXT_BYTES,
    NCCL_BYTES,
    WORKSPACE_BYTES,
    allocator_margin,
)
from sftkit.memory.layout import LaidTensor, layout
from sftkit.memory.moments import activation_moments
from sftkit.memory.optimizer import OptimizerCost, optimizer_cost
from sftkit.memory.setup import Setup, Sharding, sharding
from sftkit.memory.terms import PHASES, MemoryTerm, Part, Pool, div


@dataclass
class Breakdown:
    """Everything the estimator computed, phase by phase."""

    parts: dict[str, list[Part]] = field(default_factory=dict)
    parameters: int = 0
    trainable_parameters: int = 0
    tensors: list[LaidTensor] = field(default_factory=list)
    optimizer: OptimizerCost | None = None
    notes: list[str] = field(default_factory=list)


def _weight_parts(setup: Setup, tensors: list[LaidTensor], sh: Sharding) -> list[Part]:
    """One part per kind of tensor the storage lays out, then one per adapter, then the
    model's own buffers; each named and explained by the part that created it."""
    storage, p, shape = setup.storage, setup.precision, setup.shape
    by_kind: dict[str, int] = {}
    for t in tensors:
        if not t.on_host:  # host tensors are their own parts (`host_weight_parts`)
            by_kind[t.kind] = by_kind.get(t.kind, 0) + t.total_bytes
    parts = []
    for kind in STORAGE_KINDS:
        if kind in by_kind:
            name, formula = storage.weight_label(kind, shape, p)
            parts.append(Part(name, div(by_kind[kind], sh.weights), "weights", formula))
    for adapter in setup.adapters:
        added = adapter.tensors(shape, storage, p)
        if added:
            name, formula = adapter.label(added, storage, p)
            total = sum(t.total_bytes for t in added)
            parts.append(Part(name, div(total, sh.weights), "trainable", formula))
    if "buffer" in by_kind:
        parts.append(
            Part(
                "rotary frequency buffers", by_kind["buffer"], "weights", "2 x head_dim/2 x 4 bytes"
            )
        )
    return parts


def host_weight_parts(setup: Setup, tensors: list[LaidTensor]) -> tuple[list[Part], list[Part]]:
    """(while loading, afterwards): tensors the storage keeps in host memory are loaded onto
    the device with the rest and moved to host memory before training starts."""
    total = sum(t.total_bytes for t in tensors if t.on_host)
    if not total:
        return [], []
    name, formula = setup.storage.host_label(setup.precision)
    return (
        [Part(name.replace("in host memory", "on the device while loading"), total, "weights")],
        [Part(name, total, "weights", formula, "host")],
    )


# The kinds a storage lays out, in the order the estimate lists them.
STORAGE_KINDS = ("base", "quant_constants", "unquantized")


def _optimizer_parts(
    setup: Setup, opt: OptimizerCost, sh: Sharding
) -> tuple[list[Part], list[Part], list[Part]]:
    """(gradients, persistent optimizer parts, step temporaries)."""
    name = setup.optimizer.name
    trainable = count_words(opt.trainable_parameters)
    if setup.optimizer_in_backward:
        grads = [
            Part(
                "gradient of one tensor at a time (optimizer in backward)",
                opt.live_gradient_bytes,
                "gradients",
                "the largest trainable tensor's gradient: each is stepped and freed in backward",
            )
        ]
    else:
        grads = [
            Part(
                f"gradients of {trainable} trainable parameters",
                div(opt.gradient_bytes, sh.gradients),
                "gradients",
                "one gradient per trainable parameter, in its dtype",
            )
        ]
    state_pool: Pool = "host" if sh.state_on_host else "device"
    persistent = []
    if opt.state_device_bytes:
        persistent.append(
            Part(
                f"{name} state for {trainable} parameters",
                div(opt.state_device_bytes, sh.state),
                "optimizer",
                "OptimizerSpec.state_for(options).state_bytes(n, dtype) per trainable tensor",
                state_pool,
            )
        )
    if opt.state_paged_bytes:
        persistent.append(
            Part(
                f"{name} paged state (unified memory, can spill to host)",
                div(opt.state_paged_bytes, sh.state),
                "optimizer",
                "moment buffers of tensors with >= 100,000 elements",
                "host" if sh.state_on_host else "paged",
            )
        )
    if sh.master_weights:
        master = sum(t.numel * t.count * 4 for t in opt_trainables(setup))
        persistent.append(
            Part(
                "fp32 master weights (DeepSpeed)",
                div(master, sh.state),
                "optimizer",
                "4 bytes x trainable parameters",
                state_pool,
            )
        )
    temps = []
    if opt.step_temporary_bytes and not sh.state_on_host:
        temps.append(
            Part(
                f"{name} step temporaries",
                opt.step_temporary_bytes // max(sh.state, 1),
                "optimizer",
                "built inside optimizer.step()",
            )
        )
    return grads, persistent, temps


def opt_trainables(setup: Setup) -> list[LaidTensor]:
    return [t for t in layout(setup) if t.trainable]


def _eval_parts(setup: Setup) -> list[Part]:
    s, d = setup.shape, act.dtypes(setup)
    best: list[Part] = []
    for ev in setup.evaluations:
        if ev.kind == "generate":
            ctx = ev.prompt_tokens + ev.new_tokens
            cache = 2 * s.num_layers * ev.batch_size * ctx * s.kv_size * d.linear_out
            prefill = act.no_grad_forward_bytes(setup, ev.batch_size * ev.prompt_tokens)
            logits = ev.batch_size * s.vocab_size * (d.compute + 4)
            parts = [
                Part(
                    f"{ev.name}: KV cache ({ev.batch_size} x {ctx} tokens)",
                    cache,
                    "activations",
                    "2 x layers x batch x tokens x kv_heads x head_dim",
                ),
                Part(
                    f"{ev.name}: prefill activations (no grad)",
                    prefill,
                    "activations",
                    "largest moment of a layer",
                ),
                Part(f"{ev.name}: next-token logits", logits, "logits", ""),
            ]
        else:
            n = ev.batch_size * ev.prompt_tokens
            parts = [
                Part(
                    f"{ev.name}: forward activations (no grad)",
                    act.no_grad_forward_bytes(setup, n),
                    "activations",
                    "largest moment of a layer",
                ),
                Part(
                    f"{ev.name}: logits, fp32 copy and log-probabilities ({ev.batch_size} x {ev.prompt_tokens})",
                    n * s.vocab_size * (d.compute + 8),
                    "logits",
                    "(2 + 4 + 4) x vocab per token",
                ),
            ]
        if sum(p.bytes for p in parts) > sum(p.bytes for p in best):
            best = parts
    return best


def rollout_parts(setup: Setup) -> list[Part]:
    """What a reinforcement objective holds on top of the weights and optimizer state while
    it generates and scores a generation batch (`ObjectiveSpec.rollout`): generating, then
    the no-grad log-probability forwards, one after the other, so the phase peaks at the
    larger (`rollout_stages`)."""
    generating, scoring = rollout_stages(setup)
    return max(generating, scoring, key=lambda parts: sum(p.bytes for p in parts))


def rollout_stages(setup: Setup) -> tuple[list[Part], list[Part]]:
    """(generating, scoring). Generating: the generation batch's KV cache grown to prompt +
    completion tokens (the prompt bounded by training.max_seq_length), the prefill's
    intermediates and the next-token logits, as evaluation's generation. Scoring, once
    generate has returned and freed its cache, only for the old policy's (several passes
    per generation) or the reference's (a KL term) per-token log-probabilities: TRL's
    no-grad forwards over prompt + completion, one micro-batch at a time, each peaking at
    its decoder layers or at its chunked log-prob head, beside the log-probabilities
    already computed. With a generation engine (`Rollout.engine`) generating is in the
    engine's share, priced apart (`sftkit.memory.colocated`)."""
    rollout = setup.rollout
    if rollout is None:
        return [], []
    s, d = setup.shape, act.dtypes(setup)
    batch, tokens, completion = setup.rollout_sequences, setup.seq_len, rollout.completion_tokens
    # a generation engine's KV cache and activations are in its own share (`engine_share`)
    generating = [] if rollout.engine else generation_parts(setup)
    if not (rollout.old_log_probs or rollout.reference):
        return generating, []
    # TRL's forward batch: per_device_train_batch_size rows (the training micro-batch)
    rows = min(setup.micro_batch_size, batch)
    scoring = []
    if rollout.old_log_probs and rollout.reference:  # the old policy's first, then kept
        scoring.append(
            Part(
                f"rollout: old policy log-probabilities ({batch} x {completion})",
                kept_log_probs(setup)["old policy"],
                "logits",
                "fp32 per completion token",
            )
        )
    scoring.append(
        Part(
            f"rollout: log-probabilities of the earlier forward batches ({batch - rows} x {tokens - 1})",
            (batch - rows) * (tokens - 1) * 4,
            "logits",
            "fp32 per position: TRL keeps each batch's completion slice, a view of its whole rows",
        )
    )
    layers = act.no_grad_layer_bytes(setup, rows, tokens)
    query = act.loss_query(setup, rows, tokens, labelled=rows * completion)
    head = rows * tokens * s.hidden_size * d.stream + setup.loss.no_grad_bytes(query)
    if layers >= head:
        what, formula = (
            "decoder layer",
            "per token 4 x stream x hidden + (3, 4 under adapted MLP inputs) x MLP width; "
            "cos/sin, s x s bool mask per row, dequantized weight",
        )
    else:
        what, formula = (
            "log-prob head",
            "final hidden states + the head's no-grad forward (TRL: 4096 x 32768 tile buffer, "
            "fp32 statistics per scored position)",
        )
    scoring.append(
        Part(
            f"rollout: log-prob forward, {rows} x {tokens} tokens (no grad, peak in the {what})",
            max(layers, head),
            "activations",
            formula,
        )
    )
    return generating, scoring


def kept_log_probs(setup: Setup) -> dict[str, int]:
    """Each set of per-token log-probabilities a rollout computes and keeps for its training
    steps (whose -> bytes): fp32 per completion token of the generation batch."""
    rollout = setup.rollout
    if rollout is None:
        return {}
    size = setup.rollout_sequences * rollout.completion_tokens * 4
    wanted = (("old policy", rollout.old_log_probs), ("reference", rollout.reference))
    return {whose: size for whose, held in wanted if held}


def generation_parts(setup: Setup) -> list[Part]:
    """The model's own generation of the rollout batch (transformers' ``generate``)."""
    rollout = setup.rollout
    assert rollout is not None
    s, d = setup.shape, act.dtypes(setup)
    # setup.seq_len is a training row: the prompt (max_seq_length) and its completion
    batch, tokens, completion = setup.rollout_sequences, setup.seq_len, rollout.completion_tokens
    prompt = tokens - completion
    return [
        Part(
            f"rollout: KV cache ({batch} completions x {tokens} tokens)",
            2 * s.num_layers * batch * tokens * s.kv_size * d.linear_out,
            "activations",
            "2 x layers x completions x (prompt + completion) x kv_heads x head_dim",
        ),
        Part(
            "rollout: prefill activations (no grad)",
            act.no_grad_forward_bytes(setup, batch * prompt),
            "activations",
            "largest moment of a layer",
        ),
        Part("rollout: next-token logits", batch * s.vocab_size * (d.compute + 4), "logits", ""),
    ]


def reference_bytes(setup: Setup, tensors: list[LaidTensor]) -> int:
    """The objective's frozen reference (`ObjectiveSpec.reference_copy`): with adapters, a
    copy of the adapters on the same base weights (TRL's ``ref`` adapter); without, a copy
    of every weight the model holds (full training)."""
    if not setup.reference_copy:
        return 0
    if setup.composition.has_adapters:
        return sum(
            t.total_bytes
            for adapter in setup.adapters
            for t in adapter.tensors(setup.shape, setup.storage, setup.precision)
        )
    return sum(t.total_bytes for t in tensors)


def _reference_parts(setup: Setup, tensors: list[LaidTensor], sh: Sharding) -> list[Part]:
    total = reference_bytes(setup, tensors)
    if not total:
        return []
    what = "the adapters" if setup.composition.has_adapters else "the model"
    return [
        Part(
            f"frozen reference: a copy of {what} ({setup.objective})",
            div(total, sh.weights),
            "weights",
            "adapter tensors again, no gradients"
            if setup.composition.has_adapters
            else "every weight again, no gradients",
        )
    ]


def _take_place(phases: dict[str, list[Part]], term: MemoryTerm) -> None:
    """Drop the parts `term` replaces from its phases; replacing nothing is the plugin's
    mistake (a renamed term, a typo), said at once instead of pricing both."""
    found = False
    for phase in term.phases:
        kept = [p for p in phases[phase] if not p.name.startswith(term.replaces)]
        found = found or len(kept) < len(phases[phase])
        phases[phase] = kept
    if not found:
        names = sorted({p.name for phase in term.phases for p in phases[phase]})
        raise PluginError(
            f"memory term {term.name!r}{f' of {term.source}' if term.source else ''} replaces "
            f"{term.replaces!r}, but no term of its phases ({', '.join(term.phases)}) is named "
            f"so; they are: {'; '.join(names)}."
        )


def breakdown(setup: Setup, extra: Sequence[MemoryTerm] = ()) -> Breakdown:
    tensors = layout(setup)
    opt = optimizer_cost(setup, tensors)
    sh = sharding(setup)
    out = Breakdown(tensors=tensors, optimizer=opt)
    out.parameters = setup.shape.parameters
    out.trainable_parameters = opt.trainable_parameters
    loading, hosted = host_weight_parts(setup, tensors)
    weights = [*_weight_parts(setup, tensors, sh), *hosted, *_reference_parts(setup, tensors, sh)]
    grads, persistent, temps = _optimizer_parts(setup, opt, sh)
    grads_total = grads[0].bytes

    # sharding extras
    extras: list[Part] = []
    s = setup.shape
    if sh.gathered_layers:
        per_layer = sum(t.total_bytes for t in tensors if t.count == s.num_layers) // s.num_layers
        extras.append(
            Part(
                f"unsharded parameters of {sh.gathered_layers} layers (all-gather)",
                sh.gathered_layers * per_layer,
                "communication",
            )
        )
    if sh.gathered_root:
        root = sum(t.total_bytes for t in tensors if t.count == 1 and t.kind != "buffer")
        extras.append(
            Part(
                "unsharded embeddings and lm_head (FSDP root unit)",
                root - div(root, setup.num_gpus),
                "communication",
            )
        )
    if sh.ddp_buckets:
        extras.append(
            Part(
                "DDP gradient buckets", grads_total, "communication", "a flat copy of the gradients"
            )
        )

    load_stage = _load_staging(setup)
    phases: dict[str, list[Part]] = {}
    phases["load"] = [*[w for w in weights if w.pool != "host"], *loading, load_stage]
    # With the optimizer in backward the first backward already steps (and builds the state
    # of) every parameter, one tensor's temporaries at a time, inside the layers' backward.
    in_backward = tuple(temps) if setup.optimizer_in_backward else ()
    fb_first = activation_moments(
        setup, tensors, grads_total, grads[0].name, sh, accumulated=False,
        step_temporaries=in_backward,
    )  # fmt: skip
    fb = fb_first
    if setup.grad_accum > 1:
        fb_acc = activation_moments(
            setup, tensors, grads_total, grads[0].name, sh, accumulated=True
        )
        fb = max((fb_first, fb_acc), key=lambda ps: sum(p.bytes for p in ps if p.pool == "device"))
    stepping = list(persistent) if setup.optimizer_in_backward else []
    phases["forward_backward"] = [*weights, *stepping, *fb, *extras]
    phases["optimizer_step"] = [
        *weights,
        *grads,
        *persistent,
        *temps,
        *[e for e in extras if e.name == "DDP gradient buckets"],
    ]
    phases["later_steps"] = [*weights, *persistent, *fb, *extras]
    # Generation after the first step: the optimizer state exists, the gradients are freed.
    phases["rollout"] = [*weights, *persistent, *rollout_parts(setup)] if setup.rollout else []
    phases["evaluation"] = [*weights, *persistent, *_eval_parts(setup)]
    for term in extra:
        if term.replaces:
            _take_place(phases, term)
        for phase in term.phases:
            phases[phase].append(
                Part(term.name, term.bytes, term.category, term.formula, term.pool)
            )
    if setup.on_gpu:
        for phase, parts in phases.items():
            if not parts:  # a phase this run does not go through (no rollout)
                continue
            allocated = sum(p.bytes for p in parts if p.pool == "device")
            parts.append(
                Part(
                    f"allocator margin ({ALLOCATOR_MARGIN:.0%} of allocated)",
                    allocator_margin(allocated),
                    "overhead",
                    "reserved above allocated",
                    figure="reserved",
                )
            )
            parts.append(
                Part(
                    "CUDA context",
                    CUDA_CONTEXT_BYTES,
                    "overhead",
                    "assumption, see docs/memory.md",
                    figure="outside",
                )
            )
            if phase != "load":
                # PyTorch allocates the cuBLAS/cuBLASLt workspaces through its allocator
                parts.append(
                    Part("cuBLAS/cuBLASLt workspaces", WORKSPACE_BYTES, "overhead", "2 x 32 MiB")
                )
            if sh.communication:
                parts.append(
                    Part(
                        "NCCL buffers", NCCL_BYTES, "communication", "assumption", figure="outside"
                    )
                )
    out.parts = {p: [x for x in phases[p] if x.bytes > 0] for p in PHASES}
    return out


def _load_staging(setup: Setup) -> Part:
    """transformers loads one tensor at a time in the checkpoint dtype before quantizing or
    casting it; peft's fp32 upcast replaces each bf16 parameter one by one. A tensor kept
    in the dtype it is loaded in goes straight into place: nothing is staged for it."""
    converted = [
        t.numel
        for t in layout(setup)
        if t.kind in ("base", "unquantized") and t.dtype_bytes != setup.model_dtype_bytes
    ]
    return Part(
        "one tensor staged while loading",
        max(converted, default=0) * setup.model_dtype_bytes,
        "other",
        "largest quantized or cast tensor in the load dtype",
    )


@dataclass(frozen=True)
class StaticBytes:
    weights: int  # every parameter, quantization constant and buffer the model holds
    trainable: int  # parameters with requires_grad
    gradients: int
    optimizer_state: int  # all pools (device and paged)

    def as_dict(self) -> dict[str, int]:
        return {
            "weights": self.weights,
            "trainable": self.trainable,
            "gradients": self.gradients,
            "optimizer_state": self.optimizer_state,
        }


def static_bytes(setup: Setup) -> StaticBytes:
    tensors = layout(setup)
    opt = optimizer_cost(setup, tensors)
    return StaticBytes(
        weights=sum(t.total_bytes for t in tensors),
        trainable=opt.trainable_bytes,
        # the optimizer in backward frees every gradient once it has stepped it
        gradients=0 if setup.optimizer_in_backward else opt.gradient_bytes,
        optimizer_state=opt.state_bytes,
    )
