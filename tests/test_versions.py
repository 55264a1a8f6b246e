"""Honest minimums: pyproject.toml declares sftkit.versions.MINIMUMS, `nox -s minimums`
installs exactly them, and a package older than them (or a stack whose packages clash) is
an input error, exit 2, naming the packages and versions."""

from __future__ import annotations

import re
from pathlib import Path

import sftkit.versions as versions
from sftkit.cli import run_cli
from sftkit.versions import MINIMUMS, VersionConflictError, import_clash, release

ROOT = Path(__file__).resolve().parent.parent


def declared() -> dict[str, str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = {}
    for requirement in project["optional-dependencies"]["train"]:
        name, _, version = re.match(r"([\w-]+)\s*(>=)\s*([\w.]+)", requirement).groups()
        out[name] = version
    return out


def test_pyproject_declares_the_minimums():
    pins = declared()
    assert {k: pins[k] for k in MINIMUMS} == MINIMUMS


def test_the_minimums_session_installs_exactly_them(noxfile):
    text = (ROOT / "noxfile.py").read_text()
    assert '"minimums"' in text.split("nox.options.sessions", 1)[1].splitlines()[0]
    pins = noxfile.minimum_pins()
    assert sorted(pins) == sorted(f"{p}=={v}" for p, v in MINIMUMS.items() if p != "torch")


def test_release_reads_local_and_pre_releases():
    assert release("2.13.0+cpu") == (2, 13, 0)
    assert release("5.0.0rc1") == (5, 0, 0)
    assert release("1.15.0.dev0") == (1, 15, 0)
    assert release("1.0") < release("1.0.0") <= release("1.0.1")


def test_an_old_package_is_exit_2_naming_it(monkeypatch, capsys, tmp_path):
    real = versions.installed
    old = {"trl": "0.23.0", "transformers": "4.56.1"}
    monkeypatch.setattr(versions, "installed", lambda p: old.get(p) or real(p))
    code = run_cli(
        ["run", str(ROOT / "recipes" / "quickstart.yaml"), "--output-dir", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "transformers 4.56.1 is older than sftkit needs (>= 5.3.0)" in err
    assert "trl 0.23.0 is older than sftkit needs (>= 1.0.0)" in err
    assert "pip install -U 'transformers>=5.3.0' 'trl>=1.0.0'" in err
    assert "bug" not in err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_an_import_clash_is_said_as_one():
    error = import_clash(
        ImportError("cannot import name 'HybridCache' from 'transformers'"), doing="sftkit run"
    )
    assert isinstance(error, VersionConflictError) and error.exit_code == 2
    assert "HybridCache" in str(error) and "installed: transformers" in str(error)
    assert "trl>=1.0.0" in str(error)
