"""The recipe schema: strict pydantic models, unknown keys are errors.

A recipe *names* components (``strategy: {name: qlora-nf4, options: {...}}``); the options of
each component are validated by the options model its plugin registered, in
:mod:`sftkit.recipe.load`. Nothing here imports code by dotted path.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flash_attention_3"] = "sdpa"
    trust_remote_code: bool = False
    random_init: bool = Field(
        default=False,
        description="Build the architecture from its config with random weights (tests, benchmarks).",
    )


class DataSection(Strict):
    format: ComponentRef = Field(default_factory=lambda: ComponentRef(name="gsm8k"))
    template: ComponentRef = Field(default_factory=lambda: ComponentRef(name="tutor"))
    completion_only_loss: bool = True
    packing: bool = False
    prepared_dir: str | None = Field(
        default=None, description="Where prepared splits live; default: <output_dir>/data."
    )


Tracker = Literal["tensorboard", "wandb", "mlflow", "none"]


class TrainingSection(Strict):
    micro_batch_size: int = Field(default=1, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="Overrides epochs when set.")
    max_seq_length: int = Field(default=1024, ge=8)
    gradient_checkpointing: bool = True
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    seed: int = 42
    logging_steps: int = Field(default=10, ge=1)
    save_steps: int | None = Field(default=None, ge=1, description="None: save at the end only.")
    save_total_limit: int | None = Field(default=2, ge=1)
    report_to: list[Tracker] = Field(default_factory=lambda: list[Tracker](["tensorboard"]))
    liger_kernels: bool = Field(
        default=False,
        description="Use Liger's fused RMSNorm/SwiGLU/RoPE and fused linear cross-entropy.",
    )


class HardwareSection(Strict):
    gpu: str = Field(
        default="A100-40GB",
        description="A GPU name (A100-40GB, H100-80GB, ...), a size (40GB, 40GiB) or 'auto'.",
    )
    num_gpus: int = Field(default=1, ge=1)


class DistributedSection(Strict):
    engine: Literal["none", "ddp", "fsdp", "deepspeed"] = "none"
    zero_stage: Literal[2, 3] | None = Field(
        default=None, description="DeepSpeed ZeRO stage (deepspeed engine only)."
    )
    cpu_offload: bool = False

    @model_validator(mode="after")
    def _stage_needs_deepspeed(self) -> DistributedSection:
        if self.zero_stage is not None and self.engine != "deepspeed":
            raise ValueError("zero_stage is only meaningful with engine: deepspeed")
        return self


class EvaluationSection(Strict):
    evaluators: list[ComponentRef] = Field(default_factory=list)
    before_training: bool = False
    after_training: bool = False


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
