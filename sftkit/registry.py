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
    LossHeadSpec,
    ObjectiveSpec,
    OptimizerSpec,
    PromptTemplateSpec,
    RewardSpec,
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
    "loss_heads": ("register_loss_heads", LossHeadSpec),
    "objectives": ("register_objectives", ObjectiveSpec),
    "rewards": ("register_rewards", RewardSpec),
}


@dataclass(frozen=True)
class Entry(Generic[S]):
    spec: S
    plugin: str


@dataclass(frozen=True)
class BrokenRegistration:
    """A plugin whose registration hook for one kind raised: the names it had registered
    before raising (dropped, since the plugin did not finish) and the error."""

    plugin: str
    distribution: str | None
    error: str
    names: tuple[str, ...]


class Catalog(Generic[S]):
    """All specs of one kind.

    Two plugins registering one name do not break the catalog: the name becomes a conflict,
    an error only where it is looked up, naming both plugins and how to choose one.
    """

    def __init__(self, kind: str, spec_type: type, manager: SftkitPluginManager | None) -> None:
        self.kind = kind
        self.spec_type = spec_type
        # name -> every entry registered under it, in registration order; more than one
        # is a conflict.
        self._providers: dict[str, list[Entry[S]]] = {}
        self._manager = manager
        self._noun: str = getattr(spec_type, "kind", kind)
        self.broken: list[BrokenRegistration] = []

    def add(self, spec: S, plugin: str) -> None:
        if not isinstance(spec, self.spec_type):
            raise PluginError(
                f"plugin {plugin!r} registered {type(spec).__name__} in {self.kind}; "
                f"expected {self.spec_type.__name__}."
            )
        name = spec.name  # type: ignore[attr-defined]
        providers = self._providers.setdefault(name, [])
        if any(entry.plugin == plugin for entry in providers):
            raise PluginError(f"plugin {plugin!r} registered {self._noun} {name!r} twice.")
        providers.append(Entry(spec, plugin))

    def remove_plugin(self, plugin: str) -> tuple[str, ...]:
        """Drop every entry `plugin` registered; return their names."""
        removed = []
        for name in list(self._providers):
            kept = [entry for entry in self._providers[name] if entry.plugin != plugin]
            if len(kept) != len(self._providers[name]):
                removed.append(name)
            if kept:
                self._providers[name] = kept
            else:
                del self._providers[name]
        return tuple(removed)

    def get(self, name: str) -> S:
        return self.entry(name).spec

    def entry(self, name: str) -> Entry[S]:
        """The entry `name` resolves to: ``plugin:name`` picks that plugin's; a bare name
        its one provider's, or the one third-party plugin's that shadows a built-in."""
        plugin, _, bare = name.rpartition(":")
        providers = self._providers.get(bare) or []
        if plugin:
            chosen = [entry for entry in providers if entry.plugin == plugin]
            if chosen:
                return chosen[0]
            raise self.unknown_error(name) from None
        winner = self._winner(providers)
        if winner is not None:
            return winner
        if providers:
            raise self.conflict_error(name)
        raise self.unknown_error(name) from None

    def _winner(self, providers: list[Entry[S]]) -> Entry[S] | None:
        """The entry a bare name resolves to: the only one, or a plugin's over a built-in's
        (the built-in stays reachable as ``<its plugin>:<name>``); None for a conflict."""
        if len(providers) == 1:
            return providers[0]
        added = [entry for entry in providers if not self._is_builtin(entry.plugin)]
        return added[0] if len(added) == 1 else None

    def shadowed(self) -> dict[str, tuple[Entry[S], tuple[Entry[S], ...]]]:
        """Built-in names a plugin took: name -> (the plugin's entry, the built-in ones)."""
        out = {}
        for name, providers in sorted(self._providers.items()):
            winner = self._winner(providers)
            if winner is not None and len(providers) > 1:
                out[name] = (winner, tuple(e for e in providers if e is not winner))
        return out

    def conflicts(self) -> dict[str, tuple[Entry[S], ...]]:
        """Names more than one third-party plugin registers, with every registration."""
        return {
            name: tuple(entries)
            for name, entries in sorted(self._providers.items())
            if self._winner(entries) is None
        }

    def conflict_error(self, name: str) -> DuplicateComponentError:
        plugins = [entry.plugin for entry in self._providers[name]]
        who = " and ".join(self._describe_plugin(plugin) for plugin in plugins)
        choices = []
        for keep in plugins:
            drop = [other for other in plugins if other != keep]
            flags = " ".join(f"--disable-plugin {other}" for other in drop)
            choice = (
                f"to use {keep}'s, run `sftkit {flags} ...` "
                f"(or set SFTKIT_DISABLE_PLUGINS={','.join(drop)})"
            )
            if any(self._is_builtin(other) for other in drop):
                choice += ", which also drops the other components of that built-in plugin"
            choices.append(choice)
        qualified = ", ".join(f"{plugin}:{name}" for plugin in plugins)
        choices.append(f"or name one plugin's in the recipe: {qualified}")
        return DuplicateComponentError(
            f"{self._noun} {name!r} is registered by {len(plugins)} plugins: {who}.",
            hint="Choose one: " + "; ".join(choices) + ".",
        )

    def unknown_error(self, name: str) -> UnknownComponentError:
        known = self.names()
        error = UnknownComponentError(self._noun, name, known, closest(name, known))
        notes = self.failure_notes(name)
        if notes:
            error.hint = (error.hint or "") + "".join(f"\nNote: {note}" for note in notes)
        return error

    def failure_notes(self, name: str) -> list[str]:
        """Why `name` may be missing: the broken plugin that had registered it, else every
        plugin that failed before registering anything of this kind; and the plugins turned
        off, and by what."""
        blocked = self._manager.blocked_note() if self._manager else None
        turned_off = [f"{blocked[0].upper()}{blocked[1:]}."] if blocked else []
        return self._broken_notes(name) + turned_off

    def _broken_notes(self, name: str) -> list[str]:
        known = [
            f"{self._noun.capitalize()} {name!r} was registered by "
            f"{self._describe_plugin(broken.plugin)}, whose registration then failed: "
            f"{broken.error}"
            for broken in self.broken
            if name in broken.names
        ]
        if known:
            return known
        failures = self._manager.failures if self._manager else []
        maybe = [f"plugin {b.plugin!r}: {b.error}" for b in self.broken]
        maybe += [f.describe() for f in failures if f.hook is None]  # never loaded at all
        if not maybe:
            return []
        return [f"Plugins that failed might provide {self._noun} {name!r}: " + "; ".join(maybe)]

    def _is_builtin(self, plugin: str) -> bool:
        info = self._manager.infos.get(plugin) if self._manager else None
        return bool(info and info.builtin)

    def _describe_plugin(self, plugin: str) -> str:
        info = self._manager.infos.get(plugin) if self._manager else None
        if info is None or not info.distribution:
            origin = "built into sftkit" if info is not None and info.builtin else None
        else:
            origin = f"distribution {info.distribution}" + (
                f" {info.version}" if info.version else ""
            )
        return f"plugin {plugin!r}" + (f" ({origin})" if origin else "")

    def names(self) -> list[str]:
        """Bare names that resolve (conflicting names are in `conflicts()`)."""
        return sorted(n for n, entries in self._providers.items() if self._winner(entries))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.entry(name)
        except (UnknownComponentError, DuplicateComponentError):
            return False
        return True

    def __iter__(self) -> Iterator[Entry[S]]:
        """The entry each bare name resolves to."""
        return iter(self.entry(name) for name in self.names())

    def __len__(self) -> int:
        return len(self.names())


class _Register:
    """The `register` callable one plugin's registration hook receives: it files each spec
    under that plugin. Its repr is what `--trace-plugins` prints."""

    def __init__(self, catalog: Catalog[Any], plugin: str) -> None:
        self.catalog, self.plugin = catalog, plugin

    def __call__(self, spec: Any) -> None:
        self.catalog.add(spec, self.plugin)

    def __repr__(self) -> str:
        return f"<register {self.catalog.kind} of plugin {self.plugin!r}>"


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
        self.loss_heads: Catalog[LossHeadSpec] = Catalog("loss_heads", LossHeadSpec, manager)
        self.objectives: Catalog[ObjectiveSpec] = Catalog("objectives", ObjectiveSpec, manager)
        self.rewards: Catalog[RewardSpec] = Catalog("rewards", RewardSpec, manager)

    def catalog(self, kind: str) -> Catalog[Any]:
        if kind not in KINDS:
            raise UnknownComponentError("component kind", kind, list(KINDS), closest(kind, KINDS))
        catalog: Catalog[Any] = getattr(self, kind)
        return catalog

    @classmethod
    def from_manager(cls, manager: SftkitPluginManager, *, strict: bool = False) -> Registry:
        """Collect every plugin's specs, each registration hook called through pluggy once
        per plugin (so `--trace-plugins` shows it and the registry knows who gave what).

        A plugin whose registration raises (or registers an invalid spec) is recorded in
        ``manager.failures``; the names it registered before raising are dropped but
        remembered, so looking one up says what happened. A name two plugins register is a
        conflict, an error only where it is used. With ``strict=True`` (the test kit) the
        first failure or conflict raises instead."""
        registry = cls(manager)
        for kind, (hook_name, _) in KINDS.items():
            catalog = registry.catalog(kind)
            for plugin, call in manager.callers_by_plugin(hook_name):
                try:
                    call(register=_Register(catalog, plugin))
                except Exception as exc:
                    error = _plugin_error(exc, plugin, hook_name, manager)
                    if strict:
                        raise error from exc
                    dist = manager.distribution_of(plugin)
                    names = catalog.remove_plugin(plugin)
                    catalog.broken.append(BrokenRegistration(plugin, dist, str(error), names))
                    manager.record_failure(PluginFailure(plugin, dist, str(error), hook_name))
            if strict and catalog.conflicts():
                raise catalog.conflict_error(next(iter(catalog.conflicts())))
        return registry


def _plugin_error(
    exc: Exception, plugin: str, hook_name: str, manager: SftkitPluginManager
) -> PluginError:
    info = manager.infos.get(plugin)
    dist = f" (distribution {info.distribution})" if info and info.distribution else ""
    if isinstance(exc, PluginError):
        return type(exc)(f"plugin {plugin!r}{dist}: {exc.args[0]}", hint=exc.hint)
    return PluginError(
        f"plugin {plugin!r}{dist} raised {type(exc).__name__} in {hook_name}: {exc}",
        hint=f"Disable it with `sftkit --disable-plugin {plugin} ...`.",
    )


def default_registry(**manager_options: Any) -> Registry:
    """A registry from a fresh plugin manager (built-ins plus installed plugins); broken
    plugins and conflicting names are recorded, not raised (as on the command line)."""
    return Registry.from_manager(make_plugin_manager(**manager_options))
