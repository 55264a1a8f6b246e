"""Built-in loss heads (``training.loss``), the built-in training objectives (``sft``,
``dpo``) and reward functions (``gsm8k-correct``, ``format``).

A plugin adds either exactly like this module does: a `LossHeadSpec` whose `memory` declares
what the head keeps (the estimator prices it from that alone) and whose factory computes it;
an `ObjectiveSpec` naming its trainer class, its config class and the function that builds
its data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from sftkit.components.loss import LOSS_HEADS
from sftkit.devices import is_cpu
from sftkit.errors import Problem, SftkitError
from sftkit.hookspecs import Register, hookimpl
from sftkit.specs import (
    LossHeadSpec,
    ObjectiveSpec,
    Options,
    OptionSearch,
    RewardSpec,
    Rollout,
)

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe

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


class WeightedReward(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="A reward component (`sftkit list rewards`).")
    weight: float = Field(default=1.0, description="Its weight in the summed reward.")


class GrpoOptions(Options):
    num_generations: int = Field(
        default=4, ge=2, description="Completions sampled per prompt (a group; at least 2)."
    )
    max_completion_length: int = Field(
        default=256, ge=1, description="Most tokens generated per completion."
    )
    temperature: float = Field(default=1.0, gt=0, description="Sampling temperature.")
    beta: float = Field(
        default=0.0,
        ge=0,
        description="KL penalty towards the reference (0, TRL's default: no reference kept).",
    )
    num_iterations: int = Field(
        default=1,
        ge=1,
        description="Optimization passes over each generation batch (GRPO's mu); above 1 the "
        "old policy's log-probabilities are kept.",
    )
    rewards: list[WeightedReward] = Field(
        default_factory=lambda: [WeightedReward(name="gsm8k-correct")],
        min_length=1,
        description="The reward components, each with a weight; their weighted sum scores a "
        "completion.",
    )
    use_vllm: bool = Field(
        default=False,
        description="Generate with vLLM colocated on each training GPU (TRL's colocate "
        "mode; needs the vllm package and a CUDA GPU) instead of transformers' generate.",
    )
    vllm_gpu_memory_utilization: float = Field(
        default=0.3,
        gt=0,
        lt=1,
        description="The fraction of each GPU's memory vLLM reserves for its weights and KV "
        "cache (use_vllm); training has the rest.",
    )
    vllm_enable_sleep_mode: bool = Field(
        default=False,
        description="vLLM gives its memory back between generations (its weights dropped, "
        "its KV cache freed; use_vllm): training gets the whole GPU, each generation waits "
        "for vLLM to wake.",
    )


VLLM = "vLLM (colocate)"


def grpo_rollout(options: GrpoOptions) -> Rollout:
    """What TRL's GRPOTrainer holds while it generates: the old policy's log-probabilities
    when it steps more than once on a generation (else it reuses the policy's own) or
    generates with vLLM (TRL's importance-sampling correction, on by default, compares them
    with vLLM's), the reference's with a KL term."""
    return Rollout(
        completion_tokens=options.max_completion_length,
        old_log_probs=options.num_iterations > 1 or options.use_vllm,
        reference=options.beta > 0,
        group=options.num_generations,
        engine=VLLM if options.use_vllm else "",
        engine_share=options.vllm_gpu_memory_utilization if options.use_vllm else 0.0,
        engine_sleeps=options.use_vllm and options.vllm_enable_sleep_mode,
        engine_option="vllm_gpu_memory_utilization",
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
    register(
        ObjectiveSpec(
            "grpo",
            "Group relative policy optimization with reward components (TRL's GRPOTrainer); "
            "trains on the prompts of any format.",
            trainer="sftkit.training.reinforcement:SftkitGrpoTrainer",
            config="sftkit.training.reinforcement:SftkitGrpoConfig",
            factory="sftkit.training.reinforcement:grpo_dataset",
            options_model=GrpoOptions,
            own_loss=True,
            rollout=grpo_rollout,
            # the completion length, and the group size at the recipe's prompts per
            # generation batch (that batch, micro_batch_size x accumulation x GPUs, grows)
            fit_searches=(
                OptionSearch("max_completion_length", 16, 1 << 20, 16),
                OptionSearch("num_generations", 2, 1024, per_prompt=True),
            ),
        )
    )


@hookimpl(trylast=True)
def validate_recipe(recipe: ResolvedRecipe | None) -> list[Problem] | None:
    """grpo's rewards name registered reward components; its KL term needs a reference,
    which sftkit gives it through adapters only (switched off, TRL's way)."""
    if recipe is None:
        return None
    t = recipe.recipe.training
    spec = recipe.registry.objectives.get(t.objective)
    if spec.options_model is not GrpoOptions:
        return None
    options = GrpoOptions.model_validate(t.objective_options)
    problems = []
    for index, reward in enumerate(options.rewards):
        try:  # unknown, or registered by two plugins: said now, not when training starts
            recipe.registry.rewards.get(reward.name)
        except SftkitError as error:
            problems.append(
                Problem(
                    f"training.objective_options.rewards[{index}].name", error.message, error.hint
                )
            )
    # TRL generates micro_batch x accumulation x GPUs completions at once, in whole groups
    batch = t.micro_batch_size * t.gradient_accumulation_steps * recipe.recipe.hardware.num_gpus
    if batch % options.num_generations:
        problems.append(
            Problem(
                "training.objective_options.num_generations",
                f"grpo generates training.micro_batch_size x gradient_accumulation_steps x GPUs "
                f"= {batch} completions at once, which is not whole groups of "
                f"{options.num_generations} completions per prompt.",
                "Make that product a multiple of num_generations (micro_batch_size and "
                "num_generations count completions, TRL's way).",
            )
        )
    if options.beta > 0 and recipe.strategy_parts.trains_base:
        problems.append(
            Problem(
                "training.objective_options.beta",
                f"grpo's KL term (beta {options.beta:g}) needs a reference model, which sftkit "
                f"gives only by switching adapters off; strategy {recipe.strategy.spec.name!r} "
                "trains every weight.",
                "Use beta: 0, or an adapter strategy (lora, qlora-nf4).",
            )
        )
    problems += _vllm_problems(recipe, options)
    return problems or None


def _vllm_problems(recipe: ResolvedRecipe, options: GrpoOptions) -> list[Problem]:
    """What stops vLLM colocate before anything loads: no GPU, or a base it cannot load."""
    if not options.use_vllm:
        return []
    key = "training.objective_options.use_vllm"
    problems = []
    if is_cpu(recipe.recipe.hardware.gpu):
        problems.append(
            Problem(
                key,
                "vLLM generates on a CUDA GPU; hardware.gpu is cpu.",
                "Set use_vllm: false on the CPU (transformers' generate), or run on a GPU.",
            )
        )
    if not recipe.strategy_parts.storage.served_by_vllm:
        problems.append(
            Problem(
                key,
                f"vLLM cannot load the base of strategy {recipe.strategy.spec.name!r} (it has "
                "no in-flight 8-bit quantization; TRL refuses it).",
                "Use a 4-bit or unquantized base (qlora-nf4, lora), or use_vllm: false.",
            )
        )
    return problems


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
