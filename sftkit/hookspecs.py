"""Every sftkit hook, grouped by phase. Only definitions live here.

Registration hooks must be cheap and import no torch: they run on every CLI start.
Each hook has a section in docs/plugin-hooks.md whose heading is its signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from sftkit.recipe.schema import Recipe

hookspec = pluggy.HookspecMarker("sftkit")
hookimpl = pluggy.HookimplMarker("sftkit")

Register = Callable[[Any], None]

# ---------------------------------------------------------------- registration (no torch)


@hookspec
def register_strategies(register: Register) -> None:
    """Call ``register(StrategySpec(...))`` once per strategy the plugin provides."""


@hookspec
def register_optimizers(register: Register) -> None:
    """Call ``register(OptimizerSpec(...))`` once per optimizer the plugin provides."""


@hookspec
def register_dataset_formats(register: Register) -> None:
    """Call ``register(DatasetFormatSpec(...))`` once per dataset format."""


@hookspec
def register_prompt_templates(register: Register) -> None:
    """Call ``register(PromptTemplateSpec(...))`` once per prompt template."""


@hookspec
def register_evaluators(register: Register) -> None:
    """Call ``register(EvaluatorSpec(...))`` once per evaluator."""


@hookspec
def register_engines(register: Register) -> None:
    """Call ``register(EngineSpec(...))`` once per distributed engine."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the ``sftkit`` command group."""


# ---------------------------------------------------------------- resolution (first result)


@hookspec(firstresult=True)
def resolve_model_shape(model: str, trust_remote_code: bool) -> Any:
    """Return a ``ModelShape`` for ``model`` (hub id, directory or config.json), or None to
    let the next plugin try. Built-ins are ``trylast``."""


@hookspec(firstresult=True)
def device_memory_budget(device: str) -> Any:
    """Return a ``MemoryBudget`` for a GPU name, a size such as ``40GB``, or ``"auto"`` (the
    present device), or None to let the next plugin try. Built-ins are ``trylast``."""


# ---------------------------------------------------------------- contribution (all results)


@hookspec
def extra_memory_terms(recipe: Recipe, shape: Any) -> list[Any] | None:
    """Return extra ``MemoryTerm``s the estimator adds for this recipe (e.g. a plugin's own
    buffers), or None."""


@hookspec
def validate_recipe(recipe: Recipe) -> list[Any] | None:
    """Return a list of ``Problem``s found in a schema-valid recipe, or None. Every problem
    from every plugin is reported together."""


# ---------------------------------------------------------------- lifecycle


@hookspec(historic=True)
def configure(settings: dict[str, Any]) -> None:
    """Called once with global settings (plugin manager options, environment). Historic: a
    plugin registered later still receives the call."""


@hookspec
def on_train_start(run: Any) -> None:
    """Called once before the first training step with the ``RunContext``."""


@hookspec
def on_log(run: Any, logs: dict[str, float]) -> None:
    """Called on every trainer log event (loss, learning rate, throughput ...)."""


@hookspec
def on_train_end(run: Any, metrics: dict[str, float]) -> None:
    """Called once after training with the final metrics."""
