"""Built-in strategies: full-sft, lora (bf16 base), lora-plus (LoRA+ rates), qlora-nf4 (4-bit
base), lora-8bit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from sftkit.components import Bnb4bit, LlmInt8, LoRA
from sftkit.errors import Problem
from sftkit.hookspecs import Register, hookimpl
from sftkit.specs import NoOptions, Options, StrategySpec

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe


class LoraOptions(Options):
    """LoRA adapter settings (PEFT's LoraConfig)."""

    rank: int = Field(default=16, ge=1, le=4096, description="Adapter rank r.")
    alpha: float = Field(default=32.0, gt=0, description="Scaling numerator: scale = alpha / rank.")
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: Literal["all-linear"] | list[str] = Field(
        default="all-linear", description="'all-linear' or module names such as [q_proj, v_proj]."
    )
    use_rslora: bool = Field(default=False, description="Scale by alpha/sqrt(rank) (rsLoRA).")
    use_dora: bool = Field(default=False, description="Weight-decomposed LoRA (DoRA).")

    @model_validator(mode="after")
    def _non_empty_targets(self) -> LoraOptions:
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError("target_modules must name at least one module, or be 'all-linear'")
        return self


class LoraPlusOptions(LoraOptions):
    """LoRA+ (Hayou, Ghosh, Yu 2024): LoRA whose B matrices train at a higher rate."""

    ratio: float = Field(
        default=16.0, gt=0, description="Learning rate of the B matrices / that of the A matrices."
    )


class KbitLoraOptions(LoraOptions):
    """LoRA over a bitsandbytes-quantized base: the dtype policy of what is not quantized."""

    upcast_non_quantized: bool = Field(
        default=True,
        description="Cast embeddings, norms and lm_head to fp32 (PEFT's "
        "prepare_model_for_kbit_training); false keeps them in model.dtype, as torchtune and "
        "Unsloth do.",
    )
    adapter_dtype: Literal["bfloat16", "float32"] = Field(
        default="bfloat16",
        description="The dtype LoRA adapters train in: bfloat16 (the compute dtype of the "
        "shipped recipes, as TRL's SFTTrainer casts them) or float32.",
    )
    embeddings_on_host: bool = Field(
        default=False,
        description="Keep the frozen input embedding table in host memory and look tokens up "
        "there (exact; one GPU, untied embeddings).",
    )


class QLoraOptions(KbitLoraOptions):
    """LoRA over a bitsandbytes 4-bit base."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = Field(default=True, description="Quantize the quantization constants too.")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"


class Lora8bitOptions(KbitLoraOptions):
    """LoRA over a bitsandbytes LLM.int8 base."""

    llm_int8_threshold: float = Field(default=6.0, ge=0, description="Outlier threshold.")


def lora_adapters(options: LoraOptions) -> tuple[LoRA]:
    """The LoRA adapter the options describe (public: strategies built on LoRA reuse it)."""
    return (LoRA.from_options(options),)


# LoraOptions' fields as PEFT's LoraConfig saves them (`sftkit.strategies.lora`'s mapping)
PEFT_KEYS = (
    ("rank", "r"),
    ("alpha", "lora_alpha"),
    ("dropout", "lora_dropout"),
    ("target_modules", "target_modules"),
    ("use_rslora", "use_rslora"),
    ("use_dora", "use_dora"),
)


def lora_saved_differences(
    options: LoraOptions, config: dict[str, Any]
) -> list[tuple[str, Any, Any]]:
    """The LoRA options a saved adapter's adapter_config.json contradicts. Module lists are
    compared as sets; ``all-linear`` against a list (PEFT saves the modules all-linear
    resolved to) needs the model, so the estimate compares them (`LoRA.saved_mismatch`); a
    saved regular expression passes."""
    out = []
    for option, key in PEFT_KEYS:
        if key not in config or config[key] is None:
            continue
        ours, saved = getattr(options, option), config[key]
        if option == "target_modules":
            if isinstance(ours, list) and isinstance(saved, list) and set(ours) != set(saved):
                out.append((option, ours, sorted(saved)))
        elif ours != saved:
            out.append((option, ours, saved))
    return out


def nf4_storage(options: QLoraOptions) -> Bnb4bit:
    """The 4-bit base QLoRA options describe (public: plugins over NF4 reuse it)."""
    return Bnb4bit(
        upcast_non_quantized=options.upcast_non_quantized,
        adapter_dtype_name=options.adapter_dtype,
        embeddings_on_host=options.embeddings_on_host,
        quant_type=options.quant_type,
        double_quant=options.double_quant,
        compute_dtype=options.compute_dtype,
    )


def int8_storage(options: Lora8bitOptions) -> LlmInt8:
    return LlmInt8(
        upcast_non_quantized=options.upcast_non_quantized,
        adapter_dtype_name=options.adapter_dtype,
        embeddings_on_host=options.embeddings_on_host,
        threshold=options.llm_int8_threshold,
    )


STRATEGIES = (
    StrategySpec(
        name="full-sft",
        summary="Train every weight of a bf16/fp32 model.",
        factory="sftkit.strategies.base:Strategy",
        options_model=NoOptions,
        tags=frozenset({"full"}),
    ),
    StrategySpec(
        name="lora",
        summary="LoRA adapters over a frozen base kept in the model dtype (bf16).",
        factory="sftkit.strategies.lora:Lora",
        options_model=LoraOptions,
        adapters=lora_adapters,
        saved_differences=lora_saved_differences,
        tags=frozenset({"lora"}),
    ),
    StrategySpec(
        name="lora-plus",
        summary="LoRA+: LoRA over a bf16 base, B matrices at `ratio` x the learning rate (16).",
        factory="sftkit.strategies.lora_plus:LoraPlus",
        options_model=LoraPlusOptions,
        adapters=lora_adapters,  # its memory is LoRA's; only the learning rates differ
        saved_differences=lora_saved_differences,
        tags=frozenset({"lora"}),
    ),
    StrategySpec(
        name="qlora-nf4",
        summary="QLoRA: LoRA over a 4-bit NF4 base with double quantization and bf16 compute.",
        factory="sftkit.strategies.lora:QLora",
        options_model=QLoraOptions,
        storage=nf4_storage,
        adapters=lora_adapters,
        saved_differences=lora_saved_differences,
        tags=frozenset({"lora", "quantized", "4bit"}),
    ),
    StrategySpec(
        name="lora-8bit",
        summary="LoRA over an 8-bit LLM.int8 base.",
        factory="sftkit.strategies.lora:Lora8bit",
        options_model=Lora8bitOptions,
        storage=int8_storage,
        adapters=lora_adapters,
        saved_differences=lora_saved_differences,
        tags=frozenset({"lora", "quantized", "8bit"}),
    ),
)


@hookimpl(trylast=True)
def register_strategies(register: Register) -> None:
    for spec in STRATEGIES:
        register(spec)


@hookimpl(trylast=True)
def validate_recipe(recipe: ResolvedRecipe | None) -> list[Problem] | None:
    """lora-plus multiplies the optimizer's learning rate: refuse an optimizer without one
    (Adafactor's relative step) before anything loads."""
    if recipe is None:
        return None
    options = recipe.strategy.options
    if not isinstance(options, LoraPlusOptions):
        return None
    if getattr(recipe.optimizer.options, "lr", None) is not None:
        return None
    return [
        Problem(
            "optimizer.options.lr",
            f"lora-plus trains the B matrices at {recipe.strategy.options.ratio:g} x the "
            f"optimizer's learning rate, but optimizer {recipe.optimizer.spec.name!r} has none.",
            "Give the optimizer a fixed lr (Adafactor: lr: 1.0e-3, relative_step: false), "
            "or use the strategy lora.",
        )
    ]
