"""Stage 4, the model: the base (dense or quantized, hub, directory or seeded random) with
the strategy applied (`sftkit.modeling.build_model`), described in two lines."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sftkit import progress
from sftkit.errors import ModelLoadError
from sftkit.training.context import RunContext


def build(ctx: RunContext, tokenizer: Any, say: Callable[..., None]) -> Any:
    from sftkit.modeling import build_model

    recipe, started = ctx.recipe, time.perf_counter()
    check_adapter(recipe.model.adapter)
    with progress.current().stage("load model"):
        base_dir = ctx.paths.base if recipe.model.random_init else None
        model = build_model(ctx.resolved, tokenizer, base_dir=base_dir)
    say(describe(model, recipe, time.perf_counter() - started))
    return model


def check_adapter(path: str | None) -> None:
    """A starting adapter (``model.adapter``) must be a PEFT adapter directory: said before
    the base loads, not after minutes of loading it."""
    if path and not (Path(path) / "adapter_config.json").is_file():
        raise ModelLoadError(
            f"model.adapter: {path!r} is not a PEFT adapter directory (no adapter_config.json).",
            hint="Point it at an adapter a LoRA/QLoRA run saved (its final/), or run that first.",
        )


def describe(model: Any, recipe: Any, seconds: float) -> str:
    """Two short lines, so that neither wraps on an 80-column terminal for common names."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return (
        f"model: {recipe.model.name_or_path} ({recipe.strategy.name}), loaded in {seconds:.1f}s\n"
        f"  {trainable:,} of {total:,} parameters train ({100 * trainable / max(total, 1):.2f}%)"
    )
