from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("SFTKIT_DISABLE_PLUGIN_AUTOLOAD", "1")

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def noxfile() -> Any:
    """The project's noxfile as a module, imported once per test session: every import runs
    its ``@nox.session`` decorators, and nox warns about each session registered again."""
    pytest.importorskip("nox")
    module = sys.modules.get("noxfile")
    if module is None:
        spec = importlib.util.spec_from_file_location("noxfile", REPO / "noxfile.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["noxfile"] = module
        spec.loader.exec_module(module)
    return module


@pytest.fixture
def registry():
    from sftkit.testing import fresh_registry

    return fresh_registry()


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
