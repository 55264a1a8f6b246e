"""What the estimator reads: from a resolved recipe plain numbers and the components'
declarations (`Setup`), from the installed trainer what changes memory, and from the
recipe's engine how terms shard over GPUs.

The loss head (``training.loss``, `sftkit.components.loss`): ``full``, ``chunked`` and
``liger`` name a head; ``auto`` is what the installed trainer does, told by its version
(``importlib.metadata``, which imports nothing): from TRL 1.15 every SFTTrainer patches the
model with ``add_fused_lm_head``, a chunked log-probability head that never builds the
(tokens x vocabulary) logits; before, the loss came from the full logits (sftkit pins
``loss_type="nll"`` on the releases whose default was TRL's older chunked loss, so ``auto``
prices what runs). Without TRL the estimate assumes what ``pip install 'sftkit[train]'``
installs today, the fused head.

``SFTKIT_LOSS_HEAD``, the environment variable that used to override the detection, is
gone: a run that still sets it is refused with the recipe switch to use instead.

Per-GPU memory with more than one GPU: the recipe's engine says what it replicates and
what it shards (`sftkit.engine.Engine.sharding`; the built-in engines' rules are described
in `sftkit.builtin.engines`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from sftkit.attention import attention_for
from sftkit.components import Adapter, BaseStorage, Composition, Precision
from sftkit.components.loss import LOSS_HEADS, TRL_HEAD, LossHead
from sftkit.dtypes import DTYPE_BYTES, PRECISION_BYTES
from sftkit.engine import Engine, Sharding, engine_of
from sftkit.errors import SftkitError
from sftkit.modelshape.shape import ModelShape
from sftkit.recipe.adapter import saved_adapter_config
from sftkit.specs import OptimizerSpec, Rollout, StrategySpec
from sftkit.versions import installed, release

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe
    from sftkit.recipe.schema import DistributedSection
    from sftkit.registry import Registry


@dataclass(frozen=True)
class EvalWorkload:
    """One evaluator's memory-relevant settings."""

    name: str
    kind: str  # "generate" or "loss"
    batch_size: int
    prompt_tokens: int
    new_tokens: int = 0


FULL = LOSS_HEADS["full"]
UNSET_EVAL_BATCH = 8


@dataclass(frozen=True)
class Setup:
    shape: ModelShape
    strategy: StrategySpec  # for its name; its parts are `composition`
    composition: Composition
    optimizer: OptimizerSpec
    optimizer_options: Any
    model_dtype_bytes: int
    compute_bytes: int  # autocast / compute dtype of matmuls (precision)
    micro_batch_size: int  # sequences through the model per forward (examples x sequences)
    seq_len: int
    grad_accum: int
    checkpointing: bool
    attn_implementation: str  # the kernel the rows go through (`sftkit.attention`)
    padded: bool  # SDPA/eager get a 4-D attention mask (padding, or packed documents)
    num_gpus: int
    engine: Engine  # the recipe's engine object: how each term shards
    distributed: DistributedSection  # the settings it reads
    on_gpu: bool
    evaluations: tuple[EvalWorkload, ...] = ()
    loss: LossHead = FULL  # how the loss is computed (training.loss, resolved)
    liger: bool = False  # Liger's RMSNorm / SwiGLU / RoPE kernels replace transformers'
    optimizer_in_backward: bool = False  # each parameter stepped, its gradient freed, in backward
    activation_offload: bool = False  # checkpointed layer inputs kept in host memory
    attention_description: str = ""  # what the attention terms assumed, for the estimate
    tiled_mlp: bool = False  # the MLP computed in sequence tiles, recomputed in backward
    compiled: bool = False  # decoder layers compiled (regional torch.compile)
    objective: str = "sft"  # training.objective, for the estimate's setting line
    sequences_per_example: int = 1  # the objective's (a preference pair: 2)
    reference_copy: bool = False  # the objective keeps a frozen reference of what trains
    rollout: Rollout | None = None  # what a reinforcement objective's generation holds
    rollout_sequences: int = 0  # completions generated at once (the generation batch)

    @property
    def tokens(self) -> int:
        return self.micro_batch_size * self.seq_len

    @property
    def storage(self) -> BaseStorage:
        return self.composition.storage

    @property
    def adapters(self) -> tuple[Adapter, ...]:
        return self.composition.adapters

    @property
    def trains_base(self) -> bool:
        return self.composition.trains_base

    def trains(self, module: str) -> bool:
        """Does `module`'s own weight (``embed_tokens``, ``lm_head``, ...) train?"""
        return self.composition.trains_module(module)

    @property
    def precision(self) -> Precision:
        return Precision(self.model_dtype_bytes, self.compute_bytes)

    @property
    def autocast(self) -> bool:
        return self.precision.autocast


def setup_from_recipe(resolved: ResolvedRecipe, shape: ModelShape, *, on_gpu: bool) -> Setup:
    r = resolved.recipe
    t = r.training
    parts = resolved.strategy_parts
    if parts.storage.embeddings_on_host and (
        shape.tie_word_embeddings or parts.trains_module("embed_tokens")
    ):
        why = "it is tied to lm_head" if shape.tie_word_embeddings else "it trains"
        raise SftkitError(
            f"strategy.options.embeddings_on_host: the input embedding table of "
            f"{shape.name} cannot stay in host memory: {why} (only a frozen lookup table can).",
            hint="Set strategy.options.embeddings_on_host=false.",
        )
    saved = saved_adapter_config(r.model.adapter) or {}
    for adapter in parts.adapters if saved else ():
        mismatch = adapter.saved_mismatch(saved, shape)
        if mismatch:
            raise SftkitError(
                f"model.adapter {r.model.adapter!r}: {mismatch}",
                hint="PEFT loads the adapter with its own config and the estimate prices "
                "strategy.options: make them agree.",
            )
    evaluations = []
    # evaluators after training and those run while training (optimizer state resident)
    for component in (*resolved.evaluators, *resolved.during_training):
        options = component.options
        # An unset batch is the evaluator's choice at run time (the largest that fits the
        # evaluation phase); it is priced at 8, the fixed default it replaced.
        batch = int(getattr(options, "batch_size", None) or UNSET_EVAL_BATCH)
        # the most an evaluator may generate, when its default depends on the template
        new_tokens = getattr(options, "new_token_budget", getattr(options, "max_new_tokens", None))
        max_length = getattr(options, "max_length", None) or t.max_seq_length
        # the evaluator's own prompt length when it declares one, not the training rows'
        prompt_tokens = int(getattr(options, "max_prompt_tokens", None) or t.max_seq_length)
        if new_tokens is not None:
            evaluations.append(
                EvalWorkload(component.spec.name, "generate", batch, prompt_tokens, int(new_tokens))
            )
        else:
            evaluations.append(EvalWorkload(component.spec.name, "loss", batch, int(max_length)))
    objective = resolved.registry.objectives.get(t.objective)
    rollout = None
    if objective.rollout is not None:
        rollout = objective.rollout(objective.options_model.model_validate(t.objective_options))
    attention = attention_for(
        r.model.attn_implementation,
        packing=r.data.packing,
        mask_free=t.mask_free_packing,
        on_gpu=on_gpu,
    )
    return Setup(
        shape=shape,
        strategy=resolved.strategy.spec,
        composition=resolved.strategy_parts,
        optimizer=resolved.optimizer.spec,
        optimizer_options=resolved.optimizer.options,
        model_dtype_bytes=DTYPE_BYTES[r.model.dtype],
        compute_bytes=PRECISION_BYTES[t.precision],
        micro_batch_size=t.micro_batch_size * objective.sequences_per_example,
        # a generated completion follows each prompt (bounded by max_seq_length) in training
        seq_len=t.max_seq_length + (rollout.completion_tokens if rollout else 0),
        grad_accum=t.gradient_accumulation_steps,
        checkpointing=t.gradient_checkpointing,
        attn_implementation=attention.implementation,
        padded=attention.dense_mask,
        attention_description=attention.description,
        num_gpus=r.hardware.num_gpus,
        engine=engine_of(r),
        distributed=r.distributed,
        on_gpu=on_gpu,
        evaluations=tuple(evaluations),
        loss=loss_head(t.loss, resolved.registry),
        liger=t.liger_kernels,
        optimizer_in_backward=t.optimizer_in_backward,
        activation_offload=t.activation_offload,
        tiled_mlp=t.tiled_mlp,
        compiled=t.compile,
        objective=objective.name,
        sequences_per_example=objective.sequences_per_example,
        reference_copy=objective.reference_copy or bool(rollout and rollout.reference),
        rollout=rollout,
        # TRL generates gradient_accumulation_steps micro-batches of completions at once
        rollout_sequences=t.micro_batch_size * t.gradient_accumulation_steps,
    )


ENV = "SFTKIT_LOSS_HEAD"  # removed: refused with the switch to use instead
# The first TRL release whose SFTTrainer always computes the loss with add_fused_lm_head, and
# the first whose default loss_type was its older chunked NLL (1.7 to 1.14).
TRL_FUSED_HEAD = (1, 15)
TRL_CHUNKED_NLL_DEFAULT = (1, 7)


@cache
def installed_trl() -> tuple[int, ...] | None:
    """The installed TRL's release as a tuple (``(1, 16, 0)``), or None without TRL."""
    version = installed("trl")
    return None if version is None else release(version)


def trl_fuses(release: tuple[int, ...] | None) -> bool:
    """Does this TRL release's SFTTrainer compute the loss with its fused head? Assumed
    without TRL: what ``sftkit[train]`` installs today."""
    return release is None or release >= TRL_FUSED_HEAD


def loss_head(setting: str = "auto", registry: Registry | None = None) -> LossHead:
    """The head ``training.loss`` names (registered by a `register_loss_heads` hook);
    ``auto``: the installed trainer's."""
    if os.environ.get(ENV) is not None:
        raise SftkitError(
            f"the environment variable {ENV} is no longer read: the loss head is the recipe "
            "switch training.loss (auto, or a head `sftkit list loss_heads` shows).",
            hint=f"Unset {ENV} and add e.g. the override training.loss=full.",
        )
    if setting != "auto":
        if registry is None:
            from sftkit.registry import default_registry

            registry = default_registry()
        return registry.loss_heads.get(setting).memory
    return TRL_HEAD if trl_fuses(installed_trl()) else LOSS_HEADS["full"]


def sharding(setup: Setup) -> Sharding:
    return setup.engine.sharding(setup.distributed, setup.num_gpus)


def describe(setup: Setup) -> str:
    if setup.num_gpus == 1:
        return "1 GPU" if setup.on_gpu else "CPU"
    offload = ", optimizer offloaded to CPU" if sharding(setup).state_on_host else ""
    label = setup.engine.sharding_label(setup.distributed)
    if not setup.on_gpu:
        return f"{setup.num_gpus} CPU processes, {label}{offload}; figures are per process"
    return f"{setup.num_gpus} GPUs, {label}{offload}; figures are per GPU"
