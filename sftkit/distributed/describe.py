"""One line that says how a recipe spreads over processes (validate, launch --dry-run)."""

from __future__ import annotations

from sftkit.engine import engine_of
from sftkit.recipe.schema import Recipe


def describe_engine(recipe: Recipe) -> str:
    return engine_of(recipe).describe(recipe)
