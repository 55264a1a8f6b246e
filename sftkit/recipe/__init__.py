"""Recipes: schema, overrides and loading. See docs/recipes.md."""

from sftkit.recipe.load import Component, ResolvedRecipe, find_recipe, load_recipe, load_recipe_text
from sftkit.recipe.overrides import Override, apply_overrides, parse_override
from sftkit.recipe.schema import Recipe

__all__ = [
    "Component",
    "Override",
    "Recipe",
    "ResolvedRecipe",
    "apply_overrides",
    "find_recipe",
    "load_recipe",
    "load_recipe_text",
    "parse_override",
]
