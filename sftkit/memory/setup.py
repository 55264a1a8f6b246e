"""What the estimator reads: from a resolved recipe plain numbers and the components'
declarations (`Setup`), from the installed trainer what changes memory, and from the
recipe's engine how terms shard over GPUs.

The installed trainer, found without importing it:
TRL's SFTTrainer (1.x) patches the model with ``add_fused_lm_head``: the loss comes from a
chunked log-probability head that never builds the (tokens x vocabulary) logits. Older TRL
releases let transformers compute ``ForCausalLMLoss`` on the full logits. The estimator asks
which one the installed TRL does by reading its source (``importlib.util.find_spec`` does not
import the package), so ``estimate-memory`` stays torch-free.

``SFTKIT_LOSS_HEAD=fused|full`` overrides the detection (e.g. to price a plain transformers
Trainer).

Per-GPU memory with more than one GPU: the recipe's engine says what it replicates and
what it shards (`sftkit.engine.Engine.sharding`; the built-in engines' rules are described
in `sftkit.builtin.engines`).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sftkit.components import Adapter, BaseStorage, Composition, Precision
from sftkit.dtypes import DTYPE_BYTES, PRECISION_BYTES
from sftkit.engine import Engine, Sharding, engine_of
from sftkit.modelshape.shape import ModelShape
from sftkit.specs import OptimizerSpec, StrategySpec

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe
    from sftkit.recipe.schema import DistributedSection


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
    engine: Engine  # the recipe's engine object: how each term shards
    distributed: DistributedSection  # the settings it reads
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
    # evaluators after training and those run while training (optimizer state resident)
    for component in (*resolved.evaluators, *resolved.during_training):
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
        engine=engine_of(r),
        distributed=r.distributed,
        on_gpu=on_gpu,
        evaluations=tuple(evaluations),
        loss_head=loss_head(),
        liger=t.liger_kernels,
    )


LossHead = Literal["fused", "full"]
ENV = "SFTKIT_LOSS_HEAD"

# trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE and trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE
FUSED_VOCAB_CHUNK = 32768
FUSED_TOKEN_CHUNK = 4096


@cache
def _installed_trl_fuses() -> bool | None:
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        source = Path(location) / "trainer" / "sft_trainer.py"
        if source.is_file():
            return "add_fused_lm_head(" in source.read_text(encoding="utf-8", errors="ignore")
    return None


def loss_head() -> LossHead:
    """``fused`` when training goes through TRL's chunked log-prob head (also assumed when
    TRL is not installed: what ``pip install 'sftkit[train]'`` gets today), else ``full``."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("fused", "full"):
        return forced  # type: ignore[return-value]
    return "full" if _installed_trl_fuses() is False else "fused"


def sharding(setup: Setup) -> Sharding:
    return setup.engine.sharding(setup.distributed, setup.num_gpus)


def describe(setup: Setup) -> str:
    if setup.num_gpus == 1:
        return "1 GPU"
    offload = ", optimizer offloaded to CPU" if sharding(setup).state_on_host else ""
    label = setup.engine.sharding_label(setup.distributed)
    return f"{setup.num_gpus} GPUs, {label}{offload}; figures are per GPU"
