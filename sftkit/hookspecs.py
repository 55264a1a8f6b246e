"""Every sftkit hook, grouped by phase. Only definitions live here.

Registration hooks must be cheap and import no torch: they run on every CLI start.
Each hook has a section in docs/plugin-hooks.md whose heading is its signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

if TYPE_CHECKING:  # the annotations only: importing this module stays cheap
    import click

    from sftkit.errors import Problem
    from sftkit.memory.budget import MemoryBudget
    from sftkit.memory.terms import MemoryTerm
    from sftkit.modelshape.shape import ModelShape
    from sftkit.recipe.load import ResolvedRecipe
    from sftkit.specs import (
        DatasetFormatSpec,
        EvaluatorSpec,
        LossHeadSpec,
        ObjectiveSpec,
        OptimizerSpec,
        PromptTemplateSpec,
        RewardSpec,
        StrategySpec,
    )
    from sftkit.training.context import RunView

hookspec = pluggy.HookspecMarker("sftkit")
hookimpl = pluggy.HookimplMarker("sftkit")

SpecT = TypeVar("SpecT")
#: The `register` callable of a registration hook: ``Register[StrategySpec]`` is
#: ``Callable[[StrategySpec], None]``.
Register = Callable[[SpecT], None]

# ---------------------------------------------------------------- registration (no torch)


@hookspec
def register_strategies(register: Callable[[StrategySpec], None]) -> None:
    """Call ``register(StrategySpec(...))`` once per strategy the plugin provides."""


@hookspec
def register_optimizers(register: Callable[[OptimizerSpec], None]) -> None:
    """Call ``register(OptimizerSpec(...))`` once per optimizer the plugin provides."""


@hookspec
def register_dataset_formats(register: Callable[[DatasetFormatSpec], None]) -> None:
    """Call ``register(DatasetFormatSpec(...))`` once per dataset format."""


@hookspec
def register_prompt_templates(register: Callable[[PromptTemplateSpec], None]) -> None:
    """Call ``register(PromptTemplateSpec(...))`` once per prompt template."""


@hookspec
def register_evaluators(register: Callable[[EvaluatorSpec], None]) -> None:
    """Call ``register(EvaluatorSpec(...))`` once per evaluator."""


@hookspec
def register_engines(register: Register) -> None:
    """Call ``register(EngineSpec(...))`` once per distributed engine."""


@hookspec
def register_loss_heads(register: Callable[[LossHeadSpec], None]) -> None:
    """Call ``register(LossHeadSpec(...))`` once per loss head (a ``training.loss`` value)."""


@hookspec
def register_objectives(register: Callable[[ObjectiveSpec], None]) -> None:
    """Call ``register(ObjectiveSpec(...))`` once per training objective (a
    ``training.objective`` value: how a model is trained)."""


@hookspec
def register_rewards(register: Callable[[RewardSpec], None]) -> None:
    """Call ``register(RewardSpec(...))`` once per reward function (a name in a reinforcement
    objective's ``rewards`` option)."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the ``sftkit`` command group."""


# ---------------------------------------------------------------- resolution (first result)


@hookspec(firstresult=True)
def resolve_model_shape(model: str, trust_remote_code: bool) -> ModelShape | None:
    """Return a ``ModelShape`` for ``model`` (hub id, directory or config.json), or None to
    let the next plugin try. Built-ins are ``trylast``."""


@hookspec(firstresult=True)
def device_memory_budget(device: str) -> MemoryBudget | None:
    """Return a ``MemoryBudget`` for a GPU name, a size such as ``40GB``, or ``"auto"`` (the
    present device), or None to let the next plugin try. Built-ins are ``trylast``."""


# ---------------------------------------------------------------- contribution (all results)


@hookspec
def extra_memory_terms(recipe: ResolvedRecipe, shape: ModelShape) -> list[MemoryTerm] | None:
    """Return extra ``MemoryTerm``s the estimator adds for this resolved recipe (e.g. a
    plugin's own buffers), or None."""


@hookspec
def validate_recipe(recipe: ResolvedRecipe) -> list[Problem] | None:
    """Return a list of ``Problem``s found in a resolved recipe (schema, components and
    options already valid), or None. Every problem from every plugin is reported together."""


# ---------------------------------------------------------------- lifecycle
# On the main process only, unless the implementation is marked `every_process`.

EVERY_PROCESS = "sftkit_every_process"
F = TypeVar("F", bound=Callable[..., Any])


def every_process(function: F) -> F:
    """Mark a lifecycle hook implementation (on_train_start, on_log, on_train_end) to run on
    every process of a multi-GPU run, not only the main one; ``run.rank`` says which."""
    setattr(function, EVERY_PROCESS, True)
    return function


@hookspec(historic=True)
def configure(settings: dict[str, Any]) -> None:
    """Called once with global settings (plugin manager options, environment). Historic: a
    plugin registered later still receives the call."""


@hookspec
def on_train_start(run: RunView) -> None:
    """Called once before the first training step with the run, read-only (``RunView``)."""


@hookspec
def on_log(run: RunView, logs: dict[str, float]) -> None:
    """Called on every trainer log event (loss, learning rate, throughput ...), with the
    global ``step`` and ``elapsed_s`` (seconds since training started) added."""


@hookspec
def on_train_end(run: RunView, metrics: dict[str, float]) -> None:
    """Called once after training with the final metrics."""
