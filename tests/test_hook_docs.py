"""Every hook has a docs section whose heading is its signature, and a test that uses it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from sftkit import hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "plugin-hooks.md").read_text(encoding="utf-8")
HOOKS = sorted(
    name for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, "sftkit_spec")
)


def _signature(name: str) -> str:
    sig = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{name}({params}) -> {sig.return_annotation}"


def test_there_are_hooks_to_check():
    assert len(HOOKS) >= 14


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_docs_section_headed_by_its_signature(name):
    headings = re.findall(r"^#+ `(.+)`\s*$", DOC, flags=re.M)
    assert _signature(name) in headings, f"docs/plugin-hooks.md needs '### `{_signature(name)}`'"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_exercised_by_a_test(name):
    this = Path(__file__).name
    tests = [p for p in (ROOT / "tests").rglob("test_*.py") if p.name != this]
    # A test implements the hook (def NAME / NAME=...) or calls it (hook.NAME).
    pattern = re.compile(rf"(def {name}\(|hook\.{name}\b|\b{name}=)")
    assert any(pattern.search(p.read_text(encoding="utf-8")) for p in tests), (
        f"no test implements or calls the hook {name}"
    )
