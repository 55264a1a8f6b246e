"""Built-in loss heads (``training.loss``), the built-in training objectives (``sft``,
``dpo``) and reward functions (``gsm8k-correct``, ``format``).

A plugin adds either exactly like this module does: a `LossHeadSpec` whose `memory` declares
what the head keeps (the estimator prices it from that alone) and whose factory computes it;
an `ObjectiveSpec` naming its trainer class, its config class and the function that builds
its data.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sftkit.components.loss import LOSS_HEADS
from sftkit.hookspecs import Register, hookimpl
from sftkit.specs import LossHeadSpec, ObjectiveSpec, Options, RewardSpec

# The loss types TRL 1.16's DPOTrainer computes (DPOConfig.loss_type; a test checks the
# installed TRL names each).
DpoLoss = Literal[
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard",
    "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
]  # fmt: skip


class DpoOptions(Options):
    beta: float = Field(
        default=0.1,
        gt=0,
        description="How far the policy may move from the reference (DPO's beta; for ipo the "
        "regularisation).",
    )
    loss_type: list[DpoLoss] = Field(
        default_factory=lambda: list[DpoLoss](["sigmoid"]),
        min_length=1,
        description="TRL's DPO loss (sigmoid: the DPO paper's); several are summed.",
    )


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
    register(
        ObjectiveSpec(
            "dpo",
            "Direct preference optimization on {prompt, chosen, rejected} pairs (TRL's "
            "DPOTrainer); data.format preference.",
            trainer="sftkit.training.preference:SftkitDpoTrainer",
            config="sftkit.training.preference:SftkitDpoConfig",
            factory="sftkit.training.preference:dpo_dataset",
            options_model=DpoOptions,
            sequences_per_example=2,  # chosen and rejected, both through the model each step
            reference_copy=True,
            own_loss=True,
        )
    )


@hookimpl(trylast=True)
def register_rewards(register: Register[RewardSpec]) -> None:
    register(
        RewardSpec(
            "gsm8k-correct",
            "1 where the final answer equals the reference answer (the gsm8k evaluator's "
            "extraction), else 0.",
            "sftkit.training.rewards:gsm8k_correct",
        )
    )
    register(
        RewardSpec(
            "format",
            "1 where the answer ends with a '#### N' line (and an R1-style model closed its "
            "</think>), else 0.",
            "sftkit.training.rewards:answer_format",
        )
    )
