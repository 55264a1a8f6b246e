"""Helpers for tests, sftkit's own and plugin authors'.

from sftkit.testing import fresh_registry, registered

def test_my_strategy_is_listed():
    with registered(my_plugin_module) as registry:
        assert "my-strategy" in registry.strategies
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sftkit.plugins import SftkitPluginManager, make_plugin_manager
from sftkit.registry import Registry


def fresh_manager(*, builtins: bool = True, disabled: tuple[str, ...] = ()) -> SftkitPluginManager:
    """A plugin manager with the built-ins and no installed plugins (autoloading off)."""
    return make_plugin_manager(autoload=False, builtins=builtins, disabled=disabled)


def fresh_registry(*, builtins: bool = True) -> Registry:
    return Registry.from_manager(fresh_manager(builtins=builtins))


@contextmanager
def registered(*plugins: Any, builtins: bool = True) -> Iterator[Registry]:
    """Register `plugins` (modules or objects with hookimpls) on a fresh manager for the
    duration of the block and yield its registry. Raises if a plugin fails to register."""
    manager = fresh_manager(builtins=builtins)
    for i, plugin in enumerate(plugins):
        name = getattr(plugin, "__name__", None) or f"test-plugin-{i}"
        if not manager.register(plugin, name):
            raise AssertionError("; ".join(f.describe() for f in manager.failures))
    try:
        yield Registry.from_manager(manager)
    finally:
        for info in list(manager.infos):
            manager.unregister(info)
