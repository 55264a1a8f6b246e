"""pytest fixtures for plugin authors, loaded automatically wherever sftkit is installed
(the `pytest11` entry point). Nothing heavy is imported until a fixture is used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sftkit import testing


@pytest.fixture
def sftkit_registry() -> Any:
    """A registry of the built-ins only (installed plugins are not autoloaded)."""
    return testing.fresh_registry()


@pytest.fixture
def tiny_recipe() -> Any:
    """A factory: ``tiny_recipe("strategy.name=lora")`` -> a fast quickstart ResolvedRecipe."""
    return testing.tiny_recipe


@pytest.fixture
def tiny_model(tmp_path: Path) -> Any:
    """A factory: ``tiny_model(resolved)`` -> (model, tokenizer) with the strategy applied."""
    return lambda resolved: testing.tiny_model(resolved, tmp_path)


@pytest.fixture
def tiny_dataset() -> Any:
    """A factory: ``tiny_dataset(resolved, "train")`` -> list of Examples."""
    return testing.tiny_dataset


@pytest.fixture
def quick_run(tmp_path: Path) -> Any:
    """A factory: ``quick_run("optimizer.name=my-opt", plugins=[my_plugin])`` -> the run
    directory of a seconds-long `sftkit run` of the quickstart."""
    return lambda *overrides, **kwargs: testing.quick_run(tmp_path, *overrides, **kwargs)
