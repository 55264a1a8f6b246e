"""Registration. No torch here: this module loads on every CLI start.

Teaching a model new special tokens (chat markers, tool-call tags) needs their embedding rows
and LM-head rows to train, which LoRA alone cannot do. PEFT's ``modules_to_save`` keeps the
original module frozen and trains a full copy of it. The strategies declare that copy as one
more part (`TrainedCopies`) next to the LoRA adapter, and sftkit prices its weights,
gradients, optimizer state and sharding like any other trainable tensor: this plugin does no
memory arithmetic of its own.
"""

from __future__ import annotations

from pydantic import Field

from sftkit.builtin.strategies import LoraOptions, QLoraOptions, lora_adapters, nf4_storage
from sftkit.components import Adapter, TrainedCopies
from sftkit.hookspecs import Register, hookimpl
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


def embed_adapters(options: EmbedOptions) -> tuple[Adapter, ...]:
    """LoRA plus trained copies of the chosen modules."""
    return (*lora_adapters(options), TrainedCopies(tuple(options.train_modules)))


STRATEGIES = (
    StrategySpec(
        name="lora-embed",
        summary="LoRA over a dense base, plus fully trained embeddings and LM head.",
        factory="sftkit_embed.strategy:build_lora_embed",
        options_model=EmbedOptions,
        adapters=embed_adapters,
        tags=frozenset({"lora", "embeddings"}),
    ),
    StrategySpec(
        name="qlora-nf4-embed",
        summary="QLoRA (NF4 base) plus fully trained embeddings and LM head.",
        factory="sftkit_embed.strategy:build_qlora_embed",
        options_model=QLoraEmbedOptions,
        storage=nf4_storage,
        adapters=embed_adapters,
        tags=frozenset({"lora", "quantized", "4bit", "embeddings"}),
    ),
)


@hookimpl
def register_strategies(register: Register) -> None:
    for spec in STRATEGIES:
        register(spec)
