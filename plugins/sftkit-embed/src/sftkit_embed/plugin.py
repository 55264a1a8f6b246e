"""Registration and memory pricing. No torch here: this module loads on every CLI start.

Teaching a model new special tokens (chat markers, tool-call tags) needs their embedding rows
and LM-head rows to train, which LoRA alone cannot do. PEFT's ``modules_to_save`` keeps the
original module frozen and trains a full copy of it. That copy, its gradient and its
optimizer state are memory the built-in LoRA arithmetic does not know about, so this plugin
prices them through `extra_memory_terms`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sftkit.builtin.strategies import LoraOptions, QLoraOptions, qlora_quantization
from sftkit.hookspecs import hookimpl
from sftkit.memory.terms import MemoryTerm
from sftkit.specs import StrategySpec

EMBEDDING_MODULES = ("embed_tokens", "lm_head")


class EmbedOptions(LoraOptions):
    train_modules: list[str] = Field(
        default_factory=lambda: list(EMBEDDING_MODULES),
        min_length=1,
        description="Modules trained in full next to the adapters (PEFT modules_to_save).",
    )


class QLoraEmbedOptions(QLoraOptions, EmbedOptions):
    pass


STRATEGIES = (
    StrategySpec(
        name="lora-embed",
        summary="LoRA over a dense base, plus fully trained embeddings and LM head.",
        factory="sftkit_embed.strategy:build_lora_embed",
        options_model=EmbedOptions,
        base_storage="dense",
        trains="adapters",
        adapter="lora",
        tags=frozenset({"lora", "embeddings"}),
    ),
    StrategySpec(
        name="qlora-nf4-embed",
        summary="QLoRA (NF4 base) plus fully trained embeddings and LM head.",
        factory="sftkit_embed.strategy:build_qlora_embed",
        options_model=QLoraEmbedOptions,
        base_storage="4bit",
        trains="adapters",
        quantization=qlora_quantization,
        adapter="lora",
        tags=frozenset({"lora", "quantized", "4bit", "embeddings"}),
    ),
)


@hookimpl
def register_strategies(register):  # type: ignore[no-untyped-def]
    for spec in STRATEGIES:
        register(spec)


def copy_dtype_bytes(recipe: Any) -> int:
    """The dtype PEFT's copy has: that of the module it copies. A k-bit base goes through
    `prepare_model_for_kbit_training`, which upcasts every non-quantized weight to fp32."""
    if recipe.strategy.spec.base_storage != "dense":
        return 4
    return {"bfloat16": 2, "float16": 2, "float32": 4}[recipe.recipe.model.dtype]


@hookimpl
def extra_memory_terms(recipe: Any, shape: Any) -> list[MemoryTerm] | None:
    if recipe.strategy.spec.name not in {s.name for s in STRATEGIES}:
        return None
    wanted = set(recipe.strategy.options.train_modules)
    groups = [g for g in shape.census() if g.module in wanted]
    if not groups:
        return None
    item = copy_dtype_bytes(recipe)
    optimizer = recipe.optimizer.spec
    state = optimizer.state_for(recipe.optimizer.options)
    numels = [g.numel for g in groups for _ in range(g.count)]
    weights = sum(numels) * item
    grads = weights
    state_bytes = sum(state.state_bytes(n, item) for n in numels)
    modules = "+".join(sorted(wanted))
    words = f"{sum(numels) / 1e6:.1f} M parameters"
    return [
        MemoryTerm(
            name=f"trainable copy of {modules} ({words})",
            bytes=weights,
            phases=("load", "forward_backward", "optimizer_step", "later_steps", "evaluation"),
            category="trainable",
            formula=f"{sum(numels)} x {item} B (PEFT modules_to_save copy)",
            source="embed",
        ),
        MemoryTerm(
            name=f"gradients of the {modules} copy",
            bytes=grads,
            phases=("forward_backward", "optimizer_step", "later_steps"),
            category="gradients",
            formula=f"{sum(numels)} x {item} B",
            source="embed",
        ),
        MemoryTerm(
            name=f"{optimizer.name} state of the {modules} copy",
            bytes=state_bytes,
            phases=("optimizer_step", "later_steps", "evaluation"),
            category="optimizer",
            formula=f"{type(state).__name__} over {len(numels)} tensors",
            pool="paged" if optimizer.paged else "device",
            source="embed",
        ),
    ]
