from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("SFTKIT_DISABLE_PLUGIN_AUTOLOAD", "1")

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
SHARED = REPO.parent / "shared"


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
