"""Built-in loss heads (``training.loss``) and the built-in training objective (``sft``).

A plugin adds either exactly like this module does: a `LossHeadSpec` whose `memory` declares
what the head keeps (the estimator prices it from that alone) and whose factory computes it;
an `ObjectiveSpec` naming its trainer class, its config class and the function that builds
its data.
"""

from __future__ import annotations

from sftkit.components.loss import LOSS_HEADS
from sftkit.hookspecs import Register, hookimpl
from sftkit.specs import LossHeadSpec, ObjectiveSpec


@hookimpl(trylast=True)
def register_loss_heads(register: Register[LossHeadSpec]) -> None:
    register(
        LossHeadSpec(
            "full",
            "fp32 log-softmax over the whole (tokens x vocabulary) logits.",
            LOSS_HEADS["full"],
            "sftkit.training.loss:full_head",
        )
    )
    register(
        LossHeadSpec(
            "chunked",
            "sftkit's chunked cross-entropy: never the whole logits; recomputed in backward.",
            LOSS_HEADS["chunked"],
            "sftkit.training.loss:chunked_head",
        )
    )
    register(
        LossHeadSpec(
            "liger",
            "Liger's fused linear cross-entropy (CUDA; needs liger-kernel).",
            LOSS_HEADS["liger"],
            "sftkit.training.loss:liger_head",
        )
    )


@hookimpl(trylast=True)
def register_objectives(register: Register[ObjectiveSpec]) -> None:
    register(
        ObjectiveSpec(
            "sft",
            "Supervised fine-tuning: next-token loss on the completions (TRL's SFTTrainer).",
            trainer="sftkit.training.trainer:SftkitTrainer",
            config="trl:SFTConfig",
            factory="sftkit.training.dataset:sft_dataset",
        )
    )
