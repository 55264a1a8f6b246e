"""sftkit: a plugin-style toolkit for supervised fine-tuning of large language models.

This package is the public plugin API: everything a plugin imports comes from here (tests
may also use `sftkit.testing`). Names load on first use, so ``import sftkit`` costs a few
milliseconds and never imports torch; every name below is torch-free to import.
docs/writing-a-plugin.md documents each one.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from sftkit._version import __version__ as __version__

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs
    # ruff cannot see that `__all__` re-exports these; tests/test_public_api.py keeps this
    # block and `_EXPORTS` in step.
    # ruff: noqa: F401
    from sftkit.builtin.evaluators import EvalOptions
    from sftkit.builtin.formats import SourceOptions, SplitOptions
    from sftkit.builtin.strategies import (
        Lora8bitOptions,
        LoraOptions,
        QLoraOptions,
        int8_storage,
        lora_adapters,
        nf4_storage,
    )
    from sftkit.cli.app import AppContext
    from sftkit.components import (
        Adapter,
        BaseStorage,
        Bnb4bit,
        Composition,
        Dense,
        FullTraining,
        LaidTensor,
        LlmInt8,
        LoRA,
        LossHead,
        LossQuery,
        LowRankLayer,
        Precision,
        TrainedCopies,
    )
    from sftkit.data.example import Example, Message
    from sftkit.data.formats import DatasetFormat, RawSplits
    from sftkit.data.readers import (
        RawRow,
        ReadReport,
        RowError,
        SourceInfo,
        convert_rows,
        iter_csv,
        iter_file,
        iter_json,
        iter_jsonl,
        iter_parquet,
        iter_rows,
        require_text,
        sha256_file,
    )
    from sftkit.data.sources import read_splits
    from sftkit.engine import Engine, Sharding, engine_of
    from sftkit.errors import (
        DataError,
        MissingDependencyError,
        ModelShapeError,
        ParamGroupsError,
        PluginError,
        Problem,
        RecipeError,
        SftkitError,
        SpecError,
    )
    from sftkit.evaluation.base import EvalResult, EvalTask, Evaluator, PromptTemplate
    from sftkit.hookspecs import Register, hookimpl
    from sftkit.memory import estimate
    from sftkit.memory.budget import MemoryBudget
    from sftkit.memory.terms import PHASES, MemoryTerm
    from sftkit.modelshape import ModelShape, TensorGroup, shape_from_config
    from sftkit.optim.build import OptimizerFactory, ParamGroups
    from sftkit.recipe.load import (
        Component,
        ResolvedRecipe,
        find_recipe,
        load_recipe,
        load_recipe_text,
    )
    from sftkit.recipe.schema import Recipe
    from sftkit.registry import Registry
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
        StrategySpec,
    )
    from sftkit.strategies.base import Strategy, StrategyContext, StrategyProtocol
    from sftkit.strategies.groups import check_param_groups, decays, default_param_groups
    from sftkit.strategies.lora import Lora, Lora8bit, QLora
    from sftkit.training.context import RunView

# public name -> the module that owns it
_EXPORTS: dict[str, str] = {
    # hooks
    "hookimpl": "sftkit.hookspecs",
    "Register": "sftkit.hookspecs",
    # specs and options
    "StrategySpec": "sftkit.specs",
    "OptimizerSpec": "sftkit.specs",
    "DatasetFormatSpec": "sftkit.specs",
    "PromptTemplateSpec": "sftkit.specs",
    "EvaluatorSpec": "sftkit.specs",
    "EngineSpec": "sftkit.specs",
    "LossHeadSpec": "sftkit.specs",
    "ObjectiveSpec": "sftkit.specs",
    "Options": "sftkit.specs",
    "NoOptions": "sftkit.specs",
    "SplitOptions": "sftkit.builtin.formats",
    "SourceOptions": "sftkit.builtin.formats",
    "EvalOptions": "sftkit.builtin.evaluators",
    "LoraOptions": "sftkit.builtin.strategies",
    "QLoraOptions": "sftkit.builtin.strategies",
    "Lora8bitOptions": "sftkit.builtin.strategies",
    # a strategy's parts: base storages, adapters, the tensors they declare
    "BaseStorage": "sftkit.components",
    "Dense": "sftkit.components",
    "Bnb4bit": "sftkit.components",
    "LlmInt8": "sftkit.components",
    "Adapter": "sftkit.components",
    "FullTraining": "sftkit.components",
    "LoRA": "sftkit.components",
    "LowRankLayer": "sftkit.components",
    "TrainedCopies": "sftkit.components",
    "LaidTensor": "sftkit.components",
    "Precision": "sftkit.components",
    "Composition": "sftkit.components",
    "LossHead": "sftkit.components",
    "LossQuery": "sftkit.components",
    "lora_adapters": "sftkit.builtin.strategies",
    "nf4_storage": "sftkit.builtin.strategies",
    "int8_storage": "sftkit.builtin.strategies",
    # engines
    "Engine": "sftkit.engine",
    "Sharding": "sftkit.engine",
    "engine_of": "sftkit.engine",
    # what the estimator prices
    "OptimizerState": "sftkit.specs",
    "DenseMomentState": "sftkit.specs",
    "Blockwise8bitState": "sftkit.specs",
    "FactoredState": "sftkit.specs",
    "MemoryTerm": "sftkit.memory.terms",
    "PHASES": "sftkit.memory.terms",
    "MemoryBudget": "sftkit.memory.budget",
    "ModelShape": "sftkit.modelshape",
    "TensorGroup": "sftkit.modelshape",
    "shape_from_config": "sftkit.modelshape",
    "estimate": "sftkit.memory",
    # what a component's factory returns
    "Strategy": "sftkit.strategies.base",
    "StrategyContext": "sftkit.strategies.base",
    "StrategyProtocol": "sftkit.strategies.base",
    "Lora": "sftkit.strategies.lora",
    "QLora": "sftkit.strategies.lora",
    "Lora8bit": "sftkit.strategies.lora",
    "decays": "sftkit.strategies.groups",
    "default_param_groups": "sftkit.strategies.groups",
    "check_param_groups": "sftkit.strategies.groups",
    "OptimizerFactory": "sftkit.optim.build",
    "ParamGroups": "sftkit.optim.build",
    "DatasetFormat": "sftkit.data.formats",
    "RawSplits": "sftkit.data.formats",
    "PromptTemplate": "sftkit.evaluation.base",
    "Evaluator": "sftkit.evaluation.base",
    "EvalTask": "sftkit.evaluation.base",
    "EvalResult": "sftkit.evaluation.base",
    # data rows and the readers that report FILE:LINE
    "Example": "sftkit.data.example",
    "Message": "sftkit.data.example",
    "RawRow": "sftkit.data.readers",
    "RowError": "sftkit.data.readers",
    "ReadReport": "sftkit.data.readers",
    "SourceInfo": "sftkit.data.readers",
    "convert_rows": "sftkit.data.readers",
    "iter_file": "sftkit.data.readers",
    "iter_json": "sftkit.data.readers",
    "iter_csv": "sftkit.data.readers",
    "read_splits": "sftkit.data.sources",
    "iter_jsonl": "sftkit.data.readers",
    "iter_parquet": "sftkit.data.readers",
    "iter_rows": "sftkit.data.readers",
    "require_text": "sftkit.data.readers",
    "sha256_file": "sftkit.data.readers",
    # recipes, the registry, commands, lifecycle
    "Recipe": "sftkit.recipe.schema",
    "ResolvedRecipe": "sftkit.recipe.load",
    "Component": "sftkit.recipe.load",
    "find_recipe": "sftkit.recipe.load",
    "load_recipe": "sftkit.recipe.load",
    "load_recipe_text": "sftkit.recipe.load",
    "Registry": "sftkit.registry",
    "AppContext": "sftkit.cli.app",
    "RunView": "sftkit.training.context",
    # errors a plugin raises
    "SftkitError": "sftkit.errors",
    "DataError": "sftkit.errors",
    "RecipeError": "sftkit.errors",
    "Problem": "sftkit.errors",
    "PluginError": "sftkit.errors",
    "SpecError": "sftkit.errors",
    "ParamGroupsError": "sftkit.errors",
    "ModelShapeError": "sftkit.errors",
    "MissingDependencyError": "sftkit.errors",
}

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
