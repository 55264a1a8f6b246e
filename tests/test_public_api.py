"""The public plugin API: `import sftkit` is light, every name resolves, is documented, and the
example plugins import nothing else."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import sftkit

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "trl", "datasets", "accelerate")
NAMES = sorted(n for n in sftkit.__all__ if n != "__version__")


def test_import_sftkit_is_light_and_every_name_is_torch_free():
    probe = (
        "import sys, time\n"
        "t = time.perf_counter(); import sftkit; took = time.perf_counter() - t\n"
        "loaded = {m for m in sys.modules if m.startswith('sftkit')}\n"
        "assert loaded == {'sftkit', 'sftkit._version'}, sorted(loaded)\n"
        "assert 'pydantic' not in sys.modules\n"
        "for name in sftkit.__all__: getattr(sftkit, name)\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print(took)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 0.1  # a few ms; names load on first use


@pytest.mark.parametrize("name", NAMES)
def test_name_is_the_owning_modules_object(name):
    owner = importlib.import_module(sftkit._EXPORTS[name])
    assert getattr(sftkit, name) is getattr(owner, name)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'StrategySpecs'"):
        sftkit.StrategySpecs  # noqa: B018
    assert "StrategySpec" in dir(sftkit)


def test_the_names_plugins_use_are_public():
    """What the example plugins and the docs' worked examples import from `sftkit` is public
    (an example importing a private name fails in test_doc_examples and the plugins' tests;
    this says which name)."""
    texts = [p.read_text(encoding="utf-8") for p in (ROOT / "plugins").rglob("*.py")]
    texts += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))]
    used = {
        name.strip(" ()\n")
        for text in texts
        for names in re.findall(r"^\s*from sftkit import (\([^)]*\)|[^\n]*)", text, flags=re.M)
        for name in names.split(",")
    } - {""}
    assert {"hookimpl", "StrategySpec", "MemoryTerm", "RunView"} <= used  # the search works
    assert used <= set(sftkit.__all__), sorted(used - set(sftkit.__all__))


def test_private_names_are_not_exported():
    for name in ("Registry", "Recipe", "engine_of", "Bnb4bit", "iter_jsonl"):
        assert name not in sftkit.__all__
        with pytest.raises(AttributeError):
            getattr(sftkit, name)


def _docs_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")))


@pytest.mark.parametrize("name", NAMES)
def test_public_name_is_documented(name):
    assert re.search(rf"`(sftkit\.)?{re.escape(name)}\b", _docs_text()), (
        f"sftkit.{name} is public but no page under docs/ mentions it (in backticks)"
    )


def _plugin_sources() -> list[Path]:
    return sorted(
        path for package in (ROOT / "plugins").iterdir() for path in (package / "src").rglob("*.py")
    )


def test_there_are_example_plugin_sources():
    assert any("sftkit_lion" in str(p) for p in _plugin_sources())


@pytest.mark.parametrize("path", _plugin_sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_example_plugin_imports_only_the_public_api(path):
    text = path.read_text(encoding="utf-8")
    private = re.findall(r"^\s*(?:from|import) (sftkit\.[\w.]+)", text, flags=re.M)
    assert not private, f"{path.name} imports {private}; use `from sftkit import ...`"
