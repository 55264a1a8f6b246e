"""Loading a recipe: YAML -> overrides -> schema -> components -> plugin checks.

Every problem is collected and reported at once as a `RecipeError`, each with its key path,
what was expected, what was found, and a "did you mean" where one is close.
"""

from __future__ import annotations

import copy
import reprlib
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from sftkit.components import Composition
from sftkit.errors import (
    DataError,
    DuplicateComponentError,
    PluginError,
    Problem,
    RecipeError,
    SftkitError,
    UnknownComponentError,
)
from sftkit.recipe.adapter import adapter_problems
from sftkit.recipe.overrides import Override, apply_overrides, parse_override
from sftkit.recipe.schema import ComponentRef, DistributedSection, Recipe
from sftkit.recipe.trainer_args import trainer_args_problems
from sftkit.recipe.yamlio import read_yaml
from sftkit.registry import Catalog, Registry
from sftkit.specs import (
    DatasetFormatSpec,
    EngineSpec,
    EvaluatorSpec,
    OptimizerSpec,
    Options,
    PromptTemplateSpec,
    StrategySpec,
)
from sftkit.suggest import closest

S = TypeVar("S")

# Recipe key path of each component -> registry kind.
COMPONENT_PATHS: dict[tuple[str, ...], str] = {
    ("strategy",): "strategies",
    ("optimizer",): "optimizers",
    ("data", "format"): "formats",
    ("data", "template"): "templates",
}


@dataclass(frozen=True)
class Component(Generic[S]):
    """A resolved component: its spec, its validated options and the plugin that gave it."""

    spec: S
    options: Any  # an instance of spec.options_model
    plugin: str


@dataclass(frozen=True)
class ResolvedRecipe:
    """A valid recipe with every named component looked up and its options validated."""

    recipe: Recipe
    source: str
    strategy: Component[StrategySpec]
    strategy_parts: Composition  # the strategy's storage and adapters for its options
    optimizer: Component[OptimizerSpec]
    data_format: Component[DatasetFormatSpec]
    template: Component[PromptTemplateSpec]
    evaluators: list[Component[EvaluatorSpec]]
    engine: Component[EngineSpec]
    registry: Registry = field(repr=False, compare=False)
    overrides: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # What loading changed that the user did not write (options dropped with a switched
    # component); the CLI shows each as a note.
    notes: tuple[str, ...] = ()
    # data.mixture's formats, in its order (empty without a mixture; then data_format is
    # the one format read)
    mixture: tuple[Component[DatasetFormatSpec], ...] = ()
    # evaluation.during_training's evaluators (run every training.eval_steps)
    during_training: tuple[Component[EvaluatorSpec], ...] = ()

    @property
    def data_label(self) -> str:
        """What the data is, in a few words: ``gsm8k``, or ``mixture of alpaca, sharegpt``."""
        if not self.mixture:
            return str(self.data_format.spec.name)
        return "mixture of " + ", ".join(c.spec.name for c in self.mixture)


def bundled_recipes_dir() -> Path:
    """The recipes shipped with sftkit (inside the wheel, or the repo's recipes/ in a checkout)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_recipes", here.parent / "recipes"):
        if candidate.is_dir():
            return candidate
    return here / "_recipes"


def find_recipe(name_or_path: str) -> Path:
    """A path as given, else a bundled recipe by name (``quickstart`` or ``quickstart.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_recipes_dir()
    for candidate in (bundled / name_or_path, bundled / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in bundled.glob("*.yaml"))
    hint = closest(path.stem, known)
    raise DataError(
        f"recipe file {name_or_path!r} does not exist"
        + (f"; did you mean the bundled recipe {hint!r}?" if hint else ".")
        + f" Bundled recipes: {', '.join(known) or '(none)'}.",
        hint="Pass a path to a YAML recipe, or a bundled name from `sftkit recipes`.",
    )


def bundled_recipe(name: str) -> Path:
    """A bundled recipe by name (``quickstart`` or ``quickstart.yaml``), never a path."""
    bundled = bundled_recipes_dir()
    stem = Path(name).name.removesuffix(".yaml")
    path = bundled / f"{stem}.yaml"
    if stem and path.is_file():
        return path
    known = sorted(p.stem for p in bundled.glob("*.yaml"))
    hint = closest(stem, known)
    raise DataError(
        f"there is no bundled recipe {name!r}"
        + (f"; did you mean {hint!r}?" if hint else ".")
        + f" Bundled recipes: {', '.join(known) or '(none)'}.",
        hint="`sftkit recipes` lists them.",
    )


def copy_recipe(name: str, dest: Path, *, force: bool = False) -> Path:
    """Copy the bundled recipe `name` to `dest` (a file, or a directory to put NAME.yaml in)
    to start from, as written (comments kept); never over an existing file unless `force`."""
    source = bundled_recipe(name)
    target = dest / source.name if dest.is_dir() else dest
    if target.exists() and not force:
        raise SftkitError(
            f"{target} exists; sftkit does not overwrite it.",
            hint="Choose another destination, or pass --force to replace it.",
        )
    if not target.parent.is_dir():
        raise SftkitError(f"cannot copy to {target}: {target.parent} is not a directory.")
    target.write_bytes(source.read_bytes())
    return target


def load_recipe(
    name_or_path: str | Path,
    overrides: Sequence[str | Override] = (),
    *,
    registry: Registry,
) -> ResolvedRecipe:
    path = find_recipe(str(name_or_path))
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read recipe {str(path)!r}: {exc.strerror or exc}.") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}:{line}: the recipe is not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
            f"byte {exc.start} of the file).",
            hint="Save the recipe as UTF-8.",
        ) from exc
    return load_recipe_text(text, overrides, registry=registry, source=str(path))


def load_recipe_text(
    text: str,
    overrides: Sequence[str | Override] = (),
    *,
    registry: Registry,
    source: str = "<recipe>",
) -> ResolvedRecipe:
    data, problems = read_yaml(text)
    if problems:
        raise RecipeError(problems, source=source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(
            [
                Problem(
                    "",
                    f"expected a mapping of sections (model, strategy, ...), found {type(data).__name__}.",
                )
            ],
            source=source,
        )
    parsed = [o if isinstance(o, Override) else parse_override(o) for o in overrides]
    data, notes = apply_component_overrides(data, parsed, registry)
    resolved = validate_recipe_data(
        data, registry=registry, source=source, overrides=tuple(map(str, parsed))
    )
    return replace(resolved, notes=(*notes, *resolved.notes)) if notes else resolved


def _component_nodes(data: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """(path, name key) of every component reference in `data`: strategy, optimizer,
    data.format, data.template, each evaluator, and the engine (``distributed.engine``)."""
    nodes = [(path, "name") for path in COMPONENT_PATHS]
    evaluators = (
        (data.get("evaluation") or {}).get("evaluators")
        if isinstance(data.get("evaluation"), dict)
        else None
    )
    if isinstance(evaluators, list):
        nodes += [(("evaluation", "evaluators", str(i)), "name") for i in range(len(evaluators))]
    return [*nodes, (("distributed",), "engine")]


def _node(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def apply_component_overrides(
    data: dict[str, Any], overrides: Sequence[Override], registry: Registry
) -> tuple[dict[str, Any], list[str]]:
    """`data` with `overrides` applied, and a note per component they switched.

    An override that switches a component (``data.format.name=chat``) drops the options the
    recipe gives the previous one: they belong to it, and the new one's options model would
    reject them as unknown keys. Options set on the command line stay (``data.format.name=
    prompt-completion data.format.options.train_file=x.jsonl``)."""
    applied = apply_overrides(
        data, overrides, is_string=lambda p: _is_string_field(data, p, registry)
    )
    notes = []
    cleared = copy.deepcopy(data)
    for path, name_key in _component_nodes(applied):
        old, new = _node(data, path), _node(applied, path)
        if not (isinstance(old, dict) and isinstance(new, dict)):
            continue
        if old.get(name_key) == new.get(name_key) or not old.get("options"):
            continue
        if not any(o.path == (*path, name_key) and not o.delete for o in overrides):
            continue
        if any(o.delete and o.path[: len(path) + 1] == (*path, "options") for o in overrides):
            continue  # `~data.format.options` on the line: the user deletes them already
        options = old["options"]
        # Options the new component also declares keep their values (lora -> qlora-nf4
        # keeps rank and alpha); the others belong to the old one.
        accepted = getattr(_options_model(applied, path, registry), "model_fields", {})
        kept = (
            {k: v for k, v in options.items() if k in accepted} if isinstance(options, dict) else {}
        )
        dropped = [k for k in options if k not in kept] if isinstance(options, dict) else [options]
        if kept:
            _node(cleared, path)["options"] = kept
        else:
            _node(cleared, path).pop("options", None)
        if not dropped:
            continue
        dotted = ".".join(path)
        also = f", kept {', '.join(map(str, kept))}" if kept else ""
        notes.append(
            f"{dotted}.{name_key}={new.get(name_key)}: dropped the recipe's options for "
            f"{old.get(name_key)} that {new.get(name_key)} does not take "
            f"({', '.join(map(str, dropped))}){also}; {new.get(name_key)} takes its defaults "
            f"for the rest, plus any {dotted}.options.KEY=VALUE on the command line."
        )
    if cleared == data:
        return applied, notes
    return apply_overrides(
        cleared, overrides, is_string=lambda p: _is_string_field(cleared, p, registry)
    ), notes


def validate_recipe_data(
    data: dict[str, Any],
    *,
    registry: Registry,
    source: str = "<recipe>",
    overrides: tuple[str, ...] = (),
) -> ResolvedRecipe:
    problems: list[Problem] = []
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problems_from_validation(exc, Recipe))
        # Components can still be checked from the raw data, so report those problems too.
        problems.extend(_engine_problems_raw(data, registry))
        problems.extend(_component_problems_raw(data, registry))
        raise RecipeError(_unique(problems), source=source) from None

    engine = _resolve_engine(recipe.distributed, registry, problems)
    if engine is not None:
        recipe = recipe.model_copy(update={"distributed": engine[1]})
    strategy = _resolve(recipe.strategy, ("strategy",), registry.strategies, problems)
    optimizer = _resolve(recipe.optimizer, ("optimizer",), registry.optimizers, problems)
    data_format = _resolve(recipe.data.format, ("data", "format"), registry.formats, problems)
    mixture = [
        _resolve(
            d.format, ("data", "mixture", "datasets", str(i), "format"), registry.formats, problems
        )
        for i, d in enumerate(recipe.data.mixture.datasets if recipe.data.mixture else [])
    ]
    template = _resolve(recipe.data.template, ("data", "template"), registry.templates, problems)
    evaluators = [
        _resolve(ref, ("evaluation", "evaluators", str(i)), registry.evaluators, problems)
        for i, ref in enumerate(recipe.evaluation.evaluators)
    ]
    during = [
        _resolve(
            _on_dev(ref, registry),
            ("evaluation", "during_training", str(i)),
            registry.evaluators,
            problems,
        )
        for i, ref in enumerate(recipe.evaluation.during_training)
    ]
    problems.extend(_evaluation_problems(recipe, during, data_format))
    problems.extend(_attention_problems(recipe))
    problems.extend(_named(recipe.training.loss, "training.loss", registry.loss_heads, ("auto",)))
    objective_problems = _named(
        recipe.training.objective, "training.objective", registry.objectives
    )
    problems.extend(objective_problems or _objective_options(recipe, registry))
    objectives = registry.objectives
    config = (  # the list checks SFTConfig's names; another objective's class checks later
        objectives.get(recipe.training.objective).config
        if recipe.training.objective in objectives
        else None
    )
    args_problems, notes = trainer_args_problems(
        recipe.training.trainer_args, *([config] if config else [])
    )
    problems.extend(args_problems)
    parts: Composition | None = None
    if strategy:
        try:
            parts = strategy.spec.compose(strategy.options)
        except SftkitError as exc:
            problems.append(Problem("strategy.name", exc.message, exc.hint))
    if parts and recipe.model.adapter and parts.trains_base:
        problems.append(
            Problem(
                "model.adapter",
                f"strategy {recipe.strategy.name!r} trains every weight, so there is no adapter "
                "to start from.",
                "Use an adapter strategy (sftkit list strategies), or start from a merged "
                "model with model.name_or_path.",
            )
        )
    elif parts and strategy and recipe.model.adapter:
        problems.extend(adapter_problems(recipe.model.adapter, strategy.spec, strategy.options))
    if strategy and optimizer:
        reason = optimizer.spec.incompatibility(strategy.spec)
        if reason:
            problems.append(
                Problem(
                    "optimizer.name",
                    f"optimizer {optimizer.spec.name!r} cannot train strategy {strategy.spec.name!r}: {reason}",
                )
            )
    if problems:
        raise RecipeError(_unique(problems), source=source)
    assert strategy and parts and optimizer and data_format and template and engine
    resolved = ResolvedRecipe(
        recipe=recipe,
        source=source,
        strategy=strategy,
        strategy_parts=parts,
        optimizer=optimizer,
        data_format=data_format,
        template=template,
        evaluators=[e for e in evaluators if e is not None],
        engine=engine[0],
        registry=registry,
        overrides=overrides,
        raw=data,
        mixture=tuple(m for m in mixture if m is not None),
        during_training=tuple(e for e in during if e is not None),
        notes=tuple(notes),
    )
    if registry.manager is not None:
        for result in registry.manager.hook.validate_recipe(recipe=resolved):
            problems.extend(result or [])
    if problems:
        raise RecipeError(_unique(problems), source=source)
    return resolved


# --------------------------------------------------------------------------- helpers


def _on_dev(ref: ComponentRef, registry: Registry) -> ComponentRef:
    """An evaluator run while training scores the dev split unless told otherwise: choosing
    a checkpoint on test would leak it."""
    if "split" in ref.options or ref.name not in registry.evaluators:
        return ref
    if "split" not in registry.evaluators.get(ref.name).options_model.model_fields:
        return ref
    return ComponentRef(name=ref.name, options={"split": "dev", **ref.options})


def _attention_problems(recipe: Recipe) -> list[Problem]:
    """training.mask_free_packing: what it needs of the data and the attention kernel."""
    if not recipe.training.mask_free_packing:
        return []
    problems = []
    if not recipe.data.packing:
        problems.append(
            Problem(
                "training.mask_free_packing",
                "applies to packed rows only: set data.packing to true, or drop the switch.",
            )
        )
    if recipe.model.attn_implementation == "eager":
        problems.append(
            Problem(
                "training.mask_free_packing",
                "needs model.attn_implementation sdpa (or flash_attention_2/3): eager "
                "attention always builds the s x s mask.",
            )
        )
    return problems


def _evaluation_problems(
    recipe: Recipe,
    during: list[Component[EvaluatorSpec] | None],
    data_format: Component[DatasetFormatSpec] | None,
) -> list[Problem]:
    """Evaluation while training: what it needs from the rest of the recipe."""
    t, problems = recipe.training, []
    stop = t.early_stopping
    if t.eval_steps is None:
        if stop is not None:
            problems.append(
                Problem(
                    "training.early_stopping", "needs training.eval_steps (how often to evaluate)."
                )
            )
        if recipe.evaluation.during_training:
            problems.append(
                Problem(
                    "evaluation.during_training",
                    "needs training.eval_steps (how often to run these evaluators).",
                )
            )
        return problems
    split_options = (
        recipe.data.mixture
        if recipe.data.mixture is not None
        else (data_format.options if data_format is not None else None)
    )
    if getattr(split_options, "dev_size", None) == 0:
        where = "data.mixture.dev_size" if recipe.data.mixture else "data.format.options.dev_size"
        problems.append(
            Problem("training.eval_steps", f"evaluates on the dev split, but {where} is 0.")
        )
    if stop is not None and t.save_steps is not None and t.save_steps % t.eval_steps:
        problems.append(
            Problem(
                "training.save_steps",
                f"with early stopping, checkpoints are saved when evaluating: {t.save_steps} "
                f"is not a multiple of eval_steps {t.eval_steps}.",
                f"Set training.save_steps={t.eval_steps} (or leave it null).",
            )
        )
    if stop is not None and stop.metric != "loss":
        name, _, metric = stop.metric.partition("/")
        known = [c.spec.name for c in during if c is not None]
        if not metric or name not in known:
            problems.append(
                Problem(
                    "training.early_stopping.metric",
                    f"{stop.metric!r} is neither 'loss' nor '<evaluator>/<metric>' of an "
                    f"evaluator in evaluation.during_training ({', '.join(known) or 'none'}).",
                )
            )
    if during and getattr(recipe.distributed.resolved_engine, "distributes", False):
        problems.append(
            Problem(
                "evaluation.during_training",
                f"evaluators during training run in one process; a {recipe.distributed.engine} "
                "run evaluates its eval loss only.",
                "Leave evaluation.during_training empty (training.eval_steps still logs the eval loss).",
            )
        )
    return problems


def _named(
    name: str, path: str, catalog: Catalog[Any], also: tuple[str, ...] = ()
) -> list[Problem]:
    """A component named by a plain string (``training.loss``, ``training.objective``)."""
    if name in also:
        return []
    try:
        catalog.entry(name)
    except UnknownComponentError as exc:
        return [_unknown(path, catalog.spec_type.kind, name, [*also, *exc.known])]  # type: ignore[attr-defined]
    except DuplicateComponentError as exc:
        return [Problem(path, exc.message, exc.hint)]
    return []


def _objective_options(recipe: Recipe, registry: Registry) -> list[Problem]:
    """``training.objective_options`` against the objective's options model."""
    spec = registry.objectives.get(recipe.training.objective)
    if spec.own_loss and recipe.training.loss != "auto":
        return [
            Problem(
                "training.loss",
                f"objective {spec.name!r} computes its own loss; the loss head "
                f"{recipe.training.loss!r} applies to sft.",
                "Set training.loss: auto.",
            )
        ]
    try:
        spec.options_model.model_validate(recipe.training.objective_options)
    except ValidationError as exc:
        return [
            Problem(
                p.path,
                p.message.replace(
                    "it takes no options", f"objective {spec.name!r} takes no options"
                ),
                p.suggestion,
            )
            for p in _problems_from_validation(
                exc, spec.options_model, prefix="training.objective_options"
            )
        ]
    return []


def _resolve(
    ref: ComponentRef, path: tuple[str, ...], catalog: Catalog[S], problems: list[Problem]
) -> Component[S] | None:
    dotted = ".".join(path)
    try:
        entry = catalog.entry(ref.name)
    except UnknownComponentError as exc:
        notes = "".join(f" {note}" for note in catalog.failure_notes(ref.name))
        kind = catalog.spec_type.kind  # type: ignore[attr-defined]
        problems.append(_unknown(f"{dotted}.name", kind, ref.name, exc.known, notes))
        return None
    except DuplicateComponentError as exc:  # two plugins gave the name: the user picks one
        problems.append(Problem(f"{dotted}.name", exc.message, exc.hint))
        return None
    options_model: type[Options] = entry.spec.options_model  # type: ignore[attr-defined]
    try:
        options = options_model.model_validate(ref.options)
    except ValidationError as exc:
        who = f"{catalog.spec_type.kind} {ref.name!r} takes no options"  # type: ignore[attr-defined]
        problems.extend(
            _options_problems(exc, options_model, f"{dotted}.options", entry.plugin, who)
        )
        return None
    return Component(entry.spec, options, entry.plugin)


def _resolve_engine(
    distributed: DistributedSection, registry: Registry, problems: list[Problem]
) -> tuple[Component[EngineSpec], DistributedSection] | None:
    """Look up `distributed.engine`, validate `distributed.options` with its options model and
    the section with the engine's rules; the section as the resolved recipe holds it (the
    engine's defaults and options written out, the engine object attached)."""
    name = distributed.engine
    try:
        entry = registry.engines.entry(name)
    except UnknownComponentError as exc:
        problems.append(_unknown("distributed.engine", "engine", name, exc.known))
        return None
    found: list[Problem] = []
    options_model = entry.spec.options_model
    try:
        options = options_model.model_validate(distributed.options)
    except ValidationError as exc:
        found.extend(_options_problems(exc, options_model, "distributed.options", entry.plugin))
    try:
        engine = entry.spec.load()
    except PluginError as exc:
        problems.append(Problem("distributed.engine", str(exc), exc.hint))
        return None
    found.extend(engine.settings_problems(distributed))
    problems.extend(found)
    if found:
        return None
    settled = engine.with_defaults(distributed).model_copy(
        update={"options": options.model_dump(mode="json")}
    )
    settled._engine = engine
    return Component(entry.spec, options, entry.plugin), settled


def _engine_problems_raw(data: dict[str, Any], registry: Registry) -> list[Problem]:
    """The engine's problems in data that failed the schema elsewhere (when its own section
    is valid), so that every problem is reported at once."""
    node = data.get("distributed", {})
    try:
        distributed = DistributedSection.model_validate(node if node is not None else {})
    except ValidationError:
        return []  # the schema's errors already cover the section
    problems: list[Problem] = []
    _resolve_engine(distributed, registry, problems)
    return problems


def _component_problems_raw(data: dict[str, Any], registry: Registry) -> list[Problem]:
    """Check component names and options in data that failed the schema elsewhere."""
    problems: list[Problem] = []
    for path, kind in COMPONENT_PATHS.items():
        node: Any = data
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or not isinstance(node.get("name"), str):
            continue
        try:
            ref = ComponentRef.model_validate(node)
        except ValidationError:
            continue
        _resolve(ref, path, registry.catalog(kind), problems)
    return problems


def _problems_from_validation(
    exc: ValidationError, model: type[BaseModel], prefix: str = ""
) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        path = ".".join([prefix, *loc] if prefix else loc)
        kind = err["type"]
        found = err.get("input")
        if kind == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1])
            hint = closest(loc[-1], allowed) if allowed else None
            expected = (
                f"expected one of: {', '.join(allowed)}" if allowed else "it takes no options"
            )
            problems.append(
                Problem(
                    path,
                    f"unknown key; {expected}.",
                    f"Did you mean {hint!r}?" if hint else "Remove the key.",
                )
            )
        elif kind == "missing":
            problems.append(Problem(path, "required key is missing."))
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            # a whole section's check (found: the section itself) names its keys in msg
            shown = "" if isinstance(found, dict) else f"; found {_show(found)}"
            problems.append(Problem(path, f"{msg}{shown}."))
    return problems


def _fields_at(model: type[BaseModel], loc: Iterable[str]) -> list[str]:
    current: Any = model
    for part in loc:
        sub = _submodel(current, part)
        if sub is None:
            return []
        current = sub
    return list(current.model_fields) if _is_model(current) else []


def _submodel(model: Any, part: str) -> Any:
    if not _is_model(model):
        return None
    if part.isdigit():
        return model
    info = model.model_fields.get(part)
    if info is None:
        return None
    return _unwrap(info.annotation)


def _unwrap(annotation: Any) -> Any:
    """The pydantic model inside `X`, `X | None` or `list[X]`, else the annotation itself."""
    if _is_model(annotation):
        return annotation
    for arg in typing.get_args(annotation):
        inner = _unwrap(arg)
        if _is_model(inner):
            return inner
    return annotation


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _is_string_field(data: dict[str, Any], path: tuple[str, ...], registry: Registry) -> bool:
    """Does the schema (or the named component's options model) say `path` holds text?"""
    model: Any = Recipe
    for i, part in enumerate(path):
        if not _is_model(model):
            return False
        if part == "options" and model in (ComponentRef, DistributedSection):
            model = _options_model(data, path[:i], registry)
            continue
        if part.isdigit():
            continue
        info = model.model_fields.get(part)
        if info is None:
            return False
        if i == len(path) - 1:
            return _annotation_is_str(info.annotation)
        model = _unwrap(info.annotation)
    return False


def _options_model(data: dict[str, Any], path: tuple[str, ...], registry: Registry) -> Any:
    if path == ("distributed",):  # the engine's options sit beside its name, `engine`
        section = data.get("distributed")
        name = section.get("engine", "none") if isinstance(section, dict) else None
        if not isinstance(name, str) or name not in registry.engines:
            return None
        return registry.engines.get(name).options_model
    kind = COMPONENT_PATHS.get(path) or (
        "evaluators" if path[:2] == ("evaluation", "evaluators") else None
    )
    if path[:3] == ("data", "mixture", "datasets") and path[-1:] == ("format",):
        kind = "formats"
    node: Any = data
    for part in path:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    name = node.get("name") if isinstance(node, dict) else None
    if kind is None or not isinstance(name, str) or name not in registry.catalog(kind):
        return None
    return registry.catalog(kind).get(name).options_model


def _annotation_is_str(annotation: Any) -> bool:
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(_annotation_is_str(a) for a in args)
    if origin is typing.Literal:
        return all(isinstance(a, str) for a in typing.get_args(annotation))
    return False


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring = 3, 4, 4, 40


def _show(value: Any) -> str:
    """A value in a message, cut short before it is rendered (not after: a value can be huge)."""
    text = _SHORT.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown(path: str, kind: str, name: str, known: list[str], notes: str = "") -> Problem:
    suggestion = closest(name, known)
    return Problem(
        path,
        f"unknown {kind} {name!r}; known: {', '.join(known) or '(none)'}.{notes}",
        f"Did you mean {suggestion!r}?" if suggestion else None,
    )


def _options_problems(
    exc: ValidationError, model: type[BaseModel], prefix: str, plugin: str, who: str = ""
) -> list[Problem]:
    """A component's options errors, naming a plugin that owns them; `who` ("strategy
    'lora' takes no options") replaces "it takes no options"."""
    owner = "" if plugin.startswith("builtin.") else f" (options of plugin {plugin!r})"
    no_options = "it takes no options"
    return [
        Problem(p.path, p.message.replace(no_options, who or no_options) + owner, p.suggestion)
        for p in _problems_from_validation(exc, model, prefix=prefix)
    ]


def _unique(problems: list[Problem]) -> list[Problem]:
    first: dict[tuple[str, str], Problem] = {}
    for p in problems:
        first.setdefault((p.path, p.message), p)
    return list(first.values())
