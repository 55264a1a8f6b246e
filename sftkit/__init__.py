"""sftkit: a plugin-style toolkit for supervised fine-tuning of large language models.

This package is the public plugin API: everything a plugin imports comes from here (tests
may also use `sftkit.testing`), and nothing else is promised to stay. Names load on first
use, so ``import sftkit`` costs a few milliseconds and never imports torch; every name is
torch-free to import. docs/writing-a-plugin.md documents each one.

The one list of public names is the import block below: type checkers and IDEs read it as
written, and `_exports` reads it (once, from this file's text) for `__getattr__`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from sftkit._version import __version__ as __version__

if TYPE_CHECKING:
    # ruff: noqa: F401
    from sftkit.builtin.evaluators import EvalOptions
    from sftkit.builtin.formats import SplitOptions
    from sftkit.builtin.strategies import (
        LoraOptions,
        QLoraOptions,
        lora_adapters,
        lora_saved_differences,
        nf4_storage,
    )
    from sftkit.cli.app import AppContext
    from sftkit.components import (
        Adapter,
        BaseStorage,
        Composition,
        Dense,
        LaidTensor,
        LossHead,
        LossQuery,
        TrainedCopies,
    )
    from sftkit.data.example import Example
    from sftkit.data.formats import (
        DatasetFormat,
        RawSplits,
    )
    from sftkit.data.readers import (
        RawRow,
        ReadReport,
        SourceInfo,
        convert_rows,
        iter_file,
        require_text,
        sha256_file,
    )
    from sftkit.engine import (
        Engine,
        Sharding,
    )
    from sftkit.errors import (
        DataError,
        MissingDependencyError,
        ModelShapeError,
        PluginError,
        Problem,
        RecipeError,
        SftkitError,
        SpecError,
    )
    from sftkit.evaluation.base import (
        EvalResult,
        EvalTask,
        Evaluator,
        PromptTemplate,
    )
    from sftkit.hookspecs import (
        Register,
        every_process,
        hookimpl,
    )
    from sftkit.memory import estimate
    from sftkit.memory.budget import MemoryBudget
    from sftkit.memory.terms import (
        PHASES,
        MemoryTerm,
    )
    from sftkit.modelshape import (
        ModelShape,
        shape_from_config,
    )
    from sftkit.recipe.load import (
        ResolvedRecipe,
        find_recipe,
        load_recipe,
        load_recipe_text,
    )
    from sftkit.specs import (
        Blockwise8bitState,
        DatasetFormatSpec,
        DenseMomentState,
        EngineSpec,
        EvaluatorSpec,
        FactoredState,
        LossHeadSpec,
        NoOptions,
        ObjectiveSpec,
        OptimizerSpec,
        OptimizerState,
        Options,
        PromptTemplateSpec,
        RewardSpec,
        StrategySpec,
    )
    from sftkit.strategies.base import (
        Strategy,
        StrategyContext,
    )
    from sftkit.strategies.groups import decays
    from sftkit.strategies.lora import (
        Lora,
        QLora,
    )
    from sftkit.training.context import RunView


def _exports() -> dict[str, str]:
    """public name -> its module, from the TYPE_CHECKING block above."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If))
    return {
        alias.name: str(node.module)
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


_EXPORTS = _exports()
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sftkit' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
