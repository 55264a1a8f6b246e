"""Stage 4, the model: the base (dense or quantized, hub, directory or seeded random) with
the strategy applied (`sftkit.modeling.build_model`), described in two lines."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sftkit import progress
from sftkit.training.context import RunContext


def build(ctx: RunContext, tokenizer: Any, say: Callable[..., None]) -> Any:
    from sftkit.modeling import build_model

    recipe, started = ctx.recipe, time.perf_counter()
    with progress.current().stage("load model"):
        base_dir = ctx.paths.base if recipe.model.random_init else None
        model = build_model(ctx.resolved, tokenizer, base_dir=base_dir)
    say(describe(model, recipe, time.perf_counter() - started))
    return model


def describe(model: Any, recipe: Any, seconds: float) -> str:
    """Two short lines, so that neither wraps on an 80-column terminal for common names."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return (
        f"model: {recipe.model.name_or_path} ({recipe.strategy.name}), loaded in {seconds:.1f}s\n"
        f"  {trainable:,} of {total:,} parameters train ({100 * trainable / max(total, 1):.2f}%)"
    )
