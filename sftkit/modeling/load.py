"""Loading tokenizers and models: the base (dense or quantized, from the hub, a directory or
random weights) and the strategy applied on top. A finished run's models: `trained`.

The same functions serve the 8B hub model on a GPU and the tiny bundled model on a CPU:
`from_pretrained` with the strategy's `BitsAndBytesConfig`, `revision` and
`trust_remote_code`. A random-weight base is first written to a directory (the run's
``base/``) and then loaded through that same call, so quantization applies to it too and a
run's adapter reloads later onto the identical weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sftkit.devices import CPU, is_cpu
from sftkit.distributed.trainer import load_device_map, shards_parameters
from sftkit.dtypes import torch_dtype
from sftkit.errors import ModelLoadError, SftkitError
from sftkit.modelshape.sources import BUILTIN_PREFIX, builtin_model_dir
from sftkit.specs import load_factory
from sftkit.strategies.base import StrategyContext, StrategyProtocol

if TYPE_CHECKING:
    import torch

    from sftkit.recipe.load import ResolvedRecipe
    from sftkit.recipe.schema import Recipe


def resolve_model_path(name_or_path: str) -> str:
    """``builtin:NAME`` -> the bundled directory; anything else as given (hub id or path)."""
    if name_or_path.startswith(BUILTIN_PREFIX):
        return str(builtin_model_dir(name_or_path[len(BUILTIN_PREFIX) :]))
    return name_or_path


def training_device(recipe: Recipe) -> str:
    """'cpu' when the recipe says so, else CUDA, which must then be present."""
    import torch

    if is_cpu(recipe.hardware.gpu):
        return CPU
    if torch.cuda.is_available():
        return "cuda"
    raise SftkitError(
        f"hardware.gpu is {recipe.hardware.gpu!r} but no CUDA device is available here.",
        hint="Train on the CPU with the override hardware.gpu=cpu (tiny models only), or run "
        "on a machine with a GPU.",
    )


def load_strategy(resolved: ResolvedRecipe) -> StrategyProtocol:
    component = resolved.strategy
    strategy = load_factory(component.spec.factory)(component.options)
    if not isinstance(strategy, StrategyProtocol):
        raise SftkitError(
            f"strategy {component.spec.name!r} (plugin {component.plugin!r}): its factory "
            f"returned {type(strategy).__name__}, not a strategy object (subclass "
            "sftkit.strategies.Strategy, or implement sftkit.strategies.StrategyProtocol)."
        )
    return strategy


def strategy_context(recipe: Recipe, device: str | None = None) -> StrategyContext:
    """What a strategy is told about this process's run (see `StrategyContext`)."""
    return StrategyContext(
        recipe=recipe,
        device=device or training_device(recipe),
        shards_parameters=shards_parameters(recipe),
    )


def trust_remote_code_notice(recipe: Recipe) -> str:
    """Said once when a command loads a model with ``model.trust_remote_code: true``."""
    return (
        "[yellow]note:[/yellow] model.trust_remote_code is true: Python code that comes with "
        f"{recipe.model.name_or_path} runs in this process when its tokenizer and model load."
    )


# --------------------------------------------------------------------------- tokenizer


def load_tokenizer(recipe: Recipe) -> Any:
    """The recipe's tokenizer (``model.tokenizer`` or the model's own), with a pad token."""
    from sftkit.versions import check_training_stack

    check_training_stack("loading the model")  # a clash is exit 2, before an odd ImportError
    from transformers import AutoTokenizer

    name = recipe.model.tokenizer or recipe.model.name_or_path
    kwargs: dict[str, Any] = {"trust_remote_code": recipe.model.trust_remote_code}
    if recipe.model.tokenizer is None and recipe.model.revision:
        kwargs["revision"] = recipe.model.revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name), **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load the tokenizer {name!r}: {exc}",
            hint="Check model.tokenizer / model.name_or_path; offline, point them at a local "
            "directory (HF_HUB_OFFLINE=1 disables downloads).",
        ) from exc
    return with_pad_token(tokenizer)


def with_pad_token(tokenizer: Any) -> Any:
    # Padding positions are never labelled (labels are built before padding), so any
    # existing special token works; unk keeps EOS unambiguous where the vocabulary has one.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


# --------------------------------------------------------------------------- models


def random_base(recipe: Recipe, tokenizer: Any, directory: Path) -> Path:
    """Write the recipe's architecture with seeded random weights to `directory` (once)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if (directory / "config.json").is_file():
        return directory
    config = AutoConfig.from_pretrained(
        resolve_model_path(recipe.model.name_or_path),
        revision=recipe.model.revision,
        trust_remote_code=recipe.model.trust_remote_code,
    )
    # The same seed gives the same weights on the same device type: the base is
    # reproducible, and it is saved so that reloading never depends on that.
    torch.manual_seed(recipe.training.seed)
    model = AutoModelForCausalLM.from_config(
        config,
        dtype=torch_dtype(recipe.model.dtype),
        trust_remote_code=recipe.model.trust_remote_code,
    )
    if tokenizer is not None and len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    return directory


def load_base_model(
    recipe: Recipe,
    strategy: StrategyProtocol,
    tokenizer: Any,
    *,
    base_dir: Path | None,
    quantized: bool,
) -> torch.nn.Module:
    """The untrained base, loaded the way the strategy stores it (dense or quantized)."""
    from transformers import AutoModelForCausalLM

    from sftkit.modeling.attention import runtime_attention

    device = training_device(recipe)
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype(recipe.model.dtype),
        # packed rows without a dense mask where the recipe asks (sftkit.attention)
        "attn_implementation": runtime_attention(recipe, device),
        "trust_remote_code": recipe.model.trust_remote_code,
        # This rank's GPU, or host memory when a sharding engine places the shards.
        "device_map": load_device_map(recipe, device, quantized=quantized),
        **strategy.load_kwargs(strategy_context(recipe, device)),
    }
    if recipe.model.random_init:
        if base_dir is None:
            raise SftkitError("a random_init model needs a directory to hold its base weights.")
        source = str(random_base(recipe, tokenizer, base_dir))
    else:
        source = resolve_model_path(recipe.model.name_or_path)
        if recipe.model.revision:
            kwargs["revision"] = recipe.model.revision
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load the model {recipe.model.name_or_path!r}: {exc}",
            hint="Check model.name_or_path, model.revision and model.attn_implementation; "
            "offline, point name_or_path at a local directory.",
        ) from exc
    align_special_tokens(model, tokenizer)
    return model


def align_special_tokens(model: Any, tokenizer: Any) -> None:
    if tokenizer is None:
        return
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            setattr(model.config, name, value)
            if getattr(model, "generation_config", None) is not None and name != "eos_token_id":
                setattr(model.generation_config, name, value)
    generation = getattr(model, "generation_config", None)
    if generation is not None and tokenizer.eos_token_id is not None:
        eos = generation.eos_token_id
        ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        if tokenizer.eos_token_id not in ids:
            generation.eos_token_id = (
                [tokenizer.eos_token_id, *ids] if ids else tokenizer.eos_token_id
            )


def build_model(
    resolved: ResolvedRecipe, tokenizer: Any, *, base_dir: Path | None = None
) -> torch.nn.Module:
    """The model that trains: the base, loaded per the strategy, with the strategy applied
    (all weights trainable, or a frozen/quantized base with LoRA adapters)."""
    import torch

    strategy = load_strategy(resolved)
    base = load_base_model(
        resolved.recipe,
        strategy,
        tokenizer,
        base_dir=base_dir,
        quantized=resolved.strategy_parts.storage.quantized,
    )
    # Adapters start from the recipe's seed whatever loading drew from the generator (a
    # random base written in this process, or already written by another rank), so a
    # launched run's adapters are those `sftkit run` would make.
    torch.manual_seed(resolved.recipe.training.seed)
    return strategy.apply(base, strategy_context(resolved.recipe))
