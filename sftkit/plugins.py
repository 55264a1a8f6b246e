"""Building the plugin manager: hook specs, built-in plugins, entry points, blocking, tracing.

Nothing happens at import time: `make_plugin_manager()` does all of it, so a test (or a
plugin author's test suite) can build as many isolated managers as it likes.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import inspect
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from sftkit import hookspecs
from sftkit.extras import as_broken_install
from sftkit.suggest import closest

ENTRY_POINT_GROUP = "sftkit"
ENV_DISABLE = "SFTKIT_DISABLE_PLUGINS"  # comma-separated plugin names
ENV_NO_AUTOLOAD = "SFTKIT_DISABLE_PLUGIN_AUTOLOAD"  # any non-empty value

# Built-in plugins, registered exactly like third-party ones (by module, under these names).
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("builtin.strategies", "sftkit.builtin.strategies"),
    ("builtin.optimizers", "sftkit.builtin.optimizers"),
    ("builtin.formats", "sftkit.builtin.formats"),
    ("builtin.templates", "sftkit.builtin.templates"),
    ("builtin.evaluators", "sftkit.builtin.evaluators"),
    ("builtin.commands", "sftkit.builtin.commands"),
    ("builtin.modelshape", "sftkit.builtin.modelshape"),
    ("builtin.engines", "sftkit.builtin.engines"),
    ("builtin.training", "sftkit.builtin.training"),
    ("builtin.distributed", "sftkit.builtin.distributed"),
    ("builtin.hardware", "sftkit.builtin.hardware"),
)


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or registered, kept so commands can report it.

    `hook` is None when the plugin never loaded (import error, bad hook), else the
    registration hook that raised: the plugin's other hooks still took part."""

    name: str
    distribution: str | None
    error: str
    hook: str | None = None

    def describe(self) -> str:
        dist = f" (from distribution {self.distribution})" if self.distribution else ""
        return f"plugin {self.name!r}{dist} failed: {self.error}"


@dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str | None
    version: str | None
    builtin: bool


@dataclass
class SftkitPluginManager:
    """A pluggy manager plus what sftkit remembers about how each plugin got there."""

    pm: pluggy.PluginManager
    infos: dict[str, PluginInfo] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    blocked: frozenset[str] = frozenset()
    # The part of `blocked` that SFTKIT_DISABLE_PLUGINS named (for "unknown ..." messages).
    blocked_by_env: frozenset[str] = frozenset()

    def blocked_note(self) -> str | None:
        """Which plugins are turned off and by what, for a "not found" message."""
        if not self.blocked:
            return None
        parts = []
        if self.blocked_by_env:
            names = ",".join(sorted(self.blocked_by_env))
            parts.append(f"{ENV_DISABLE}={names} in the environment")
        flags = sorted(self.blocked - self.blocked_by_env)
        if flags:
            parts.append("--disable-plugin " + ", ".join(flags))
        return f"plugins turned off by {' and by '.join(parts)}; what they register is absent"

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def register(
        self,
        plugin: object,
        name: str,
        *,
        builtin: bool = False,
        distribution: str | None = None,
        version: str | None = None,
    ) -> bool:
        """Register `plugin` under `name`; on a bad hook, record a failure and return False."""
        if name in self.blocked or self.pm.is_blocked(name):
            return False
        try:
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            self.failures.append(PluginFailure(name, distribution, _clean(str(exc))))
            return False
        unknown = _unknown_hooks(self.pm, plugin)
        if unknown:
            self.pm.unregister(plugin)
            self.failures.append(PluginFailure(name, distribution, unknown))
            return False
        module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
        self.infos[name] = PluginInfo(name, module, distribution, version, builtin)
        return True

    def record_failure(self, failure: PluginFailure) -> None:
        """Remember a failure once, however often the registry is rebuilt."""
        if failure not in self.failures:
            self.failures.append(failure)

    def distribution_of(self, name: str) -> str | None:
        info = self.infos.get(name)
        return info.distribution if info else None

    def callers_by_plugin(self, hook_name: str) -> list[tuple[str, Any]]:
        """(plugin name, a caller of `hook_name` limited to that plugin) per implementation,
        built-ins (``trylast``) first. Calling each through pluggy (not the bare function)
        keeps `--trace-plugins` complete while the caller learns who gave what."""
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()
        callers = []
        for impl in impls:
            others = [other.plugin for other in impls if other is not impl]
            callers.append((impl.plugin_name, self.pm.subset_hook_caller(hook_name, others)))
        return callers

    def unregister(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.infos.pop(name, None)


def make_plugin_manager(
    *,
    autoload: bool | None = None,
    disabled: Iterable[str] = (),
    builtins: bool = True,
    trace: bool = False,
) -> SftkitPluginManager:
    """Create a plugin manager with the hook specs, the built-ins and (unless turned off) the
    plugins installed under the ``sftkit`` entry-point group.

    `disabled` names plugins never to load (built-in ones too); the environment variable
    ``SFTKIT_DISABLE_PLUGINS`` adds more. ``SFTKIT_DISABLE_PLUGIN_AUTOLOAD`` turns entry-point
    loading off unless `autoload` says otherwise.
    """
    pm = pluggy.PluginManager("sftkit")
    pm.add_hookspecs(hookspecs)
    by_env = frozenset(_split(os.environ.get(ENV_DISABLE, "")))
    blocked = by_env | frozenset(disabled)
    for name in blocked:
        pm.set_blocked(name)
    manager = SftkitPluginManager(pm=pm, blocked=blocked, blocked_by_env=by_env)
    if builtins:
        for name, module_name in DEFAULT_PLUGINS:
            manager.register(importlib.import_module(module_name), name, builtin=True)
    if autoload is None:
        autoload = not os.environ.get(ENV_NO_AUTOLOAD)
    if autoload:
        _load_entry_points(manager)
    if trace:
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()
    manager.hook.configure.call_historic(
        kwargs={"settings": {"autoload": autoload, "disabled": sorted(blocked)}}
    )
    return manager


def _load_entry_points(manager: SftkitPluginManager) -> None:
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        if ep.name in manager.blocked or manager.pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must not take down the CLI
            # A damaged install elsewhere (a RECORD file the import read) is named as such.
            broken = as_broken_install(exc)
            reason = f"{broken.message} {broken.hint}" if broken else f"{type(exc).__name__}: {exc}"
            manager.failures.append(
                PluginFailure(ep.name, dist, f"import of {ep.value!r} raised {reason}")
            )
            continue
        manager.register(plugin, ep.name, distribution=dist, version=version)


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> str | None:
    """Per-plugin `check_pending()`: a hookimpl whose name is no sftkit hook is an error."""
    known = {
        name
        for name in dir(hookspecs)
        if not name.startswith("_")
        and inspect.isfunction(getattr(hookspecs, name))
        and hasattr(getattr(hookspecs, name), "sftkit_spec")
    }
    bad = []
    for attr in dir(plugin):
        value = getattr(plugin, attr, None)
        if callable(value) and hasattr(value, "sftkit_impl") and attr not in known:
            hint = closest(attr, known)
            bad.append(f"{attr!r}" + (f" (did you mean {hint!r}?)" if hint else ""))
    if bad:
        return f"implements unknown hook{'s' if len(bad) > 1 else ''} {', '.join(bad)}"
    return None


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _clean(message: str) -> str:
    return " ".join(message.split())
