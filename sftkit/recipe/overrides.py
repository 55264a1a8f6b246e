"""Command-line overrides: ``a.b=value`` sets a key, ``~a.b`` deletes it (back to default).

Values are read as YAML scalars or flow collections (``8``, ``2e-4``, ``true``, ``[q_proj,
v_proj]``, ``null``) unless the schema says the key holds a string, in which case the text is
kept as written (so ``model.revision=1234`` stays ``"1234"``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from sftkit.errors import OverrideError
from sftkit.recipe.yamlio import load_scalar

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$")

# Path -> True when the schema says the value there is a string (keep the text verbatim).
StringField = Callable[[tuple[str, ...]], bool]


@dataclass(frozen=True)
class Override:
    path: tuple[str, ...]
    raw: str | None  # None for a deletion
    delete: bool = False

    @property
    def key(self) -> str:
        return ".".join(self.path)

    def __str__(self) -> str:
        return f"~{self.key}" if self.delete else f"{self.key}={self.raw}"


def parse_override(text: str) -> Override:
    """Parse one ``key=value`` or ``~key`` argument."""
    if text.startswith("~"):
        key = text[1:]
        if "=" in key:
            raise OverrideError(
                f"override {text!r}: a deletion (~key) takes no value.",
                hint="Write `~training.max_steps` to delete, or `training.max_steps=10` to set.",
            )
        return Override(_parse_key(key, text), None, delete=True)
    key, sep, raw = text.partition("=")
    if not sep:
        raise OverrideError(
            f"override {text!r} is not of the form key=value or ~key.",
            hint="For example `training.micro_batch_size=2` or `~training.max_steps`.",
        )
    return Override(_parse_key(key.strip(), text), raw)


def parse_value(raw: str, *, as_string: bool = False) -> Any:
    if as_string:
        return raw
    try:
        value = load_scalar(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw
    return value


def apply_overrides(
    data: dict[str, Any], overrides: Iterable[Override], is_string: StringField = lambda p: False
) -> dict[str, Any]:
    """Return a copy of `data` with the overrides applied in order."""
    result = copy.deepcopy(data)
    for override in overrides:
        parent = _walk(result, override)
        last = override.path[-1]
        if override.delete:
            if isinstance(parent, dict) and last in parent:
                del parent[last]
            elif isinstance(parent, list) and _index(last, parent, override) is not None:
                del parent[int(last)]
            else:
                raise OverrideError(
                    f"override {override}: the recipe has no key {override.key!r} to delete."
                )
            continue
        assert override.raw is not None
        value = parse_value(override.raw, as_string=is_string(override.path))
        if isinstance(parent, list):
            idx = _index(last, parent, override, allow_append=True)
            if idx == len(parent):
                parent.append(value)
            else:
                parent[idx] = value
        else:
            parent[last] = value
    return result


def _walk(data: dict[str, Any], override: Override) -> Any:
    node: Any = data
    for depth, part in enumerate(override.path[:-1]):
        if isinstance(node, dict):
            if part not in node or node[part] is None:
                if override.delete:
                    raise OverrideError(
                        f"override {override}: the recipe has no key {override.key!r} to delete."
                    )
                node[part] = {}
            node = node[part]
        elif isinstance(node, list):
            node = node[_index(part, node, override)]
        else:
            where = ".".join(override.path[:depth])
            raise OverrideError(
                f"override {override}: {where!r} holds a {type(node).__name__}, not a mapping, "
                f"so it has no key {part!r}."
            )
    if not isinstance(node, dict | list):
        where = ".".join(override.path[:-1])
        raise OverrideError(
            f"override {override}: {where!r} holds a {type(node).__name__}, not a mapping."
        )
    return node


def _index(part: str, items: list[Any], override: Override, allow_append: bool = False) -> int:
    if not part.isdigit():
        raise OverrideError(f"override {override}: {part!r} must be a list index (0, 1, ...).")
    idx = int(part)
    limit = len(items) + (1 if allow_append else 0)
    if idx >= limit:
        raise OverrideError(
            f"override {override}: index {idx} is past the end of a list of {len(items)}."
        )
    return idx


def _parse_key(key: str, text: str) -> tuple[str, ...]:
    if not _KEY.match(key):
        raise OverrideError(
            f"override {text!r}: {key!r} is not a dotted key path.",
            hint="Keys are names joined by dots, e.g. `strategy.options.rank=8`.",
        )
    return tuple(key.split("."))
