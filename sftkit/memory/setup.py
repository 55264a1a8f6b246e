"""What the estimator reads from a resolved recipe: plain numbers and specs, nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sftkit.components import Adapter, BaseStorage, Composition, Precision
from sftkit.dtypes import DTYPE_BYTES, PRECISION_BYTES
from sftkit.memory.trainer import loss_head
from sftkit.modelshape.shape import ModelShape
from sftkit.specs import OptimizerSpec, StrategySpec

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe


@dataclass(frozen=True)
class EvalWorkload:
    """One evaluator's memory-relevant settings."""

    name: str
    kind: str  # "generate" or "loss"
    batch_size: int
    prompt_tokens: int
    new_tokens: int = 0


@dataclass(frozen=True)
class Setup:
    shape: ModelShape
    strategy: StrategySpec  # for its name; its parts are `composition`
    composition: Composition
    optimizer: OptimizerSpec
    optimizer_options: Any
    model_dtype_bytes: int
    compute_bytes: int  # autocast / compute dtype of matmuls (precision)
    micro_batch_size: int
    seq_len: int
    grad_accum: int
    checkpointing: bool
    attn_implementation: str
    padded: bool  # SDPA/eager get a 4-D attention mask (padding, or packed documents)
    num_gpus: int
    engine: str
    zero_stage: int | None
    cpu_offload: bool
    on_gpu: bool
    evaluations: tuple[EvalWorkload, ...] = ()
    loss_head: str = "full"  # "fused": TRL's chunked log-prob head; "full": full logits
    liger: bool = False  # Liger's RMSNorm / SwiGLU / RoPE kernels replace transformers'

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
    evaluations = []
    for component in resolved.evaluators:
        options = component.options
        batch = int(getattr(options, "batch_size", t.micro_batch_size))
        new_tokens = getattr(options, "max_new_tokens", None)
        max_length = getattr(options, "max_length", None) or t.max_seq_length
        if new_tokens is not None:
            evaluations.append(
                EvalWorkload(
                    component.spec.name, "generate", batch, t.max_seq_length, int(new_tokens)
                )
            )
        else:
            evaluations.append(EvalWorkload(component.spec.name, "loss", batch, int(max_length)))
    return Setup(
        shape=shape,
        strategy=resolved.strategy.spec,
        composition=resolved.strategy_parts,
        optimizer=resolved.optimizer.spec,
        optimizer_options=resolved.optimizer.options,
        model_dtype_bytes=DTYPE_BYTES[r.model.dtype],
        compute_bytes=PRECISION_BYTES[t.precision],
        micro_batch_size=t.micro_batch_size,
        seq_len=t.max_seq_length,
        grad_accum=t.gradient_accumulation_steps,
        checkpointing=t.gradient_checkpointing,
        attn_implementation=r.model.attn_implementation,
        # Padded batches and packed (padding-free) rows both give SDPA/eager a 4-D mask;
        # flash attention takes unpadded sequences instead.
        padded=not r.model.attn_implementation.startswith("flash"),
        num_gpus=r.hardware.num_gpus,
        engine=r.distributed.engine,
        zero_stage=r.distributed.zero_stage,
        cpu_offload=r.distributed.cpu_offload,
        on_gpu=on_gpu,
        evaluations=tuple(evaluations),
        loss_head=loss_head(),
        liger=t.liger_kernels,
    )
