"""The recipe schema: strict pydantic models, unknown keys are errors.

A recipe *names* components (``strategy: {name: qlora-nf4, options: {...}}``); the options of
each component are validated by the options model its plugin registered, in
:mod:`sftkit.recipe.load`. Nothing here imports code by dotted path.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from sftkit.dtypes import DtypeName, Precision
from sftkit.specs import NumbersNotBools

# Seeds go to Python, NumPy and torch; NumPy takes 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1
# A billion optimizer steps is years of the fastest run; more is a typo (1e23), and the
# trainer's step arithmetic would overflow its int64 counters.
MAX_STEPS = 10**9
MiB, GiB = 2**20, 2**30


class Strict(NumbersNotBools):
    """Unknown keys are errors; numbers are finite and never a boolean (`max_steps: true`
    is not 1)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ComponentRef(Strict):
    """A registered component by name, with the options its plugin's options model accepts."""

    name: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)


class ModelSection(Strict):
    name_or_path: str = Field(
        min_length=1,
        description="Hub id (org/name), a local model directory, or a path to a config.json.",
    )
    revision: str | None = None
    tokenizer: str | None = Field(
        default=None, description="Tokenizer hub id or directory; defaults to name_or_path."
    )
    dtype: DtypeName = "bfloat16"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flash_attention_3"] = "sdpa"
    trust_remote_code: bool = False
    random_init: bool = Field(
        default=False,
        description="Build the architecture from its config with random weights (tests, benchmarks).",
    )
    adapter: str | None = Field(
        default=None,
        min_length=1,
        description="A PEFT adapter directory to start from (e.g. a LoRA/QLoRA run's final/): "
        "its weights train instead of fresh adapters. Needs an adapter strategy; checked to "
        "exist when a run loads the model, not by validate or estimate-memory.",
    )


class MixtureSource(Strict):
    """One dataset of a mixture: a format with its options, and its share."""

    format: ComponentRef
    weight: float | None = Field(
        default=None, gt=0, description="Relative share of the mixture's train examples."
    )
    samples: int | None = Field(
        default=None, ge=1, description="Train examples taken from it (repeated if it has fewer)."
    )

    @model_validator(mode="after")
    def _one_share(self) -> MixtureSource:
        if (self.weight is None) == (self.samples is None):
            raise ValueError("give a mixture dataset either a weight or a number of samples")
        return self


class MixtureSection(Strict):
    """Several datasets trained together (`sftkit.data.mixture`): each one's train split
    sampled by weight or count (seeded), dev split off the mixed train, tests concatenated."""

    datasets: list[MixtureSource] = Field(min_length=1)
    seed: int = Field(default=0, description="Seed of the sampling.")
    total: int | None = Field(
        default=None,
        ge=1,
        description="With weights: train examples in all (repeating rows where needed); "
        "default: as many as the weights allow without repeating any.",
    )
    dev_size: int = Field(default=200, ge=0, description="Rows of the mixed train held out as dev.")
    split_seed: int = Field(default=1234, description="Seed of the train/dev split.")
    skip_bad_rows: bool = Field(
        default=False, description="Skip malformed rows (counted) instead of failing."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> MixtureSection:
        by_weight = {d.weight is not None for d in self.datasets}
        if len(by_weight) > 1:
            raise ValueError("give every mixture dataset a weight, or every one a sample count")
        if self.total is not None and not by_weight.pop():
            raise ValueError("total applies to weighted mixtures; sample counts are totals")
        return self


class DataSection(Strict):
    format: ComponentRef = Field(default_factory=lambda: ComponentRef(name="gsm8k"))
    mixture: MixtureSection | None = Field(
        default=None, description="Several formats mixed, instead of data.format."
    )
    template: ComponentRef = Field(default_factory=lambda: ComponentRef(name="tutor"))
    completion_only_loss: bool = True
    packing: bool = False
    prepared_dir: str | None = Field(
        default=None, description="Where prepared splits live; default: <output_dir>/data."
    )
    reasoning: Literal["train", "mask", "drop"] = Field(
        default="train",
        description="Reasoning traces (<think>...</think>, a message's reasoning_content): "
        "trained with the answer, masked (context, no loss), or dropped from the text.",
    )
    mask_empty_think: bool = Field(
        default=True, description="Mask empty think blocks (<think></think>) whatever the mode."
    )
    num_proc: int | None = Field(
        default=None,
        ge=1,
        description="Worker processes that tokenize the splits (and TRL's dataset passes); "
        "default: the CPUs sftkit may use.",
    )
    max_row_bytes: int | None = Field(
        default=4 * MiB,
        ge=1,
        description="Longest source row (a JSONL line, a Parquet or hub row) in bytes; null: "
        "no limit.",
    )
    max_file_bytes: int | None = Field(
        default=4 * GiB,
        ge=1,
        description="Largest source file in bytes (sources are read into memory); null: no limit.",
    )

    @model_validator(mode="after")
    def _format_or_mixture(self) -> DataSection:
        if self.mixture is not None and "format" in self.model_fields_set:
            raise ValueError("set data.format or data.mixture, not both")
        return self


Tracker = Literal["tensorboard", "wandb", "mlflow", "trackio", "none"]


class EarlyStoppingSection(Strict):
    """Stop when the dev metric has not improved for `patience` evaluations
    (training.eval_steps apart); the best checkpoint is kept and is the final model."""

    patience: int = Field(ge=1, description="Evaluations without improvement before stopping.")
    metric: str = Field(
        default="loss",
        min_length=1,
        description="'loss' (the trainer's eval loss on dev), or '<evaluator>/<metric>' of an "
        "evaluator in evaluation.during_training (e.g. gsm8k/accuracy).",
    )
    mode: Literal["min", "max"] | None = Field(
        default=None, description="Which way is better; default: min for loss, max otherwise."
    )
    threshold: float = Field(default=0.0, ge=0, description="Smallest change that counts.")

    @property
    def greater_is_better(self) -> bool:
        return self.mode == "max" if self.mode else self.metric != "loss"


class TrainingSection(Strict):
    micro_batch_size: int = Field(default=1, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(
        default=None, ge=1, le=MAX_STEPS, description="Overrides epochs when set."
    )
    max_seq_length: int = Field(default=1024, ge=8)
    gradient_checkpointing: bool = True
    precision: Precision = "bf16"
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    seed: int = Field(
        default=42, ge=0, le=MAX_SEED, description="Seeds Python, NumPy and torch (NumPy's range)."
    )
    logging_steps: int = Field(default=10, ge=1)
    save_steps: int | None = Field(default=None, ge=1, description="None: save at the end only.")
    save_total_limit: int | None = Field(default=2, ge=1)
    report_to: list[Tracker] = Field(default_factory=lambda: list[Tracker](["tensorboard"]))
    liger_kernels: bool = Field(
        default=False,
        description="Use Liger's fused RMSNorm/SwiGLU/RoPE kernels (the loss head is `loss`).",
    )
    loss: str = Field(
        default="auto",
        description="The loss head: auto (the installed trainer's: TRL's chunked log-prob head "
        "from TRL 1.15), or a registered one (`sftkit list loss_heads`): full (fp32 logits), "
        "chunked (sftkit's chunked cross-entropy, never the tokens x vocabulary logits), "
        "liger (Liger's fused linear cross-entropy, CUDA), or a plugin's.",
    )
    objective: str = Field(
        default="sft",
        description="How the model is trained (`sftkit list objectives`): sft, dpo (preference "
        "pairs, data.format preference), or a plugin's.",
    )
    objective_options: dict[str, Any] = Field(
        default_factory=dict,
        description="The objective's options (dpo: beta, loss_type); see docs/objectives.md.",
    )
    optimizer_in_backward: bool = Field(
        default=False,
        description="Step each parameter as soon as its gradient exists and free it (at most one "
        "gradient lives); needs gradient_accumulation_steps 1 and max_grad_norm null.",
    )
    mask_free_packing: bool = Field(
        default=False,
        description="Packed rows (data.packing) keep their documents apart by position ids "
        "instead of an s x s mask: flex attention on CUDA, causal SDPA per document on the "
        "CPU (FlashAttention is always mask-free); with sdpa.",
    )
    tiled_mlp: bool = Field(
        default=False,
        description="Compute each MLP in sequence tiles, recomputed tile by tile in backward "
        "(Arctic Long Sequence Training's TiledMLP, through liger-kernel): for long rows.",
    )
    compile: bool = Field(
        default=False,
        description="Compile each decoder layer with torch.compile (regional: one layer's "
        "graph, reused by all), a one-time cost in the first steps.",
    )
    activation_offload: bool = Field(
        default=False,
        description="Keep the checkpointed layer inputs in (pinned) host memory between forward "
        "and backward; needs gradient_checkpointing.",
    )

    eval_steps: int | None = Field(
        default=None,
        ge=1,
        description="Every N optimizer steps: eval loss on the dev split (metrics.jsonl), and "
        "evaluation.during_training's evaluators; null: no evaluation while training.",
    )
    early_stopping: EarlyStoppingSection | None = Field(
        default=None, description="Stop when the dev metric stops improving (needs eval_steps)."
    )
    neftune_noise_alpha: float | None = Field(
        default=None,
        gt=0,
        description="NEFTune: uniform noise of this scale on the input embeddings while "
        "training (TRL/transformers' neftune_noise_alpha; 5 in the paper).",
    )
    trainer_args: dict[str, Any] = Field(
        default_factory=dict,
        description="TRL SFTConfig options passed through unchanged (dataloader_num_workers, "
        "loss_type, tf32, ...); names sftkit sets from the recipe are refused "
        "(sftkit.recipe.trainer_args).",
    )

    @model_validator(mode="after")
    def _techniques_combine(self) -> TrainingSection:
        problems = []
        if self.optimizer_in_backward and self.gradient_accumulation_steps > 1:
            problems.append(
                "optimizer_in_backward steps every parameter in each backward pass, so it "
                "cannot accumulate gradients: set gradient_accumulation_steps to 1"
            )
        if self.optimizer_in_backward and self.max_grad_norm is not None:
            problems.append(
                "optimizer_in_backward frees each gradient before the next exists, so the "
                "global gradient norm cannot be clipped: set max_grad_norm to null"
            )
        if self.activation_offload and not self.gradient_checkpointing:
            problems.append(
                "activation_offload moves the checkpointed layer inputs to host memory: "
                "set gradient_checkpointing to true"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class HardwareSection(Strict):
    gpu: str = Field(
        default="A100-40GB",
        description="A GPU name (A100-40GB, H100-80GB, ...), a size (40GB, 40GiB) or 'auto'.",
    )
    num_gpus: int = Field(default=1, ge=1)


class FsdpSection(Strict):
    """FSDP settings (engine: fsdp). Defaults are FSDP2 full sharding of every decoder layer."""

    version: Literal[1, 2] = Field(
        default=2, description="2: per-parameter sharding (fully_shard); 1: the deprecated wrapper."
    )
    reshard_after_forward: bool = Field(
        default=True,
        description="Free each layer's gathered weights after its forward (full shard); false keeps "
        "them until backward (ZeRO-2-like): faster, every layer's weights resident at once.",
    )
    activation_checkpointing: bool | None = Field(
        default=None,
        description="Checkpoint each decoder layer through FSDP; null: follow "
        "training.gradient_checkpointing (FSDP's own replaces transformers' checkpointing).",
    )
    state_dict_type: Literal["sharded", "full"] = Field(
        default="sharded",
        description="How checkpoints are written: one shard per rank (fast, resumable at the same "
        "world size) or gathered on rank 0. The final model is always gathered.",
    )
    wrap_layers: list[str] | None = Field(
        default=None,
        description="Module class names sharded as units; null: the model's decoder layer class.",
    )

    @model_validator(mode="after")
    def _non_empty_wrap(self) -> FsdpSection:
        if self.wrap_layers is not None and not self.wrap_layers:
            raise ValueError("wrap_layers must name at least one module class, or be null")
        return self


class DeepSpeedSection(Strict):
    """DeepSpeed settings (engine: deepspeed); the ZeRO stage is distributed.zero_stage."""

    offload_params: bool | None = Field(
        default=None,
        description="Stage 3 with cpu_offload: also offload the parameters (null: yes; false: "
        "the optimizer state only).",
    )
    gather_weights_on_save: bool = Field(
        default=True,
        description="ZeRO-3: gather 16-bit weights on rank 0 when saving so the final model is "
        "a normal checkpoint.",
    )


class DistributedSection(Strict):
    """How a run is spread over processes. `sftkit launch --nproc N` sets the world size.

    `engine` names a registered engine (`sftkit list engines`); which of the settings below
    it reads, and what it refuses, is the engine object's to say (`sftkit.engine.Engine`),
    checked when the recipe is resolved."""

    engine: str = Field(
        default="none",
        min_length=1,
        description="A registered engine: none, ddp, fsdp, deepspeed, or a plugin's.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="The engine's own options, validated by the options model its plugin "
        "registered (the built-in engines take none: their settings are the keys below).",
    )
    backend: Literal["auto", "nccl", "gloo"] = Field(
        default="auto", description="Collective backend; auto: nccl with CUDA, gloo on CPU."
    )
    zero_stage: Literal[2, 3] | None = Field(
        default=None, description="DeepSpeed ZeRO stage (deepspeed engine only; default 2)."
    )
    cpu_offload: bool = Field(
        default=False,
        description="fsdp: parameters, gradients and optimizer state live in host RAM and the "
        "optimizer steps there; deepspeed: the optimizer state (and, at stage 3, the parameters).",
    )
    fsdp: FsdpSection = Field(default_factory=FsdpSection)
    deepspeed: DeepSpeedSection = Field(default_factory=DeepSpeedSection)

    # The Engine object `engine` names, set by sftkit.recipe.load when the recipe is resolved
    # against a registry, so code holding only the Recipe can ask it (`sftkit.engine.engine_of`).
    _engine: Any = PrivateAttr(default=None)

    @property
    def resolved_engine(self) -> Any:
        """The engine object, or None for a section that was never resolved."""
        return self._engine

    @model_serializer(mode="wrap")
    def _without_empty_options(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A built-in engine's section dumps (recipe.yaml) as before engines took options, so
        # runs started earlier still resume with the same recipe.
        data: dict[str, Any] = handler(self)
        if not data.get("options"):
            data.pop("options", None)
        return data


class EvaluationSection(Strict):
    evaluators: list[ComponentRef] = Field(default_factory=list)
    before_training: bool = False
    after_training: bool = False
    during_training: list[ComponentRef] = Field(
        default_factory=list,
        description="Evaluators run every training.eval_steps (their split defaults to dev; "
        "set limit to keep it quick), scores in metrics.jsonl as eval/<evaluator>/<metric>.",
    )


class Recipe(Strict):
    """A whole recipe. `description` is free text shown by `sftkit recipes`."""

    description: str = ""
    model: ModelSection
    strategy: ComponentRef
    optimizer: ComponentRef
    data: DataSection = Field(default_factory=DataSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    hardware: HardwareSection = Field(default_factory=HardwareSection)
    distributed: DistributedSection = Field(default_factory=DistributedSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    output_dir: str = "runs/run"
