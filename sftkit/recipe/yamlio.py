"""Safe YAML reading that rejects duplicate keys (PyYAML silently keeps the last one), reads
floats the YAML 1.2 way (PyYAML's 1.1 rules make ``2e-4`` a string) and refuses a document
whose aliases expand it past `MAX_VALUES` (an "alias bomb": a few lines of ``*a`` that stand
for billions of values, which every later walk over the recipe would expand)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from sftkit.errors import Problem

# Values (scalars and collections) a document may stand for once its aliases are expanded.
# The largest bundled recipe has under 200; a million leaves room for long lists.
MAX_VALUES = 1_000_000

_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*|[0-9][0-9_]*(?=[eE]))(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _StrictLoader(yaml.SafeLoader):
    pass


# Replace the YAML 1.1 float resolver with one that accepts `1e-5` and `2e-4` (YAML 1.2).
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
            )
        seen[key] = loader.construct_object(value_node, deep=deep)
    return seen


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


class AliasBombError(yaml.YAMLError):
    def __init__(self, mark: yaml.Mark) -> None:
        super().__init__()
        self.problem_mark = mark
        self.problem = (
            f"its aliases (*name) expand it to more than {MAX_VALUES:,} values; write the "
            "values out instead of repeating aliases of aliases"
        )


def _expanded_size(root: yaml.Node) -> int:
    """How many values `root` stands for with every alias expanded, counted over the node
    graph (an alias is the same node object as its anchor, so each node is sized once)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(key) + size(value) for key, value in node.value)
        if total > MAX_VALUES:
            raise AliasBombError(node.start_mark)
        sizes[id(node)] = total
        return total

    return size(root)


def _load(text: str) -> Any:
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_scalar(text: str) -> Any:
    """One YAML value (a command-line override), read with the same rules as recipes."""
    return _load(text)


def read_yaml(text: str) -> tuple[Any, list[Problem]]:
    """Parse YAML text; return (data, problems). Problems name the line and column."""
    try:
        return _load(text), []
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        return None, [Problem("", f"{where}invalid YAML: {problem}.")]
