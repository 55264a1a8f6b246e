"""Component specs: plain, frozen data a plugin registers.

A spec holds what sftkit must know *before* building anything (name, options model, how it
prices memory, what it is compatible with) plus a lazy ``"package.module:attr"`` factory. The
factory is imported only when a run builds the component, so registration never imports torch.
"""

from __future__ import annotations

import importlib
import math
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Protocol, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from sftkit.components import Adapter, BaseStorage, Composition, Dense, FullTraining, LossHead
from sftkit.engine import Engine
from sftkit.errors import PluginError, SpecError


def admits_bool(annotation: Any) -> bool:
    """Does a field of this type take true/false? (int and float fields must not: pydantic
    would read `true` as 1.)"""
    if annotation is bool or annotation is Any:
        return True
    origin = get_origin(annotation)
    if origin is Literal:
        return any(isinstance(value, bool) for value in get_args(annotation))
    if origin in (Union, types.UnionType):
        return any(admits_bool(arg) for arg in get_args(annotation))
    if origin is Annotated:
        return admits_bool(get_args(annotation)[0])
    return annotation not in (int, float, type(None))


class NumbersNotBools(BaseModel):
    """A model whose int and float fields refuse `true`/`false` (pydantic would read `true`
    as 1): the base of component options and of the recipe schema's sections."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            field_info = cls.model_fields.get(info.field_name)
            if field_info is not None and not admits_bool(field_info.annotation):
                raise PydanticCustomError(
                    "bool_not_number", "Input should be a number, not true or false"
                )
        return value


class Options(NumbersNotBools):
    """Base class for a component's options model: strict, unknown keys are errors, numbers
    are finite and never a boolean."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class NoOptions(Options):
    """For components that take no options."""


def load_factory(ref: str) -> Any:
    """Import ``"package.module:attr"`` and return the attribute."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise PluginError(f"factory reference {ref!r} is not of the form 'package.module:attr'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(
            f"cannot import {module_name!r} for factory {ref!r}: {exc}",
            hint="Is the plugin's package (and the training stack, `pip install 'sftkit[train]'`) installed?",
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise PluginError(
                f"{module_name!r} has no attribute {attr!r} (factory {ref!r})."
            ) from exc
    return obj


# --------------------------------------------------------------------------- optimizer state


class OptimizerState(Protocol):
    """How much persistent state an optimizer keeps for one trainable tensor.

    Optional methods the estimator uses when a state defines them: ``paged_bytes(numel,
    param_bytes)`` (the part a paged optimizer puts in unified memory; default: all of it),
    ``shared_bytes(numels)`` (state shared by all tensors, e.g. quantization maps; default 0),
    ``factored_bytes(shape)`` (state that depends on the shape, not only the element count),
    and the attribute ``temporaries_per_group`` (True when ``step()`` builds its temporaries
    for a whole group of tensors at once, as torch's foreach kernels do)."""

    def state_bytes(self, numel: int, param_bytes: int) -> int: ...

    def step_temporary_bytes(self, numel: int, param_bytes: int) -> int: ...


@dataclass(frozen=True)
class DenseMomentState:
    """Adam-style: `moments` full-size tensors per parameter (torch AdamW keeps exp_avg and
    exp_avg_sq in the parameter's dtype). `foreach` implementations materialise temporaries the
    size of the largest group of tensors during the step; fused ones do not."""

    moments: int = 2
    dtype_bytes: int | None = None  # None: same dtype as the parameter
    temporaries: int = 0  # full-size temporaries per parameter during step() (foreach)
    step_bytes: int = 0  # per-tensor step counter tensor (torch Adam/AdamW: fp32 scalar, 4)

    # torch's multi-tensor (foreach) kernels build temporaries for a whole group at once
    temporaries_per_group: ClassVar[bool] = True

    def state_bytes(self, numel: int, param_bytes: int) -> int:
        return self.moments * numel * (self.dtype_bytes or param_bytes) + self.step_bytes

    def step_temporary_bytes(self, numel: int, param_bytes: int) -> int:
        return self.temporaries * numel * (self.dtype_bytes or param_bytes)

    def paged_bytes(self, numel: int, param_bytes: int) -> int:
        """The moment buffers (the step counter stays an ordinary tensor)."""
        return self.moments * numel * (self.dtype_bytes or param_bytes)


@dataclass(frozen=True)
class Blockwise8bitState:
    """bitsandbytes 8-bit optimizers: each moment is uint8 with one fp32 absmax per block of
    256 values. Tensors with fewer than `min_8bit_size` elements keep fp32 moments
    (bitsandbytes' `min_8bit_size`, default 4096)."""

    moments: int = 2
    block_size: int = 256
    min_8bit_size: int = 4096

    # the two 256-entry fp32 quantization maps (qmap1 "dynamic", qmap2 "udynamic") that all
    # tensors kept in 8 bits share
    QMAP_BYTES: ClassVar[int] = 2 * 256 * 4

    def state_bytes(self, numel: int, param_bytes: int) -> int:
        if numel < self.min_8bit_size:
            return self.moments * numel * 4
        blocks = math.ceil(numel / self.block_size)
        return self.moments * (numel + 4 * blocks)

    def step_temporary_bytes(self, numel: int, param_bytes: int) -> int:
        return 0

    def paged_bytes(self, numel: int, param_bytes: int) -> int:
        """The moment buffers; the fp32 block maxima (absmax1/2) stay ordinary tensors."""
        return self.moments * numel * (1 if numel >= self.min_8bit_size else 4)

    def shared_bytes(self, numels: list[int]) -> int:
        return self.QMAP_BYTES if any(n >= self.min_8bit_size for n in numels) else 0


@dataclass(frozen=True)
class FactoredState:
    """Adafactor (transformers' implementation, beta1=None): a 2-D tensor keeps a row and a
    column second-moment vector in fp32; other tensors keep a full fp32 second moment. Each
    tensor also keeps its RMS as a 0-d fp32 tensor. The spec prices a tensor by element count
    only, so a matrix is priced as if square (the estimator passes exact shapes through
    `factored_bytes` where it knows them)."""

    RMS_BYTES: ClassVar[int] = 4

    def state_bytes(self, numel: int, param_bytes: int) -> int:
        side = math.isqrt(numel)
        moments = 4 * 2 * side if side * side == numel and numel > 1 else 4 * numel
        return moments + self.RMS_BYTES

    def factored_bytes(self, shape: tuple[int, ...]) -> int:
        if len(shape) >= 2:
            rows = math.prod(shape[:-1])
            return 4 * (rows + shape[-1]) + self.RMS_BYTES
        return 4 * math.prod(shape) + self.RMS_BYTES

    def step_temporary_bytes(self, numel: int, param_bytes: int) -> int:
        # Adafactor.step() works one tensor at a time: the update and its factored
        # approximation are fp32 (2 x 4 bytes); a bf16/fp16 parameter adds fp32 copies of its
        # gradient and of itself (2 x 4 more).
        return 4 * numel * (2 if param_bytes >= 4 else 4)


# --------------------------------------------------------------------------- specs


def dense_storage(options: Any) -> BaseStorage:
    """The default storage: the base stays dense in ``model.dtype``."""
    return Dense()


def full_training(options: Any) -> tuple[Adapter, ...]:
    """The default adapters: every base weight trains."""
    return (FullTraining(),)


@dataclass(frozen=True)
class _Spec:
    """What every spec has: a name checked as it is made, and a one-line summary."""

    kind: ClassVar[str]

    name: str
    summary: str

    def __post_init__(self) -> None:
        _check_name(self)


@dataclass(frozen=True)
class _FactorySpec(_Spec):
    """A spec built by a lazy ``"package.module:attr"`` factory, with an options model."""

    factory: str
    options_model: type[Options] = NoOptions


@dataclass(frozen=True)
class StrategySpec(_FactorySpec):
    """A fine-tuning strategy: how the frozen base is stored and what trains.

    `storage` and `adapters` are pure functions of the validated options that describe the
    strategy's parts (`sftkit.components`); the memory estimator prices any strategy from
    them alone and never calls the factory.
    """

    kind: ClassVar[str] = "strategy"

    # factory: "pkg.module:build" -> build(options) -> a runtime strategy object
    storage: Callable[[Any], BaseStorage] = dense_storage
    adapters: Callable[[Any], Sequence[Adapter]] = full_training
    tags: frozenset[str] = field(default_factory=frozenset)
    # For a strategy that starts from a saved PEFT adapter (``model.adapter``), which PEFT
    # loads with the adapter's own adapter_config.json: the options that config contradicts,
    # ``saved_differences(options, config) -> [(option, recipe's value, saved value)]``.
    saved_differences: Callable[[Any, dict[str, Any]], list[tuple[str, Any, Any]]] | None = None

    def compose(self, options: Any) -> Composition:
        """The strategy's parts for `options` (an instance of `options_model`). Raises
        `SpecError` when they contradict each other (e.g. training a quantized base)."""
        try:
            return Composition(self.storage(options), tuple(self.adapters(options)))
        except SpecError as exc:
            raise SpecError(f"strategy {self.name!r}: {exc.message}", hint=exc.hint) from None


@dataclass(frozen=True)
class OptimizerSpec(_FactorySpec):
    """An optimizer and what the estimator needs to price it."""

    kind: ClassVar[str] = "optimizer"

    # factory: "pkg.module:build" -> build(params, options) -> torch.optim.Optimizer
    # Pure function of the validated options -> how much state the optimizer keeps.
    state_for: Callable[[Any], OptimizerState] = lambda options: DenseMomentState()
    paged: bool = False  # state lives in CUDA unified memory and can spill to host RAM
    implementation: str = "torch"
    # Strategy tags this optimizer cannot train, with the reason shown to the user.
    incompatible_tags: dict[str, str] = field(default_factory=dict)

    def incompatibility(self, strategy: StrategySpec) -> str | None:
        for tag in sorted(strategy.tags & set(self.incompatible_tags)):
            return self.incompatible_tags[tag]
        return None


@dataclass(frozen=True)
class DatasetFormatSpec(_FactorySpec):
    """A dataset format: how rows are read, validated and turned into prompt/completion."""

    kind: ClassVar[str] = "dataset format"
    # What sftkit's preparation reads from every format's options (`sftkit.SplitOptions`).
    SPLIT_FIELDS: ClassVar[tuple[str, ...]] = ("dev_size", "split_seed", "skip_bad_rows")

    def __post_init__(self) -> None:
        super().__post_init__()
        missing = [f for f in self.SPLIT_FIELDS if f not in self.options_model.model_fields]
        if missing:
            raise SpecError(
                f"dataset format {self.name!r}: its options model "
                f"{self.options_model.__name__} lacks {', '.join(missing)}; subclass "
                "sftkit.SplitOptions, which holds the options every format's preparation uses."
            )


@dataclass(frozen=True)
class PromptTemplateSpec(_FactorySpec):
    """A prompt template: how a prompt/completion pair becomes model text."""

    kind: ClassVar[str] = "prompt template"


@dataclass(frozen=True)
class EvaluatorSpec(_FactorySpec):
    """An evaluator: scores a model on a held-out split."""

    kind: ClassVar[str] = "evaluator"


@dataclass(frozen=True)
class EngineSpec(_Spec):
    """A distributed engine: the `Engine` object that answers for it (sharding, checks,
    launch configs, trainer arguments), or a ``"package.module:attr"`` reference to one,
    imported the first time a recipe names the engine."""

    kind: ClassVar[str] = "engine"

    engine: Engine | str
    # Validates the recipe's `distributed.options` for this engine.
    options_model: type[Options] = NoOptions

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.engine, str) and ":" not in self.engine:
            raise SpecError(
                f"engine {self.name!r}: {self.engine!r} must be an Engine or 'package.module:attr'."
            )
        if not isinstance(self.engine, (str, Engine)):
            raise SpecError(
                f"engine {self.name!r}: {type(self.engine).__name__} is not a sftkit.engine.Engine."
            )

    def load(self) -> Engine:
        """The engine object (imported now for a reference)."""
        if isinstance(self.engine, Engine):
            return self.engine
        obj = load_factory(self.engine)
        if not isinstance(obj, Engine):
            raise PluginError(
                f"engine {self.name!r}: {self.engine!r} is {type(obj).__name__}, not a "
                "sftkit.engine.Engine instance."
            )
        return obj


@dataclass(frozen=True)
class LossHeadSpec(_Spec):
    """A loss head, the value of ``training.loss``: how the loss is computed from the final
    hidden states. `memory` declares what it keeps (a `sftkit.components.LossHead`, which
    the estimator prices); `factory` names the function that computes it at run time,
    ``head(hidden, lm_head, labels) -> (log_probs, entropy, is_top1, label_mask)``, each
    (batch, sequence) and zero where the next-token label is -100."""

    kind: ClassVar[str] = "loss head"

    memory: LossHead
    factory: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.memory, LossHead):
            raise SpecError(
                f"loss head {self.name!r}: memory is a {type(self.memory).__name__}, not a "
                "sftkit.components.LossHead."
            )


@dataclass(frozen=True)
class Rollout:
    """What a reinforcement objective's generation phase holds, for the estimator: each of
    the generation batch's sequences (``micro_batch_size x gradient_accumulation_steps``
    completions, TRL's default) grows to `completion_tokens` after its prompt (bounded by
    ``training.max_seq_length``), so every training row is priced at both together;
    `group`: completions per prompt, so the generation batch is a multiple of it (what
    ``--fit`` searches the micro-batch by); `old_log_probs`: the old policy's per-token
    log-probabilities are kept (several
    optimization passes per generation); `reference`: a frozen reference is kept and its
    per-token log-probabilities computed (a KL term).

    An objective that generates with an engine of its own beside the training model (vLLM
    colocated on the same GPU) names it in `engine` and declares `engine_share`, the
    fraction of each GPU's memory the engine reserves for its weights, activations and KV
    cache; the generation's KV cache, prefill and logits are then in that share, not priced
    apart. `engine_sleeps`: the engine gives its memory back between generations (vLLM's
    sleep mode), so the share is held only while it generates."""

    completion_tokens: int
    old_log_probs: bool = False
    reference: bool = False
    group: int = 1  # completions per prompt: the generation batch holds whole groups
    engine: str = ""  # a generation engine beside the model ("": the model's own generate)
    engine_share: float = 0.0  # of each GPU's memory, reserved by `engine`
    engine_sleeps: bool = False
    engine_option: str = ""  # the objective option that sets `engine_share`, for advice


@dataclass(frozen=True)
class OptionSearch:
    """An objective option ``estimate-memory --fit`` searches: the largest multiple of
    `step` in [`lowest`, `highest`] that fits, the rest of the recipe unchanged.

    `per_prompt`: the option counts sequences per prompt (a group) in the batch of
    ``micro_batch_size x gradient_accumulation_steps x GPUs`` sequences generated at once.
    It is searched at the recipe's prompts per batch, so the batch grows with it through
    ``gradient_accumulation_steps`` (the micro-batch a training step runs is unchanged),
    among the values that keep that a whole number of steps. The objective's validation
    must hold the recipe's batch to whole groups (grpo's does)."""

    option: str
    lowest: int
    highest: int
    step: int = 1
    per_prompt: bool = False


@dataclass(frozen=True)
class ObjectiveSpec(_Spec):
    """How a model is trained, the value of ``training.objective`` (``sft`` is built in;
    preference or RL objectives are plugins). `trainer` names the trainer class, which takes
    `SftkitTrainer`'s arguments (subclass it); `config` its TrainingArguments class, given
    the arguments sftkit builds for `SFTConfig`; `factory` the function building its data,
    ``dataset(split, template, tokenizer, recipe) -> datasets.Dataset``, where `split` is a
    `sftkit.data.tokenized.PreparedSplit` (a sequence of `Example`s that also knows its file,
    for `tokenized_split`'s cache).

    `options_model` validates ``training.objective_options``; the options are passed to
    `config` with sftkit's arguments (name them as the config's fields). The memory it
    declares, which the estimator prices: `sequences_per_example`, how many sequences each
    example puts through the model in a step (2 for a preference pair); `reference_copy`,
    whether a frozen reference of what trains is kept beside the model (a copy of the
    adapters under LoRA/QLoRA, of the whole model under full training); `own_loss`, that its
    trainer computes the loss itself (``training.loss`` must stay ``auto``); `rollout`, for
    an objective that generates its own completions, a function of its validated options
    returning the `Rollout` it holds (the estimate's rollout phase); `fit_searches`, the
    options ``estimate-memory --fit`` searches (`OptionSearch`)."""

    kind: ClassVar[str] = "objective"

    trainer: str
    config: str
    factory: str
    options_model: type[Options] = NoOptions
    sequences_per_example: int = 1
    reference_copy: bool = False
    own_loss: bool = False
    rollout: Callable[[Any], Rollout] | None = None
    fit_searches: tuple[OptionSearch, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        for attr in ("trainer", "config"):
            if ":" not in getattr(self, attr):
                raise SpecError(
                    f"objective {self.name!r}: {attr} {getattr(self, attr)!r} must be "
                    "'package.module:attr'."
                )
        if self.sequences_per_example < 1:
            raise SpecError(
                f"objective {self.name!r}: sequences_per_example must be at least 1, "
                f"not {self.sequences_per_example}."
            )


@dataclass(frozen=True)
class RewardSpec(_Spec):
    """A reward function, named in a reinforcement objective's ``rewards`` option (``grpo``).
    `factory` names the function, imported only when a run uses it, with TRL's reward
    signature: ``reward(prompts, completions, **columns) -> list[float | None]``, one score
    per completion (None: not applicable), where `columns` are the training data's other
    columns, among them ``reference_answer`` (the example's gold final answer, or None)."""

    kind: ClassVar[str] = "reward"

    factory: str


def _check_name(spec: Any) -> None:
    name = spec.name
    if not name or name != name.strip().lower() or " " in name:
        raise SpecError(
            f"{spec.kind} name {name!r} is not valid: use lowercase words joined by '-'."
        )
    if hasattr(spec, "factory") and ":" not in spec.factory:
        raise SpecError(
            f"{spec.kind} {name!r}: factory {spec.factory!r} must be 'package.module:attr'."
        )
