"""Modified copies of a resolved recipe, for advice and fit searches: the estimator re-runs
on each variant instead of guessing what a change would save."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sftkit.errors import SftkitError

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe

DELETE = object()


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            if value is DELETE:
                return
            child = node[part] = {}
        node = child
    if value is DELETE:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


def variant(resolved: ResolvedRecipe, changes: Mapping[str, Any]) -> ResolvedRecipe | None:
    """The recipe with `changes` (dotted path -> value, or DELETE) applied and validated
    again; None when the change makes it invalid (e.g. an incompatible combination)."""
    from sftkit.recipe.load import validate_recipe_data

    data = copy.deepcopy(resolved.raw)
    for path, value in changes.items():
        _set(data, path, value)
    try:
        return validate_recipe_data(data, registry=resolved.registry, source=resolved.source)
    except SftkitError:
        return None


def render_override(path: str, value: Any) -> str:
    if value is DELETE:
        return f"~{path}"
    if isinstance(value, bool):
        return f"{path}={'true' if value else 'false'}"
    return f"{path}={value}"


def component_switch(resolved: ResolvedRecipe, key: str, name: str) -> dict[str, Any]:
    """Changes that switch component `key` (strategy/optimizer) to `name`, keeping the options
    the new component accepts and deleting the rest."""
    catalog = resolved.registry.strategies if key == "strategy" else resolved.registry.optimizers
    fields = set(catalog.get(name).options_model.model_fields)
    raw = resolved.raw.get(key, {})
    options = raw.get("options", {}) if isinstance(raw, dict) else {}
    changes: dict[str, Any] = {f"{key}.name": name}
    for option in options or {}:
        if option not in fields:
            changes[f"{key}.options.{option}"] = DELETE
    return changes
