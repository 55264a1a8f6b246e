"""A finished run's models, read back from its directory: the recipe it was trained with, the
untrained base exactly as the run started from it, and the trained model (the base plus the
final adapter, or the full final model). Used by `sftkit eval`, `sftkit export`, the
launcher's after-training evaluation and plugins.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sftkit.dtypes import torch_dtype
from sftkit.errors import SftkitError
from sftkit.modeling.load import (
    align_special_tokens,
    load_base_model,
    load_strategy,
    load_tokenizer,
    training_device,
    with_pad_token,
)
from sftkit.runpaths import RunPaths

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe
    from sftkit.recipe.schema import Recipe
    from sftkit.registry import Registry


def run_recipe(run_dir: Path, registry: Registry | None = None) -> ResolvedRecipe:
    """The resolved recipe a run directory was trained with, its components looked up in
    `registry` (the command's: its plugins; default: built-ins and installed plugins)."""
    from sftkit.recipe.load import load_recipe
    from sftkit.registry import default_registry

    path = RunPaths(Path(run_dir)).recipe
    if not path.is_file():
        raise SftkitError(
            f"{run_dir} is not a run directory: it has no {path.name}.",
            hint="Pass the directory `sftkit run` wrote (its output_dir).",
        )
    return load_recipe(str(path), registry=registry or default_registry())


def load_base(
    run_dir_or_resolved: Path | str | ResolvedRecipe, registry: Registry | None = None
) -> tuple[Any, Any]:
    """The untrained base exactly as the run started from it (quantized per its strategy),
    with the tokenizer, in eval mode."""
    run_dir: Path | None = None
    if isinstance(run_dir_or_resolved, (str, Path)):
        run_dir = Path(run_dir_or_resolved)
        resolved = run_recipe(run_dir, registry)
    else:
        resolved = run_dir_or_resolved
    recipe = resolved.recipe
    tokenizer = load_tokenizer(recipe)
    base_dir = None
    if recipe.model.random_init:
        base_dir = RunPaths(run_dir).base if run_dir else _scratch_base_dir(recipe)
    model = load_base_model(
        recipe,
        load_strategy(resolved),
        tokenizer,
        base_dir=base_dir,
        quantized=resolved.strategy_parts.storage.quantized,
    )
    model.eval()
    return model, tokenizer


def load_trained(run_dir: Path | str, registry: Registry | None = None) -> tuple[Any, Any]:
    """A finished run's model: the base plus its final adapter, or its full final model; with
    the tokenizer saved next to it; in eval mode."""
    run_dir = Path(run_dir)
    paths = RunPaths(run_dir)
    final = paths.final
    if not final.is_dir():
        raise SftkitError(
            f"{run_dir} has no {final.name}/ directory: the run has not finished.",
            hint="Resume it with `sftkit run RECIPE --output-dir DIR --resume`.",
        )
    resolved = run_recipe(run_dir, registry)
    recipe = resolved.recipe
    tokenizer = with_pad_token(_tokenizer_from(final, recipe))
    model: Any
    if paths.final_is_adapter:
        from peft import PeftModel

        base, _ = load_base(run_dir, resolved.registry)
        model = PeftModel.from_pretrained(base, str(final))
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            str(final),
            dtype=torch_dtype(recipe.model.dtype),
            trust_remote_code=recipe.model.trust_remote_code,
            device_map={"": training_device(recipe)},
        )
    align_special_tokens(model, tokenizer)
    model.eval()
    return model, tokenizer


def _tokenizer_from(directory: Path, recipe: Recipe) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        str(directory), trust_remote_code=recipe.model.trust_remote_code
    )


def _scratch_base_dir(recipe: Recipe) -> Path:
    """Where a random base lives when there is no run directory: keyed by what defines it."""
    import hashlib
    import tempfile

    key = json.dumps(
        [recipe.model.name_or_path, recipe.model.revision, recipe.model.dtype, recipe.training.seed]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "sftkit-random-bases" / digest
