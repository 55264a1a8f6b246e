"""The registry: every component spec, by kind, with the plugin that registered it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sftkit.errors import DuplicateComponentError, PluginError, UnknownComponentError
from sftkit.plugins import PluginFailure, SftkitPluginManager, make_plugin_manager
from sftkit.specs import (
    DatasetFormatSpec,
    EngineSpec,
    EvaluatorSpec,
    OptimizerSpec,
    PromptTemplateSpec,
    StrategySpec,
)
from sftkit.suggest import closest

S = TypeVar("S")

# kind (as used in `sftkit list KIND`) -> (registration hook name, spec class)
KINDS: dict[str, tuple[str, type]] = {
    "strategies": ("register_strategies", StrategySpec),
    "optimizers": ("register_optimizers", OptimizerSpec),
    "formats": ("register_dataset_formats", DatasetFormatSpec),
    "templates": ("register_prompt_templates", PromptTemplateSpec),
    "evaluators": ("register_evaluators", EvaluatorSpec),
    "engines": ("register_engines", EngineSpec),
}


@dataclass(frozen=True)
class Entry(Generic[S]):
    spec: S
    plugin: str


class Catalog(Generic[S]):
    """All specs of one kind."""

    def __init__(self, kind: str, spec_type: type, manager: SftkitPluginManager | None) -> None:
        self.kind = kind
        self.spec_type = spec_type
        self._entries: dict[str, Entry[S]] = {}
        self._manager = manager
        self._noun: str = getattr(spec_type, "kind", kind)

    def add(self, spec: S, plugin: str) -> None:
        if not isinstance(spec, self.spec_type):
            raise PluginError(
                f"plugin {plugin!r} registered {type(spec).__name__} in {self.kind}; "
                f"expected {self.spec_type.__name__}."
            )
        name = spec.name  # type: ignore[attr-defined]
        if name in self._entries:
            other = self._entries[name].plugin
            raise DuplicateComponentError(
                f"{self._noun} {name!r} is registered by both plugin {other!r} and "
                f"plugin {plugin!r}.",
                hint=f"Disable one of them, e.g. `sftkit --disable-plugin {plugin} ...`.",
            )
        self._entries[name] = Entry(spec, plugin)

    def get(self, name: str) -> S:
        return self.entry(name).spec

    def entry(self, name: str) -> Entry[S]:
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            error = UnknownComponentError(
                self._noun,
                name,
                known,
                closest(name, known),
            )
            failures = self._manager.failures if self._manager else []
            if failures:
                error.hint = (
                    (error.hint or "") + "\nNote: " + "; ".join(f.describe() for f in failures)
                )
            raise error from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[S]]:
        return iter(self._entries[name] for name in sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


class Registry:
    """Collects specs from every registration hook, remembering which plugin gave each."""

    def __init__(self, manager: SftkitPluginManager | None = None) -> None:
        self.manager = manager
        self.strategies: Catalog[StrategySpec] = Catalog("strategies", StrategySpec, manager)
        self.optimizers: Catalog[OptimizerSpec] = Catalog("optimizers", OptimizerSpec, manager)
        self.formats: Catalog[DatasetFormatSpec] = Catalog("formats", DatasetFormatSpec, manager)
        self.templates: Catalog[PromptTemplateSpec] = Catalog(
            "templates", PromptTemplateSpec, manager
        )
        self.evaluators: Catalog[EvaluatorSpec] = Catalog("evaluators", EvaluatorSpec, manager)
        self.engines: Catalog[EngineSpec] = Catalog("engines", EngineSpec, manager)

    def catalog(self, kind: str) -> Catalog[Any]:
        if kind not in KINDS:
            raise UnknownComponentError("component kind", kind, list(KINDS), closest(kind, KINDS))
        catalog: Catalog[Any] = getattr(self, kind)
        return catalog

    @classmethod
    def from_manager(cls, manager: SftkitPluginManager, *, strict: bool = True) -> Registry:
        """Collect every plugin's specs. A plugin that fails (raises, registers a duplicate or
        an invalid spec) raises a PluginError naming it; with ``strict=False`` the failure is
        recorded in ``manager.failures`` instead, so `sftkit plugins` can still list the rest."""
        registry = cls(manager)
        for kind, (hook_name, _) in KINDS.items():
            catalog = registry.catalog(kind)
            caller = getattr(manager.hook, hook_name)
            # Built-ins are `trylast`, so they come first here: a third-party plugin that
            # reuses a built-in name is the one reported as the duplicate.
            # Each implementation gets a `register` bound to its plugin's name, so the
            # registry knows who registered what (pluggy's plain call would lose that).
            for impl in caller.get_hookimpls():

                def register(
                    spec: Any,
                    _plugin: str = impl.plugin_name,
                    _catalog: Catalog[Any] = catalog,
                ) -> None:
                    _catalog.add(spec, _plugin)

                try:
                    impl.function(register=register)
                except Exception as exc:
                    error = _plugin_error(exc, impl.plugin_name, hook_name, manager)
                    if strict:
                        raise error from exc
                    manager.failures.append(
                        PluginFailure(impl.plugin_name, _distribution(manager, impl), str(error))
                    )
        return registry


def _distribution(manager: SftkitPluginManager, impl: Any) -> str | None:
    info = manager.infos.get(impl.plugin_name)
    return info.distribution if info else None


def _plugin_error(
    exc: Exception, plugin: str, hook_name: str, manager: SftkitPluginManager
) -> PluginError:
    info = manager.infos.get(plugin)
    dist = f" (distribution {info.distribution})" if info and info.distribution else ""
    if isinstance(exc, DuplicateComponentError):
        # Name the installed distribution too, so the user knows what to uninstall.
        where = f" Plugin {plugin!r} comes from {info.distribution}." if dist and info else ""
        return DuplicateComponentError(f"{exc.args[0]}{where}", hint=exc.hint)
    if isinstance(exc, PluginError):
        return type(exc)(f"plugin {plugin!r}{dist}: {exc.args[0]}", hint=exc.hint)
    return PluginError(
        f"plugin {plugin!r}{dist} raised {type(exc).__name__} in {hook_name}: {exc}",
        hint=f"Disable it with `sftkit --disable-plugin {plugin} ...`.",
    )


def default_registry(**manager_options: Any) -> Registry:
    """A registry from a fresh plugin manager (built-ins plus installed plugins)."""
    return Registry.from_manager(make_plugin_manager(**manager_options))
